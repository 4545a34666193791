"""The cron parser and evaluator (active_data_flow.cron): syntax, clear errors, and the next run
in a time zone across daylight-saving changes, checked against a minute-by-minute calendar."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import zoneinfo
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from package_tree import package_parent

from active_data_flow.cron import CronError, UnknownTimeZoneError, parse_cron, resolve_timezone, to_spin_cron

UTC = dt.UTC
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def _runs(expr: str, tz: str, start: dt.datetime, count: int) -> list[str]:
    s = parse_cron(expr, tz)
    out, t = [], start
    for _ in range(count):
        t = s.next_after(t)
        out.append(t.isoformat())
    return out


# --------------------------------------------------------------------------- syntax


def test_weekdays_at_six_in_berlin_follow_the_calendar_over_the_spring_change() -> None:
    start = dt.datetime(2026, 3, 26, 12, tzinfo=UTC)
    assert _runs("0 6 * * 1-5", "Europe/Berlin", start, 4) == [
        "2026-03-27T06:00:00+01:00",
        "2026-03-30T06:00:00+02:00",
        "2026-03-31T06:00:00+02:00",
        "2026-04-01T06:00:00+02:00",
    ]


def test_names_lists_steps_and_sunday_as_seven() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday
    assert _runs("15 8 * jan,Feb sun", "UTC", start, 2) == [
        "2026-01-04T08:15:00+00:00",
        "2026-01-11T08:15:00+00:00",
    ]
    assert _runs("15 8 * 1-2 7", "UTC", start, 2) == _runs("15 8 * JAN-FEB SUN", "UTC", start, 2)
    assert _runs("*/20 9-10/1 * * *", "UTC", start, 7)[-1] == "2026-01-02T09:00:00+00:00"
    assert _runs("10/25 * * * *", "UTC", start, 3) == [
        "2026-01-01T00:10:00+00:00",
        "2026-01-01T00:35:00+00:00",
        "2026-01-01T01:10:00+00:00",
    ]


def test_day_of_month_and_day_of_week_both_restricted_match_either_like_vixie_cron() -> None:
    start = dt.datetime(2026, 6, 1, tzinfo=UTC)  # a Monday
    days = [r[:10] for r in _runs("0 0 13 * FRI", "UTC", start, 4)]
    assert days == ["2026-06-05", "2026-06-12", "2026-06-13", "2026-06-19"]
    # one of them beginning with '*' leaves the other to decide
    assert [r[:10] for r in _runs("0 0 * * FRI", "UTC", start, 2)] == ["2026-06-05", "2026-06-12"]
    assert [r[:10] for r in _runs("0 0 13 * *", "UTC", start, 2)] == ["2026-06-13", "2026-07-13"]
    # '*/10' begins with '*': both must match (Vixie cron's rule) — Fridays that are the 1st, 11th, 21st or 31st
    assert [r[:10] for r in _runs("0 0 */10 * FRI", "UTC", start, 2)] == ["2026-07-31", "2026-08-21"]


def test_macros_seconds_and_the_spin_form() -> None:
    start = dt.datetime(2026, 5, 5, 5, 5, 5, tzinfo=UTC)
    assert _runs("@daily", "UTC", start, 1) == ["2026-05-06T00:00:00+00:00"]
    assert _runs("@hourly", "UTC", start, 1) == ["2026-05-05T06:00:00+00:00"]
    assert _runs("*/10 * * * * *", "UTC", start, 2) == [
        "2026-05-05T05:05:10+00:00",
        "2026-05-05T05:05:20+00:00",
    ]
    assert to_spin_cron("0 6 * * 1-5") == "0 0 6 * * 1-5"
    assert to_spin_cron(" @weekly ") == "0 0 0 * * 0"
    assert to_spin_cron("*/10 * * * * *") == "*/10 * * * * *"
    with pytest.raises(CronError):
        to_spin_cron("0/10 * * * * * *")


def test_a_leap_day_schedule_waits_for_the_next_leap_year() -> None:
    assert _runs("0 0 29 2 *", "UTC", dt.datetime(2026, 1, 1, tzinfo=UTC), 2) == [
        "2028-02-29T00:00:00+00:00",
        "2032-02-29T00:00:00+00:00",
    ]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("0 6 * *", "has 4 field(s); give 5"),
        ("0 6 * * 1-5 * *", "has 7 field(s)"),
        ("60 * * * *", "minute '60': out of range (0-59)"),
        ("0 24 * * *", "hour '24': out of range (0-23)"),
        ("0 0 0 * *", "day-of-month '0': out of range (1-31)"),
        ("0 0 * 13 *", "month '13': out of range (1-12)"),
        ("0 0 * * 8", "day-of-week '8': out of range (0-7)"),
        ("0 0 * * MOX", "day-of-week 'MOX': not a value (0-7 or SUN-SAT)"),
        ("5-1 * * * *", "minute '5-1': the range runs backwards"),
        ("*/0 * * * *", "minute '*/0': the step after '/' must be a number from 1 to 59"),
        ("1,,2 * * * *", "minute '1,,2': an empty item"),
        ("1- * * * *", "minute '1-': a range is a-b"),
        ("0 0 31 4,6 *", "day-of-month '31' never falls in month '4,6'"),
        ("@fortnightly", "unknown macro"),
        ("", "has 0 field(s)"),
    ],
)
def test_a_bad_expression_names_the_field_and_the_reason(expr: str, message: str) -> None:
    with pytest.raises(CronError) as err:
        parse_cron(expr)
    assert message in str(err.value)


def test_time_zones_unknown_names_and_fixed_offsets() -> None:
    with pytest.raises(UnknownTimeZoneError, match="unknown time zone 'Mars/Olympus'"):
        parse_cron("* * * * *", "Mars/Olympus")
    with pytest.raises(UnknownTimeZoneError, match="out of range"):
        resolve_timezone("+25:00")
    assert _runs("0 6 * * *", "+05:30", dt.datetime(2026, 1, 1, tzinfo=UTC), 1) == [
        "2026-01-01T06:00:00+05:30"
    ]
    assert resolve_timezone("UTC-03:00").utcoffset(None) == dt.timedelta(hours=-3)
    assert resolve_timezone(None) is UTC


@given(st.text(max_size=60))
@settings(max_examples=300, deadline=None)
def test_any_text_is_parsed_or_refused_with_a_cron_error(text: str) -> None:
    try:
        s = parse_cron(text)
    except CronError as exc:
        assert str(exc)
    else:
        assert s.next_after(dt.datetime(2026, 1, 1, tzinfo=UTC)) > dt.datetime(2026, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- daylight saving


def test_berlin_spring_forward_runs_a_skipped_wall_time_once_right_after_the_gap() -> None:
    start = dt.datetime(2026, 3, 27, 12, tzinfo=UTC)
    assert _runs("30 2 * * *", "Europe/Berlin", start, 3) == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    # several skipped wall times give one run, and 03:00 itself is that same run
    assert _runs("*/20 2-3 * * *", "Europe/Berlin", dt.datetime(2026, 3, 28, 23, tzinfo=UTC), 4) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:20:00+02:00",
        "2026-03-29T03:40:00+02:00",
        "2026-03-30T02:00:00+02:00",
    ]


def test_berlin_fall_back_runs_a_repeated_wall_time_once_at_its_first_occurrence() -> None:
    start = dt.datetime(2026, 10, 24, 12, tzinfo=UTC)
    assert _runs("30 2 * * *", "Europe/Berlin", start, 3) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]
    # from inside the repeated hour (its second pass) the next run is after it
    second_pass = dt.datetime(2026, 10, 25, 1, 10, tzinfo=UTC)  # 02:10 CET
    assert (
        parse_cron("*/15 * * * *", "Europe/Berlin").next_after(second_pass).isoformat()
        == "2026-10-25T03:00:00+01:00"
    )


def test_new_york_changes_follow_the_same_rules() -> None:
    assert _runs("30 2 * * *", "America/New_York", dt.datetime(2026, 3, 7, tzinfo=UTC), 3) == [
        "2026-03-07T02:30:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
    ]
    assert _runs("30 1 * * *", "America/New_York", dt.datetime(2026, 10, 31, 12, tzinfo=UTC), 2) == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
    ]


ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Sao_Paulo",
    "Pacific/Chatham",
    "Europe/London",
    "America/St_Johns",
    "Asia/Tehran",
    "America/Santiago",
    "Europe/Dublin",
)


def _transitions(zone: zoneinfo.ZoneInfo, year: int) -> list[dt.datetime]:
    """The instants (to the minute) the zone's offset changes in ``year``."""
    out: list[dt.datetime] = []
    t = dt.datetime(year, 1, 1, tzinfo=UTC)
    step = dt.timedelta(hours=1)
    while t.year == year:
        if (t + step).astimezone(zone).utcoffset() != t.astimezone(zone).utcoffset():
            lo, hi = t, t + step
            while hi - lo > dt.timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                lo, hi = (
                    (mid, hi)
                    if mid.astimezone(zone).utcoffset() == lo.astimezone(zone).utcoffset()
                    else (lo, mid)
                )
            out.append(hi.replace(second=0, microsecond=0))
        t += step
    return out


def _calendar(expr: str, zone: zoneinfo.ZoneInfo, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """The runs in (start, end] by walking every minute: a matching wall time runs at its first
    occurrence; matching wall times a gap skips run once, at the end of the gap."""
    s = parse_cron(expr, str(zone))
    seen: set[dt.datetime] = set()
    out: list[dt.datetime] = []
    minute = dt.timedelta(minutes=1)
    u = start.replace(second=0, microsecond=0) + minute
    prev_wall = (u - minute).astimezone(zone).replace(tzinfo=None)
    while u <= end:
        wall = u.astimezone(zone).replace(tzinfo=None)
        skipped = []
        w = prev_wall + minute
        while w < wall:
            skipped.append(w)
            w += minute
        hit = (any(s.matches(x) for x in skipped)) or (s.matches(wall) and wall not in seen)
        seen.add(wall)
        if hit and u > start:
            out.append(u)
        prev_wall = wall
        u += minute
    return out


@st.composite
def _field(draw: st.DrawFn, low: int, high: int) -> str:
    kind = draw(st.sampled_from(["*", "value", "range", "step", "list"]))
    if kind == "*":
        return "*"
    a = draw(st.integers(low, high))
    if kind == "value":
        return str(a)
    b = draw(st.integers(a, high))
    if kind == "range":
        return f"{a}-{b}"
    if kind == "step":
        return (
            f"{draw(st.sampled_from(['*', f'{a}-{b}', str(a)]))}/{draw(st.integers(1, max(1, high - low)))}"
        )
    return ",".join(
        str(v) for v in sorted(set(draw(st.lists(st.integers(low, high), min_size=1, max_size=4))))
    )


@given(
    minute=_field(0, 59),
    hour=_field(0, 23),
    dom=_field(1, 31),
    dow=_field(0, 7),
    zone=st.sampled_from(ZONES),
    year=st.integers(2000, 2035),
    which=st.integers(0, 3),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_next_runs_are_exactly_the_calendar_across_a_dst_change(
    minute: str, hour: str, dom: str, dow: str, zone: str, year: int, which: int
) -> None:
    tz = zoneinfo.ZoneInfo(zone)
    changes = _transitions(tz, year)
    if not changes:
        return
    change = changes[which % len(changes)]
    start, end = change - dt.timedelta(hours=30), change + dt.timedelta(hours=30)
    expr = f"{minute} {hour} {dom} * {dow}"
    try:
        s = parse_cron(expr, zone)
    except CronError:
        return
    runs = s.runs_between(start, end)
    assert runs == sorted(set(runs))  # strictly increasing: no instant twice
    assert [r.astimezone(UTC) for r in runs] == _calendar(expr, tz, start, end)
    for r in runs:  # a run is a matching wall time, or the end of a gap that skipped one
        gap_end = (r - dt.timedelta(seconds=1)).utcoffset() != r.utcoffset()
        assert s.matches(r) or gap_end


# --------------------------------------------------------------------------- inside a component

STDLIB_PROBE = r"""
import datetime as dt, json, sys
sys.path[:0] = [{root!r}]
before = set(sys.modules)
from active_data_flow.cron import parse_cron
s = parse_cron("*/15 6-7 * * MON-FRI")
nxt = s.next_after(dt.datetime(2026, 3, 28, tzinfo=dt.UTC)).isoformat()
third = sorted({{m.split(".")[0] for m in set(sys.modules) - before}} - set(sys.stdlib_module_names) - {{"active_data_flow"}})
print(json.dumps({{"next": nxt, "third_party": third}}))
"""


def test_the_cron_module_evaluates_utc_schedules_with_the_standard_library_only() -> None:
    out = subprocess.run(
        [sys.executable, "-S", "-E", "-c", STDLIB_PROBE.format(root=str(package_parent()))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"next": "2026-03-30T06:00:00+00:00", "third_party": []}


# --------------------------------------------------------------------------- the Spin cron trigger


def test_the_spin_manifest_takes_the_heartbeats_syntax_and_checks_it_with_the_same_parser() -> None:
    from active_data_flow.spin_app.manifest import cron_expression_problem, spin_cron_expression

    assert spin_cron_expression("0 6 * * 1-5") == "0 0 6 * * 1-5"
    assert spin_cron_expression("@hourly", "UTC") == "0 0 * * * *"
    assert spin_cron_expression("*/10 * * * * *", "+00:00") == "*/10 * * * * *"
    assert cron_expression_problem(spin_cron_expression("*/15 6-18 * * MON-FRI")) is None
    # what the parser refuses stays as given, and the manifest check names the field
    assert spin_cron_expression("0 25 * * *") == "0 25 * * *"
    assert "has 5 field(s)" in (cron_expression_problem("0 25 * * *") or "")
    assert "hour '25': out of range" in (cron_expression_problem("0 0 25 * * *") or "")
    assert "never falls in month" in (cron_expression_problem("0 0 0 30 2 *") or "")
    with pytest.raises(ValueError, match="reads its expression in UTC, not Europe/Berlin"):
        spin_cron_expression("0 6 * * 1-5", "Europe/Berlin")


def test_adf_spin_manifest_writes_a_five_field_expression_in_the_triggers_form(tmp_path: Path) -> None:
    import os
    import tomllib

    (tmp_path / "f.yaml").write_text(
        "name: f\nsource: {type: payload}\nsink: {type: response}\nruntime: {interval_seconds: 60}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(package_parent())}

    def adf(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "active_data_flow.cli",
                "spin",
                "manifest",
                "--flow",
                "f.yaml",
                "--route",
                "cron=f",
                *args,
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    res = adf("--cron-expression", "*/15 6-18 * * MON-FRI", "--out", "spin.toml")
    assert res.returncode == 0, res.stderr
    manifest = tomllib.loads((tmp_path / "spin.toml").read_text())
    assert manifest["trigger"]["cron"][0]["cron_expression"] == "0 */15 6-18 * * MON-FRI"
    res = adf("--cron-expression", "0 25 * * *", "--out", "bad.toml")
    assert res.returncode == 2 and "has 5 field(s)" in res.stderr and not (tmp_path / "bad.toml").exists()
    res = adf("--cron-expression", "0 6 * * 1-5", "--cron-timezone", "Europe/Berlin", "--out", "tz.toml")
    assert (
        res.returncode == 2
        and "reads its expression in UTC" in res.stderr
        and not (tmp_path / "tz.toml").exists()
    )
