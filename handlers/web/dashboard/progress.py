"""A run's progress as the run page shows it, and as ``GET /ui/runs/{id}/progress`` returns
it to the page's script while the run goes on (``dashboard.js`` polls it every 1.5 s).

The counts are the ones in the run's row: the counts so far while the run is in progress
(the scheduler writes them every second, :mod:`active_data_flow.handlers.schedule.progress`),
the final ones once it ended. Standard library only.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from active_data_flow.handlers.schedule.store import ACTIVE_RUN_STATUSES, RunRecord
from active_data_flow.handlers.web.dashboard.format import count, duration

__all__ = ["run_progress"]


def _elapsed(run: RunRecord, now: dt.datetime) -> float | None:
    if run.duration is not None:
        return max(run.duration, 0.0)
    if run.started_at is not None and run.status in ACTIVE_RUN_STATUSES:
        return max((now - run.started_at).total_seconds(), 0.0)
    return None


def run_progress(run: RunRecord, now: dt.datetime | None = None) -> dict[str, Any]:
    """The run's status, counts, time so far and rate, with the text the page shows of each."""
    elapsed = _elapsed(run, now or dt.datetime.now(dt.UTC))
    rate = run.records_in / elapsed if run.records_in is not None and elapsed else None
    active = run.status in ACTIVE_RUN_STATUSES
    if run.status == "pending":
        stage = "waiting for a worker"
    elif active and run.records_in is None:
        stage = "started: no batch committed yet"
    elif active:
        stage = "running"
    else:
        stage = "finished"
    return {
        "id": run.id,
        "status": run.status,
        "active": active,
        "records_in": run.records_in,
        "records_out": run.records_out,
        "dead_letters": run.dead_letters,
        "elapsed_s": elapsed,
        "records_per_second": rate,
        "text": {
            "status": run.status.replace("_", " "),
            "stage": stage,
            "records_in": count(run.records_in),
            "records_out": count(run.records_out),
            "dead_letters": count(run.dead_letters),
            "elapsed": duration(elapsed),
            "rate": "—" if rate is None else f"{rate:,.1f} records/s",
        },
    }
