"""Streaming HTTP responses that work with and without threads.

A :class:`StreamingResponse` is made from a *producer*: a function that runs the work and
calls ``emit(chunk)`` for every chunk as soon as it exists (the flow handlers emit one
NDJSON line per progress event, from inside the engine's synchronous ``on_progress``
callback). Two ways to consume it:

* **push** — :meth:`StreamingResponse.write_to` runs the producer here and hands each chunk
  to ``write`` while the work runs. No threads: this is the way inside a WebAssembly
  component (Spin: write each chunk to the wasi-http outgoing body stream; pass
  ``max_chunk=4096``, the most one ``blocking-write-and-flush`` takes).
* **pull** — iterating (:attr:`chunks`, ``iter(response)``) for adapters that want an
  iterator (Starlette's ``StreamingResponse``, tests). Where threads exist the producer runs
  in a thread and chunks arrive while it runs; where they do not (``sys.platform`` is
  ``wasi`` or ``emscripten``, or starting a thread fails) the producer runs to its end on the
  first ``next()`` and the chunks follow — complete, but not live. :attr:`live` says which.

A producer runs once: consuming a response twice raises ``RuntimeError``. A producer must
not raise (the flow handlers turn errors into a last ``{"event": "error"}`` line); if it
does, the exception reaches the consumer after the chunks emitted before it.

Standard library only (this runs inside a Spin component).
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["Emit", "Producer", "StreamingResponse", "ndjson_line", "threads_available"]

#: receives one chunk of the body
Emit = Callable[[bytes], None]
#: runs the work, emitting chunks as they come
Producer = Callable[[Emit], None]

_DONE = object()


def ndjson_line(event: Mapping[str, Any]) -> bytes:
    """One NDJSON line: compact JSON and ``\\n``."""
    return json.dumps(event, default=str, separators=(",", ":")).encode("utf-8") + b"\n"


def threads_available() -> bool:
    """False on WebAssembly platforms (no threads inside a component)."""
    return sys.platform not in ("wasi", "emscripten")


class StreamingResponse:
    """An HTTP response whose body is produced while the work runs (see the module doc).

    ``threads``: None (default) uses a thread for iteration where threads exist; False
    never does (the no-thread path, as inside a component); True insists (still falling
    back when starting the thread fails).
    """

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        producer: Producer,
        *,
        threads: bool | None = None,
    ) -> None:
        self.status = status
        self.headers: dict[str, str] = {k.lower(): v for k, v in headers.items()}
        self._producer = producer
        self._threads = threads_available() if threads is None else threads
        self._consumed = False
        #: whether iteration delivered chunks while the producer ran (set once iterating starts)
        self.live: bool | None = None

    def _take(self) -> Producer:
        if self._consumed:
            raise RuntimeError("a streaming response can be consumed only once")
        self._consumed = True
        return self._producer

    def write_to(self, write: Emit, *, max_chunk: int | None = None) -> None:
        """Run the producer here, passing every chunk to ``write`` as it is produced
        (split into pieces of at most ``max_chunk`` bytes when given)."""
        producer = self._take()
        self.live = True
        if max_chunk is None:
            producer(write)
            return
        if max_chunk < 1:
            raise ValueError("max_chunk must be at least 1")

        def split(chunk: bytes) -> None:
            for i in range(0, len(chunk), max_chunk):
                write(chunk[i : i + max_chunk])

        producer(split)

    @property
    def chunks(self) -> Iterator[bytes]:
        """The body as an iterator of chunks (see the module doc for when it is live)."""
        return self._iterate()

    def __iter__(self) -> Iterator[bytes]:
        return self._iterate()

    def body(self) -> bytes:
        """The whole body (consumes the response)."""
        return b"".join(self._iterate())

    def _iterate(self) -> Iterator[bytes]:
        producer = self._take()
        if self._threads:
            items: queue.SimpleQueue[Any] = queue.SimpleQueue()

            def run() -> None:
                try:
                    producer(items.put)
                except BaseException as exc:  # handed to the consumer below
                    items.put(_Raised(exc))
                finally:
                    items.put(_DONE)

            thread = threading.Thread(target=run, name="adf-stream", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # no threads here after all
                pass
            else:
                return self._drain(items)
        return self._buffered(producer)

    def _drain(self, items: queue.SimpleQueue[Any]) -> Iterator[bytes]:
        self.live = True
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item

    def _buffered(self, producer: Producer) -> Iterator[bytes]:
        self.live = False
        collected: list[bytes] = []
        error: BaseException | None = None
        try:
            producer(collected.append)
        except BaseException as exc:  # delivered after what was emitted before it
            error = exc
        yield from collected
        if error is not None:
            raise error


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
