"""Cron ticks: :func:`handle_cron` runs the heartbeat logic (:func:`active_data_flow.handlers.scheduler.tick`,
sync mode) with the host's configuration layers, store and ``persist``.

Standard library only at module level (this runs inside a Spin component).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from active_data_flow.handlers.invoke.envelope import Envelope
from active_data_flow.handlers.invoke.host import FlowHost
from active_data_flow.handlers.invoke.run import execute_flow, prepare

if TYPE_CHECKING:
    from active_data_flow.handlers.schedule.store import FlowRecord, RunRecord, ScheduleStore
    from active_data_flow.handlers.settings import Settings

__all__ = ["handle_cron", "host_executor"]


def host_executor(host: FlowHost) -> Callable[..., RunRecord]:
    """A :data:`active_data_flow.handlers.scheduler.Executor` that runs claimed runs with the host's layers,
    store and ``persist`` (the flow's spec is the one in the schedule store): the heartbeat's
    :func:`active_data_flow.handlers.scheduler.execute_run` — its start with the lease, its engine run id,
    the record of its outcome — with this host's way of running a flow. It starts no
    threads, so it runs inside a component."""
    from active_data_flow.handlers import scheduler

    def run_on_host(flow: FlowRecord, run_id: str, settings: Settings) -> Any:
        prepared = prepare(host, flow.name, scheduler.scheduled_spec(flow), None, None, None, run_id)
        return execute_flow(host, prepared).summary

    def execute(store: ScheduleStore, run: RunRecord, settings: Settings, *, worker_id: str) -> RunRecord:
        return scheduler.execute_run(store, run, settings, worker_id=worker_id, runner=run_on_host, threads=False)

    return execute


def _cron_time(timestamp: int | float | None) -> dt.datetime | None:
    if timestamp is None:
        return None
    seconds = float(timestamp)
    if seconds > 1e11:  # milliseconds
        seconds /= 1000.0
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def handle_cron(
    host: FlowHost,
    schedule_store: ScheduleStore,
    settings: Settings,
    *,
    timestamp: int | float | None = None,
) -> dict[str, Any]:
    """One cron tick: :func:`active_data_flow.handlers.scheduler.tick` in sync mode over ``schedule_store``,
    claimed runs executed by :func:`host_executor`. ``timestamp`` (the cron event's, Unix
    seconds or milliseconds; None: now) is the time the schedule is judged at.

    Returns the heartbeat result (``flows_due``, ``flows_triggered``, ``run_ids``,
    ``timestamp``) with ``status: "ok"``, ``trigger``, ``request_id``, ``runs`` (id, flow,
    ``run_id`` — the engine's, as in its logs and dead letters —, status, counts, error), ``expired_run_ids``, ``pending_run_ids``, ``duration_ms``; or
    ``status: "error"`` with ``error`` and ``error_id``. Never raises into the host.
    """
    from active_data_flow.handlers import scheduler

    envelope = Envelope("cron", host)
    out: dict[str, Any] = {"trigger": "cron", "request_id": envelope.request_id}
    error: BaseException | None = None
    try:
        result = scheduler.tick(
            schedule_store, settings, trigger="cron", mode="sync", now=_cron_time(timestamp),
            executor=host_executor(host),
        )
        out.update(result.to_dict())
        out.update(
            status="ok",
            runs=[
                {"id": r.id, "flow": r.flow_name, "run_id": r.engine_run_id, "status": r.status, "records_in": r.records_in,
                 "records_out": r.records_out, "dead_letters": r.dead_letters, "error": r.error_message}
                for r in result.runs
            ],
            expired_run_ids=result.expired_run_ids,
            pending_run_ids=result.pending_run_ids,
        )
    except Exception as exc:
        error = exc
        out.update(status="error", **envelope.error(exc, keys=()))
    out["duration_ms"] = envelope.elapsed_ms()
    fields = {k: v for k, v in out.items() if k != "runs"}
    envelope.log(logging.ERROR if error is not None else logging.INFO, f"cron tick {out['status']}", fields, error)
    return out
