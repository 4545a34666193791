"""The objects behind ``wasi:io``: pollables, errors, input and output streams.

An input stream reads from a buffer, a file or a producer; an output stream hands what the
component writes to a function (stdout, a response body, an outgoing request's buffer).
"""

from __future__ import annotations

from collections.abc import Callable

from active_data_flow.spin_app.local_host.wasi.values import WasiTrap

__all__ = ["InputStream", "IoError", "OutputStream", "Pollable"]


class Pollable:
    def __init__(self, ready: Callable[[], bool] = lambda: True, wait: Callable[[], None] | None = None) -> None:
        self.ready = ready
        self.wait = wait

    def block(self) -> None:
        if self.ready():
            return
        if self.wait is None:  # nothing here can make it ready: waiting would hang the host
            raise WasiTrap("the component waits for something that cannot happen (e.g. a response "
                           "to an outgoing request whose body it has not finished)")
        self.wait()


class IoError:
    def __init__(self, message: str) -> None:
        self.message = message


class InputStream:
    """Bytes from a buffer, a file or a producer (``read(n) -> bytes``, b"" at the end)."""

    def __init__(self, data: bytes = b"", reader: Callable[[int], bytes] | None = None,
                 on_close: Callable[[], None] | None = None) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._reader = reader
        self._on_close = on_close
        self.closed = False

    def read(self, n: int) -> bytes:
        if self._reader is not None:
            chunk = self._reader(n)
        else:
            chunk = bytes(self._data[self._pos : self._pos + n])
            self._pos += len(chunk)
        if not chunk:
            self.closed = True
        return chunk


class OutputStream:
    def __init__(self, write: Callable[[bytes], None], flush: Callable[[], None] | None = None) -> None:
        self._write = write
        self._flush = flush
        self.closed = False

    def write(self, data: bytes) -> None:
        if data:
            self._write(data)

    def flush(self) -> None:
        if self._flush is not None:
            self._flush()
