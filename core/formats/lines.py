"""How bytes become lines: :class:`TextLines`, the physical lines of a binary stream with the
position to resume from (``\\n``, ``\\r\\n`` and lone ``\\r`` line ends; ASCII-compatible
encodings as they are, UTF-16/32 re-encoded as UTF-8).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from functools import partial
from itertools import accumulate, islice
from typing import IO

from active_data_flow.formats.common import DEFAULT_MAX_FIELD_BYTES, WIDE

__all__ = [
    "CHUNK",
    "TextLines",
]


CHUNK = 1 << 16  # bytes a TextLines reads at once (below malloc's mmap threshold: no fresh pages per chunk)
_LONE_CR = re.compile(rb"\r[^\n]")  # a "\r" in the last byte may still be followed by "\n"


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
        chunk_size: int = CHUNK,
        beyond: Callable[[int], bytes] | None = None,
    ) -> None:
        self._stream = stream
        #: up to n bytes of the file after the stream's end (a byte range of a longer file), so
        #: that a field left open at the end of a range is judged as in the whole file
        self.beyond = beyond
        self.offset = offset
        self.line = line
        self.label = encoding
        self._unit = WIDE.get(encoding, 0)
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
