"""The heartbeat endpoint over real HTTP: the auth matrix (token, IPv4/IPv6/CIDR allowlists,
X-Forwarded-For), the request log, modes and errors.

Each test runs the web app under uvicorn on 127.0.0.1 (or ::1) with a SQLite schedule; requests
leave from other loopback addresses (127.0.0.2, …) to play remote clients.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import LogCapture, client_from, live_server

from active_data_flow.handlers.schedule.sql import SqlScheduleStore
from active_data_flow.handlers.schedule.sqlite_exec import ExecScheduleStore, Sqlite3Exec
from active_data_flow.handlers.schedule.store import Claim, HeartbeatRetention, ScheduleStore
from active_data_flow.handlers.settings import Settings

TOKEN = "hb-7f3c9a"
RESULT_KEYS = {"flows_due", "flows_triggered", "run_ids", "timestamp"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlScheduleStore]:
    s = SqlScheduleStore(f"sqlite:///{tmp_path / 'adf.db'}")
    yield s
    s.close()


@pytest.fixture
def base(tmp_path: Path) -> Settings:
    return Settings(state_dir=str(tmp_path / "state"), database_url=f"sqlite:///{tmp_path / 'adf.db'}")


@pytest.fixture
def log() -> Iterator[LogCapture]:
    with LogCapture("adf.heartbeat") as capture:
        yield capture


def _flow(tmp_path: Path, name: str = "beat", records: int = 3) -> dict[str, Any]:
    return {
        "name": name,
        "source": {"type": "memory", "records": [{"n": i} for i in range(records)]},
        "sink": {"type": "file", "path": str(tmp_path / f"{name}.jsonl")},
    }


def _post(url: str, source: str | None = None, token: str | None = TOKEN, **kwargs: Any) -> httpx.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["X-Heartbeat-Token"] = token
    with client_from(source) as client:
        return client.post(f"{url}/heartbeat", headers=headers, **kwargs)


def _heartbeat_log(url: str) -> dict[str, dict[str, Any]]:
    """GET /api/heartbeats (from 127.0.0.1: no API token needed) keyed by request id."""
    with client_from() as client:
        rows = client.get(f"{url}/api/heartbeats", params={"limit": 1000}).json()
    return {row["detail"].split(":")[0].removeprefix("request "): row for row in rows}


def _assert_error(resp: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    for fragment in fragments:
        assert fragment in body["error"]
    return dict(body)


# --------------------------------------------------------------------------- token


def test_without_a_configured_token_the_heartbeat_refuses_with_503(store: SqlScheduleStore, base: Settings,
                                                                    tmp_path: Path) -> None:
    store.create_flow("beat", _flow(tmp_path), 60)
    with live_server(base, store) as url:
        resp = _post(url, token="anything")
    body = _assert_error(resp, 503, "set ADF_HEARTBEAT_TOKEN", "ADF_HEARTBEAT_OPEN=true")
    assert set(body) == {"error"}
    assert store.list_runs() == []
    assert not (tmp_path / "beat.jsonl").exists()


def test_the_token_matrix_missing_wrong_right(store: SqlScheduleStore, base: Settings, tmp_path: Path) -> None:
    store.create_flow("beat", _flow(tmp_path), 60)
    settings = dataclasses.replace(base, heartbeat_token=TOKEN)
    with live_server(settings, store) as url:
        missing = _post(url, token=None)
        wrong = _post(url, token=TOKEN + "x")
        empty = _post(url, token="")
        assert store.list_runs() == []  # nothing ran for the refused requests
        right = _post(url)
    _assert_error(missing, 401, "missing X-Heartbeat-Token")
    _assert_error(wrong, 401, "invalid X-Heartbeat-Token")
    _assert_error(empty, 401, "X-Heartbeat-Token")
    assert right.status_code == 200, right.text
    body = right.json()
    assert set(body) == RESULT_KEYS
    assert body["flows_due"] == 1 and body["flows_triggered"] == 1
    [run] = store.list_runs()
    assert body["run_ids"] == [run.id] and run.status == "success"
    assert (tmp_path / "beat.jsonl").read_text().count("\n") == 3
    assert body["timestamp"].endswith("Z")
    for resp in (missing, wrong, empty, right):
        assert len(resp.headers["x-request-id"]) == 32


def test_an_open_heartbeat_runs_without_a_token(store: SqlScheduleStore, base: Settings, tmp_path: Path) -> None:
    store.create_flow("beat", _flow(tmp_path), 60)
    with live_server(dataclasses.replace(base, heartbeat_open=True), store) as url:
        resp = _post(url, token=None)
    assert resp.status_code == 200, resp.text
    assert resp.json()["flows_triggered"] == 1


# --------------------------------------------------------------------------- addresses


def test_allowlist_of_one_address_allows_it_and_denies_another_loopback_address(
    store: SqlScheduleStore, base: Settings
) -> None:
    settings = dataclasses.replace(base, heartbeat_token=TOKEN, heartbeat_allowlist=("127.0.0.1/32",))
    with live_server(settings, store) as url:
        allowed = _post(url, "127.0.0.1")
        denied = _post(url, "127.0.0.2")
        denied_without_token = _post(url, "127.0.0.2", token=None)
    assert allowed.status_code == 200, allowed.text
    _assert_error(denied, 403, "client 127.0.0.2 is not in ADF_HEARTBEAT_ALLOWLIST")
    # the allowlist is checked first: a denied client learns nothing about the token
    _assert_error(denied_without_token, 403, "client 127.0.0.2")


@pytest.mark.parametrize(("source", "status"), [("127.0.0.1", 200), ("127.0.0.2", 200), ("127.0.0.3", 200),
                                                ("127.0.0.4", 403), ("127.0.0.200", 403)])
def test_allowlist_cidr_range(store: SqlScheduleStore, base: Settings, source: str, status: int) -> None:
    settings = dataclasses.replace(base, heartbeat_token=TOKEN, heartbeat_allowlist=("10.0.0.0/8", "127.0.0.0/30"))
    with live_server(settings, store) as url:
        resp = _post(url, source)
    assert resp.status_code == status, resp.text
    if status == 403:
        assert f"client {source} is not in" in resp.json()["error"]


@pytest.mark.parametrize(
    ("allowlist", "status"),
    [(("::1",), 200), (("::1/128", "10.0.0.0/8"), 200), (("::/127",), 200),
     (("2001:db8::/32",), 403), (("127.0.0.1",), 403), (("::2",), 403)],
)
def test_ipv6_client_on_the_ipv6_server(store: SqlScheduleStore, base: Settings, allowlist: tuple[str, ...],
                                        status: int) -> None:
    settings = dataclasses.replace(base, heartbeat_token=TOKEN, heartbeat_allowlist=allowlist)
    with live_server(settings, store, host="::1") as url:
        assert url.startswith("http://[::1]:")
        resp = _post(url)
        rows = _heartbeat_log(url)  # ::1 is local: the API answers without a token
    assert resp.status_code == status, resp.text
    if status == 403:
        assert "client ::1 is not in ADF_HEARTBEAT_ALLOWLIST" in resp.json()["error"]
    row = rows[resp.headers["x-request-id"]]
    assert row["client"] == "::1" and row["status_code"] == status


def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(store: SqlScheduleStore, base: Settings) -> None:
    settings = dataclasses.replace(base, heartbeat_token=TOKEN, heartbeat_allowlist=("127.0.0.1",))
    with live_server(settings, store) as url:
        spoofed = _post(url, "127.0.0.2", headers={"X-Forwarded-For": "127.0.0.1"})
        rows = _heartbeat_log(url)
    _assert_error(spoofed, 403, "client 127.0.0.2 is not in ADF_HEARTBEAT_ALLOWLIST")
    row = rows[spoofed.headers["x-request-id"]]
    assert (row["client"], row["outcome"], row["status_code"]) == ("127.0.0.2", "forbidden", 403)


def test_forwarded_for_is_honoured_from_a_trusted_proxy(store: SqlScheduleStore, base: Settings) -> None:
    # 127.0.0.2 plays the reverse proxy; the allowed client sits behind it.
    settings = dataclasses.replace(
        base, heartbeat_token=TOKEN, heartbeat_allowlist=("127.0.0.1",), trusted_proxies=("127.0.0.2",)
    )
    with live_server(settings, store) as url:
        via_proxy = _post(url, "127.0.0.2", headers={"X-Forwarded-For": "127.0.0.1"})
        other_client = _post(url, "127.0.0.2", headers={"X-Forwarded-For": "127.0.0.9"})
        # the client wrote "127.0.0.1" itself; the proxy appended the address it really saw
        spoof_through_proxy = _post(url, "127.0.0.2", headers={"X-Forwarded-For": "127.0.0.1, 127.0.0.9"})
        untrusted_peer = _post(url, "127.0.0.3", headers={"X-Forwarded-For": "127.0.0.1"})
        rows = _heartbeat_log(url)
    assert via_proxy.status_code == 200, via_proxy.text
    _assert_error(other_client, 403, "client 127.0.0.9")
    _assert_error(spoof_through_proxy, 403, "client 127.0.0.9")
    _assert_error(untrusted_peer, 403, "client 127.0.0.3")
    assert rows[via_proxy.headers["x-request-id"]]["client"] == "127.0.0.1"
    assert rows[untrusted_peer.headers["x-request-id"]]["client"] == "127.0.0.3"


def test_a_malformed_allowlist_refuses_every_heartbeat(store: SqlScheduleStore, base: Settings) -> None:
    settings = dataclasses.replace(base, heartbeat_token=TOKEN, heartbeat_allowlist=("127.0.0.1", "localhost"))
    with live_server(settings, store) as url:
        resp = _post(url)
    _assert_error(resp, 503, "ADF_HEARTBEAT_ALLOWLIST: 'localhost' is not an IP address or CIDR range")


# --------------------------------------------------------------------------- method, log, modes, errors


def test_get_is_405_with_allow_and_json(store: SqlScheduleStore, base: Settings) -> None:
    with live_server(dataclasses.replace(base, heartbeat_token=TOKEN), store) as url, client_from() as client:
        resp = client.get(f"{url}/heartbeat", headers={"X-Heartbeat-Token": TOKEN})
        put = client.put(f"{url}/heartbeat")
    _assert_error(resp, 405, "use POST")
    assert resp.headers["allow"] == "POST"
    _assert_error(put, 405, "method PUT not allowed")
    assert store.list_runs() == []


def test_every_request_is_in_the_heartbeat_log_and_the_json_log(
    store: SqlScheduleStore, base: Settings, tmp_path: Path, log: LogCapture
) -> None:
    store.create_flow("beat", _flow(tmp_path), 60)
    settings = dataclasses.replace(base, heartbeat_token=TOKEN, heartbeat_allowlist=("127.0.0.1",))
    with live_server(settings, store) as url:
        sent = [
            (_post(url), "ok", 200, "127.0.0.1"),
            (_post(url, token="wrong"), "unauthorized", 401, "127.0.0.1"),
            (_post(url, token=None), "unauthorized", 401, "127.0.0.1"),
            (_post(url, "127.0.0.2"), "forbidden", 403, "127.0.0.2"),
            (_post(url, params={"mode": "sideways"}), "bad_request", 400, "127.0.0.1"),
        ]
        with client_from() as http:
            sent.append((http.get(f"{url}/heartbeat"), "method_not_allowed", 405, "127.0.0.1"))
        rows = _heartbeat_log(url)
    lines = {line["request_id"]: line for line in log.lines if "request_id" in line}
    assert len(rows) == len(sent) == len(lines)
    for resp, outcome, status, client in sent:
        rid = resp.headers["x-request-id"]
        assert resp.status_code == status
        row = rows[rid]
        assert (row["outcome"], row["status_code"], row["client"]) == (outcome, status, client)
        assert row["ts"].endswith("Z")
        line = lines[rid]
        assert (line["outcome"], line["status"], line["client"]) == (outcome, status, client)
        assert line["logger"] == "adf.heartbeat" and line["ts"].endswith("Z")
        assert line["level"] == ("info" if status == 200 else "warning")
        if status != 200:
            assert line["detail"] == resp.json()["error"]
    ok = rows[sent[0][0].headers["x-request-id"]]
    assert (ok["flows_due"], ok["flows_triggered"]) == (1, 1)
    assert TOKEN not in json.dumps(log.lines) and "wrong" not in json.dumps(list(rows.values()))


def test_mode_query_overrides_the_setting_only_for_an_authorised_caller(
    store: SqlScheduleStore, base: Settings, tmp_path: Path
) -> None:
    store.create_flow("beat", _flow(tmp_path), 60)
    settings = dataclasses.replace(base, heartbeat_token=TOKEN, heartbeat_mode="sync")
    with live_server(settings, store) as url:
        refused = _post(url, token="nope", params={"mode": "async"})
        bad = _post(url, params={"mode": "later"})
        assert store.list_runs() == []
        resp = _post(url, params={"mode": "async"})
    _assert_error(refused, 401)
    _assert_error(bad, 400, "mode must be 'sync' or 'async'")
    assert resp.status_code == 200 and resp.json()["flows_triggered"] == 1
    [run] = store.list_runs()
    assert run.status == "pending" and run.id in resp.json()["run_ids"]
    assert not (tmp_path / "beat.jsonl").exists()  # left for `adf worker`


class _BrokenStore(SqlScheduleStore):
    """A schedule whose claim fails, as a database going away mid-request would."""

    def claim(self, *args: Any, **kwargs: Any) -> Claim:
        raise RuntimeError("connection to the schedule database lost")


def test_an_error_answers_500_with_an_error_id_and_the_traceback_only_in_the_log(
    base: Settings, tmp_path: Path, log: LogCapture
) -> None:
    broken = _BrokenStore(base.database_url)
    try:
        with live_server(dataclasses.replace(base, heartbeat_token=TOKEN), broken) as url:
            resp = _post(url)
            rows = _heartbeat_log(url)
    finally:
        broken.close()
    body = _assert_error(resp, 500, "internal error", "error_id")
    assert set(body) == {"error", "error_id"}
    assert "Traceback" not in resp.text and "connection to the schedule database lost" not in resp.text
    row = rows[resp.headers["x-request-id"]]
    assert (row["outcome"], row["status_code"]) == ("error", 500)
    [line] = [line for line in log.lines if line.get("request_id") == resp.headers["x-request-id"]]
    assert line["level"] == "error"
    assert body["error_id"] in line["detail"]
    assert "RuntimeError: connection to the schedule database lost" in line["error"]
    assert "Traceback" in line["backtrace"]


def test_the_heartbeat_path_is_configurable(store: SqlScheduleStore, base: Settings) -> None:
    settings = dataclasses.replace(base, heartbeat_token=TOKEN, heartbeat_path="/hooks/beat")
    with live_server(settings, store) as url, client_from() as client:
        moved = client.post(f"{url}/hooks/beat", headers={"X-Heartbeat-Token": TOKEN})
        old = client.post(f"{url}/heartbeat", headers={"X-Heartbeat-Token": TOKEN})
        paths = client.get(f"{url}/openapi.json").json()["paths"]
    assert moved.status_code == 200 and set(moved.json()) == RESULT_KEYS
    _assert_error(old, 404, "no route POST /heartbeat")
    assert "/hooks/beat" in paths and "/heartbeat" not in paths


# --------------------------------------------------------------------------- run statuses


def test_a_partial_run_shows_in_the_api_filter_and_on_the_dashboard(
    store: SqlScheduleStore, base: Settings, tmp_path: Path
) -> None:
    records = [{"id": i, "amount": "n/a" if i == 3 else i} for i in range(6)]
    store.create_flow("ledger", {
        "source": {"type": "memory", "records": records},
        "schema": {"id": "integer", "amount": "decimal"},
        "sink": {"type": "file", "path": str(tmp_path / "ledger.jsonl")},
    }, 60)
    api_token = "api-5e1f"
    settings = dataclasses.replace(base, heartbeat_token=TOKEN, api_token=api_token)
    with live_server(settings, store) as url:
        resp = _post(url)
        assert resp.status_code == 200, resp.text
        [run_id] = resp.json()["run_ids"]
        with client_from(base_url=url, follow_redirects=False) as client:
            auth = {"Authorization": f"Bearer {api_token}"}
            partial = client.get("/api/runs", params={"status": "partial"}, headers=auth)
            assert partial.status_code == 200, partial.text
            assert [(r["id"], r["status"], r["dead_letters"]) for r in partial.json()] == [(run_id, "partial", 1)]
            assert partial.json()[0]["error_message"].startswith("1 record dead-lettered: 1")
            assert client.get("/api/runs", params={"status": "success"}, headers=auth).json() == []
            assert client.get("/api/runs", params={"status": "half"}, headers=auth).status_code == 422

            login = client.get("/ui/login")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
            assert csrf, login.text
            done = client.post("/ui/login", data={"token": api_token, "csrf_token": csrf.group(1), "next": "/ui/runs"})
            assert done.status_code == 303, done.text
            runs = client.get("/ui/runs", params={"status": "partial"})
            assert runs.status_code == 200
            assert f'data-run="{run_id}"' in runs.text and 'class="badge status-partial"' in runs.text
            assert "<option selected>partial</option>" in runs.text
            page = client.get(f"/ui/runs/{run_id}")
            assert "<h2>Dead letters</h2>" in page.text and "1 record dead-lettered" in page.text
            flows = client.get("/ui/flows")
            assert 'class="badge status-partial"' in flows.text
            css = client.get("/ui/static/dashboard.css")
            assert css.status_code == 200 and ".status-partial" in css.text



# --------------------------------------------------------------------------- heartbeat log retention


def test_a_flood_of_refused_heartbeats_does_not_grow_the_log_beyond_its_retention(
    store: SqlScheduleStore, base: Settings
) -> None:
    keep = 40
    every = HeartbeatRetention(keep).every
    settings = dataclasses.replace(base, heartbeat_token=TOKEN, heartbeat_log_keep=keep)
    with live_server(settings, store) as url:

        def flood(worker: int) -> list[str]:
            with client_from() as client:
                ids = []
                for _ in range(60):
                    resp = client.post(f"{url}/heartbeat", headers={"X-Heartbeat-Token": f"guess-{worker}"})
                    assert resp.status_code == 401
                    ids.append(resp.headers["x-request-id"])
                return ids

        with ThreadPoolExecutor(8) as pool:
            sent = [rid for ids in pool.map(flood, range(8)) for rid in ids]
        last = _post(url, token="still-wrong")
        rows = store.list_heartbeats(limit=1000)
    assert len(sent) == 480
    # at most `every` rows written since the last prune, plus those written while it ran
    assert keep <= len(rows) <= keep + every + 8, len(rows)
    newest = rows[0]
    assert newest.detail and newest.detail.startswith(f"request {last.headers['x-request-id']}:")
    assert {r.outcome for r in rows} == {"unauthorized"}
    assert rows[-1].id > 480 - keep - every - 8  # what is kept is the newest


def _stores(tmp_path: Path) -> list[tuple[str, ScheduleStore]]:
    return [("sqlalchemy sqlite", SqlScheduleStore(f"sqlite:///{tmp_path / 'sa.db'}")),
            ("exec sqlite", ExecScheduleStore(Sqlite3Exec(str(tmp_path / "exec.db"))))]


def test_every_store_prunes_its_heartbeat_log_by_count_and_by_age(tmp_path: Path) -> None:
    for kind, s in _stores(tmp_path):
        try:
            retention = HeartbeatRetention(keep=10)  # prunes after every row (a tenth of 10)
            for i in range(35):
                s.log_heartbeat(client=f"10.0.0.{i}", outcome="unauthorized", status_code=401, retention=retention)
            rows = s.list_heartbeats(limit=100)
            assert [r.client for r in rows] == [f"10.0.0.{i}" for i in range(34, 24, -1)], kind
            # default retention: 10,000 rows, 30 days; nothing of a fresh log goes
            s.log_heartbeat(client="default", outcome="ok", status_code=200)
            assert len(s.list_heartbeats(limit=100)) == 11, kind
            # by age: every row logged before `before` goes, whatever `keep` says
            after_them = rows[0].ts + dt.timedelta(microseconds=1)
            assert s.prune_heartbeats(keep=1000, before=after_them) == 10, kind
            assert [r.client for r in s.list_heartbeats(limit=100)] == ["default"], kind
            assert s.prune_heartbeats(keep=1, before=dt.datetime(2000, 1, 1, tzinfo=dt.UTC)) == 0, kind
        finally:
            s.close()


@pytest.mark.postgres
def test_the_postgresql_store_prunes_its_heartbeat_log(tmp_path: Path) -> None:
    import psycopg

    admin_url = "postgresql://postgres@127.0.0.1:5432/test"
    db = f"adf_hb_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    s = SqlScheduleStore(f"postgresql://postgres@127.0.0.1:5432/{db}")
    try:
        retention = HeartbeatRetention(keep=20, max_age_days=1)
        for i in range(100):
            s.log_heartbeat(client=f"c{i}", outcome="forbidden", status_code=403, retention=retention)
        rows = s.list_heartbeats(limit=1000)
        assert 20 <= len(rows) <= 20 + retention.every and rows[0].client == "c99"
        assert s.prune_heartbeats(keep=5, before=rows[-1].ts) == len(rows) - 5
    finally:
        s.close()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
