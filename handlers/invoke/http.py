"""HTTP handling of flow runs: :func:`handle_http`.

Routes: ``GET /flows`` (``{"flows": [{name, description, source, sink}]}``),
``GET /flows/{name}`` (the resolved configuration, secrets redacted, with ``explain`` —
where each value comes from — ``declared_params``, ``params`` — their values for this
request — and ``ignored_variables``), ``GET|POST /flows/{name}/run``.

A request sets only what :mod:`active_data_flow.handlers.invoke.params` allows: the flow's declared
parameters — ``X-ADF-Params`` / ``X-ADF-Param-<name>`` headers < the query string
(``?vat=0.19``; ``stream`` and ``progress_interval`` are not parameters) < the POST body's
``params`` — and, for a POST, its records: the JSON body ``{"records": [...], "params": {...}}``
or a bare array of records. The flow's configuration is its operators' (spec, variables,
key-value store, environment); any other body key, query parameter or ``X-ADF-*`` header is
refused (400) before anything runs.

HTTP status codes (every error body is ``{"error": message, "error_id": id, ...}``; the
``X-Request-Id`` header is on every response):

=====  =====================================================================================
200    the run succeeded: the run summary, ``request_id``, ``records`` (from a ``response``
       sink) and ``dead_letter_sample`` (the dead letters themselves when the host does not
       persist); ``dead_letters`` is their count. Also ``GET /flows`` and ``GET /flows/{name}``.
400    malformed JSON body, a body that is not ``{records, params}`` or an array; a
       request that tries to set anything but records and declared parameters (``config``,
       ``spec``, ``?sink.path=…``, ``X-ADF-Sink-Path``…): ``refused`` names each key,
       ``declared_params`` lists what the flow accepts
404    unknown flow (``flows`` lists the known ones) or unknown route
405    method not allowed on the route (``Allow`` header)
413    the body is over ``ADF_MAX_BODY_BYTES`` (checked by the adapter before reading or
       parsing it: :func:`refuse_http`)
422    a declared parameter's value is invalid (``problems``, ``declared_params``), or the
       configuration is invalid after all layers: ``problems`` lists every problem
500    the run failed: the same body as 200 with ``status: "failed"``, ``error`` and
       ``error_id`` (the backtrace is only in the log); or an unexpected error in the handler
       (``{"error", "error_id"}`` only)
507    out of memory (a ``MemoryError`` in the run or the handler): ``error`` says so; the
       component survives and answers
=====  =====================================================================================

``host.error_handlers`` (exception type → ``handler(exc, ErrorContext) -> Response | None``)
are consulted first for every error of :func:`handle_http`, along the exception's MRO; a
handler returning ``None`` passes to the handler of a base class, then to the defaults above
(a handler that raises is logged and the default answer is used). A failed run is raised internally as :class:`FlowFailed`
(``exc.invocation`` has the summary), so a handler for it can reshape failures too.

Streaming (``?stream=true``, or ``Accept: application/x-ndjson`` unless ``stream=false``):
errors found before the run starts are normal JSON responses with the codes above; then the
status is 200 and the body is NDJSON — ``{"event": "start", flow, run_id, request_id}``,
``{"event": "progress", records_in, records_out, dead_letters, bytes_done, bytes_total,
splits_done, elapsed_s}`` after every batch (at most one per ``?progress_interval=SECONDS``),
and last either ``{"event": "summary", ...the 200/500 body...}`` (``status`` says whether
the run failed; a failed run has ``error_id``) or ``{"event": "error", error, error_id}``.
See :mod:`active_data_flow.handlers.streaming` for consuming it with and without threads.

Standard library only at module level (this runs inside a Spin component).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

from active_data_flow.handlers.http import JSON_HEADERS, Request, Response
from active_data_flow.handlers.invoke.envelope import Envelope, level_for, log_line, summary_fields
from active_data_flow.handlers.invoke.errors import (
    BadRequest,
    FlowFailed,
    MethodNotAllowed,
    NotFound,
    new_error_id,
    status_for,
)
from active_data_flow.handlers.invoke.host import ErrorContext, FlowHost
from active_data_flow.handlers.invoke.params import RequestParams
from active_data_flow.handlers.invoke.payload import TriggerPayload, parse_trigger_payload
from active_data_flow.handlers.invoke.run import (
    PreparedRun,
    describe_flow,
    execute_flow,
    list_flows,
    prepare_flow,
)
from active_data_flow.handlers.streaming import StreamingResponse, ndjson_line
from active_data_flow.ids import new_id

if TYPE_CHECKING:
    from active_data_flow.engine import Progress

__all__ = ["NDJSON", "RESERVED_QUERY", "handle_http", "refuse_http"]

NDJSON = "application/x-ndjson"
#: query parameters of ``/flows/{name}/run`` that are not flow parameters
RESERVED_QUERY = frozenset({"stream", "progress_interval"})
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TRUE = {"1", "true", "yes", "on", ""}
_FALSE = {"0", "false", "no", "off"}


def _request_id(headers: Mapping[str, str]) -> str:
    given = headers.get("x-request-id", "").strip()
    return given if _REQUEST_ID_RE.match(given) else new_id()


def _truthy(value: str, name: str) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadRequest(f"query parameter {name!r} must be true or false, got {value!r}")


class _HttpCall:
    """One HTTP request: routing, answering, logging."""

    def __init__(self, request: Request, host: FlowHost, base_path: str) -> None:
        self.envelope = Envelope("http", host, _request_id(request.headers))
        self.request = request
        self.host = host
        self.base_path = base_path.rstrip("/")
        self.request_id = self.envelope.request_id
        self.flow: str | None = None
        self.fields: dict[str, Any] = {}

    # -- answers -------------------------------------------------------------------

    def log(self, status: int, exc: BaseException | None = None, *, level: int | None = None, **more: Any) -> None:
        fields: dict[str, Any] = {
            "method": self.request.method,
            "path": self.request.path,
            "status": status,
            "flow": self.flow,
            **self.fields,
            **more,
        }
        self.envelope.log(level or level_for(status), f"http {self.request.method} {status}", fields, exc)

    def answer(self, response: Response) -> Response:
        response.headers["x-request-id"] = self.request_id
        self.log(response.status)
        return response

    def fail(self, exc: BaseException) -> Response | StreamingResponse:
        error_id = new_error_id()
        status = status_for(exc)
        context = ErrorContext(self.request_id, error_id, "http", status, self.flow, self.request)
        custom = self._custom(exc, context)
        # Tracebacks for what the handler did not expect; a failed run logs its own backtrace.
        unexpected = status >= 500 and not isinstance(exc, FlowFailed)
        if isinstance(exc, FlowFailed):
            self.fields.update(summary_fields(exc.invocation))
        if custom is not None:
            custom.headers["x-request-id"] = self.request_id
            self.log(custom.status, exc if unexpected else None, error_id=error_id, custom_handler=True)
            return custom
        try:
            body = self.envelope.error(exc, error_id=error_id)
        except MemoryError:
            body = {"error": "out of memory while answering", "error_id": error_id}
        headers = dict(JSON_HEADERS)
        headers["x-request-id"] = self.request_id
        if isinstance(exc, MethodNotAllowed):
            headers["allow"] = ", ".join(exc.allow)
        self.log(status, exc if unexpected else None, error_id=error_id, error=body["error"])
        return Response(status, body, headers)

    def _custom(self, exc: BaseException, context: ErrorContext) -> Response | StreamingResponse | None:
        handlers = getattr(self.host, "error_handlers", None) or {}
        for cls in type(exc).__mro__:
            handler = handlers.get(cls)
            if handler is None:
                continue
            try:
                answer: Response | StreamingResponse | None = handler(exc, context)
            except Exception as again:
                log_line(logging.ERROR, "custom error handler raised; using the default answer",
                          {"request_id": self.request_id, "handler": getattr(handler, "__name__", repr(handler))}, again)
                return None
            if answer is not None:
                return answer
        return None

    # -- routing -------------------------------------------------------------------

    def dispatch(self) -> Response | StreamingResponse:
        path, _, raw_query = self.request.path.partition("?")
        query = dict(parse_qsl(raw_query, keep_blank_values=True))
        query.update(self.request.query)
        if self.base_path and (path == self.base_path or path.startswith(self.base_path + "/")):
            path = path[len(self.base_path) :]
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        method = self.request.method
        if parts == ["flows"]:
            self._allow(method, ("GET",))
            return self.answer(Response(200, {"flows": list_flows(self.host)}))
        if len(parts) == 2 and parts[0] == "flows":
            self.flow = parts[1]
            self._allow(method, ("GET",))
            params = RequestParams.from_http(self.request.headers, query, reserved=RESERVED_QUERY)
            body = describe_flow(self.host, parts[1], params=params)
            return self.answer(Response(200, body))
        if len(parts) == 3 and parts[0] == "flows" and parts[2] == "run":
            self.flow = parts[1]
            self._allow(method, ("GET", "POST"))
            return self.run(parts[1], query)
        raise NotFound(
            f"no route {method} {self.request.path}; routes: GET /flows, GET /flows/{{name}}, GET|POST /flows/{{name}}/run"
        )

    def _allow(self, method: str, allowed: tuple[str, ...]) -> None:
        if method not in allowed:
            raise MethodNotAllowed(f"method {method} not allowed here; use {' or '.join(allowed)}", allowed)

    def run(self, name: str, query: Mapping[str, str]) -> Response | StreamingResponse:
        accept = self.request.headers.get("accept", "")
        stream = _truthy(query["stream"], "stream") if "stream" in query else NDJSON in accept
        try:
            interval = float(query.get("progress_interval") or 0)
        except ValueError:
            raise BadRequest(f"query parameter 'progress_interval' must be a number of seconds, got {query['progress_interval']!r}") from None
        payload = parse_trigger_payload(self.request.body) if self.request.method == "POST" else TriggerPayload()
        params = RequestParams.from_http(self.request.headers, query, payload.params, payload.refused,
                                         reserved=RESERVED_QUERY)
        prepared = prepare_flow(
            self.host, name, params=params, records=payload.records, request_id=self.request_id,
        )
        self.flow = prepared.flow
        self.fields["run_id"] = prepared.run_id
        if stream:
            return self.stream(prepared, interval)
        invocation = execute_flow(self.host, prepared)
        if not invocation.ok:
            raise FlowFailed(invocation)
        self.fields.update(summary_fields(invocation))
        return self.answer(Response(200, invocation.body()))

    def stream(self, prepared: PreparedRun, interval: float) -> StreamingResponse:
        headers = {"content-type": NDJSON, "cache-control": "no-cache", "x-request-id": self.request_id}

        def produce(emit: Callable[[bytes], None]) -> None:
            broken: list[BaseException] = []
            t0 = time.monotonic()
            last = [float("-inf")]

            def send(event: Mapping[str, Any]) -> None:
                if broken:
                    return
                try:
                    emit(ndjson_line(event))
                except Exception as exc:  # the client went away: finish the run, stop writing
                    broken.append(exc)
                    log_line(logging.WARNING, "stream closed by the client; the run goes on",
                              {"request_id": self.request_id, "error": f"{type(exc).__name__}: {exc}"})

            def on_progress(progress: Progress) -> None:
                now = time.monotonic()
                if interval > 0 and now - last[0] < interval:
                    return
                last[0] = now
                send({"event": "progress", "flow": prepared.flow, **dataclasses.asdict(progress),
                      "elapsed_s": round(now - t0, 3)})

            send({"event": "start", "flow": prepared.flow, "run_id": prepared.run_id, "request_id": self.request_id})
            try:
                invocation = execute_flow(self.host, prepared, on_progress=on_progress)
                body = invocation.body()
                self.fields.update(summary_fields(invocation))
                if not invocation.ok:
                    error_id = new_error_id()
                    body["error_id"] = error_id
                    body["code"] = FlowFailed(invocation).status
                    self.fields["error_id"] = error_id
                send({"event": "summary", **body})
                self.log(200, streamed=True, level=None if invocation.ok else logging.ERROR)
            except Exception as exc:
                error = self.envelope.error(exc, keys=())
                send({"event": "error", **error, "code": status_for(exc)})
                self.log(200, exc, streamed=True, error_id=error["error_id"])

        return StreamingResponse(200, headers, produce)


def handle_http(request: Request, host: FlowHost, *, base_path: str = "") -> Response | StreamingResponse:
    """Answer one HTTP request (routes, bodies and status codes: see the module doc).

    ``base_path``: the prefix the component is mounted at (``/adf`` when spin.toml routes
    ``/adf/...`` to it), stripped before routing. Never raises (``KeyboardInterrupt`` and
    ``SystemExit`` aside): every error is an answer.
    """
    call = _HttpCall(request, host, base_path)
    try:
        return call.dispatch()
    except Exception as exc:
        return call.fail(exc)


def refuse_http(request: Request, host: FlowHost, error: BaseException, *, base_path: str = "") -> Response | StreamingResponse:
    """Answer ``request`` with ``error`` as :func:`handle_http` answers its errors (status,
    ``{"error", "error_id", ...}``, ``X-Request-Id``, the host's error handlers, one log line),
    without routing it or looking at its body: for an adapter that refuses a request before
    reading it, e.g. :class:`~active_data_flow.handlers.invoke.PayloadTooLarge` (413)."""
    call = _HttpCall(request, host, base_path)
    return call.fail(error)
