"""The objects behind ``wasi:http/types``: header fields, requests, responses, bodies.

An :class:`IncomingRequest` is what the host hands to a component's
``wasi:http/incoming-handler#handle``; an :class:`OutgoingResponse` is what the component
answers with, its body streamed to the client once the host attaches to it. Outgoing
requests are sent from the host with :func:`send_with_urllib` unless a
:class:`~active_data_flow.spin_app.local_host.wasi.state.WasiState` is given another sender.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from active_data_flow.spin_app.local_host.wasi.streams import InputStream, OutputStream
from active_data_flow.spin_app.local_host.wasi.values import Err, Ok, Some, V

__all__ = [
    "HTTP_METHODS", "Fields", "FutureResponse", "IncomingBody", "IncomingRequest", "IncomingResponse",
    "OutgoingBody", "OutgoingRequest", "OutgoingResponse", "ResponseBodyStream", "ResponseOutparam",
    "header_problem", "send_with_urllib",
]

#: the methods ``wasi:http/types`` names (any other is ``other(name)``)
HTTP_METHODS = ("get", "head", "post", "put", "delete", "connect", "options", "trace", "patch")


class Fields:
    def __init__(self, entries: Iterable[tuple[str, bytes]] = (), immutable: bool = False) -> None:
        self.entries: list[tuple[str, bytes]] = [(k.lower(), bytes(v)) for k, v in entries]
        self.immutable = immutable

    def get(self, name: str) -> list[bytes]:
        key = name.lower()
        return [v for k, v in self.entries if k == key]


_FORBIDDEN_HEADER = ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host")


def header_problem(name: str, immutable: bool) -> V | None:
    if immutable:
        return V("immutable")
    if not name or any(c in name for c in " \t\r\n:") or not name.isascii():
        return V("invalid-syntax")
    if name.lower() in _FORBIDDEN_HEADER:
        return V("forbidden")
    return None


@dataclass
class IncomingRequest:
    method: str
    path_with_query: str
    headers: list[tuple[str, bytes]]
    body: bytes | Callable[[int], bytes] = b""
    scheme: str = "http"
    authority: str | None = None
    consumed: bool = False


class ResponseBodyStream(OutputStream):
    """The body of the response a component answers with: what it writes goes to the client
    once the host has sent the status and headers (:meth:`attach`); before that it waits."""

    def __init__(self) -> None:
        super().__init__(lambda data: None)
        self.pending = bytearray()
        self.target: Callable[[bytes], None] | None = None
        self.on_finish: Callable[[], None] | None = None
        self.finished = False

    def write(self, data: bytes) -> None:
        if self.target is not None:
            if data:
                self.target(data)
        else:
            self.pending += data

    def attach(self, write: Callable[[bytes], None], finish: Callable[[], None]) -> None:
        self.target, self.on_finish = write, finish
        if self.pending:
            write(bytes(self.pending))
            self.pending.clear()
        if self.finished:
            finish()


@dataclass
class OutgoingResponse:
    headers: Fields
    status: int = 200
    body: OutgoingBody | None = None
    sink: tuple[Callable[[bytes], None], Callable[[], None]] | None = None

    def attach(self, write: Callable[[bytes], None], finish: Callable[[], None]) -> None:
        """Send the body (written so far and from now on) with ``write``; ``finish`` at its end."""
        self.sink = (write, finish)
        if self.body is not None and isinstance(self.body.stream, ResponseBodyStream):
            self.body.stream.attach(write, finish)


@dataclass
class OutgoingBody:
    stream: OutputStream
    written: bool = False
    finished: bool = False


@dataclass
class IncomingBody:
    stream: InputStream
    taken: bool = False


@dataclass
class OutgoingRequest:
    headers: Fields
    method: V = field(default_factory=lambda: V("get"))
    path_with_query: str | None = None
    scheme: V | None = None
    authority: str | None = None
    body: OutgoingBody | None = None
    buffer: bytearray = field(default_factory=bytearray)


@dataclass
class IncomingResponse:
    status: int
    headers: Fields
    body: bytes
    consumed: bool = False


class FutureResponse:
    def __init__(self, request: OutgoingRequest, send: Callable[[OutgoingRequest], Any]) -> None:
        self.request = request
        self._send = send
        self.result: Any = None
        self.taken = False

    def ready(self) -> bool:
        body = self.request.body
        return body is None or body.finished

    def get(self) -> Any:
        if self.result is None and self.ready():
            self.result = self._send(self.request)
        return self.result


class ResponseOutparam:
    def __init__(self, on_set: Callable[[Any], None]) -> None:
        self.on_set = on_set
        self.set = False


def _method_name(method: V) -> str:
    return str(method.payload) if method.tag == "other" else method.tag.upper()


def send_with_urllib(request: OutgoingRequest) -> Any:
    """``wasi:http/outgoing-handler``: the request, sent from the host with urllib."""
    import urllib.error
    import urllib.request

    scheme = "https" if request.scheme is not None and request.scheme.tag == "HTTPS" else (
        str(request.scheme.payload) if request.scheme is not None and request.scheme.tag == "other" else "http")
    if not request.authority:
        return Ok(Err(V("HTTP-request-URI-invalid")))
    url = f"{scheme}://{request.authority}{request.path_with_query or '/'}"
    headers = {k: v.decode("latin-1") for k, v in request.headers.entries if k != "content-length"}
    data = bytes(request.buffer) if request.body is not None else None
    req = urllib.request.Request(url, data=data, method=_method_name(request.method), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, got, body = resp.status, resp.headers.items(), resp.read()
    except urllib.error.HTTPError as err:
        status, got, body = err.code, err.headers.items(), err.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ConnectionRefusedError):
            return Ok(Err(V("connection-refused")))
        if isinstance(reason, TimeoutError):
            return Ok(Err(V("connection-timeout")))
        return Ok(Err(V("internal-error", Some(f"{type(reason).__name__}: {reason}"))))
    return Ok(Ok(IncomingResponse(status, Fields((k, v.encode("latin-1")) for k, v in got), body)))
