"""The dashboard in a real browser: headless Debian Chromium driven by Playwright.

The app runs under uvicorn on a free port (tests/live_server.py) with a temporary SQLite
schedule and a temporary WASM registry (ADF_WASM_DB_URL / ADF_WASM_STORAGE). The scenario:
a page without login goes to the login page; log in; upload a module by dropping a file on
the drop zone; see it listed with its size; add and remove a permission; delete it after the
confirmation step; trigger a flow and watch its run reach ``success`` on the runs page; see
a partial run's dead letters, fix the step and replay them with the run page's button.

Screenshots of every step go to build/test-artifacts/dashboard/. Chromium (/usr/bin/chromium)
and the playwright package come from scripts/browser-setup; Playwright's own browser
downloads are not used. Without them these tests fail (they do not skip).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from live_server import live_server

from active_data_flow.handlers.schedule.sql import SqlScheduleStore
from active_data_flow.handlers.settings import Settings
from active_data_flow.wasm.errors import ModuleNotFoundInRegistry
from active_data_flow.wasm.registry import ModuleRegistry

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "build" / "test-artifacts" / "dashboard"
CHROMIUM = "/usr/bin/chromium"
TOKEN = "e2e-dashboard-token"
FLOW = "e2e-orders"
WAT = ('(module (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) i32.const 0) '
       '(func (export "run") (param i32 i32) (result i64) i64.const 0))')
TIMEOUT_MS = 20_000

#: dispatches dragenter, dragover and drop on the drop zone with a DataTransfer holding the file
DROP_JS = """([selector, bytes, name]) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([new Uint8Array(bytes)], name, {type: "application/wasm"}));
  const zone = document.querySelector(selector);
  for (const type of ["dragenter", "dragover", "drop"]) {
    zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: transfer}));
  }
}"""


def _require_browser() -> Any:
    """The Playwright sync API, or a failure naming scripts/browser-setup."""
    problems = []
    if not os.access(CHROMIUM, os.X_OK):
        problems.append(f"{CHROMIUM} is missing")
    try:
        from playwright import sync_api
    except ImportError:
        problems.append("the playwright Python package is not installed")
        sync_api = None
    if problems:
        pytest.fail(f"browser tests need Chromium and Playwright: {'; '.join(problems)}. "
                    "Run `bash scripts/browser-setup` (Debian chromium + playwright in .venv).", pytrace=False)
    return sync_api


@dataclass
class App:
    url: str
    store: SqlScheduleStore
    registry: ModuleRegistry
    settings: Settings
    root: Path


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    root = tmp_path_factory.mktemp("dashboard-e2e")
    settings = Settings(state_dir=str(root / "state"), database_url=f"sqlite:///{root / 'adf.db'}", api_token=TOKEN)
    store = SqlScheduleStore(settings.database_url)
    store.create_flow(
        FLOW,
        {"source": {"type": "memory", "records": [{"id": i, "total": 10 * i} for i in range(5)]},
         "sink": {"type": "memory", "name": FLOW}},
        3600,
        description="memory source to memory sink",
        enabled=False,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADF_WASM_DB_URL", f"sqlite:///{root / 'wasm.db'}")
        mp.setenv("ADF_WASM_STORAGE", str(root / "wasm-modules"))
        registry = ModuleRegistry.from_env()
        try:
            with live_server(settings, store) as url:
                yield App(url, store, registry, settings, root)
        finally:
            registry.close()
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


class Shots:
    """Numbered full-page screenshots under build/test-artifacts/dashboard/."""

    def __init__(self, page: Any, prefix: str) -> None:
        self.page = page
        self.prefix = prefix
        self.count = 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str) -> Path:
        self.count += 1
        path = ARTIFACTS / f"{self.prefix}-{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    # "Failed to load resource" is how Chromium reports the 401/422 pages the scenario asks for
    tab.on("console", lambda msg: errors.append(msg.text)
           if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
        # no script errors and no Content-Security-Policy violations on any page
        assert errors == []
    finally:
        context.close()


def _login(page: Any, app: App, path: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{app.url}{path}")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{app.url}{path}")


def test_login_then_upload_by_drag_and_drop_grant_revoke_and_delete_a_module(app: App, page: Any) -> None:
    import wasmtime
    from playwright.sync_api import expect

    shot = Shots(page, "module")
    wasm = bytes(wasmtime.wat2wasm(WAT))

    # no page without a login: the login page, remembering where we were going
    page.goto(f"{app.url}/ui/modules")
    expect(page).to_have_url(f"{app.url}/ui/login?next=%2Fui%2Fmodules")
    expect(page.locator("h1")).to_have_text("Log in")
    shot("login-redirect")
    page.fill("#token", "not-the-token")
    page.click("button[type=submit]")
    expect(page.locator(".problems")).to_have_text("Wrong token.")
    shot("wrong-token")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{app.url}/ui/modules")
    expect(page.locator("h1")).to_have_text("WASM modules")

    # drag and drop: a real drop event whose DataTransfer carries the .wasm file
    page.fill("#module-id", "tiny")
    page.fill("#module-version", "1.0.0")
    page.fill("#module-description", "the smallest module")
    assert page.eval_on_selector("#module-file", "input => input.files.length") == 0
    page.evaluate(DROP_JS, ["#dropzone", list(wasm), "tiny.wasm"])
    expect(page.locator("#dropzone-text")).to_have_text(f"tiny.wasm ({len(wasm)} bytes)")
    expect(page.locator("#dropzone")).to_have_class(re.compile(r"\bhas-file\b"))
    shot("dropped")
    page.click("#upload-button")
    expect(page).to_have_url(f"{app.url}/ui/modules/tiny/1.0.0")
    expect(page.locator(".flash")).to_have_text(f"Uploaded tiny@1.0.0 ({len(wasm)} bytes).")
    record = app.registry.get("tiny@1.0.0")
    assert (record.size, record.sha256, record.description) == (len(wasm), hashlib.sha256(wasm).hexdigest(),
                                                                "the smallest module")
    shot("uploaded")

    # listed with its size
    page.click("nav >> text=WASM modules")
    row = page.locator('tr[data-ref="tiny@1.0.0"]')
    expect(row).to_be_visible()
    expect(row.locator("td").nth(1)).to_have_text("1.0.0")
    expect(row.locator("td").nth(2)).to_have_text(f"{len(wasm)} bytes")
    shot("listed")

    # a bad permission is an inline error; a good one is added, then removed
    row.locator("a").click()
    expect(page).to_have_url(f"{app.url}/ui/modules/tiny/1.0.0")
    page.fill("#permission", "http:fetch:https://api.example.com/*")
    page.click("form.add-permission button[type=submit]")
    expect(page.locator("#permission-error")).to_contain_text("unknown kind 'http:fetch'")
    expect(page.locator("#permission")).to_have_value("http:fetch:https://api.example.com/*")
    assert app.registry.get("tiny@1.0.0").permissions.to_list() == []
    shot("bad-permission")

    page.fill("#permission", "http:read:https://api.example.com/*")
    page.click("form.add-permission button[type=submit]")
    expect(page.locator("ul.permissions li code")).to_have_text(["http:read:https://api.example.com/*"])
    expect(page.locator(".flash")).to_contain_text("Granted http:read:https://api.example.com/*")
    assert app.registry.get("tiny@1.0.0").permissions.to_list() == ["http:read:https://api.example.com/*"]
    shot("permission-added")

    page.click('button[aria-label="Remove http:read:https://api.example.com/*"]')
    expect(page.locator(".flash")).to_contain_text("Revoked http:read:https://api.example.com/*")
    expect(page.locator("ul.permissions")).to_have_count(0)
    assert app.registry.get("tiny@1.0.0").permissions.to_list() == []
    shot("permission-removed")

    # delete, after the confirmation step
    page.click("#delete-module")
    expect(page).to_have_url(f"{app.url}/ui/modules/tiny/1.0.0/delete")
    expect(page.locator("h1")).to_have_text("Delete tiny@1.0.0?")
    app.registry.get("tiny@1.0.0")  # not yet
    shot("confirm-delete")
    page.click("#confirm-delete")
    expect(page).to_have_url(f"{app.url}/ui/modules")
    expect(page.locator(".flash")).to_have_text("Deleted tiny@1.0.0.")
    expect(page.locator('tr[data-ref="tiny@1.0.0"]')).to_have_count(0)
    with pytest.raises(ModuleNotFoundInRegistry):
        app.registry.get("tiny@1.0.0")
    shot("deleted")


def test_trigger_a_flow_and_see_its_run_succeed(app: App, page: Any) -> None:
    from playwright.sync_api import expect

    shot = Shots(page, "flow")
    _login(page, app, "/ui/flows")
    expect(page.locator(f'a:text-is("{FLOW}")')).to_be_visible()
    shot("flows")

    page.click(f'a:text-is("{FLOW}")')
    expect(page).to_have_url(f"{app.url}/ui/flows/{FLOW}")
    expect(page.locator("#configuration")).to_contain_text('"type": "memory"')
    page.click("button:text-is('Enable')")
    expect(page.locator(".flash")).to_have_text(f"Flow {FLOW} enabled.")
    assert app.store.get_flow(FLOW).enabled is True
    shot("flow")

    page.click("#trigger")
    expect(page).to_have_url(re.compile(r"/ui/runs/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    shot("triggered")

    # the runs page shows it; it refreshes itself until the run has finished
    page.click("nav >> text=Runs")
    row = page.locator(f'tr[data-run="{run_id}"]')
    expect(row.locator("td").nth(1)).to_have_text(FLOW)
    expect(row.locator(".run-status")).to_have_text("success", timeout=30_000)
    expect(row.locator("td").nth(6)).to_have_text("5")  # records in
    expect(row.locator("td").nth(7)).to_have_text("5")  # records out
    shot("run-success")
    run = app.store.get_run(run_id)
    assert (run.status, run.trigger, run.records_in, run.records_out) == ("success", "manual", 5, 5)

    row.locator("a").first.click()
    expect(page.locator("h1 .run-status")).to_have_text("success")
    expect(page.locator("dl.facts")).to_contain_text("5 in · 5 out · 0 dead letters")
    shot("run-detail")


def test_see_a_runs_dead_letters_and_replay_them_after_the_fix(
    app: App, page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import expect

    from active_data_flow.handlers.scheduler import trigger_run

    env = "ADF_E2E_DEAD_LETTERS_FIXED"
    monkeypatch.delenv(env, raising=False)
    out = app.root / "replayed.jsonl"
    long_note = "a long note " * 30
    app.store.create_flow(
        "e2e-fixable",
        {"source": {"type": "memory", "records": [
            {"n": 0}, {"n": 1, "bad": True, "note": "<b>not bold</b>"}, {"n": 2, "bad": True, "note": long_note}]},
         "steps": [{"type": "python", "function": "flowlib.integrity:reject_when", "options": {"env": env}}],
         "sink": {"type": "file", "path": str(out), "mode": "append"}},
        3600,
        enabled=False,
    )
    run = trigger_run(app.store, app.settings, "e2e-fixable")
    assert (run.status, run.dead_letters) == ("partial", 2)

    shot = Shots(page, "dead-letters")
    _login(page, app, f"/ui/runs/{run.id}")
    rows = page.locator("table.dead-letters tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator("td.origin")).to_have_text("index 1")
    expect(rows.nth(0).locator("td.reason")).to_have_text("ValueError: record 1 is marked bad")
    expect(rows.nth(0).locator("td.record")).to_contain_text('"note": "<b>not bold</b>"')  # text, not markup
    # the long record is folded: its whole JSON opens on a click
    full = rows.nth(1).locator("pre.record-full")
    expect(full).to_be_hidden()
    rows.nth(1).locator("summary").click()
    expect(full).to_be_visible()
    expect(full).to_contain_text(long_note.strip())
    shot("listed")

    monkeypatch.setenv(env, "1")  # the fix
    page.click("#replay-dead-letters")
    expect(page).to_have_url(re.compile(rf"/ui/runs/{run.id}#dead-letters$"))
    expect(page.locator(".flash")).to_have_text("Replayed 2 dead letters: 2 written, 0 failed again; none remain.")
    expect(page.locator("#no-dead-letters")).to_be_visible()
    expect(page.locator("#replay-dead-letters")).to_have_count(0)
    expect(page.locator("table.replays tbody tr")).to_have_count(1)
    shot("replayed")
    assert sorted(json.loads(line)["n"] for line in out.read_text().splitlines()) == [0, 1, 2]
