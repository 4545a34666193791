"""active_data_flow.lambda_app.schedule: an EventBridge scheduled event ticks the heartbeat over SqlScheduleStore
(SQLite; PostgreSQL with a throwaway database under @pytest.mark.postgres)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flowlib.scheduling import file_flow, pg_database
from lambda_env import Context, event

from active_data_flow.handlers.schedule.sql import SqlScheduleStore
from active_data_flow.lambda_app import schedule


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("ADF_FLOWS_DIR", str(tmp_path / "no-flows"))
    monkeypatch.setenv("ADF_STATE_DIR", str(tmp_path / "state"))
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'schedule.db'}"
        monkeypatch.setenv("ADF_DATABASE_URL", url)
        yield url
    else:
        with pg_database() as url:
            monkeypatch.setenv("ADF_DATABASE_URL", url)
            yield url
            store = schedule._stores.pop(url, None)
            if store is not None:
                store.close()


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_scheduled_event_runs_the_due_flows_once(database: str, tmp_path: Path) -> None:
    with SqlScheduleStore(database) as store:
        store.create_flow("a", file_flow(tmp_path / "a.jsonl"), 3600)
        store.create_flow("b", file_flow(tmp_path / "b.jsonl", n=2), 3600)
    result = schedule.handler(event("cloudwatch-scheduled-event"), Context())
    assert result["status"] == "ok"
    assert result["flows_due"] == result["flows_triggered"] == 2
    assert sorted((r["flow"], r["status"], r["records_out"]) for r in result["runs"]) == [
        ("a", "success", 3), ("b", "success", 2)]
    assert read(tmp_path / "a.jsonl") == [{"n": i, "doubled": 2 * i} for i in range(3)]
    # the next tick within the interval finds nothing due
    again = schedule.handler(event("cloudwatch-scheduled-event"), Context())
    assert again["flows_triggered"] == 0
    with SqlScheduleStore(database) as store:
        assert len(store.list_runs()) == 2


def test_a_failing_flow_is_recorded_and_the_others_run(database: str, tmp_path: Path) -> None:
    with SqlScheduleStore(database) as store:
        store.create_flow("good", file_flow(tmp_path / "good.jsonl"), 60)
        bad = file_flow(tmp_path / "bad.jsonl", max_dead_letters=0)
        bad["steps"] = [{"type": "python", "function": "flowlib.steps:explode_on_sevens"}]
        bad["source"]["records"] = [{"n": 7}]
        store.create_flow("bad", bad, 60)
    result = schedule.handler(event("cloudwatch-scheduled-event"), Context())
    by_flow = {r["flow"]: r for r in result["runs"]}
    assert by_flow["good"]["status"] == "success"
    assert by_flow["bad"]["status"] == "failed" and "dead-lettered" in by_flow["bad"]["error"]


@pytest.mark.postgres
def test_concurrent_invocations_run_each_due_flow_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADF_FLOWS_DIR", str(tmp_path / "no-flows"))
    with pg_database() as url:
        monkeypatch.setenv("ADF_DATABASE_URL", url)
        with SqlScheduleStore(url) as store:
            for i in range(6):
                store.create_flow(f"f{i}", file_flow(tmp_path / f"f{i}.jsonl"), 3600)
        results: list[dict[str, Any]] = []
        threads = [threading.Thread(target=lambda: results.append(
            schedule.handler(event("cloudwatch-scheduled-event"), Context()))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r["flows_triggered"] for r in results) == 6
        with SqlScheduleStore(url) as store:
            assert sorted(r.flow_name for r in store.list_runs()) == [f"f{i}" for i in range(6)]
        store = schedule._stores.pop(url, None)
        if store is not None:
            store.close()


def test_unreachable_database_fails_the_invocation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADF_FLOWS_DIR", str(tmp_path / "no-flows"))
    monkeypatch.setenv("ADF_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    with pytest.raises(Exception):  # noqa: B017 - the store or the tick refuses; either fails the invocation
        schedule.handler(event("cloudwatch-scheduled-event"), Context())
