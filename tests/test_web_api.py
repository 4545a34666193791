"""The management API over real HTTP: flows, runs, triggers, errors, auth and OpenAPI.

Runs the web app under uvicorn on 127.0.0.1 with a SQLite schedule (one smoke test on
PostgreSQL); requests from 127.0.0.1 are local, from 127.0.0.2 remote.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import LogCapture, client_from, live_server

from active_data_flow.handlers.schedule.sql import SqlScheduleStore
from active_data_flow.handlers.settings import Settings
from active_data_flow.redact import MASK

HB_TOKEN = "hb-token-1"
API_TOKEN = "api-token-2"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class Api:
    url: str
    client: httpx.Client
    store: SqlScheduleStore
    dir: Path

    def heartbeat(self, mode: str = "sync") -> dict[str, Any]:
        resp = self.client.post(f"{self.url}/heartbeat", params={"mode": mode}, headers={"X-Heartbeat-Token": HB_TOKEN})
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def flows(self) -> list[dict[str, Any]]:
        resp = self.client.get(f"{self.url}/api/flows")
        assert resp.status_code == 200, resp.text
        return list(resp.json())

    def spec(self, name: str, records: int = 3, out: str | None = None) -> dict[str, Any]:
        return {
            "name": name,
            "source": {"type": "memory", "records": [{"id": i, "flow": name} for i in range(records)]},
            "sink": {"type": "file", "path": str(self.dir / (out or f"{name}.jsonl")), "mode": "append"},
        }

    def create(self, name: str, interval: int = 60, **extra: Any) -> dict[str, Any]:
        body = {"name": name, "configuration": self.spec(name), "run_interval": interval, **extra}
        resp = self.client.post(f"{self.url}/api/flows", json=body)
        assert resp.status_code == 201, resp.text
        return dict(resp.json())


@contextlib.contextmanager
def _running(tmp_path: Path, database_url: str, **settings: Any) -> Iterator[Api]:
    config = Settings(
        state_dir=str(tmp_path / "state"), database_url=database_url, heartbeat_token=HB_TOKEN, **settings
    )
    store = SqlScheduleStore(database_url)
    try:
        with live_server(config, store) as url, client_from() as client:
            yield Api(url, client, store, tmp_path)
    finally:
        store.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with _running(tmp_path, f"sqlite:///{tmp_path / 'adf.db'}") as running:
        yield running


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _error(resp: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = dict(resp.json())
    assert isinstance(body["error"], str) and body["error"]
    for fragment in fragments:
        assert fragment in body["error"], body
    return body


# --------------------------------------------------------------------------- flows and runs


def _smoke(api: Api) -> None:
    created = api.create("orders", description="orders to a file")
    assert (created["name"], created["run_interval"], created["enabled"]) == ("orders", 60, True)
    assert created["configuration"] == api.spec("orders")
    assert [f["name"] for f in api.flows()] == ["orders"]
    # due at once
    next_run = dt.datetime.fromisoformat(created["next_run_at"].replace("Z", "+00:00"))
    assert next_run <= dt.datetime.now(dt.UTC)

    beat = api.heartbeat("sync")
    assert (beat["flows_due"], beat["flows_triggered"]) == (1, 1)

    runs = api.client.get(f"{api.url}/api/runs").json()
    assert [r["id"] for r in runs] == beat["run_ids"]
    [run] = runs
    assert (run["flow_name"], run["status"], run["trigger"]) == ("orders", "success", "heartbeat")
    assert (run["records_in"], run["records_out"], run["dead_letters"]) == (3, 3, 0)
    assert isinstance(run["duration"], float) and run["duration"] >= 0
    assert run["error_message"] is None
    shown = api.client.get(f"{api.url}/api/runs/{run['id']}").json()
    assert shown == run
    assert [r["id"] for r in _lines(api.dir / "orders.jsonl")] == [0, 1, 2]
    flow = api.client.get(f"{api.url}/api/flows/orders").json()
    assert flow["last_run_status"] == "success" and flow["last_run_at"] is not None
    # not due again before its interval
    assert api.heartbeat("sync")["flows_due"] == 0


def test_a_created_flow_is_due_at_once_and_a_sync_heartbeat_runs_it(api: Api) -> None:
    _smoke(api)


@pytest.mark.postgres
def test_the_api_smoke_test_on_postgresql(tmp_path: Path) -> None:
    import psycopg

    db = f"adf_web_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    try:
        with _running(tmp_path, f"postgresql://postgres@127.0.0.1:5432/{db}") as running:
            assert running.store.dialect == "postgresql"
            _smoke(running)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_a_patched_configuration_is_applied_on_the_next_run(api: Api) -> None:
    api.create("f", interval=1)
    api.heartbeat()
    assert len(_lines(api.dir / "f.jsonl")) == 3

    new_spec = api.spec("f", records=5, out="f2.jsonl")
    resp = api.client.patch(f"{api.url}/api/flows/f", json={"configuration": new_spec, "description": "now five"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["configuration"] == new_spec and resp.json()["description"] == "now five"
    assert not (api.dir / "f2.jsonl").exists()  # nothing runs on update

    deadline = time.monotonic() + 10
    while True:
        beat = api.heartbeat()
        if beat["flows_triggered"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert beat["flows_triggered"] == 1
    assert [r["id"] for r in _lines(api.dir / "f2.jsonl")] == [0, 1, 2, 3, 4]
    assert len(_lines(api.dir / "f.jsonl")) == 3
    newest = api.client.get(f"{api.url}/api/runs", params={"flow": "f", "limit": 1}).json()[0]
    assert (newest["status"], newest["records_out"]) == ("success", 5)

    resp = api.client.patch(f"{api.url}/api/flows/f", json={"run_interval": 3600, "enabled": False})
    assert (resp.json()["run_interval"], resp.json()["enabled"]) == (3600, False)


def test_disable_and_enable(api: Api) -> None:
    api.create("f")
    resp = api.client.post(f"{api.url}/api/flows/f/disable")
    assert resp.status_code == 200 and resp.json()["enabled"] is False
    beat = api.heartbeat()
    assert (beat["flows_due"], beat["flows_triggered"]) == (0, 0)
    assert api.client.get(f"{api.url}/api/runs").json() == []

    resp = api.client.post(f"{api.url}/api/flows/f/enable")
    assert resp.status_code == 200 and resp.json()["enabled"] is True
    assert api.heartbeat()["flows_triggered"] == 1
    assert len(_lines(api.dir / "f.jsonl")) == 3

    created = api.create("off", enabled=False)
    assert created["enabled"] is False
    assert api.heartbeat()["flows_due"] == 0


def test_trigger_now_without_and_with_waiting(api: Api) -> None:
    api.create("f", interval=3600)
    api.heartbeat()  # its scheduled run; the next one is an hour away

    queued = api.client.post(f"{api.url}/api/flows/f/trigger", params={"wait": "false"})
    assert queued.status_code == 202, queued.text
    assert (queued.json()["status"], queued.json()["trigger"]) == ("pending", "manual")

    done = api.client.post(f"{api.url}/api/flows/f/trigger", params={"wait": "true"})
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["records_out"]) == ("success", 3)
    assert done.json()["ended_at"] is not None

    statuses = {r["id"]: r["status"] for r in api.client.get(f"{api.url}/api/runs", params={"flow": "f"}).json()}
    assert statuses[queued.json()["id"]] == "pending" and statuses[done.json()["id"]] == "success"
    assert len(_lines(api.dir / "f.jsonl")) == 6  # the scheduled run and the waited one


def test_run_filters_and_paging(api: Api) -> None:
    api.create("a")
    api.create("b")
    api.heartbeat()  # one success each
    pending = api.client.post(f"{api.url}/api/flows/a/trigger").json()

    def ids(**params: Any) -> list[int]:
        resp = api.client.get(f"{api.url}/api/runs", params=params)
        assert resp.status_code == 200, resp.text
        return [r["id"] for r in resp.json()]

    every = ids()
    assert len(every) == 3 and every == sorted(every, reverse=True)  # newest first
    assert {r["flow_name"] for r in api.client.get(f"{api.url}/api/runs", params={"flow": "b"}).json()} == {"b"}
    assert len(ids(flow="a")) == 2
    assert ids(status="pending") == [pending["id"]]
    assert len(ids(status="success")) == 2
    assert ids(flow="b", status="pending") == []
    assert ids(flow="nobody") == []
    assert ids(limit=2) == every[:2]
    assert ids(limit=2, offset=2) == every[2:]
    bad = _error(api.client.get(f"{api.url}/api/runs", params={"status": "done", "limit": 0}), 422,
                 "status", "limit")
    assert {tuple(d["loc"]) for d in bad["details"]} == {("query", "status"), ("query", "limit")}


# --------------------------------------------------------------------------- dead letters


def _fixable(api: Api, name: str, env: str) -> Path:
    """A flow whose step refuses n = 1, 4 and 6 of a file's records until ``env`` is 1, after a
    malformed line (line 3); returns the input file. Its output goes to ``<name>.jsonl``."""
    src = api.dir / f"{name}-in.jsonl"
    lines = [json.dumps({"n": n, "bad": n in (1, 4, 6)}) for n in range(8)]
    lines.insert(2, "{not json")
    src.write_text("\n".join(lines) + "\n")
    config = {**api.spec(name), "source": {"type": "file", "path": str(src)},
              "steps": [{"type": "python", "function": "flowlib.integrity:reject_when", "options": {"env": env}}]}
    resp = api.client.post(f"{api.url}/api/flows", json={"name": name, "configuration": config, "run_interval": 3600})
    assert resp.status_code == 201, resp.text
    return src


def test_a_runs_dead_letters_are_listed_and_replayed_after_the_fix(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    env = "ADF_WEB_API_FIXED"
    monkeypatch.delenv(env, raising=False)
    src = _fixable(api, "fixable", env)
    [run_id] = api.heartbeat()["run_ids"]
    run = api.client.get(f"{api.url}/api/runs/{run_id}").json()
    assert (run["status"], run["records_in"], run["records_out"], run["dead_letters"]) == ("partial", 9, 5, 4)
    url = f"{api.url}/api/runs/{run_id}/dead-letters"

    resp = api.client.get(url)
    assert resp.status_code == 200 and resp.headers["x-total-count"] == "4"
    letters = resp.json()
    assert [d["number"] for d in letters] == [1, 2, 3, 4]
    assert {d["run_id"] for d in letters} == {run["engine_run_id"]}
    steps = sorted((d for d in letters if d["stage"] == "step"), key=lambda d: d["origin"]["line"])
    assert [(d["record"], d["origin"], d["reason"], d["step"]) for d in steps] == [
        ({"n": n, "bad": True}, {"file": str(src), "line": line}, f"ValueError: record {n} is marked bad",
         "python:flowlib.integrity:reject_when")
        for n, line in ((1, 2), (4, 6), (6, 8))
    ]
    [malformed] = [d for d in letters if d["stage"] == "source"]
    assert (malformed["record"], malformed["origin"]["line"]) == ("{not json", 3)
    paged = api.client.get(url, params={"limit": 2, "offset": 1}).json()
    assert [d["number"] for d in paged] == [2, 3]
    assert api.client.get(url, params={"offset": 10}).json() == []
    _error(api.client.get(url, params={"limit": 0}), 422, "limit")

    # not fixed yet: all refused again, nothing written
    again = api.client.post(f"{url}/replay")
    assert again.status_code == 200, again.text
    assert {k: again.json()[k] for k in ("replayed", "written", "dead_letters", "kept", "remaining")} == {
        "replayed": 3, "written": 0, "dead_letters": 3, "kept": 1, "remaining": 4}
    assert {d["replays"] for d in api.client.get(url).json() if d["stage"] == "step"} == {1}

    monkeypatch.setenv(env, "1")
    fixed = api.client.post(f"{url}/replay")
    assert fixed.status_code == 200, fixed.text
    assert fixed.json() == {
        "run_id": run_id, "flow": "fixable", "engine_run_id": run["engine_run_id"],
        "replayed": 3, "written": 3, "filtered": 0, "fanned_out": 0, "dead_letters": 0, "kept": 1, "remaining": 1,
        "message": "Replayed 3 dead letters: 3 written, 0 failed again, 1 not replayable "
                   "(malformed input, or a step the flow no longer has); 1 remains.",
    }
    assert sorted(r["n"] for r in _lines(api.dir / "fixable.jsonl")) == list(range(8))
    [left] = api.client.get(url).json()
    assert (left["stage"], left["number"], left["origin"]["line"]) == ("source", 1, 3)
    summary = json.loads((api.dir / "state" / "fixable" / "runs" / run["engine_run_id"] / "summary.json").read_text())
    assert [r["remaining"] for r in summary["replays"]] == [4, 1]


def test_dead_letter_requests_that_cannot_be_served_answer_4xx(api: Api) -> None:
    import fcntl
    import os

    _error(api.client.get(f"{api.url}/api/runs/999999/dead-letters"), 404, "999999")
    _error(api.client.post(f"{api.url}/api/runs/999999/dead-letters/replay"), 404, "999999")
    _fixable(api, "busy", "ADF_WEB_API_NEVER")
    [run_id] = api.heartbeat()["run_ids"]
    engine_run_id = api.client.get(f"{api.url}/api/runs/{run_id}").json()["engine_run_id"]
    letters = api.dir / "state" / "busy" / "runs" / engine_run_id / "dead_letters.jsonl"
    before = letters.read_bytes()
    fd = os.open(f"{letters}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a replay in another process
        _error(api.client.post(f"{api.url}/api/runs/{run_id}/dead-letters/replay"), 409,
               "being replayed by another process")
    finally:
        os.close(fd)
    assert letters.read_bytes() == before

    pending = api.client.post(f"{api.url}/api/flows/busy/trigger").json()
    _error(api.client.get(f"{api.url}/api/runs/{pending['id']}/dead-letters"), 404, "has not started")
    _error(api.client.post(f"{api.url}/api/runs/{pending['id']}/dead-letters/replay"), 409,
           f"run #{pending['id']} is pending")

    # dead letters that went to a configured sink are read there
    rejected = api.dir / "rejected.jsonl"
    config = {**api.client.get(f"{api.url}/api/flows/busy").json()["configuration"],
              "name": "to-sink", "dead_letter": {"type": "file", "path": str(rejected)}}
    assert api.client.post(f"{api.url}/api/flows", json={"name": "to-sink", "configuration": config,
                                                         "run_interval": 3600}).status_code == 201
    clean = {**api.spec("clean"), "dead_letter": {"type": "file", "path": str(api.dir / "never.jsonl")}}
    assert api.client.post(f"{api.url}/api/flows", json={"name": "clean", "configuration": clean,
                                                         "run_interval": 3600}).status_code == 201
    runs = {api.client.get(f"{api.url}/api/runs/{r}").json()["flow_name"]: r for r in api.heartbeat()["run_ids"]}
    sunk = runs["to-sink"]
    _error(api.client.get(f"{api.url}/api/runs/{sunk}/dead-letters"), 409, "went to the sink")
    _error(api.client.post(f"{api.url}/api/runs/{sunk}/dead-letters/replay"), 409, "went to the sink")
    assert len(rejected.read_text().splitlines()) == 4
    # a run that refused nothing has no dead letters, wherever they would have gone
    nothing = api.client.get(f"{api.url}/api/runs/{runs['clean']}/dead-letters")
    assert nothing.status_code == 200 and nothing.json() == [] and nothing.headers["x-total-count"] == "0"

    # the same access rule as every other route of the management API
    with client_from("127.0.0.2") as remote:
        _error(remote.post(f"{api.url}/api/runs/{run_id}/dead-letters/replay"), 403, "only local clients")
        _error(remote.get(f"{api.url}/api/runs/{run_id}/dead-letters"), 403, "only local clients")


# --------------------------------------------------------------------------- refusals


def test_bad_requests_answer_4xx_with_a_message_and_save_nothing(api: Api) -> None:
    api.create("keep")
    before = api.flows()
    flows_url = f"{api.url}/api/flows"
    json_headers = {"content-type": "application/json"}

    checks: list[tuple[httpx.Response, int, tuple[str, ...]]] = [
        (api.client.post(flows_url, content=b'{"name": "x", "configuration": {', headers=json_headers),
         400, ("malformed JSON",)),
        (api.client.post(flows_url, content=b"\xff\xfe", headers=json_headers), 400, ("malformed JSON",)),
        (api.client.patch(f"{flows_url}/keep", content=b'{"run_interval": }', headers=json_headers),
         400, ("malformed JSON",)),
        (api.client.post(flows_url, content=json.dumps({"name": "x", "configuration": {}, "run_interval": 5}),
                         headers={"content-type": "text/plain"}), 415, ("Content-Type: application/json",)),
        (api.client.post(flows_url, json=[1, 2]), 422, ("invalid request",)),
        (api.client.post(flows_url, json={"name": "x", "configuration": api.spec("x"), "run_interval": "often"}),
         422, ("run_interval",)),
        (api.client.post(flows_url, json={"name": "x", "configuration": api.spec("x"), "interval": 5}),
         422, ("interval: Extra inputs are not permitted",)),
        (api.client.post(flows_url, json={"name": "keep", "configuration": api.spec("keep"), "run_interval": 30}),
         409, ("already exists",)),
        (api.client.patch(f"{flows_url}/keep", json={"configuration": {"source": {"type": "memory"}}}),
         422, ("'sink' is required",)),
        (api.client.patch(f"{flows_url}/keep", json={"run_interval": -5}), 422, ("run_interval",)),
        (api.client.patch(f"{flows_url}/keep", json={"enabled": "yes"}), 422, ("enabled",)),
        (api.client.get(f"{flows_url}/ghost"), 404, ("ghost",)),
        (api.client.patch(f"{flows_url}/ghost", json={"description": "x"}), 404, ("ghost",)),
        (api.client.post(f"{flows_url}/ghost/enable"), 404, ("ghost",)),
        (api.client.post(f"{flows_url}/ghost/disable"), 404, ("ghost",)),
        (api.client.post(f"{flows_url}/ghost/trigger", params={"wait": "true"}), 404, ("ghost",)),
        (api.client.delete(f"{flows_url}/ghost"), 404, ("ghost",)),
        (api.client.get(f"{api.url}/api/runs/999999"), 404, ("999999",)),
        (api.client.get(f"{api.url}/api/runs/abc"), 422, ("run_id",)),
        (api.client.get(f"{api.url}/api/nothing-here"), 404, ("no route GET /api/nothing-here",)),
        (api.client.put(f"{flows_url}/keep", json={}), 405, ("method PUT not allowed",)),
    ]
    for resp, status, fragments in checks:
        _error(resp, status, *fragments)
        assert api.flows() == before, resp.request.url
    assert api.client.get(f"{api.url}/api/runs").json() == []


def test_an_invalid_spec_is_refused_with_every_problem(api: Api) -> None:
    body = {
        "name": "broken",
        "configuration": {"source": {"type": "no-such-source"}, "steps": "not a list"},
        "run_interval": 0,
    }
    resp = api.client.post(f"{api.url}/api/flows", json=body)
    err = _error(resp, 422, "invalid flow")
    problems = err["problems"]
    assert len(problems) >= 4, problems
    joined = " | ".join(problems)
    for fragment in ("run_interval", "no-such-source", "'sink' is required", "steps"):
        assert fragment in joined
    for problem in problems:
        assert problem in err["error"]
    assert api.flows() == []


def test_delete_a_flow(api: Api) -> None:
    api.create("gone")
    resp = api.client.delete(f"{api.url}/api/flows/gone")
    assert resp.status_code == 204 and resp.content == b""
    _error(api.client.get(f"{api.url}/api/flows/gone"), 404, "gone")
    assert api.flows() == []


# --------------------------------------------------------------------------- secrets


@dataclass
class Receiver:
    """An HTTP endpoint that takes batches only with the right bearer token and API key."""

    url: str
    token: str
    key: str
    batches: list[Any] = field(default_factory=list)
    refused: int = 0


@contextlib.contextmanager
def receiving(token: str, key: str) -> Iterator[Receiver]:
    receiver = Receiver("", token, key)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            ok = (self.headers.get("authorization") == f"Bearer {receiver.token}"
                  and self.path.endswith(f"?api_key={receiver.key}"))
            if ok:
                receiver.batches.append(json.loads(body))
            else:
                receiver.refused += 1
            self.send_response(200 if ok else 401)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/in?api_key={key}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def test_stored_secrets_are_masked_on_reads_kept_when_sent_back_and_used_by_the_run(api: Api) -> None:
    token, key = "sink-t0ken-9f8e7d", "k3y-5ecret"
    with receiving(token, key) as receiver:
        config = {
            "name": "secret",
            "source": {"type": "memory", "records": [{"id": i} for i in range(2)]},
            "sink": {"type": "http", "url": receiver.url, "auth": {"type": "bearer", "token": token}, "retries": 0},
        }
        created = api.client.post(f"{api.url}/api/flows", json={"name": "secret", "configuration": config,
                                                                "run_interval": 3600})
        assert created.status_code == 201, created.text
        listed = api.client.get(f"{api.url}/api/flows")
        shown = api.client.get(f"{api.url}/api/flows/secret")
        for resp in (created, listed, shown):
            assert token not in resp.text and key not in resp.text, resp.text
        sink = shown.json()["configuration"]["sink"]
        assert sink["auth"] == MASK and sink["url"].endswith(f"/in?api_key={MASK}")

        # the configuration as read, with another change, sent back: the secrets stay
        edited = {**shown.json()["configuration"],
                  "source": {"type": "memory", "records": [{"id": i} for i in range(3)]}}
        patched = api.client.patch(f"{api.url}/api/flows/secret", json={"configuration": edited})
        assert patched.status_code == 200, patched.text
        assert token not in patched.text and patched.json()["configuration"]["sink"]["auth"] == MASK
        stored = api.store.get_flow("secret").configuration
        assert stored["sink"] == config["sink"] and len(stored["source"]["records"]) == 3

        # the run uses the real secrets (the receiver refuses anything else)
        run = api.client.post(f"{api.url}/api/flows/secret/trigger", params={"wait": "true"}).json()
        assert (run["status"], run["records_out"]) == ("success", 3), run
        assert receiver.batches == [[{"id": 0}, {"id": 1}, {"id": 2}]] and receiver.refused == 0

        # a secret typed anew replaces the stored one
        receiver.token = "n3w-t0ken-0a1b2c"
        renewed = {**edited, "sink": {**edited["sink"], "auth": {"type": "bearer", "token": receiver.token}}}
        assert api.client.patch(f"{api.url}/api/flows/secret", json={"configuration": renewed}).status_code == 200
        assert api.store.get_flow("secret").configuration["sink"]["auth"]["token"] == receiver.token
        assert api.store.get_flow("secret").configuration["sink"]["url"] == receiver.url
        run = api.client.post(f"{api.url}/api/flows/secret/trigger", params={"wait": "true"}).json()
        assert run["status"] == "success" and receiver.refused == 0

    # a mask that was edited, or copied into a new flow, would store the mask itself: refused
    before = api.store.get_flow("secret")
    moved = {**edited, "sink": {**edited["sink"], "url": f"http://elsewhere.invalid/?api_key={MASK}"}}
    _error(api.client.patch(f"{api.url}/api/flows/secret", json={"configuration": moved}), 422,
           "configuration.sink.url", "masked secret")
    copied = {**edited, "name": "copy"}
    _error(api.client.post(f"{api.url}/api/flows", json={"name": "copy", "configuration": copied,
                                                         "run_interval": 60}), 422, "configuration.sink.auth")
    assert api.store.get_flow("secret").configuration == before.configuration
    assert [f["name"] for f in api.flows()] == ["secret"]


# --------------------------------------------------------------------------- auth, health, OpenAPI


def test_without_an_api_token_only_local_clients_may_use_the_api(api: Api) -> None:
    with client_from("127.0.0.2") as remote:
        for resp in (remote.get(f"{api.url}/api/flows"),
                     remote.post(f"{api.url}/api/flows", json={"name": "x", "configuration": {}, "run_interval": 1})):
            _error(resp, 403, "only local clients", "client 127.0.0.2", "ADF_API_TOKEN")
        assert remote.get(f"{api.url}/healthz").status_code == 200
    assert api.flows() == []
    # a local reverse proxy forwarding someone else's request is not a local client
    proxied = api.client.get(f"{api.url}/api/flows", headers={"X-Forwarded-For": "203.0.113.5"})
    _error(proxied, 403, "via a proxy")


def test_with_an_api_token_a_bearer_token_is_required_from_everywhere(tmp_path: Path) -> None:
    with _running(tmp_path, f"sqlite:///{tmp_path / 'adf.db'}", api_token=API_TOKEN) as running:
        with client_from("127.0.0.2") as remote:
            missing = remote.get(f"{running.url}/api/flows")
            wrong = remote.get(f"{running.url}/api/flows", headers={"Authorization": f"Bearer {API_TOKEN}x"})
            basic = remote.get(f"{running.url}/api/flows", headers={"Authorization": f"Basic {API_TOKEN}"})
            right = remote.get(f"{running.url}/api/flows", headers={"Authorization": f"Bearer {API_TOKEN}"})
            created = remote.post(
                f"{running.url}/api/flows",
                json={"name": "r", "configuration": running.spec("r"), "run_interval": 60},
                headers={"Authorization": f"Bearer {API_TOKEN}"},
            )
            replay = remote.post(f"{running.url}/api/runs/1/dead-letters/replay")
            letters = remote.get(f"{running.url}/api/runs/1/dead-letters",
                                 headers={"Authorization": f"Bearer {API_TOKEN}x"})
        local_without = running.client.get(f"{running.url}/api/flows")
        # the heartbeat keeps its own token
        beat = running.client.post(f"{running.url}/heartbeat", headers={"Authorization": f"Bearer {API_TOKEN}"})
    for resp in (missing, wrong, basic, local_without, replay, letters):
        _error(resp, 401, "bearer token")
        assert resp.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 200 and right.json() == []
    assert created.status_code == 201, created.text
    _error(beat, 401, "X-Heartbeat-Token")


def test_healthz(api: Api) -> None:
    resp = api.client.get(f"{api.url}/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "version": version("active-data-flow")}


def test_openapi_document_lists_the_routes(api: Api) -> None:
    doc = api.client.get(f"{api.url}/openapi.json").json()
    assert doc["info"]["title"] == "ActiveDataFlow"
    assert doc["info"]["version"] == version("active-data-flow")
    paths = doc["paths"]
    expected = {
        "/heartbeat": {"post"},
        "/api/flows": {"get", "post"},
        "/api/flows/{name}": {"get", "patch", "delete"},
        "/api/flows/{name}/enable": {"post"},
        "/api/flows/{name}/disable": {"post"},
        "/api/flows/{name}/trigger": {"post"},
        "/api/runs": {"get"},
        "/api/runs/{run_id}": {"get"},
        "/api/runs/{run_id}/dead-letters": {"get"},
        "/api/runs/{run_id}/dead-letters/replay": {"post"},
        "/api/heartbeats": {"get"},
        "/healthz": {"get"},
    }
    assert {p: set(ops) for p, ops in paths.items()} == expected
    heartbeat = paths["/heartbeat"]["post"]
    assert {p["name"] for p in heartbeat["parameters"]} == {"X-Heartbeat-Token", "mode"}
    assert {"200", "401", "403", "405", "503"} <= set(heartbeat["responses"])
    create = paths["/api/flows"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/FlowCreate")
    assert {"201", "400", "409", "422"} <= set(create["responses"])
    assert "duration" in doc["components"]["schemas"]["Run"]["properties"]
    letters = paths["/api/runs/{run_id}/dead-letters"]["get"]
    assert {p["name"] for p in letters["parameters"]} == {"run_id", "limit", "offset"}
    assert letters["responses"]["200"]["content"]["application/json"]["schema"]["items"]["$ref"].endswith("/DeadLetterOut")
    assert {"401", "403", "404", "409"} <= set(letters["responses"])
    replay = paths["/api/runs/{run_id}/dead-letters/replay"]["post"]
    assert replay["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ReplayOut")
    assert {"401", "403", "404", "409", "422", "503"} <= set(replay["responses"])
    assert {"number", "stage", "reason", "record", "origin"} <= set(doc["components"]["schemas"]["DeadLetterOut"]["properties"])
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"



class _DatabaseGone(SqlScheduleStore):
    """A schedule whose reads fail, as when the database server goes away."""

    def list_flows(self) -> list[Any]:
        raise RuntimeError("server closed the connection unexpectedly")

    def list_heartbeats(self, *, limit: int = 100) -> list[Any]:
        raise RuntimeError("server closed the connection unexpectedly (password=hunter2)")


def test_an_unexpected_error_is_a_500_with_an_error_id_and_the_traceback_only_in_the_log(tmp_path: Path) -> None:
    settings = Settings(state_dir=str(tmp_path / "state"), database_url=f"sqlite:///{tmp_path / 'adf.db'}")
    store = _DatabaseGone(settings.database_url)
    try:
        with LogCapture("adf.web") as log, live_server(settings, store) as url, client_from() as client:
            flows = client.get(f"{url}/api/flows")
            health = client.get(f"{url}/healthz")
    finally:
        store.close()
    body = _error(flows, 500, "internal error", "error_id")
    assert set(body) == {"error", "error_id"} and "Traceback" not in flows.text
    assert "server closed" not in flows.text
    [line] = [line for line in log.lines if line.get("error_id") == body["error_id"]]
    assert line["path"] == "/api/flows" and "Traceback" in line["backtrace"]
    assert "RuntimeError: server closed the connection unexpectedly" in line["error"]
    _error(health, 503, "schedule database unavailable")
    assert "hunter2" not in health.text
