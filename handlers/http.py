"""Transport-neutral HTTP handling of the heartbeat.

An adapter (the ASGI web app, the Lambda handler, the Spin component) turns its event into
a :class:`Request`, calls :func:`handle_heartbeat`, and turns the :class:`Response` back into
its own reply. Everything a heartbeat decides — method, authorisation, mode, logging, error
shape — is decided here, once.

Standard library only at module level (this runs inside a Spin component).

Every request, allowed or not, leaves two traces: a row in the store's heartbeat log
(``outcome`` is ``ok``, ``forbidden`` 403, ``unauthorized`` 401, ``refused`` 503,
``method_not_allowed`` 405, ``bad_request`` 400 or ``error`` 500) and a JSON log line on the
``adf.heartbeat`` logger carrying the same request id as the ``X-Request-Id`` response header.
The log is kept to ``ADF_HEARTBEAT_LOG_KEEP`` rows and ``ADF_HEARTBEAT_LOG_DAYS`` days
(:class:`~active_data_flow.handlers.schedule.store.HeartbeatRetention`), so a flood of refused requests cannot
grow it without bound.

Example::

    request = Request("POST", "/heartbeat", {"x-heartbeat-token": token}, {}, b"", "10.0.0.7")
    response = handle_heartbeat(request, settings, store)
    response.status, response.body   # 200, {"flows_due": 2, "flows_triggered": 2, ...}
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from active_data_flow import telemetry
from active_data_flow.ids import new_id
from active_data_flow.logs import get_logger

if TYPE_CHECKING:  # the scheduler is loaded by the heartbeat's first request, not by every importer
    from active_data_flow.handlers.schedule.store import ScheduleStore
    from active_data_flow.handlers.settings import Settings

__all__ = ["JSON_HEADERS", "Request", "Response", "error_response", "handle_heartbeat"]

JSON_HEADERS = {"content-type": "application/json"}

_log = get_logger("heartbeat")


@dataclass
class Request:
    """An HTTP request as every transport can describe it. Header names are lower-cased on
    construction; repeated headers should be joined with ``", "`` by the adapter."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    peer: str | None = None

    def __post_init__(self) -> None:
        self.method = self.method.upper()
        self.headers = {k.lower(): v for k, v in self.headers.items()}


@dataclass
class Response:
    """A JSON response: ``body`` is serialised by :meth:`encoded`."""

    status: int
    body: dict[str, Any] | list[Any]
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON_HEADERS))

    def encoded(self) -> bytes:
        return json.dumps(self.body, default=str).encode("utf-8")


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None, **extra: Any) -> Response:
    """The one error shape: ``{"error": message, **extra}``."""
    return Response(status, {"error": message, **extra}, {**JSON_HEADERS, **(headers or {})})


def _record(
    store: ScheduleStore,
    settings: Settings,
    *,
    request_id: str,
    request: Request,
    client: str | None,
    outcome: str,
    response: Response,
    detail: str,
    started: float,
    counts: Mapping[str, Any] | None = None,
    exc_info: bool = False,
) -> None:
    counts = counts or {}
    flows_due = int(counts.get("flows_due", 0) or 0)
    flows_triggered = int(counts.get("flows_triggered", 0) or 0)
    level = logging.INFO if response.status < 400 else logging.ERROR if response.status >= 500 else logging.WARNING
    fields: dict[str, Any] = {
        "request_id": request_id,
        "method": request.method,
        "path": request.path,
        "client": client,
        "peer": request.peer,
        "outcome": outcome,
        "status": response.status,
        "flows_due": flows_due,
        "flows_triggered": flows_triggered,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    if "run_ids" in counts:
        fields["run_ids"] = counts["run_ids"]
    if response.status >= 400:
        fields["detail"] = detail
    _log.log(level, f"heartbeat {outcome} {response.status}", exc_info=exc_info, extra={"fields": fields})
    from active_data_flow.handlers.schedule.store import HeartbeatRetention

    try:
        store.log_heartbeat(
            client=client,
            outcome=outcome,
            status_code=response.status,
            flows_due=flows_due,
            flows_triggered=flows_triggered,
            detail=f"request {request_id}: {detail}",
            retention=HeartbeatRetention(settings.heartbeat_log_keep, settings.heartbeat_log_days),
        )
    except Exception:
        # The response already says what happened; a heartbeat log that cannot be written
        # (database gone) is reported in the process log instead of turning it into a 500.
        _log.exception("heartbeat log not written", extra={"fields": {"request_id": request_id, "outcome": outcome}})


def handle_heartbeat(request: Request, settings: Settings, store: ScheduleStore) -> Response:
    """Answer one heartbeat request: POST only (405 with ``Allow``), authorise (see
    :func:`active_data_flow.handlers.security.authorize_heartbeat`), run one scheduler tick in the configured
    mode (``?mode=sync|async`` overrides it for an authorised caller) and answer
    ``{flows_due, flows_triggered, run_ids, timestamp}``. Errors answer 500
    ``{error, error_id}``; the traceback goes only to the log."""
    from active_data_flow.handlers import scheduler
    from active_data_flow.handlers.security import authorize_heartbeat

    started = time.perf_counter()
    request_id = new_id()
    rid = {"x-request-id": request_id}

    def finish(
        response: Response, outcome: str, detail: str, client: str | None, counts: Mapping[str, Any] | None = None
    ) -> Response:
        response.headers.update(rid)
        telemetry.record_heartbeat(outcome)
        _record(
            store,
            settings,
            request_id=request_id,
            request=request,
            client=client,
            outcome=outcome,
            response=response,
            detail=detail,
            started=started,
            counts=counts,
            exc_info=outcome == "error",
        )
        return response

    client: str | None = request.peer
    try:
        decision = authorize_heartbeat(settings, request.peer, request.headers)
        client = decision.client
        if request.method != "POST":
            message = f"method {request.method} not allowed on the heartbeat; use POST"
            return finish(error_response(405, message, {"allow": "POST"}), "method_not_allowed", message, client)
        if not decision.allowed:
            headers = {"www-authenticate": "X-Heartbeat-Token"} if decision.status == 401 else None
            return finish(error_response(decision.status, decision.message, headers), decision.outcome, decision.message, client)
        mode = request.query.get("mode") or settings.heartbeat_mode
        if mode not in scheduler.MODES:
            message = f"mode must be 'sync' or 'async', got {mode!r}"
            return finish(error_response(400, message), "bad_request", message, client)
        result = scheduler.tick(store, settings, trigger="heartbeat", mode=mode).to_dict()
        detail = f"mode={mode} flows_due={result.get('flows_due')} run_ids={result.get('run_ids')}"
        return finish(Response(200, result), "ok", detail, client, result)
    except Exception as exc:
        error_id = new_id(12)
        message = f"internal error while handling the heartbeat (error_id {error_id}; details in the server log)"
        return finish(
            error_response(500, message, error_id=error_id), "error", f"error_id {error_id}: {type(exc).__name__}", client
        )
