"""Record formats: CSV, JSON array and JSON Lines parsers (and writers), independent of storage.

Every reader here works on a *binary* stream that starts where reading resumes and ends
(EOF) where the split ends — :func:`open_range` makes such a stream from any seekable binary
file object, with :meth:`tell` giving absolute offsets in the underlying file. The storage
(local file, S3 ranged GET, SFTP) only has to provide bytes.

Readers return a :class:`ReadResult`: the records (plain dicts), the dead letters of
malformed input, and the new position (byte offset and 1-based line number of the next
line), so a source reader resumes at a byte offset after a checkpoint.

Dead-letter reasons (``DeadLetter.stage == "source"``, ``origin = {"file", "line"}``,
``line`` being the 1-based line number of the offending line in the whole file):

* JSON Lines: ``invalid JSON: <message> at column <c>``, ``JSON line is not an object (got <type>)``,
  ``invalid <encoding> text: <message>``; blank lines are skipped;
* CSV: ``CSV row has <n> fields, header has <m>`` (``columns has <m>`` without a header row),
  ``invalid <encoding> text: <message>``, ``CSV error: <message>``; blank lines are skipped;
* JSON array (``origin = {"file", "line"}`` for a file that does not parse, ``{"file", "index"}``
  for an element): ``invalid JSON: <message> at line <l> column <c>``,
  ``JSON file is not an array (got <type>)``, ``JSON array element <i> is not an object (got <type>)``.

Byte-range splits: :func:`aligned_boundaries` scans a file once (``bytes.count`` /
``bytes.find``, a few GB/s) and returns split starts that are line starts — for CSV line
starts at even quote parity, so that no boundary falls inside a quoted field (exact for
RFC 4180 files; a quote character inside an *unquoted* field would mislead it) — each with
its 1-based line number.

Encodings must be ASCII-compatible (UTF-8, Latin-1, cp1252…): lines are split on ``b"\\n"``.
A UTF-8 byte-order mark at offset 0 is skipped (:func:`skip_bom`).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import IO, Any

from core.codec import codec
from core.records import Record
from core.splits import DeadLetter

__all__ = [
    "FORMATS",
    "CsvEncoder",
    "CsvOptions",
    "ReadResult",
    "aligned_boundaries",
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

#: Every format a file source reads.
FORMATS = ("csv", "json", "jsonl")

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}

_BOM = codecs.BOM_UTF8
_DEFAULT_BUFFER = 1 << 18


def format_from_path(path: str) -> str | None:
    """The format implied by ``path``'s extension (``.csv``/``.tsv``, ``.json``, ``.jsonl``/``.ndjson``), else None."""
    dot = path.rfind(".")
    if dot < 0 or "/" in path[dot:]:
        return None
    return _EXTENSIONS.get(path[dot:].lower())


def normalize_encoding(encoding: str) -> str:
    """The canonical name of ``encoding`` (``utf-8-sig`` → ``utf-8``: a BOM is skipped anyway).

    Raises ``ValueError`` for an unknown encoding or one that is not ASCII-compatible
    (lines are split on ``\\n`` bytes, so UTF-16/32 cannot work).
    """
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None
    if name == "utf-8-sig":
        name = "utf-8"
    if "\n,\"".encode(name) != b"\n,\"":
        raise ValueError(f"encoding {encoding!r} is not ASCII-compatible (use UTF-8, Latin-1, cp1252…)")
    return name


@dataclass(slots=True)
class ReadResult:
    """One batch read from a stream.

    ``offset`` / ``line`` are where the next read starts (absolute byte offset, 1-based line
    number); ``eof`` is true when the stream has nothing more.
    """

    records: list[Record]
    dead_letters: list[DeadLetter]
    offset: int
    line: int
    eof: bool


@dataclass
class CsvOptions:
    """How a CSV file is parsed: ``header`` says whether the first row names the fields;
    ``columns`` names them explicitly (required without a header row, renames it with one)."""

    delimiter: str = ","
    quotechar: str = '"'
    header: bool = True
    columns: list[str] | None = None
    encoding: str = "utf-8"


# --------------------------------------------------------------------------- streams


class _RangeRaw(io.RawIOBase):
    """A raw stream over ``[start, end)`` of a seekable binary file; ``tell()`` is absolute."""

    def __init__(self, raw: IO[bytes], start: int, end: int | None) -> None:
        super().__init__()
        self._raw = raw
        self._pos = start
        self._end = end
        raw.seek(start)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = len(buffer)
        if self._end is not None:
            size = min(size, self._end - self._pos)
            if size <= 0:
                return 0
        view = memoryview(buffer).cast("B")[:size]
        readinto = getattr(self._raw, "readinto", None)
        if readinto is not None:
            got = readinto(view)
        else:
            data = self._raw.read(size)
            got = len(data)
            view[:got] = data
        got = got or 0
        self._pos += got
        return int(got)

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            try:
                self._raw.close()
            finally:
                super().close()


def open_range(
    raw: IO[bytes], start: int = 0, end: int | None = None, buffer_size: int = _DEFAULT_BUFFER
) -> io.BufferedReader:
    """A buffered stream over bytes ``[start, end)`` of ``raw`` (``end=None``: to EOF).

    ``raw`` must be seekable (ideally unbuffered: ``open(path, "rb", buffering=0)``); the
    returned stream's ``tell()`` is the absolute offset in ``raw``, and closing it closes ``raw``.
    """
    return io.BufferedReader(_RangeRaw(raw, start, end), buffer_size)


def skip_bom(stream: io.BufferedReader) -> int:
    """Skip a UTF-8 byte-order mark at the current position (call at offset 0); return the bytes skipped."""
    if stream.peek(3)[:3] == _BOM:
        stream.read(3)
        return 3
    return 0


def _at_eof(stream: io.BufferedReader) -> bool:
    return not stream.peek(1)


def _text(raw: bytes, encoding: str = "utf-8") -> str:
    return raw.decode(encoding, "replace").rstrip("\r\n")


# --------------------------------------------------------------------------- JSON Lines


def _json_reason(raw: bytes | str, exc: Exception, encoding: str) -> tuple[str, str]:
    """A reason independent of the codec in use (the stdlib's words), and the error type."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode(encoding)
        except UnicodeDecodeError as uexc:
            return f"invalid {encoding} text: {uexc.reason} at column {uexc.start + 1}", "UnicodeDecodeError"
    try:
        json.loads(raw)
    except json.JSONDecodeError as jexc:
        if jexc.lineno > 1:
            return f"invalid JSON: {jexc.msg} at line {jexc.lineno} column {jexc.colno}", "JSONDecodeError"
        return f"invalid JSON: {jexc.msg} at column {jexc.colno}", "JSONDecodeError"
    except ValueError as vexc:
        return f"invalid JSON: {vexc}", type(vexc).__name__
    return f"invalid JSON: {exc}", type(exc).__name__


def _jsonl_slow(
    lines: list[bytes], first_line: int, path: str, encoding: str
) -> tuple[list[Record], list[DeadLetter]]:
    """Parse line by line, turning bad lines into dead letters (only for batches with a problem)."""
    loads = codec().loads
    utf8 = codecs.lookup(encoding).name == "utf-8"
    records: list[Record] = []
    dead: list[DeadLetter] = []
    append = records.append
    i = 0
    n = len(lines)
    while i < n:
        try:
            for j in range(i, n):
                i = j  # the except clause needs the failing line
                raw = lines[j]
                obj = loads(raw if utf8 else raw.decode(encoding))
                if type(obj) is dict:
                    append(obj)
                else:
                    dead.append(
                        DeadLetter(
                            _text(raw, encoding),
                            f"JSON line is not an object (got {_json_type(obj)})",
                            "source",
                            "ValueError",
                            {"file": path, "line": first_line + j},
                        )
                    )
            break
        except ValueError as exc:
            raw = lines[i]
            if raw.strip():
                reason, etype = _json_reason(raw, exc, encoding)
                dead.append(DeadLetter(_text(raw, encoding), reason, "source", etype, {"file": path, "line": first_line + i}))
            i += 1
    return records, dead


def read_jsonl(
    stream: io.BufferedReader, max_records: int, *, path: str, line: int, encoding: str = "utf-8"
) -> ReadResult:
    """Read up to ``max_records`` lines of JSON Lines from ``stream``.

    ``line`` is the 1-based number of the line at the stream's position. Blank lines are
    skipped; a line that does not parse or is not an object becomes a dead letter.
    """
    lines = list(islice(stream, max_records))
    if not lines:
        return ReadResult([], [], stream.tell(), line, True)
    loads = codec().loads
    records: list[Any]
    dead: list[DeadLetter] = []
    try:
        if encoding == "utf-8" or codecs.lookup(encoding).name == "utf-8":
            records = list(map(loads, lines))
        else:
            records = list(map(loads, map(partial(bytes.decode, encoding=encoding), lines)))
        ok = set(map(type, records)) == {dict}
    except ValueError:
        ok = False
    if not ok:
        records, dead = _jsonl_slow(lines, line, path, encoding)
    eof = len(lines) < max_records or _at_eof(stream)
    return ReadResult(records, dead, stream.tell(), line + len(lines), eof)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# --------------------------------------------------------------------------- JSON array


def read_json_array(data: bytes, *, path: str, encoding: str = "utf-8") -> tuple[list[Any], list[DeadLetter]]:
    """Parse a whole JSON file (bytes) that must be one array of objects.

    Returns the array's elements, or no elements and one dead letter for a file that does
    not parse or is not an array. Elements are not checked here, so that indexes stay stable
    for resuming: :func:`split_json_elements` turns a slice of them into records and dead letters.
    """
    if data[:3] == _BOM:
        data = data[3:]
    try:
        value = codec().loads(data if codecs.lookup(encoding).name == "utf-8" else data.decode(encoding))
    except ValueError as exc:
        text = data.decode(encoding, "replace")
        reason, etype = _json_reason(text, exc, encoding)
        line = _error_line(text)
        return [], [DeadLetter(text, reason, "source", etype, {"file": path, "line": line})]
    if not isinstance(value, list):
        return [], [
            DeadLetter(
                value,
                f"JSON file is not an array (got {_json_type(value)})",
                "source",
                "ValueError",
                {"file": path, "line": 1},
            )
        ]
    return value, []


def _error_line(text: str) -> int:
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return exc.lineno
    except ValueError:
        return 1
    return 1


def split_json_elements(
    elements: Sequence[Any], start: int, stop: int, *, path: str
) -> tuple[list[Record], list[DeadLetter]]:
    """Elements ``[start, stop)`` of a parsed JSON array: objects as records, others as dead letters."""
    chunk = elements[start:stop]
    if set(map(type, chunk)) <= {dict}:
        return list(chunk), []
    records: list[Record] = []
    dead: list[DeadLetter] = []
    for i, value in enumerate(chunk, start):
        if type(value) is dict:
            records.append(value)
        else:
            dead.append(
                DeadLetter(
                    value,
                    f"JSON array element {i} is not an object (got {_json_type(value)})",
                    "source",
                    "ValueError",
                    {"file": path, "index": i},
                )
            )
    return records, dead


# --------------------------------------------------------------------------- CSV


def _csv_lines(stream: io.BufferedReader, encoding: str) -> Iterator[str]:
    if encoding == "utf-8":
        return map(bytes.decode, stream)  # strict UTF-8 is bytes.decode's default
    return map(partial(bytes.decode, encoding=encoding), stream)


def _csv_reader(lines: Iterable[str], options: CsvOptions) -> Any:
    return csv.reader(lines, delimiter=options.delimiter, quotechar=options.quotechar)


def read_csv_header(stream: io.BufferedReader, options: CsvOptions) -> tuple[list[str], int]:
    """Read the header row at the stream's position (offset 0, after :func:`skip_bom`).

    Returns the field names (``options.columns`` when given) and the number of lines the
    header took (0 when the file is empty). Without a header row, returns ``options.columns``
    and 0 without reading.
    """
    if not options.header:
        return list(options.columns or []), 0
    reader = _csv_reader(_csv_lines(stream, options.encoding), options)
    names: list[str] = []
    for row in reader:
        if row:
            names = row
            break
    lines = int(reader.line_num)
    if options.columns:
        names = list(options.columns)
    return names, lines


def _csv_text(row: list[str], options: CsvOptions) -> str:
    # The row as CSV text again (re-quoted: the reader does not keep the raw bytes). The
    # writer quotes fields containing its line terminator's characters, so keep "\r\n".
    buf = io.StringIO()
    csv.writer(buf, delimiter=options.delimiter, quotechar=options.quotechar, lineterminator="\r\n").writerow(row)
    return buf.getvalue()[:-2]


def read_csv(
    stream: io.BufferedReader,
    max_records: int,
    *,
    path: str,
    line: int,
    fieldnames: Sequence[str],
    options: CsvOptions,
) -> ReadResult:
    """Read up to ``max_records`` CSV rows from ``stream`` as dicts keyed by ``fieldnames``.

    ``line`` is the 1-based number of the line at the stream's position; the stream must be
    at a row start (not inside a quoted field). Blank lines are skipped; a row with another
    number of fields than ``fieldnames`` or text that does not decode becomes a dead letter.
    """
    names = list(fieldnames)
    width = len(names)
    reader = _csv_reader(_csv_lines(stream, options.encoding), options)
    records: list[Record] = []
    append = records.append
    dead: list[DeadLetter] = []
    extra = 0  # lines consumed that the csv reader did not count (decode errors)
    budget = max_records
    while budget > 0:
        try:
            for row in islice(reader, budget):
                if len(row) == width:
                    append(dict(zip(names, row, strict=True)))
                elif row:
                    end_line = line + reader.line_num + extra - 1
                    start_line = end_line - sum(f.count("\n") for f in row)
                    what = "header" if options.header and not options.columns else "columns"
                    dead.append(
                        DeadLetter(
                            _csv_text(row, options),
                            f"CSV row has {len(row)} fields, {what} has {width}",
                            "source",
                            "ValueError",
                            {"file": path, "line": start_line},
                        )
                    )
            break
        except UnicodeDecodeError as exc:
            bad_line = line + reader.line_num + extra
            extra += 1
            raw = exc.object if isinstance(exc.object, bytes) else b""
            dead.append(
                DeadLetter(
                    _text(raw, options.encoding),
                    f"invalid {options.encoding} text: {exc.reason} at column {exc.start + 1}",
                    "source",
                    "UnicodeDecodeError",
                    {"file": path, "line": bad_line},
                )
            )
        except csv.Error as exc:
            dead.append(
                DeadLetter(
                    "",
                    f"CSV error: {exc}",
                    "source",
                    "csv.Error",
                    {"file": path, "line": line + reader.line_num + extra - 1},
                )
            )
        budget = max_records - len(records) - len(dead)
    return ReadResult(records, dead, stream.tell(), line + reader.line_num + extra, _at_eof(stream))


# --------------------------------------------------------------------------- split boundaries


def aligned_boundaries(
    stream: IO[bytes],
    size: int,
    split_bytes: int,
    *,
    quotechar: str | None = None,
    chunk_size: int = 1 << 22,
) -> list[tuple[int, int]]:
    """Split starts ``[(offset, line), …]`` for byte ranges of about ``split_bytes`` bytes.

    ``stream`` is read from offset 0 up to ``size`` bytes. The first start is ``(0, 1)``;
    every other one is the first line start at or after ``previous start + split_bytes``
    that is outside any quoted field when ``quotechar`` is given (an even number of quote
    characters before it), with its 1-based line number. Range ``i`` is
    ``[starts[i], starts[i + 1])``, the last one ends at ``size``.
    """
    if split_bytes <= 0:
        raise ValueError("split_bytes must be positive")
    bounds = [(0, 1)]
    quote = quotechar.encode("ascii") if quotechar else None
    target = split_bytes
    base = 0  # absolute offset of chunk[0]
    lines = 0  # newlines in [0, base + cur)
    quotes = 0  # quote characters in [0, base + cur)
    while target < size and base < size:
        chunk = stream.read(min(chunk_size, size - base))
        if not chunk:
            break
        clen = len(chunk)
        cur = 0
        while target < size:
            rel = max(target - 1 - base, cur)
            if rel >= clen:
                break
            i = chunk.find(b"\n", rel)
            if i < 0:
                break
            p = i + 1
            lines += chunk.count(b"\n", cur, p)
            if quote is not None:
                quotes += chunk.count(quote, cur, p)
            cur = p
            if quotes & 1:
                target = base + p + 1  # inside a quoted field: try the next line start
                continue
            start = base + p
            if start >= size:
                target = size
                break
            bounds.append((start, lines + 1))
            target = start + split_bytes
        if target >= size:
            break
        lines += chunk.count(b"\n", cur)
        if quote is not None:
            quotes += chunk.count(quote, cur)
        base += clen
    return bounds


# --------------------------------------------------------------------------- writers


def encode_jsonl(records: Iterable[Record]) -> bytearray:
    """``records`` as JSON Lines (one ``\\n``-terminated object per record)."""
    # Appending to one bytearray frees each encoded record at once; it measured 2-3x faster
    # than ``b"\\n".join(map(dumps, records))`` with orjson (fewer live buffers, no big copy).
    out = bytearray()
    dumps = codec().dumps
    for record in records:
        out += dumps(record)
        out += b"\n"
    return out


_PLAIN = frozenset((str, int, float))


class CsvEncoder:
    """Encodes batches of records as CSV rows with fixed ``columns``.

    ``None`` becomes an empty cell, booleans ``true``/``false``, lists and mappings JSON;
    a record with a field that is not a column raises ``ValueError`` (nothing is dropped
    silently — the engine then dead-letters that record).
    """

    def __init__(self, columns: Sequence[str], delimiter: str = ",", quotechar: str = '"') -> None:
        self.columns = list(columns)
        self._colset = frozenset(self.columns)
        self._buf = io.StringIO()
        self._writer = csv.writer(self._buf, delimiter=delimiter, quotechar=quotechar, lineterminator="\r\n")

    def header(self) -> str:
        """The header row (with its line terminator)."""
        return self._encode_rows([self.columns])

    def _encode_rows(self, rows: Iterable[Sequence[Any]]) -> str:
        buf = self._buf
        buf.seek(0)
        buf.truncate()
        self._writer.writerows(rows)
        return buf.getvalue()

    def encode(self, records: Sequence[Record]) -> str:
        """The rows of ``records`` (each with its line terminator)."""
        cols = self.columns
        colset = self._colset
        plain = _PLAIN
        rows = []
        for rec in records:
            if not colset.issuperset(rec):
                unknown = sorted(map(str, set(rec) - colset))
                raise ValueError(f"record has fields that are not CSV columns: {', '.join(unknown)}")
            row = [rec.get(c) for c in cols]
            rows.append([v if type(v) in plain else _cell(v) for v in row])
        return self._encode_rows(rows)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict | list | tuple):
        return codec().dumps(value).decode("utf-8")
    return value
