"""Helpers of the schedule tests: throwaway PostgreSQL databases, flow configurations, and
the entry points of heartbeat / worker processes (importable by name in spawned children)."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_BASE = "postgresql://postgres@127.0.0.1:5432"


@contextlib.contextmanager
def pg_database(prefix: str = "adf_test") -> Iterator[str]:
    """A fresh PostgreSQL database (its URL), dropped afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_BASE}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def file_flow(out: Path, n: int = 3, **runtime: Any) -> dict[str, Any]:
    """A small flow: ``n`` memory records doubled into a JSON Lines file."""
    return {
        "source": {"type": "memory", "records": [{"n": i} for i in range(n)]},
        "steps": [{"type": "python", "function": "flowlib.steps:double"}],
        "sink": {"type": "file", "path": str(out), "format": "jsonl"},
        "runtime": {"batch_size": 100, **runtime},
    }


def slow_flow(out: Path, n: int, delay: float, batch_size: int) -> dict[str, Any]:
    """``n`` records through the ``slow`` step (``delay`` seconds each), committed in batches."""
    return {
        "source": {"type": "memory", "records": [{"n": i} for i in range(n)]},
        "steps": [{"type": "python", "function": "flowlib.steps:slow", "options": {"delay": delay}}],
        "sink": {"type": "file", "path": str(out), "format": "jsonl"},
        "runtime": {"batch_size": batch_size},
    }


def failing_flow(out: Path) -> dict[str, Any]:
    """Every record raises in a step; with max_dead_letters 0 the run fails."""
    return {
        "source": {"type": "memory", "records": [{"n": 7}, {"n": 14}]},
        "steps": [{"type": "python", "function": "flowlib.steps:explode_on_sevens"}],
        "sink": {"type": "file", "path": str(out), "format": "jsonl"},
        "runtime": {"max_dead_letters": 0},
    }


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- process entry points


def _settings(settings: dict[str, Any]) -> Any:
    from active_data_flow.handlers.settings import Settings

    return Settings(**settings)


def worker_main(url: str, settings: dict[str, Any], stop: Any, worker_id: str | None = None, poll: float = 0.05) -> None:
    """A worker process: drains pending runs until ``stop`` is set."""
    from active_data_flow.handlers.schedule.sql import SqlScheduleStore
    from active_data_flow.handlers.scheduler import Worker

    store = SqlScheduleStore(url)
    try:
        Worker(store, _settings(settings), worker_id=worker_id, poll_seconds=poll).run_forever(stop)
    finally:
        store.close()


def tick_main(url: str, settings: dict[str, Any], start: Any, results: Any, mode: str, max_ticks: int) -> None:
    """A heartbeat client process: waits at the ``start`` barrier with its store open, then
    ticks until nothing is due (or ``max_ticks``), reporting each tick's (flows_due, run_ids)
    on ``results``."""
    from active_data_flow.handlers.schedule.sql import SqlScheduleStore
    from active_data_flow.handlers.scheduler import tick

    store = SqlScheduleStore(url)
    try:
        start.wait()
        for _ in range(max_ticks):
            result = tick(store, _settings(settings), mode=mode)
            results.put((result.flows_due, result.run_ids))
            if result.flows_due == 0:
                break
    finally:
        results.put(None)
        store.close()


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
