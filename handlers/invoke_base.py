"""The transport-neutral core of flow invocation: hosts, errors, preparing and running a flow.

See :mod:`handlers.invoke` (the public face: every name is importable from there) for the
whole picture; the triggers are in :mod:`handlers.invoke_http`, :mod:`handlers.invoke_messages`
and :mod:`handlers.invoke_cron`.

Standard library only at module level (this runs inside a Spin component).
"""

from __future__ import annotations

import abc
import datetime as dt
import json
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.attributes import Attribute
from core.config import resolve_flow_config
from core.connectors.memory import ResponseRecords, ResponseSink
from core.errors import AdfError, ConfigError, SpecError
from core.ids import new_id
from core.loader import LoadedFlow, load_flow
from core.logs import get_logger
from core.redact import REDACTED, redact_text
from core.spec import parse_params
from core.state import MemoryStateStore, SqliteStateStore, StateStore
from handlers.confignames import variables_config

if TYPE_CHECKING:  # the HTTP types only annotate here: the event handlers never load them
    from core.engine import Progress, RunSummary
    from handlers.http import Request, Response
    from handlers.invoke_params import RequestParams
    from handlers.streaming import StreamingResponse

__all__ = [
    "KV_FLOW_PREFIX",
    "BadRequest",
    "ErrorContext",
    "ErrorHandler",
    "FlowFailed",
    "FlowHost",
    "Forbidden",
    "Invocation",
    "InvokeError",
    "LocalHost",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PreparedRun",
    "PublishUnsupported",
    "TriggerPayload",
    "describe_flow",
    "execute_flow",
    "flow_names",
    "invoke_flow",
    "list_flows",
    "lookup_spec",
    "parse_trigger_payload",
    "prepare_flow",
    "run_named_flow",
    "status_for",
]

_log = get_logger("invoke")

#: flows kept in the host's key-value store: ``flows/<name>`` holds a spec object
KV_FLOW_PREFIX = "flows/"
#: the keys a trigger payload may carry (see :mod:`handlers.invoke_params`)
_PAYLOAD_KEYS = ("records", "params")


# --------------------------------------------------------------------------- errors


class InvokeError(AdfError):
    """An error with an HTTP status; ``problems`` lists details when there are several."""

    status = 500

    def __init__(self, message: str, problems: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems)


class BadRequest(InvokeError):
    """Malformed input: JSON, the body's shape, a query parameter or a header (400)."""

    status = 400


class Forbidden(InvokeError):
    """The request asks for something this host does not allow (403; for custom hosts and
    error handlers: what a request may *set* is refused with 400, see :mod:`handlers.invoke_params`)."""

    status = 403


class NotFound(InvokeError):
    """Unknown flow or route (404); ``flows`` lists the known flows when it is about a flow."""

    status = 404

    def __init__(self, message: str, flows: Iterable[str] | None = None) -> None:
        super().__init__(message)
        self.flows = None if flows is None else list(flows)


class MethodNotAllowed(InvokeError):
    """The route exists but not for this method (405); ``allow`` lists the methods."""

    status = 405

    def __init__(self, message: str, allow: Iterable[str]) -> None:
        super().__init__(message)
        self.allow = list(allow)


class FlowFailed(InvokeError):
    """A run ended with ``status: failed`` (raised by the handlers, never by :func:`invoke_flow`)."""

    def __init__(self, invocation: Invocation) -> None:
        summary = invocation.summary
        self.invocation = invocation
        self.out_of_memory = invocation.out_of_memory
        self.status = 507 if self.out_of_memory else 500
        super().__init__(_failure_message(invocation.flow, summary))


class PublishUnsupported(AdfError):
    """The host cannot publish results (no outbound Redis / MQTT configured)."""


class PayloadTooLarge(InvokeError):
    """A request body over the transport's limit (413); nothing of it was parsed.
    ``size`` is the body's length when it is known (a ``Content-Length``), else None."""

    status = 413

    def __init__(self, limit: int, size: int | None = None) -> None:
        self.limit, self.size = limit, size
        got = f"{size} bytes" if size is not None else f"more than {limit} bytes"
        super().__init__(
            f"the request body is too large: {got}; the limit is {limit} bytes (ADF_MAX_BODY_BYTES). "
            "Send fewer records per request."
        )


def status_for(exc: BaseException) -> int:
    """The HTTP status an error maps to (also reported as ``code`` in message results)."""
    if isinstance(exc, InvokeError):
        return exc.status
    if isinstance(exc, ConfigError):
        return 422
    if isinstance(exc, MemoryError):
        return 507
    return 500


def _failure_message(flow: str, summary: RunSummary) -> str:
    if summary.error_type == "MemoryError":
        return (
            f"out of memory while running flow {flow!r} ({summary.error or 'MemoryError'}); "
            "send fewer records per request or lower runtime.batch_size"
        )
    return summary.error or f"flow {flow!r} failed"


def _error_message(exc: BaseException, error_id: str) -> str:
    if isinstance(exc, InvokeError):
        return exc.message
    if isinstance(exc, ConfigError):
        return redact_text(str(exc))
    if isinstance(exc, MemoryError):
        return f"out of memory while handling the request (error_id {error_id}); send a smaller request"
    return f"internal error (error_id {error_id}; details in the log)"


def _error_fields(exc: BaseException) -> dict[str, Any]:
    """Extra fields of an error body/result besides ``error`` and ``error_id``."""
    if isinstance(exc, FlowFailed):
        return exc.invocation.body()
    out: dict[str, Any] = {}
    problems = getattr(exc, "problems", None)
    if isinstance(exc, InvokeError | ConfigError) and problems:
        out["problems"] = [redact_text(str(p)) for p in problems]
    if isinstance(exc, NotFound) and exc.flows is not None:
        out["flows"] = exc.flows
    if isinstance(exc, InvokeError):  # a refused request (handlers.invoke_params) says what it may set
        refused, declared = getattr(exc, "refused", None), getattr(exc, "declared", None)
        if refused is not None:
            out["refused"] = list(refused)
        if declared is not None:
            out["declared_params"] = list(declared)
    return out


def _new_error_id() -> str:
    return new_id(12)


# --------------------------------------------------------------------------- hosts


@dataclass
class ErrorContext:
    """What an error handler knows besides the exception."""

    request_id: str
    error_id: str
    trigger: str
    status: int
    flow: str | None = None
    request: Request | None = None


#: ``handler(exc, context) -> Response | None``; None: the handler of a base class, else the default answer
ErrorHandler = Callable[[BaseException, ErrorContext], "Response | StreamingResponse | None"]


class FlowHost(abc.ABC):
    """What a target provides to the handlers.

    Subclasses implement :meth:`specs` and override what they have. Class attributes:
    ``persist`` (may runs write files: checkpoints, run records, dead-letter files? False
    inside Spin), ``state_dir`` (where persisting runs keep their files; None:
    ``$ADF_STATE_DIR``). No host takes a flow spec, or any configuration but the declared
    parameters, from a request (:mod:`handlers.invoke_params`).
    """

    persist: bool = False
    state_dir: str | None = None

    @abc.abstractmethod
    def specs(self) -> Mapping[str, Mapping[str, Any]]:
        """The flows this host knows, by name: bundled at build time, or given. A flow may
        also be stored in :meth:`store` under ``flows/<name>`` (see :func:`lookup_spec`)."""

    def store(self) -> StateStore | None:
        """The key-value store: the ``kv`` config layer (``config/<flow>``) and the flows' state.
        None: no kv layer (and no default SQLite file is opened either)."""
        return None

    def variables(self) -> Mapping[str, str]:
        """Manifest-level settings (spin.toml variables, SAM parameters), name → value.

        Spin has no call that lists variables: return every variable the component declares
        (bundle the names at build time) that has a value. Mapping: :mod:`handlers.confignames`.
        """
        return {}

    def environ(self) -> Mapping[str, str]:
        """Environment variables for the ``env`` layer (``ADF__SINK__TABLE``...)."""
        return {}

    def publish(self, channel: str, message: bytes) -> None:
        """Publish a result (outbound Redis; an MQTT host may publish to a topic). Raises
        :class:`PublishUnsupported` when the host cannot; other errors are reported by the
        caller, never raised into the host."""
        raise PublishUnsupported(
            f"this host cannot publish results (to {channel!r}): configure outbound Redis for it"
        )

    def memory_bytes(self) -> int | None:
        """The memory in use to report in logs (a component's linear memory size), or None."""
        return None

    @property
    def error_handlers(self) -> dict[type[BaseException], ErrorHandler]:
        """Custom error answers of :func:`handle_http`: exception type → handler."""
        handlers: dict[type[BaseException], ErrorHandler] | None = self.__dict__.get("_error_handlers")
        if handlers is None:
            handlers = self.__dict__["_error_handlers"] = {}
        return handlers

    def register_error_handler(self, exc_type: type[BaseException], handler: ErrorHandler) -> None:
        """``host.error_handlers[exc_type] = handler``."""
        self.error_handlers[exc_type] = handler


def lookup_spec(host: FlowHost, name: str) -> dict[str, Any] | None:
    """The spec of flow ``name``: :meth:`FlowHost.specs`, else ``flows/<name>`` in the store."""
    raw = host.specs().get(name)
    if raw is None:
        store = host.store()
        stored = store.get(KV_FLOW_PREFIX + name) if store is not None else None
        raw = stored if isinstance(stored, Mapping) else None
    if raw is None:
        return None
    spec = dict(raw)
    spec.setdefault("name", name)
    return spec


def flow_names(host: FlowHost) -> list[str]:
    """Every flow the host knows (specs and ``flows/*`` in the store)."""
    names = set(host.specs())
    store = host.store()
    if store is not None:
        names.update(k[len(KV_FLOW_PREFIX) :] for k in store.keys(KV_FLOW_PREFIX))
    return sorted(n for n in names if n)


def _memory(host: FlowHost) -> int | None:
    try:
        return host.memory_bytes()
    except Exception:
        return None


class LocalHost(FlowHost):
    """The native host: for tests, ``adf serve`` and anything that is not a component.

    ``specs``: a mapping name → spec, a directory of ``*.yaml``/``*.yml``/``*.json`` spec
    files (re-read when they change; the directory is put on ``sys.path`` for step modules),
    or None. ``store``: default a :class:`~core.state.SqliteStateStore` in ``state_dir``
    when ``persist``, else a :class:`~core.state.MemoryStateStore`. ``environ``: default
    ``os.environ``. ``publisher(channel, message)``, or ``redis_url`` (redis-py, imported
    when first used), publish results; with neither, :meth:`publish` raises
    :class:`PublishUnsupported`. ``allow_payload_spec`` is accepted for older callers and
    has no effect: a request never carries a flow spec (a warning says so when it is true).
    """

    def __init__(
        self,
        specs: Mapping[str, Mapping[str, Any]] | str | os.PathLike[str] | None = None,
        *,
        store: StateStore | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        variables: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
        persist: bool = True,
        allow_payload_spec: bool = False,
        publisher: Callable[[str, bytes], None] | None = None,
        redis_url: str | None = None,
    ) -> None:
        self.persist = persist
        if allow_payload_spec:
            warnings.warn(
                "allow_payload_spec has no effect: a request never carries a flow spec (it may set only its "
                "records and the flow's declared parameters); put the flow in the host's specs instead",
                DeprecationWarning, stacklevel=2,
            )
        from core.engine import default_state_root

        self.state_dir = os.path.abspath(os.fspath(state_dir)) if state_dir is not None else default_state_root()
        self._specs: dict[str, dict[str, Any]] = {}
        self._dir: str | None = None
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        if isinstance(specs, str | os.PathLike):
            self._dir = os.path.abspath(os.fspath(specs))
            if self._dir not in sys.path:
                sys.path.append(self._dir)
        elif specs is not None:
            self._specs = {name: {"name": name, **dict(spec)} for name, spec in specs.items()}
        self._store = store
        self._own_store = store is None
        self._variables: Mapping[str, str] = variables if variables is not None else {}
        self._environ = environ
        self._publisher = publisher
        self._redis_url = redis_url
        self._redis: Any = None
        #: every (channel, message) published, in order (for inspection)
        self.published: list[tuple[str, bytes]] = []

    def specs(self) -> Mapping[str, Mapping[str, Any]]:
        if self._dir is None:
            return self._specs
        with self._lock:
            self._reload()
            return dict(self._specs)

    def _reload(self) -> None:
        assert self._dir is not None
        from core.spec import load_spec_file

        try:
            files = sorted(f for f in os.listdir(self._dir) if f.endswith((".yaml", ".yml", ".json")))
        except OSError as exc:
            _log.warning("cannot list the flow directory", extra={"fields": {"dir": self._dir, "error": str(exc)}})
            return
        mtimes = {}
        for f in files:
            path = os.path.join(self._dir, f)
            try:
                mtimes[path] = os.stat(path).st_mtime
            except OSError:
                continue
        if mtimes == self._seen:
            return
        specs: dict[str, dict[str, Any]] = {}
        for path in mtimes:
            try:
                raw = load_spec_file(path)
            except Exception as exc:
                _log.warning("flow spec not loaded", extra={"fields": {"file": path, "error": redact_text(str(exc))}})
                continue
            if isinstance(raw, Mapping):
                name = str(raw.get("name") or os.path.splitext(os.path.basename(path))[0])
                specs[name] = {**raw, "name": name}
        self._specs, self._seen = specs, mtimes

    def store(self) -> StateStore | None:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    if self.persist:
                        assert self.state_dir is not None
                        os.makedirs(self.state_dir, exist_ok=True)
                        self._store = SqliteStateStore(os.path.join(self.state_dir, "state.db"))
                    else:
                        self._store = MemoryStateStore()
        return self._store

    def variables(self) -> Mapping[str, str]:
        return self._variables

    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def publish(self, channel: str, message: bytes) -> None:
        if self._publisher is not None:
            self._publisher(channel, message)
        elif self._redis_url:
            if self._redis is None:
                try:
                    import redis
                except ImportError as exc:
                    from core.errors import MissingExtraError

                    raise MissingExtraError("redis", "redis", "publishing results to Redis") from exc
                self._redis = redis.Redis.from_url(self._redis_url, socket_timeout=5)
            self._redis.publish(channel, message)
        else:
            super().publish(channel, message)
        self.published.append((channel, message))

    def memory_bytes(self) -> int | None:
        try:
            import resource
        except ImportError:
            return None
        peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        return peak if sys.platform == "darwin" else peak * 1024

    def close(self) -> None:
        """Close the store this host opened, and the Redis client."""
        if self._own_store and self._store is not None:
            self._store.close()
            self._store = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None


# --------------------------------------------------------------------------- running a flow


@dataclass
class PreparedRun:
    """A flow resolved and validated, ready to run (:func:`prepare_flow`)."""

    flow: str
    loaded: LoadedFlow
    run_id: str
    request_id: str
    #: ``adf_*`` variables that mapped to no configuration path of this flow
    ignored_variables: list[str] = field(default_factory=list)


@dataclass
class Invocation:
    """A finished run: its summary and what its ``response`` sink kept."""

    flow: str
    request_id: str
    summary: RunSummary
    response: ResponseRecords | None = None

    @property
    def ok(self) -> bool:
        return self.summary.ok

    @property
    def out_of_memory(self) -> bool:
        return self.summary.error_type == "MemoryError"

    def body(self) -> dict[str, Any]:
        """The JSON answer: the summary (no backtrace), ``request_id``, and ``records``,
        ``records_total``, ``records_truncated`` when the sink is ``response``."""
        body = self.summary.to_dict()
        body.pop("backtrace", None)
        body["request_id"] = self.request_id
        if self.out_of_memory:
            body["error"] = _failure_message(self.flow, self.summary)
        if self.response is not None:
            body["records"] = self.response.records
            body["records_total"] = self.response.total
            body["records_truncated"] = self.response.truncated
        return body


def _new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + new_id(8)


def _declared_params(
    host: FlowHost,
    raw: Mapping[str, Any],
    store: StateStore | None,
    extra: list[tuple[str, Mapping[str, Any], str]],
) -> tuple[Attribute, ...]:
    """The parameters the flow declares once its operators' layers are applied (a variable or
    the environment may change a declaration, as any other part of the spec)."""
    resolved = resolve_flow_config(raw, store=store, environ=dict(host.environ()), extra=extra)
    declared, _problems = parse_params(resolved.get("params"))  # the spec's own problems: reported by the load
    return declared


def prepare_flow(
    host: FlowHost,
    name: str,
    *,
    params: RequestParams | Mapping[str, Any] | None = None,
    records: Any = None,
    object_url: str | None = None,
    request_id: str | None = None,
    run_id: str | None = None,
) -> PreparedRun:
    """Resolve flow ``name`` with every operator layer, take what the request gives, validate
    (nothing runs yet).

    What a request may give (:mod:`handlers.invoke_params`): ``params`` — values of the
    parameters the flow declares (a mapping, or a :class:`~handlers.invoke_params.RequestParams`
    built by a transport from its body, query and headers, refused keys included); ``records`` —
    the records of a ``payload`` source (a list); ``object_url`` — the object an object-created
    event names, read by the flow's ``file`` source. Raises :class:`NotFound`,
    :class:`~handlers.invoke_params.RefusedRequest` (400: anything else),
    :class:`~handlers.invoke_params.InvalidParams` (422: a parameter's value),
    :class:`BadRequest` or :class:`~core.errors.ConfigError` (422: every problem).
    """
    found = lookup_spec(host, name)
    if found is None:
        raise NotFound(f"no flow named {name!r}", flows=flow_names(host))
    return _prepare(host, name, found, params, records, request_id, run_id, object_url)


def _prepare(
    host: FlowHost,
    name: str,
    raw: dict[str, Any],
    params: RequestParams | Mapping[str, Any] | None,
    records: Any,
    request_id: str | None,
    run_id: str | None,
    object_url: str | None = None,
) -> PreparedRun:
    from handlers.invoke_params import InvalidParams, RequestParams, request_values

    request = params if isinstance(params, RequestParams) else RequestParams.from_values(params)
    if records is not None and not isinstance(records, list):
        raise BadRequest(f"'records' must be a JSON array, got {type(records).__name__}")
    flow_name = str(raw.get("name") or name)
    additions, ignored = variables_config(host.variables(), flow_name, raw)
    extra: list[tuple[str, Mapping[str, Any], str]] = [("manifest", values, origin) for values, origin in additions]
    store = host.store()
    given: dict[str, Any] | None = None
    if not request.empty:
        given = request_values(flow_name, _declared_params(host, raw, store, extra), request)
    try:
        loaded = load_flow(
            raw,
            params=given,
            environ=dict(host.environ()),
            store=store,
            use_store=store is not None,
            extra=extra,
        )
    except SpecError as exc:
        if any(p.startswith("params") for p in exc.problems):
            raise InvalidParams(flow_name, exc.problems, _declared_params(host, raw, store, extra)) from None
        raise
    if records is not None:
        source_type = loaded.spec.source.get("type")
        if source_type != "payload":
            raise ConfigError(
                f"flow {name!r}",
                [f"records were given but the flow's source is {source_type!r}; only a 'payload' source takes records"],
            )
        loaded.spec.source["records"] = records
    if object_url is not None:
        source_type = loaded.spec.source.get("type")
        if source_type != "file":
            raise ConfigError(
                f"flow {name!r}",
                [f"the event names the object {object_url} but the flow's source is {source_type!r}; "
                 "only a 'file' source reads the object an event names"],
            )
        loaded.spec.source["path"] = object_url
    return PreparedRun(
        flow=loaded.spec.name,
        loaded=loaded,
        run_id=run_id or _new_run_id(),
        request_id=request_id or new_id(),
        ignored_variables=ignored,
    )


ProgressCallback = Callable[["Progress"], None]


def execute_flow(host: FlowHost, prepared: PreparedRun, *, on_progress: ProgressCallback | None = None) -> Invocation:
    """Run a prepared flow on its runtime (``core.runtime.run``) and collect its response records.

    ``persist=host.persist``; parallelism is 1 when the host does not persist or the sink is
    ``response`` (its records live in this process). A failing flow is a summary with
    ``status: failed`` (a ``MemoryError`` included), not an exception.
    """
    from core.runtime import run as run_on_runtime

    spec = prepared.loaded.spec
    responds = spec.sink.get("type") == "response"
    if not host.persist or responds:
        spec.runtime["parallelism"] = 1
    try:
        summary = run_on_runtime(
            spec,
            state_dir=host.state_dir,
            on_progress=on_progress,
            run_id=prepared.run_id,
            store=prepared.loaded.store,
            persist=host.persist,
            # a request's records are its source: an unfinished run of another request (or of
            # the flow before it was changed) is not resumed by this one
            on_spec_change="fresh",
        )
    except BaseException:
        if responds:
            ResponseSink.pop(prepared.run_id)
        raise
    response: ResponseRecords | None = None
    if responds:
        # A persisting host may have resumed an earlier run: its records are under that run id.
        response = ResponseSink.pop(summary.run_id)
        if summary.run_id != prepared.run_id:
            ResponseSink.pop(prepared.run_id)
        if response is None:
            response = ResponseRecords(limit=int(spec.sink.get("limit") or 0))
    return Invocation(flow=prepared.flow, request_id=prepared.request_id, summary=summary, response=response)


def invoke_flow(
    host: FlowHost,
    name: str,
    *,
    params: RequestParams | Mapping[str, Any] | None = None,
    records: Any = None,
    object_url: str | None = None,
    on_progress: ProgressCallback | None = None,
    request_id: str | None = None,
) -> Invocation:
    """:func:`prepare_flow` then :func:`execute_flow`."""
    prepared = prepare_flow(host, name, params=params, records=records, object_url=object_url, request_id=request_id)
    return execute_flow(host, prepared, on_progress=on_progress)


def run_named_flow(
    host: FlowHost,
    name: str,
    *,
    params: RequestParams | Mapping[str, Any] | None = None,
    records: Any = None,
    on_progress: ProgressCallback | None = None,
) -> RunSummary:
    """Run flow ``name`` and return its summary (records of a ``response`` sink are dropped:
    use :func:`invoke_flow` to get them). Raises as :func:`prepare_flow` does; a failing
    flow is ``summary.status == "failed"``."""
    return invoke_flow(host, name, params=params, records=records, on_progress=on_progress).summary


def describe_flow(host: FlowHost, name: str, *, params: RequestParams | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The resolved configuration of a flow (secrets redacted), where each value comes from,
    its declared parameters and their values for ``params`` (secret ones redacted)."""
    from core.spec import describe_params

    prepared = prepare_flow(host, name, params=params)
    resolved = prepared.loaded.config
    spec = prepared.loaded.spec
    secret = {a.name for a in spec.param_attributes if a.secret}
    return {
        "name": prepared.flow,
        "description": spec.description,
        "config": resolved.as_dict_redacted(),
        "explain": [
            {
                "path": e.path,
                "value": e.value,
                "layer": e.layer,
                "origin": e.origin,
                "overridden": [{"layer": layer, "origin": origin} for layer, origin in e.overridden],
            }
            for e in resolved.explain()
        ],
        "declared_params": describe_params(spec.param_attributes),
        "params": {k: REDACTED if k in secret and v is not None else v for k, v in spec.params.items()},
        "ignored_variables": prepared.ignored_variables,
    }


def list_flows(host: FlowHost) -> list[dict[str, Any]]:
    """``[{name, description, source, sink}]`` of every flow the host knows."""
    out = []
    for name in flow_names(host):
        raw = lookup_spec(host, name) or {}
        source, sink = raw.get("source"), raw.get("sink")
        out.append(
            {
                "name": name,
                "description": str(raw.get("description") or ""),
                "source": source.get("type") if isinstance(source, Mapping) else None,
                "sink": sink.get("type") if isinstance(sink, Mapping) else None,
            }
        )
    return out


# --------------------------------------------------------------------------- payloads


@dataclass
class TriggerPayload:
    """A parsed trigger payload: ``{"records", "params", "reply_to"}`` or an array of records.

    ``refused`` names the keys the payload carried that a request may not set (``config``,
    ``spec``…): :func:`prepare_flow` refuses the request with them (400), naming the flow's
    declared parameters."""

    records: list[Any] | None = None
    params: dict[str, Any] | None = None
    refused: list[str] = field(default_factory=list)
    reply_to: str | None = None
    #: whether the payload said ``reply_to`` (``null`` or ``""``: do not publish)
    reply_to_given: bool = False


def _refused_key(key: str, value: Any) -> str:
    shown = key if len(key) <= 80 else key[:77] + "..."
    if isinstance(value, Mapping) and value:
        inner = [str(k) for k in value][:8]
        return f"body key {shown!r} ({', '.join(inner)}{', …' if len(value) > 8 else ''})"
    return f"body key {shown!r}"


def parse_trigger_payload(data: bytes | str, *, allowed: Iterable[str] = _PAYLOAD_KEYS) -> TriggerPayload:
    """Parse a JSON payload; empty means ``{}``. Raises :class:`BadRequest` saying what is wrong
    with its shape; keys other than ``allowed`` are kept in ``refused`` (see :class:`TriggerPayload`)."""
    keys = tuple(allowed)
    text = data.strip() if isinstance(data, bytes | str) else data
    if not text:
        return TriggerPayload()
    try:
        value = json.loads(text)
    except ValueError as exc:  # UnicodeDecodeError included
        raise BadRequest(f"malformed JSON: {exc}") from None
    if isinstance(value, list):
        return TriggerPayload(records=value)
    if not isinstance(value, dict):
        raise BadRequest(
            f"the payload must be a JSON object {{{', '.join(keys)}}} or an array of records, "
            f"got {type(value).__name__}"
        )
    refused = [_refused_key(str(k), v) for k, v in value.items() if k not in keys]
    records = value.get("records")
    if records is not None and not isinstance(records, list):
        raise BadRequest(f"'records' must be a JSON array, got {type(records).__name__}")
    params = value.get("params")
    if params is not None and not isinstance(params, dict):
        raise BadRequest(f"'params' must be a JSON object of parameter values, got {type(params).__name__}")
    reply_to = value.get("reply_to") if "reply_to" in keys else None
    if reply_to is not None and not isinstance(reply_to, str):
        raise BadRequest(f"'reply_to' must be a channel name (string), got {type(reply_to).__name__}")
    return TriggerPayload(
        records=records, params=params, refused=refused, reply_to=reply_to or None,
        reply_to_given="reply_to" in keys and "reply_to" in value,
    )


# --------------------------------------------------------------------------- logging


def _log_line(level: int, msg: str, fields: dict[str, Any], exc: BaseException | None = None) -> None:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    _log.log(level, msg, exc_info=exc_info, extra={"fields": {k: v for k, v in fields.items() if v is not None}})


def _level(status: int) -> int:
    return logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR


def _summary_fields(inv: Invocation) -> dict[str, Any]:
    s = inv.summary
    fields: dict[str, Any] = {
        "run_id": s.run_id,
        "run_status": s.status,
        "records_in": s.records_in,
        "records_out": s.records_out,
        "dead_letters": s.dead_letters,
    }
    if not s.ok:
        fields.update(error=s.error, error_type=s.error_type, backtrace=s.backtrace)
    return fields


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
