"""The ``wasi:io`` host functions: errors, polling, input and output streams."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from active_data_flow.spin_app.local_host.wasi.state import Handles, HostFunctions
from active_data_flow.spin_app.local_host.wasi.streams import IoError, OutputStream, Pollable
from active_data_flow.spin_app.local_host.wasi.values import Err, Ok, V

__all__ = ["io_functions"]


def io_functions(f: HostFunctions, handles: Handles) -> None:
    """Add the ``wasi:io`` host functions (``error``, ``poll``, ``streams``) to ``f``."""
    o = handles.obj
    f["wasi:io/error#[method]error.to-debug-string"] = lambda s, r: o(s, r).message
    f["wasi:io/poll#[method]pollable.ready"] = lambda s, r: bool(o(s, r).ready())
    f["wasi:io/poll#[method]pollable.block"] = lambda s, r: o(s, r).block()

    def poll(s: Any, pollables: list[Any]) -> list[int]:
        items = [o(s, p) for p in pollables]
        while True:
            ready = [i for i, p in enumerate(items) if p.ready()]
            if ready:
                return ready
            waiting = [p for p in items if p.wait is not None]
            (waiting[0] if waiting else items[0]).block()  # a timer, or the trap of block()

    f["wasi:io/poll#poll"] = poll
    _streams(f, handles)


def _write_flush(stream: OutputStream, data: bytes) -> None:
    stream.write(data)
    stream.flush()


def _zeroes(stream: OutputStream, n: int) -> None:
    stream.write(bytes(int(n)))


def _zeroes_flush(stream: OutputStream, n: int) -> None:
    stream.write(bytes(int(n)))
    stream.flush()


def _write_all(stream: OutputStream, data: bytes) -> int:
    stream.write(data)
    return len(data)


def _streams(f: HostFunctions, handles: Handles) -> None:
    """``wasi:io/streams``."""
    o, own = handles.obj, handles.own

    def read(s: Any, r: Any, n: int) -> Any:
        stream = o(s, r)
        if stream.closed:
            return Err(V("closed"))
        chunk = stream.read(min(int(n), 1 << 20))
        return Err(V("closed")) if not chunk and stream.closed else Ok(chunk)

    def skip(s: Any, r: Any, n: int) -> Any:
        got = read(s, r, n)
        return Ok(len(got.value)) if isinstance(got, Ok) else got

    def out(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(s: Any, r: Any, *args: Any) -> Any:
            stream = o(s, r)
            if stream.closed:
                return Err(V("closed"))
            try:
                return Ok(fn(stream, *args))
            except OSError as exc:
                return Err(V("last-operation-failed", own("wasi:io/error", "error", IoError(str(exc)))))
        return call

    def splice(s: Any, r: Any, src: Any, n: int) -> Any:
        source = o(s, src)
        got = read(s, src, n) if not source.closed else Err(V("closed"))
        if isinstance(got, Err):
            return got
        return out(_write_all)(s, r, got.value)

    streams = "wasi:io/streams#[method]"
    f[streams + "input-stream.read"] = read
    f[streams + "input-stream.blocking-read"] = read
    f[streams + "input-stream.skip"] = skip
    f[streams + "input-stream.blocking-skip"] = skip
    f[streams + "input-stream.subscribe"] = lambda s, r: own("wasi:io/streams", "pollable", Pollable())
    f[streams + "output-stream.check-write"] = out(lambda stream: 1 << 20)
    f[streams + "output-stream.write"] = out(lambda stream, data: stream.write(bytes(data)))
    f[streams + "output-stream.blocking-write-and-flush"] = out(lambda stream, data: _write_flush(stream, bytes(data)))
    f[streams + "output-stream.flush"] = out(lambda stream: stream.flush())
    f[streams + "output-stream.blocking-flush"] = out(lambda stream: stream.flush())
    f[streams + "output-stream.subscribe"] = lambda s, r: own("wasi:io/streams", "pollable", Pollable())
    f[streams + "output-stream.write-zeroes"] = out(_zeroes)
    f[streams + "output-stream.blocking-write-zeroes-and-flush"] = out(_zeroes_flush)
    f[streams + "output-stream.splice"] = splice
    f[streams + "output-stream.blocking-splice"] = splice
