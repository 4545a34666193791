"""The ``wasi:http`` host functions: header fields, the incoming request a component handles
and the response it answers with, and its outgoing requests (``wasi:http/outgoing-handler``,
sent by the instance's :attr:`~active_data_flow.spin_app.local_host.wasi.state.WasiState.http_send`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from active_data_flow.spin_app.local_host.wasi.http_types import (
    HTTP_METHODS,
    Fields,
    FutureResponse,
    IncomingBody,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    ResponseBodyStream,
    header_problem,
)
from active_data_flow.spin_app.local_host.wasi.state import Handles, HostFunctions
from active_data_flow.spin_app.local_host.wasi.streams import InputStream, OutputStream, Pollable
from active_data_flow.spin_app.local_host.wasi.values import Err, Ok, Some, V, WasiTrap

__all__ = ["http_functions"]

_TYPES = "wasi:http/types"
_METHOD = f"{_TYPES}#[method]"


def http_functions(f: HostFunctions, handles: Handles) -> None:
    """Add ``wasi:http/types`` and ``wasi:http/outgoing-handler`` to ``f``."""
    _fields(f, handles)
    _incoming_request(f, handles)
    _outgoing_response(f, handles)
    _outgoing_body(f, handles)
    _outgoing_request(f, handles)
    _outgoing_handler(f, handles)


def _fields(f: HostFunctions, handles: Handles) -> None:
    """``fields``: headers and trailers."""
    o, own = handles.obj, handles.own
    t, m = _TYPES, _METHOD

    def fields_from_list(s: Any, entries: list[tuple[str, bytes]]) -> Any:
        for name, _ in entries:
            problem = header_problem(name, False)
            if problem is not None:
                return Err(problem)
        return Ok(own(t, "fields", Fields((n, bytes(v)) for n, v in entries)))

    def fields_set(s: Any, r: Any, name: str, values: list[bytes]) -> Any:
        fl = o(s, r)
        problem = header_problem(name, fl.immutable)
        if problem is not None:
            return Err(problem)
        key = name.lower()
        fl.entries = [(k, v) for k, v in fl.entries if k != key] + [(key, bytes(v)) for v in values]
        return Ok(None)

    def fields_delete(s: Any, r: Any, name: str) -> Any:
        fl = o(s, r)
        if fl.immutable:
            return Err(V("immutable"))
        fl.entries = [(k, v) for k, v in fl.entries if k != name.lower()]
        return Ok(None)

    def fields_append(s: Any, r: Any, name: str, value: bytes) -> Any:
        fl = o(s, r)
        problem = header_problem(name, fl.immutable)
        if problem is not None:
            return Err(problem)
        fl.entries.append((name.lower(), bytes(value)))
        return Ok(None)

    f[f"{t}#[constructor]fields"] = lambda s: own(t, "fields", Fields())
    f[f"{t}#[static]fields.from-list"] = fields_from_list
    f[m + "fields.get"] = lambda s, r, name: o(s, r).get(name)
    f[m + "fields.has"] = lambda s, r, name: bool(o(s, r).get(name))
    f[m + "fields.set"] = fields_set
    f[m + "fields.delete"] = fields_delete
    f[m + "fields.append"] = fields_append
    f[m + "fields.entries"] = lambda s, r: list(o(s, r).entries)
    f[m + "fields.clone"] = lambda s, r: own(t, "fields", Fields(o(s, r).entries))


def _incoming_request(f: HostFunctions, handles: Handles) -> None:
    """The incoming request (what the host hands to ``incoming-handler#handle``) and its body."""
    o, own, take = handles.obj, handles.own, handles.take
    t, m = _TYPES, _METHOD

    def req_method(s: Any, r: Any) -> V:
        name = o(s, r).method
        return V(name.lower()) if name.lower() in HTTP_METHODS else V("other", name)

    def req_scheme(s: Any, r: Any) -> Any:
        scheme = o(s, r).scheme
        return Some(V("HTTP") if scheme == "http" else V("HTTPS") if scheme == "https" else V("other", scheme))

    def req_consume(s: Any, r: Any) -> Any:
        req = o(s, r)
        if req.consumed:
            return Err(None)
        req.consumed = True
        body = req.body
        stream = InputStream(reader=body) if callable(body) else InputStream(bytes(body))
        return Ok(own(t, "incoming-body", IncomingBody(stream)))

    f[m + "incoming-request.method"] = req_method
    f[m + "incoming-request.path-with-query"] = lambda s, r: Some(o(s, r).path_with_query)
    f[m + "incoming-request.scheme"] = req_scheme
    f[m + "incoming-request.authority"] = lambda s, r: Some(o(s, r).authority) if o(s, r).authority else None
    f[m + "incoming-request.headers"] = lambda s, r: own(t, "fields", Fields(o(s, r).headers, immutable=True))
    f[m + "incoming-request.consume"] = req_consume

    def body_stream(s: Any, r: Any) -> Any:
        body = o(s, r)
        if body.taken:
            return Err(None)
        body.taken = True
        return Ok(own(t, "input-stream", body.stream))

    f[m + "incoming-body.stream"] = body_stream
    f[f"{t}#[static]incoming-body.finish"] = lambda s, r: (take(s, r), own(t, "future-trailers", Pollable()))[1]
    f[m + "future-trailers.subscribe"] = lambda s, r: own(t, "pollable", Pollable())
    f[m + "future-trailers.get"] = lambda s, r: Some(Ok(Ok(None)))


def _outgoing_response(f: HostFunctions, handles: Handles) -> None:
    """The outgoing response (what the component answers with) and ``response-outparam``."""
    o, own, take = handles.obj, handles.own, handles.take
    t, m = _TYPES, _METHOD

    def resp_new(s: Any, headers: Any) -> Any:
        fl = take(s, headers)
        fl.immutable = True
        return own(t, "outgoing-response", OutgoingResponse(fl))

    def resp_set_status(s: Any, r: Any, status: int) -> Any:
        if not 100 <= int(status) <= 599:
            return Err(None)
        o(s, r).status = int(status)
        return Ok(None)

    def resp_body(s: Any, r: Any) -> Any:
        resp = o(s, r)
        if resp.body is not None:
            return Err(None)
        stream = ResponseBodyStream()
        if resp.sink is not None:
            stream.attach(*resp.sink)
        resp.body = OutgoingBody(stream)
        return Ok(own(t, "outgoing-body", resp.body))

    def outparam_set(s: Any, param: Any, response: Any) -> None:
        out = take(s, param)
        if out.set:
            raise WasiTrap("response-outparam.set called twice")
        out.set = True
        if isinstance(response, Err) or not hasattr(response, "rep"):
            out.on_set(Err(response.value if isinstance(response, Err) else response))
            return
        out.on_set(Ok(take(s, response)))

    f[f"{t}#[constructor]outgoing-response"] = resp_new
    f[m + "outgoing-response.status-code"] = lambda s, r: o(s, r).status
    f[m + "outgoing-response.set-status-code"] = resp_set_status
    f[m + "outgoing-response.headers"] = lambda s, r: own(t, "fields", o(s, r).headers)
    f[m + "outgoing-response.body"] = resp_body
    f[f"{t}#[static]response-outparam.set"] = outparam_set


def _outgoing_body(f: HostFunctions, handles: Handles) -> None:
    """The body of an outgoing response or request: its stream, and its end."""
    o, own, take = handles.obj, handles.own, handles.take
    t, m = _TYPES, _METHOD

    def body_write(s: Any, r: Any) -> Any:
        body = o(s, r)
        if body.written:
            return Err(None)
        body.written = True
        return Ok(own(t, "output-stream", body.stream))

    def body_finish(s: Any, r: Any, trailers: Any) -> Any:
        body = take(s, r)
        body.finished = True
        if trailers is not None:
            take(s, trailers)
        stream = body.stream
        stream.flush()
        if isinstance(stream, ResponseBodyStream):
            stream.finished = True
            if stream.on_finish is not None:
                stream.on_finish()
        return Ok(None)

    f[m + "outgoing-body.write"] = body_write
    f[f"{t}#[static]outgoing-body.finish"] = body_finish


def _outgoing_request(f: HostFunctions, handles: Handles) -> None:
    """Outgoing requests (the component's outbound HTTP) and their options."""
    o, own, take = handles.obj, handles.own, handles.take
    t, m = _TYPES, _METHOD

    def oreq_new(s: Any, headers: Any) -> Any:
        fl = take(s, headers)
        fl.immutable = True
        return own(t, "outgoing-request", OutgoingRequest(fl))

    def oreq_body(s: Any, r: Any) -> Any:
        req = o(s, r)
        if req.body is not None:
            return Err(None)
        req.body = OutgoingBody(OutputStream(req.buffer.extend))
        return Ok(own(t, "outgoing-body", req.body))

    def setter(attr: str, check: Callable[[Any], bool] = lambda v: True) -> Callable[..., Any]:
        def call(s: Any, r: Any, value: Any) -> Any:
            if not check(value):
                return Err(None)
            setattr(o(s, r), attr, value)
            return Ok(None)
        return call

    f[f"{t}#[constructor]outgoing-request"] = oreq_new
    f[m + "outgoing-request.body"] = oreq_body
    f[m + "outgoing-request.method"] = lambda s, r: o(s, r).method
    f[m + "outgoing-request.set-method"] = setter("method")
    f[m + "outgoing-request.path-with-query"] = lambda s, r: o(s, r).path_with_query
    f[m + "outgoing-request.set-path-with-query"] = setter("path_with_query")
    f[m + "outgoing-request.scheme"] = lambda s, r: o(s, r).scheme
    f[m + "outgoing-request.set-scheme"] = setter("scheme")
    f[m + "outgoing-request.authority"] = lambda s, r: o(s, r).authority
    f[m + "outgoing-request.set-authority"] = setter("authority")
    f[m + "outgoing-request.headers"] = lambda s, r: own(t, "fields", o(s, r).headers)
    f[f"{t}#[constructor]request-options"] = lambda s: own(t, "request-options", {})
    for name in ("connect-timeout", "first-byte-timeout", "between-bytes-timeout"):
        f[m + f"request-options.{name}"] = lambda s, r, name=name: o(s, r).get(name)
        f[m + f"request-options.set-{name}"] = lambda s, r, v, name=name: Ok(o(s, r).__setitem__(name, v))



def _outgoing_handler(f: HostFunctions, handles: Handles) -> None:
    """``outgoing-handler#handle``, the future response it gives and the response."""
    o, own, take, st = handles.obj, handles.own, handles.take, handles.state
    t, m = _TYPES, _METHOD

    def handle(s: Any, request: Any, options: Any) -> Any:
        req = take(s, request)
        if options is not None:
            take(s, options)
        return Ok(own("wasi:http/outgoing-handler", "future-incoming-response", FutureResponse(req, st().http_send)))

    f["wasi:http/outgoing-handler#handle"] = handle

    def fut_get(s: Any, r: Any) -> Any:
        fut = o(s, r)
        result = fut.get()
        if result is None:
            return None
        if fut.taken:
            return Some(Err(None))
        fut.taken = True
        inner = result.value
        if isinstance(inner, Ok):
            return Some(Ok(Ok(own(t, "incoming-response", inner.value))))
        return Some(Ok(inner))

    f[m + "future-incoming-response.subscribe"] = lambda s, r: own(t, "pollable", Pollable(o(s, r).ready))
    f[m + "future-incoming-response.get"] = fut_get

    def iresp_consume(s: Any, r: Any) -> Any:
        resp = o(s, r)
        if resp.consumed:
            return Err(None)
        resp.consumed = True
        return Ok(own(t, "incoming-body", IncomingBody(InputStream(resp.body))))

    f[m + "incoming-response.status"] = lambda s, r: o(s, r).status
    f[m + "incoming-response.headers"] = lambda s, r: own(t, "fields", Fields(o(s, r).headers.entries, True))
    f[m + "incoming-response.consume"] = iresp_consume
    f[f"{t}#http-error-code"] = lambda s, r: None
