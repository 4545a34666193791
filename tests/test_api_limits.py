"""What the web app refuses before it costs anything, over real HTTP.

* `adf serve` in its own process: 200 MB uploads — unauthenticated (401) or authenticated but
  too large (413), with and without a Content-Length — leave the server's resident memory
  where it was; the start-up warning about a short token.
* Wrong tokens are throttled per client address (429 + Retry-After), the API's and the
  dashboard login's together, and never lock out the right token.
* Out-of-range integers, NUL characters, lone surrogates and non-finite numbers are 4xx,
  on PostgreSQL (where NUL cannot be stored at all).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import client_from, live_server

from active_data_flow.handlers.schedule.sql import SqlScheduleStore
from active_data_flow.handlers.security import AUTH_FAILURES, MIN_TOKEN_LENGTH
from active_data_flow.handlers.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
API_TOKEN = "limits-api-token-5f1d0c8e7b2a"
HB_TOKEN = "hb-short"  # shorter than MIN_TOKEN_LENGTH: adf serve warns about it
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


# --------------------------------------------------------------------------- adf serve in a process


@dataclass
class Served:
    url: str
    pid: int
    log: Path

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        assert found, status
        return int(found.group(1))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def adf_serve(tmp_path: Path, **env: str) -> Iterator[Served]:
    """`adf serve` (python -m active_data_flow.cli serve) on a free port, its log in a file."""
    port = _free_port()
    log = tmp_path / "serve.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ADF_")}
    environ.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        ADF_STATE_DIR=str(tmp_path / "state"),
        ADF_DATABASE_URL=f"sqlite:///{tmp_path / 'adf.db'}",
        **env,
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "active_data_flow.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path, env=environ, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield Served(url, proc.pid, log)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _zeros(total: int, chunk: bytes = bytes(MiB)) -> Iterator[bytes]:
    for _ in range(total // len(chunk)):
        yield chunk


def test_a_200_mb_upload_is_refused_before_it_is_read(tmp_path: Path) -> None:
    total = 200 * MiB
    env = {"ADF_API_TOKEN": API_TOKEN, "ADF_HEARTBEAT_TOKEN": HB_TOKEN, "ADF_MAX_BODY_BYTES": str(MiB)}
    with adf_serve(tmp_path, **env) as served, httpx.Client(base_url=served.url, timeout=120) as client:
        # warm up: every code path the uploads take has run once
        flow = {"name": "warm", "run_interval": 60,
                "configuration": {"source": {"type": "memory", "records": [{"id": 1}]}, "sink": {"type": "memory"}}}
        assert client.post("/api/flows", json=flow, headers=AUTH).status_code == 201
        for _ in range(3):
            bad = client.post("/api/flows", content=b"{oops", headers={**AUTH, "Content-Type": "application/json"})
            assert bad.status_code == 400
            assert client.post("/api/flows", content=b"{oops").status_code == 401
            assert client.post("/api/flows", content=b"x" * (MiB + 1), headers=AUTH).status_code == 413
            assert client.post("/heartbeat", headers={"X-Heartbeat-Token": "nope"}).status_code == 401
        before = served.rss_kib()
        growth: dict[str, int] = {}
        started = time.monotonic()

        def upload(name: str, path: str, status: int, headers: dict[str, str], declared: bool) -> None:
            if declared:
                headers = {**headers, "Content-Length": str(total)}
            resp = client.post(path, content=_zeros(total), headers={"Content-Type": "application/json", **headers})
            assert resp.status_code == status, resp.text
            assert resp.headers["content-type"] == "application/json" and resp.json()["error"]
            growth[name] = served.rss_kib() - before

        upload("unauthenticated, chunked", "/api/flows", 401, {}, declared=False)
        upload("unauthenticated, Content-Length", "/api/flows", 401, {}, declared=True)
        upload("wrong token, Content-Length", "/api/flows", 401, {"Authorization": "Bearer nope"}, declared=True)
        upload("authenticated, chunked", "/api/flows", 413, AUTH, declared=False)
        upload("authenticated, Content-Length", "/api/flows", 413, AUTH, declared=True)
        upload("flow run route, unauthenticated", "/invoke/flows/warm/run", 401, {}, declared=False)
        upload("heartbeat, wrong token", "/heartbeat", 401, {"X-Heartbeat-Token": "nope"}, declared=False)
        upload("heartbeat, right token, Content-Length", "/heartbeat", 413, {"X-Heartbeat-Token": HB_TOKEN},
               declared=True)
        elapsed = time.monotonic() - started
        # bad JSON without a token is a 401, not a 400: the body is never parsed
        assert client.post("/api/flows", content=b"{oops", headers={"Content-Type": "application/json"}).status_code == 401
        beats = client.get("/api/heartbeats", headers=AUTH).json()
        assert beats[0]["outcome"] == "unauthorized"  # a refused heartbeat is still recorded
    print(f"\nRSS before {before} KiB; growth after each 200 MB upload (KiB): {growth}; {elapsed:.1f} s in all")
    assert max(growth.values()) < 8 * 1024, growth
    log = served.log.read_text()
    assert f"ADF_HEARTBEAT_TOKEN is shorter than {MIN_TOKEN_LENGTH} characters" in log
    assert "ADF_API_TOKEN is shorter" not in log and API_TOKEN not in log and HB_TOKEN not in log


# --------------------------------------------------------------------------- throttling


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[str]:
    settings = Settings(state_dir=str(tmp_path / "state"), database_url=f"sqlite:///{tmp_path / 'adf.db'}",
                        api_token=API_TOKEN, heartbeat_token="hb-token-0123456789abcdef")
    store = SqlScheduleStore(settings.database_url)
    try:
        with live_server(settings, store) as url:
            yield url
    finally:
        store.close()


def _csrf(resp: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', resp.text)
    assert found, resp.text
    return found.group(1)


def _login(client: httpx.Client, token: str) -> httpx.Response:
    page = client.get("/ui/login")
    return client.post("/ui/login", data={"token": token, "csrf_token": _csrf(page), "next": "/ui/flows"})


def test_wrong_api_tokens_are_throttled_per_address_and_the_right_token_still_works(guarded: str) -> None:
    wrong = {"Authorization": "Bearer not-the-token"}
    with client_from("127.0.0.3", base_url=guarded) as attacker:
        for _ in range(AUTH_FAILURES):
            resp = attacker.get("/api/flows", headers=wrong)
            assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
        # a wrong token's body is never read, throttled or not
        refused = [attacker.post("/api/flows", content=b"{oops", headers=wrong) for _ in range(20)]
        assert {r.status_code for r in refused} == {429}
        retry_after = int(refused[-1].headers["retry-after"])
        assert 0 < retry_after <= 600 and "too many failed tokens from 127.0.0.3" in refused[-1].json()["error"]
        # the rightful owner behind the same address is not locked out
        ok = attacker.get("/api/flows", headers=AUTH)
        assert ok.status_code == 200 and ok.json() == []
        # a missing token is no guess: 401 as ever
        assert attacker.get("/api/runs").status_code == 401
    with client_from("127.0.0.4", base_url=guarded) as other:  # another address is not affected
        assert other.get("/api/flows", headers=wrong).status_code == 401


def test_the_dashboard_login_and_the_api_count_failures_together(guarded: str) -> None:
    wrong = {"Authorization": "Bearer not-the-token"}
    half = AUTH_FAILURES // 2
    with client_from("127.0.0.5", base_url=guarded, follow_redirects=False) as client:
        for _ in range(half):
            assert _login(client, "wrong").status_code == 401
        for _ in range(AUTH_FAILURES - half):
            assert client.get("/api/flows", headers=wrong).status_code == 401
        assert client.get("/api/flows", headers=wrong).status_code == 429
        refused = _login(client, "wrong")
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert "Too many failed logins from 127.0.0.5" in refused.text
        assert _login(client, API_TOKEN).status_code == 303  # the right token logs in all the same
        assert client.get("/ui/flows").status_code == 200
        assert client.get("/api/flows", headers=AUTH).status_code == 200


# --------------------------------------------------------------------------- odd input


@pytest.fixture
def on_postgres(tmp_path: Path) -> Iterator[tuple[str, SqlScheduleStore]]:
    import psycopg

    db = f"adf_limits_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{db}"
    store = SqlScheduleStore(url)
    try:
        settings = Settings(state_dir=str(tmp_path / "state"), database_url=url, heartbeat_token="hb-0123456789abcdef")
        with live_server(settings, store) as base:
            yield base, store
    finally:
        store.close()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _spec(**sink: Any) -> dict[str, Any]:
    return {"source": {"type": "memory", "records": [{"id": 1}]}, "sink": {"type": "memory", **sink}}


@pytest.mark.postgres
def test_out_of_range_integers_nul_and_unencodable_text_are_4xx(on_postgres: tuple[str, SqlScheduleStore]) -> None:
    url, store = on_postgres
    huge = "9223372036854775808"
    json_headers = {"Content-Type": "application/json"}
    with client_from(base_url=url) as client:
        assert client.post("/api/flows", json={"name": "keep", "configuration": _spec(),
                                               "run_interval": 60}).status_code == 201
        before = client.get("/api/flows").json()
        checks: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", "/api/runs", {"params": {"offset": huge}}),
            ("GET", "/api/runs", {"params": {"offset": "-1"}}),
            ("GET", "/api/runs", {"params": {"limit": huge}}),
            ("GET", f"/api/runs/{huge}", {}),
            ("GET", f"/api/runs/-{huge}", {}),
            ("GET", f"/api/runs/{huge}/dead-letters", {"params": {"offset": huge}}),
            ("POST", f"/api/runs/{huge}/dead-letters/replay", {}),
            ("GET", "/api/heartbeats", {"params": {"limit": huge}}),
            ("POST", "/api/flows/keep/trigger", {"params": {"wait": huge}}),
            ("GET", "/api/flows/ke%00ep", {}),
            ("PATCH", "/api/flows/ke%00ep", {"json": {"description": "x"}}),
            ("GET", "/api/runs", {"params": {"flow": "a\x00b"}}),
            ("GET", "/api/runs", {"params": {"status": "\x00"}}),
            ("POST", "/api/flows", {"json": {"name": "n\x00", "configuration": _spec(), "run_interval": 60}}),
            ("POST", "/api/flows", {"json": {"name": "n", "configuration": _spec(table="t\x00"), "run_interval": 60}}),
            ("POST", "/api/flows", {"json": {"name": "n", "configuration": _spec(), "run_interval": 60,
                                             "description": "d\x00"}}),
            ("POST", "/api/flows", {"content": b'{"name": "n", "configuration": {"source": {"type": "memory"}, '
                                               b'"sink": {"type": "memory", "k\\ud800": 1}}, "run_interval": 60}',
                                    "headers": json_headers}),
            ("POST", "/api/flows", {"content": b'{"name": "n", "configuration": {"x": NaN}, "run_interval": 60}',
                                    "headers": json_headers}),
            ("POST", "/api/flows", {"content": b'{"name": "n", "configuration": {"x": 1e400}, "run_interval": 60}',
                                    "headers": json_headers}),
            ("POST", "/api/flows", {"content": b'{"name": "n", "\\ud800": 1, "configuration": {}, "run_interval": 1}',
                                    "headers": json_headers}),
            ("POST", "/api/flows", {"json": {"name": "n", "configuration": _spec(), "run_interval": int(huge)}}),
            ("POST", "/api/flows", {"json": {"name": "n", "configuration": _spec(), "run_interval": -int(huge)}}),
            ("PATCH", "/api/flows/keep", {"json": {"run_interval": 2**64}}),
            ("PATCH", "/api/flows/keep", {"json": {"configuration": "not a mapping"}}),
            ("PATCH", "/api/flows/keep", {"json": {"enabled": None, "description": ["a"]}}),
            ("PATCH", "/api/flows/keep", {"content": b"\xff\xfe\x00", "headers": json_headers}),
            ("POST", "/api/flows", {"content": b"[" * 100_000, "headers": json_headers}),
            ("POST", "/api/flows", {"json": {"name": "n", "configuration": {"a": _nested(200)}, "run_interval": 60}}),
        ]
        for method, path, kwargs in checks:
            resp = client.request(method, path, **kwargs)
            assert 400 <= resp.status_code < 500, (method, path, kwargs, resp.status_code, resp.text)
            assert resp.headers["content-type"] == "application/json" and resp.json()["error"], resp.text
        assert client.get("/api/flows").json() == before
    assert [f.name for f in store.list_flows()] == ["keep"]


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value
