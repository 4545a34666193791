"""Record formats: CSV, JSON array and JSON Lines parsers (and writers), independent of storage.

One file because the pieces share one definition of the input: how bytes become lines
(:class:`TextLines`), how lines become CSV records, and how a byte-range split boundary is
chosen (:func:`aligned_boundaries`) must agree to the byte, or a split would read a record
twice or never. The storage (local file, S3 ranged GET, SFTP) only provides a binary
stream: :func:`open_range` makes one over ``[start, end)`` of any seekable file object, with
``tell()`` giving absolute offsets.

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
    :class:`~core.errors.SourceDataError`; JSON Lines apply ``max_field_bytes`` to a line.

Byte-range splits
    :func:`aligned_boundaries` scans a file once and returns split starts that are record
    starts under exactly those rules (the recovery from an unterminated field included), each
    with its line number: quote-free stretches with byte searches, stretches with quotes with
    one regular expression pass (several times slower than counting quotes, which would put
    boundaries inside fields after a stray or unterminated quote).
"""

from __future__ import annotations

import abc
import codecs
import csv
import io
import itertools
import json
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import accumulate, chain, islice
from typing import IO, Any

from core.codec import codec
from core.errors import SourceDataError
from core.record import DeadLetter, Record

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

#: Every format a file source reads.
FORMATS = ("csv", "json", "jsonl")

#: The longest CSV field (and JSON line) read by default: large enough for real blobs.
DEFAULT_MAX_FIELD_BYTES = 64 << 20

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}

_BOM = codecs.BOM_UTF8
_DEFAULT_BUFFER = 1 << 18
_CHUNK = 1 << 16  # bytes a TextLines reads at once (below malloc's mmap threshold: no fresh pages per chunk)
_LONE_CR = re.compile(rb"\r[^\n]")  # a "\r" in the last byte may still be followed by "\n"
_EXCERPT = 4096  # characters of an over-long input kept in its dead letter

#: Encodings read through a byte-order mark that are not ASCII-compatible: bytes per code unit.
_WIDE = {"utf-16-le": 2, "utf-16-be": 2, "utf-32-le": 4, "utf-32-be": 4}
_BOMS = (  # UTF-32 LE first: its mark starts with UTF-16 LE's
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def format_from_path(path: str) -> str | None:
    """The format implied by ``path``'s extension (``.csv``/``.tsv``, ``.json``, ``.jsonl``/``.ndjson``), else None."""
    dot = path.rfind(".")
    if dot < 0 or "/" in path[dot:]:
        return None
    return _EXTENSIONS.get(path[dot:].lower())


def normalize_encoding(encoding: str) -> str:
    """The canonical name of ``encoding`` (``utf-8-sig`` → ``utf-8``: a BOM is skipped anyway).

    Raises ``ValueError`` for an unknown encoding or one that is not ASCII-compatible (a
    UTF-16/32 file is read through its byte-order mark, whatever encoding is configured).
    """
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None
    if name == "utf-8-sig":
        name = "utf-8"
    if "\n\r,\"".encode(name) != b"\n\r,\"":
        raise ValueError(
            f"encoding {encoding!r} is not ASCII-compatible (use UTF-8, Latin-1, cp1252…; "
            "a UTF-16 or UTF-32 file with a byte-order mark is recognised without configuration)"
        )
    return name


def detect_bom(head: bytes) -> tuple[str | None, int]:
    """The encoding a byte-order mark at the start of ``head`` declares and the mark's length; ``(None, 0)`` without one.

    Pass the first 4 bytes of a file: UTF-8, UTF-16 LE/BE and UTF-32 LE/BE marks are recognised.
    """
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name, len(bom)
    return None, 0


def cuttable(encoding: str) -> bool:
    """Whether a file in ``encoding`` can be cut into byte ranges (:func:`aligned_boundaries` reads
    ASCII-compatible bytes; a UTF-16/32 file is read as one split)."""
    return encoding not in _WIDE


def count_lines(data: bytes | bytearray, start: int = 0, end: int | None = None) -> int:
    """Line ends (``\\n``, ``\\r\\n``, lone ``\\r``) in ``data[start:end]``; the slice must not end between ``\\r`` and ``\\n``."""
    stop = len(data) if end is None else end
    return data.count(b"\n", start, stop) + data.count(b"\r", start, stop) - data.count(b"\r\n", start, stop)


def duplicate_names(names: Sequence[str]) -> list[str]:
    """The names that occur more than once in ``names``, in order of first occurrence."""
    seen: set[str] = set()
    dups: dict[str, None] = {}
    for name in names:
        if name in seen:
            dups[name] = None
        seen.add(name)
    return list(dups)


@dataclass(slots=True)
class ReadResult:
    """One batch read from a :class:`TextLines`.

    ``offset`` / ``line`` are where the next read starts (absolute byte offset, 1-based line
    number); ``eof`` is true when the input has nothing more. ``lines`` says where each
    record came from: its first line, one per record (a list), or the first record's when the
    records are on consecutive lines (an int); ``offsets`` is the byte offset of each record's
    first line, when asked for.
    """

    records: list[Record]
    dead_letters: list[DeadLetter]
    offset: int
    line: int
    eof: bool
    lines: Sequence[int] | int = 0
    offsets: Sequence[int] | None = None


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


def _excerpt(raw: bytes | bytearray, encoding: str, cut: bool = False) -> str:
    """``raw`` as text for a dead letter, without its line end, at most ``_EXCERPT`` characters
    (``…`` marks a cut, also when ``cut`` says ``raw`` is only the start of the input)."""
    text = bytes(raw[: _EXCERPT * 4]).decode(encoding, "replace").rstrip("\r\n")
    if cut or len(text) > _EXCERPT or len(raw) > _EXCERPT * 4:
        text = text[:_EXCERPT] + "…"
    return text


# --------------------------------------------------------------------------- lines


class TextLines:
    """The physical lines of a binary stream, for the parsers, with the position to resume from.

    ``offset`` and ``line`` are the absolute byte offset and the 1-based number of the first
    line not consumed yet. Lines keep their line end. The stream is read ahead in chunks; a
    line that grows past ``limit`` bytes is not read further unless a parser asks for it
    (:attr:`overlong`), so a file without line ends cannot fill the memory.

    When ``stream`` is a byte range of a longer file, ``beyond(n)`` gives up to ``n`` bytes
    after it (only to name the reason of a quoted field that is still open at the range's end).

    ``encoding`` is the file's: an ASCII-compatible encoding, whose bytes are handed on as
    they are, or UTF-16/UTF-32 (``utf-16-le`` … — known from a byte-order mark), whose lines
    are handed on re-encoded as UTF-8 (:attr:`encoding` then says ``utf-8``; offsets are still
    counted in the file's bytes, and a UTF-16/32 line is read whole before the limit applies).
    Lines that do not decode are listed in :attr:`bad` (line number → reason).
    """

    def __init__(
        self,
        stream: IO[bytes],
        *,
        offset: int = 0,
        line: int = 1,
        encoding: str = "utf-8",
        limit: int = DEFAULT_MAX_FIELD_BYTES,
        chunk_size: int = _CHUNK,
        beyond: Callable[[int], bytes] | None = None,
    ) -> None:
        self._stream = stream
        #: up to n bytes of the file after the stream's end (a byte range of a longer file), so
        #: that a field left open at the end of a range is judged as in the whole file
        self.beyond = beyond
        self.offset = offset
        self.line = line
        self.label = encoding
        self._unit = _WIDE.get(encoding, 0)
        #: the encoding of the lines handed on
        self.encoding = "utf-8" if self._unit else encoding
        self.limit = limit
        self._chunk = max(int(chunk_size), 16)
        self._lines: list[bytes] = []
        self._texts: list[str] = []
        self._sizes: list[int] = []  # bytes in the file of each line (UTF-16/32 only)
        self._pos = 0
        self._ready = 0  # bytes (as handed on) of the complete lines not consumed yet
        self.long_lines = False  # a line over the limit may have arrived whole (then check lengths)
        self._long = False  # lines are longer than a chunk: read them whole, one copy each
        #: a CSV row over several lines (or near the limit) was seen: count each row's lines as it comes
        self.multiline = False
        self._taken = (0, 0)
        self._tail: list[bytes] = []
        self._tail_len = 0
        self._eof = False
        self.bad: dict[int, str] = {}
        self._decode: Callable[[bytes], str] = (
            bytes.decode if self.encoding == "utf-8" else partial(bytes.decode, encoding=self.encoding)
        )
        if self._unit:
            self._lf = "\n".encode(encoding)
            self._cr = "\r".encode(encoding)

    # -- state ---------------------------------------------------------------------

    @property
    def eof(self) -> bool:
        """Every line was consumed and the stream is at its end."""
        return self._eof and self._pos >= len(self._lines) and not self._tail

    @property
    def overlong(self) -> bool:
        """The line after the pending ones is longer than ``limit`` (without its line end) and was not read to its end."""
        if self._eof or self._unit or self._tail_len <= self.limit:
            return False
        return self._tail_len - self._tail[-1].endswith(b"\r") > self.limit

    def at_end(self) -> bool:
        """Like :attr:`eof`, reading ahead once when nothing is pending (so a batch can say it was the last)."""
        if self._pos >= len(self._lines) and not self._eof and not self.overlong:
            self._read()
        return self.eof

    # -- reading -------------------------------------------------------------------

    def _read(self) -> bool:
        """Read one chunk (or, while lines are long, one line) into lines; False at the end of the stream."""
        if self._eof:
            return False
        if self._long:
            # a line with one copy (readline looks for "\n" with memchr), at most to the limit
            data = self._stream.readline(max(self._chunk, self.limit + 2 - self._tail_len))
            if data and len(data) < self._chunk >> 4:
                self._long = False  # short lines again: chunks of many lines are cheaper
        else:
            data = self._stream.read(self._chunk)
        if not data:
            self._eof = True
            if self._tail:  # the last line has no line end
                tail = b"".join(self._tail)
                self._tail = []
                self._tail_len = 0
                if self._unit:
                    self._add_wide([tail])
                else:
                    self._lines.append(tail)
                    self._ready += len(tail)
                    if len(tail) > self.limit:
                        self.long_lines = True
            return False
        self._ingest(data)
        return True

    def _ingest(self, data: bytes) -> None:
        tail = self._tail
        if self._unit:
            if tail:
                if self._lf not in data and self._cr not in data and not tail[-1].endswith(self._cr):
                    tail.append(data)  # a long line: keep its parts, join them once
                    self._tail_len += len(data)
                    return
                data = b"".join(tail) + data
                tail.clear()
            lines, rest = _wide_lines(data, self._unit, self._lf, self._cr)
            if rest:
                tail.append(rest)
            self._tail_len = len(rest)
            self._add_wide(lines)
            return
        if tail and b"\n" not in data and b"\r" not in data and tail[-1][-1:] != b"\r":
            tail.append(data)  # a long line: keep its parts, join them once
            self._tail_len += len(data)
            self._long = True
            return
        if not tail and data.find(b"\n") == len(data) - 1 and _no_lone_cr(data):
            self._lines.append(data)  # exactly one line (read whole): kept as it is
            self._ready += len(data)
            if len(data) > self.limit:
                self.long_lines = True
            return
        if _no_lone_cr(data):
            # every "\r" ends a "\r\n" (or the chunk): splitting on "\n" is enough, and BytesIO
            # does it with memchr (measured 6x faster than bytes.splitlines, which tests every byte)
            parts = list(io.BytesIO(data))
        else:
            parts = data.splitlines(True)  # bytes split on \n, \r\n and a lone \r only
        added = len(data) + self._tail_len
        if tail:
            # the unfinished line goes in front of the first new one (not the whole chunk copied
            # behind it) — unless it ended with a lone "\r", which made it a line of its own
            if tail[-1][-1] == 13 and parts[0][:1] != b"\n":
                parts.insert(0, b"".join(tail))
            else:
                tail.append(parts[0])
                parts[0] = b"".join(tail)
            tail.clear()
        last = parts[-1]
        if last[-1] != 10:  # no "\n": an unfinished line, or a "\r" that a "\n" may follow
            parts.pop()
            tail.append(last)
            self._tail_len = len(last)
        else:
            self._tail_len = 0
        self._ready += added - self._tail_len
        if added > self.limit:
            self.long_lines = True
        self._lines += parts

    def _add_wide(self, raws: list[bytes]) -> None:
        number = self.line + len(self._lines) - self._pos
        for raw in raws:
            try:
                text = raw.decode(self.label)
            except UnicodeDecodeError as exc:
                text = raw.decode(self.label, "replace")
                self.bad[number] = f"invalid {self.label} text: {exc.reason} at column {exc.start + 1}"
            line = text.encode("utf-8")
            self._lines.append(line)
            self._ready += len(line)
            if len(line) > self.limit:
                self.long_lines = True
            self._sizes.append(len(raw))
            number += 1

    def more(self) -> bool:
        """Read another chunk; False when the stream is at its end or the unfinished line is over the limit."""
        if self._eof or self.overlong:
            return False
        self._read()
        return True

    def _fill(self, n: int) -> None:
        while len(self._lines) - self._pos < n and self.more():
            pass

    def take(self, n: int) -> list[bytes]:
        """Up to ``n`` complete lines, consumed (fewer at the end, or before an overlong line)."""
        self._fill(n)
        i = self._pos
        lines = self._lines[i : i + n]
        self._taken = (i, len(lines))
        self.consume(len(lines))
        return lines

    def taken_sizes(self) -> list[int]:
        """Bytes in the file of each line the last :meth:`take` returned."""
        i, k = self._taken
        if self._unit:
            return self._sizes[i : i + k]
        return list(map(len, self._lines[i : i + k]))

    def consume(self, k: int) -> None:
        """Mark the next ``k`` pending lines as read."""
        if k <= 0:
            return
        i = self._pos
        j = i + k
        if len(self._lines) - j < k:  # fewer lines left than taken: count those
            size = self._ready - sum(map(len, self._lines[j:]))
        else:
            size = sum(map(len, self._lines[i:j]))
        self._ready -= size
        if self._unit:
            size = sum(self._sizes[i : i + k])  # the file's bytes
        self._pos = i + k
        self.offset += size
        self.line += k

    def trim(self) -> None:
        """Forget the consumed lines (call between batches)."""
        i = self._pos
        if i:
            del self._lines[:i]
            del self._texts[:i]
            if self._unit:
                del self._sizes[:i]
            self._pos = 0
        if self.bad:
            for number in [n for n in self.bad if n < self.line]:
                del self.bad[number]

    def offsets(self, count: int) -> list[int]:
        """Byte offsets of the next ``count + 1`` pending line starts (the last: where they end)."""
        i = self._pos
        sizes = self._sizes[i : i + count] if self._unit else map(len, self._lines[i : i + count])
        return list(accumulate(sizes, initial=self.offset))

    def decoded(self, end: int) -> list[str]:
        """The decoded text of every buffered line up to index ``end`` of the buffer (each decoded once).

        Bytes that do not decode become lone surrogates (so the line keeps its quotes and
        delimiters) and the line is listed in :attr:`bad`.
        """
        texts = self._texts
        start = len(texts)
        if start < self._pos:
            texts += [""] * (self._pos - start)  # consumed without being decoded (never looked at again)
            start = self._pos
        if end > start:
            raws = self._lines[start:end]
            try:
                texts += list(map(self._decode, raws))
            except UnicodeDecodeError:
                number = self.line + start - self._pos
                for k, raw in enumerate(raws):
                    try:
                        texts.append(self._decode(raw))
                    except UnicodeDecodeError as exc:
                        texts.append(raw.decode(self.encoding, "surrogateescape"))
                        reason = f"invalid {self.label} text: {exc.reason} at column {exc.start + 1}"
                        self.bad.setdefault(number + k, reason)
        return texts

    # -- for the parsers' slow paths ------------------------------------------------

    def window(self, need: int) -> tuple[bytes, bool]:
        """At least ``need`` bytes from the position on (fewer only at the end of the stream),
        the unfinished last line included, and whether they reach the end of the stream."""
        lines = self._lines
        have = sum(map(len, lines[self._pos :]))
        while not self._eof and have + (0 if self._unit else self._tail_len) < need:
            known = len(lines)
            self._read()
            have += sum(map(len, lines[known:]))
        data = b"".join(lines[self._pos :])
        if self._tail and not self._unit:
            data += b"".join(self._tail)
        return data, self._eof

    def skip_through(self, at: int) -> None:
        """Consume the lines before the one holding byte ``at`` (counted from the position) and that
        line, reading past an unfinished line without keeping it."""
        lines = self._lines
        total = 0
        k = 0
        for raw in islice(lines, self._pos, None):
            total += len(raw)
            k += 1
            if total > at:
                self.consume(k)
                return
        self.consume(k)
        self._skip_unfinished()

    def _skip_unfinished(self) -> None:
        skipped = self._tail_len
        cr = bool(self._tail) and self._tail[-1][-1:] == b"\r"
        self._tail = []
        self._tail_len = 0
        stream = self._stream
        while True:
            data = stream.read(self._chunk)
            if not data:
                self._eof = True
                break
            if cr:  # the skipped bytes ended with "\r": the line ended there, with this "\n" if it is one
                end = 1 if data[:1] == b"\n" else 0
            else:
                found = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
                if not found:
                    skipped += len(data)
                    continue
                i = min(found)
                if data[i] == 13 and i + 1 == len(data):
                    skipped += len(data)
                    cr = True
                    continue
                end = i + 2 if data[i] == 13 and data[i + 1] == 10 else i + 1
            skipped += end
            if end < len(data):
                self._ingest(data[end:])
            break
        self.offset += skipped
        self.line += 1


def _no_lone_cr(data: bytes) -> bool:
    """Every "\\r" in ``data`` is followed by "\\n" (a "\\r" in the last byte counts as followed)."""
    i = data.find(b"\r")
    for _ in range(16):  # a few with memchr (rare carriage returns: a long line, a blob)…
        if i < 0:
            return True
        if i + 1 < len(data) and data[i + 1] != 10:
            return False
        i = data.find(b"\r", i + 2)
    # …many (CRLF lines): one regular expression pass over the rest
    return i < 0 or not _LONE_CR.search(data, i)


def _find_unit(data: bytes, unit_bytes: bytes, start: int, unit: int) -> int:
    i = data.find(unit_bytes, start)
    while i >= 0 and i % unit:  # a match across two code units is not that character
        i = data.find(unit_bytes, i + 1)
    return i


def _wide_lines(data: bytes, unit: int, lf: bytes, cr: bytes) -> tuple[list[bytes], bytes]:
    """Split UTF-16/32 bytes (starting at a code unit) into complete lines and the unfinished rest."""
    lines: list[bytes] = []
    pos = 0
    n = len(data)
    a = _find_unit(data, lf, 0, unit)
    b = _find_unit(data, cr, 0, unit)
    while True:
        if 0 <= a < pos:
            a = _find_unit(data, lf, pos, unit)
        if 0 <= b < pos:
            b = _find_unit(data, cr, pos, unit)
        if b >= 0 and (a < 0 or b < a):
            end = b + unit
            if end + unit > n:  # what follows "\r" is not here yet: it may be "\n"
                break
            if data[end : end + unit] == lf:
                end += unit
        elif a >= 0:
            end = a + unit
        else:
            break
        lines.append(data[pos:end])
        pos = end
    return lines, data[pos:]


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
        msg = jexc.msg.removesuffix(" at")  # "Invalid control character at"
        if jexc.lineno > 1:
            return f"invalid JSON: {msg} at line {jexc.lineno} column {jexc.colno}", "JSONDecodeError"
        return f"invalid JSON: {msg} at column {jexc.colno}", "JSONDecodeError"
    except ValueError as vexc:
        return f"invalid JSON: {vexc}", type(vexc).__name__
    return f"invalid JSON: {exc}", type(exc).__name__


def _line_text(raw: bytes, encoding: str) -> str:
    return raw.decode(encoding, "replace").rstrip("\r\n")


def _content_len(raw: bytes) -> int:
    if raw.endswith(b"\r\n"):
        return len(raw) - 2
    return len(raw) - 1 if raw[-1:] in (b"\n", b"\r") else len(raw)


def _jsonl_slow(
    lines: list[bytes], first_line: int, offsets: list[int], path: str, src: TextLines
) -> tuple[list[Record], list[int], list[DeadLetter]]:
    """Line by line, with blank lines skipped and bad ones dead-lettered (only for batches with a problem)."""
    loads = codec().loads
    encoding = src.encoding
    utf8 = encoding == "utf-8"
    records: list[Record] = []
    where: list[int] = []
    dead: list[DeadLetter] = []
    for i, raw in enumerate(lines):
        number = first_line + i
        origin = {"file": path, "line": number, "offset": offsets[i]}
        if not raw.strip():
            continue
        if _content_len(raw) > src.limit:
            reason = f"JSON line longer than max_field_bytes ({src.limit} bytes)"
            dead.append(DeadLetter(_excerpt(raw, encoding), reason, "source", "ValueError", origin))
            continue
        bad = src.bad.get(number)
        if bad is not None:
            dead.append(DeadLetter(_line_text(raw, encoding), bad, "source", "UnicodeDecodeError", origin))
            continue
        try:
            obj = loads(raw if utf8 else raw.decode(encoding))
        except ValueError as exc:
            reason, etype = _json_reason(raw, exc, encoding)
            dead.append(DeadLetter(_line_text(raw, encoding), reason, "source", etype, origin))
            continue
        if type(obj) is dict:
            records.append(obj)
            where.append(i)
        else:
            reason = f"JSON line is not an object (got {_json_type(obj)})"
            dead.append(DeadLetter(_line_text(raw, encoding), reason, "source", "ValueError", origin))
    return records, where, dead


def read_jsonl(src: TextLines, max_records: int, *, path: str, offsets: bool = False) -> ReadResult:
    """Read up to ``max_records`` lines of JSON Lines from ``src``.

    Blank lines are skipped; a line that does not parse, is not an object, does not decode or
    is longer than ``src.limit`` becomes a dead letter. With ``offsets`` the result also has
    each record's byte offset.
    """
    src.trim()
    loads = codec().loads
    utf8 = src.encoding == "utf-8"
    records: list[Any] = []
    dead: list[DeadLetter] = []
    where: list[int] = []
    starts: list[int] | None = [] if offsets else None
    budget = max_records
    wide = src.encoding != src.label  # UTF-16/32: a line's size in the file is not its length here
    while budget > 0:
        first = src.line
        base = src.offset
        lines = src.take(budget)
        if not lines:
            if not src.overlong:
                break
            # a line longer than the limit: never held whole
            data, _ = src.window(_EXCERPT * 4)
            reason = f"JSON line longer than max_field_bytes ({src.limit} bytes)"
            origin = {"file": path, "line": first, "offset": base}
            dead.append(DeadLetter(_excerpt(data, src.encoding, True), reason, "source", "ValueError", origin))
            src.skip_through(0)
            budget -= 1
            continue
        got: list[Any]
        try:
            got = list(map(loads, lines)) if utf8 else list(map(loads, map(src._decode, lines)))
            ok = set(map(type, got)) == {dict} and not (src.long_lines and max(map(len, lines)) > src.limit)
            if ok and src.bad:
                ok = not any(first <= n < first + len(lines) for n in src.bad)
        except ValueError:
            ok = False
        if ok and not records and not dead:
            # objects on consecutive lines, in one read: the common case, with no list of lines
            # (and their offsets counted only if asked for: an origin is rarely looked up)
            at: Sequence[int] | None = None
            if offsets:
                at = list(accumulate(src.taken_sizes(), initial=base))[:-1] if wide else _LineOffsets(base, lines)
            return ReadResult(got, [], src.offset, src.line, src.at_end(), first, at)
        line_offsets = list(accumulate(src.taken_sizes(), initial=base))
        good: list[Any]
        idx: list[int]
        bad: list[DeadLetter]
        if ok:
            good, idx, bad = got, list(range(len(got))), []
        else:
            good, idx, bad = _jsonl_slow(lines, first, line_offsets, path, src)
        records += good
        where += [first + i for i in idx]
        if starts is not None:
            starts += [line_offsets[i] for i in idx]
        dead += bad
        budget -= len(lines)
    return ReadResult(records, dead, src.offset, src.line, src.at_end(), where, starts)


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
    A byte-order mark decides the encoding.
    """
    bom, skip = detect_bom(data[:4])
    if bom is not None:
        data = data[skip:]
        encoding = bom
    utf8 = codecs.lookup(encoding).name == "utf-8"
    try:
        value = codec().loads(data if utf8 else data.decode(encoding))
    except ValueError as exc:
        text = data.decode(encoding, "replace")
        reason, etype = _json_reason(data if utf8 else text, exc, encoding)
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


# --------------------------------------------------------------------------- CSV framing


@dataclass(frozen=True)
class _Dialect:
    """The byte patterns of one delimiter / quote pair (ASCII, so they are single bytes in every encoding read)."""

    delim: int
    quote: int
    qbyte: bytes
    content: re.Pattern[bytes]  # the inside of a quoted field, up to its closing quote
    rest: re.Pattern[bytes]  # the rest of a field, up to a delimiter or a line end
    frame: re.Pattern[bytes]  # complete records, as many as there are
    one: re.Pattern[bytes]  # one complete record


_DIALECTS: dict[tuple[str, str], _Dialect] = {}


def _dialect(delimiter: str, quotechar: str) -> _Dialect:
    key = (delimiter, quotechar)
    found = _DIALECTS.get(key)
    if found is not None:
        return found
    if len(delimiter) != 1 or len(quotechar) != 1 or not delimiter.isascii() or not quotechar.isascii():
        raise ValueError("the CSV delimiter and quote character must be single ASCII characters")
    d = re.escape(delimiter.encode("ascii"))
    q = re.escape(quotechar.encode("ascii"))
    # The csv module's reader as a regular expression: outside a quoted field a quote opens one
    # only at the start of a field (after a delimiter or a line end), elsewhere it is text; inside,
    # "" is a quote and the first lone quote closes it. Possessive repeats keep it linear.
    text = rb"[^" + q + rb"\r\n]*+"
    quoted = rb"(?:(?<=[^" + d + rb"\r\n])" + q + rb"|" + q + rb"(?:[^" + q + rb"]++|" + q + q + rb")*+" + q + rb")"
    record = text + rb"(?:" + quoted + text + rb")*+(?:\r\n|\r|\n)"
    found = _Dialect(
        delim=delimiter.encode("ascii")[0],
        quote=quotechar.encode("ascii")[0],
        qbyte=quotechar.encode("ascii"),
        content=re.compile(rb"(?:[^" + q + rb"]++|" + q + q + rb")*+"),
        rest=re.compile(rb"[^" + d + rb"\r\n]*+"),
        frame=re.compile(rb"(?:" + record + rb")*+"),
        one=re.compile(record),
    )
    _DIALECTS[key] = found
    return found


def _record_end(buf: bytes | bytearray, pos: int, eof: bool, d: _Dialect, limit: int) -> tuple[str, int]:
    """Where the CSV record starting at ``buf[pos]`` ends, field by field, with the length rule.

    Returns ``("ok", end)``; ``("eof", start)`` for a quoted field still open at the end of the
    input and ``("long", start)`` for a field longer than ``limit`` bytes — ``start`` being
    where that field starts; or ``("more", n)`` when ``buf`` must hold ``n`` bytes to decide.
    The same rules as ``_Dialect.frame`` for a record of at most ``limit`` bytes.
    """
    n = len(buf)
    i = pos
    quote = d.quote
    while True:
        start = i
        if i < n and buf[i] == quote:
            m = d.content.match(buf, i + 1)
            j = m.end() if m else i + 1
            # buf[j] is the closing quote, unless j == n; a quote in the last byte may be half of ""
            if j >= n or (j == n - 1 and not eof):
                if n - start > limit:
                    return ("long", start)
                if eof:
                    return ("eof", start)
                return ("more", _grow(pos, n, start + limit + 1))
            i = j + 1
        m = d.rest.match(buf, i)
        i = m.end() if m else i
        if i - start > limit:
            return ("long", start)
        if i >= n:
            if eof:
                return ("ok", n)
            return ("more", _grow(pos, n, start + limit + 1))
        c = buf[i]
        if c == d.delim:
            i += 1
            continue
        if c == 10:
            return ("ok", i + 1)
        if i + 1 < n:  # "\r"
            return ("ok", i + 2 if buf[i + 1] == 10 else i + 1)
        if eof:
            return ("ok", i + 1)
        return ("more", i + 2)


def _grow(pos: int, n: int, most: int) -> int:
    # ask for twice as much each time (a long record is looked at a few times, not once per chunk)
    return min(most, max(n + _CHUNK, 2 * n - pos))


class _Scan:
    """Walks a file record by record (bytes only) for :func:`aligned_boundaries`.

    ``buf`` always starts at a record start, ``base`` is its offset and ``line`` its line
    number. ``window`` caps what one regular expression match may accept, so that every
    record accepted that way is at most ``limit`` bytes; longer ones go through
    :func:`_record_end`, which applies the length rule exactly as the readers do.
    """

    def __init__(self, stream: IO[bytes], size: int, dialect: _Dialect | None, limit: int, chunk: int) -> None:
        self.stream = stream
        self.size = size
        self.d = dialect
        self.limit = limit
        self.chunk = max(chunk, 16)
        self.window = max(1, min(self.chunk, limit))
        self.buf = bytearray()
        self.base = 0
        self.line = 1
        self.eof = size <= 0

    def _read(self, need: int = 0) -> bool:
        """Read a chunk, and more until ``buf`` holds ``need`` bytes; False when nothing was left."""
        got = False
        while not self.eof and (not got or len(self.buf) < need):
            want = min(max(self.chunk, need - len(self.buf)), self.size - self.base - len(self.buf))
            data = self.stream.read(want) if want > 0 else b""
            if data:
                self.buf += data
                got = True
            if not data or self.base + len(self.buf) >= self.size:
                self.eof = True
        return got

    def _drop(self, end: int) -> None:
        self.line += count_lines(self.buf, 0, end)
        del self.buf[:end]
        self.base += end

    def _cr_safe(self, end: int) -> int:
        """``end``, or one less when byte ``end - 1`` is a "\\r" that a "\\n" follows (or may follow)."""
        buf = self.buf
        if end and buf[end - 1] == 13:
            if (end < len(buf) and buf[end] == 10) or (end == len(buf) and not self.eof):
                return end - 1
        return end

    def _last_line_end(self, limit: int) -> int:
        buf = self.buf
        n = len(buf)
        e = buf.rfind(b"\n", 0, limit) + 1
        r = buf.rfind(b"\r", e, limit)
        while r >= 0:
            if r + 1 < n:
                if buf[r + 1] != 10:
                    return r + 1
            elif self.eof:
                return r + 1
            r = buf.rfind(b"\r", e, r)
        return e

    def _ends_before(self, limit: int) -> int:
        """End of the last complete record that ends at or before ``limit`` (0 when none does)."""
        buf = self.buf
        limit = min(limit, len(buf))
        if limit <= 0:
            return 0
        if self.d is None or buf.find(self.d.qbyte, 0, limit) < 0:
            return self._last_line_end(limit)  # no quote: every line is a record
        end = self._cr_safe(min(limit, self.window))
        m = self.d.frame.match(buf, 0, end)
        return m.end() if m else 0

    def _skip_line_at(self, pos: int) -> None:
        """Move past the end of the line holding ``buf[pos]`` (without holding that line whole)."""
        while True:
            buf = self.buf
            n = len(buf)
            found = [i for i in (buf.find(b"\n", pos), buf.find(b"\r", pos)) if i >= 0]
            if found:
                i = min(found)
                if buf[i] == 10:
                    self._drop(i + 1)
                    return
                if i + 1 < n:
                    self._drop(i + 2 if buf[i + 1] == 10 else i + 1)
                    return
                if self.eof:
                    self._drop(i + 1)
                    return
                self._drop(i)  # keep the "\r": a "\n" may follow
            elif self.eof:
                self._drop(n)
                return
            else:
                self._drop(n)
            pos = 0
            self._read()

    def _skip_first(self) -> None:
        """Move past the record at the start of ``buf`` (past the line where an unterminated one's field opened)."""
        if self.d is None:
            self._skip_line_at(0)
            return
        while True:
            end = self._cr_safe(min(len(self.buf), self.window))
            m = self.d.one.match(self.buf, 0, end)
            if m:
                self._drop(m.end())
                return
            status, value = _record_end(self.buf, 0, self.eof, self.d, self.limit)
            if status == "ok":
                self._drop(value)
                return
            if status == "more":
                self._read(value)
                continue
            self._skip_line_at(value)
            return

    def record_start(self, target: int) -> tuple[int, int]:
        """The first record start at or after ``target`` (the end of the data when none) and its line number."""
        while True:
            rel = target - self.base
            if rel <= 0 or (self.eof and not self.buf):
                return self.base, self.line
            n = len(self.buf)
            if n <= rel and not self.eof:  # the target is past the buffer: move over what it holds
                e = self._ends_before(n)
                if e:
                    self._drop(e)
                elif n >= self.window:
                    self._skip_first()  # a record longer than a window
                self._read()
                continue
            e = self._ends_before(rel - 1)
            if e:
                self._drop(e)
            else:
                self._skip_first()  # the record holding byte target - 1: it ends at or after the target


def aligned_boundaries(
    stream: IO[bytes],
    size: int,
    split_bytes: int,
    *,
    quotechar: str | None = None,
    delimiter: str = ",",
    max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES,
    chunk_size: int = 1 << 22,
) -> list[tuple[int, int]]:
    """Split starts ``[(offset, line), …]`` for byte ranges of about ``split_bytes`` bytes.

    ``stream`` is read from offset 0 up to ``size`` bytes. The first start is ``(0, 1)``;
    every other one is the first record start at or after ``previous start + split_bytes``,
    with its 1-based line number. Without ``quotechar`` records are lines; with it they are CSV
    records, found under the same rules as :func:`read_csv` applies — the ``csv`` module's
    quoting, ``max_field_bytes`` and the recovery from an unterminated quoted field — so a
    reader started at a boundary reads exactly the records after it. Range ``i`` is
    ``[starts[i], starts[i + 1])``, the last one ends at ``size``.
    """
    if split_bytes <= 0:
        raise ValueError("split_bytes must be positive")
    dialect = _dialect(delimiter, quotechar) if quotechar else None
    scan = _Scan(stream, size, dialect, max_field_bytes, chunk_size)
    bounds = [(0, 1)]
    target = split_bytes
    while target < size:
        start, line = scan.record_start(target)
        if start >= size:
            break
        bounds.append((start, line))
        target = start + split_bytes
    return bounds


# --------------------------------------------------------------------------- CSV reading


def _raise_field_limit(limit: int) -> None:
    # csv.field_size_limit is one setting for the whole process (every csv reader, every
    # thread). The readers here enforce max_field_bytes themselves, in bytes, before the csv
    # module sees a longer field; they only need its limit (in characters, never more than the
    # bytes) not to be lower. So it is only ever raised — never lowered under another reader
    # that needs more — and left raised.
    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)


class _Feed:
    """Decoded lines for ``csv.reader``: the pending lines of a :class:`TextLines`, then more as
    the reader asks for them — never letting the record being read grow past ``src.limit``
    bytes. ``ends`` is kept by the caller: after each row returned, how many of the lines fed
    it has used (the record being read starts after ``ends[-1]``); without it (``None``) every
    record is taken to start at the first line fed, which cuts early but never late. When the
    lines stop,
    ``cut`` says the next record is longer than the limit and ``partial`` that the reader was
    inside a record: the row it returns then is not one, and ``stop`` is where it started."""

    __slots__ = ("_it", "bailed", "cut", "ends", "partial", "rows", "src", "stop")

    def __init__(self, src: TextLines, ends: list[int] | None, rows: Callable[[], int] | None = None) -> None:
        self.src = src
        self.ends = ends
        #: without ``ends``: how many rows the reader returned so far; while rows are lines, it
        #: equals the lines fed whenever more are asked for — else the feed stops (``bailed``)
        self.rows = rows
        self.bailed = False
        self.cut = False
        self.partial = False
        self.stop = 0
        self._it: Iterator[str] = chain.from_iterable(self._blocks())

    def __iter__(self) -> Iterator[str]:
        return self._it

    def _end(self, fed: int, cut: bool) -> None:
        self.stop = self.ends[-1] if self.ends else 0
        self.partial = self.stop < fed
        self.cut = cut

    def _blocks(self) -> Iterator[Iterable[str]]:
        src = self.src
        lines = src._lines
        start = src._pos
        limit = src.limit
        ends = self.ends
        fed = 0  # lines handed out
        fed_bytes = 0
        firsts = [0]  # the first line of each block handed out…
        befores = [0]  # …and the bytes before it
        rows = self.rows
        while True:
            if rows is not None and rows() != fed:  # a row took more than one line: stop betting
                self.bailed = True
                self._end(fed, False)
                return
            i = start + fed
            if i >= len(lines):
                if not src.more() and i >= len(lines):
                    self._end(fed, src.overlong)
                    return
                continue
            block = lines[i:]
            size = src._ready - fed_bytes  # every line after the ones fed is in this block
            mark = ends[-1] if ends else 0  # where the record being read starts
            b = bisect_right(firsts, mark) - 1  # the block it starts in
            if fed_bytes - befores[b] + size > limit:
                # the record may outgrow the limit within this block: count exactly, line by line
                here = befores[b] + sum(map(len, lines[start + firsts[b] : start + mark]))
                sizes = list(accumulate(map(len, block), initial=fed_bytes))
                k = bisect_right(sizes, here + limit) - 1
                if k <= 0:
                    self._end(fed, True)
                    return
                block = block[:k]
                size = sizes[k] - fed_bytes
            firsts.append(fed + len(block))
            befores.append(fed_bytes + size)
            fed += len(block)
            fed_bytes += size
            if rows is not None:
                yield map(src._decode, block)  # decoded as csv reads (text that does not decode: the pass is redone)
            else:
                texts = src.decoded(i + len(block))
                yield texts[i : i + len(block)]


class _OnDemand(Sequence[int]):
    """A sequence of numbers computed one at a time when asked (origins are looked up only for
    the rare record a step or the sink rejects); subclasses give ``__len__``, ``_at`` and
    ``to_list``."""

    __slots__ = ()

    @abc.abstractmethod
    def _at(self, i: int) -> int:
        """Number ``i`` alone (for the one record a dead letter is about)."""

    @abc.abstractmethod
    def to_list(self) -> list[int]:
        """Every number, in one pass (origins sent to another process): asking :meth:`_at`
        for each would cost O(n²)."""

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return self.to_list()[i]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._at(i)


class _LineOffsets(_OnDemand):
    """The byte offset of each of ``lines`` (read one after the other from ``base``)."""

    __slots__ = ("_base", "_lines")

    def __init__(self, base: int, lines: list[bytes]) -> None:
        self._base = base
        self._lines = lines

    def __len__(self) -> int:
        return len(self._lines)

    def _at(self, i: int) -> int:
        return self._base + sum(map(len, self._lines[:i]))

    def to_list(self) -> list[int]:
        if not self._lines:
            return []
        return list(itertools.accumulate(map(len, self._lines[:-1]), initial=self._base))


class _StartLines(_OnDemand):
    """The first line of each row of a pass, from the line counts after each."""

    __slots__ = ("_ends", "_first")

    def __init__(self, first: int, ends: list[int]) -> None:
        self._first = first
        self._ends = ends

    def __len__(self) -> int:
        return len(self._ends)

    def _at(self, i: int) -> int:
        return self._first + (self._ends[i - 1] if i else 0)

    def to_list(self) -> list[int]:
        first = self._first
        return [first, *(first + e for e in self._ends[:-1])] if self._ends else []


def _touches(bad: dict[int, str], first: int, last: int) -> int:
    """The first line number in ``bad`` within ``[first, last]``, or 0."""
    hits = [n for n in bad if first <= n <= last]
    return min(hits) if hits else 0


def _read_csv(src: TextLines, max_records: int, path: str, options: CsvOptions, names: list[str] | None) -> ReadResult:
    """The CSV reader; ``names=None`` reads rows as lists whatever their width (the header).

    It reads in passes over the buffered lines: :func:`_fast_pass` bets that every row is one
    line; otherwise each row's lines are counted as the ``csv`` module returns it. A record that
    outgrows the limit, or that the end of the input cuts, is decided byte by byte
    (:func:`_csv_slow_record`), by the same rules the split boundaries are found with.
    """
    _raise_field_limit(src.limit)
    dialect = _dialect(options.delimiter, options.quotechar)
    width = len(names) if names is not None else -1
    keys: list[str] = names or []
    what = "header" if options.header and not options.columns else "columns"
    records: list[Any] = []
    dead: list[DeadLetter] = []
    where: list[Sequence[int]] = []  # the first line of each record, pass by pass
    append = records.append
    while True:
        budget = max_records - len(records) - len(dead)
        if budget <= 0:
            break
        src.trim()
        if src.eof:
            break
        if width >= 0 and not src.multiline:
            fast = _fast_pass(src, budget, dialect, options, path, keys, width, what, records, dead)
            if fast is not None:
                where.append(fast)
                continue
        first = src.line
        before = len(records)
        ends: list[int] = []  # after each row: the lines of this pass it and the rows before used
        end = ends.append
        skipped: list[tuple[int, DeadLetter | None]] = []  # rows that are no record: (row, dead letter or None)
        feed = _Feed(src, ends)
        reader = csv.reader(feed, delimiter=options.delimiter, quotechar=options.quotechar)
        try:
            for row in islice(reader, budget):
                end(reader.line_num)
                if len(row) == width:
                    append(dict(zip(keys, row, strict=True)))
                elif width < 0 and row:
                    append(row)
                else:
                    letter = None
                    if row:
                        reason = f"CSV row has {len(row)} fields, {what} has {width}"
                        letter = DeadLetter(_csv_text(row, options), reason, "source", "ValueError", {"file": path})
                    skipped.append((len(ends) - 1, letter))
        except csv.Error:
            feed.cut = True  # the csv module gave up inside a record (its limit lowered elsewhere?): decide in bytes
            feed.stop = ends[-1] if ends else 0
        if (feed.partial or feed.cut) and ends and ends[-1] > feed.stop:
            # the lines ran out inside a record: the row csv made of them (the last) is not one
            if skipped and skipped[-1][0] == len(ends) - 1:
                skipped.pop()
            else:
                records.pop()
            ends.pop()
        used = ends[-1] if ends else 0
        if skipped or (src.bad and _touches(src.bad, first, first + used - 1)):
            where.append(_sort_out(src, path, records, before, ends, skipped, dead))
        else:
            where.append(_StartLines(first, ends))
        src.consume(used)
        if feed.cut or feed.partial:
            where.append(_csv_slow_record(src, dialect, options, path, keys, width, what, records, dead))
    lines: Sequence[int] = where[0] if len(where) == 1 else [n for seq in where for n in seq]
    return ReadResult(records, dead, src.offset, src.line, src.at_end(), lines)


def _fast_pass(
    src: TextLines,
    budget: int,
    dialect: _Dialect,
    options: CsvOptions,
    path: str,
    keys: list[str],
    width: int,
    what: str,
    records: list[Any],
    dead: list[DeadLetter],
) -> Sequence[int] | None:
    """A pass that counts no lines per row, on the bet that every row is one line (the usual CSV
    file); the bet is checked afterwards — rows returned against lines used — and when it is lost
    nothing of the pass is kept (``None``: the lines are still buffered, the caller reads them
    again counting). Returns the first line of each record."""
    before = len(records)
    first = src.line
    skipped: list[tuple[int, list[str]]] = []  # (row, fields) of the rows that are no record
    feed = _Feed(src, None, lambda: len(records) - before + len(skipped))
    reader = csv.reader(feed, delimiter=options.delimiter, quotechar=options.quotechar)
    append = records.append
    try:
        for row in islice(reader, budget):
            if len(row) == width:
                append(dict(zip(keys, row, strict=True)))
            else:
                skipped.append((len(records) - before + len(skipped), row))
    except (csv.Error, UnicodeDecodeError):
        del records[before:]  # the careful pass says which record and why
        return None
    used = reader.line_num
    rows = len(records) - before + len(skipped)
    if rows != used or feed.bailed or feed.cut or (src.bad and _touches(src.bad, first, first + used - 1)):
        del records[before:]
        if rows != used or feed.bailed or feed.cut:
            src.multiline = True
        return None
    partial = False
    if feed.partial and rows:
        # the input ended: the last line is a record only if no quoted field is open in it
        raw = src._lines[src._pos + rows - 1]
        status, end = _record_end(raw, 0, False, dialect, src.limit)
        if status != "ok" or end != len(raw):
            partial = True
            if skipped and skipped[-1][0] == rows - 1:
                skipped.pop()
            else:
                records.pop()
            used -= 1
    lines: Sequence[int] = range(first, first + used)
    if skipped:
        offsets = src.offsets(used)
        for index, fields in skipped:
            if fields:
                reason = f"CSV row has {len(fields)} fields, {what} has {width}"
                origin = {"file": path, "line": first + index, "offset": offsets[index]}
                dead.append(DeadLetter(_csv_text(fields, options), reason, "source", "ValueError", origin))
        gone = {index for index, _ in skipped}
        lines = [first + k for k in range(used) if k not in gone]
    src.consume(used)
    if partial:
        lines = [*lines, *_csv_slow_record(src, dialect, options, path, keys, width, what, records, dead)]
    return lines


def _sort_out(
    src: TextLines,
    path: str,
    records: list[Any],
    before: int,
    ends: list[int],
    skipped: list[tuple[int, DeadLetter | None]],
    dead: list[DeadLetter],
) -> list[int]:
    """A pass with rows that are no record, or with text that did not decode: the dead letters get
    their line and offset, records on lines that do not decode become dead letters too, and the
    first line of every record is returned."""
    first = src.line
    offsets = src.offsets(ends[-1] if ends else 0)
    not_records = dict(skipped)
    kept: list[Any] = []
    lines: list[int] = []
    got = iter(records[before:])
    for row, stop in enumerate(ends):
        start = ends[row - 1] if row else 0
        letter = not_records.get(row)
        if row not in not_records:
            record = next(got)
            if src.bad and _touches(src.bad, first + start, first + stop - 1):
                letter = _undecodable(src, start, stop, src.bad, path)
            else:
                kept.append(record)
                lines.append(first + start)
                continue
        if letter is not None:
            letter.origin.update(line=first + start, offset=offsets[start])
            dead.append(letter)
    records[before:] = kept
    return lines


def _undecodable(src: TextLines, i: int, j: int, bad: dict[int, str], path: str) -> DeadLetter:
    """The record on buffered lines ``[i, j)`` of this pass, as a dead letter for text that does not decode."""
    first = src.line + i
    hit = _touches(bad, first, src.line + j - 1)
    reason = bad[hit] if hit == first else f"{bad[hit]} on line {hit}"
    raw = b"".join(src._lines[src._pos + i : src._pos + j])
    return DeadLetter(_line_text(raw, src.encoding), reason, "source", "UnicodeDecodeError", {"file": path})


def _csv_slow_record(
    src: TextLines,
    d: _Dialect,
    options: CsvOptions,
    path: str,
    keys: list[str],
    width: int,
    what: str,
    records: list[Any],
    dead: list[DeadLetter],
) -> list[int]:
    """One record decided byte by byte: longer than the limit, or cut short by the end of the input.
    Returns its first line when it is a record."""
    limit = src.limit
    data, eof = src.window(limit + 1)
    if not data:
        return []
    while True:
        status, value = _record_end(data, 0, eof, d, limit)
        if status != "more":
            break
        data, eof = src.window(value)
    origin = {"file": path, "line": src.line, "offset": src.offset}
    if status == "ok":
        k = bisect_right(list(accumulate(map(len, src._lines[src._pos :]))), value)
        texts = src.decoded(src._pos + k)[src._pos : src._pos + k]
        hit = _touches(src.bad, src.line, src.line + k - 1) if src.bad else 0
        try:
            rows = [row for row in csv.reader(texts, delimiter=options.delimiter, quotechar=options.quotechar) if row]
        except csv.Error as exc:
            letter = DeadLetter(_excerpt(data[:value], src.encoding), f"CSV error: {exc}", "source", "csv.Error", origin)
            dead.append(letter)
            src.consume(k)
            return []
        line = []
        if hit:
            letter = _undecodable(src, 0, k, src.bad, path)
            letter.origin.update(line=src.line, offset=src.offset)
            dead.append(letter)
        elif len(rows) == 1 and (len(rows[0]) == width or width < 0):
            records.append(dict(zip(keys, rows[0], strict=True)) if width >= 0 else rows[0])
            line = [src.line]
        elif rows:
            reason = f"CSV row has {len(rows[0])} fields, {what} has {width}"
            if len(rows) > 1:  # not one record after all: kept whole rather than any row dropped
                reason = f"CSV error: the record reads as {len(rows)} rows"
            dead.append(DeadLetter(_excerpt(data[:value], src.encoding), reason, "source", "ValueError", origin))
        src.consume(k)
        return line
    if status == "eof" and src.beyond is not None and not src._unit:
        # the range ends inside the field: the rest of the file says whether it is too long or never closed
        more = src.beyond(value + limit + 1 - len(data))
        status = _record_end(data + more, 0, len(data) + len(more) < value + limit + 1, d, limit)[0]
        status = "long" if status == "long" else "eof"
    opened = src.line + count_lines(data, 0, value)
    if status == "eof":
        reason = f"unterminated quoted field opened on line {opened}"
    elif data[value] == d.quote:
        reason = f"quoted field opened on line {opened} is longer than max_field_bytes ({limit} bytes)"
    else:
        reason = f"field on line {opened} is longer than max_field_bytes ({limit} bytes)"
    found = [i for i in (data.find(b"\n", value), data.find(b"\r", value)) if i >= 0]
    line_end = min(found) + 1 if found else len(data)
    text = _excerpt(data[:line_end], src.encoding, not found and not eof)
    dead.append(DeadLetter(text, reason, "source", "ValueError", origin))
    src.skip_through(value)
    return []


def read_csv(
    src: TextLines,
    max_records: int,
    *,
    path: str,
    fieldnames: Sequence[str],
    options: CsvOptions,
) -> ReadResult:
    """Read up to ``max_records`` CSV rows from ``src`` as dicts keyed by ``fieldnames``.

    ``src`` must be at a record start. Blank lines are skipped; a row with another number of
    fields than ``fieldnames``, text that does not decode, an unterminated quoted field or a
    field longer than ``src.limit`` becomes a dead letter (see the module doc).
    """
    return _read_csv(src, max_records, path, options, list(fieldnames))


def read_csv_header(
    stream: TextLines | io.BufferedReader,
    options: CsvOptions,
    *,
    path: str = "",
    limit: int = DEFAULT_MAX_FIELD_BYTES,
) -> tuple[list[str], int]:
    """Read the header row at the stream's position (offset 0, after any byte-order mark).

    Returns the field names (``options.columns`` when given) and the number of lines the
    header took, blank lines before it included (0 when the file is empty). Without a header
    row, returns ``options.columns`` and 0 without reading. A header row that cannot be read
    raises :class:`~core.errors.SourceDataError`.
    """
    if not options.header:
        return list(options.columns or []), 0
    src = stream if isinstance(stream, TextLines) else TextLines(
        stream, offset=stream.tell(), encoding=options.encoding, limit=limit
    )
    before = src.line
    res = _read_csv(src, 1, path, options, None)
    if res.dead_letters:
        letter = res.dead_letters[0]
        raise SourceDataError(
            f"{path or 'CSV input'}: the header row on line {letter.origin.get('line')} cannot be read: "
            f"{letter.reason}; fix the file, or set 'header: false' and name the fields with 'columns'"
        )
    names = [str(n) for n in res.records[0]] if res.records else []
    if options.columns:
        names = list(options.columns)
    return names, src.line - before


def _csv_text(row: list[str], options: CsvOptions) -> str:
    # The row as CSV text again (re-quoted: the reader does not keep the raw bytes). The
    # writer quotes fields containing its line terminator's characters, so keep "\r\n".
    buf = io.StringIO()
    csv.writer(buf, delimiter=options.delimiter, quotechar=options.quotechar, lineterminator="\r\n").writerow(row)
    return buf.getvalue()[:-2]


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
