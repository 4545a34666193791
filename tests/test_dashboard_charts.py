"""A flow's runs over time as a chart, and a run's progress while it runs.

The chart's layout (handlers/web/dashboard/charts.py) on its own, with hostile values; a
run's counts written to the schedule store while it runs (SQLite and PostgreSQL); and the
pages in headless Chromium (Playwright, as test_dashboard_e2e.py): the flow page's chart of
real runs — one bar per run with its run's values, checked in the page and in a screenshot's
pixels — and a run page that shows a held run's counts so far, then its outcome.

Screenshots go to build/test-artifacts/dashboard/. Chromium (/usr/bin/chromium) and the
playwright package come from scripts/browser-setup; without them the browser tests fail.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import re
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from flowlib.scheduling import pg_database, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st
from live_server import live_server

from active_data_flow.handlers import scheduler
from active_data_flow.handlers.schedule.progress import ProgressKeeper
from active_data_flow.handlers.schedule.sql import SqlScheduleStore
from active_data_flow.handlers.schedule.store import RUN_STATUSES, RunOutcome, RunRecord
from active_data_flow.handlers.settings import Settings
from active_data_flow.handlers.web.dashboard.charts import (
    DURATION_TOP,
    MIN_BAR,
    PANEL_HEIGHT,
    RECORDS_TOP,
    STATUS_COLOURS,
    nice_ceiling,
    run_chart,
)
from active_data_flow.handlers.web.dashboard.progress import run_progress

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "build" / "test-artifacts" / "dashboard"
CHROMIUM = "/usr/bin/chromium"
TOKEN = "chart-dashboard-token"
TIMEOUT_MS = 30_000
NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def _run(run_id: int, status: str, records: int | None, seconds: float | None, **kw: Any) -> RunRecord:
    started = NOW - dt.timedelta(minutes=100 - run_id)
    ended = started + dt.timedelta(seconds=seconds) if seconds is not None else None
    return RunRecord(
        id=run_id,
        flow_id=1,
        flow_name="orders",
        status=status,
        trigger="heartbeat",
        created_at=started,
        started_at=started,
        ended_at=ended,
        records_in=records,
        **kw,
    )


# --------------------------------------------------------------------------- the chart's layout


@given(st.floats(min_value=1e-6, max_value=1e15, allow_nan=False))
def test_an_axis_top_is_a_round_number_at_or_above_the_largest_value(value: float) -> None:
    top = nice_ceiling(value)
    assert value <= top * (1 + 1e-9)
    assert top < value * 10.0 + 1e-9
    mantissa = top / 10.0 ** math.floor(math.log10(top) + 1e-12)
    assert any(abs(mantissa - m) < 1e-6 for m in (1.0, 2.0, 2.5, 5.0, 10.0))


@pytest.mark.parametrize("value", [0.0, -3.0, float("nan"), float("inf")])
def test_an_axis_of_nothing_to_show_goes_to_one(value: float) -> None:
    assert nice_ceiling(value) == 1.0


_runs = st.lists(
    st.tuples(
        st.sampled_from(RUN_STATUSES),
        st.one_of(st.none(), st.integers(min_value=0, max_value=10**15)),
        st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e8, allow_nan=False)),
        st.text(max_size=300),
    ),
    max_size=80,
)


@given(_runs)
@settings(max_examples=150, deadline=None)
def test_every_bar_stays_inside_its_panel_whatever_the_runs(
    runs: list[tuple[str, int | None, float | None, str]],
) -> None:
    records = [_run(i + 1, s, n, secs, error_message=err) for i, (s, n, secs, err) in enumerate(runs)]
    chart = run_chart(records, now=NOW)
    assert [m.run_id for m in chart.marks] == [r.id for r in records][-50:]
    for mark in chart.marks:
        assert mark.records_h >= MIN_BAR and mark.duration_h >= MIN_BAR
        assert (
            RECORDS_TOP - 1e-6 <= mark.records_y
            and mark.records_y + mark.records_h <= RECORDS_TOP + PANEL_HEIGHT + 1e-6
        )
        assert DURATION_TOP - 1e-6 <= mark.duration_y
        assert mark.duration_y + mark.duration_h <= DURATION_TOP + PANEL_HEIGHT + 1e-6
        assert chart.left <= mark.x and mark.x + mark.width <= chart.right + 1e-6
        assert "\n" not in mark.title
    xs = [m.x for m in chart.marks]
    assert xs == sorted(xs)


def test_the_chart_shows_the_newest_runs_oldest_first_with_bars_in_proportion() -> None:
    runs = [_run(i, "success", 10 * i, float(i)) for i in range(1, 61)]
    runs[-1] = _run(60, "failed", None, 2.0, error_message="ValueError: bad\nTraceback …")
    chart = run_chart(list(reversed(runs)), now=NOW)  # the store lists newest first
    assert [m.run_id for m in chart.marks] == list(range(11, 61))
    assert chart.records_axis.top == 1000  # the largest count is 590
    by_id = {m.run_id: m for m in chart.marks}
    assert by_id[59].records_h == pytest.approx(PANEL_HEIGHT * 590 / 1000, abs=0.01)
    assert by_id[20].records_h == pytest.approx(PANEL_HEIGHT * 200 / 1000, abs=0.01)
    assert by_id[60].records is None and by_id[60].records_h == MIN_BAR
    assert by_id[60].colour == STATUS_COLOURS["failed"]
    assert by_id[60].title.endswith("ValueError: bad")
    assert by_id[30].rate == pytest.approx(10.0)
    assert "50 runs" in chart.summary and "49 success, 1 failed" in chart.summary
    assert dict((s, n) for s, _, n in chart.statuses) == {
        "pending": 0,
        "in_progress": 0,
        "success": 49,
        "partial": 0,
        "failed": 1,
        "cancelled": 0,
    }


def test_a_run_in_progress_is_charted_with_its_counts_and_time_so_far() -> None:
    running = _run(5, "in_progress", 40, None)
    progress = run_progress(running, now=running.started_at + dt.timedelta(seconds=8))  # type: ignore[operator]
    assert (progress["active"], progress["elapsed_s"], progress["records_per_second"]) == (True, 8.0, 5.0)
    assert progress["text"]["rate"] == "5.0 records/s" and progress["text"]["stage"] == "running"
    mark = run_chart([running], now=running.started_at + dt.timedelta(seconds=8)).marks[0]  # type: ignore[operator]
    assert (mark.active, mark.seconds, mark.records) == (True, 8.0, 40)
    assert mark.title.endswith("8.00 s so far · 5.0 records/s")


def test_no_runs_make_an_empty_chart() -> None:
    chart = run_chart([], now=NOW)
    assert chart.empty and chart.summary == "No runs yet."


# --------------------------------------------------------------------------- counts while a run runs


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlScheduleStore]:
    with (
        pg_database()
        if request.param == "postgres"
        else contextlib.nullcontext(f"sqlite:///{tmp_path / 's.db'}") as url
    ):
        s = SqlScheduleStore(url)
        try:
            yield s
        finally:
            s.close()


def _gated_flow(out: Path, gate: Path, n: int = 10, at: int = 6) -> dict[str, Any]:
    """``n`` records in batches of 2; the record ``at`` waits until the file ``gate`` exists."""
    return {
        "source": {
            "type": "memory",
            "records": [{"n": i, **({"gate": True} if i == at else {})} for i in range(n)],
        },
        "steps": [
            {"type": "python", "function": "flowlib.gates:wait_at_gate", "options": {"gate": str(gate)}}
        ],
        "sink": {"type": "file", "path": str(out), "format": "jsonl"},
        "runtime": {"batch_size": 2},
    }


def test_only_the_worker_holding_a_run_in_progress_records_its_counts(store: SqlScheduleStore) -> None:
    store.create_flow(
        "counted", {"source": {"type": "memory", "records": []}, "sink": {"type": "memory"}}, 60
    )
    run = store.create_run("counted", worker_id="w1")
    assert store.record_progress(run.id, "w1", records_in=7, records_out=6, dead_letters=1) is True
    got = store.get_run(run.id)
    assert (got.status, got.records_in, got.records_out, got.dead_letters) == ("in_progress", 7, 6, 1)
    assert store.record_progress(run.id, "w2", records_in=99, records_out=99, dead_letters=0) is False
    assert store.get_run(run.id).records_in == 7
    store.finish_run(run.id, RunOutcome(status="success", records_in=9, records_out=9, dead_letters=0))
    assert store.record_progress(run.id, "w1", records_in=1, records_out=1, dead_letters=0) is False
    assert (store.get_run(run.id).records_in, store.get_run(run.id).status) == (9, "success")


def test_a_scheduled_run_writes_its_counts_so_far_while_it_runs(
    store: SqlScheduleStore, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    store.create_flow("held", _gated_flow(tmp_path / "out.jsonl", gate), 3600, enabled=False)
    settings_ = Settings(state_dir=str(tmp_path / "state"), database_url="sqlite://")
    run = store.create_run("held", trigger="manual", worker_id="w", lease_seconds=settings_.lease_seconds)
    done: list[RunRecord] = []
    thread = threading.Thread(
        target=lambda: done.append(scheduler.execute_run(store, run, settings_, worker_id="w"))
    )
    thread.start()
    try:
        # the three batches before the held record are committed and their counts written
        assert wait_until(lambda: store.get_run(run.id).records_in == 6, timeout=60)
        seen = store.get_run(run.id)
        assert (seen.status, seen.records_in, seen.records_out, seen.dead_letters) == ("in_progress", 6, 6, 0)
    finally:
        gate.touch()
        thread.join(120)
    final = store.get_run(run.id)
    assert done and (final.status, final.records_in, final.records_out) == ("success", 10, 10)


def test_a_progress_write_that_fails_is_retried_at_the_next_interval(store: SqlScheduleStore) -> None:
    store.create_flow("flaky", {"source": {"type": "memory", "records": []}, "sink": {"type": "memory"}}, 60)
    run = store.create_run("flaky", worker_id="w")
    keeper = ProgressKeeper(store, run.id, "w", enabled=False)
    calls: list[int] = []
    real = store.record_progress

    def flaky(*args: Any, **kwargs: Any) -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("server closed the connection")
        return real(*args, **kwargs)

    store.record_progress = flaky  # type: ignore[method-assign]
    keeper.update(type("P", (), {"records_in": 4, "records_out": 3, "dead_letters": 1})())
    assert keeper.flush() is True and keeper.writes == 0  # logged, kept for the next interval
    assert keeper.flush() is True and keeper.writes == 1
    assert keeper.flush() is True and len(calls) == 2  # unchanged counts are not written again
    assert (store.get_run(run.id).records_in, store.get_run(run.id).dead_letters) == (4, 1)


# --------------------------------------------------------------------------- in the browser


def _require_browser() -> Any:
    problems = []
    if not os.access(CHROMIUM, os.X_OK):
        problems.append(f"{CHROMIUM} is missing")
    try:
        from playwright import sync_api
    except ImportError:
        problems.append("the playwright Python package is not installed")
        sync_api = None
    if problems:
        pytest.fail(
            f"browser tests need Chromium and Playwright: {'; '.join(problems)}. "
            "Run `bash scripts/browser-setup`.",
            pytrace=False,
        )
    return sync_api


@dataclass
class App:
    url: str
    store: SqlScheduleStore
    settings: Settings
    root: Path


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    root = tmp_path_factory.mktemp("dashboard-charts")
    app_settings = Settings(
        state_dir=str(root / "state"), database_url=f"sqlite:///{root / 'adf.db'}", api_token=TOKEN
    )
    store = SqlScheduleStore(app_settings.database_url)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADF_WASM_DB_URL", f"sqlite:///{root / 'wasm.db'}")
        mp.setenv("ADF_WASM_STORAGE", str(root / "wasm-modules"))
        try:
            with live_server(app_settings, store) as url:
                yield App(url, store, app_settings, root)
        finally:
            store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = _require_browser()
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
        assert errors == []  # no script errors, no Content-Security-Policy violations
    finally:
        context.close()


def _login(page: Any, app: App, path: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{app.url}{path}")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{app.url}{path}")


def _shot(page_or_element: Any, name: str) -> bytes:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"charts-{name}.png"
    data: bytes = page_or_element.screenshot(path=str(path))
    return data


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB pixels (3 bytes each) of an 8-bit, non-interlaced RGB
    or RGBA PNG (what Chromium writes), decoded with zlib."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0) and colour in (2, 6), (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    raw, stride, prev, rows, i = zlib.decompress(idat), width * bpp, bytearray(width * bpp), [], 0
    for _ in range(height):
        kind, line = raw[i], bytearray(raw[i + 1 : i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + a) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + b) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(b"".join(bytes(line[x : x + 3]) for x in range(0, stride, bpp)))
        prev = line
    return width, height, rows


def _rgb(colour: str) -> bytes:
    return bytes.fromhex(colour.lstrip("#"))


def _seed_runs(app: App, flow: str) -> list[RunRecord]:
    """Real runs of ``flow`` through the scheduler: successes of 3 and 12 records, a partial run
    (2 of 6 records dead-lettered), a success of 8 records and a failed run."""
    memory = {"type": "memory", "name": flow}
    configs = [
        {"source": {"type": "memory", "records": [{"n": i} for i in range(3)]}, "sink": memory},
        {"source": {"type": "memory", "records": [{"n": i} for i in range(12)]}, "sink": memory},
        {
            "source": {"type": "memory", "records": [{"n": i, "bad": i in (1, 4)} for i in range(6)]},
            "steps": [{"type": "python", "function": "flowlib.integrity:reject_when"}],
            "sink": memory,
        },
        {"source": {"type": "memory", "records": [{"n": i} for i in range(8)]}, "sink": memory},
        # last: a failed run keeps its checkpoint, which a changed configuration could not resume
        {
            "source": {"type": "memory", "records": [{"n": 7}, {"n": 14}]},
            "steps": [{"type": "python", "function": "flowlib.steps:explode_on_sevens"}],
            "sink": memory,
            "runtime": {"max_dead_letters": 0},
        },
    ]
    app.store.create_flow(flow, configs[0], 3600, enabled=False)
    runs = []
    for config in configs:
        app.store.update_flow(flow, configuration=config)
        runs.append(scheduler.trigger_run(app.store, app.settings, flow))
    assert [r.status for r in runs] == ["success", "success", "partial", "success", "failed"]
    return runs


@pytest.mark.slow
@pytest.mark.browser
def test_the_flow_page_charts_each_run_with_its_records_duration_and_status(app: App, page: Any) -> None:
    from playwright.sync_api import expect

    runs = _seed_runs(app, "charted")
    _login(page, app, "/ui/flows/charted")
    chart = page.locator("#run-chart svg.chart")
    expect(chart).to_be_visible()
    marks = chart.locator("a.run-mark")
    expect(marks).to_have_count(len(runs))
    expect(chart).to_have_attribute("data-runs", str(len(runs)))

    # one mark per run, oldest first, carrying that run's values as the store holds them
    shown = marks.evaluate_all("""els => els.map(e => ({
        id: +e.dataset.runId, status: e.dataset.status, records: e.dataset.records,
        duration: e.dataset.duration, href: e.getAttribute('href'),
        title: e.querySelector('title').textContent,
        height: e.querySelector('rect.bar-records').getBBox().height}))""")
    stored = [app.store.get_run(r.id) for r in runs]
    assert [m["id"] for m in shown] == [r.id for r in stored]
    assert [m["status"] for m in shown] == [r.status for r in stored]
    assert [m["records"] for m in shown] == [
        "" if r.records_in is None else str(r.records_in) for r in stored
    ]
    assert [float(m["duration"]) for m in shown] == pytest.approx([r.duration for r in stored], abs=1e-3)
    assert [m["href"] for m in shown] == [f"/ui/runs/{r.id}" for r in stored]
    assert all(m["title"].startswith(f"Run #{r.id}: {r.status}") for m, r in zip(shown, stored, strict=True))
    # taller bars for more records: 12 > 8 > 6 > 3
    height = {m["id"]: m["height"] for m in shown}
    assert height[runs[1].id] > height[runs[3].id] > height[runs[2].id] > height[runs[0].id]
    assert height[runs[1].id] == pytest.approx(PANEL_HEIGHT * 12 / 20, abs=0.5)  # the axis goes to 20
    expect(page.locator("#run-chart-desc")).to_contain_text("5 runs from")
    expect(page.locator("ul.chart-legend li[data-status=failed]")).to_have_text("failed (1)")

    # the screenshot: each bar is drawn in its status's colour, and no other status's colour is there
    page.mouse.move(0, 0)  # no hover highlight
    png = _shot(chart, "flow-chart")
    _shot(page, "flow-page")
    width, height_px, rows = _png_pixels(png)
    box = chart.bounding_box()
    assert abs(width - box["width"]) <= 1 and abs(height_px - box["height"]) <= 1  # CSS pixels, scale 1
    for run in stored:
        bar = chart.locator(f'a.run-mark[data-run-id="{run.id}"] rect.bar-records').bounding_box()
        x = int(bar["x"] - box["x"] + bar["width"] / 2)
        y = int(bar["y"] - box["y"] + bar["height"] / 2)
        assert rows[y][3 * x : 3 * x + 3] == _rgb(STATUS_COLOURS[run.status]), run.status
    pixels = Counter(row[i : i + 3] for row in rows for i in range(0, len(row), 3))
    counts = {s: pixels[_rgb(c)] for s, c in STATUS_COLOURS.items()}
    assert counts["success"] > 0 and counts["partial"] > 0 and counts["failed"] > 0
    assert counts["pending"] == counts["in_progress"] == counts["cancelled"] == 0


@pytest.mark.slow
@pytest.mark.browser
def test_a_flow_without_runs_says_so_instead_of_a_chart(app: App, page: Any) -> None:
    from playwright.sync_api import expect

    app.store.create_flow(
        "unrun", {"source": {"type": "memory", "records": []}, "sink": {"type": "memory"}}, 60, enabled=False
    )
    _login(page, app, "/ui/flows/unrun")
    expect(page.locator("#run-chart-empty")).to_have_text("No runs yet: the chart fills in as the flow runs.")
    expect(page.locator("#run-chart svg.chart")).to_have_count(0)


@pytest.mark.slow
@pytest.mark.browser
def test_the_run_page_shows_a_runs_counts_so_far_then_its_outcome(app: App, page: Any) -> None:
    from playwright.sync_api import expect

    gate = app.root / "gate-open"
    out = app.root / "held.jsonl"
    app.store.create_flow("held", _gated_flow(out, gate), 3600, enabled=False)
    _login(page, app, "/ui/flows/held")
    page.click("#trigger")  # runs in the server; the record n=6 waits for the gate
    expect(page).to_have_url(re.compile(r"/ui/runs/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    page.evaluate("window.sameDocument = true")  # gone if the page reloads

    progress = page.locator("#run-progress")
    expect(progress.locator('[data-field="records_in"]')).to_have_text("6")
    expect(progress.locator('[data-field="records_out"]')).to_have_text("6")
    expect(progress.locator('[data-field="dead_letters"]')).to_have_text("0")
    expect(progress.locator('[data-field="stage"]')).to_have_text("running")
    expect(progress).to_have_attribute("data-status", "in_progress")
    assert page.evaluate("window.sameDocument") is True  # updated in place by polling, not reloaded
    _shot(page, "run-in-progress")
    held = app.store.get_run(run_id)
    assert (held.status, held.records_in) == ("in_progress", 6)

    # the chart of the flow shows the run in progress with its counts so far
    other = page.context.new_page()
    other.goto(f"{app.url}/ui/flows/held")
    mark = other.locator(f'#run-chart a.run-mark[data-run-id="{run_id}"]')
    expect(mark).to_have_attribute("data-status", "in_progress")
    expect(mark).to_have_attribute("data-records", "6")
    expect(mark).to_have_class(re.compile(r"\bactive\b"))
    other.close()

    gate.touch()
    # the run ends: the page reloads and shows the outcome
    expect(page.locator("h1 .run-status")).to_have_text("success")
    expect(page.locator("dl.facts")).to_contain_text("10 in · 10 out · 0 dead letters")
    expect(page.locator("#run-progress")).to_have_count(0)
    _shot(page, "run-finished")
    assert len(out.read_text().splitlines()) == 10


def test_a_runs_progress_needs_a_login(app: App) -> None:
    resp = httpx.get(f"{app.url}/ui/runs/1/progress", headers={"X-Requested-With": "fetch"})
    assert resp.status_code == 401
    assert "log in" in resp.json()["error"]
