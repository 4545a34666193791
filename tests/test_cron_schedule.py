"""Cron flows on the heartbeat: a frozen clock walks the heartbeat across real daylight-saving
changes and the flow runs exactly when a calendar says — through the store (SQLite,
PostgreSQL, and the bare sqlite3 store that runs inside Spin) and the engine."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flowlib.scheduling import file_flow, pg_database

from active_data_flow.handlers.schedule import policy
from active_data_flow.handlers.schedule.sql import SqlScheduleStore
from active_data_flow.handlers.schedule.sqlite_exec import ExecScheduleStore, Sqlite3Exec
from active_data_flow.handlers.schedule.store import FlowValidationError, ScheduleStore
from active_data_flow.handlers.scheduler import tick
from active_data_flow.handlers.settings import Settings

UTC = dt.UTC


class FrozenClock:
    """The store's clock, moved by the test only."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    frozen = FrozenClock(dt.datetime(2026, 1, 1, tzinfo=UTC))
    monkeypatch.setattr(policy, "utcnow", frozen)
    return frozen


@pytest.fixture(params=["sqlite", "sqlite3-exec", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ScheduleStore]:
    if request.param == "sqlite":
        s: ScheduleStore = SqlScheduleStore(f"sqlite:///{tmp_path / 'schedule.db'}")
        yield s
        s.close()
    elif request.param == "sqlite3-exec":
        s = ExecScheduleStore(Sqlite3Exec(str(tmp_path / "exec.db")))
        yield s
        s.close()
    else:
        with pg_database() as url:
            s = SqlScheduleStore(url)
            yield s
            s.close()


def _walk(
    store: ScheduleStore,
    clock: FrozenClock,
    settings: Settings,
    start: dt.datetime,
    end: dt.datetime,
    step: dt.timedelta,
) -> list[str]:
    """Heartbeats every ``step`` from ``start`` to ``end`` on the frozen clock; the local times
    (in the flow's zone) the flow ran at."""
    ran: list[str] = []
    t = start
    while t <= end:
        clock.now = t
        result = tick(store, settings, mode="sync", now=t)
        for run in result.runs:
            assert store.get_run(run.id).status == "success"
            ran.append(t.isoformat())
        t += step
    return ran


CASES: list[tuple[str, str, dt.datetime, list[str]]] = [
    # Berlin, clocks forward 2026-03-29 02:00 -> 03:00: 02:30 is skipped and runs at 03:00 CEST
    (
        "30 2 * * *",
        "Europe/Berlin",
        dt.datetime(2026, 3, 27, 12, tzinfo=UTC),
        ["2026-03-28T01:30:00+00:00", "2026-03-29T01:00:00+00:00", "2026-03-30T00:30:00+00:00"],
    ),
    # Berlin, clocks back 2026-10-25 03:00 -> 02:00: 02:30 happens twice and runs once, the first time
    (
        "30 2 * * *",
        "Europe/Berlin",
        dt.datetime(2026, 10, 23, 12, tzinfo=UTC),
        ["2026-10-24T00:30:00+00:00", "2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"],
    ),
    # New York weekdays at 06:00 over the spring change (Friday -05:00, Monday -04:00)
    (
        "0 6 * * MON-FRI",
        "America/New_York",
        dt.datetime(2026, 3, 5, 12, tzinfo=UTC),
        ["2026-03-06T11:00:00+00:00", "2026-03-09T10:00:00+00:00", "2026-03-10T10:00:00+00:00"],
    ),
]


@pytest.mark.parametrize(("cron", "zone", "start", "calendar"), CASES)
def test_a_cron_flow_runs_exactly_as_the_calendar_says_across_a_dst_change(
    store: ScheduleStore,
    clock: FrozenClock,
    tmp_path: Path,
    cron: str,
    zone: str,
    start: dt.datetime,
    calendar: list[str],
) -> None:
    settings = Settings(state_dir=str(tmp_path / "state"), lease_seconds=30.0)
    out = tmp_path / "out.jsonl"
    clock.now = start
    flow = store.create_flow("daily", file_flow(out), schedule={"cron": cron, "timezone": zone})
    assert flow.run_interval is None and flow.schedule == {"cron": cron, "timezone": zone}
    # not due at once: its first run is the first cron instant
    assert flow.next_run_at is not None and flow.next_run_at.isoformat() == calendar[0]
    # heartbeats every 10 minutes until 6 hours past the last calendar entry
    end = dt.datetime.fromisoformat(calendar[-1]) + dt.timedelta(hours=6)
    ran = _walk(store, clock, settings, start, end, dt.timedelta(minutes=10))
    assert ran == calendar
    assert [r.status for r in store.list_runs(flow="daily")] == ["success"] * len(calendar)


def test_missed_ticks_run_once_and_the_next_run_follows_the_calendar(
    store: ScheduleStore, clock: FrozenClock, tmp_path: Path
) -> None:
    settings = Settings(state_dir=str(tmp_path / "state"), lease_seconds=30.0)
    clock.now = dt.datetime(2026, 3, 1, tzinfo=UTC)
    store.create_flow(
        "hourly", file_flow(tmp_path / "o.jsonl"), schedule={"cron": "0 * * * *", "timezone": "UTC"}
    )
    # nothing called the heartbeat for 30 hours: one run, not thirty
    late = dt.datetime(2026, 3, 2, 6, 17, tzinfo=UTC)
    clock.now = late
    assert tick(store, settings, mode="sync", now=late).flows_triggered == 1
    assert tick(store, settings, mode="sync", now=late + dt.timedelta(minutes=5)).flows_triggered == 0
    flow = store.get_flow("hourly")
    assert flow.next_run_at == dt.datetime(2026, 3, 2, 7, tzinfo=UTC)
    assert flow.to_dict()["next_run"] == "2026-03-02T07:00:00+00:00"


def test_next_run_is_shown_in_the_schedules_zone_and_switching_schedules_moves_it(
    store: ScheduleStore, clock: FrozenClock, tmp_path: Path
) -> None:
    clock.now = dt.datetime(2026, 3, 27, 12, tzinfo=UTC)  # a Friday
    store.create_flow("f", file_flow(tmp_path / "o.jsonl"), 300)
    flow = store.update_flow("f", schedule={"cron": "0 6 * * 1-5", "timezone": "Europe/Berlin"})
    assert flow.to_dict()["next_run"] == "2026-03-30T06:00:00+02:00"
    assert flow.to_dict()["run_interval"] is None
    back = store.update_flow("f", run_interval=60)
    assert back.schedule is None and back.run_interval == 60 and back.to_dict()["schedule"] is None
    assert store.update_flow("f", enabled=False).to_dict()["next_run"] is None


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"run_interval": 60, "schedule": {"cron": "* * * * *"}}, "not both"),
        ({}, "run_interval: is required"),
        ({"schedule": {"cron": "0 6 * *"}}, "schedule.cron: cron '0 6 * *' has 4 field(s)"),
        ({"schedule": {"cron": "0 25 * * *"}}, "schedule.cron: hour '25': out of range"),
        (
            {"schedule": {"cron": "0 6 * * *", "timezone": "Europe/Atlantis"}},
            "schedule.timezone: unknown time zone",
        ),
        ({"schedule": {"cron": "0 6 * * *", "every": 2}}, "schedule: unknown key(s) every"),
        ({"schedule": {"timezone": "UTC"}}, "schedule.cron: is required"),
        ({"schedule": "0 6 * * *"}, "schedule: must be a mapping"),
    ],
)
def test_a_bad_schedule_is_refused_before_anything_is_saved(
    store: ScheduleStore, tmp_path: Path, kwargs: dict[str, Any], problem: str
) -> None:
    with pytest.raises(FlowValidationError) as err:
        store.create_flow("bad", file_flow(tmp_path / "o.jsonl"), **kwargs)
    assert any(problem in p for p in err.value.problems), err.value.problems
    assert store.list_flows() == []
    store.create_flow("good", file_flow(tmp_path / "o.jsonl"), 60)
    if kwargs:  # the same refusal when changing a flow
        with pytest.raises(FlowValidationError):
            store.update_flow("good", **kwargs)
    assert store.get_flow("good").run_interval == 60


def test_adf_flows_add_takes_a_cron_schedule_and_lists_its_next_run(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "ADF_STATE_DIR": str(tmp_path / "state")}
    spec = tmp_path / "flow.yaml"
    spec.write_text(
        f"source: {{type: memory, records: [{{n: 1}}]}}\nsink: {{type: file, path: '{tmp_path / 'o.jsonl'}'}}\n"
    )

    def adf(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "active_data_flow.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    res = adf(
        "flows",
        "add",
        "berlin",
        "--spec",
        str(spec),
        "--cron",
        "0 6 * * 1-5",
        "--timezone",
        "Europe/Berlin",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    flow = json.loads(res.stdout.strip().splitlines()[-1])
    assert flow["schedule"] == {"cron": "0 6 * * 1-5", "timezone": "Europe/Berlin"}
    assert flow["next_run"].endswith(("T06:00:00+01:00", "T06:00:00+02:00"))
    listed = adf("flows", "list")
    assert "cron '0 6 * * 1-5' Europe/Berlin" in listed.stdout and flow["next_run"][:19] in listed.stdout
    res = adf("flows", "add", "both", "--spec", str(spec), "--cron", "0 6 * * *", "--interval", "60")
    assert res.returncode != 0 and "not both" in res.stderr
    res = adf(
        "flows", "add", "zone", "--spec", str(spec), "--cron", "0 6 * * *", "--timezone", "Nowhere/City"
    )
    assert res.returncode != 0 and "unknown time zone 'Nowhere/City'" in res.stderr
