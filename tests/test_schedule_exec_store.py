"""The schedule store on a bare ``execute(sql, params)`` connection (what a Spin component
has), run natively on stdlib sqlite3: the same semantics as the SQLAlchemy store, and the
two stores read each other's tables."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flowlib.scheduling import file_flow
from package_tree import package_parent

from active_data_flow.handlers import scheduler
from active_data_flow.handlers.schedule.sqlite_exec import ExecScheduleStore, Sqlite3Exec
from active_data_flow.handlers.schedule.store import (
    DuplicateFlowError,
    FlowValidationError,
    NotFoundError,
    RetryPolicy,
    RunOutcome,
    utcnow,
)
from active_data_flow.handlers.settings import Settings

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
ROOT = Path(__file__).resolve().parent.parent

#: The two tables as this store created them before the run status ``partial``.
OLD_TABLES = (
    """CREATE TABLE data_flows (
        id INTEGER PRIMARY KEY AUTOINCREMENT, name VARCHAR(200) NOT NULL UNIQUE, description TEXT NOT NULL,
        enabled BOOLEAN NOT NULL, configuration JSON NOT NULL, run_interval INTEGER NOT NULL CHECK (run_interval > 0),
        last_run_at DATETIME, last_run_status VARCHAR(20), next_run_at DATETIME, created_at DATETIME NOT NULL,
        updated_at DATETIME NOT NULL
    )""",
    "CREATE INDEX ix_data_flows_due ON data_flows (enabled, next_run_at)",
    """CREATE TABLE data_flow_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        flow_id INTEGER NOT NULL REFERENCES data_flows (id) ON DELETE CASCADE,
        status VARCHAR(20) NOT NULL CHECK (status IN ('pending', 'in_progress', 'success', 'failed', 'cancelled')),
        "trigger" VARCHAR(40) NOT NULL, attempt INTEGER NOT NULL, created_at DATETIME NOT NULL, started_at DATETIME,
        ended_at DATETIME, error_message TEXT, error_backtrace TEXT, records_in BIGINT, records_out BIGINT,
        dead_letters BIGINT, worker_id VARCHAR(200), lease_expires_at DATETIME, engine_run_id VARCHAR(200),
        not_before DATETIME
    )""",
)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "schedule.db")


@pytest.fixture
def store(db: str) -> Iterator[ExecScheduleStore]:
    s = ExecScheduleStore(Sqlite3Exec(db))
    try:
        yield s
    finally:
        s.close()


def _config(tmp_path: Path, name: str = "out") -> dict[str, Any]:
    return file_flow(tmp_path / f"{name}.jsonl")


def test_the_module_imports_with_the_standard_library_only() -> None:
    probe = (
        f"import sys, json; sys.path[:0] = [{str(package_parent())!r}]; before = set(sys.modules); "
        "import active_data_flow.handlers.schedule.sqlite_exec; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names) "
        "- {'active_data_flow'} - {m.split('.')[0] for m in before})))"
    )
    out = subprocess.run([sys.executable, "-S", "-E", "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_validation_is_the_shared_one_and_saves_nothing(store: ExecScheduleStore, tmp_path: Path) -> None:
    with pytest.raises(FlowValidationError) as err:
        store.create_flow("has space", {"source": {"type": "nope"}}, 0)
    problems = err.value.problems
    assert any(p.startswith("name: 'has space' may contain only") for p in problems)
    assert any(p.startswith("run_interval: must be a positive integer") for p in problems)
    assert any(p.startswith("configuration:") for p in problems)
    assert store.list_flows() == []
    store.create_flow("a", _config(tmp_path), 60, description="first")
    with pytest.raises(DuplicateFlowError):
        store.create_flow("a", _config(tmp_path), 60)
    with pytest.raises(FlowValidationError):
        store.update_flow("a", run_interval=-1)
    assert store.get_flow("a").run_interval == 60
    with pytest.raises(NotFoundError):
        store.update_flow("zz", run_interval=5)


def test_a_new_flow_is_due_at_once_and_a_claim_moves_it_one_interval(store: ExecScheduleStore, tmp_path: Path) -> None:
    flow = store.create_flow("a", _config(tmp_path), 60)
    assert flow.enabled and flow.next_run_at is not None and flow.next_run_at <= utcnow()
    assert flow.configuration == _config(tmp_path)
    now = utcnow() + dt.timedelta(seconds=1)
    claim = store.claim(now, limit=10)
    assert claim.flows_due == 1 and len(claim.runs) == 1
    run = claim.runs[0]
    assert (run.flow_name, run.status, run.trigger, run.attempt) == ("a", "pending", "heartbeat", 1)
    after = store.get_flow("a")
    assert after.next_run_at == now + dt.timedelta(seconds=60)
    assert after.last_run_at == now and after.last_run_status == "pending"
    assert store.claim(now, limit=10).runs == []  # not due again until next_run_at
    # busy: due again but its run is still pending -> skipped, moved on, no second run
    later = now + dt.timedelta(seconds=61)
    busy = store.claim(later, limit=10)
    assert (busy.flows_due, busy.runs, busy.skipped) == (1, [], ["a"])
    assert store.get_flow("a").next_run_at == later + dt.timedelta(seconds=60)


def test_ten_intervals_late_gives_one_run_and_disabled_flows_never_run(store: ExecScheduleStore, tmp_path: Path) -> None:
    store.create_flow("a", _config(tmp_path), 10)
    store.create_flow("off", _config(tmp_path), 10, enabled=False)
    late = utcnow() + dt.timedelta(seconds=100)
    runs = store.claim_due(late, limit=10)
    assert [r.flow_name for r in runs] == ["a"]
    assert store.due_flows(late) == []


def test_sync_claims_lease_runs_and_only_the_leaseholder_renews(store: ExecScheduleStore, tmp_path: Path) -> None:
    store.create_flow("a", _config(tmp_path), 60)
    (run,) = store.claim_due(limit=5, worker_id="hb-1", lease_seconds=30)
    assert run.status == "in_progress" and run.worker_id == "hb-1" and run.lease_expires_at is not None
    assert store.renew_lease(run.id, "hb-1", lease_seconds=30)
    assert not store.renew_lease(run.id, "someone-else")
    assert store.start_run(run.id, "someone-else") is None
    started = store.start_run(run.id, "hb-1")
    assert started is not None and started.started_at is not None
    done = store.finish_run(run.id, RunOutcome("success", records_in=3, records_out=3, dead_letters=0,
                                               engine_run_id="e-1"))
    assert (done.status, done.records_out, done.engine_run_id) == ("success", 3, "e-1")
    assert done.duration is not None and done.duration >= 0
    assert store.get_flow("a").last_run_status == "success"


def test_expired_leases_fail_and_retry_until_max_attempts(store: ExecScheduleStore, tmp_path: Path) -> None:
    store.create_flow("a", _config(tmp_path), 3600)
    (_run,) = store.claim_due(T0, worker_id="w", lease_seconds=10)
    policy = RetryPolicy(max_attempts=2, backoff_seconds=5)
    (failed,) = store.expire_leases(policy, T0 + dt.timedelta(seconds=11))
    assert failed.status == "failed" and "stopped renewing" in (failed.error_message or "")
    assert "retried as run" in (failed.error_message or "")
    # the retry waits for its backoff, then a worker takes it
    assert store.claim_pending_run("w2", now=T0 + dt.timedelta(seconds=12)) is None
    retry = store.claim_pending_run("w2", lease_seconds=10, now=T0 + dt.timedelta(seconds=17))
    assert retry is not None and (retry.attempt, retry.trigger, retry.status) == (2, "retry", "in_progress")
    (last,) = store.expire_leases(policy, T0 + dt.timedelta(seconds=40))
    assert "not retried (2 of 2 attempts used)" in (last.error_message or "")
    assert store.get_flow("a").last_run_status == "failed"
    # a late report does not overturn the expired lease
    assert store.finish_run(retry.id, RunOutcome("success")).status == "failed"
    with pytest.raises(ValueError):
        store.finish_run(retry.id, RunOutcome("running"))


def test_pending_runs_wait_while_their_flow_runs_and_list_runs_filters(store: ExecScheduleStore, tmp_path: Path) -> None:
    store.create_flow("a", _config(tmp_path), 60)
    store.create_flow("b", _config(tmp_path), 60)
    first = store.create_run("a", worker_id="w", lease_seconds=60)
    store.create_run("a")
    store.create_run("b")
    taken = store.claim_pending_run("w2")
    assert taken is not None and taken.flow_name == "b"  # a's pending run waits for its running one
    assert store.claim_pending_run("w2") is None
    store.finish_run(first.id, RunOutcome("failed", error_message="boom redis://:hunter2@h:6379"))
    assert store.get_run(first.id).error_message == "boom redis://:***@h:6379"
    assert [r.flow_name for r in store.list_runs(flow="a")] == ["a", "a"]
    assert [r.status for r in store.list_runs(status="failed")] == ["failed"]
    assert len(store.list_runs(limit=1, offset=1)) == 1
    with pytest.raises(ValueError):
        store.list_runs(status="exploded")
    store.delete_flow("a")
    assert [r.flow_name for r in store.list_runs()] == ["b"]
    with pytest.raises(NotFoundError):
        store.create_run("a")


def test_heartbeats_are_logged_newest_first(store: ExecScheduleStore) -> None:
    store.log_heartbeat(client="10.0.0.7", outcome="ok", status_code=200, flows_due=2, flows_triggered=1)
    store.log_heartbeat(client=None, outcome="error", status_code=500, detail="redis://:s3cret@h:6379")
    newest, oldest = store.list_heartbeats()
    assert (oldest.client, oldest.flows_due, oldest.flows_triggered) == ("10.0.0.7", 2, 1)
    assert newest.detail == "redis://:***@h:6379"
    assert oldest.ts.tzinfo == dt.UTC and oldest.ts <= newest.ts


def test_a_tick_runs_the_due_flows_end_to_end(store: ExecScheduleStore, tmp_path: Path) -> None:
    store.create_flow("a", _config(tmp_path, "a"), 60)
    store.create_flow("b", _config(tmp_path, "b"), 60)
    settings = Settings(state_dir=str(tmp_path / "state"))
    result = scheduler.tick(store, settings, trigger="cron", mode="sync")
    assert (result.flows_due, result.flows_triggered) == (2, 2)
    assert [r.status for r in result.runs] == ["success", "success"]
    assert (tmp_path / "a.jsonl").read_text().count("\n") == 3


def test_the_sqlalchemy_store_reads_what_the_exec_store_wrote(db: str, tmp_path: Path) -> None:
    import sqlalchemy  # noqa: F401 - the comparison store needs it

    from active_data_flow.handlers.schedule.sql import SqlScheduleStore

    exec_store = ExecScheduleStore(Sqlite3Exec(db))
    exec_store.create_flow("a", _config(tmp_path), 60)
    (run,) = exec_store.claim_due(worker_id="w")
    exec_store.finish_run(run.id, RunOutcome("success", records_out=3))
    exec_store.close()
    sql_store = SqlScheduleStore(f"sqlite:///{db}", auto_migrate=False)
    try:
        assert sql_store.get_flow("a").configuration == _config(tmp_path)
        (seen,) = sql_store.list_runs()
        assert (seen.status, seen.records_out, seen.started_at) == ("success", 3, run.started_at)
    finally:
        sql_store.close()


def test_concurrent_claims_never_hand_a_flow_out_twice(db: str, tmp_path: Path) -> None:
    setup = ExecScheduleStore(Sqlite3Exec(db))
    for i in range(20):
        setup.create_flow(f"f{i}", _config(tmp_path), 3600)
    setup.close()
    claimed: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def heartbeat() -> None:
        s = ExecScheduleStore(Sqlite3Exec(db))
        start.wait()
        for _ in range(10):
            runs = s.claim_due(limit=3)
            with lock:
                claimed.extend(r.flow_id for r in runs)
        s.close()

    threads = [threading.Thread(target=heartbeat) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 20


# --------------------------------------------------------------------------- schema upgrades, run ids, partial


def _table_rows(db: str) -> dict[str, list[tuple[Any, ...]]]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in ("data_flows", "data_flow_runs")}
    finally:
        conn.close()


def _old_rows(db: str, tmp_path: Path, names: tuple[str, ...], delete: str | None = None) -> dict[str, int]:
    """Flows and one run each, as a store of the older tables wrote them (today's store reads
    the newest tables only); ``delete`` is then deleted with its runs. Returns the run ids."""
    import sqlite3

    now = "2025-01-01 00:00:00.000000"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        runs: dict[str, int] = {}
        for name in names:
            flow_id = conn.execute(
                "INSERT INTO data_flows (name, description, enabled, configuration, run_interval, next_run_at, "
                "created_at, updated_at) VALUES (?, '', 1, ?, 60, ?, ?, ?)",
                (name, json.dumps(_config(tmp_path, name)), now, now, now),
            ).lastrowid
            runs[name] = int(conn.execute(
                "INSERT INTO data_flow_runs (flow_id, status, \"trigger\", attempt, created_at) "
                "VALUES (?, 'pending', 'manual', 1, ?)", (flow_id, now),
            ).lastrowid or 0)
        if delete is not None:
            conn.execute("DELETE FROM data_flow_runs WHERE flow_id = (SELECT id FROM data_flows WHERE name = ?)",
                         (delete,))
            conn.execute("DELETE FROM data_flows WHERE name = ?", (delete,))
        return runs
    finally:
        conn.close()


def _same_rows_plus_schedule(after: dict[str, list[tuple[Any, ...]]], before: dict[str, list[tuple[Any, ...]]]) -> bool:
    """The rows of ``before`` in ``after``, the flows with an empty cron schedule added."""
    return (after["data_flow_runs"] == before["data_flow_runs"]
            and [r[:-2] for r in after["data_flows"]] == before["data_flows"]
            and all(r[-2:] == (None, None) for r in after["data_flows"]))


def _ddl(db: str) -> dict[str, str]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
    finally:
        conn.close()


def test_a_file_of_the_old_tables_is_upgraded_keeping_rows_and_counters(db: str, tmp_path: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(db)
    for statement in OLD_TABLES:
        conn.execute(statement)
    conn.commit()
    conn.close()
    # the newest flow and run deleted: their ids are in sqlite_sequence only
    runs = _old_rows(db, tmp_path, ("a", "b", "c"), delete="c")
    before = _table_rows(db)

    store = ExecScheduleStore(Sqlite3Exec(db))
    try:
        assert _same_rows_plus_schedule(_table_rows(db), before)
        assert "'partial'" in _ddl(db)["data_flow_runs"]
        flow = store.create_flow("d", _config(tmp_path, "d"), 60)
        run = store.create_run("d", worker_id="w", lease_seconds=60)
        assert flow.id > 3 and run.id > runs["c"]  # the counters survived the rebuild
        done = store.finish_run(run.id, RunOutcome("partial", records_in=3, records_out=2, dead_letters=1))
        assert done.status == "partial" and store.get_flow("d").last_run_status == "partial"
        store.delete_flow("a")  # the rebuilt foreign key still takes a flow's runs along
        assert [r.flow_name for r in store.list_runs()] == ["d", "b"]
    finally:
        store.close()
    reopened = ExecScheduleStore(Sqlite3Exec(db))  # opened again: nothing to do
    try:
        assert [r.id for r in reopened.list_runs(status="partial")] == [run.id]
    finally:
        reopened.close()


def test_a_file_of_the_sqlalchemy_stores_first_migration_gets_ids_that_are_never_reused(db: str, tmp_path: Path) -> None:
    from active_data_flow.handlers.schedule.sql import upgrade

    url = f"sqlite:///{db}"
    upgrade(url, "0001")
    _old_rows(db, tmp_path, ("a",))
    before = _table_rows(db)
    store = ExecScheduleStore(Sqlite3Exec(db))
    try:
        assert _same_rows_plus_schedule(_table_rows(db), before)
        assert all("AUTOINCREMENT" in _ddl(db)[t] for t in ("data_flows", "data_flow_runs"))
        b = store.create_flow("b", _config(tmp_path, "b"), 60)
        b_run = store.create_run("b")
        store.delete_flow("b")
        c = store.create_flow("c", _config(tmp_path, "c"), 60)
        assert c.id > b.id and store.create_run("c").id > b_run.id
    finally:
        store.close()


def _ledger_flow(out: Path) -> dict[str, Any]:
    """11 records, 3 refused by the schema: a partial run."""
    records = [{"id": i, "amount": "n/a" if i in (3, 5) else i * 1.5} for i in range(10)] + [{"id": "x", "amount": 1}]
    return {
        "source": {"type": "memory", "records": records},
        "schema": {"id": "integer", "amount": "decimal"},
        "sink": {"type": "file", "path": str(out), "format": "jsonl"},
    }


def _run_dir_files(state: Path, flow: str, engine_run_id: str | None) -> dict[str, bytes]:
    assert engine_run_id
    return {p.name: p.read_bytes() for p in (state / flow / "runs" / engine_run_id).iterdir() if p.is_file()}


def test_a_removed_and_added_flow_and_a_new_file_never_reuse_a_run_or_its_directory(db: str, tmp_path: Path) -> None:
    settings = Settings(state_dir=str(tmp_path / "state"))
    state = tmp_path / "state"
    store = ExecScheduleStore(Sqlite3Exec(db))
    flow = store.create_flow("ids", _ledger_flow(tmp_path / "ids.jsonl"), 3600)
    [first] = scheduler.tick(store, settings, trigger="cron", mode="sync").runs
    assert first.status == "partial" and first.error_message and "field 'amount'" in first.error_message
    old = _run_dir_files(state, "ids", first.engine_run_id)
    assert {"summary.json", "dead_letters.jsonl"} <= set(old)

    store.delete_flow("ids")
    again = store.create_flow("ids", _ledger_flow(tmp_path / "ids.jsonl"), 3600)
    [second] = scheduler.tick(store, settings, trigger="cron", mode="sync").runs
    assert again.id > flow.id and second.id > first.id
    assert second.engine_run_id not in (None, first.engine_run_id)
    store.close()

    Path(db).unlink()  # the schedule made again from nothing, the state directory kept
    fresh = ExecScheduleStore(Sqlite3Exec(db))
    try:
        fresh.create_flow("ids", _ledger_flow(tmp_path / "ids.jsonl"), 3600)
        [third] = scheduler.tick(fresh, settings, trigger="cron", mode="sync").runs
    finally:
        fresh.close()
    assert third.id == first.id and third.engine_run_id not in (None, first.engine_run_id, second.engine_run_id)
    assert _run_dir_files(state, "ids", first.engine_run_id) == old
    assert json.loads(old["summary.json"])["run_id"] == first.engine_run_id
