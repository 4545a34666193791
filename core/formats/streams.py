"""Binary streams over a byte range of a seekable file (:func:`open_range`), with absolute
``tell()`` offsets, and skipping a UTF-8 byte-order mark (:func:`skip_bom`).
"""

from __future__ import annotations

import codecs
import io
from typing import IO, Any

__all__ = [
    "open_range",
    "skip_bom",
]


_BOM = codecs.BOM_UTF8
_DEFAULT_BUFFER = 1 << 18


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
