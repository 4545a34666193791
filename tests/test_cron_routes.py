"""Calendars beyond the heartbeat's store: a spec's ``runtime.schedule``, the one-line form
(``CRON_TZ=Europe/Berlin 0 6 * * 1-5``) of Spin cron routes, the zone database a component
bundles, and ``adf flows add`` taking the spec's own schedule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from active_data_flow.cron import (
    CronError,
    needs_zone_database,
    parse_cron,
    schedule_text,
    split_schedule_text,
)
from active_data_flow.errors import ConfigError
from active_data_flow.spec import parse_spec
from active_data_flow.spin_app.build import bundle_source
from active_data_flow.spin_app.build import needs_zone_database as bundle_needs_zones
from active_data_flow.spin_app.manifest.routes import default_cron_key, parse_route, route_key_problem
from tests.package_tree import package_parent

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "+05:30", "-03:00", "Australia/Lord_Howe"]
EXPRESSIONS = ["0 6 * * 1-5", "*/15 * * * *", "30 2 * * 0", "@daily", "0 0 12 1 * *", "5 4 1,15 * MON"]


@given(st.sampled_from(EXPRESSIONS), st.sampled_from(ZONES), st.sampled_from(["", " ", "  "]))
def test_one_line_schedules_round_trip(expression: str, zone: str, pad: str) -> None:
    text = pad + schedule_text(expression, zone) + pad
    assert split_schedule_text(text) == (" ".join(expression.split()), zone)
    assert (zone == "UTC") == (not text.strip().startswith("CRON_TZ="))
    parse_cron(*split_schedule_text(text))  # what the route says, the store's parser reads


def test_one_line_schedules_name_what_is_wrong() -> None:
    assert split_schedule_text("TZ=Asia/Tokyo 0 9 * * *") == ("0 9 * * *", "Asia/Tokyo")
    with pytest.raises(CronError, match="CRON_TZ=<zone> <expression>"):
        split_schedule_text("CRON_TZ=Europe/Berlin")
    assert needs_zone_database("Europe/Berlin") and not needs_zone_database("UTC")
    assert not needs_zone_database("+02:00") and not needs_zone_database(None)


def test_cron_routes_take_seconds_or_a_calendar_and_refuse_the_rest() -> None:
    route = parse_route("cron:CRON_TZ=Europe/Berlin 0 6 * * 1-5=report")
    assert (route.kind, route.key, route.flow) == ("cron", "CRON_TZ=Europe/Berlin 0 6 * * 1-5", "report")
    assert route_key_problem("cron", "300") is None
    assert route_key_problem("cron", "0 6 * * 1-5") is None
    assert "interval must be more than 0" in (route_key_problem("cron", "0") or "")
    assert "hour '25': out of range" in (route_key_problem("cron", "0 25 * * *") or "")
    assert "unknown time zone 'Mars/Olympus'" in (route_key_problem("cron", "CRON_TZ=Mars/Olympus 0 6 * * *") or "")


def test_a_spec_names_its_calendar_in_runtime_schedule() -> None:
    base = {"name": "f", "source": {"type": "memory", "records": []}, "sink": {"type": "stdout"}}
    spec = parse_spec({**base, "runtime": {"schedule": {"cron": "0 6 * * 1-5", "timezone": "Europe/Berlin"}}})
    assert default_cron_key("f", spec.runtime) == "CRON_TZ=Europe/Berlin 0 6 * * 1-5"
    assert default_cron_key("f", {"schedule": {"cron": "@hourly"}}) == "@hourly"
    assert default_cron_key("f", {"interval_seconds": 60}) == "60"
    with pytest.raises(ValueError, match=r"both runtime\.interval_seconds and runtime\.schedule"):
        default_cron_key("f", {"interval_seconds": 60, "schedule": {"cron": "@hourly"}})
    for bad, words in [({"cron": "0 25 * * *"}, "hour '25'"), ({"cron": "@daily", "tz": "UTC"}, "unknown key(s) tz"),
                       ({"timezone": "UTC"}, "needs cron"), ({"cron": "@daily", "timezone": "Nowhere/Town"}, "unknown time zone")]:
        with pytest.raises(ConfigError) as err:
            parse_spec({**base, "runtime": {"schedule": bad}})
        assert words in str(err.value) and "schedule" in str(err.value)
    with pytest.raises(ConfigError, match="interval_seconds and schedule both say when"):
        parse_spec({**base, "runtime": {"interval_seconds": 60, "schedule": {"cron": "@hourly"}}})


def test_a_component_bundles_the_zone_database_only_for_a_named_zone() -> None:
    assert bundle_needs_zones(["CRON_TZ=Europe/Berlin 30 6 * * *"])
    assert not bundle_needs_zones([60, "300", "0 6 * * *", "CRON_TZ=+02:00 0 6 * * *"])
    flows = [{"name": "cal", "source": {"type": "payload"}, "sink": {"type": "response"},
              "runtime": {"schedule": {"cron": "30 6 * * *", "timezone": "Europe/Berlin"}}},
             {"name": "every", "source": {"type": "payload"}, "sink": {"type": "response"},
              "runtime": {"interval_seconds": 90}}]
    namespace: dict[str, object] = {}
    exec(bundle_source(flows, None), namespace)
    assert namespace["ROUTES"]["cron"] == {"cal": "CRON_TZ=Europe/Berlin 30 6 * * *", "every": 90}  # type: ignore[index]


def _adf(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(package_parent()), **(env or {})}
    return subprocess.run([sys.executable, "-m", "active_data_flow.cli", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=120)


def test_adf_spin_manifest_routes_a_flow_by_its_calendar(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text(
        "name: f\nsource: {type: payload}\nsink: {type: response}\n"
        "runtime: {schedule: {cron: '0 6 * * 1-5', timezone: Europe/Berlin}}\n"
    )
    res = _adf(tmp_path, "spin", "manifest", "--flow", "f.yaml", "--trigger", "cron", "--out", "spin.toml")
    assert res.returncode == 0, res.stderr
    cron = tomllib.loads((tmp_path / "spin.toml").read_text())["component"]["adf-cron"]
    assert json.loads(cron["variables"]["adf_routes"]) == {"f": "CRON_TZ=Europe/Berlin 0 6 * * 1-5"}
    res = _adf(tmp_path, "spin", "manifest", "--flow", "f.yaml", "--route", "cron:0 7 * * *=f", "--out", "b.toml")
    assert res.returncode == 0, res.stderr
    cron = tomllib.loads((tmp_path / "b.toml").read_text())["component"]["adf-cron"]
    assert json.loads(cron["variables"]["adf_routes"]) == {"f": "0 7 * * *"}
    res = _adf(tmp_path, "spin", "manifest", "--flow", "f.yaml", "--route", "cron:0 7 * * 8=f", "--out", "c.toml")
    assert res.returncode == 2 and "day-of-week" in res.stderr and not (tmp_path / "c.toml").exists()


def test_adf_flows_add_takes_the_spec_s_own_schedule(tmp_path: Path) -> None:
    (tmp_path / "cal.yaml").write_text(
        "name: cal\nsource: {type: memory, records: [{id: 1}]}\nsink: {type: stdout}\n"
        "runtime: {schedule: {cron: '30 6 * * *', timezone: Europe/Berlin}}\n"
    )
    (tmp_path / "tick.yaml").write_text(
        "name: tick\nsource: {type: memory, records: [{id: 1}]}\nsink: {type: stdout}\nruntime: {interval_seconds: 90}\n"
    )
    env = {"ADF_DATABASE_URL": f"sqlite:///{tmp_path / 'adf.db'}", "ADF_STATE_DIR": str(tmp_path / "state")}
    for name in ("cal", "tick"):
        res = _adf(tmp_path, "flows", "add", name, "--spec", f"{name}.yaml", "--json", env=env)
        assert res.returncode == 0, res.stderr
    res = _adf(tmp_path, "flows", "list", "--json", env=env)
    flows = {f["name"]: f for f in json.loads(res.stdout)}
    assert flows["cal"]["schedule"] == {"cron": "30 6 * * *", "timezone": "Europe/Berlin"}
    assert flows["cal"]["next_run"].endswith(("+01:00", "+02:00")) and "T06:30:00" in flows["cal"]["next_run"]
    assert flows["tick"]["run_interval"] == 90 and flows["tick"]["schedule"] is None
