"""The FastAPI application: heartbeat route, management API under ``/api``, ``/healthz``,
and — when a :class:`~active_data_flow.handlers.invoke.FlowHost` is given — the flow-run routes of
:func:`active_data_flow.handlers.invoke.handle_http` under ``/invoke`` (same access rule as ``/api``).

Imported only by :func:`active_data_flow.handlers.web.app.create_app` (FastAPI and pydantic load here and
nowhere else in ``handlers/``). Every route is a thin translation to the schedule store,
the scheduler, :func:`active_data_flow.handlers.http.handle_heartbeat` or a run's dead letters (the functions
the dashboard's run page uses too, in :mod:`active_data_flow.handlers.web.dashboard`); every error body is
``{"error": message, ...}``.

Access and body size are decided by :class:`active_data_flow.handlers.web.guard.RequestGuard` before a route
runs (the routes' own ``api_access`` dependency states the same rule, for the OpenAPI
document and as a second line). A flow's configuration goes out with its secrets masked
(:func:`active_data_flow.redact.mask`) and comes back through :func:`active_data_flow.redact.unmask`: a masked value
sent back unchanged keeps the stored secret. Integers are bounded to what the databases
hold, strings may not carry what they cannot store (:func:`active_data_flow.handlers.security.unstorable`):
odd input gets a 4xx, never a 500.

The routes stay in one module, a little over 600 lines, because they are the API's table of
contents: each is a few lines of translation, and the OpenAPI document is made from them here.
"""

from __future__ import annotations

import contextlib
import logging
import typing
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.responses import Response as HttpResponse
from fastapi.responses import StreamingResponse as HttpStreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from active_data_flow.handlers import scheduler
from active_data_flow.handlers.dead_letters import (
    DeadLetterError,
    describe_replay,
    read_run_dead_letters,
    replay_run_dead_letters,
)
from active_data_flow.handlers.http import Request, handle_heartbeat
from active_data_flow.handlers.invoke import FlowHost, StreamingResponse, handle_http
from active_data_flow.handlers.schedule.store import (
    DuplicateFlowError,
    FlowRecord,
    FlowValidationError,
    HeartbeatRecord,
    NotFoundError,
    RunRecord,
    ScheduleStore,
    flow_problems,
)
from active_data_flow.handlers.security import TOKEN_HEADER, FailureThrottle, authorize_api, unstorable
from active_data_flow.handlers.settings import Settings
from active_data_flow.handlers.web.guard import RequestGuard
from active_data_flow.logs import get_logger
from active_data_flow.redact import mask, unmask
from active_data_flow.spec import flow_secret_keys
from active_data_flow.spec_schema import SchemaProblem, check_configuration

__all__ = ["build_app"]

_log = get_logger("web")

#: the largest integer a query or path parameter may be (a 64-bit signed integer: what SQLite
#: and PostgreSQL compare and page with)
MAX_INT = 2**63 - 1

# --------------------------------------------------------------------------- models


class FlowSchedule(BaseModel):
    """A cron schedule: five fields (minute hour day-of-month month day-of-week) read in ``timezone``."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(description="e.g. `0 6 * * 1-5` (weekdays at 06:00)", max_length=200)
    timezone: str = Field("UTC", description="an IANA zone such as `Europe/Berlin`, or `UTC` / `+02:00`", max_length=64)


class FlowCreate(BaseModel):
    """A new flow. The spec is validated by the store before anything is saved."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="unique flow name")
    configuration: dict[str, Any] = Field(description="the flow spec: source, steps, sink, runtime")
    run_interval: int | None = Field(None, strict=True, description="seconds between runs (> 0); or `schedule`")
    schedule: FlowSchedule | None = Field(None, description="a cron schedule instead of `run_interval`")
    description: str = ""
    enabled: bool = Field(True, strict=True, description="a new enabled interval flow is due at once")


class FlowUpdate(BaseModel):
    """Fields to change; the rest stay. Applied on the flow's next run."""

    model_config = ConfigDict(extra="forbid")

    configuration: dict[str, Any] | None = None
    run_interval: int | None = Field(None, strict=True, description="makes a cron flow an interval flow")
    schedule: FlowSchedule | None = Field(None, description="makes an interval flow a cron flow")
    description: str | None = None
    enabled: bool | None = Field(None, strict=True)


class ErrorBody(BaseModel):
    error: str


class HeartbeatResponse(BaseModel):
    """The heartbeat answer (active_data_flow.handlers.scheduler.HeartbeatResult.to_dict())."""

    flows_due: int
    flows_triggered: int
    run_ids: list[int]
    timestamp: str


class DeadLetterOut(BaseModel):
    """One dead letter of a run, as the engine wrote it to the run's ``dead_letters.jsonl``."""

    model_config = ConfigDict(extra="allow")

    number: int = Field(description="1-based position in the run's dead-letter file (`adf dead-letters show RUN N`)")
    flow: str | None = None
    run_id: str | None = Field(None, description="the engine run id")
    ts: str | None = Field(None, description="when the record was refused (UTC)")
    stage: str = Field(description="`source` (malformed input, not replayable), `step` or `sink`")
    step: str | None = Field(None, description="the step that refused the record")
    reason: str | None = None
    error_type: str | None = None
    record: Any = Field(None, description="the record as it was refused (the raw text for malformed input)")
    origin: dict[str, Any] | None = Field(
        None, description="where the record came from: `{file, line, offset}`, `{split, row}`, `{index}`, …")
    replays: int | None = Field(None, description="how often it was replayed and refused again")
    previous_reason: str | None = Field(None, description="the reason before the last replay")


class ReplayOut(BaseModel):
    """What a replay of a run's dead letters did: written + filtered + failed again = replayed + fanned out."""

    run_id: int = Field(description="the schedule run")
    flow: str
    engine_run_id: str | None
    replayed: int = Field(description="dead letters sent through the flow")
    written: int = Field(description="records the sink wrote")
    filtered: int = Field(description="records a step dropped")
    fanned_out: int = Field(description="records steps added")
    dead_letters: int = Field(description="records refused again (they stay, with the new reason)")
    kept: int = Field(description="dead letters that cannot be replayed (malformed input; they stay as they are)")
    remaining: int = Field(description="dead letters left in the run")
    message: str = Field(description="the outcome in one sentence")


def _model_of(record: type, name: str, *, exclude: tuple[str, ...] = (), **extra: Any) -> type[BaseModel]:
    """A response model with the fields of a store record dataclass (documentation only:
    routes answer ``record.to_dict()``), less ``exclude``."""
    hints = typing.get_type_hints(record)
    fields: dict[str, Any] = {f: (hints[f], ...) for f in record.__dataclass_fields__  # type: ignore[attr-defined]
                              if f not in exclude}
    fields.update(extra)
    model: type[BaseModel] = create_model(name, **fields)
    return model


FlowOut = _model_of(
    FlowRecord, "Flow", exclude=("schedule_cron", "schedule_timezone"),
    schedule=(FlowSchedule | None, Field(None, description="the cron schedule; null for an interval flow")),
    next_run=(str | None, Field(None, description="when it is due next, ISO 8601 with the schedule zone's offset")),
)
RunOut = _model_of(RunRecord, "Run", duration=(float | None, None))
HeartbeatOut = _model_of(HeartbeatRecord, "Heartbeat")

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "ADF_API_TOKEN is set and the bearer token is missing or wrong"},
    403: {"model": ErrorBody, "description": "no ADF_API_TOKEN and the client is not 127.0.0.1 or ::1"},
    413: {"model": ErrorBody, "description": "the body is larger than ADF_MAX_BODY_BYTES"},
    429: {"model": ErrorBody, "description": "too many wrong tokens from this address: wait `Retry-After` seconds"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "no such flow or run"}}
_INVALID: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "malformed JSON"},
    415: {"model": ErrorBody, "description": "the body is not sent as application/json"},
    422: {"description": "invalid request or flow spec: `{error, problems | details}`"},
}

_bearer = HTTPBearer(auto_error=False, description="ADF_API_TOKEN; without it only 127.0.0.1 and ::1 may call /api")

# --------------------------------------------------------------------------- errors


class _Json(JSONResponse):
    """JSON with non-ASCII escaped: an error that quotes a caller's odd input (a lone
    surrogate in a key) stays encodable."""

    def render(self, content: Any) -> bytes:
        import json

        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return _Json({"error": message, **extra}, status_code=status, headers=headers)


def _where(loc: Any) -> str:
    return ".".join(str(p) for p in loc if p != "body") or "body"


def _validation_error(request: HttpRequest, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    for err in errors:
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "not JSON")
            pos = err["loc"][1] if len(err.get("loc", ())) > 1 else None
            at = f" at position {pos}" if isinstance(pos, int) else ""
            return _error(400, f"malformed JSON: {reason}{at}")
        if tuple(err.get("loc", ())) == ("body",) and isinstance(err.get("input"), bytes):
            # FastAPI hands over the raw bytes when the Content-Type is not JSON.
            content_type = request.headers.get("content-type") or "none"
            return _error(
                415, f"the request body must be JSON sent with Content-Type: application/json (got {content_type})"
            )
    details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors]
    message = "; ".join(f"{_where(d['loc'])}: {d['msg']}" for d in details)
    return _error(422, f"invalid request: {message}", details=details)


def _http_error(request: HttpRequest, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405 and message == "Method Not Allowed":
        message = f"method {request.method} not allowed on {request.url.path}"
    return _error(exc.status_code, message, dict(exc.headers or {}))


def _not_found(request: HttpRequest, exc: Exception) -> JSONResponse:
    message = exc.args[0] if isinstance(exc, NotFoundError) and exc.args else str(exc)
    return _error(404, str(message))


def _dead_letter_error(request: HttpRequest, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DeadLetterError)
    return _error(exc.status, str(exc))


class _SchemaMismatch(FlowValidationError):
    """A configuration the flow schema (``adf schema``) refuses; ``schema_errors`` locate each problem."""

    def __init__(self, problems: list[str], schema_errors: list[SchemaProblem]) -> None:
        super().__init__(problems)
        self.schema_errors = schema_errors


def _invalid_flow(request: HttpRequest, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FlowValidationError)
    if isinstance(exc, DuplicateFlowError):  # valid, but the name is taken: a conflict
        return _error(409, "; ".join(exc.problems), problems=exc.problems)
    count = len(exc.problems)
    extra: dict[str, Any] = {"schema_errors": [e.to_dict() for e in exc.schema_errors]} if isinstance(
        exc, _SchemaMismatch) else {}
    return _error(422, f"invalid flow ({count} problem{'s' if count != 1 else ''}): " + "; ".join(exc.problems),
                  problems=exc.problems, **extra)


def _check_schema(name: str, configuration: dict[str, Any], *, new: bool, **fields: Any) -> None:
    """Refuse a configuration the flow schema (``adf schema``) refuses before the store's own check,
    with the problems of the other fields given (``fields``; a ``new`` flow's name too)."""
    found = check_configuration(configuration, name)
    if found:
        check = [*(["name"] if new else []), *(["run_interval"] if "run_interval" in fields else [])]
        others = flow_problems(name, None, fields.get("run_interval"), description=fields.get("description"),
                               enabled=fields.get("enabled"), schedule=fields.get("schedule"), check=check)
        raise _SchemaMismatch([*others, *(f"configuration: {p}" for p in found)], found)


class _InternalErrors:
    """Any other exception: 500 ``{error, error_id}``, the traceback only in the log (once:
    handled here, below Starlette's ServerErrorMiddleware, which would log it again)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            error_id = uuid.uuid4().hex[:12]
            _log.error(
                "request failed",
                exc_info=exc,
                extra={"fields": {"error_id": error_id, "method": scope.get("method"), "path": scope.get("path")}},
            )
            response = _error(500, f"internal error (error_id {error_id}; details in the server log)", error_id=error_id)
            await response(scope, receive, send)


# --------------------------------------------------------------------------- app


def _headers(request: HttpRequest) -> dict[str, str]:
    """Lower-cased headers, repeated ones joined with ", " (X-Forwarded-For may be split)."""
    out: dict[str, str] = {}
    for raw_key, raw_value in request.headers.raw:
        key, value = raw_key.decode("latin-1").lower(), raw_value.decode("latin-1")
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _peer(request: HttpRequest) -> str | None:
    return request.client.host if request.client else None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("active-data-flow")
    except PackageNotFoundError:
        return "0+unknown"


#: where the flow-run routes of a FlowHost are mounted
INVOKE_PREFIX = "/invoke"

#: a run id in a path
_RunId = Annotated[int, Path(ge=0, le=MAX_INT, description="the run's id")]


def build_app(  # noqa: C901
    settings: Settings, store: ScheduleStore, *, owns_store: bool, flow_host: FlowHost | None = None
) -> FastAPI:
    """The ASGI app over ``store``; closes the store at shutdown when ``owns_store``.

    With ``flow_host``, ``GET /invoke/flows``, ``GET /invoke/flows/{name}`` and
    ``GET|POST /invoke/flows/{name}/run`` answer through :func:`active_data_flow.handlers.invoke.handle_http`.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owns_store:
                store.close()

    app = FastAPI(
        title="ActiveDataFlow",
        version=_version(),
        description=(
            "Heartbeat runtime of ActiveDataFlow: `POST "
            f"{settings.heartbeat_path}` runs the flows that are due; `/api` manages flows and runs. "
            "Errors are JSON `{\"error\": message, ...}`."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    #: failed tokens per client address; the dashboard's login counts into the same one
    app.state.auth_throttle = FailureThrottle()
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(FlowValidationError, _invalid_flow)
    app.add_exception_handler(DeadLetterError, _dead_letter_error)
    # _InternalErrors wraps the guard: an error of the guard itself is a JSON 500 as well
    app.add_middleware(RequestGuard, settings=settings, throttle=app.state.auth_throttle,
                       protected=("/api", INVOKE_PREFIX, "/metrics"))
    app.add_middleware(_InternalErrors)

    # -- heartbeat ---------------------------------------------------------------------

    async def heartbeat(request: HttpRequest) -> HttpResponse:
        req = Request(
            method=request.method,
            path=request.url.path,
            headers=_headers(request),
            query=dict(request.query_params),
            # The heartbeat reads no body; not buffering one keeps an unauthorised caller
            # from making the server hold a large upload in memory.
            body=b"",
            peer=_peer(request),
        )
        # The handler blocks (database, and the flows themselves in sync mode).
        resp = await run_in_threadpool(handle_heartbeat, req, settings, store)
        return HttpResponse(resp.encoded(), status_code=resp.status, headers=resp.headers)

    hb_errors = {
        400: "`mode` is neither `sync` nor `async`",
        401: f"`{TOKEN_HEADER}` missing or wrong",
        403: "client not in ADF_HEARTBEAT_ALLOWLIST",
        405: "method other than POST",
        500: "internal error: `{error, error_id}`, details in the server log",
        503: "no ADF_HEARTBEAT_TOKEN configured (and ADF_HEARTBEAT_OPEN not set), or a malformed address setting",
    }
    app.add_api_route(
        settings.heartbeat_path,
        heartbeat,
        methods=["POST"],
        tags=["heartbeat"],
        summary="Run the flows that are due",
        description=(
            "Claims the due flows and runs them in the request (`sync`) or enqueues them for "
            "`adf worker` (`async`). Every request, allowed or not, is recorded in the heartbeat log."
        ),
        response_model=HeartbeatResponse,
        responses={code: {"model": ErrorBody, "description": text} for code, text in hb_errors.items()},
        openapi_extra={
            "parameters": [
                {
                    "name": TOKEN_HEADER,
                    "in": "header",
                    "required": False,
                    "description": "the secret of ADF_HEARTBEAT_TOKEN (required unless ADF_HEARTBEAT_OPEN=true)",
                    "schema": {"type": "string"},
                },
                {
                    "name": "mode",
                    "in": "query",
                    "required": False,
                    "description": "override ADF_HEARTBEAT_MODE for this request",
                    "schema": {"type": "string", "enum": ["sync", "async"]},
                },
            ]
        },
    )
    # Other methods reach the same handler so that they get its 405 and are logged too.
    app.add_api_route(
        settings.heartbeat_path,
        heartbeat,
        methods=["GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
        include_in_schema=False,
    )

    # -- management API ------------------------------------------------------------------

    def api_access(
        request: HttpRequest, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> None:
        # RequestGuard applied this rule before the body was read; the dependency documents
        # it in the OpenAPI document (and holds if the app is ever served without the guard).
        decision = authorize_api(settings, _peer(request), _headers(request))
        if not decision.allowed:
            headers = {"WWW-Authenticate": "Bearer"} if decision.status == 401 else None
            raise HTTPException(decision.status, decision.message, headers=headers)

    api = APIRouter(prefix="/api", dependencies=[Depends(api_access)], responses=_ERRORS)

    def _json(data: Any, status: int = 200) -> JSONResponse:
        return _Json(data, status_code=status)

    def _flow(flow: FlowRecord) -> dict[str, Any]:
        """A flow as the API shows it: the configuration's secrets masked."""
        return {**flow.to_dict(), "configuration": mask(flow.configuration, flow_secret_keys(flow.configuration))}

    def _storable(**values: Any) -> None:
        problems = [p for name, value in values.items() for p in unstorable(value, name)]
        if problems:
            raise FlowValidationError(problems)

    def _unmasked(configuration: dict[str, Any], stored: FlowRecord | None) -> dict[str, Any]:
        """The configuration with the stored secrets back where it sends the masks back unchanged."""
        previous = stored.configuration if stored is not None else None
        restored, problems = unmask(configuration, previous, flow_secret_keys(previous))
        if problems:
            raise FlowValidationError([f"configuration.{p}" for p in problems])
        return dict(restored)

    @api.get("/flows", response_model=list[FlowOut], tags=["flows"], summary="List flows")  # type: ignore[valid-type]
    def list_flows() -> JSONResponse:
        return _json([_flow(f) for f in store.list_flows()])

    @api.post(
        "/flows",
        status_code=201,
        response_model=FlowOut,
        tags=["flows"],
        summary="Create a flow (due at once when enabled)",
        responses={**_INVALID, 409: {"model": ErrorBody, "description": "a flow with that name exists"}},
    )
    def create_flow(body: FlowCreate) -> JSONResponse:
        _storable(name=body.name, configuration=body.configuration, description=body.description)
        configuration = _unmasked(body.configuration, None)
        schedule = None if body.schedule is None else body.schedule.model_dump()
        _check_schema(body.name, configuration, new=True, run_interval=body.run_interval,
                      description=body.description, enabled=body.enabled, schedule=schedule)
        flow = store.create_flow(
            body.name, configuration, body.run_interval, description=body.description, enabled=body.enabled,
            schedule=schedule,
        )
        return _json(_flow(flow), 201)

    @api.get("/flows/{name}", response_model=FlowOut, tags=["flows"], summary="Show a flow", responses=_NOT_FOUND)
    def get_flow(name: str) -> JSONResponse:
        return _json(_flow(store.get_flow(name)))

    @api.patch(
        "/flows/{name}",
        response_model=FlowOut,
        tags=["flows"],
        summary="Change a flow (applied on its next run)",
        responses={**_NOT_FOUND, **_INVALID},
    )
    def update_flow(name: str, body: FlowUpdate) -> JSONResponse:
        changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
        _storable(**{k: v for k, v in changes.items() if k in ("configuration", "description")})
        if "configuration" in changes:
            changes["configuration"] = _unmasked(changes["configuration"], store.get_flow(name))
            _check_schema(name, changes["configuration"], new=False,
                          **{k: v for k, v in changes.items() if k != "configuration"})
        return _json(_flow(store.update_flow(name, **changes)))

    @api.post("/flows/{name}/enable", response_model=FlowOut, tags=["flows"], summary="Enable a flow",
              responses=_NOT_FOUND)
    def enable_flow(name: str) -> JSONResponse:
        return _json(_flow(store.update_flow(name, enabled=True)))

    @api.post("/flows/{name}/disable", response_model=FlowOut, tags=["flows"], summary="Disable a flow",
              responses=_NOT_FOUND)
    def disable_flow(name: str) -> JSONResponse:
        return _json(_flow(store.update_flow(name, enabled=False)))

    @api.post(
        "/flows/{name}/trigger",
        response_model=RunOut,
        tags=["flows"],
        summary="Run a flow now",
        description=(
            "`wait=true` runs the flow in the request and answers 200 with the finished run; "
            "`wait=false` (default) enqueues a pending run for `adf worker` and answers 202."
        ),
        responses={202: {"model": RunOut, "description": "run enqueued"}, **_NOT_FOUND},
    )
    def trigger_flow(name: str, wait: bool = False) -> JSONResponse:
        run = scheduler.trigger_run(store, settings, name, trigger="manual", wait=wait)
        return _json(run.to_dict(), 200 if wait else 202)

    @api.delete("/flows/{name}", status_code=204, tags=["flows"], summary="Delete a flow", responses=_NOT_FOUND)
    def delete_flow(name: str) -> HttpResponse:
        store.delete_flow(name)
        return HttpResponse(status_code=204)

    @api.get("/runs", response_model=list[RunOut], tags=["runs"], summary="List runs, newest first")  # type: ignore[valid-type]
    def list_runs(
        flow: str | None = None,
        status: Literal["pending", "in_progress", "success", "partial", "failed", "cancelled"] | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
    ) -> JSONResponse:
        runs = store.list_runs(flow=flow, status=status, limit=limit, offset=offset)
        return _json([r.to_dict() for r in runs])

    @api.get("/runs/{run_id}", response_model=RunOut, tags=["runs"], summary="Show a run", responses=_NOT_FOUND)
    def get_run(run_id: _RunId) -> JSONResponse:
        return _json(store.get_run(run_id).to_dict())

    @api.get(
        "/runs/{run_id}/dead-letters",
        response_model=list[DeadLetterOut],
        tags=["runs"],
        summary="A run's dead letters, in file order",
        description=(
            "The records the run refused that are still dead letters (after a replay: those left), each with its "
            "`number`, stage, step, reason and origin. `X-Total-Count` is the number of dead letters in all. "
            "404 for an unknown run or one without a run directory; 409 when its dead letters went to a "
            "configured `dead_letter` sink (read them there)."
        ),
        responses={
            404: {"model": ErrorBody, "description": "no such run, or the run has no run directory"},
            409: {"model": ErrorBody, "description": "the run's dead letters went to a `dead_letter` sink"},
        },
    )
    def list_dead_letters(
        run_id: _RunId,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
    ) -> JSONResponse:
        _, letters, total = read_run_dead_letters(store, store.get_run(run_id), settings, offset=offset, limit=limit)
        return JSONResponse(letters, headers={"X-Total-Count": str(total)})

    @api.post(
        "/runs/{run_id}/dead-letters/replay",
        response_model=ReplayOut,
        tags=["runs"],
        summary="Replay a run's dead letters through its flow's current configuration",
        description=(
            "Sends each dead letter into the flow as the schedule store holds it now, where it was refused (the "
            "step that raised, or the sink). Records that go through leave the dead letters; those refused again "
            "stay with their new reason; malformed input stays (fix the input and run the flow again). The "
            "replay is recorded in the run's summary.json."
        ),
        responses={
            404: {"model": ErrorBody, "description": "no such run, or the run has no run directory"},
            409: {"model": ErrorBody, "description": (
                "the run is still going, its flow was deleted, its dead letters went to a `dead_letter` sink, "
                "or another replay of them is running")},
            422: {"model": ErrorBody, "description": "the flow's configuration is not valid now"},
            503: {"model": ErrorBody, "description": "the sink cannot be reached (nothing was removed)"},
        },
    )
    def replay_dead_letters(run_id: _RunId) -> JSONResponse:
        run = store.get_run(run_id)
        outcome = replay_run_dead_letters(store, run, settings)
        return _json({"run_id": run.id, "flow": run.flow_name, "engine_run_id": run.engine_run_id, **outcome,
                      "message": describe_replay(outcome)})

    @api.get("/heartbeats", response_model=list[HeartbeatOut], tags=["heartbeat"],  # type: ignore[valid-type]
             summary="The heartbeat request log, newest first")
    def list_heartbeats(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> JSONResponse:
        return _json([h.to_dict() for h in store.list_heartbeats(limit=limit)])

    app.include_router(api)

    # -- flow runs (active_data_flow.handlers.invoke) -------------------------------------------------------

    if flow_host is not None:
        invoke_host = flow_host

        async def invoke(request: HttpRequest) -> HttpResponse:
            req = Request(
                method=request.method,
                path=request.url.path,
                headers=_headers(request),
                query=dict(request.query_params),
                body=await request.body(),
                peer=_peer(request),
            )
            resp = await run_in_threadpool(handle_http, req, invoke_host, base_path=INVOKE_PREFIX)
            if isinstance(resp, StreamingResponse):
                # Starlette iterates a plain iterator in its thread pool; chunks arrive while the flow runs.
                return HttpStreamingResponse(resp.chunks, status_code=resp.status, headers=resp.headers)
            return HttpResponse(resp.encoded(), status_code=resp.status, headers=resp.headers)

        app.add_api_route(
            INVOKE_PREFIX + "/{path:path}",
            invoke,
            methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            dependencies=[Depends(api_access)],
            tags=["invoke"],
            summary="Run a flow of the flow host (see active_data_flow.handlers.invoke)",
            description=(
                "`GET /invoke/flows`, `GET /invoke/flows/{name}`, `GET|POST /invoke/flows/{name}/run` "
                "(`?stream=true` or `Accept: application/x-ndjson` for NDJSON progress events)."
            ),
        )

    # -- health ----------------------------------------------------------------------------

    @app.get("/healthz", tags=["health"], summary="Liveness and database reachability",
             responses={503: {"model": ErrorBody, "description": "the schedule database is unreachable"}})
    def healthz() -> JSONResponse:
        try:
            store.list_heartbeats(limit=1)
        except Exception as exc:
            # /healthz needs no credentials: the database's error stays in the server log.
            _log.log(logging.ERROR, "health check failed", exc_info=exc)
            return _error(503, "schedule database unavailable (details in the server log)")
        return _json({"status": "ok", "version": app.version})

    return app
