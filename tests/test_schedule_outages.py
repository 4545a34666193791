"""The schedule database going away while a heartbeat runs a flow, for real: PostgreSQL's
backends terminated in the middle of a run, and the database unreachable for longer than the
outcome write may wait. A run that did its work is never recorded as failed, and is recorded once.

Each test has its own PostgreSQL database. The outage is caused from inside the flow, by a
python step, so that it hits exactly between the run's start and its outcome: backends
terminated by PostgreSQL itself, or a :class:`tcp_proxy.TcpProxy` between the store and
the server cut.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flowlib.scheduling import PG_ADMIN_URL, pg_database, read_jsonl
from live_server import LogCapture
from tcp_proxy import TcpProxy

from active_data_flow.handlers.schedule.sql import SqlScheduleStore
from active_data_flow.handlers.scheduler import retry_policy, tick
from active_data_flow.handlers.settings import Settings

pytestmark = pytest.mark.postgres

N = 10
PG_ADDRESS = ("127.0.0.1", 5432)


# --------------------------------------------------------------------------- steps the flows run


def terminate_backends(record: dict[str, Any], database: str, at: int) -> dict[str, Any]:
    """At record ``at``: terminate every server connection to ``database`` (the schedule's)
    from a connection of its own, and wait until they are gone."""
    if record["n"] == at:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [database],
            ).fetchone()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [database]
            ).fetchone() != (0,):
                time.sleep(0.02)
        record["terminated"] = killed[0] if killed else 0
    return record


#: Proxies the flows can cut, by name (the engine runs steps in this process).
PROXIES: dict[str, TcpProxy] = {}


def cut_proxy(record: dict[str, Any], proxy: str, at: int) -> dict[str, Any]:
    """At record ``at``: make the database behind ``proxy`` unreachable."""
    if record["n"] == at:
        PROXIES[proxy].cut()
    return record


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pg_database("adf_outage") as url:
        yield url


def _flow(out: Path, step: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": {"type": "memory", "records": [{"n": i} for i in range(N)]},
        "steps": [step],
        "sink": {"type": "file", "path": str(out), "format": "jsonl"},
        "runtime": {"batch_size": 2},
    }


def _run_rows(store: SqlScheduleStore) -> list[Any]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT id, status FROM data_flow_runs")).all())


# --------------------------------------------------------------------------- tests


def test_terminated_connections_mid_run_still_record_the_success_once(pg_url: str, tmp_path: Path) -> None:
    database = pg_url.rsplit("/", 1)[1]
    out = tmp_path / "out.jsonl"
    step = {"type": "python", "function": "test_schedule_outages:terminate_backends",
            "options": {"database": database, "at": 6}}
    settings = Settings(state_dir=str(tmp_path / "state"), database_url=pg_url, lease_seconds=60.0)
    with SqlScheduleStore(pg_url) as store, LogCapture("adf.retry") as retries:
        store.create_flow("resilient", _flow(out, step), 3600)
        result = tick(store, settings, mode="sync")

        [run] = result.runs
        assert (run.status, run.records_in, run.records_out, run.dead_letters) == ("success", N, N, 0)
        assert store.get_run(run.id) == run and run.error_message is None
        assert _run_rows(store) == [(run.id, "success")]
        assert store.get_flow("resilient").last_run_status == "success"
    written = read_jsonl(out)
    assert sorted(r["n"] for r in written) == list(range(N))  # each record once
    [terminated] = [r["terminated"] for r in written if "terminated" in r]
    assert terminated >= 1  # there were connections to cut
    # the outcome write met a dead connection and was retried on a new one
    assert any(line.get("what") == f"recording the outcome of run {run.id}" for line in retries.lines), retries.lines


def test_an_outcome_that_cannot_be_written_is_logged_and_left_to_the_lease_not_failed(
    pg_url: str, tmp_path: Path
) -> None:
    proxy = TcpProxy(PG_ADDRESS).start()  # cut: connections reset, new ones refused
    PROXIES["schedule"] = proxy
    proxied = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    out = tmp_path / "out.jsonl"
    step = {"type": "python", "function": "test_schedule_outages:cut_proxy", "options": {"proxy": "schedule", "at": 6}}
    # the outcome write waits at most one lease (2 s); the database stays away 4 s
    settings = Settings(state_dir=str(tmp_path / "state"), database_url=proxied, lease_seconds=2.0, claim_limit=1)
    try:
        with SqlScheduleStore(proxied) as store, LogCapture("adf.scheduler") as log:
            store.create_flow("stranded", _flow(out, step), 3600)
            started = time.monotonic()
            result = tick(store, settings, mode="sync")
            waited = time.monotonic() - started
            [run] = result.runs
            assert run.status == "in_progress"  # as it stands: not "failed"
            assert 1.0 <= waited < 4.0  # retried, and given up within the window (and the short run)
            time.sleep(max(0.0, 4.0 - waited))
            proxy.restore()

            [line] = [x for x in log.lines if x["msg"].startswith("run outcome not recorded")]
            assert line["level"] == "critical"
            assert (line["run"], line["flow"], line["status"]) == (run.id, "stranded", "success")
            assert (line["records_in"], line["records_out"], line["dead_letters"]) == (N, N, 0)
            assert line["engine_run_id"] == run.engine_run_id and "still failing after" in line["error"]
            assert not [x for x in log.lines if x["msg"] == "run finished"]

            recorded = store.get_run(run.id)
            assert (recorded.status, recorded.error_message, recorded.records_in) == ("in_progress", None, None)
            assert recorded.engine_run_id == run.engine_run_id  # written when it started: findable
            assert sorted(r["n"] for r in read_jsonl(out)) == list(range(N))
            # as for a worker that died: the lease runs out, the run is failed and retried
            later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
            [expired] = store.expire_leases(retry_policy(settings), later)
            assert expired.id == run.id and (expired.error_message or "").startswith("lease expired at ")
    finally:
        proxy.cut()
        PROXIES.pop("schedule", None)
