"""Prometheus metrics of the heartbeat web app: ``GET /metrics``.

Each app has its own :class:`PrometheusMetrics` (its own ``CollectorRegistry``, never the
process-wide default): two apps in one process count apart. It is an
:class:`active_data_flow.telemetry.Observer` in scope for every request the app handles
(:class:`ObserveRequests`), so it counts what those requests do — the runs a synchronous
heartbeat, "run now" or a flow-run route executes, their records, the heartbeat's claims and
answers:

=================================  ===========================================================
``adf_runs_total``                 runs ended, labels ``flow``, ``status`` (``success``,
                                   ``partial``, ``failed``, ``stopped``)
``adf_records_total``              records of those runs, labels ``flow``, ``kind`` (``in``,
                                   ``out``, ``filtered``, ``dead_letter``); as batches commit
``adf_claim_latency_seconds``      histogram: seconds from a run's due time to its claim, label
                                   ``trigger`` (``heartbeat``; ``pending``: a retry or queued run)
``adf_heartbeats_total``           heartbeat requests by ``outcome`` (``ok``, ``unauthorized``,
                                   ``forbidden``, ``refused``, ``bad_request``, ``error``…)
=================================  ===========================================================

These are the OpenTelemetry instruments ``adf.runs``, ``adf.records``, ``adf.claim.latency`` and
``adf.heartbeats`` under Prometheus' naming. Runs that ``adf worker`` processes execute are counted
in those processes (OpenTelemetry), not here.

``/metrics`` follows the management API's access rule
(:func:`active_data_flow.handlers.security.authorize_api`): with ``ADF_API_TOKEN`` set, a scraper
sends ``Authorization: Bearer <token>`` (Prometheus: ``authorization: {credentials_file: …}``);
without it only local clients may scrape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from active_data_flow import telemetry

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["CLAIM_LATENCY_BUCKETS", "ObserveRequests", "PrometheusMetrics", "mount_metrics"]

#: seconds: a heartbeat every minute claims a flow up to a minute after it was due; a busy
#: schedule or a retry waiting for a worker takes longer
CLAIM_LATENCY_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

_Scope = MutableMapping[str, Any]
_App = Callable[[_Scope, Any, Any], Awaitable[None]]


class PrometheusMetrics(telemetry.Observer):
    """The app's counters in their own registry; :meth:`exposition` is the ``/metrics`` body."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.runs = Counter(
            "adf_runs", "Runs ended, by flow and status", ["flow", "status"], registry=self.registry
        )
        self.records_total = Counter(
            "adf_records",
            "Records of runs, by flow and kind (in, out, filtered, dead_letter)",
            ["flow", "kind"],
            registry=self.registry,
        )
        self.claim_latency = Histogram(
            "adf_claim_latency_seconds",
            "Seconds from a run's due time to its claim",
            ["trigger"],
            buckets=CLAIM_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.heartbeats = Counter(
            "adf_heartbeats", "Heartbeat requests, by outcome", ["outcome"], registry=self.registry
        )

    def records(self, flow: str, kind: str, count: int) -> None:
        self.records_total.labels(flow=flow, kind=kind).inc(count)

    def run_finished(self, flow: str, status: str) -> None:
        self.runs.labels(flow=flow, status=status).inc()

    def claimed(self, trigger: str, latency_s: float) -> None:
        self.claim_latency.labels(trigger=trigger).observe(latency_s)

    def heartbeat(self, outcome: str) -> None:
        self.heartbeats.labels(outcome=outcome).inc()

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class ObserveRequests:
    """ASGI middleware: ``observer`` sees what each HTTP request does (its runs, in the threads
    the request's work runs in, which inherit the request's context)."""

    def __init__(self, app: _App, observer: telemetry.Observer) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: _Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with telemetry.observe(self.observer):
            await self.app(scope, receive, send)


def mount_metrics(app: FastAPI) -> PrometheusMetrics | None:
    """Add ``GET /metrics`` and the observing middleware to ``app``; the metrics are
    ``app.state.metrics``. Without ``prometheus_client`` (the ``web`` extra), ``/metrics``
    answers 501 saying what to install, and None is returned."""
    from fastapi.responses import JSONResponse, Response

    try:
        metrics: PrometheusMetrics | None = PrometheusMetrics()
    except ImportError:
        metrics = None
    app.state.metrics = metrics

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        if metrics is None:
            return JSONResponse(
                {"error": "Prometheus metrics need prometheus_client: install active-data-flow[web]"},
                status_code=501,
            )
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    if metrics is not None:
        app.add_middleware(ObserveRequests, observer=metrics)
    return metrics
