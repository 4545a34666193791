"""The SQL schedule store: migrations, validation, due/claim semantics, leases, runs, log.

Every test runs on SQLite and on a throwaway PostgreSQL database (dropped afterwards).
"""

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
import sqlalchemy as sa
from flowlib.scheduling import file_flow, pg_database
from package_tree import package_parent

from active_data_flow.handlers.schedule.sql import SqlScheduleStore, current_revision, head_revision, upgrade
from active_data_flow.handlers.schedule.store import (
    FlowValidationError,
    NotFoundError,
    RetryPolicy,
    RunOutcome,
    utcnow,
)

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
ROOT = Path(__file__).resolve().parent.parent

STDLIB_PROBE = r"""
import json, sys
sys.path[:0] = [{root!r}]
before = {{m.split(".")[0] for m in sys.modules}}
import active_data_flow.handlers.schedule.store, active_data_flow.handlers.schedule.sql, active_data_flow.handlers.scheduler
third_party = sorted({{m.split(".")[0] for m in sys.modules if not m.startswith("_")}}
                     - set(sys.stdlib_module_names) - {{"active_data_flow"}} - before)
try:
    active_data_flow.handlers.schedule.sql.SqlScheduleStore("sqlite:///never.db")
    error = None
except ImportError as exc:
    error = str(exc)
print(json.dumps({{"third_party": third_party, "error": error}}))
"""


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'schedule.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield _sqlite_url(tmp_path)
    else:
        with pg_database() as pg_url:
            yield pg_url


@pytest.fixture
def store(url: str) -> Iterator[SqlScheduleStore]:
    s = SqlScheduleStore(url)
    try:
        yield s
    finally:
        s.close()


def _config(tmp_path: Path, name: str = "out") -> dict[str, Any]:
    return file_flow(tmp_path / f"{name}.jsonl")


def _raw(store: SqlScheduleStore, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
    with store.engine.begin() as conn:
        result = conn.execute(sa.text(sql), params or {})
        return list(result.all()) if result.returns_rows else []


# --------------------------------------------------------------------------- migrations


def test_the_schedule_modules_import_with_the_standard_library_only() -> None:
    # -S: no site-packages (no SQLAlchemy): importing works, opening a store names the extra.
    out = subprocess.run(
        [sys.executable, "-S", "-E", "-c", STDLIB_PROBE.format(root=str(package_parent()))],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["third_party"] == []
    assert "needs the Python package 'SQLAlchemy'" in result["error"]
    assert "active-data-flow[web]" in result["error"]


def test_migrations_upgrade_a_fresh_sqlite_file(tmp_path: Path) -> None:
    url = _sqlite_url(tmp_path)
    assert current_revision(url) is None
    assert upgrade(url) == head_revision() == "0003"
    assert current_revision(url) == head_revision()
    assert upgrade(url) == head_revision()  # idempotent
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        assert {"data_flows", "data_flow_runs", "heartbeat_requests", "alembic_version"} <= set(inspector.get_table_names())
        run_indexes = {i["name"] for i in inspector.get_indexes("data_flow_runs")}
        assert {"ix_data_flow_runs_status_created", "ix_data_flow_runs_flow_created", "ix_data_flow_runs_status_lease"} <= run_indexes
        assert "ix_data_flows_due" in {i["name"] for i in inspector.get_indexes("data_flows")}
        with engine.connect() as conn:
            ddl = dict(conn.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'table'")).all())
        assert "AUTOINCREMENT" in ddl["data_flows"] and "AUTOINCREMENT" in ddl["data_flow_runs"]
        assert "'partial'" in ddl["data_flow_runs"]
    finally:
        engine.dispose()


def test_a_store_without_auto_migrate_leaves_the_database_alone(tmp_path: Path) -> None:
    url = _sqlite_url(tmp_path)
    SqlScheduleStore(url, auto_migrate=False).close()
    assert current_revision(url) is None
    SqlScheduleStore(url).close()
    assert current_revision(url) == head_revision()


@pytest.mark.postgres
def test_migrations_upgrade_a_fresh_postgres_database() -> None:
    with pg_database() as url:
        assert current_revision(url) is None
        assert upgrade(url) == head_revision()
        assert current_revision(url) == head_revision()
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as conn:
                types = dict(conn.execute(sa.text(
                    "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'data_flows'"
                )).all())
                assert types["configuration"] == "jsonb"
                assert types["next_run_at"] == "timestamp with time zone"
                checks = set(conn.execute(sa.text(
                    "SELECT constraint_name FROM information_schema.check_constraints WHERE constraint_name LIKE 'ck_%'"
                )).scalars())
                assert {"ck_data_flows_run_interval_positive", "ck_data_flow_runs_status"} <= checks
            # The CHECK constraints hold even for writers that bypass the store.
            with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
                conn.execute(sa.text(
                    "INSERT INTO data_flows (name, configuration, run_interval, created_at, updated_at) "
                    "VALUES ('x', '{}', 0, now(), now())"
                ))
        finally:
            engine.dispose()


def test_many_stores_opening_a_fresh_database_at_once_migrate_it_once(url: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def open_store() -> None:
        try:
            start.wait()
            SqlScheduleStore(url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert current_revision(url) == head_revision()
    with SqlScheduleStore(url) as s:
        assert _raw(s, "SELECT count(*) FROM alembic_version") == [(1,)]


def _rows(store: SqlScheduleStore) -> dict[str, list[Any]]:
    return {
        table: _raw(store, f"SELECT * FROM {table} ORDER BY id")
        for table in ("data_flows", "data_flow_runs", "heartbeat_requests")
    }


def test_a_database_of_the_first_schema_is_upgraded_keeping_every_row_then_never_reuses_ids(
    url: str, tmp_path: Path
) -> None:
    assert upgrade(url, "0001") == "0001"
    # rows as the store of the first schema wrote them (today's store reads the newest schema)
    with SqlScheduleStore(url, auto_migrate=False) as old:
        now = "2025-01-01 00:00:00"
        for name in ("a", "b", "c"):
            _raw(old, "INSERT INTO data_flows (name, description, enabled, configuration, run_interval, next_run_at, "
                      "created_at, updated_at) VALUES (:n, '', true, :c, 60, :t, :t, :t)",
                 {"n": name, "c": json.dumps(_config(tmp_path, name)), "t": now})
        ids = {n: i for i, n in _raw(old, "SELECT id, name FROM data_flows")}
        for name, status in (("a", "success"), ("b", "pending"), ("c", "pending")):
            _raw(old, "INSERT INTO data_flow_runs (flow_id, status, \"trigger\", attempt, created_at, engine_run_id) "
                      "VALUES (:f, :s, 'manual', 1, :t, :e)", {"f": ids[name], "s": status, "t": now, "e": f"e-{name}"})
        first_id = _raw(old, "SELECT min(id) FROM data_flow_runs")[0][0]
        _raw(old, "INSERT INTO heartbeat_requests (ts, client, outcome, status_code) VALUES (:t, 'cron', 'ok', 200)",
             {"t": now})
        _raw(old, "DELETE FROM data_flow_runs WHERE flow_id = :f", {"f": ids["c"]})
        _raw(old, "DELETE FROM data_flows WHERE id = :f", {"f": ids["c"]})
        before = _rows(old)
    assert upgrade(url) == head_revision()
    with SqlScheduleStore(url) as store:
        after = _rows(store)
        # every row, id and value kept; the flows gained an empty cron schedule
        assert [tuple(r)[:-2] for r in after["data_flows"]] == [tuple(r) for r in before["data_flows"]]
        assert all(tuple(r)[-2:] == (None, None) for r in after["data_flows"])
        assert [tuple(r) for r in after["data_flow_runs"]] == [tuple(r) for r in before["data_flow_runs"]]
        assert after["heartbeat_requests"] == before["heartbeat_requests"]
        first = store.get_run(first_id)
        newest_run = max(r[0] for r in before["data_flow_runs"])
        newest_flow = max(r[0] for r in before["data_flows"])
        # from now on a deleted id is never handed out again
        d = store.create_flow("d", _config(tmp_path, "d"), 60)
        d_run = store.create_run("d", worker_id="w", lease_seconds=60)
        assert d.id > newest_flow and d_run.id > newest_run
        store.delete_flow("d")
        e = store.create_flow("e", _config(tmp_path, "e"), 60)
        e_run = store.create_run("e")
        assert e.id > d.id and e_run.id > d_run.id
        # the status partial is allowed, and the foreign key still deletes a flow's runs
        store.finish_run(e_run.id, RunOutcome("partial", records_in=3, records_out=2, dead_letters=1))
        assert store.get_run(e_run.id).status == "partial"
        store.delete_flow("a")
        assert _raw(store, f"SELECT count(*) FROM data_flow_runs WHERE id = {first.id}") == [(0,)]
        # a writer bypassing the store still meets the status constraint
        with pytest.raises(sa.exc.IntegrityError):
            _raw(store, f"UPDATE data_flow_runs SET status = 'exploded' WHERE id = {e_run.id}")


def test_finishing_a_run_twice_keeps_the_first_outcome_and_only_the_leaseholder_finishes(
    store: SqlScheduleStore, tmp_path: Path
) -> None:
    store.create_flow("a", _config(tmp_path), 60)
    run = store.create_run("a", worker_id="w1", lease_seconds=60)
    started = store.start_run(run.id, "w1", lease_seconds=60, engine_run_id="run-1-abc")
    assert started is not None and started.engine_run_id == "run-1-abc"
    assert store.start_run(run.id, "w1", lease_seconds=60) == store.get_run(run.id)  # again: harmless
    # another worker's report changes nothing
    assert store.finish_run(run.id, RunOutcome("failed", error_message="not mine"), worker_id="w2").status == "in_progress"
    outcome = RunOutcome("partial", records_in=5, records_out=4, dead_letters=1, error_message="1 record dead-lettered")
    done = store.finish_run(run.id, outcome, worker_id="w1")
    assert (done.status, done.records_out, done.engine_run_id) == ("partial", 4, "run-1-abc")  # kept from the start
    # the same write again (a retry after a lost connection), or a different late one: no change
    assert store.finish_run(run.id, outcome, worker_id="w1") == done
    assert store.finish_run(run.id, RunOutcome("failed", error_message="late")) == done
    assert store.get_flow("a").last_run_status == "partial"


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("name", "interval", "expected"),
    [
        ("", 60, "name: is required"),
        ("-dash", 60, "name: '-dash' may contain only"),
        ("has space", 60, "name: 'has space' may contain only"),
        ("ok", 0, "run_interval: must be a positive integer (seconds), got 0"),
        ("ok", -5, "run_interval: must be a positive integer (seconds), got -5"),
        ("ok", 1.5, "run_interval: must be a positive integer (seconds), got 1.5"),
        ("ok", "60", "run_interval: must be a positive integer (seconds), got '60'"),
        ("ok", True, "run_interval: must be a positive integer (seconds), got True"),
    ],
)
def test_create_flow_refuses_a_bad_name_or_interval(
    store: SqlScheduleStore, tmp_path: Path, name: str, interval: Any, expected: str
) -> None:
    with pytest.raises(FlowValidationError) as err:
        store.create_flow(name, _config(tmp_path), interval)
    assert any(p.startswith(expected) for p in err.value.problems), err.value.problems
    assert store.list_flows() == []


def test_create_flow_refuses_an_invalid_spec_with_every_reason_and_saves_nothing(
    store: SqlScheduleStore, tmp_path: Path
) -> None:
    bad = {
        "name": "other",
        "source": {"type": "nope"},
        "steps": [{"type": "python"}],
        "runtime": {"batch_size": 0},
        "surprise": 1,
    }
    with pytest.raises(FlowValidationError) as err:
        store.create_flow("bad name!", bad, 0, description=5, enabled="yes")  # type: ignore[arg-type]
    problems = err.value.problems
    expected = [
        "name: 'bad name!' may contain only",
        "run_interval: must be a positive integer",
        "description: must be a string",
        "enabled: must be true or false",
        "configuration: unknown key 'surprise'",
        "configuration: source: unknown source type 'nope'",
        "configuration: 'sink' is required",
        "configuration: steps[0]:",
        "configuration: runtime: ",
    ]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)
    assert store.list_flows() == []
    assert _raw(store, "SELECT count(*) FROM data_flows") == [(0,)]


def test_the_spec_name_must_match_the_flow_name(store: SqlScheduleStore, tmp_path: Path) -> None:
    with pytest.raises(FlowValidationError) as err:
        store.create_flow("orders", {**_config(tmp_path), "name": "invoices"}, 60)
    assert err.value.problems == [
        "configuration: its name 'invoices' does not match the flow name 'orders' (leave it out or make them equal)"
    ]
    flow = store.create_flow("orders", {**_config(tmp_path), "name": "orders"}, 60)
    assert flow.configuration["name"] == "orders"


def test_configuration_must_be_a_json_mapping(store: SqlScheduleStore, tmp_path: Path) -> None:
    with pytest.raises(FlowValidationError) as err:
        store.create_flow("a", ["not", "a", "mapping"], 60)  # type: ignore[arg-type]
    assert err.value.problems == ["configuration: must be a mapping (the flow spec), got list"]
    with pytest.raises(FlowValidationError) as err:
        store.create_flow("a", {**_config(tmp_path), "config": {"when": object()}}, 60)
    assert any(p.startswith("configuration: must be plain JSON data") for p in err.value.problems)
    assert store.list_flows() == []


def test_duplicate_names_are_refused_with_the_other_problems(store: SqlScheduleStore, tmp_path: Path) -> None:
    store.create_flow("orders", _config(tmp_path), 60)
    with pytest.raises(FlowValidationError) as err:
        store.create_flow("orders", _config(tmp_path), -1)
    assert err.value.problems[0] == "name: a flow named 'orders' already exists"
    assert any(p.startswith("run_interval:") for p in err.value.problems)
    assert [f.name for f in store.list_flows()] == ["orders"]


def test_racing_creators_of_one_name_get_one_flow(url: str, tmp_path: Path) -> None:
    config = _config(tmp_path)
    created: list[int] = []
    refused: list[list[str]] = []
    start = threading.Barrier(6)
    stores = [SqlScheduleStore(url) for _ in range(6)]

    def create(s: SqlScheduleStore) -> None:
        start.wait()
        try:
            created.append(s.create_flow("same", config, 60).id)
        except FlowValidationError as exc:
            refused.append(exc.problems)

    threads = [threading.Thread(target=create, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert len(created) == 1
    assert refused == [["name: a flow named 'same' already exists"]] * 5
    with SqlScheduleStore(url) as s:
        assert _raw(s, "SELECT count(*) FROM data_flows") == [(1,)]


def test_update_flow_validates_and_changes_nothing_when_invalid(store: SqlScheduleStore, tmp_path: Path) -> None:
    flow = store.create_flow("orders", _config(tmp_path), 60, description="first")
    with pytest.raises(FlowValidationError) as err:
        store.update_flow("orders", configuration={"source": {"type": "memory"}}, run_interval=0)
    assert "configuration: 'sink' is required" in err.value.problems
    assert any(p.startswith("run_interval:") for p in err.value.problems)
    assert store.get_flow("orders") == flow
    with pytest.raises(NotFoundError):
        store.update_flow("missing", description="x")
    # a new interval counts from the last run
    [run] = store.claim_due(T0)
    store.finish_run(run.id, RunOutcome("success"))
    assert store.update_flow("orders", run_interval=7200).next_run_at == T0 + dt.timedelta(seconds=7200)
    new_config = _config(tmp_path, "elsewhere")
    updated = store.update_flow("orders", configuration=new_config, description="second", enabled=False)
    assert updated.configuration == new_config
    assert (updated.description, updated.enabled) == ("second", False)
    assert updated.updated_at is not None and flow.updated_at is not None and updated.updated_at >= flow.updated_at


# --------------------------------------------------------------------------- due and claim


def test_a_new_flow_is_due_at_once_and_claiming_moves_it_one_interval(store: SqlScheduleStore, tmp_path: Path) -> None:
    before = utcnow()
    flow = store.create_flow("orders", _config(tmp_path), 300)
    assert flow.next_run_at is not None and before <= flow.next_run_at <= utcnow()
    assert flow.created_at is not None and flow.created_at.tzinfo == dt.UTC
    assert [f.name for f in store.due_flows(T0)] == ["orders"]

    claim = store.claim(T0, limit=10)
    assert claim.flows_due == 1 and claim.skipped == []
    [run] = claim.runs
    assert (run.flow_name, run.status, run.trigger, run.attempt, run.worker_id) == ("orders", "pending", "heartbeat", 1, None)
    assert run.created_at == T0
    flow = store.get_flow("orders")
    assert flow.next_run_at == T0 + dt.timedelta(seconds=300)
    assert (flow.last_run_at, flow.last_run_status) == (T0, "pending")

    store.finish_run(run.id, RunOutcome("success"))
    assert store.due_flows(T0 + dt.timedelta(seconds=299)) == []
    assert store.claim_due(T0 + dt.timedelta(seconds=299)) == []
    assert [f.name for f in store.due_flows(T0 + dt.timedelta(seconds=300))] == ["orders"]


def test_a_flow_ten_intervals_late_gets_one_run(store: SqlScheduleStore, tmp_path: Path) -> None:
    store.create_flow("orders", _config(tmp_path), 60)
    [first] = store.claim_due(T0)
    store.finish_run(first.id, RunOutcome("success"))
    late = T0 + dt.timedelta(seconds=60 * 10 + 7)
    runs = store.claim_due(late, limit=100)
    assert len(runs) == 1
    assert store.get_flow("orders").next_run_at == late + dt.timedelta(seconds=60)
    assert store.claim_due(late, limit=100) == []
    assert len(store.list_runs(flow="orders")) == 2


def test_disabled_flows_are_never_claimed(store: SqlScheduleStore, tmp_path: Path) -> None:
    store.create_flow("off", _config(tmp_path), 60, enabled=False)
    store.create_flow("on", _config(tmp_path, "on"), 60)
    far = T0 + dt.timedelta(days=365)
    assert [f.name for f in store.due_flows(far)] == ["on"]
    assert [r.flow_name for r in store.claim_due(far)] == ["on"]
    assert store.list_runs(flow="off") == []
    store.update_flow("off", enabled=True)
    assert [r.flow_name for r in store.claim_due(far)] == ["off"]


def test_a_flow_whose_run_is_still_going_is_skipped_not_piled_up(store: SqlScheduleStore, tmp_path: Path) -> None:
    store.create_flow("orders", _config(tmp_path), 60)
    [run] = store.claim_due(T0)
    later = T0 + dt.timedelta(seconds=61)
    claim = store.claim(later)
    assert (claim.flows_due, claim.runs, claim.skipped) == (1, [], ["orders"])
    flow = store.get_flow("orders")
    assert flow.next_run_at == later + dt.timedelta(seconds=60)
    assert flow.last_run_at == T0  # no new run
    store.finish_run(run.id, RunOutcome("success"))
    assert len(store.claim_due(later + dt.timedelta(seconds=60))) == 1


def test_claim_respects_the_limit_and_oldest_due_first(store: SqlScheduleStore, tmp_path: Path) -> None:
    for i in range(5):
        store.create_flow(f"f{i}", _config(tmp_path, f"f{i}"), 60)
    first = store.claim(T0, limit=2)
    assert (first.flows_due, [r.flow_name for r in first.runs]) == (2, ["f0", "f1"])
    rest = store.claim(T0, limit=10)
    assert sorted(r.flow_name for r in rest.runs) == ["f2", "f3", "f4"]
    with pytest.raises(ValueError):
        store.claim(T0, limit=0)


def test_a_sync_claim_leases_the_runs_to_the_heartbeat(store: SqlScheduleStore, tmp_path: Path) -> None:
    store.create_flow("orders", _config(tmp_path), 60)
    [run] = store.claim_due(T0, worker_id="hb-1", lease_seconds=30)
    assert (run.status, run.worker_id, run.started_at) == ("in_progress", "hb-1", T0)
    assert run.lease_expires_at == T0 + dt.timedelta(seconds=30)
    assert store.get_flow("orders").last_run_status == "in_progress"


# --------------------------------------------------------------------------- runs, leases, retries


def test_pending_runs_are_claimed_oldest_first_with_a_lease(store: SqlScheduleStore, tmp_path: Path) -> None:
    store.create_flow("a", _config(tmp_path, "a"), 60)
    store.create_flow("b", _config(tmp_path, "b"), 60)
    [ra] = store.claim_due(T0, limit=1)
    [rb] = store.claim_due(T0 + dt.timedelta(seconds=1), limit=1)
    now = T0 + dt.timedelta(seconds=2)
    got = store.claim_pending_run("w1", lease_seconds=10, now=now)
    assert got is not None and got.id == ra.id
    assert (got.status, got.worker_id, got.started_at, got.lease_expires_at) == (
        "in_progress", "w1", now, now + dt.timedelta(seconds=10)
    )
    assert store.get_flow("a").last_run_status == "in_progress"
    got2 = store.claim_pending_run("w2", now=now)
    assert got2 is not None and got2.id == rb.id
    assert store.claim_pending_run("w3", now=now) is None


def test_a_pending_run_waits_while_another_run_of_its_flow_is_in_progress(store: SqlScheduleStore, tmp_path: Path) -> None:
    store.create_flow("a", _config(tmp_path), 60)
    running = store.create_run("a", trigger="manual", worker_id="w1")
    queued = store.create_run("a", trigger="manual")
    assert store.claim_pending_run("w2") is None
    store.finish_run(running.id, RunOutcome("success"))
    got = store.claim_pending_run("w2")
    assert got is not None and got.id == queued.id


def test_renew_and_start_only_for_the_leaseholder(store: SqlScheduleStore, tmp_path: Path) -> None:
    store.create_flow("a", _config(tmp_path), 60)
    run = store.create_run("a", worker_id="w1", lease_seconds=5)
    assert run.status == "in_progress"
    assert store.renew_lease(run.id, "w1", lease_seconds=100)
    renewed = store.get_run(run.id).lease_expires_at
    assert renewed is not None and renewed > utcnow() + dt.timedelta(seconds=90)
    assert not store.renew_lease(run.id, "intruder")
    assert store.renew_leases([run.id, 999_999], "w1") == {run.id}
    assert store.start_run(run.id, "intruder") is None
    started = store.start_run(run.id, "w1", lease_seconds=50)
    assert started is not None and started.flow_name == "a"


def test_expired_leases_fail_the_run_and_retry_until_max_attempts(store: SqlScheduleStore, tmp_path: Path) -> None:
    store.create_flow("a", _config(tmp_path), 3600)
    [run] = store.claim_due(T0, worker_id="host:42", lease_seconds=60)
    policy = RetryPolicy(max_attempts=2, backoff_seconds=10)
    assert store.expire_leases(policy, T0 + dt.timedelta(seconds=59)) == []

    t1 = T0 + dt.timedelta(seconds=61)
    [failed] = store.expire_leases(policy, t1)
    assert failed.id == run.id and failed.status == "failed" and failed.ended_at == t1
    assert failed.error_message is not None
    assert failed.error_message.startswith("lease expired at 2030-01-01T12:01:00Z: worker host:42 stopped renewing")
    [retry] = store.list_runs(flow="a", status="pending")
    assert (retry.trigger, retry.attempt) == ("retry", 2)
    assert f"retried as run {retry.id} (attempt 2 of 2)" in failed.error_message
    assert retry.not_before == t1 + dt.timedelta(seconds=10)  # backoff 10 * 2**0
    assert store.get_flow("a").last_run_status == "pending"

    assert store.claim_pending_run("w2", now=t1 + dt.timedelta(seconds=9)) is None  # still backing off
    taken = store.claim_pending_run("w2", lease_seconds=5, now=t1 + dt.timedelta(seconds=10))
    assert taken is not None and taken.id == retry.id

    [failed2] = store.expire_leases(policy, t1 + dt.timedelta(seconds=16))
    assert failed2.id == retry.id
    assert failed2.error_message is not None and failed2.error_message.endswith("not retried (2 of 2 attempts used)")
    assert store.list_runs(flow="a", status="pending") == []
    assert store.get_flow("a").last_run_status == "failed"


def test_finish_run_records_the_outcome_and_the_flow_status(store: SqlScheduleStore, tmp_path: Path) -> None:
    store.create_flow("a", _config(tmp_path), 60)
    run = store.create_run("a", worker_id="w1")
    assert run.duration is None
    done = store.finish_run(run.id, RunOutcome(
        "failed", records_in=10, records_out=7, dead_letters=3, engine_run_id="run-x",
        error_message="ConnectionError: postgresql://adf:hunter2@db/x refused",
        error_backtrace="Traceback ...\nConnectionError: postgresql://adf:hunter2@db/x refused",
    ))
    assert (done.status, done.records_in, done.records_out, done.dead_letters, done.engine_run_id) == (
        "failed", 10, 7, 3, "run-x"
    )
    assert done.duration is not None and done.duration >= 0
    assert done.to_dict()["duration"] == done.duration
    assert done.error_message == "ConnectionError: postgresql://adf:***@db/x refused"
    assert done.error_backtrace is not None and "hunter2" not in done.error_backtrace
    assert done.lease_expires_at is None
    assert store.get_flow("a").last_run_status == "failed"
    with pytest.raises(ValueError):
        store.finish_run(run.id, RunOutcome("pending"))
    with pytest.raises(NotFoundError):
        store.finish_run(999_999, RunOutcome("success"))


def test_a_late_report_does_not_overturn_an_expired_lease(store: SqlScheduleStore, tmp_path: Path) -> None:
    store.create_flow("a", _config(tmp_path), 60)
    [run] = store.claim_due(T0, worker_id="w1", lease_seconds=1)
    store.expire_leases(RetryPolicy(), T0 + dt.timedelta(seconds=5))
    late = store.finish_run(run.id, RunOutcome("success", records_in=1))
    assert late.status == "failed" and late.records_in is None


def test_list_runs_filters_newest_first(store: SqlScheduleStore, tmp_path: Path) -> None:
    store.create_flow("a", _config(tmp_path, "a"), 60)
    store.create_flow("b", _config(tmp_path, "b"), 60)
    ids = []
    for name in ("a", "b", "a", "a"):
        run = store.create_run(name)
        ids.append(run.id)
    store.finish_run(ids[0], RunOutcome("success"))
    store.finish_run(ids[2], RunOutcome("failed", error_message="boom"))
    assert [r.id for r in store.list_runs()] == ids[::-1]
    assert [r.id for r in store.list_runs(flow="a")] == [ids[3], ids[2], ids[0]]
    assert [r.id for r in store.list_runs(flow="a", status="success")] == [ids[0]]
    assert [r.id for r in store.list_runs(status="pending")] == [ids[3], ids[1]]
    assert [r.id for r in store.list_runs(limit=2, offset=1)] == [ids[2], ids[1]]
    assert store.list_runs(flow="nobody") == []
    with pytest.raises(ValueError):
        store.list_runs(status="exploded")
    assert store.get_run(ids[1]).flow_name == "b"
    with pytest.raises(NotFoundError):
        store.get_run(999_999)


def test_deleting_a_flow_deletes_its_runs(store: SqlScheduleStore, tmp_path: Path) -> None:
    store.create_flow("a", _config(tmp_path), 60)
    store.create_run("a")
    store.delete_flow("a")
    assert _raw(store, "SELECT count(*) FROM data_flow_runs") == [(0,)]
    with pytest.raises(NotFoundError):
        store.delete_flow("a")
    with pytest.raises(NotFoundError):
        store.get_flow("a")
    with pytest.raises(NotFoundError):
        store.create_run("a")


def test_heartbeat_requests_are_logged_with_timestamps(store: SqlScheduleStore) -> None:
    before = utcnow()
    store.log_heartbeat(client="10.0.0.7", outcome="ok", status_code=200, flows_due=3, flows_triggered=2)
    store.log_heartbeat(client="203.0.113.9", outcome="unauthorized", status_code=401,
                        detail="token missing; url redis://:s3cret@cache:6379/0")
    newest, oldest = store.list_heartbeats()
    assert (oldest.client, oldest.outcome, oldest.status_code, oldest.flows_due, oldest.flows_triggered) == (
        "10.0.0.7", "ok", 200, 3, 2
    )
    assert (newest.outcome, newest.status_code) == ("unauthorized", 401)
    assert newest.detail == "token missing; url redis://:***@cache:6379/0"
    assert before <= oldest.ts <= newest.ts <= utcnow()
    assert oldest.ts.tzinfo == dt.UTC
    assert _raw(store, "SELECT count(*) FROM heartbeat_requests") == [(2,)]
    assert len(store.list_heartbeats(limit=1)) == 1
    assert newest.to_dict()["ts"].endswith("Z")
