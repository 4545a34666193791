"""CSV records in bytes: the dialect's byte patterns (:class:`Dialect`), where one record ends
(:func:`record_end`) and split starts that are record starts (:func:`aligned_boundaries`), under
the same rules the CSV reader applies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import IO

from active_data_flow.formats.common import DEFAULT_MAX_FIELD_BYTES, count_lines
from active_data_flow.formats.lines import CHUNK

__all__ = [
    "Dialect",
    "aligned_boundaries",
    "dialect_for",
    "record_end",
]


@dataclass(frozen=True)
class Dialect:
    """The byte patterns of one delimiter / quote pair (ASCII, so they are single bytes in every encoding read)."""

    delim: int
    quote: int
    qbyte: bytes
    content: re.Pattern[bytes]  # the inside of a quoted field, up to its closing quote
    rest: re.Pattern[bytes]  # the rest of a field, up to a delimiter or a line end
    frame: re.Pattern[bytes]  # complete records, as many as there are
    one: re.Pattern[bytes]  # one complete record


_DIALECTS: dict[tuple[str, str], Dialect] = {}


def dialect_for(delimiter: str, quotechar: str) -> Dialect:
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
    found = Dialect(
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


def record_end(buf: bytes | bytearray, pos: int, eof: bool, d: Dialect, limit: int) -> tuple[str, int]:
    """Where the CSV record starting at ``buf[pos]`` ends, field by field, with the length rule.

    Returns ``("ok", end)``; ``("eof", start)`` for a quoted field still open at the end of the
    input and ``("long", start)`` for a field longer than ``limit`` bytes — ``start`` being
    where that field starts; or ``("more", n)`` when ``buf`` must hold ``n`` bytes to decide.
    The same rules as ``Dialect.frame`` for a record of at most ``limit`` bytes.
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
    return min(most, max(n + CHUNK, 2 * n - pos))


class _Scan:
    """Walks a file record by record (bytes only) for :func:`aligned_boundaries`.

    ``buf`` always starts at a record start, ``base`` is its offset and ``line`` its line
    number. ``window`` caps what one regular expression match may accept, so that every
    record accepted that way is at most ``limit`` bytes; longer ones go through
    :func:`record_end`, which applies the length rule exactly as the readers do.
    """

    def __init__(self, stream: IO[bytes], size: int, dialect: Dialect | None, limit: int, chunk: int) -> None:
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
            status, value = record_end(self.buf, 0, self.eof, self.d, self.limit)
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
    dialect = dialect_for(delimiter, quotechar) if quotechar else None
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
