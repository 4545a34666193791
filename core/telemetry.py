"""Traces and metrics of runs: OpenTelemetry spans and counters, and observers.

What a run, a batch, a heartbeat and a claim do is reported here, once, and goes to

* **OpenTelemetry**, when it is on (:func:`otel_enabled`): a span ``adf.run`` per run, ``adf.batch``
  per committed batch (its child) and ``adf.step`` / ``adf.sink`` per step and sink write of a
  batch (the batch's children) — never a span per record — and the instruments ``adf.runs``
  (attributes ``flow``, ``status``), ``adf.records`` (``flow``, ``kind``: ``in``, ``out``,
  ``filtered``, ``dead_letter``), ``adf.claim.latency`` (seconds, ``trigger``) and
  ``adf.heartbeats`` (``outcome``). The engine uses the OpenTelemetry *API* only; the
  application configures the SDK (its tracer and meter providers, exporters), as OpenTelemetry
  asks of libraries — or ``adf run`` does, from the standard ``OTEL_*`` variables
  (:func:`configure_from_env`);
* the :class:`Observer` objects in scope: ``adf serve`` exposes them as Prometheus metrics
  (``active_data_flow.handlers.web.metrics``), the Lambda handlers as Powertools (CloudWatch EMF)
  metrics — the same counters under the same names.

OpenTelemetry is **on** when ``ADF_OTEL`` is true, when a standard exporter variable is set
(``OTEL_TRACES_EXPORTER``, ``OTEL_METRICS_EXPORTER``, ``OTEL_EXPORTER_OTLP_ENDPOINT``), when the
process has imported ``opentelemetry`` already (an application that configured it), or after
:func:`instrument`; it is **off** with ``ADF_OTEL=0`` or ``OTEL_SDK_DISABLED=true``. Off, nothing
of OpenTelemetry is imported and a batch costs one ``with nullcontext()``.

Record counts are taken where they add up: in the coordinator, as each reader reports a
committed batch, so they equal the run's summary whether the readers run inline or in processes.
Spans of readers in processes (``runtime.parallelism`` > 1) are made in the reader process: they
are children of the run's span (the context is inherited with the process), and they are
exported by the provider the process inherited — an exporter that sends them (OTLP, console)
sees them; an in-memory exporter of the parent process does not. Each reader process flushes
its provider before it ends.

Standard library only at module level (this runs inside a Spin component).

Example::

    from opentelemetry.sdk.trace import TracerProvider
    from active_data_flow import telemetry

    telemetry.instrument(tracer_provider=TracerProvider(), meter_provider=my_meter_provider)
    active_data_flow.run(spec)      # spans adf.run > adf.batch > adf.step, counters adf.runs, adf.records
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from active_data_flow.logs import get_logger, log_event

__all__ = [
    "RECORD_KINDS",
    "Observer",
    "RunTelemetry",
    "add_observer",
    "configure_from_env",
    "flush",
    "instrument",
    "observe",
    "observing",
    "otel_enabled",
    "record_claims",
    "record_heartbeat",
    "record_run_not_started",
    "remove_observer",
    "span",
    "tracer",
    "uninstrument",
]

#: The kinds of ``adf.records``: what happened to the records of a run, and the summary field counting each.
RECORD_KINDS: Mapping[str, str] = {
    "in": "records_in",
    "out": "records_out",
    "filtered": "filtered",
    "dead_letter": "dead_letters",
}

_INSTRUMENTATION = "active_data_flow"
_FALSE = ("0", "false", "no", "off")
_EXPORTER_ENV = ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT")
_log = get_logger("telemetry")


class Observer:
    """Receives the counts of runs, batches, claims and heartbeats; every method does nothing
    unless overridden.

    Methods are called in the process and thread that run the flow (the coordinator), as things
    happen: they must be quick, and an exception they raise is logged and ignored — an observer
    never fails a run.
    """

    def records(self, flow: str, kind: str, count: int) -> None:
        """``count`` more records of ``flow`` of ``kind`` (one of :data:`RECORD_KINDS`)."""

    def run_finished(self, flow: str, status: str) -> None:
        """A run of ``flow`` ended with ``status`` (``success``, ``partial``, ``failed``, ``stopped``)."""

    def claimed(self, trigger: str, latency_s: float) -> None:
        """A run was claimed ``latency_s`` seconds after it was due (by a heartbeat, a worker…)."""

    def heartbeat(self, outcome: str) -> None:
        """A heartbeat request was answered with ``outcome`` (``ok``, ``unauthorized``, ``error``…)."""


_scoped: contextvars.ContextVar[tuple[Observer, ...]] = contextvars.ContextVar("adf_observers", default=())
_global: tuple[Observer, ...] = ()
_lock = threading.Lock()


@contextlib.contextmanager
def observe(observer: Observer) -> Iterator[Observer]:
    """``observer`` sees what runs started in this context do (a request of a web app, an invocation)."""
    token = _scoped.set((*_scoped.get(), observer))
    try:
        yield observer
    finally:
        _scoped.reset(token)


def add_observer(observer: Observer) -> None:
    """``observer`` sees what every run of this process does, until :func:`remove_observer`."""
    global _global
    with _lock:
        _global = (*_global, observer)


def remove_observer(observer: Observer) -> None:
    global _global
    with _lock:
        _global = tuple(o for o in _global if o is not observer)


def _observers() -> tuple[Observer, ...]:
    found = _scoped.get() + _global
    otel = _otel()
    return (*found, otel) if otel is not None else found


def _notify(observers: tuple[Observer, ...], method: str, *args: Any) -> None:
    for observer in observers:
        try:
            getattr(observer, method)(*args)
        except Exception as exc:  # an observer never fails a run
            log_event(
                _log,
                "telemetry observer failed",
                logging.WARNING,
                observer=type(observer).__name__,
                error=f"{type(exc).__name__}: {exc}",
            )


# --------------------------------------------------------------------------- OpenTelemetry


class _Otel(Observer):
    """The OpenTelemetry tracer and instruments, fed as an observer."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        from opentelemetry import metrics, trace

        from active_data_flow import __version__

        self.trace = trace
        self.tracer = trace.get_tracer(_INSTRUMENTATION, __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_INSTRUMENTATION, __version__, meter_provider=meter_provider)
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.runs = meter.create_counter(
            "adf.runs", unit="{run}", description="Runs ended, by flow and status"
        )
        self.records_counter = meter.create_counter(
            "adf.records",
            unit="{record}",
            description="Records of runs, by flow and kind (in, out, filtered, dead_letter)",
        )
        self.claim_latency = meter.create_histogram(
            "adf.claim.latency", unit="s", description="Seconds from a run's due time to its claim"
        )
        self.heartbeats = meter.create_counter(
            "adf.heartbeats", unit="{request}", description="Heartbeat requests, by outcome"
        )

    def records(self, flow: str, kind: str, count: int) -> None:
        self.records_counter.add(count, {"flow": flow, "kind": kind})

    def run_finished(self, flow: str, status: str) -> None:
        self.runs.add(1, {"flow": flow, "status": status})

    def claimed(self, trigger: str, latency_s: float) -> None:
        self.claim_latency.record(latency_s, {"trigger": trigger})

    def heartbeat(self, outcome: str) -> None:
        self.heartbeats.add(1, {"outcome": outcome})


_instrumented: _Otel | None = None
_from_api: _Otel | None = None
_warned = False


def _wanted() -> bool:
    flag = os.environ.get("ADF_OTEL", "").strip().lower()
    if flag in _FALSE and flag:
        return False
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(flag) or "opentelemetry" in sys.modules or any(os.environ.get(k) for k in _EXPORTER_ENV)


def _otel() -> _Otel | None:
    """The OpenTelemetry side when it is on, else None (and nothing imported)."""
    global _from_api, _warned
    if _instrumented is not None:
        return _instrumented
    if not _wanted():
        return None
    if _from_api is None:
        try:
            _from_api = _Otel()
        except ImportError:
            if not _warned:
                _warned = True
                _log.warning(
                    "OpenTelemetry is asked for (ADF_OTEL / OTEL_* variables) but not installed; "
                    "install active-data-flow[otel]"
                )
            return None
    return _from_api


def otel_enabled() -> bool:
    """Whether runs make OpenTelemetry spans and counters (see the module's doc)."""
    return _otel() is not None


def instrument(*, tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Turn OpenTelemetry on for this process with these providers (default: the global ones),
    whatever the environment says — the usual ``instrument(tracer_provider=…)`` of an
    OpenTelemetry instrumentation. Raises ImportError naming the extra when it is not installed."""
    global _instrumented
    try:
        _instrumented = _Otel(tracer_provider, meter_provider)
    except ImportError as exc:
        raise ImportError("OpenTelemetry is not installed: install active-data-flow[otel]") from exc


def uninstrument() -> None:
    """Undo :func:`instrument`: the environment decides again."""
    global _instrumented
    _instrumented = None


def tracer() -> Any:
    """The OpenTelemetry tracer when it is on, else None; for :func:`span`."""
    otel = _otel()
    return otel.tracer if otel is not None else None


_NULL = contextlib.nullcontext()


def span(tracer: Any, name: str, attributes: Mapping[str, Any]) -> contextlib.AbstractContextManager[Any]:
    """A current span ``name`` of ``tracer`` (:func:`tracer`), or a context that does nothing
    when ``tracer`` is None."""
    if tracer is None:
        return _NULL
    result: contextlib.AbstractContextManager[Any] = tracer.start_as_current_span(
        name, attributes=dict(attributes)
    )
    return result


def flush(timeout_ms: int = 5_000) -> None:
    """Export what the providers hold (a reader process calls it before it ends: a process that
    ends with ``os._exit`` runs no exit handler of the SDK)."""
    otel = _otel()
    if otel is None:
        return
    from opentelemetry import metrics, trace

    for provider in (
        otel.tracer_provider or trace.get_tracer_provider(),
        otel.meter_provider or metrics.get_meter_provider(),
    ):
        force = getattr(provider, "force_flush", None)
        if force is not None:
            with contextlib.suppress(Exception):
                force(timeout_ms)


def configure_from_env() -> bool:
    """Configure the OpenTelemetry SDK from the standard variables when nothing configured it:
    ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` = ``otlp`` (needs
    ``opentelemetry-exporter-otlp``), ``console`` or ``none``; ``OTEL_SERVICE_NAME`` names the
    service (default ``adf``). What ``adf run`` calls; an application that sets up OpenTelemetry
    itself (or runs under ``opentelemetry-instrument``) keeps its own set-up. True when it configured
    something."""
    if not _wanted() or not any(os.environ.get(k) for k in _EXPORTER_ENV):
        return False
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.resources import Resource
    except ImportError:
        _otel()  # warns once
        return False
    done = False
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "adf"})
    traces = _exporter_name("OTEL_TRACES_EXPORTER")
    if traces != "none" and type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(BatchSpanProcessor(_exporter("traces", traces)))
        trace.set_tracer_provider(tracer_provider)
        done = True
    measures = _exporter_name("OTEL_METRICS_EXPORTER")
    if measures != "none" and type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        reader = PeriodicExportingMetricReader(_exporter("metrics", measures))
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
        done = True
    return done


def _exporter_name(variable: str) -> str:
    name = (os.environ.get(variable) or "otlp").strip().lower()
    if name not in ("otlp", "console", "none"):
        from active_data_flow.errors import AdfError

        raise AdfError(
            f"{variable}={name!r} is not supported by adf run; use otlp, console or none "
            "(or configure OpenTelemetry yourself, e.g. with opentelemetry-instrument)"
        )
    return name


#: per signal: the console exporter, the OTLP exporter (module, class) and the variable naming them
_EXPORTERS = {
    "traces": ("opentelemetry.sdk.trace.export:ConsoleSpanExporter",
               "opentelemetry.exporter.otlp.proto.http.trace_exporter:OTLPSpanExporter", "OTEL_TRACES_EXPORTER"),
    "metrics": ("opentelemetry.sdk.metrics.export:ConsoleMetricExporter",
                "opentelemetry.exporter.otlp.proto.http.metric_exporter:OTLPMetricExporter", "OTEL_METRICS_EXPORTER"),
}


def _exporter(signal: str, name: str) -> Any:
    """The ``console`` or ``otlp`` exporter of ``signal`` (``traces`` or ``metrics``)."""
    import importlib

    console, otlp, variable = _EXPORTERS[signal]
    module, _, cls = (console if name == "console" else otlp).partition(":")
    try:
        found = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise ImportError(
            "the OTLP exporter is not installed: pip install opentelemetry-exporter-otlp-proto-http "
            f"(or set {variable}=console)"
        ) from exc
    return found(out=sys.stderr) if name == "console" else found()


# --------------------------------------------------------------------------- events


class RunTelemetry:
    """The telemetry of one run: its span and the deltas of its counts.

    :meth:`begin` opens the ``adf.run`` span and makes it current (the readers' batch spans are
    its children); :meth:`progress` reports the counts added since the last call (the coordinator
    calls it with its totals after each committed batch); :meth:`end` reports the rest from the
    summary, counts the run by status and closes the span. The observers are the ones in scope
    when the run was created.
    """

    def __init__(self, flow: str) -> None:
        self.flow = flow
        self.observers = _observers()
        otel = _otel()
        self._otel = otel
        self._span: Any = None
        self._token: Any = None
        self._sent = dict.fromkeys(RECORD_KINDS, 0)

    def begin(self) -> None:
        if self._otel is None:
            return
        self._span = self._otel.tracer.start_span("adf.run", attributes={"adf.flow": self.flow})
        from opentelemetry import context

        self._token = context.attach(self._otel.trace.set_span_in_context(self._span))

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._span is not None:
            self._span.set_attributes(dict(attributes))

    def progress(self, counts: Any) -> None:
        """Report the counts ``counts`` (a BatchCounts, a RunSummary: anything with the fields
        of :data:`RECORD_KINDS`) has beyond what was reported."""
        if not self.observers:
            return
        for kind, field in RECORD_KINDS.items():
            delta = int(getattr(counts, field, 0) or 0) - self._sent[kind]
            if delta > 0:
                self._sent[kind] += delta
                _notify(self.observers, "records", self.flow, kind, delta)

    def end(self, summary: Any = None, error: BaseException | None = None) -> None:
        """The run ended with ``summary`` (counted by its status), or without one because of
        ``error`` (a refusal, not a run: not counted)."""
        try:
            if summary is not None:
                self.progress(summary)
                _notify(self.observers, "run_finished", self.flow, str(summary.status))
            if self._span is not None:
                self._close_span(summary, error)
        finally:
            if self._token is not None:
                from opentelemetry import context

                context.detach(self._token)
                self._token = None

    def _close_span(self, summary: Any, error: BaseException | None) -> None:
        from opentelemetry.trace import Status, StatusCode

        span_ = self._span
        self._span = None
        if summary is not None:
            span_.set_attributes(
                {
                    "adf.run_id": summary.run_id,
                    "adf.status": summary.status,
                    "adf.records_in": summary.records_in,
                    "adf.records_out": summary.records_out,
                    "adf.filtered": summary.filtered,
                    "adf.dead_letters": summary.dead_letters,
                    "adf.fanned_out": summary.fanned_out,
                    "adf.in_flight": summary.in_flight,
                    "adf.resumed": bool(summary.resumed),
                    "adf.parallelism": int(summary.parallelism),
                }
            )
            if summary.status == "failed":
                span_.set_status(Status(StatusCode.ERROR, f"{summary.error_type}: {summary.error}"))
        elif error is not None:
            span_.record_exception(error)
            span_.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span_.end()


def record_run_not_started(flow: str) -> None:
    """A scheduled run failed before the engine could start it (its spec no longer loads):
    counted as a ``failed`` run."""
    _notify(_observers(), "run_finished", flow, "failed")


def record_claims(trigger: str, latencies_s: list[float]) -> None:
    """Runs were claimed by ``trigger``, each ``latency`` seconds after it was due (never below 0)."""
    if not latencies_s:
        return
    observers = _observers()
    for latency in latencies_s:
        _notify(observers, "claimed", trigger, max(0.0, float(latency)))


def record_heartbeat(outcome: str) -> None:
    """A heartbeat request was answered with ``outcome``."""
    _notify(_observers(), "heartbeat", outcome)


def observing() -> bool:
    """Whether anything listens (an observer in scope, or OpenTelemetry): a caller may skip the
    work of measuring (a query for due times) when nothing does."""
    return bool(_observers())
