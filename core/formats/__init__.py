"""Record formats: CSV, JSON array and JSON Lines parsers (and writers), independent of storage.

The pieces share one definition of the input: how bytes become lines (:class:`TextLines`),
how lines become CSV records, and how a byte-range split boundary is chosen
(:func:`aligned_boundaries`) must agree to the byte, or a split would read a record twice or
never. The storage (local file, S3 ranged GET, SFTP) only provides a binary stream:
:func:`open_range` makes one over ``[start, end)`` of any seekable file object, with ``tell()``
giving absolute offsets.

Lines
    A line ends at ``\\n``, ``\\r\\n`` or a lone ``\\r`` (LF, CRLF, CR-only and mixed files all
    work; line numbers count every one of them). Encodings must be ASCII-compatible (UTF-8,
    Latin-1, cp1252…), except that a byte-order mark decides the encoding of its file
    (:func:`detect_bom`): UTF-8, UTF-16 LE/BE or UTF-32 LE/BE, whatever the configured
    encoding. Positions stay byte offsets in the file in every case.

Readers
    :func:`read_jsonl` and :func:`read_csv` read one batch from a :class:`TextLines` and
    return a :class:`ReadResult`: the records (plain dicts), where each record came from
    (its line), the dead letters of malformed input and the position of the next unread
    line — a checkpoint resumes there exactly. Every line of the input is a record, part of
    a record, a dead letter or blank (blank lines are skipped); nothing is dropped silently.

Dead-letter reasons (``DeadLetter.stage == "source"``, ``origin = {"file", "line", "offset"}``:
the 1-based line number in the whole file and the byte offset where the bad input starts):

* JSON Lines: ``invalid JSON: <message> at column <c>``, ``JSON line is not an object (got <type>)``,
  ``invalid <encoding> text: <message> at column <c>``,
  ``JSON line longer than max_field_bytes (<n> bytes)``;
* CSV: ``CSV row has <n> fields, header has <m>`` (``columns has <m>`` without a header row),
  ``invalid <encoding> text: <message> at column <c>`` (a whole record, if any of its lines),
  ``unterminated quoted field opened on line <n>``,
  ``quoted field opened on line <n> is longer than max_field_bytes (<m> bytes)``,
  ``field on line <n> is longer than max_field_bytes (<m> bytes)``, ``CSV error: <message>``;
* JSON array (``origin = {"file", "line"}`` for a file that does not parse, ``{"file", "index"}``
  for an element): ``invalid JSON: <message> at line <l> column <c>``,
  ``JSON file is not an array (got <type>)``, ``JSON array element <i> is not an object (got <type>)``.

CSV records
    The quoting rules are the ``csv`` module's: a quote opens a quoted field only at the
    start of a field (elsewhere it is text), ``""`` inside one is a quote, and text after
    the closing quote joins the field. A field may take up to ``max_field_bytes`` bytes of
    the file (quotes included). A quoted field that is not closed within that many bytes, or
    before the end of the input, is *unterminated*: the record, from its first line to the
    end of the line where that field opened, becomes one dead letter and reading resumes on
    the next line — a quote never closed costs its record, not the rest of the file, and
    memory stays bounded by the record being read plus ``max_field_bytes``. A longer
    unquoted field is a dead letter the same way. A header row that cannot be read raises
    :class:`~active_data_flow.errors.SourceDataError`; JSON Lines apply ``max_field_bytes`` to a line.

Byte-range splits
    :func:`aligned_boundaries` scans a file once and returns split starts that are record
    starts under exactly those rules (the recovery from an unterminated field included), each
    with its line number: quote-free stretches with byte searches, stretches with quotes with
    one regular expression pass (several times slower than counting quotes, which would put
    boundaries inside fields after a stray or unterminated quote).

Modules (the public names of each are importable from ``active_data_flow.formats`` itself)
    ``common`` — the formats, file extensions, encodings and byte-order marks, line counting,
    :class:`ReadResult`; ``streams`` — :func:`open_range`, :func:`skip_bom`; ``lines`` —
    :class:`TextLines`; ``origins`` — record origins computed on demand; ``jsonl`` — JSON Lines;
    ``json_format`` — JSON arrays; ``csv_framing`` — CSV records in bytes and
    :func:`aligned_boundaries`; ``csv_format`` — the CSV reader; ``encoders`` — the JSON Lines
    and CSV writers of the file sinks.
"""

from __future__ import annotations

from active_data_flow.formats.common import (
    DEFAULT_MAX_FIELD_BYTES,
    FORMATS,
    ReadResult,
    count_lines,
    cuttable,
    detect_bom,
    duplicate_names,
    format_from_path,
    normalize_encoding,
)
from active_data_flow.formats.csv_format import CsvOptions, read_csv, read_csv_header
from active_data_flow.formats.csv_framing import aligned_boundaries
from active_data_flow.formats.encoders import CsvEncoder, encode_jsonl
from active_data_flow.formats.json_format import read_json_array, split_json_elements
from active_data_flow.formats.jsonl import read_jsonl
from active_data_flow.formats.lines import TextLines
from active_data_flow.formats.streams import open_range, skip_bom

__all__ = [
    "DEFAULT_MAX_FIELD_BYTES",
    "FORMATS",
    "CsvEncoder",
    "CsvOptions",
    "ReadResult",
    "TextLines",
    "aligned_boundaries",
    "count_lines",
    "cuttable",
    "detect_bom",
    "duplicate_names",
    "encode_jsonl",
    "format_from_path",
    "normalize_encoding",
    "open_range",
    "read_csv",
    "read_csv_header",
    "read_json_array",
    "read_jsonl",
    "skip_bom",
    "split_json_elements",
]
