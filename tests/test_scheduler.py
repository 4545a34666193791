"""The scheduler: ticks (sync and async), workers, trigger now, failures, leases, and the
real concurrency of 16 heartbeats and 4 worker processes on PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flowlib.scheduling import (
    failing_flow,
    file_flow,
    pg_database,
    read_jsonl,
    slow_flow,
    tick_main,
    wait_until,
    worker_main,
)

from active_data_flow.engine import RunSummary
from active_data_flow.handlers.schedule.sql import SqlScheduleStore
from active_data_flow.handlers.schedule.store import NotFoundError, RetryPolicy, RunRecord, utcnow
from active_data_flow.handlers.scheduler import (
    HeartbeatResult,
    Worker,
    execute_run,
    outcome_from_summary,
    tick,
    trigger_run,
)
from active_data_flow.handlers.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'schedule.db'}"
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


def make_settings(url: str, tmp_path: Path, **changes: Any) -> Settings:
    base = Settings(state_dir=str(tmp_path / "state"), database_url=url, lease_seconds=30.0)
    return dataclasses.replace(base, **changes)


@pytest.fixture
def settings(url: str, tmp_path: Path) -> Settings:
    return make_settings(url, tmp_path)


def _count(store: SqlScheduleStore, sql: str) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


# --------------------------------------------------------------------------- ticks


def test_a_sync_tick_runs_due_flows_and_a_failing_one_does_not_stop_the_others(
    store: SqlScheduleStore, settings: Settings, tmp_path: Path
) -> None:
    store.create_flow("bad", failing_flow(tmp_path / "bad.jsonl"), 3600)
    store.create_flow("good", file_flow(tmp_path / "good.jsonl", n=5), 3600)
    result = tick(store, settings, mode="sync")
    assert (result.flows_due, result.flows_triggered, len(result.run_ids)) == (2, 2, 2)
    assert set(result.to_dict()) == {"flows_due", "flows_triggered", "run_ids", "timestamp"}
    assert result.timestamp.endswith("Z")
    by_flow = {r.flow_name: r for r in result.runs}

    good = store.get_run(by_flow["good"].id)
    assert (good.status, good.records_in, good.records_out, good.dead_letters) == ("success", 5, 5, 0)
    assert good.duration is not None and good.duration > 0
    assert good.engine_run_id is not None and good.engine_run_id.startswith(f"run-{good.id}-")
    assert (tmp_path / "state" / "good" / "runs" / good.engine_run_id / "summary.json").is_file()
    assert [r["doubled"] for r in read_jsonl(tmp_path / "good.jsonl")] == [0, 2, 4, 6, 8]

    bad = store.get_run(by_flow["bad"].id)
    assert bad.status == "failed"
    assert bad.error_message is not None
    assert "dead-lettered" in bad.error_message and "max_dead_letters" in bad.error_message
    assert bad.error_backtrace is not None and bad.error_backtrace.startswith("Traceback")
    assert "max_dead_letters" in bad.error_backtrace
    assert bad.ended_at is not None and bad.duration is not None

    assert store.get_flow("good").last_run_status == "success"
    assert store.get_flow("bad").last_run_status == "failed"
    # nothing is due any more: the next tick finds nothing
    again = tick(store, settings, mode="sync")
    assert (again.flows_due, again.flows_triggered, again.run_ids) == (0, 0, [])


def test_an_async_tick_leaves_runs_pending_for_a_worker(store: SqlScheduleStore, settings: Settings, tmp_path: Path) -> None:
    store.create_flow("a", file_flow(tmp_path / "a.jsonl"), 3600)
    store.create_flow("b", file_flow(tmp_path / "b.jsonl"), 3600)
    result = tick(store, settings, mode="async")
    assert (result.flows_due, result.flows_triggered) == (2, 2)
    assert {store.get_run(i).status for i in result.run_ids} == {"pending"}
    assert not (tmp_path / "a.jsonl").exists()

    worker = Worker(store, settings, worker_id="w-test")
    done = [worker.run_once(), worker.run_once()]
    assert worker.run_once() is None
    assert all(isinstance(r, RunRecord) and r.status == "success" and r.worker_id == "w-test" for r in done)
    assert sorted(r.id for r in done if r) == sorted(result.run_ids)
    assert len(read_jsonl(tmp_path / "a.jsonl")) == 3 and len(read_jsonl(tmp_path / "b.jsonl")) == 3


def test_a_sync_heartbeat_is_the_worker_for_pending_runs(store: SqlScheduleStore, settings: Settings, tmp_path: Path) -> None:
    store.create_flow("later", file_flow(tmp_path / "later.jsonl"), 3600)
    queued = trigger_run(store, settings, "later", wait=False)
    result = tick(store, settings, mode="sync")
    # due, but its queued run counts as the run of this interval: that one is executed
    assert (result.flows_due, result.flows_triggered, result.pending_run_ids) == (1, 0, [queued.id])
    assert [r.status for r in result.runs] == ["success"]
    assert len(read_jsonl(tmp_path / "later.jsonl")) == 3


def test_a_sync_heartbeat_retries_a_run_whose_process_died(
    store: SqlScheduleStore, settings: Settings, tmp_path: Path
) -> None:
    store.create_flow("a", file_flow(tmp_path / "a.jsonl"), 3600)
    t0 = utcnow()
    [dead] = store.claim_due(t0, worker_id="gone:1", lease_seconds=1)
    result = tick(store, settings, mode="sync", now=t0 + dt.timedelta(seconds=2))
    assert result.expired_run_ids == [dead.id]
    assert (result.flows_due, result.flows_triggered) == (0, 0)
    [retry] = result.runs
    assert retry.id in result.pending_run_ids
    assert (retry.status, retry.attempt, retry.trigger) == ("success", 2, "retry")
    assert store.get_run(dead.id).status == "failed"
    assert store.get_flow("a").last_run_status == "success"


def test_the_heartbeat_mode_comes_from_the_settings(url: str, tmp_path: Path, store: SqlScheduleStore) -> None:
    store.create_flow("a", file_flow(tmp_path / "a.jsonl"), 3600)
    result = tick(store, make_settings(url, tmp_path, heartbeat_mode="async"))
    assert result.mode == "async" and store.get_run(result.run_ids[0]).status == "pending"
    with pytest.raises(ValueError):
        tick(store, make_settings(url, tmp_path), mode="later")


def test_tick_claims_at_most_claim_limit_flows(url: str, tmp_path: Path, store: SqlScheduleStore) -> None:
    for i in range(5):
        store.create_flow(f"f{i}", file_flow(tmp_path / f"f{i}.jsonl"), 3600)
    limited = make_settings(url, tmp_path, claim_limit=2)
    counts = [tick(store, limited, mode="async").flows_triggered for _ in range(4)]
    assert counts == [2, 2, 1, 0]


def test_trigger_now_runs_a_flow_here_or_leaves_it_for_a_worker(
    store: SqlScheduleStore, settings: Settings, tmp_path: Path
) -> None:
    store.create_flow("a", file_flow(tmp_path / "a.jsonl", n=4), 3600, enabled=False)
    run = trigger_run(store, settings, "a")
    assert (run.status, run.trigger, run.records_out) == ("success", "manual", 4)
    pending = trigger_run(store, settings, "a", trigger="cli", wait=False)
    assert (pending.status, pending.trigger) == ("pending", "cli")
    with pytest.raises(NotFoundError):
        trigger_run(store, settings, "missing")


def test_a_flow_with_reader_processes_runs_under_the_scheduler(
    store: SqlScheduleStore, settings: Settings, tmp_path: Path
) -> None:
    config = file_flow(tmp_path / "par.jsonl", n=40, parallelism=2)
    config["source"]["splits"] = 4
    store.create_flow("par", config, 3600)
    run = trigger_run(store, settings, "par")
    assert (run.status, run.records_in, run.records_out) == ("success", 40, 40)
    assert sorted(r["n"] for r in read_jsonl(tmp_path / "par.jsonl")) == list(range(40))


def test_a_configuration_update_is_applied_on_the_next_run(
    store: SqlScheduleStore, settings: Settings, tmp_path: Path
) -> None:
    store.create_flow("a", file_flow(tmp_path / "first.jsonl", n=2), 3600)
    run = store.create_run("a", worker_id="w", lease_seconds=30)
    store.update_flow("a", configuration=file_flow(tmp_path / "second.jsonl", n=3))
    assert execute_run(store, run, settings, worker_id="w").status == "success"
    assert not (tmp_path / "first.jsonl").exists()
    assert len(read_jsonl(tmp_path / "second.jsonl")) == 3


def test_a_spec_that_became_invalid_fails_the_run_with_its_traceback(
    store: SqlScheduleStore, settings: Settings, tmp_path: Path
) -> None:
    store.create_flow("broken", file_flow(tmp_path / "broken.jsonl"), 3600)
    store.create_flow("fine", file_flow(tmp_path / "fine.jsonl"), 3600)
    # A step module that went away after the flow was saved (the store validated it then).
    broken = {**file_flow(tmp_path / "broken.jsonl"), "steps": [{"type": "python", "function": "flowlib.gone:nothing"}]}
    with store.engine.begin() as conn:
        conn.execute(store._t.flows.update().where(store._t.flows.c.name == "broken").values(configuration=broken))
    result = tick(store, settings, mode="sync")
    runs = {r.flow_name: r for r in result.runs}
    assert runs["fine"].status == "success"
    failed = runs["broken"]
    assert failed.status == "failed"
    assert failed.error_message is not None and failed.error_message.startswith("SpecError:")
    assert "flowlib.gone" in failed.error_message
    assert failed.error_backtrace is not None and "load_flow" in failed.error_backtrace


def test_secrets_never_reach_the_run_record(store: SqlScheduleStore, settings: Settings, tmp_path: Path) -> None:
    config = {
        "source": {"type": "memory", "records": [{"id": 1}]},
        "sink": {"type": "sql", "url": "postgresql://adf:hunter2@127.0.0.1:1/nowhere", "table": "t"},
        # fail at the first refused connection (the unreachable sink is not what this test is about)
        "runtime": {"retries": 0, "sink_error_policy": "fail", "sink_retry": {"window_s": 0}},
    }
    store.create_flow("leaky", config, 3600)
    run = trigger_run(store, settings, "leaky")
    assert run.status == "failed"
    assert run.error_message and run.error_backtrace
    assert "hunter2" not in run.error_message and "hunter2" not in run.error_backtrace


def test_an_executor_that_raises_is_recorded_failed_and_the_tick_goes_on(
    store: SqlScheduleStore, settings: Settings, tmp_path: Path
) -> None:
    store.create_flow("a", file_flow(tmp_path / "a.jsonl"), 3600)
    store.create_flow("b", file_flow(tmp_path / "b.jsonl"), 3600)

    def executor(store_: SqlScheduleStore, run: RunRecord, settings_: Settings, *, worker_id: str) -> RunRecord:
        if run.flow_name == "a":
            raise RuntimeError("executor exploded")
        return execute_run(store_, run, settings_, worker_id=worker_id)

    result = tick(store, settings, mode="sync", executor=executor)
    statuses = {r.flow_name: (r.status, r.error_message) for r in result.runs}
    assert statuses["a"] == ("failed", "RuntimeError: executor exploded")
    assert statuses["b"] == ("success", None)


def _tick_while_expiring(store: SqlScheduleStore, ticking: Any, settings: Settings, *, poll: float = 0.02,
                         executor: Any = None) -> tuple[HeartbeatResult, list[RunRecord]]:
    """A sync tick (on ``ticking``: the store or a wrapper) in a thread, while another
    heartbeat eagerly expires leases every ``poll`` seconds; its result and what expired."""
    box: dict[str, HeartbeatResult] = {}
    ticker = threading.Thread(target=lambda: box.update(
        result=tick(ticking, settings, mode="sync", executor=executor)))
    ticker.start()
    expired: list[RunRecord] = []
    while ticker.is_alive():
        expired.extend(store.expire_leases(RetryPolicy()))
        time.sleep(poll)
    ticker.join()
    return box["result"], expired


def test_a_sync_tick_keeps_the_leases_of_runs_waiting_their_turn(url: str, tmp_path: Path, store: SqlScheduleStore) -> None:
    # Three runs of ~0.5 s each with a 0.6 s lease: the last one waits ~1 s before it starts.
    settings = make_settings(url, tmp_path, lease_seconds=0.6)
    for i in range(3):
        store.create_flow(f"s{i}", slow_flow(tmp_path / f"s{i}.jsonl", n=10, delay=0.05, batch_size=5), 3600)
    result, expired = _tick_while_expiring(store, store, settings, poll=0.05)
    assert expired == []
    assert [r.status for r in result.runs] == ["success"] * 3
    assert store.list_runs(status="pending") == []


class _SlowClaims:
    """The store with a claim that takes ``delay`` seconds longer (a busy database)."""

    def __init__(self, store: SqlScheduleStore, delay: float) -> None:
        self._store = store
        self._delay = delay

    def claim(self, *args: Any, **kwargs: Any) -> Any:
        claimed = self._store.claim(*args, **kwargs)
        time.sleep(self._delay)
        return claimed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_slow_claim_does_not_cost_the_runs_waiting_their_turn_their_leases(
    url: str, tmp_path: Path, store: SqlScheduleStore
) -> None:
    # The claim's leases count from when it was made; here the claim takes 1.5 s of a 2 s
    # lease to come back, and another heartbeat looks for expired leases all the while.
    settings = make_settings(url, tmp_path, lease_seconds=2.0)
    for i in range(3):  # ~0.3 s each: the last one waits past the lease's first 2 s
        store.create_flow(f"w{i}", slow_flow(tmp_path / f"w{i}.jsonl", n=6, delay=0.05, batch_size=3), 3600)
    result, expired = _tick_while_expiring(store, _SlowClaims(store, 1.5), settings)
    assert expired == []
    assert [r.status for r in result.runs] == ["success"] * 3


def test_a_pending_run_claimed_late_in_a_long_sync_tick_gets_a_whole_lease(
    url: str, tmp_path: Path, store: SqlScheduleStore
) -> None:
    # The due flow runs ~1 s, longer than the 0.6 s lease; only then does the tick claim the
    # pending run, and each run takes 0.2 s to get going. The pending run's lease must count
    # from its claim, not from the start of the tick.
    settings = make_settings(url, tmp_path, lease_seconds=0.6)
    store.create_flow("long", slow_flow(tmp_path / "long.jsonl", n=10, delay=0.1, batch_size=5), 3600)
    store.create_flow("later", file_flow(tmp_path / "later.jsonl"), 3600, enabled=False)
    pending = trigger_run(store, settings, "later", wait=False)

    def slow_to_start(store: Any, run: RunRecord, settings: Settings, *, worker_id: str) -> RunRecord:
        time.sleep(0.2)
        return execute_run(store, run, settings, worker_id=worker_id)

    result, expired = _tick_while_expiring(store, store, settings, executor=slow_to_start)
    assert expired == []
    assert result.pending_run_ids == [pending.id]
    assert store.get_run(pending.id).status == "success"


# --------------------------------------------------------------------------- workers and signals


def test_run_forever_stops_when_told(store: SqlScheduleStore, settings: Settings, tmp_path: Path) -> None:
    store.create_flow("a", file_flow(tmp_path / "a.jsonl"), 3600)
    tick(store, settings, mode="async")
    stop = threading.Event()
    worker = Worker(store, settings, poll_seconds=0.02)
    assert worker.worker_id == f"{os.uname().nodename}:{os.getpid()}"
    box: dict[str, int] = {}
    thread = threading.Thread(target=lambda: box.update(n=worker.run_forever(stop)))
    thread.start()
    assert wait_until(lambda: store.list_runs(status="success") != [], timeout=30)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive() and box["n"] == 1


@pytest.mark.slow
def test_sigterm_lets_the_worker_finish_its_run_then_exit(url: str, tmp_path: Path, store: SqlScheduleStore) -> None:
    out = tmp_path / "slow.jsonl"
    store.create_flow("slow", slow_flow(out, n=40, delay=0.05, batch_size=5), 3600)
    settings = make_settings(url, tmp_path)
    [run_id] = tick(store, settings, mode="async").run_ids
    script = (
        "import sys; from active_data_flow.handlers.schedule.sql import SqlScheduleStore; from active_data_flow.handlers.scheduler import Worker;"
        "from active_data_flow.handlers.settings import Settings;"
        f"s = SqlScheduleStore({url!r});"
        f"n = Worker(s, Settings(state_dir={settings.state_dir!r}, database_url={url!r}), poll_seconds=0.05).run_forever();"
        "print('runs', n); sys.exit(0)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: len(read_jsonl(out)) >= 5, timeout=60)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "runs 1" in stdout
    assert store.get_run(run_id).status == "success"
    assert sorted(r["n"] for r in read_jsonl(out)) == list(range(40))


@pytest.mark.postgres
@pytest.mark.slow
def test_a_worker_killed_mid_run_is_failed_after_its_lease_and_retried_without_loss(tmp_path: Path) -> None:
    with pg_database() as url, SqlScheduleStore(url) as store:
        out = tmp_path / "slow.jsonl"
        n, batch = 60, 5
        store.create_flow("slowpoke", slow_flow(out, n=n, delay=0.04, batch_size=batch), 3600)
        settings = make_settings(url, tmp_path, lease_seconds=1.5, heartbeat_mode="async")
        [first_id] = tick(store, settings).run_ids

        ctx = multiprocessing.get_context("spawn")
        stop = ctx.Event()
        proc = ctx.Process(target=worker_main, args=(url, dataclasses.asdict(settings), stop, "doomed-worker"))
        proc.start()
        try:
            assert wait_until(lambda: len(read_jsonl(out)) >= 15, timeout=60)
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(timeout=10)
        finally:
            if proc.is_alive():
                proc.kill()
        assert proc.exitcode == -signal.SIGKILL
        assert 15 <= len(read_jsonl(out)) < n
        assert store.get_run(first_id).status == "in_progress"

        # Within the lease nothing happens; after it, the next heartbeat fails it and retries.
        assert tick(store, settings).expired_run_ids == []
        time.sleep(1.6)
        result = tick(store, settings)
        assert result.expired_run_ids == [first_id]
        failed = store.get_run(first_id)
        assert failed.status == "failed"
        assert failed.error_message is not None
        assert failed.error_message.startswith("lease expired at ")
        # recorded when the run started: a run that died can be found in the state directory
        assert failed.engine_run_id is not None and failed.engine_run_id.startswith(f"run-{first_id}-")
        assert ": worker doomed-worker stopped renewing" in failed.error_message
        [retry] = store.list_runs(flow="slowpoke", status="pending")
        assert (retry.attempt, retry.trigger) == (2, "retry")

        done = Worker(store, settings, worker_id="rescuer").run_once()
        assert done is not None and done.id == retry.id and done.status == "success"
        # The engine resumed the killed run's checkpoint: every record, at most one batch twice.
        assert done.engine_run_id == failed.engine_run_id
        values = [r["n"] for r in read_jsonl(out)]
        assert set(values) == set(range(n))
        assert len(values) - n <= batch
        assert store.get_flow("slowpoke").last_run_status == "success"


# --------------------------------------------------------------------------- run ids and statuses


def ledger_flow(out: Path) -> dict[str, Any]:
    """11 records, 3 refused by the schema (2 amounts that are not numbers, 1 id): a partial run."""
    records = [{"id": i, "amount": "n/a" if i in (3, 5) else i * 1.5} for i in range(10)] + [{"id": "x", "amount": 1}]
    return {
        "source": {"type": "memory", "records": records},
        "schema": {"id": "integer", "amount": "decimal"},
        "sink": {"type": "file", "path": str(out), "format": "jsonl"},
        "runtime": {"batch_size": 4},
    }


def _run_files(tmp_path: Path, flow: str, engine_run_id: str | None) -> dict[str, bytes]:
    assert engine_run_id
    run_dir = tmp_path / "state" / flow / "runs" / engine_run_id
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def test_a_run_with_some_dead_letters_is_partial_final_and_not_retried(
    store: SqlScheduleStore, settings: Settings, tmp_path: Path
) -> None:
    store.create_flow("ledger", ledger_flow(tmp_path / "ledger.jsonl"), 3600)
    result = tick(store, settings, mode="sync")
    [run] = result.runs
    assert (run.status, run.records_in, run.records_out, run.dead_letters) == ("partial", 11, 8, 3)
    recorded = store.get_run(run.id)
    assert recorded == run and recorded.ended_at is not None and recorded.lease_expires_at is None
    # one line naming the reasons, the most frequent first; no backtrace (nothing raised)
    message = recorded.error_message or ""
    assert message.startswith("3 records dead-lettered: 2") and "\n" not in message
    assert "field 'amount'" in message and "field 'id'" in message
    assert message.index("field 'amount'") < message.index("field 'id'")
    assert recorded.error_backtrace is None
    assert store.get_flow("ledger").last_run_status == "partial"
    assert [r.id for r in store.list_runs(status="partial")] == [run.id]
    assert len(read_jsonl(tmp_path / "ledger.jsonl")) == 8
    files = _run_files(tmp_path, "ledger", recorded.engine_run_id)
    assert files["dead_letters.jsonl"].count(b"\n") == 3
    # final: no retry, not even once its lease would have run out, and the flow is not busy
    later = utcnow() + dt.timedelta(seconds=settings.lease_seconds * 10)
    assert store.expire_leases(RetryPolicy(max_attempts=3), later) == []
    again = tick(store, settings, mode="sync", now=later + dt.timedelta(seconds=3600))
    assert again.flows_triggered == 1 and again.pending_run_ids == []
    assert [r.status for r in store.list_runs(flow="ledger")] == ["partial", "partial"]


def test_engine_statuses_map_to_run_statuses() -> None:
    def outcome(status: str, **fields: Any) -> tuple[str, str | None]:
        summary = RunSummary(flow="f", run_id="run-1-ab", status=status, records_in=5, records_out=4, **fields)
        got = outcome_from_summary(summary)
        assert (got.records_in, got.records_out, got.engine_run_id) == (5, 4, "run-1-ab")
        return got.status, got.error_message

    assert outcome("success") == ("success", None)
    assert outcome("stopped") == ("success", None)  # an unbounded run that was stopped did its work
    reasons = [{"reason": f"reason {i}", "count": 5 - i} for i in range(5)]
    status, message = outcome("partial", dead_letters=15, dead_letter_reasons=reasons)
    assert status == "partial" and message is not None
    assert message.startswith("15 records dead-lettered: 5") and "reason 2" in message and "reason 3" not in message
    assert message.endswith("; …")
    assert outcome("failed", error="boom", error_type="ValueError") == ("failed", "ValueError: boom")
    assert outcome("exploded")[0] == "failed"


def test_run_ids_and_engine_run_ids_are_never_reused(
    url: str, store: SqlScheduleStore, settings: Settings, tmp_path: Path
) -> None:
    flow = store.create_flow("ids", ledger_flow(tmp_path / "ids.jsonl"), 3600)
    [first] = tick(store, settings, mode="sync").runs
    old = _run_files(tmp_path, "ids", first.engine_run_id)
    assert {"summary.json", "dead_letters.jsonl"} <= set(old)

    # removed and added again: SQLite handed the deleted newest ids out again before
    store.delete_flow("ids")
    again = store.create_flow("ids", ledger_flow(tmp_path / "ids.jsonl"), 3600)
    [second] = tick(store, settings, mode="sync").runs
    assert again.id > flow.id and second.id > first.id
    assert second.status == "partial" and second.engine_run_id not in (None, first.engine_run_id)
    assert _run_files(tmp_path, "ids", first.engine_run_id) == old

    # a schedule database made again from nothing starts its ids over; the engine's do not
    store.close()
    with SqlScheduleStore(url) as dropper, dropper.engine.begin() as conn:
        for table in ("data_flow_runs", "data_flows", "heartbeat_requests", "alembic_version"):
            conn.execute(sa.text(f"DROP TABLE {table}"))
    with SqlScheduleStore(url) as fresh:
        fresh.create_flow("ids", ledger_flow(tmp_path / "ids.jsonl"), 3600)
        [third] = tick(fresh, settings, mode="sync").runs
    assert third.id == first.id
    assert third.engine_run_id not in (None, first.engine_run_id, second.engine_run_id)
    assert _run_files(tmp_path, "ids", first.engine_run_id) == old
    summary = json.loads(old["summary.json"])
    assert (summary["run_id"], summary["dead_letters"]) == (first.engine_run_id, 3)


# --------------------------------------------------------------------------- real concurrency


def _create_flows(store: SqlScheduleStore, tmp_path: Path, count: int) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for i in range(count):
        store.create_flow(f"flow-{i:04d}", file_flow(out / f"flow-{i:04d}.jsonl", n=2), 3600)


def _assert_each_flow_ran_once(store: SqlScheduleStore, tmp_path: Path, count: int) -> None:
    with store.engine.connect() as conn:
        per_flow = Counter(dict(conn.execute(sa.text(
            "SELECT f.name, count(r.id) FROM data_flows f LEFT JOIN data_flow_runs r ON r.flow_id = f.id GROUP BY f.name"
        )).all()))
        statuses = Counter(dict(conn.execute(sa.text(
            "SELECT status, count(*) FROM data_flow_runs GROUP BY status"
        )).all()))
    duplicates = {name: c for name, c in per_flow.items() if c > 1}
    missed = [name for name, c in per_flow.items() if c == 0]
    assert (len(per_flow), duplicates, missed) == (count, {}, [])
    assert statuses == Counter({"success": count})
    for i in range(count):
        assert len(read_jsonl(tmp_path / "out" / f"flow-{i:04d}.jsonl")) == 2


@pytest.mark.postgres
@pytest.mark.slow
def test_16_async_heartbeats_and_4_workers_run_500_flows_exactly_once(tmp_path: Path) -> None:
    count = 500
    with pg_database() as url, SqlScheduleStore(url) as store:
        _create_flows(store, tmp_path, count)
        settings = make_settings(url, tmp_path, heartbeat_mode="async", claim_limit=25, lease_seconds=60.0)
        ctx = multiprocessing.get_context("spawn")
        # every heartbeat opens its store, then all tick at once (a barrier), racing the workers
        stop, start, results = ctx.Event(), ctx.Barrier(16), ctx.Queue()
        as_dict = dataclasses.asdict(settings)
        workers = [
            ctx.Process(target=worker_main, args=(url, as_dict, stop, f"worker-{i}", 0.02)) for i in range(4)
        ]
        heartbeats = [ctx.Process(target=tick_main, args=(url, as_dict, start, results, "async", 50)) for _ in range(16)]
        try:
            for p in workers + heartbeats:
                p.start()
            ticks: list[tuple[int, list[int]]] = []
            finished = 0
            while finished < len(heartbeats):
                item = results.get(timeout=120)
                if item is None:
                    finished += 1
                else:
                    ticks.append(item)
            for p in heartbeats:
                p.join(timeout=30)
                assert p.exitcode == 0
            assert wait_until(lambda: _count(store, "SELECT count(*) FROM data_flow_runs WHERE status = 'success'") >= count
                              or _count(store, "SELECT count(*) FROM data_flow_runs WHERE status = 'failed'") > 0,
                              timeout=240, interval=0.2)
        finally:
            stop.set()
            for p in workers:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
            for p in heartbeats:
                if p.is_alive():
                    p.kill()
        claimed = [run_id for _, run_ids in ticks for run_id in run_ids]
        assert len(claimed) == len(set(claimed)) == count
        assert len(ticks) >= 16
        _assert_each_flow_ran_once(store, tmp_path, count)
        worker_ids = {r.worker_id for r in store.list_runs(limit=count)}
        assert worker_ids <= {f"worker-{i}" for i in range(4)} and len(worker_ids) >= 2


@pytest.mark.postgres
@pytest.mark.slow
def test_16_concurrent_sync_heartbeats_run_200_flows_exactly_once(tmp_path: Path) -> None:
    count = 200
    with pg_database() as url, SqlScheduleStore(url) as setup:
        _create_flows(setup, tmp_path, count)
        settings = make_settings(url, tmp_path, heartbeat_mode="sync", claim_limit=10)
        start = threading.Barrier(16)
        results: list[HeartbeatResult] = []
        errors: list[BaseException] = []

        def heartbeat() -> None:
            store = SqlScheduleStore(url)
            try:
                start.wait()
                while True:
                    result = tick(store, settings)
                    results.append(result)
                    if result.flows_due == 0:
                        return
            except BaseException as exc:
                errors.append(exc)
            finally:
                store.close()

        threads = [threading.Thread(target=heartbeat) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert errors == []
        run_ids = [i for r in results for i in r.run_ids]
        assert len(run_ids) == len(set(run_ids)) == count
        assert sum(r.flows_triggered for r in results) == count
        assert all(run.status == "success" for r in results for run in r.runs)
        _assert_each_flow_ran_once(setup, tmp_path, count)


def test_timestamps_are_utc_iso(store: SqlScheduleStore, settings: Settings, tmp_path: Path) -> None:
    now = dt.datetime(2031, 5, 6, 7, 8, 9, 123000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    store.create_flow("a", file_flow(tmp_path / "a.jsonl"), 3600)
    result = tick(store, settings, mode="async", now=now)
    assert result.timestamp == "2031-05-06T05:08:09.123Z"
    assert store.get_run(result.run_ids[0]).created_at == now.astimezone(dt.UTC)
    assert store.get_flow("a").next_run_at == now + dt.timedelta(seconds=3600)
    assert utcnow() < now
