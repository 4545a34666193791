"""The dashboard (/ui) over real HTTP, without a browser: login, sessions, CSRF, validation.

One uvicorn server per test module (SQLite schedule, a temporary WASM registry through
ADF_WASM_DB_URL / ADF_WASM_STORAGE); every test logs in with its own httpx client, so cookie
jars do not leak between tests. The browser scenario is in test_dashboard_e2e.py.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from live_server import client_from, live_server

from active_data_flow.handlers.schedule.sql import SqlScheduleStore
from active_data_flow.handlers.schedule.store import RunRecord
from active_data_flow.handlers.settings import Settings
from active_data_flow.handlers.web.dashboard import parse_form
from active_data_flow.wasm.registry import ModuleRegistry

TOKEN = "dashboard-token-7"
WAT = ('(module (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) i32.const 0) '
       '(func (export "run") (param i32 i32) (result i64) i64.const 0))')


def _spec(records: int = 2) -> dict[str, Any]:
    return {"source": {"type": "memory", "records": [{"id": i} for i in range(records)]}, "sink": {"type": "memory"}}


@dataclass
class Server:
    url: str
    store: SqlScheduleStore
    registry: ModuleRegistry
    wasm: bytes
    state_dir: str

    def client(self, address: str | None = None) -> httpx.Client:
        return client_from(address, base_url=self.url, follow_redirects=False)

    def login(self, client: httpx.Client, token: str = TOKEN) -> httpx.Response:
        page = client.get("/ui/login")
        assert page.status_code == 200, page.text
        return client.post("/ui/login", data={"token": token, "csrf_token": csrf_of(page), "next": "/ui/flows"})

    @contextlib.contextmanager
    def logged_in(self, address: str | None = None) -> Iterator[tuple[httpx.Client, str]]:
        """A client with a session, and the session's CSRF token."""
        with self.client(address) as client:
            resp = self.login(client)
            assert resp.status_code == 303, resp.text
            yield client, csrf_of(client.get("/ui/flows"))

    def flow(self, **kwargs: Any) -> str:
        name = f"f-{uuid.uuid4().hex[:8]}"
        self.store.create_flow(name, _spec(), 3600, **kwargs)
        return name

    def module(self) -> str:
        module_id = f"m{uuid.uuid4().hex[:8]}"
        self.registry.upload(module_id, "1.0.0", self.wasm, permissions=["db:read:main/orders*"])
        return module_id


def _finished(server: Server, trigger: httpx.Response) -> RunRecord:
    """The run a "Trigger now" redirected to, once it has finished (it runs after the redirect)."""
    assert trigger.status_code == 303, trigger.text
    run_id = int(trigger.headers["location"].rsplit("/", 1)[1])
    deadline = time.monotonic() + 30
    while (run := server.store.get_run(run_id)).status in ("pending", "in_progress"):
        assert time.monotonic() < deadline, run
        time.sleep(0.05)
    return run


def csrf_of(resp: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', resp.text)
    assert found, resp.text
    return found.group(1)


@contextlib.contextmanager
def _serve(root: Path, **settings: Any) -> Iterator[Server]:
    import wasmtime

    config = Settings(state_dir=str(root / "state"), database_url=f"sqlite:///{root / 'adf.db'}", **settings)
    store = SqlScheduleStore(config.database_url)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADF_WASM_DB_URL", f"sqlite:///{root / 'wasm.db'}")
        mp.setenv("ADF_WASM_STORAGE", str(root / "wasm-modules"))
        registry = ModuleRegistry.from_env()
        try:
            with live_server(config, store) as url:
                yield Server(url, store, registry, bytes(wasmtime.wat2wasm(WAT)), config.state_dir)
        finally:
            registry.close()
            store.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with _serve(tmp_path_factory.mktemp("dashboard"), api_token=TOKEN) as running:
        yield running


PAGES = [
    "/ui/", "/ui/flows", "/ui/flows/anything", "/ui/new-flow", "/ui/runs", "/ui/runs/1", "/ui/heartbeats",
    "/ui/modules", "/ui/modules/m/1.0.0", "/ui/modules/m/1.0.0/delete", "/ui/no-such-page",
]


# --------------------------------------------------------------------------- login


@pytest.mark.parametrize("page", PAGES)
def test_every_page_redirects_to_the_login_without_a_session(server: Server, page: str) -> None:
    with server.client() as client:
        resp = client.get(page)
    assert resp.status_code == 303, resp.text
    location = urlsplit(resp.headers["location"])
    assert location.path == "/ui/login"
    assert parse_qs(location.query)["next"] == [page]


def test_the_bare_prefix_leads_to_the_dashboard(server: Server) -> None:
    with server.client() as anonymous:
        assert anonymous.get("/ui").headers["location"] == "/ui/"
    with server.logged_in() as (client, _):
        assert client.get("/ui/").headers["location"] == "/ui/flows"


def test_a_wrong_token_is_a_401_page_and_no_session(server: Server) -> None:
    with server.client() as client:
        resp = server.login(client, token="not-the-token")
        assert resp.status_code == 401
        assert resp.headers["content-type"].startswith("text/html")
        assert "Wrong token." in resp.text
        assert client.get("/ui/flows").status_code == 303  # still not logged in


def test_the_right_token_logs_in_with_a_hardened_cookie(server: Server) -> None:
    with server.client() as client:
        page = client.get("/ui/login", params={"next": "/ui/runs?status=failed"})
        resp = client.post("/ui/login", data={"token": TOKEN, "csrf_token": csrf_of(page),
                                              "next": "/ui/runs?status=failed"})
        assert resp.status_code == 303 and resp.headers["location"] == "/ui/runs?status=failed"
        cookie = resp.headers["set-cookie"]
        assert cookie.startswith("adf_session=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/ui" in cookie
        # a new session id and CSRF token at login: the pre-login ones are worthless afterwards
        assert csrf_of(client.get("/ui/flows")) != csrf_of(page)
        flows = client.get("/ui/flows")
        assert flows.status_code == 200 and "<h1>Flows</h1>" in flows.text
        for header in ("content-security-policy", "x-frame-options", "x-content-type-options"):
            assert header in flows.headers
        assert flows.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/ui/", "/api/flows", "/ui\\..\\x"])
def test_the_login_never_redirects_off_the_dashboard(server: Server, target: str) -> None:
    with server.client() as client:
        page = client.get("/ui/login")
        resp = client.post("/ui/login", data={"token": TOKEN, "csrf_token": csrf_of(page), "next": target})
        assert resp.status_code == 303 and resp.headers["location"] == "/ui/flows"


def test_a_forged_or_tampered_session_cookie_is_refused(server: Server) -> None:
    with server.logged_in() as (client, _):
        value = client.cookies["adf_session"]
        body, mac = value.split(".")
        for forged in (f"{body}.{'A' * len(mac)}", f"{body[:-2]}xx.{mac}", "e30.e30"):
            with server.client() as other:
                other.cookies.set("adf_session", forged, path="/ui")
                assert other.get("/ui/flows").status_code == 303


def test_the_login_form_needs_its_csrf_token(server: Server) -> None:
    with server.client() as client:
        resp = client.post("/ui/login", data={"token": TOKEN, "next": "/ui/flows"})
        assert resp.status_code == 403 and "CSRF" in resp.text
        client.get("/ui/login")
        resp = client.post("/ui/login", data={"token": TOKEN, "csrf_token": "guess"})
        assert resp.status_code == 403
        assert client.get("/ui/flows").status_code == 303


def test_logout_ends_the_session_even_for_a_copied_cookie(server: Server) -> None:
    with server.logged_in() as (client, csrf):
        stolen = client.cookies["adf_session"]
        resp = client.post("/ui/logout", data={"csrf_token": csrf})
        assert resp.status_code == 303 and resp.headers["location"] == "/ui/login?logged_out=1"
        assert client.get("/ui/flows").status_code == 303
    with server.client() as other:
        other.cookies.set("adf_session", stolen, path="/ui")
        assert other.get("/ui/flows").status_code == 303


def test_repeated_wrong_tokens_are_throttled_per_client_but_never_the_right_one(server: Server) -> None:
    with server.client("127.0.0.2") as client:
        for _ in range(10):
            assert server.login(client, token="wrong").status_code == 401
        resp = server.login(client, token="wrong")  # a wrong token is refused for a while
        assert resp.status_code == 429 and "Too many failed logins" in resp.text
        assert 0 < int(resp.headers["retry-after"]) <= 600
        # someone guessing from the same address does not lock the token's owner out
        assert server.login(client).status_code == 303
        assert client.get("/ui/flows").status_code == 200
    with server.logged_in() as (client, _):  # another client is not affected
        assert client.get("/ui/flows").status_code == 200


def test_without_an_api_token_the_login_is_disabled(tmp_path: Path) -> None:
    with _serve(tmp_path) as running, running.client() as client:
        page = client.get("/ui/login")
        assert "ADF_API_TOKEN" in page.text and 'name="token"' not in page.text
        # the form is not shown; a POST with the session's own CSRF token is refused all the same
        body = client.cookies["adf_session"].split(".")[0]
        csrf = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["csrf"]
        resp = client.post("/ui/login", data={"token": "", "csrf_token": csrf})
        assert resp.status_code == 503 and "Login is disabled" in resp.text
        assert client.get("/ui/flows").status_code == 303


# --------------------------------------------------------------------------- CSRF


def _posts(server: Server) -> list[tuple[str, dict[str, str]]]:
    flow = server.flow()
    module = server.module()
    return [
        (f"/ui/flows/{flow}/disable", {}),
        (f"/ui/flows/{flow}/trigger", {}),
        (f"/ui/flows/{flow}/configuration", {"format": "json", "configuration": '{"source": {}}', "run_interval": "5"}),
        ("/ui/new-flow", {"name": "csrf-new", "format": "json", "configuration": "{}", "run_interval": "60"}),
        (f"/ui/modules/{module}/1.0.0/permissions/add", {"permission": "http:read:https://x.example/*"}),
        (f"/ui/modules/{module}/1.0.0/permissions/remove", {"permission": "db:read:main/orders*"}),
        (f"/ui/modules/{module}/1.0.0/delete", {"confirm": "yes"}),
        ("/ui/modules/upload", {"id": "csrf-mod", "version": "1.0.0"}),
        ("/ui/runs/1/dead-letters/replay", {}),
        ("/ui/logout", {}),
    ]


@pytest.mark.parametrize("token", [None, "", "wrong-token"], ids=["missing", "empty", "wrong"])
def test_every_form_post_without_the_right_csrf_token_is_403_and_changes_nothing(
    server: Server, token: str | None
) -> None:
    posts = _posts(server)
    flows_before = {f.name: f.to_dict() for f in server.store.list_flows()}
    runs_before = len(server.store.list_runs(limit=1000))
    modules_before = [m.to_dict() for m in server.registry.list()]
    with server.logged_in() as (client, _):
        for path, data in posts:
            body = dict(data) if token is None else {**data, "csrf_token": token}
            resp = client.post(path, data=body)
            assert resp.status_code == 403, (path, resp.text)
            assert "CSRF token is missing or invalid" in resp.text
        # an upload as the drop zone sends it (multipart, fetch) is refused the same way
        resp = client.post("/ui/modules/upload", data={"id": "x", "version": "1.0.0", **({"csrf_token": token} if token else {})},
                           files={"module": ("x.wasm", server.wasm, "application/wasm")},
                           headers={"X-Requested-With": "fetch"})
        assert resp.status_code == 403 and "CSRF" in resp.json()["error"]
        assert client.get("/ui/flows").status_code == 200  # still logged in
    assert {f.name: f.to_dict() for f in server.store.list_flows()} == flows_before
    assert len(server.store.list_runs(limit=1000)) == runs_before
    assert [m.to_dict() for m in server.registry.list()] == modules_before


def test_the_csrf_token_of_another_session_is_refused(server: Server) -> None:
    flow = server.flow()
    with server.logged_in() as (first, first_csrf), server.logged_in() as (_second, second_csrf):
        assert first_csrf != second_csrf
        assert first.post(f"/ui/flows/{flow}/disable", data={"csrf_token": second_csrf}).status_code == 403
        assert server.store.get_flow(flow).enabled is True
        assert first.post(f"/ui/flows/{flow}/disable", data={"csrf_token": first_csrf}).status_code == 303
        assert server.store.get_flow(flow).enabled is False


def test_a_post_without_a_session_goes_to_the_login_and_changes_nothing(server: Server) -> None:
    flow = server.flow()
    with server.client() as client:
        resp = client.post(f"/ui/flows/{flow}/disable", data={"csrf_token": "x"})
        assert resp.status_code == 303 and resp.headers["location"].startswith("/ui/login?")
        resp = client.post("/ui/modules/upload", data={"id": "x"}, headers={"X-Requested-With": "fetch"})
        assert resp.status_code == 401
    assert server.store.get_flow(flow).enabled is True


# --------------------------------------------------------------------------- flows


def test_an_invalid_configuration_shows_every_problem_and_saves_nothing(server: Server) -> None:
    flow = server.flow(description="before")
    before = server.store.get_flow(flow)
    with server.logged_in() as (client, csrf):
        # not JSON at all: where it breaks
        resp = client.post(f"/ui/flows/{flow}/configuration", data={
            "csrf_token": csrf, "format": "json", "configuration": '{"source": {"type": "memory",}}',
            "run_interval": "60", "description": "after"})
        assert resp.status_code == 422
        assert "configuration: invalid JSON at line 1, column 30" in resp.text
        assert "{&#34;source&#34;: {&#34;type&#34;: &#34;memory&#34;,}}" in resp.text  # the text is kept for fixing

        # YAML that parses but is not a valid spec, and a bad interval: all problems at once
        resp = client.post(f"/ui/flows/{flow}/configuration", data={
            "csrf_token": csrf, "format": "yaml", "configuration": "source:\n  type: nope\n", "run_interval": "0"})
        assert resp.status_code == 422
        problems = re.findall(r"<li>(.*?)</li>", resp.text)
        assert any("unknown source type &#39;nope&#39;" in p for p in problems), problems
        assert any("&#39;sink&#39; is required" in p for p in problems), problems
        assert any(p.startswith("run_interval: must be a positive integer") for p in problems), problems
        assert 'aria-invalid="true"' in resp.text

        # not a mapping
        resp = client.post(f"/ui/flows/{flow}/configuration", data={
            "csrf_token": csrf, "format": "yaml", "configuration": "- a\n- b\n", "run_interval": "60"})
        assert resp.status_code == 422 and "must be a mapping" in resp.text
    after = server.store.get_flow(flow)
    assert (after.configuration, after.run_interval, after.description, after.updated_at) == (
        before.configuration, before.run_interval, before.description, before.updated_at)


def test_a_valid_yaml_configuration_is_saved(server: Server) -> None:
    flow = server.flow()
    with server.logged_in() as (client, csrf):
        page = client.get(f"/ui/flows/{flow}", params={"format": "yaml"})
        assert page.status_code == 200 and "type: memory" in page.text
        text = "source:\n  type: memory\n  records: [{id: 7}]\nsink: {type: memory, name: edited}\n"
        resp = client.post(f"/ui/flows/{flow}/configuration", data={
            "csrf_token": csrf, "format": "yaml", "configuration": text, "run_interval": "120",
            "description": "edited"})
        assert resp.status_code == 303, resp.text
        assert "Configuration saved" in client.get(resp.headers["location"]).text
    saved = server.store.get_flow(flow)
    assert saved.configuration == {"source": {"type": "memory", "records": [{"id": 7}]},
                                   "sink": {"type": "memory", "name": "edited"}}
    assert (saved.run_interval, saved.description) == (120, "edited")


def test_create_enable_disable_and_trigger_a_flow(server: Server) -> None:
    name = f"new-{uuid.uuid4().hex[:6]}"
    with server.logged_in() as (client, csrf):
        resp = client.post("/ui/new-flow", data={"csrf_token": csrf, "name": name, "format": "json",
                                                 "configuration": "{}", "run_interval": "60"})
        assert resp.status_code == 422 and "&#39;source&#39; is required" in resp.text
        assert name not in {f.name for f in server.store.list_flows()}
        config = '{"source": {"type": "memory", "records": [{"id": 1}, {"id": 2}, {"id": 3}]}, "sink": {"type": "memory"}}'
        resp = client.post("/ui/new-flow", data={"csrf_token": csrf, "name": name, "format": "json",
                                                 "configuration": config, "run_interval": "3600"})
        assert resp.status_code == 303 and resp.headers["location"] == f"/ui/flows/{name}"
        assert server.store.get_flow(name).enabled is False  # the checkbox was not sent

        assert client.post(f"/ui/flows/{name}/enable", data={"csrf_token": csrf}).status_code == 303
        assert server.store.get_flow(name).enabled is True

        resp = client.post(f"/ui/flows/{name}/trigger", data={"csrf_token": csrf})
        assert resp.status_code == 303
        run = _finished(server, resp)
        run_id = run.id
        assert (run.status, run.trigger, run.records_in, run.records_out) == ("success", "manual", 3, 3)
        page = client.get(f"/ui/runs/{run_id}")
        assert "status-success" in page.text and "3 in · 3 out · 0 dead letters" in page.text
        runs = client.get("/ui/runs", params={"flow": name})
        assert f'data-run="{run_id}"' in runs.text


def test_a_failed_run_shows_its_error_and_backtrace(server: Server) -> None:
    name = server.flow()
    server.store.update_flow(name, configuration={
        "source": {"type": "memory", "records": [{"n": 7}]},
        "steps": [{"type": "python", "function": "flowlib.steps:explode_on_sevens"}],
        "sink": {"type": "memory"},
        "runtime": {"max_dead_letters": 0},
    })
    with server.logged_in() as (client, csrf):
        run = _finished(server, client.post(f"/ui/flows/{name}/trigger", data={"csrf_token": csrf}))
        assert run.status == "failed" and run.error_backtrace
        page = client.get(f"/ui/runs/{run.id}").text
        assert "status-failed" in page and "<summary>Backtrace</summary>" in page
        assert "dead-lettered" in page and "Traceback (most recent call last)" in page
        listing = client.get("/ui/runs", params={"status": "failed"}).text
        assert f'data-run="{run.id}"' in listing and "dead-lettered" in listing


def test_unknown_flows_runs_and_modules_are_404_pages(server: Server) -> None:
    with server.logged_in() as (client, _):
        for path in ("/ui/flows/nope", "/ui/runs/987654", "/ui/modules/nope/1.0.0", "/ui/somewhere/else"):
            resp = client.get(path)
            assert resp.status_code == 404 and resp.headers["content-type"].startswith("text/html"), path


def test_the_heartbeat_log_page(server: Server) -> None:
    server.store.log_heartbeat(client="10.9.8.7", outcome="unauthorized", status_code=401,
                               detail="invalid X-Heartbeat-Token")
    with server.logged_in() as (client, _):
        page = client.get("/ui/heartbeats")
    assert page.status_code == 200
    assert "10.9.8.7" in page.text and "outcome-unauthorized" in page.text and "invalid X-Heartbeat-Token" in page.text


# --------------------------------------------------------------------------- dead letters

HEARTBEAT_TOKEN = "dashboard-heartbeat-3"


@pytest.fixture
def beating(tmp_path: Path) -> Iterator[Server]:
    """A server of its own whose heartbeat takes HEARTBEAT_TOKEN (a tick runs every due flow)."""
    with _serve(tmp_path, api_token=TOKEN, heartbeat_token=HEARTBEAT_TOKEN) as running:
        yield running


def _heartbeat(server: Server) -> list[int]:
    with server.client() as client:
        resp = client.post("/heartbeat", headers={"X-Heartbeat-Token": HEARTBEAT_TOKEN})
    assert resp.status_code == 200, resp.text
    return list(resp.json()["run_ids"])


def _fixable(server: Server, root: Path, env: str, **extra: Any) -> tuple[str, Path, Path]:
    """A flow reading ten records and a malformed line from a file; its step refuses n = 2, 5 and 7
    until ``env`` is set to 1. Returns its name, input file and output file."""
    src = root / "orders.jsonl"
    lines = [json.dumps({"n": n, "bad": n in (2, 5, 7)}) for n in range(10)]
    lines.insert(4, "{not json")  # line 5
    src.write_text("\n".join(lines) + "\n")
    out = root / "out.jsonl"
    name = f"fixable-{uuid.uuid4().hex[:6]}"
    server.store.create_flow(name, {
        "source": {"type": "file", "path": str(src)},
        "steps": [{"type": "python", "function": "flowlib.integrity:reject_when", "options": {"env": env}}],
        "sink": {"type": "file", "path": str(out), "mode": "append"},
        **extra,
    }, 3600)
    return name, src, out


def _letter_rows(page: str) -> dict[int, str]:
    """The dead-letter rows of a run page by number, as HTML."""
    return {int(n): row for n, row in re.findall(r'<tr data-letter="(\d+)">(.*?)</tr>', page, re.S)}


def _flash(page: str) -> str:
    found = re.search(r'<div class="flash flash-(\w+)" role="status">(.*?)</div>', page, re.S)
    assert found, page
    return f"{found.group(1)}: {found.group(2)}"


def test_a_runs_dead_letters_are_shown_and_replayed_after_the_fix(
    beating: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = "ADF_DASHBOARD_FIXED"
    monkeypatch.delenv(env, raising=False)
    _, src, out = _fixable(beating, tmp_path, env)
    [run_id] = _heartbeat(beating)
    run = beating.store.get_run(run_id)
    assert (run.status, run.records_in, run.records_out, run.dead_letters) == ("partial", 11, 7, 4)
    assert sorted(r["n"] for r in map(json.loads, out.read_text().splitlines())) == [0, 1, 3, 4, 6, 8, 9]

    with beating.logged_in() as (client, csrf):
        page = client.get(f"/ui/runs/{run_id}").text
        rows = _letter_rows(page)
        assert sorted(rows) == [1, 2, 3, 4]
        by_line = {int(re.search(r"line (\d+)", row).group(1)): row for row in rows.values()}  # type: ignore[union-attr]
        assert sorted(by_line) == [3, 5, 7, 9]
        for line, n in ((3, 2), (7, 5), (9, 7)):
            row = by_line[line]
            assert f"{src}, line {line}" in row
            assert "step" in row and "python:flowlib.integrity:reject_when" in row
            assert f"ValueError: record {n} is marked bad" in row
            assert f"{{&#34;n&#34;: {n}, &#34;bad&#34;: true}}" in row  # the record, as JSON
        assert "source" in by_line[5] and "invalid JSON" in by_line[5] and "{not json" in by_line[5]
        assert 'id="replay-dead-letters"' in page and "Replay 4 dead letters" in page

        # not fixed yet: every record is refused again and stays, with its new and previous reason
        resp = client.post(f"/ui/runs/{run_id}/dead-letters/replay", data={"csrf_token": csrf})
        assert resp.status_code == 303 and resp.headers["location"] == f"/ui/runs/{run_id}#dead-letters"
        page = client.get(f"/ui/runs/{run_id}").text
        assert _flash(page) == (
            "info: Replayed 3 dead letters: 0 written, 3 failed again, 1 not replayable "
            "(malformed input, or a step the flow no longer has); 4 remain.")
        assert len(_letter_rows(page)) == 4 and page.count("replayed once, before:") == 3

        # the fix, then the replay: the three records reach the sink, the malformed line stays
        monkeypatch.setenv(env, "1")
        resp = client.post(f"/ui/runs/{run_id}/dead-letters/replay", data={"csrf_token": csrf})
        assert resp.status_code == 303
        page = client.get(resp.headers["location"].split("#")[0]).text
        assert _flash(page) == (
            "info: Replayed 3 dead letters: 3 written, 0 failed again, 1 not replayable "
            "(malformed input, or a step the flow no longer has); 1 remains.")
        [row] = _letter_rows(page).values()
        assert "source" in row and f"{src}, line 5" in row
        assert "Replay 1 dead letter<" in page
        replays = re.search(r'<table class="replays">(.*?)</table>', page, re.S)
        assert replays and replays.group(1).count("<tr>") == 3  # the header and two replays
    assert sorted(r["n"] for r in map(json.loads, out.read_text().splitlines())) == list(range(10))
    assert beating.store.get_run(run_id).status == "partial"  # the schedule's record of the run is history


def test_a_replay_that_leaves_nothing_says_so(beating: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = "ADF_DASHBOARD_ALL_FIXED"
    monkeypatch.delenv(env, raising=False)
    name = f"clean-{uuid.uuid4().hex[:6]}"
    out = tmp_path / "clean.jsonl"
    beating.store.create_flow(name, {
        "source": {"type": "memory", "records": [{"n": n, "bad": n == 1} for n in range(3)]},
        "steps": [{"type": "python", "function": "flowlib.integrity:reject_when", "options": {"env": env}}],
        "sink": {"type": "file", "path": str(out), "mode": "append"},
    }, 3600)
    [run_id] = _heartbeat(beating)
    monkeypatch.setenv(env, "1")
    with beating.logged_in() as (client, csrf):
        page = client.get(f"/ui/runs/{run_id}").text
        [row] = _letter_rows(page).values()
        assert "index 1" in row  # a memory source's record: its index in the list
        client.post(f"/ui/runs/{run_id}/dead-letters/replay", data={"csrf_token": csrf})
        page = client.get(f"/ui/runs/{run_id}").text
        assert _flash(page) == "ok: Replayed 1 dead letter: 1 written, 0 failed again; none remain."
        assert _letter_rows(page) == {} and 'id="no-dead-letters"' in page
        assert 'id="replay-dead-letters"' not in page
    assert sorted(r["n"] for r in map(json.loads, out.read_text().splitlines())) == [0, 1, 2]


def test_hostile_record_content_is_escaped_on_the_run_page(beating: Server) -> None:
    name = f"hostile-{uuid.uuid4().hex[:6]}"
    script = "<script>alert('dead letter')</script>"
    beating.store.create_flow(name, {
        "source": {"type": "memory", "records": [
            {"n": "<img src=x onerror=alert(1)>", "bad": True, "note": script},
            {"n": 2, "bad": True, "</td></tr><tr><td>": "x" * 300 + script},
        ]},
        "steps": [{"type": "python", "function": "flowlib.integrity:reject_when"}],
        "sink": {"type": "memory"},
    }, 3600)
    [run_id] = _heartbeat(beating)
    with beating.logged_in() as (client, _):
        page = client.get(f"/ui/runs/{run_id}").text
    assert "<script>alert" not in page and "<img src=x" not in page and "</td></tr><tr><td>" not in page
    assert "&lt;script&gt;alert(&#39;dead letter&#39;)&lt;/script&gt;" in page
    assert "ValueError: record &lt;img src=x onerror=alert(1)&gt; is marked bad" in page
    rows = _letter_rows(page)
    assert len(rows) == 2
    # the long record is shortened, the whole of it folded away in a <details>
    [long_row] = [row for row in rows.values() if "x" * 100 in row]
    assert "<details>" in long_row and "…</code></summary>" in long_row
    assert "&lt;/td&gt;&lt;/tr&gt;&lt;tr&gt;&lt;td&gt;" in long_row and "x" * 300 + "&lt;script&gt;" in long_row


def test_the_run_page_lists_the_first_200_dead_letters_and_names_the_command_for_all(beating: Server) -> None:
    name = f"many-{uuid.uuid4().hex[:6]}"
    beating.store.create_flow(name, {
        "source": {"type": "memory", "records": [{"n": n, "bad": True} for n in range(205)]},
        "steps": [{"type": "python", "function": "flowlib.integrity:reject_when"}],
        "sink": {"type": "memory"},
    }, 3600)
    [run_id] = _heartbeat(beating)
    engine_run_id = beating.store.get_run(run_id).engine_run_id
    with beating.logged_in() as (client, _):
        page = client.get(f"/ui/runs/{run_id}").text
    assert sorted(_letter_rows(page)) == list(range(1, 201))
    more = re.search(r'<p class="hint" id="more-dead-letters">(.*?)</p>', page, re.S)
    assert more and more.group(1).startswith("5 more not shown:")
    assert f"adf dead-letters show {name}/{engine_run_id} --state-dir {beating.state_dir}" in more.group(1)
    assert "Replay 205 dead letters" in page


def test_dead_letters_that_went_to_a_sink_are_explained_and_not_replayed(beating: Server, tmp_path: Path) -> None:
    rejected = tmp_path / "rejected.jsonl"
    _fixable(beating, tmp_path, "ADF_DASHBOARD_NEVER", dead_letter={"type": "file", "path": str(rejected)})
    [run_id] = _heartbeat(beating)
    assert len(rejected.read_text().splitlines()) == 4
    with beating.logged_in() as (client, csrf):
        page = client.get(f"/ui/runs/{run_id}").text
        problem = re.search(r'<p class="error-message" id="dead-letter-problem">(.*?)</p>', page, re.S)
        assert problem and "went to the sink" in problem.group(1), page
        assert 'id="replay-dead-letters"' not in page
        resp = client.post(f"/ui/runs/{run_id}/dead-letters/replay", data={"csrf_token": csrf})
        assert resp.status_code == 303
        flash = _flash(client.get(f"/ui/runs/{run_id}").text)
        assert flash.startswith("error: Not replayed: the dead letters of run") and "went to the sink" in flash
    assert len(rejected.read_text().splitlines()) == 4


def test_a_replay_is_refused_while_another_runs_or_the_run_is_still_going(beating: Server, tmp_path: Path) -> None:
    import fcntl
    import os

    name, _, out = _fixable(beating, tmp_path, "ADF_DASHBOARD_NEVER")
    [run_id] = _heartbeat(beating)
    letters = next((tmp_path / "state" / name / "runs").iterdir()) / "dead_letters.jsonl"
    before = letters.read_bytes()
    busy = beating.store.create_run(name, trigger="manual", worker_id="elsewhere", lease_seconds=300)
    beating.store.start_run(busy.id, "elsewhere", lease_seconds=300, engine_run_id="run-still-going")
    with beating.logged_in() as (client, csrf):
        fd = os.open(f"{letters}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # as a replay in another process holds it
            resp = client.post(f"/ui/runs/{run_id}/dead-letters/replay", data={"csrf_token": csrf})
            assert resp.status_code == 303
            flash = _flash(client.get(f"/ui/runs/{run_id}").text)
            assert flash.startswith("error: Not replayed:") and "being replayed by another process" in flash
        finally:
            os.close(fd)
        client.post(f"/ui/runs/{busy.id}/dead-letters/replay", data={"csrf_token": csrf})
        assert _flash(client.get(f"/ui/runs/{busy.id}").text) == (
            f"error: Not replayed: run #{busy.id} is in progress: replay its dead letters when it has finished")
        # a failed run's checkpoint is resumed by the flow's next run, in the same run directory
        (tmp_path / "failing").mkdir()
        failing, _, _ = _fixable(beating, tmp_path / "failing", "ADF_DASHBOARD_NEVER", runtime={"max_dead_letters": 1})
        [failed_id] = _heartbeat(beating)
        assert beating.store.get_run(failed_id).status == "failed"
        resuming = beating.store.create_run(failing, trigger="retry", worker_id="elsewhere", lease_seconds=300)
        beating.store.start_run(resuming.id, "elsewhere", lease_seconds=300, engine_run_id="run-resuming")
        client.post(f"/ui/runs/{failed_id}/dead-letters/replay", data={"csrf_token": csrf})
        flash = _flash(client.get(f"/ui/runs/{failed_id}").text)
        assert flash.startswith(f"error: Not replayed: run #{resuming.id} of flow {failing} is in progress"), flash
        # without the CSRF token nothing happens at all
        assert client.post(f"/ui/runs/{run_id}/dead-letters/replay", data={}).status_code == 403
        assert client.post("/ui/runs/987654/dead-letters/replay", data={"csrf_token": csrf}).status_code == 404
    assert letters.read_bytes() == before
    assert len(out.read_text().splitlines()) == 7


# --------------------------------------------------------------------------- WASM modules


def test_an_invalid_permission_is_an_inline_error_and_nothing_changes(server: Server) -> None:
    module = server.module()
    with server.logged_in() as (client, csrf):
        for bad, message in [("http:bogus:https://x", "unknown kind &#39;http:bogus&#39;"),
                             ("db:read:orders", "a db pattern is &lt;connection&gt;/&lt;table glob&gt;"),
                             ("file:read:../etc", "&#39;..&#39; is not allowed"),
                             ("", "enter a permission")]:
            resp = client.post(f"/ui/modules/{module}/1.0.0/permissions/add",
                               data={"csrf_token": csrf, "permission": bad})
            assert resp.status_code == 422, bad
            error = re.search(r'<p class="field-error" id="permission-error" role="alert">(.*?)</p>', resp.text)
            assert error and message in error.group(1), (bad, resp.text)
            assert f'value="{bad}"' in resp.text.replace("&#39;", "'") or not bad
    assert server.registry.get(f"{module}@1.0.0").permissions.to_list() == ["db:read:main/orders*"]


def test_add_and_remove_a_permission(server: Server) -> None:
    module = server.module()
    ref = f"{module}@1.0.0"
    with server.logged_in() as (client, csrf):
        resp = client.post(f"/ui/modules/{module}/1.0.0/permissions/add",
                           data={"csrf_token": csrf, "permission": " http:read:https://api.example.com/* "})
        assert resp.status_code == 303
        assert server.registry.get(ref).permissions.to_list() == ["db:read:main/orders*", "http:read:https://api.example.com/*"]
        page = client.get(f"/ui/modules/{module}/1.0.0")
        assert "Granted http:read:https://api.example.com/*" in page.text
        resp = client.post(f"/ui/modules/{module}/1.0.0/permissions/remove",
                           data={"csrf_token": csrf, "permission": "db:read:main/orders*"})
        assert resp.status_code == 303
    assert server.registry.get(ref).permissions.to_list() == ["http:read:https://api.example.com/*"]
    changes = server.registry.audit_log(module_id=module, event="permissions_changed")
    assert len(changes) == 2


def test_upload_list_and_delete_with_confirmation(server: Server) -> None:
    module = f"up{uuid.uuid4().hex[:8]}"
    with server.logged_in() as (client, csrf):
        # not WebAssembly: refused, in JSON for the drop zone
        resp = client.post("/ui/modules/upload", data={"csrf_token": csrf, "id": module, "version": "1.0.0"},
                           files={"module": ("x.wasm", b"\x00asm-not-really", "application/wasm")},
                           headers={"X-Requested-With": "fetch"})
        assert resp.status_code == 422 and f"cannot upload {module}@1.0.0" in resp.json()["error"]
        # a bad version and no file, as a plain form: the page shows both and keeps the fields
        resp = client.post("/ui/modules/upload", data={"csrf_token": csrf, "id": module, "version": "one"},
                           files={"other": ("x.txt", b"", "text/plain")})
        assert resp.status_code == 422 and "choose a .wasm file" in resp.text and f'value="{module}"' in resp.text

        resp = client.post("/ui/modules/upload",
                           data={"csrf_token": csrf, "id": module, "version": "1.2.0", "permissions": "http:read:https://a.example/*\n"},
                           files={"module": ("whatever.wasm", server.wasm, "application/wasm")},
                           headers={"X-Requested-With": "fetch"})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"ok": True, "ref": f"{module}@1.2.0", "redirect": f"/ui/modules/{module}/1.2.0"}
        listing = client.get("/ui/modules").text
        row = re.search(rf'<tr data-ref="{module}@1.2.0">(.*?)</tr>', listing, re.S)
        assert row and f'title="{len(server.wasm)} bytes"' in row.group(1)
        detail = client.get(f"/ui/modules/{module}/1.2.0").text
        assert "http:read:https://a.example/*" in detail and hashlib.sha256(server.wasm).hexdigest() in detail

        # delete: the button leads to a confirmation page; a POST without confirm changes nothing
        confirm = client.get(f"/ui/modules/{module}/1.2.0/delete")
        assert confirm.status_code == 200 and f"Delete {module}@1.2.0?" in confirm.text
        resp = client.post(f"/ui/modules/{module}/1.2.0/delete", data={"csrf_token": csrf})
        assert resp.status_code == 303 and resp.headers["location"].endswith("/delete")
        assert server.registry.get(f"{module}@1.2.0")
        resp = client.post(f"/ui/modules/{module}/1.2.0/delete", data={"csrf_token": csrf, "confirm": "yes"})
        assert resp.status_code == 303 and resp.headers["location"] == "/ui/modules"
        assert f"Deleted {module}@1.2.0." in client.get("/ui/modules").text
    assert module not in {m.id for m in server.registry.list()}


def test_an_upload_larger_than_the_form_limit_of_other_pages_is_refused(server: Server) -> None:
    flow = server.flow()
    with server.logged_in() as (client, csrf):
        resp = client.post(f"/ui/flows/{flow}/configuration",
                           data={"csrf_token": csrf, "configuration": "x" * (3 * 1024 * 1024)})
        assert resp.status_code == 413


# --------------------------------------------------------------------------- form parsing


def test_the_multipart_parser_keeps_binary_content_exactly() -> None:
    boundary = "----bound42"
    payload = bytes(range(256)) + b"\r\n--" + boundary.encode()[:-1] + b"\r\n\r\n" + bytes(range(255, -1, -1))
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\nabc\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"id\"\r\n\r\nmod\u00e9\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"module\"; filename=\"a \\\"b\\\".wasm\"\r\n"
        "Content-Type: application/wasm\r\n\r\n"
    ).encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    form = parse_form(f"multipart/form-data; boundary={boundary}", body)
    assert form.get("csrf_token") == "abc" and form.get("id") == "mod\u00e9"
    upload = form.files["module"]
    assert upload.data == payload and upload.filename == 'a "b".wasm' and upload.content_type == "application/wasm"


@pytest.mark.parametrize("content_type, body, status", [
    ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1", 400),
    ("application/json", b'{"a": 1}', 415),
    ("application/x-www-form-urlencoded", b"a=%FF", 200),
])
def test_malformed_form_bodies(content_type: str, body: bytes, status: int) -> None:
    from active_data_flow.handlers.web.dashboard import FormError

    if status == 200:
        assert parse_form(content_type, body).get("a") == "\ufffd"
        return
    with pytest.raises(FormError) as caught:
        parse_form(content_type, body)
    assert caught.value.status == status
