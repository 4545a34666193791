"""The HTTP component (world ``spin-http``): a request → :func:`active_data_flow.handlers.invoke.handle_http`.

The body is read only up to the limit (:func:`active_data_flow.spin_app.runtime.max_body_bytes`, 6 MiB unless
``adf_max_body_bytes`` / ``ADF_MAX_BODY_BYTES`` says otherwise): a ``Content-Length`` past it
is answered 413 without reading the body, and a body without one is read no further than one
byte past the limit (413 too). Nothing of a refused body is parsed.

Streaming answers (NDJSON progress events) are written to the wasi-http body while the flow
runs, chunk by chunk; a trap (memory exhausted...) never leaves the client without an answer
from the host.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from spin_sdk.wit import exports
from spin_sdk.wit.imports.types import (
    Fields,
    IncomingBody,
    IncomingRequest,
    Method_Connect,
    Method_Delete,
    Method_Get,
    Method_Head,
    Method_Options,
    Method_Other,
    Method_Patch,
    Method_Post,
    Method_Put,
    Method_Trace,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)
from spin_sdk.wit.types import Ok

import active_data_flow.handlers.settings  # noqa: F401 - imported at build time: the body limit is read with it
from active_data_flow.handlers.http import Request
from active_data_flow.handlers.invoke import PayloadTooLarge, handle_http, refuse_http
from active_data_flow.handlers.streaming import StreamingResponse
from active_data_flow.spin_app import runtime
from active_data_flow.spin_app.platform import BodyTooLarge, read_to_end

_METHODS = {
    Method_Get: "GET", Method_Head: "HEAD", Method_Post: "POST", Method_Put: "PUT", Method_Delete: "DELETE",
    Method_Connect: "CONNECT", Method_Options: "OPTIONS", Method_Trace: "TRACE", Method_Patch: "PATCH",
}
_CHUNK = 4096  # the most one blocking-write-and-flush takes


def _read_body(request: IncomingRequest, content_length: str | None, limit: int) -> bytes:
    body = request.consume()
    try:
        data = read_to_end(body.stream(), content_length, limit)
    finally:
        IncomingBody.finish(body)
    return data


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        method_obj = request.method()
        method = method_obj.value if isinstance(method_obj, Method_Other) else _METHODS.get(type(method_obj), "GET")
        headers: dict[str, str] = {}
        for name, value in request.headers().entries():
            key = name.lower()
            text = bytes(value).decode("utf-8", "replace")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        target = urlsplit(request.path_with_query() or "/")
        req = Request(method, target.path or "/", headers, dict(parse_qsl(target.query, keep_blank_values=True)), b"",
                      headers.get("x-forwarded-for") or None)
        host = runtime.host("http")
        base_path = runtime.bundle_base_path()
        length = headers.get("content-length", "").strip()
        try:
            limit = runtime.max_body_bytes()
            if length.isdigit() and int(length) > limit:
                raise PayloadTooLarge(limit, int(length))  # not a byte of it is read
            try:
                req.body = _read_body(request, length or None, limit)
            except BodyTooLarge:
                raise PayloadTooLarge(limit) from None
        except Exception as exc:  # too large, or an unusable limit setting: answered as handle_http answers errors
            answer = refuse_http(req, host, exc, base_path=base_path)
        else:
            answer = handle_http(req, host, base_path=base_path)
        out_headers = dict(answer.headers)
        streaming = isinstance(answer, StreamingResponse)
        payload = b"" if isinstance(answer, StreamingResponse) else answer.encoded()
        if not streaming:
            out_headers["content-length"] = str(len(payload))
        response = OutgoingResponse(Fields.from_list([(k, v.encode("utf-8")) for k, v in out_headers.items()]))
        response.set_status_code(answer.status)
        response_body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        stream = response_body.write()

        def write(chunk: bytes) -> None:
            for i in range(0, len(chunk), _CHUNK):
                stream.blocking_write_and_flush(chunk[i : i + _CHUNK])

        if isinstance(answer, StreamingResponse):
            answer.write_to(write, max_chunk=_CHUNK)
        else:
            write(payload)
        stream.__exit__(None, None, None)
        OutgoingBody.finish(response_body, None)
