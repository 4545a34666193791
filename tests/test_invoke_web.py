"""The flow-run routes mounted in the FastAPI app (``/invoke``), served by a real uvicorn."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn

from active_data_flow.handlers.invoke import LocalHost
from active_data_flow.handlers.schedule.sql import SqlScheduleStore
from active_data_flow.handlers.settings import Settings
from active_data_flow.handlers.web.api import build_app

SPECS = {
    "echo": {
        "source": {"type": "payload"},
        "params": {"below": {"type": "integer", "default": 100}},
        "steps": [{"type": "python", "function": "flowlib.steps:double"},
                  {"type": "filter", "field": "n", "op": "lt", "value": "${params.below}"}],
        "sink": {"type": "response"},
        "runtime": {"batch_size": 2},
    }
}


@contextlib.contextmanager
def serving(tmp_path: Path, api_token: str | None = None) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'schedule.db'}"
    store = SqlScheduleStore(url)
    settings = Settings(state_dir=str(tmp_path / "state"), database_url=url, api_token=api_token)
    host = LocalHost(SPECS, persist=False, environ={})
    app = build_app(settings, store, owns_store=True, flow_host=host)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
        host.close()


def test_runs_stream_and_errors_through_the_web_app(tmp_path: Path) -> None:
    with serving(tmp_path) as base, httpx.Client(timeout=30) as client:
        flows = client.get(f"{base}/invoke/flows").json()["flows"]
        assert [f["name"] for f in flows] == ["echo"]
        r = client.post(f"{base}/invoke/flows/echo/run", json={"records": [{"n": 3}, {"n": 7}]},
                        headers={"X-ADF-Param-Below": "5"})
        assert r.status_code == 200 and r.json()["records"] == [{"n": 3, "doubled": 6}]
        assert r.headers["x-request-id"] == r.json()["request_id"]
        with client.stream("POST", f"{base}/invoke/flows/echo/run?stream=true",
                           json=[{"n": i} for i in range(5)]) as stream:
            assert stream.headers["content-type"].startswith("application/x-ndjson")
            events = [json.loads(line) for line in stream.iter_lines() if line]
        assert [e["event"] for e in events] == ["start", "progress", "progress", "progress", "summary"]
        assert events[-1]["records_out"] == 5
        assert client.post(f"{base}/invoke/flows/echo/run", content=b"{oops").status_code == 400
        assert client.get(f"{base}/invoke/flows/none").status_code == 404
        r = client.delete(f"{base}/invoke/flows/echo/run")
        assert r.status_code == 405 and r.headers["allow"] == "GET, POST"


def test_the_routes_need_the_api_token_when_one_is_set(tmp_path: Path) -> None:
    with serving(tmp_path, api_token="tok-1") as base, httpx.Client(timeout=30) as client:
        assert client.get(f"{base}/invoke/flows").status_code == 401
        ok = client.get(f"{base}/invoke/flows", headers={"Authorization": "Bearer tok-1"})
        assert ok.status_code == 200
