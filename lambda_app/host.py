"""The Lambda flow host and the Powertools objects every handler shares.

:class:`LambdaHost` is a :class:`active_data_flow.handlers.invoke.LocalHost` configured from the function's
environment (set by the SAM template's parameters):

=========================  ==========================================================================
``ADF_FLOWS_DIR``          directory of flow specs bundled in the deployment package; default
                           ``flows/`` next to ``lambda_app/`` when it exists, else ``/var/task/flows``
``ADF_STATE_URL``          the key-value / state store (``active_data_flow.state.open_state_store``):
                           ``memory://`` (default), ``redis://…``, ``sqlite:////tmp/adf/state.db``
``ADF_STATE_DIR``          a *writable* directory (``/tmp/adf`` on Lambda): runs persist checkpoints,
                           run records and dead-letter files there; unset or not writable: no files
``ADF_ALLOW_PAYLOAD_SPEC`` ignored (a warning): a request never carries a flow spec (:mod:`active_data_flow.handlers.invoke.params`)
``ADF_VAR_<NAME>``         the **manifest** configuration layer (SAM parameters): variable
                           ``adf_<name>`` under :mod:`active_data_flow.handlers.confignames`' rules —
                           ``ADF_VAR_SINK_TABLE`` → ``sink.table``, ``ADF_VAR_JSON`` → ``adf_json``,
                           ``ADF_VAR_FLOW_ORDERS_SINK_TABLE`` → ``sink.table`` of flow ``orders``
``ADF__SINK__TABLE``       the **env** layer, as everywhere (:mod:`active_data_flow.config`)
=========================  ==========================================================================

A host is built per invocation (cheap: the flow directory is re-read only when it changes,
kept in a module cache keyed by the environment that shapes it), so tests may change the
environment between calls.

The Powertools objects: ``logger``, ``metrics`` and ``tracer`` use ``POWERTOOLS_SERVICE_NAME``
(``adf`` when unset) and ``POWERTOOLS_METRICS_NAMESPACE`` (``ActiveDataFlow``). The engine's
own log lines (``active_data_flow.logs``: the ``adf.*`` loggers) go through the same Powertools handler,
as top-level fields beside the invocation's keys: their ``fields`` flattened, the ``run_id``
of the run they belong to, and ``location`` naming the engine function that logged
(``active_data_flow.engine.run_flow:1782``), not the logging helper it called. Every line, the handlers' own
included, is redacted as core redacts (:mod:`active_data_flow.redact`: secret-named keys, passwords in
URLs, secret query parameters) right before it is written. Every invocation's metrics include
Powertools' ``ColdStart`` metric on a cold start, and the engine's counters of the runs it made
(:class:`RunMetrics`: ``adf.runs``, ``adf.records``… — the names ``adf serve``'s ``/metrics`` and
OpenTelemetry use).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from active_data_flow import logs as core_logs
from active_data_flow import telemetry
from active_data_flow.handlers.invoke.host import LocalHost
from active_data_flow.handlers.invoke.run import Invocation
from active_data_flow.lambda_app.tracing import make_tracer
from active_data_flow.redact import redact, redact_text
from active_data_flow.state import open_state_store

__all__ = [
    "VARIABLE_ENV_PREFIX", "EngineLogHandler", "LambdaHost", "RunMetrics", "count_http", "count_run", "flows_dir",
    "get_host",
    "logger", "metrics", "tracer",
]

#: the service name of logs, metrics and traces: the function's ``POWERTOOLS_SERVICE_NAME``
SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "adf"
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "ActiveDataFlow"
#: environment variables carrying manifest-layer variables: ``ADF_VAR_SINK_TABLE`` → ``adf_sink_table``
VARIABLE_ENV_PREFIX = "ADF_VAR_"
#: the root of the engine's loggers (:func:`active_data_flow.logs.get_logger` names them ``adf.<name>``)
ENGINE_LOGGER = "adf"
#: where a line was logged: the module's dotted name, the function and the line
LOCATION = "%(module)s.%(funcName)s:%(lineno)d"


def _redacted_json(log: dict[str, Any]) -> str:
    """Powertools' serializer: the whole line through :func:`active_data_flow.redact.redact` first."""
    return json.dumps(redact(log), default=lambda o: redact_text(str(o)), separators=(",", ":"))


class RunMetrics(telemetry.Observer):
    """The engine's counters of one invocation (:mod:`active_data_flow.telemetry`), written as
    CloudWatch metrics when it ends — the names and dimensions of the OpenTelemetry instruments
    and of ``adf serve``'s ``/metrics``: ``adf.runs`` (``flow``, ``status``), ``adf.records``
    (``flow``, ``kind``: ``in``, ``out``, ``filtered``, ``dead_letter``), ``adf.claim.latency``
    (seconds, ``trigger``) and ``adf.heartbeats`` (``outcome``), each with ``service``. One EMF
    document per metric and dimension set (``single_metric``): dimensions differ between them."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.latencies: dict[str, list[float]] = {}

    def _add(self, name: str, value: float, **dimensions: str) -> None:
        key = (name, tuple(sorted(dimensions.items())))
        self.counts[key] = self.counts.get(key, 0) + value

    def records(self, flow: str, kind: str, count: int) -> None:
        self._add("adf.records", count, flow=flow, kind=kind)

    def run_finished(self, flow: str, status: str) -> None:
        self._add("adf.runs", 1, flow=flow, status=status)

    def claimed(self, trigger: str, latency_s: float) -> None:
        self.latencies.setdefault(trigger, []).append(latency_s)

    def heartbeat(self, outcome: str) -> None:
        self._add("adf.heartbeats", 1, outcome=outcome)

    def emit(self) -> None:
        from aws_lambda_powertools.metrics import single_metric

        for (name, dimensions), value in sorted(self.counts.items()):
            with single_metric(name=name, unit=MetricUnit.Count, value=value, namespace=NAMESPACE,
                               default_dimensions={"service": SERVICE, **dict(dimensions)}):
                pass
        for trigger, values in sorted(self.latencies.items()):
            for value in values:
                with single_metric(name="adf.claim.latency", unit=MetricUnit.Seconds, value=value,
                                   namespace=NAMESPACE, default_dimensions={"service": SERVICE, "trigger": trigger}):
                    pass
        self.counts.clear()
        self.latencies.clear()


def _observed(handler: Callable[..., Any]) -> Callable[..., Any]:
    """``handler`` with the engine's counters of its invocation written when it returns (or raises)."""

    @functools.wraps(handler)
    def observed(event: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
        run_metrics = RunMetrics()
        try:
            with telemetry.observe(run_metrics):
                return handler(event, context, *args, **kwargs)
        finally:
            run_metrics.emit()

    return observed


class _Metrics(Metrics):
    """Powertools ``Metrics`` whose ``log_metrics`` also records the ``ColdStart`` metric and
    writes the engine's counters of the invocation (:class:`RunMetrics`)."""

    def log_metrics(self, lambda_handler: Any = None, capture_cold_start_metric: bool = True,
                    raise_on_empty_metrics: bool = False, default_dimensions: dict[str, str] | None = None,
                    **kwargs: Any) -> Callable[..., Any]:
        if lambda_handler is None:
            return functools.partial(self.log_metrics, capture_cold_start_metric=capture_cold_start_metric,
                                     raise_on_empty_metrics=raise_on_empty_metrics,
                                     default_dimensions=default_dimensions, **kwargs)
        return super().log_metrics(_observed(lambda_handler), capture_cold_start_metric, raise_on_empty_metrics,
                                   default_dimensions, **kwargs)


logger = Logger(service=SERVICE, location=LOCATION, json_serializer=_redacted_json)
metrics = _Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = make_tracer(SERVICE)


# --------------------------------------------------------------------------- engine logs → Powertools

# attributes every LogRecord has, and the keys Powertools writes itself: an engine field named
# like one of them is written as ``field_<name>`` rather than lost or overwriting it
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message", "asctime", "location", "timestamp", "level", "service", "sampling_rate", "cold_start",
    "function_name", "function_memory_size", "function_arn", "function_request_id", "correlation_id",
    "xray_trace_id", "exception", "exception_name", "exception_notes", "stack_trace",
}
_FORWARDED = "_adf_forwarded"
#: the engine's logging helpers, as (module, function): a line logged through one of them is
#: located at the helper's caller, the code the line is about
LOG_HELPERS = frozenset({("active_data_flow.logs", "log_event"), ("active_data_flow.handlers.invoke.envelope", "log_line"),
                         ("active_data_flow.handlers.invoke.envelope", "log")})


@functools.lru_cache(maxsize=1024)
def _dotted(pathname: str) -> str | None:
    """``active_data_flow.engine`` for ``/var/task/active_data_flow/engine/__init__.py``: the deepest ``sys.path`` entry that
    holds the file gives the module's name (None when none does)."""
    path = os.path.abspath(pathname)
    best = ""
    for entry in sys.path:
        root = os.path.abspath(entry or ".")
        if path.startswith(root + os.sep) and len(root) > len(best):
            best = root
    if not best:
        return None
    name = os.path.splitext(path[len(best) + 1 :])[0].replace(os.sep, ".")
    return name.removesuffix(".__init__") or None


def _helper(frame: FrameType) -> bool:
    return (frame.f_globals.get("__name__"), frame.f_code.co_name) in LOG_HELPERS


def _locate(record: logging.LogRecord) -> None:
    """Point a line logged through a :data:`LOG_HELPERS` function at the helper's caller. A
    logging handler runs inside the logging call, so the frames are still there: find the
    one that logged, then step out of the helpers."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_filename == record.pathname
                                     and frame.f_lineno == record.lineno and frame.f_code.co_name == record.funcName):
        frame = frame.f_back
    if frame is None or not _helper(frame):
        return
    while frame.f_back is not None and _helper(frame):
        frame = frame.f_back
    record.pathname = frame.f_code.co_filename
    record.filename = os.path.basename(record.pathname)
    record.lineno = frame.f_lineno
    record.funcName = frame.f_code.co_name
    record.module = str(frame.f_globals.get("__name__") or record.module)


class EngineLogHandler(logging.Handler):
    """Hands the engine's records (``adf.*``) to the Powertools handler as Powertools lines.

    Each record is copied (other handlers of the same record see it unchanged) and shaped the
    way the engine's own JSON lines are: the ``fields`` become top-level keys, the current
    ``run_id`` (:data:`active_data_flow.logs.run_id_var`) is added, and a line logged through
    a logging helper (:data:`LOG_HELPERS`) is located at the helper's caller."""

    def __init__(self, target: logging.Handler) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(ENGINE_LOGGER + "."):
            return  # the Powertools logger's own line, when the service is called "adf"
        try:
            line = logging.makeLogRecord(dict(record.__dict__))
            fields = line.__dict__.pop("fields", None)
            if isinstance(fields, Mapping):
                for key, value in fields.items():
                    name = str(key)
                    setattr(line, f"field_{name}" if name in _RECORD_ATTRS else name, value)
            if getattr(line, "run_id", None) is None:
                run_id = core_logs.run_id_var.get()
                if run_id:
                    line.run_id = run_id
            _locate(line)
            setattr(line, _FORWARDED, True)
            self.target.handle(line)
        except Exception:
            self.handleError(record)


class _PowertoolsLines(logging.Filter):
    """On the Powertools handler: takes the engine's records only as :class:`EngineLogHandler`
    shaped them (when the service is ``adf`` they also reach it unshaped, by propagation), and
    gives every record its dotted module name for :data:`LOCATION`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.__dict__.pop(_FORWARDED, False) and record.name.startswith(ENGINE_LOGGER + "."):
            return False
        if "." not in record.module:
            record.module = _dotted(record.pathname) or record.module
        return True


def _route_engine_logs() -> None:
    target = logger.registered_handler
    if not any(isinstance(f, _PowertoolsLines) for f in target.filters):
        target.addFilter(_PowertoolsLines())
    engine = logging.getLogger(ENGINE_LOGGER)
    if not any(isinstance(h, EngineLogHandler) for h in engine.handlers):
        engine.addHandler(EngineLogHandler(target))
    if engine.name != logger.name:
        engine.setLevel(logger.log_level)
        engine.propagate = False  # the runtime's root handler would print each line again, as text


_route_engine_logs()

_TRUE = {"1", "true", "yes", "on"}


def flows_dir(environ: Mapping[str, str] | None = None) -> str:
    """``ADF_FLOWS_DIR``, else ``flows/`` beside ``lambda_app/`` if it exists, else ``/var/task/flows``."""
    env = os.environ if environ is None else environ
    given = env.get("ADF_FLOWS_DIR")
    if given:
        return os.path.abspath(given)
    bundled = Path(__file__).resolve().parent.parent / "flows"
    return str(bundled) if bundled.is_dir() else "/var/task/flows"


def manifest_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """``{"adf_sink_table": "t"}`` from ``ADF_VAR_SINK_TABLE=t`` (names lower-cased)."""
    n = len(VARIABLE_ENV_PREFIX)
    return {
        "adf_" + k[n:].lower(): v for k, v in environ.items() if k.upper().startswith(VARIABLE_ENV_PREFIX) and k[n:]
    }


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK)


class LambdaHost(LocalHost):
    """Flows from the bundled directory, the store named by
    ``ADF_STATE_URL``, the ``ADF_VAR_*`` variables, ``persist`` only with a writable
    ``ADF_STATE_DIR`` (see the module doc)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        state_dir = env.get("ADF_STATE_DIR") or ""
        persist = bool(state_dir) and _writable(state_dir)
        super().__init__(
            flows_dir(env),
            store=open_state_store(env.get("ADF_STATE_URL") or "memory://", state_dir=state_dir or None),
            state_dir=state_dir if persist else "/tmp/adf",
            variables=manifest_variables(env),
            environ=None if environ is None else env,
            persist=persist,
            allow_payload_spec=(env.get("ADF_ALLOW_PAYLOAD_SPEC") or "").strip().lower() in _TRUE,
        )


_KEYS = ("ADF_FLOWS_DIR", "ADF_STATE_URL", "ADF_STATE_DIR", "ADF_ALLOW_PAYLOAD_SPEC")
_hosts: dict[Any, LambdaHost] = {}
_lock = threading.Lock()


def get_host() -> LambdaHost:
    """The host for the current environment, kept across warm invocations."""
    key = (
        tuple(os.environ.get(k) for k in _KEYS),
        tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(VARIABLE_ENV_PREFIX))),
    )
    with _lock:
        host = _hosts.get(key)
        if host is None:
            host = _hosts[key] = LambdaHost()
        return host


def count_run(invocation: Invocation | None, *, ok: bool) -> None:
    """Metrics of one flow run: ``FlowRuns`` / ``FlowFailures``, ``RecordsIn``, ``RecordsOut``, ``DeadLetters``."""
    metrics.add_metric(name="FlowRuns" if ok else "FlowFailures", unit=MetricUnit.Count, value=1)
    if invocation is not None:
        s = invocation.summary
        metrics.add_metric(name="RecordsIn", unit=MetricUnit.Count, value=s.records_in)
        metrics.add_metric(name="RecordsOut", unit=MetricUnit.Count, value=s.records_out)
        metrics.add_metric(name="DeadLetters", unit=MetricUnit.Count, value=s.dead_letters)


def count_http(status: int, *, run: bool) -> None:
    """Metrics of one HTTP answer: ``HttpRequests``; ``HttpClientErrors`` for a 4xx (the request
    was refused: a malformed body, an unknown flow — the client's mistake, not a failed flow) or
    ``HttpErrors`` for a 5xx; and, when the request ran a flow (``run``), ``FlowRuns`` for an
    answer below 400 or ``FlowFailures`` for a 5xx."""
    metrics.add_metric(name="HttpRequests", unit=MetricUnit.Count, value=1)
    if 400 <= status < 500:
        metrics.add_metric(name="HttpClientErrors", unit=MetricUnit.Count, value=1)
    elif status >= 500:
        metrics.add_metric(name="HttpErrors", unit=MetricUnit.Count, value=1)
    if run and status < 400:
        metrics.add_metric(name="FlowRuns", unit=MetricUnit.Count, value=1)
    elif run and status >= 500:
        metrics.add_metric(name="FlowFailures", unit=MetricUnit.Count, value=1)
