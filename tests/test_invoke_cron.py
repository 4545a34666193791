"""active_data_flow.handlers.invoke.handle_cron: a cron tick runs the due flows of a schedule store (SQLite)
with the host's configuration layers, store and persist setting."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from active_data_flow.handlers.invoke import LocalHost, handle_cron
from active_data_flow.handlers.schedule.sql import SqlScheduleStore
from active_data_flow.handlers.settings import Settings
from active_data_flow.state import MemoryStateStore


@pytest.fixture
def schedule(tmp_path: Path) -> Iterator[tuple[SqlScheduleStore, Settings]]:
    url = f"sqlite:///{tmp_path / 'schedule.db'}"
    store = SqlScheduleStore(url)
    settings = Settings(state_dir=str(tmp_path / "state"), database_url=url, lease_seconds=30.0)
    yield store, settings
    store.close()


def numbers_flow(path: Path) -> dict[str, Any]:
    return {
        "source": {"type": "memory", "records": [{"n": i} for i in range(6)]},
        "steps": [{"type": "filter", "field": "n", "op": "lt", "value": 4}],
        "sink": {"type": "file", "path": str(path)},
    }


def test_a_tick_runs_the_due_flows_with_the_host_layers(schedule: tuple[SqlScheduleStore, Settings], tmp_path: Path) -> None:
    store, settings = schedule
    spec_path, variable_path = tmp_path / "spec.jsonl", tmp_path / "from_variable.jsonl"
    store.create_flow("nightly", numbers_flow(spec_path), 3600)
    kv = MemoryStateStore()
    kv.set("config/nightly", {"steps.0.value": 3})
    host = LocalHost({}, persist=False, store=kv, environ={},
                     variables={"adf_flow_nightly_sink_path": str(variable_path)}, state_dir=tmp_path / "state")
    result = handle_cron(host, store, settings, timestamp=int(time.time()) + 1)
    assert result["status"] == "ok", result
    assert (result["flows_due"], result["flows_triggered"]) == (1, 1)
    [run] = result["runs"]
    assert (run["flow"], run["status"], run["records_in"], run["records_out"]) == ("nightly", "success", 6, 3)
    assert [json.loads(line) for line in variable_path.read_text().splitlines()] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert not spec_path.exists()
    assert not (tmp_path / "state").exists()  # persist=False: no checkpoint or run files
    recorded = store.get_run(run["id"])
    assert recorded.status == "success" and (recorded.engine_run_id or "").startswith(f"run-{run['id']}-")
    # not due again within its interval
    again = handle_cron(host, store, settings, timestamp=(time.time() + 2) * 1000)  # milliseconds work too
    assert (again["status"], again["flows_due"], again["runs"]) == ("ok", 0, [])


def test_a_failing_flow_is_recorded_and_the_others_still_run(schedule: tuple[SqlScheduleStore, Settings], tmp_path: Path) -> None:
    store, settings = schedule
    store.create_flow("good", numbers_flow(tmp_path / "good.jsonl"), 60)
    store.create_flow("bad", {
        "source": {"type": "memory", "records": [{"name": "boom"}]},
        "steps": [{"type": "python", "function": "flowlib.steps:batch_upper", "batch": True}],
        "sink": {"type": "stdout"},
        "runtime": {"max_dead_letters": 0},
    }, 60)
    host = LocalHost({}, persist=True, environ={}, state_dir=tmp_path / "state")
    result = handle_cron(host, store, settings)
    runs = {r["flow"]: r for r in result["runs"]}
    assert runs["good"]["status"] == "success" and runs["good"]["records_out"] == 4
    assert runs["bad"]["status"] == "failed" and "max_dead_letters" in runs["bad"]["error"]
    assert store.get_run(runs["bad"]["id"]).error_backtrace
    assert (tmp_path / "state" / "good").is_dir()  # persist=True: the engine's files are there
    host.close()


def test_a_broken_schedule_store_is_an_error_result_not_an_exception(tmp_path: Path) -> None:
    class Unreachable(SqlScheduleStore):
        def expire_leases(self, *args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("database is down")

    url = f"sqlite:///{tmp_path / 'schedule.db'}"
    store = Unreachable(url)
    host = LocalHost({}, persist=False, environ={})
    result = handle_cron(host, store, Settings(state_dir=str(tmp_path), database_url=url))
    store.close()
    assert result["status"] == "error" and result["error_id"] and result["trigger"] == "cron"
    assert "database is down" not in result["error"]  # details only in the log


def test_a_tick_runs_flows_where_threads_cannot_start(
    schedule: tuple[SqlScheduleStore, Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    store, settings = schedule
    out = tmp_path / "out.jsonl"
    store.create_flow("f", numbers_flow(out), 60)

    def no_threads(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_threads)  # as inside a component
    result = handle_cron(LocalHost({}, persist=False, environ={}), store, settings)
    assert result["status"] == "ok" and result["runs"][0]["status"] == "success", result
    assert [json.loads(line) for line in out.read_text().splitlines()] == [{"n": i} for i in range(4)]
