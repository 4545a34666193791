"""The built Spin components, end to end under the local Spin host.

The four components are built once per session (cached by source hash in the temp dir):
HTTP runs under the Node host (jco + preview2-shim, ``scripts/spin_host``), Redis, cron and
MQTT under the wasmtime host (``active_data_flow.spin_app.host``), with the real Redis (127.0.0.1:6379) and
Mosquitto (127.0.0.1:1883). Needs ``scripts/spin-setup``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
REDIS = "redis://127.0.0.1:6379"

FLOWS: list[dict[str, Any]] = [
    {"name": "double", "source": {"type": "payload"},
     "steps": [{"type": "filter", "field": "n", "op": "lt", "value": 100}], "sink": {"type": "response"}},
    {"name": "numbers", "source": {"type": "memory", "records": [{"n": i, "sq": i * i} for i in range(10)]},
     "params": {"below": {"type": "integer", "default": 5}},
     "steps": [{"type": "filter", "field": "n", "op": "lt", "value": "${params.below}"}], "sink": {"type": "response"},
     "runtime": {"batch_size": 3}},
    {"name": "ticks", "source": {"type": "memory", "records": [{"id": i, "label": f"t{i}"} for i in range(4)]},
     "sink": {"type": "spin_sqlite", "table": "ticks", "mode": "upsert", "key": "id"},
     "runtime": {"interval_seconds": 60}},
    # a calendar in a zone with daylight saving: the component bundles the zone database
    {"name": "calendar", "source": {"type": "memory", "records": [{"id": 1, "label": "morning"}]},
     "sink": {"type": "spin_sqlite", "table": "calendar", "mode": "upsert", "key": "id"},
     "runtime": {"schedule": {"cron": "30 6 * * *", "timezone": "Europe/Berlin"}}},
    {"name": "readings", "source": {"type": "payload"},
     "sink": {"type": "kv", "prefix": "readings/", "key_field": "id"}},
    # outbound HTTP; the host points the URLs at the tests' own server (the operator's variables
    # adf_flow_fetched_json / adf_flow_forward_json: a request cannot)
    {"name": "fetched", "source": {"type": "spin_http", "url": "http://127.0.0.1:9/records"},
     "sink": {"type": "response"}},
    {"name": "forward", "source": {"type": "payload"},
     "sink": {"type": "spin_http", "url": "http://127.0.0.1:9/in"}},
    {"name": "unreachable", "source": {"type": "spin_http", "url": "http://127.0.0.1:9/records"},
     "sink": {"type": "response"}},
    # the host's variable adf_flow_elsewhere_json gives it a source that cannot run in a component
    {"name": "elsewhere", "source": {"type": "payload"}, "sink": {"type": "response"}},
    # files mounted into the component (the manifest's `files`; the host's --dir)
    {"name": "mounted", "source": {"type": "file", "path": "/data/*.jsonl"}, "sink": {"type": "response"}},
]
MOUNTED = {"a.jsonl": [{"id": 1, "city": "Oslo"}, {"id": 2, "city": "Lima"}], "b.jsonl": [{"id": 3, "city": "Pune"}]}
ROUTES = {
    "redis": {"adf-test-in": "double"},
    "mqtt": {"adf-test/+/temp": "readings"},
}


def _tools_missing() -> str | None:
    try:
        import spin_sdk  # noqa: F401
        import wasmtime  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (run scripts/spin-setup)"
    if not (ROOT / "node_modules" / "@bytecodealliance" / "jco").is_dir() or not shutil.which("node"):
        return "the Node packages of the Spin host are missing (run scripts/spin-setup)"
    return None


@pytest.fixture(scope="session")
def components() -> dict[str, str]:
    missing = _tools_missing()
    if missing:  # scripts/test (and CI) install them through scripts/spin-setup
        pytest.fail(missing)
    from active_data_flow.spin_app.build import build, source_digest

    key = source_digest(json.dumps([FLOWS, ROUTES], sort_keys=True))
    out = Path(tempfile.gettempdir()) / "adf-spin-cache" / key
    kinds = ("http", "redis", "cron", "mqtt")
    if all((out / f"{k}.wasm").exists() for k in kinds):
        return {k: str(out / f"{k}.wasm") for k in kinds}
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    built = build(tmp, flows=FLOWS, routes=ROUTES)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return {k: str(out / Path(p).name) for k, p in built.items()}


#: the body limit the HTTP fixture's host sets (adf_max_body_bytes)
BODY_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def peer() -> Iterator[Any]:
    """An HTTP server of the tests' own: GET /records answers records, POST /in keeps bodies;
    ``received`` lists every request it got (``peer.received.clear()`` before a test counts)."""
    import http.server

    got: list[Any] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path != "/records":  # only the operator's URL is expected
                got.append((self.path, None, None))
            body = json.dumps({"records": [{"id": 1, "name": "ada"}, {"id": 2, "name": "grace"}]}).encode()
            self.send_response(200 if self.path == "/records" else 404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            got.append((self.path, self.headers.get("content-type"),
                        json.loads(self.rfile.read(int(self.headers["content-length"])))))
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.received = got  # type: ignore[attr-defined]
    server.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module", params=["wasmtime", "node"])
def http(request: pytest.FixtureRequest, components: dict[str, str], peer: Any,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The HTTP component served by each local engine: wasmtime (WASI in Python) and Node (jco),
    configured as an operator would: outbound URLs and the body limit through Spin variables."""
    from active_data_flow.spin_app.host import HttpHost

    state = tmp_path_factory.mktemp(f"spin-http-{request.param}")
    data = tmp_path_factory.mktemp(f"spin-data-{request.param}")
    for name, rows in MOUNTED.items():
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "notes.txt").write_text("not a match for the glob\n")
    variables = {
        "adf_redis_address": REDIS,
        "adf_max_body_bytes": str(BODY_LIMIT),
        "adf_flow_fetched_json": json.dumps({"source": {"url": f"{peer.url}/records"}}),
        "adf_flow_forward_json": json.dumps({"sink": {"url": f"{peer.url}/in"}}),
        "adf_flow_elsewhere_json": json.dumps({"source": {"type": "sql", "url": "sqlite:///x.db", "table": "t"}}),
    }
    with HttpHost(components["http"], state_dir=str(state), variables=variables,
                  dirs={str(data): "/data"}, engine=request.param) as host:
        host.state = state
        yield host


def _call(host: Any, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(host.url + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


# --------------------------------------------------------------------------- HTTP


def test_sizes_are_reported_and_stripped(components: dict[str, str]) -> None:
    for path in components.values():
        size = os.path.getsize(path)
        assert 5e6 < size < 40e6, (path, size)


def test_get_with_query_parameters_runs_a_bundled_flow(http: Any) -> None:
    status, headers, raw = _call(http, "GET", "/flows/numbers/run?below=3")
    body = json.loads(raw)
    assert status == 200, body
    assert body["status"] == "success"
    assert body["records"] == [{"n": 0, "sq": 0}, {"n": 1, "sq": 1}, {"n": 2, "sq": 4}]
    assert (body["records_in"], body["records_out"]) == (10, 3)
    assert headers.get("x-request-id") == body["request_id"]


def test_requests_over_one_kept_alive_connection(http: Any) -> None:
    """HTTP/1.1 clients (load generators, browsers) send request after request on one connection:
    each gets its own fresh instance and a complete answer, a streamed (chunked) one included."""
    from http.client import HTTPConnection
    from urllib.parse import urlsplit

    parts = urlsplit(http.url)
    conn = HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        ids = set()
        for n in (1, 250, 7):
            conn.request("POST", "/flows/double/run", body=json.dumps({"records": [{"n": n}]}),
                         headers={"content-type": "application/json"})
            resp = conn.getresponse()
            body = json.loads(resp.read())
            assert resp.status == 200, body
            assert body["records"] == ([] if n >= 100 else [{"n": n}])
            ids.add(body["request_id"])
        conn.request("POST", "/flows/double/run?stream=true", body=json.dumps({"records": [{"n": 2}]}),
                     headers={"content-type": "application/json"})
        resp = conn.getresponse()
        lines = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
        assert resp.status == 200 and lines[-1]["event"] == "summary" and lines[-1]["status"] == "success", lines
        conn.request("GET", "/flows/nope/run")
        resp = conn.getresponse()
        assert resp.status == 404 and "error_id" in json.loads(resp.read())
        assert len(ids) == 3  # one instance per request
    finally:
        conn.close()


def test_post_with_records_runs_the_flow_and_returns_its_output(http: Any) -> None:
    records = [{"n": 1}, {"n": 250}, {"n": 3}]
    status, _, raw = _call(http, "POST", "/flows/double/run", {"records": records},
                           {"content-type": "application/json"})
    body = json.loads(raw)
    assert status == 200, body
    assert body["records"] == [{"n": 1}, {"n": 3}]
    assert (body["records_in"], body["records_out"], body["dead_letters"]) == (3, 2, 0)


def test_a_streaming_request_gets_progress_events_then_the_summary(http: Any) -> None:
    status, headers, raw = _call(http, "GET", "/flows/numbers/run?stream=true")
    assert status == 200
    assert headers["content-type"].startswith("application/x-ndjson")
    events = [json.loads(line) for line in raw.decode().splitlines()]
    assert events[0]["event"] == "start"
    progress = [e for e in events if e["event"] == "progress"]
    assert len(progress) >= 3  # batch_size 3 over 10 records
    assert [p["records_in"] for p in progress] == sorted(p["records_in"] for p in progress)
    assert events[-1]["event"] == "summary" and events[-1]["status"] == "success"
    assert events[-1]["records_out"] == 5


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "needle"),
    [
        ("POST", "/flows/double/run", b"{not json", 400, "malformed JSON"),
        ("POST", "/flows/double/run", b'{"records": 5}', 400, "records"),
        ("GET", "/flows/no-such-flow/run", None, 404, "no flow named"),
        ("GET", "/flows/numbers/run?below=lots", None, 422, "below"),
        ("GET", "/flows/numbers/run?bogus=1", None, 400, "bogus"),
        # a connector that cannot run in a component is not in it: named, not a crash
        ("GET", "/flows/elsewhere/run", None, 422, "source type 'sql' is not available here"),
    ],
)
def test_bad_requests_get_the_documented_status_and_a_json_error(
    http: Any, method: str, path: str, body: bytes | None, status: int, needle: str
) -> None:
    got, headers, raw = _call(http, method, path, body)
    payload = json.loads(raw)
    assert got == status, payload
    assert needle in json.dumps(payload)
    assert isinstance(payload.get("error"), str) and payload.get("error_id")
    assert headers["content-type"].startswith("application/json")


def test_the_host_logs_each_request_with_its_id_duration_and_wasm_memory_size(http: Any) -> None:
    status, headers, _ = _call(http, "POST", "/flows/double/run", {"records": [{"n": 1}]},
                               {"content-type": "application/json"})
    assert status == 200
    rid = headers["x-request-id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in http.output if x.startswith("{") and rid in x]
        host_lines = [x for x in lines if x.get("logger") == "spin.host"]
        if host_lines:
            break
        time.sleep(0.05)
    guest = [x for x in lines if x.get("logger") == "adf.invoke"]
    assert guest and guest[0]["duration_ms"] > 0
    line = host_lines[0]
    assert (line["method"], line["path"], line["status"]) == ("POST", "/flows/double/run", 200)
    assert line["duration_ms"] > 0 and line["instance"] == "fresh"
    if http.engine == "node":
        assert 8 << 20 < line["memory_bytes"] < 1 << 30  # the instance's linear memory, in bytes (CPython: MBs)
    else:  # the wasmtime package cannot read a component's memory: said, not made up
        assert line["memory_bytes"] is None and line["engine"] == "wasmtime"


def test_a_flow_fetches_its_records_with_outbound_http(http: Any, peer: Any) -> None:
    status, _, raw = _call(http, "GET", "/flows/fetched/run")
    body = json.loads(raw)
    assert status == 200, body
    assert body["records"] == [{"id": 1, "name": "ada"}, {"id": 2, "name": "grace"}]


def test_a_flow_posts_its_records_with_outbound_http(http: Any, peer: Any) -> None:
    records = [{"n": 1}, {"n": 2}, {"n": 3}]
    peer.received.clear()
    status, _, raw = _call(http, "POST", "/flows/forward/run", {"records": records},
                           {"content-type": "application/json"})
    assert status == 200, json.loads(raw)
    assert peer.received == [("/in", "application/json", {"records": records})]


def test_a_flow_reads_the_files_mounted_into_the_component(http: Any) -> None:
    status, _, raw = _call(http, "GET", "/flows/mounted/run")
    body = json.loads(raw)
    assert status == 200, body
    assert sorted(body["records"], key=lambda r: r["id"]) == MOUNTED["a.jsonl"] + MOUNTED["b.jsonl"]


def test_an_unreachable_outbound_host_fails_the_run_with_the_reason(http: Any) -> None:
    status, _, raw = _call(http, "GET", "/flows/unreachable/run")
    body = json.loads(raw)
    assert status >= 400 and "127.0.0.1:9" in json.dumps(body), body


def test_a_request_cannot_reconfigure_a_flow_and_a_body_over_the_limit_is_413(http: Any, peer: Any) -> None:
    """Inside the built component: configuration in the body, the query or X-ADF-* headers is
    refused (400, naming it; nothing is sent anywhere), a declared parameter is taken, and a
    body over adf_max_body_bytes is 413 — with a Content-Length, unread; chunked, read no further."""
    from http.client import HTTPConnection
    from urllib.parse import urlsplit

    peer.received.clear()
    json_headers = {"content-type": "application/json"}
    hostile = {"type": "spin_http", "url": f"{peer.url}/stolen"}
    for path, body, headers, key in [
        ("/flows/double/run", {"records": [{"n": 1}], "config": {"sink": hostile}}, json_headers, "config"),
        ("/flows/double/run", {"records": [{"n": 1}], "spec": {"sink": hostile}}, json_headers, "spec"),
        (f"/flows/double/run?sink.url={peer.url}/stolen", {"records": [{"n": 1}]}, json_headers, "sink.url"),
        ("/flows/double/run", {"records": [{"n": 1}]}, {**json_headers, "X-ADF-Sink-Url": f"{peer.url}/stolen"},
         "x-adf-sink-url"),
        ("/flows/fetched/run?source.url=" + f"{peer.url}/stolen", None, {}, "source.url"),
    ]:
        status, _, raw = _call(http, "GET" if body is None else "POST", path, body, headers)
        answer = json.loads(raw)
        assert status == 400, answer
        assert key in answer["error"] and answer["error_id"] and answer["declared_params"] == []
    assert peer.received == []
    status, _, raw = _call(http, "GET", "/flows/numbers/run?below=2")
    assert status == 200 and [r["n"] for r in json.loads(raw)["records"]] == [0, 1]
    # a body over the limit: 413 with a message, nothing parsed ("{" * n is not JSON: not a 400)
    big = b"{" * (BODY_LIMIT + 1)
    status, headers, raw = _call(http, "POST", "/flows/double/run", big, json_headers)
    answer = json.loads(raw)
    assert status == 413, answer
    assert f"the limit is {BODY_LIMIT} bytes" in answer["error"] and answer["error_id"]
    assert headers["x-request-id"]
    parts = urlsplit(http.url)
    conn = HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:  # no Content-Length: the component stops reading one byte past the limit
        conn.request("POST", "/flows/double/run", body=iter([b"{" * 40_000, b"{" * 40_000]),
                     headers={"content-type": "application/json"}, encode_chunked=True)
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        assert resp.status == 413 and "more than" in answer["error"], answer
    finally:
        conn.close()
    # at the limit is read and parsed as usual
    records = [{"n": 1, "pad": "x" * 200}]
    status, _, raw = _call(http, "POST", "/flows/double/run", {"records": records}, json_headers)
    assert status == 200 and json.loads(raw)["records"] == records


def test_the_same_spec_gives_the_same_records_under_spin_and_the_local_runner(http: Any) -> None:
    from active_data_flow.connectors.memory import ResponseSink
    from active_data_flow.engine import run_flow

    spec = next(f for f in FLOWS if f["name"] == "numbers")
    summary = run_flow(dict(spec), persist=False)
    native = ResponseSink.pop(summary.run_id)
    assert native is not None
    status, _, raw = _call(http, "GET", "/flows/numbers/run")
    assert status == 200
    assert json.loads(raw)["records"] == native.records


# --------------------------------------------------------------------------- Redis


def test_a_redis_message_runs_the_flow_and_the_result_is_published(components: dict[str, str], tmp_path: Path) -> None:
    import redis

    from active_data_flow.spin_app.host import ComponentHost, SpinState

    client = redis.Redis.from_url(REDIS)
    pubsub = client.pubsub()
    reply = f"adf-test-replies-{uuid.uuid4().hex[:8]}"
    pubsub.subscribe(reply)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    host = ComponentHost(components["redis"], state=SpinState(str(tmp_path), {"adf_redis_address": REDIS, "adf_channel": "adf-test-in"}))
    message = {"records": [{"n": 7}, {"n": 700}], "reply_to": reply}
    host.redis(json.dumps(message).encode())
    got = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and got is None:
        m = pubsub.get_message(timeout=1)
        if m and m["type"] == "message":
            got = json.loads(m["data"])
    pubsub.close()
    assert got is not None, host.stdout_lines[-5:]
    assert (got["flow"], got["status"], got["records"]) == ("double", "success", [{"n": 7}])
    assert got["trigger"] == "redis" and got["channel"] == "adf-test-in"
    # a malformed message: the error is published too (with its error id), the host survives
    pubsub = client.pubsub()
    pubsub.subscribe("adf-test-in:results")
    pubsub.get_message(timeout=5)
    host.redis(b"{nope")
    error = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and error is None:
        m = pubsub.get_message(timeout=1)
        if m and m["type"] == "message":
            error = json.loads(m["data"])
    pubsub.close()
    assert error is not None and error["status"] == "error" and error["code"] == 400 and error["error_id"]


# --------------------------------------------------------------------------- cron


def test_a_cron_tick_runs_the_due_flows_from_the_spin_sqlite_schedule(components: dict[str, str], tmp_path: Path) -> None:
    from active_data_flow.spin_app.host import ComponentHost, SpinState

    host = ComponentHost(components["cron"], state=SpinState(str(tmp_path)))
    host.cron(int(time.time()))
    db = sqlite3.connect(tmp_path / "sqlite_db.db")
    assert db.execute("SELECT id, label FROM ticks ORDER BY id").fetchall() == [(i, f"t{i}") for i in range(4)]
    ticks = "FROM data_flow_runs r JOIN data_flows f ON f.id = r.flow_id WHERE f.name = 'ticks'"
    runs = db.execute(f"SELECT r.status, r.records_out, f.name {ticks}").fetchall()
    assert runs == [("success", 4, "ticks")]
    # the next tick within the interval runs nothing; one an interval later runs it again (upsert: same rows)
    host.cron(int(time.time()) + 5)
    assert db.execute(f"SELECT count(*) {ticks}").fetchone() == (1,)
    host.cron(int(time.time()) + 120)
    assert db.execute(f"SELECT count(*), min(status) {ticks}").fetchone() == (2, "success")
    assert db.execute("SELECT count(*) FROM ticks").fetchone() == (4,)
    db.close()


def test_a_calendar_flow_runs_at_its_wall_clock_time_across_a_daylight_saving_change(
    components: dict[str, str], tmp_path: Path
) -> None:
    """``runtime.schedule: {cron: "30 6 * * *", timezone: Europe/Berlin}`` inside the cron component
    (zone database bundled): due at 06:30 Berlin time, before and after the spring change."""
    import datetime as dt
    import zoneinfo

    from active_data_flow.spin_app.host import ComponentHost, SpinState

    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    host = ComponentHost(components["cron"], state=SpinState(str(tmp_path)))
    db = sqlite3.connect(tmp_path / "sqlite_db.db")

    def runs() -> int:
        return db.execute("SELECT count(*) FROM data_flow_runs r JOIN data_flows f ON f.id = r.flow_id "
                          "WHERE f.name = 'calendar' AND r.status = 'success'").fetchone()[0]

    def at(day: dt.date, hour: int, minute: int) -> int:
        return int(dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=berlin).timestamp())

    now = time.time()
    host.cron(int(now))  # registers the flow: a calendar flow is due at its first instant, not at once
    assert runs() == 0
    # the last Sunday of March that lies more than two days ahead: clocks go from 02:00 CET to 03:00 CEST
    day = dt.datetime.fromtimestamp(now, berlin).date() + dt.timedelta(days=3)
    while not (day.month == 3 and day.weekday() == 6 and (day + dt.timedelta(days=7)).month == 4):
        day += dt.timedelta(days=1)
    saturday = day - dt.timedelta(days=1)
    assert dt.datetime(saturday.year, 3, saturday.day, 6, 30, tzinfo=berlin).utcoffset() == dt.timedelta(hours=1)
    host.cron(at(saturday, 6, 30))  # missed days run once, at the first tick that finds the flow due
    assert runs() == 1
    host.cron(at(saturday, 6, 31) + 3600)
    assert runs() == 1
    # Sunday 06:30 CEST is 04:30 UTC: an hour earlier in UTC than Saturday's 05:30
    sunday = at(day, 6, 30)
    assert sunday - at(saturday, 6, 30) == 23 * 3600
    host.cron(sunday - 60)
    assert runs() == 1
    host.cron(sunday)
    assert runs() == 2
    assert db.execute("SELECT count(*) FROM calendar").fetchone() == (1,)
    db.close()


# --------------------------------------------------------------------------- MQTT


def _kv(state: Path) -> dict[str, Any]:
    import base64

    data = json.loads((state / "key_value.json").read_text())
    return {k: json.loads(base64.b64decode(v)) for k, v in data.get("default", {}).items()}


def test_an_mqtt_message_runs_the_flow_its_topic_routes_to(components: dict[str, str], tmp_path: Path) -> None:
    from active_data_flow.spin_app.host import ComponentHost, SpinState

    host = ComponentHost(components["mqtt"], state=SpinState(str(tmp_path)))
    host.mqtt(json.dumps({"records": [{"id": "a", "t": 21.5}]}).encode(), "adf-test/kitchen/temp")
    assert _kv(tmp_path)["readings/a"] == {"id": "a", "t": 21.5}
    # no route: a 404 result (logged with its error id; the message is not retried), nothing written
    host.mqtt(b'{"records": [{"id": "b"}]}', "adf-test/kitchen/humidity")
    assert "readings/b" not in _kv(tmp_path)
    assert any('"status": 404' in line or "no flow is routed" in line for line in host.stdout_lines)
    # a record the sink refuses (no id) is dead-lettered, not written
    host.mqtt(json.dumps({"records": [{"t": 1}]}).encode(), "adf-test/kitchen/temp")
    assert set(_kv(tmp_path)) == {"readings/a"}


def test_a_message_that_exhausts_the_wasm_memory_limit_is_reported_and_the_host_goes_on(
    components: dict[str, str], tmp_path: Path
) -> None:
    from active_data_flow.spin_app.host import ComponentHost, GuestError, SpinState

    # linear memory capped at 96 MB (the snapshot needs ~45): 40 MB of records cannot be parsed
    host = ComponentHost(components["mqtt"], state=SpinState(str(tmp_path)), memory_limit=96 << 20)
    big = json.dumps({"records": [{"id": f"r{i}", "pad": "x" * 1000} for i in range(40_000)]}).encode()
    with pytest.raises(GuestError) as failed:
        host.mqtt(big, "adf-test/kitchen/temp")
    text = f"{failed.value} {failed.value.stdout}"
    assert "out of memory" in text or failed.value.trapped, text
    assert not (tmp_path / "key_value.json").exists()  # nothing was written
    # the host is healthy: the next message (a fresh instance) runs
    host.mqtt(json.dumps({"records": [{"id": "after", "t": 1}]}).encode(), "adf-test/kitchen/temp")
    assert _kv(tmp_path)["readings/after"] == {"id": "after", "t": 1}


def test_a_request_that_exhausts_the_wasm_memory_limit_gets_an_error_and_the_server_goes_on(
    components: dict[str, str], tmp_path: Path
) -> None:
    from active_data_flow.spin_app.host import HttpHost

    big = json.dumps({"records": [{"id": f"r{i}", "pad": "x" * 1000} for i in range(40_000)]}).encode()
    # a body limit above the 40 MB, so that it is read and parsed (6 MiB by default)
    with HttpHost(components["http"], state_dir=str(tmp_path), memory_limit=96 << 20,
                  variables={"adf_max_body_bytes": str(64 << 20)}) as host:
        status, headers, raw = _call(host, "POST", "/flows/double/run", big, {"content-type": "application/json"})
        body = json.loads(raw)
        assert status in (500, 507), body  # the guest's MemoryError (507) or a trap the host reports (500)
        assert body["error"] and body["error_id"] and headers["content-type"].startswith("application/json")
        status, _, raw = _call(host, "POST", "/flows/double/run", {"records": [{"n": 1}]},
                               {"content-type": "application/json"})
        assert (status, json.loads(raw)["records"]) == (200, [{"n": 1}])  # a fresh instance answers
        failed = next(json.loads(x) for x in host.output if '"spin.host"' in x)
        assert failed["status"] in (500, 507) and failed["level"] in ("error", "info")


def _faults_per_message(host: Any, message: bytes, topic: str, n: int = 9) -> float:
    """The minor page faults of handling one message (the median of ``n``), counted for the thread
    that handles it — the instance runs on it. Other threads of the test process (servers and
    bridges of other tests, the pool's reset thread) fault pages of their own: not counted."""
    import resource
    import statistics

    for _ in range(3):  # the compiled component's load, and the pool's slots warming up
        host.mqtt(message, topic)
    counts = []
    for _ in range(n):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        host.mqtt(message, topic)
        counts.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
    return float(statistics.median(counts))


def test_the_pool_resets_each_instance_in_place_instead_of_faulting_its_memory_in_again(
    components: dict[str, str], tmp_path: Path
) -> None:
    from active_data_flow.spin_app.engine import EngineSettings
    from active_data_flow.spin_app.host import ComponentHost, SpinState

    message = json.dumps({"records": [{"id": "pooled", "t": 7}]}).encode()
    faults = {}
    for label, settings in (("pooled", EngineSettings()), ("on demand", EngineSettings(pooling=False))):
        host = ComponentHost(components["mqtt"], state=SpinState(str(tmp_path)), engine_settings=settings)
        try:
            assert host.engine_settings.pooling is settings.pooling
            faults[label] = _faults_per_message(host, message, "adf-test/kitchen/temp")
        finally:
            host.close()
    # a fresh instance starts from the component's memory image either way; on demand it
    # copies in every page it touches again (hundreds), from the pool it finds them in place
    assert faults["pooled"] * 4 < faults["on demand"], faults
    assert _kv(tmp_path)["readings/pooled"] == {"id": "pooled", "t": 7}


def test_a_pool_smaller_than_the_events_still_runs_every_one(components: dict[str, str], tmp_path: Path) -> None:
    from active_data_flow.spin_app.engine import EngineSettings
    from active_data_flow.spin_app.host import ComponentHost, SpinState

    host = ComponentHost(components["mqtt"], state=SpinState(str(tmp_path)), engine_settings=EngineSettings(instances=2))
    try:
        for i in range(8):
            host.mqtt(json.dumps({"records": [{"id": f"e{i}", "t": i}]}).encode(), "adf-test/hall/temp")
    finally:
        host.close()
    kv = _kv(tmp_path)
    assert [kv[f"readings/e{i}"]["t"] for i in range(8)] == list(range(8))


def test_messages_from_the_real_mosquitto_are_delivered_to_the_component(components: dict[str, str], tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt

    from active_data_flow.spin_app.host import ComponentHost, MqttBridge, SpinState

    host = ComponentHost(components["mqtt"], state=SpinState(str(tmp_path)))
    done = threading.Event()
    bridge = MqttBridge(host, "mqtt://127.0.0.1:1883", "adf-test/+/temp", on_result=lambda *a: done.set())
    bridge.start()
    try:
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        pub.connect("127.0.0.1", 1883)
        pub.loop_start()
        pub.publish("adf-test/hall/temp", json.dumps({"records": [{"id": "hall", "t": 19}]}), qos=1).wait_for_publish(5)
        assert done.wait(30)
        pub.loop_stop()
        pub.disconnect()
    finally:
        bridge.stop()
    assert _kv(tmp_path)["readings/hall"] == {"id": "hall", "t": 19}


# --------------------------------------------------------------------------- MQTT results

MOSQUITTO = "mqtt://127.0.0.1:1883"


class _Subscriber:
    """A paho-mqtt client subscribed to ``topic`` on the real Mosquitto, collecting messages."""

    def __init__(self, topic: str) -> None:
        import queue

        import paho.mqtt.client as mqtt

        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"adf-test-sub-{uuid.uuid4().hex[:8]}")
        self.client.on_message = lambda c, u, msg: self.messages.put((msg.topic, bytes(msg.payload)))
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()
        assert subscribed.wait(10), "could not subscribe on Mosquitto"

    def get(self, timeout: float = 10) -> tuple[str, dict[str, Any]]:
        topic, payload = self.messages.get(timeout=timeout)
        return topic, json.loads(payload)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_an_mqtt_message_s_result_is_published_on_mqtt(components: dict[str, str], tmp_path: Path) -> None:
    from active_data_flow.spin_app.host import ComponentHost, SpinState

    room = f"room-{uuid.uuid4().hex[:8]}"
    sub = _Subscriber(f"adf-test/{room}/#")
    host = ComponentHost(components["mqtt"], state=SpinState(str(tmp_path), {"adf_mqtt_address": MOSQUITTO}))
    try:
        host.mqtt(json.dumps({"records": [{"id": room, "t": 20.5}]}).encode(), f"adf-test/{room}/temp")
        topic, got = sub.get()
        # by default on <topic>/results, through outbound MQTT (fermyon:spin/mqtt) to the broker
        assert topic == f"adf-test/{room}/temp/results"
        assert (got["flow"], got["status"], got["trigger"], got["channel"]) == (
            "readings", "success", "mqtt", f"adf-test/{room}/temp")
        assert got["records_out"] == 1 and _kv(tmp_path)[f"readings/{room}"] == {"id": room, "t": 20.5}
        # an error is published too (no route: code 404, with its error id)
        host.mqtt(b'{"records": []}', f"adf-test/{room}/humidity")
        topic, error = sub.get()
        assert topic == f"adf-test/{room}/humidity/results"
        assert error["status"] == "error" and error["code"] == 404 and error["error_id"]
        assert sub.messages.empty()
    finally:
        sub.close()
        host.close()


def test_the_mqtt_response_topic_is_configurable_and_a_message_s_reply_to_wins(
    components: dict[str, str], tmp_path: Path
) -> None:
    from active_data_flow.spin_app.host import ComponentHost, SpinState

    run = uuid.uuid4().hex[:8]
    sub = _Subscriber(f"adf-test-out/{run}/#")
    variables = {"adf_mqtt_address": MOSQUITTO, "adf_mqtt_response_via": "mqtt",
                 "adf_mqtt_response_topic": f"adf-test-out/{run}/{{topic}}"}
    host = ComponentHost(components["mqtt"], state=SpinState(str(tmp_path), variables))
    try:
        host.mqtt(json.dumps({"records": [{"id": "c1", "t": 1}]}).encode(), "adf-test/cellar/temp")
        topic, got = sub.get()
        assert topic == f"adf-test-out/{run}/adf-test/cellar/temp" and got["status"] == "success"
        host.mqtt(json.dumps({"records": [{"id": "c2", "t": 2}], "reply_to": f"adf-test-out/{run}/mine"}).encode(),
                  "adf-test/cellar/temp")
        topic, got = sub.get()
        assert (topic, got["reply_to"], got["records_out"]) == (f"adf-test-out/{run}/mine", f"adf-test-out/{run}/mine", 1)
    finally:
        sub.close()
        host.close()


def test_mqtt_results_published_through_redis_when_configured(components: dict[str, str], tmp_path: Path) -> None:
    import redis

    from active_data_flow.spin_app.host import ComponentHost, SpinState

    channel = f"adf-test-mqtt-results-{uuid.uuid4().hex[:8]}"
    pubsub = redis.Redis.from_url(REDIS).pubsub()
    pubsub.subscribe(channel)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    variables = {"adf_mqtt_response_via": "redis", "adf_redis_address": REDIS, "adf_mqtt_response_topic": channel,
                 "adf_mqtt_address": "mqtt://127.0.0.1:9"}  # not used: the results go through Redis
    host = ComponentHost(components["mqtt"], state=SpinState(str(tmp_path), variables))
    try:
        host.mqtt(json.dumps({"records": [{"id": "r1", "t": 3}]}).encode(), "adf-test/attic/temp")
        got = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and got is None:
            m = pubsub.get_message(timeout=1)
            if m and m["type"] == "message":
                got = json.loads(m["data"])
        assert got is not None, host.stdout_lines[-5:]
        assert (got["flow"], got["status"], got["reply_to"], got["channel"]) == (
            "readings", "success", channel, "adf-test/attic/temp")
    finally:
        pubsub.close()
        host.close()


def test_an_mqtt_result_that_cannot_be_published_is_logged_and_the_run_still_counts(
    components: dict[str, str], tmp_path: Path
) -> None:
    from active_data_flow.spin_app.host import ComponentHost, SpinState

    cases = {
        "no address": {},
        "no broker there": {"adf_mqtt_address": "mqtt://127.0.0.1:9"},
        "not an mqtt address": {"adf_mqtt_address": "http://127.0.0.1:1883"},
        "unknown way": {"adf_mqtt_address": MOSQUITTO, "adf_mqtt_response_via": "carrier-pigeon"},
    }
    for i, (case, variables) in enumerate(cases.items()):
        host = ComponentHost(components["mqtt"], state=SpinState(str(tmp_path), variables))
        try:
            host.mqtt(json.dumps({"records": [{"id": f"u{i}", "t": i}]}).encode(), "adf-test/porch/temp")
        finally:
            host.close()
        line = next(json.loads(x) for x in reversed(host.stdout_lines) if '"published"' in x)
        assert line["published"] is False and line["publish_error"] and line["status"] == "success", (case, line)
        assert _kv(tmp_path)[f"readings/u{i}"] == {"id": f"u{i}", "t": i}


def test_a_message_from_mosquitto_is_answered_on_mosquitto(components: dict[str, str], tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt

    from active_data_flow.spin_app.host import ComponentHost, MqttBridge, SpinState

    room = f"loop-{uuid.uuid4().hex[:8]}"
    sub = _Subscriber(f"adf-test/{room}/temp/results")
    host = ComponentHost(components["mqtt"], state=SpinState(str(tmp_path), {"adf_mqtt_address": MOSQUITTO}))
    bridge = MqttBridge(host, MOSQUITTO, f"adf-test/{room}/+")
    bridge.start()
    try:
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        pub.connect("127.0.0.1", 1883)
        pub.loop_start()
        pub.publish(f"adf-test/{room}/temp", json.dumps({"records": [{"id": room, "t": 5}]}), qos=1).wait_for_publish(5)
        topic, got = sub.get(timeout=30)
        pub.loop_stop()
        pub.disconnect()
    finally:
        bridge.stop()
        sub.close()
        host.close()
    assert topic == f"adf-test/{room}/temp/results" and got["status"] == "success" and got["records_out"] == 1


def test_the_spin_like_mode_drops_each_instance_before_the_next_event(components: dict[str, str], tmp_path: Path) -> None:
    from active_data_flow.spin_app.engine import reaper
    from active_data_flow.spin_app.host import ComponentHost, SpinState

    host = ComponentHost(components["mqtt"], state=SpinState(str(tmp_path)), deferred_reset=False)
    try:
        for i in range(3):
            host.mqtt(json.dumps({"records": [{"id": f"s{i}", "t": i}]}).encode(), "adf-test/shed/temp")
            assert reaper._pending == 0  # nothing was left for the reaper's thread
    finally:
        host.close()
    assert [_kv(tmp_path)[f"readings/s{i}"]["t"] for i in range(3)] == [0, 1, 2]
