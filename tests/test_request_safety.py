"""What a request may set, on every transport: its records and the parameters its flow declares.

Configuration probes — ``config`` in the body with a sink, steps, a source, runtime, state, dead
letters, ``python_path`` or a whole ``spec``; the same keys at the top of the body, in ``params``,
as dotted query parameters and as ``X-ADF-*`` headers, nested, dotted and in other cases — go
through (a) ``active_data_flow.lambda_app.http.handler`` with the event shapes ``sam local generate-event`` prints
(REST v1, HTTP API v2, Function URL), (b) the web app's ``/invoke`` routes, (c)
``active_data_flow.handlers.invoke.handle_http`` itself, the SQS and S3 Lambda handlers and the Redis / MQTT
message handler. Each is a 4xx naming the key and listing the declared parameters; the file a
probe names is never written and the local HTTP server a probe points an ``http`` step or
source at receives nothing.

Declared parameters are accepted, typed, defaulted and resolved as ``${params.x}``; a wrong
type, a value outside the choices and a missing required one are 422 with each problem.
Generated requests (hypothesis) check the invariant: whatever a request carries, the prepared
flow's configuration is the stored one — only the declared parameters' values differ.
"""

from __future__ import annotations

import base64
import copy
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lambda_env import Context, event, write_flows
from moto_endpoint import moto_endpoint

from active_data_flow.errors import ConfigError, SpecError
from active_data_flow.handlers.http import Request, Response
from active_data_flow.handlers.invoke import (
    RESERVED_QUERY,
    InvokeError,
    LocalHost,
    RequestParams,
    handle_http,
    handle_message,
    parse_trigger_payload,
    prepare_flow,
    status_for,
)
from active_data_flow.refs import resolve_params

SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

RECORDS = [{"n": 1}, {"n": 2}]


def stamp(record: dict[str, Any], **options: Any) -> dict[str, Any]:
    """A python step that copies its options (declared parameters) into the record."""
    record.update(options)
    return record


GUARDED_STEPS: list[dict[str, Any]] = [
    {"type": "filter", "field": "n", "op": "lt", "value": "${params.below}"},
    {"type": "python", "function": "test_request_safety:stamp",
     "options": {"label": "${params.label}", "tier": "${params.tier}", "ratio": "${params.ratio}",
                 "strict": "${params.strict}", "tags": "${params.tags}", "note": "tier=${params.tier}"}},
]
DECLARED = ["below", "tier", "label", "ratio", "strict", "tags"]


def flow_specs(out: Path) -> dict[str, dict[str, Any]]:
    return {
        "guarded": {
            "source": {"type": "payload"},
            "params": {
                "below": {"type": "integer", "default": 100},
                "tier": {"type": "string", "choices": ["gold", "silver"], "default": "silver"},
                "label": {"type": "string", "default": "plain"},
                "ratio": {"type": "number", "default": 1.0},
                "strict": {"type": "boolean", "default": False},
                "tags": {"type": "list", "default": []},
            },
            "steps": copy.deepcopy(GUARDED_STEPS),
            "sink": {"type": "response"},
        },
        "regional": {
            "source": {"type": "payload"},
            "params": {"region": {"type": "string", "required": True, "choices": ["eu", "us"]},
                       "batch": {"type": "integer", "default": 10}},
            "steps": [{"type": "python", "function": "test_request_safety:stamp",
                       "options": {"region": "${params.region}", "batch": "${params.batch}"}}],
            "sink": {"type": "response"},
        },
        "to_file": {"source": {"type": "payload"}, "sink": {"type": "file", "path": str(out)}},
    }


# --------------------------------------------------------------------------- what the probes point at


class Trap:
    """A local HTTP server that notes every request it gets: an ``http`` step or source that a
    probe smuggled in would call it."""

    def __init__(self) -> None:
        hits: list[tuple[str, str]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                hits.append((self.command, self.path))
                body = b'{"records": [{"leaked": true}]}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

        self.hits = hits
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def trap() -> Iterator[Trap]:
    server = Trap()
    yield server
    server.close()


@pytest.fixture
def target(tmp_path: Path, trap: Trap) -> Iterator[Path]:
    """The file a probe tries to write; at the end: not written, and the trap was not called."""
    path = tmp_path / "written-by-a-request.jsonl"
    trap.hits.clear()
    yield path
    assert not path.exists(), "a request wrote the file it named"
    assert not list(tmp_path.glob("written-by-a-request*")), "a request wrote next to the file it named"
    assert trap.hits == [], f"a request made the flow call {trap.hits}"


def body_probes(target: Path, trap: Trap) -> list[tuple[str, dict[str, Any], str]]:
    """``(id, JSON body, what the refusal must name)``."""
    sink = {"type": "file", "path": str(target)}
    step = {"type": "http", "url": f"{trap.url}/ssrf", "into": "leak"}
    source = {"type": "http", "url": f"{trap.url}/source"}
    spec = {"source": {"type": "payload"}, "steps": [step], "sink": sink}
    return [
        ("config.sink", {"records": RECORDS, "config": {"sink": sink}}, "config"),
        ("config.steps", {"records": RECORDS, "config": {"steps": [step]}}, "config"),
        ("config.source", {"records": RECORDS, "config": {"source": source}}, "config"),
        ("config.runtime", {"records": RECORDS, "config": {"runtime": {"state_dir": str(target)}}}, "runtime"),
        ("config.state", {"records": RECORDS, "config": {"state": f"sqlite:///{target}"}}, "state"),
        ("config.dead_letter", {"records": RECORDS, "config": {"dead_letter": sink}}, "dead_letter"),
        ("config.python_path", {"records": RECORDS, "config": {"python_path": [str(target.parent)]}}, "python_path"),
        ("config.spec", {"records": RECORDS, "config": {"spec": spec}}, "spec"),
        ("config dotted", {"records": RECORDS, "config": {"sink.type": "file", "sink.path": str(target)}}, "sink.path"),
        ("config list index", {"records": RECORDS, "config": {"steps.0": step}}, "steps.0"),
        ("config nested params", {"records": RECORDS, "config": {"params": {"below": {"default": 1}}}}, "config"),
        ("spec", {"records": RECORDS, "spec": spec}, "spec"),
        ("sink at the top", {"records": RECORDS, "sink": sink}, "sink"),
        ("steps at the top", {"records": RECORDS, "steps": [step]}, "steps"),
        ("source at the top", {"records": RECORDS, "source": source}, "source"),
        ("Config", {"records": RECORDS, "Config": {"sink": sink}}, "Config"),
        ("CONFIG", {"records": RECORDS, "CONFIG": {"sink": sink}}, "CONFIG"),
        ("Spec", {"records": RECORDS, "Spec": spec}, "Spec"),
        ("Records and config", {"Records": RECORDS, "config": {"sink": sink}}, "Records"),
        ("params.sink", {"records": RECORDS, "params": {"sink": sink}}, "sink"),
        ("params dotted", {"records": RECORDS, "params": {"sink.path": str(target)}}, "sink.path"),
        ("params.steps", {"records": RECORDS, "params": {"steps": [step]}}, "steps"),
        ("params.params", {"records": RECORDS, "params": {"params": {"below": {"default": 1}}}}, "params"),
        ("params in another case", {"records": RECORDS, "params": {"Below": 1}}, "Below"),
        ("a param and config", {"records": RECORDS, "params": {"below": 5}, "config": {"sink": sink}}, "config"),
    ]


def query_probes(target: Path, trap: Trap) -> list[tuple[str, dict[str, str], str]]:
    return [
        ("sink.path", {"sink.path": str(target)}, "sink.path"),
        ("sink.type", {"sink.type": "file", "sink.path": str(target)}, "sink.type"),
        ("steps.0", {"steps.0.type": "http", "steps.0.url": f"{trap.url}/ssrf"}, "steps.0.url"),
        ("source.url", {"source.type": "http", "source.url": f"{trap.url}/source"}, "source.url"),
        ("runtime", {"runtime.state_dir": str(target)}, "runtime.state_dir"),
        ("state", {"state": f"sqlite:///{target}"}, "state"),
        ("dead_letter", {"dead_letter.path": str(target)}, "dead_letter.path"),
        ("python_path", {"python_path": f'["{target.parent}"]'}, "python_path"),
        ("spec", {"spec": json.dumps({"sink": {"type": "file", "path": str(target)}})}, "spec"),
        ("config", {"config": json.dumps({"sink": {"type": "file", "path": str(target)}})}, "config"),
        ("SINK.PATH", {"SINK.PATH": str(target)}, "SINK.PATH"),
        ("params.below", {"params.below": "1"}, "params.below"),
        ("a param in another case", {"Below": "1"}, "Below"),
        ("a param and a path", {"below": "1", "sink.path": str(target)}, "sink.path"),
    ]


def header_probes(target: Path, trap: Trap) -> list[tuple[str, dict[str, str], str]]:
    sink = json.dumps({"sink": {"type": "file", "path": str(target)}})
    return [
        ("X-ADF-Sink.Path", {"X-ADF-Sink.Path": str(target)}, "x-adf-sink.path"),
        ("X-ADF-Sink-Path", {"X-ADF-Sink-Path": str(target)}, "x-adf-sink-path"),
        ("X-ADF-Config", {"X-ADF-Config": sink}, "x-adf-config"),
        ("x-adf-steps.0.url", {"x-adf-steps.0.url": f"{trap.url}/ssrf"}, "x-adf-steps.0.url"),
        ("X-Adf-Runtime-State-Dir", {"X-Adf-Runtime-State-Dir": str(target)}, "x-adf-runtime-state-dir"),
        ("X-ADF-Dead-Letter.Path", {"X-ADF-Dead-Letter.Path": str(target)}, "x-adf-dead-letter.path"),
        ("X-ADF-Spec", {"X-ADF-Spec": sink}, "x-adf-spec"),
        ("X-ADF-Source.Url", {"X-ADF-Source.Url": f"{trap.url}/source"}, "x-adf-source.url"),
        ("X-ADF-Param-Sink.Path", {"X-ADF-Param-Sink.Path": str(target)}, "x-adf-param-sink.path"),
        ("X-ADF-Params with a sink", {"X-ADF-Params": sink}, "sink"),
        ("X-ADF-Params nested", {"X-ADF-Params": json.dumps({"params": {"below": 1}})}, "params"),
    ]


def assert_refused(status: int, body: dict[str, Any], key: str, declared: list[str] = DECLARED) -> None:
    assert status == 400, body
    assert key.lower() in body["error"].lower(), (key, body["error"])
    assert body["error"].startswith("a request may set only its records and the parameters flow")
    assert body["refused"] and body["error_id"]
    assert [p["name"] for p in body["declared_params"]] == declared


# --------------------------------------------------------------------------- (c) handle_http itself


@pytest.fixture
def host(tmp_path: Path) -> Iterator[LocalHost]:
    h = LocalHost(flow_specs(tmp_path / "to_file.jsonl"), persist=False, environ={})
    yield h
    h.close()


def call(host: LocalHost, method: str, path: str, body: Any = None, *, query: dict[str, str] | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    response = handle_http(Request(method, path, dict(headers or {}), dict(query or {}), raw), host)
    assert isinstance(response, Response)
    out = json.loads(response.encoded())
    assert isinstance(out, dict)
    return response.status, out


def test_handle_http_refuses_every_configuration_probe(host: LocalHost, target: Path, trap: Trap,
                                                       tmp_path: Path) -> None:
    for probe, body, key in body_probes(target, trap):
        status, answer = call(host, "POST", "/flows/guarded/run", body)
        assert_refused(status, answer, key)
        status, answer = call(host, "POST", "/flows/to_file/run", body)
        assert_refused(status, answer, key, declared=[]), probe
        assert "none (this flow takes only records)" in answer["error"]
    for _probe, query, key in query_probes(target, trap):
        for method in ("GET", "POST"):
            status, answer = call(host, method, "/flows/guarded/run", RECORDS if method == "POST" else None, query=query)
            assert_refused(status, answer, key)
        status, answer = call(host, "GET", "/flows/guarded", query=query)  # describing takes the same rule
        assert_refused(status, answer, key)
    for _probe, headers, key in header_probes(target, trap):
        status, answer = call(host, "POST", "/flows/guarded/run", RECORDS, headers=headers)
        assert_refused(status, answer, key)
        status, answer = call(host, "GET", "/flows/guarded", headers=headers)
        assert_refused(status, answer, key)
    assert not (tmp_path / "to_file.jsonl").exists()  # refused before anything ran


def test_every_refused_key_is_named_at_once(host: LocalHost, target: Path, trap: Trap) -> None:
    status, answer = call(host, "POST", "/flows/guarded/run",
                          {"records": RECORDS, "config": {"sink": {}}, "spec": {}, "params": {"below": 1, "sink": 2}},
                          query={"sink.path": str(target), "stream": "false"}, headers={"X-ADF-Config": "{}"})
    assert_refused(status, answer, "config")
    assert answer["refused"] == [
        "header 'x-adf-config'", "query parameter 'sink.path'", "body key 'config' (sink)", "body key 'spec'",
        "body params key 'sink'",
    ]


# --------------------------------------------------------------------------- (a) the Lambda HTTP handler


@pytest.fixture
def lambda_flows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = write_flows(tmp_path / "flows", flow_specs(tmp_path / "to_file.jsonl"))
    monkeypatch.setenv("ADF_FLOWS_DIR", str(d))
    for name in ("ADF_BASE_PATH", "ADF_STATE_DIR", "ADF_STATE_URL", "ADF_MAX_BODY_BYTES"):
        monkeypatch.delenv(name, raising=False)
    return d


def lambda_event(kind: str, method: str, path: str, *, body: Any = None, query: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None) -> dict[str, Any]:
    """An HTTP event in the shape ``sam local generate-event`` prints (values changed only)."""
    raw = None if body is None else json.dumps(body)
    if kind == "rest":
        ev = event("apigateway-aws-proxy")
        ev["httpMethod"] = ev["requestContext"]["httpMethod"] = method
        ev["path"] = path
        ev["requestContext"]["path"] = f"/prod{path}"
        ev["queryStringParameters"] = query or None
        ev["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} if query else None
        for k, v in (headers or {}).items():
            ev["headers"][k] = v
            ev["multiValueHeaders"][k] = [v]
        ev["body"] = None if raw is None else base64.b64encode(raw.encode()).decode()
        ev["isBase64Encoded"] = raw is not None
        return ev
    ev = event("apigateway-http-api-proxy" if kind == "http-api" else "lambda-function-url")
    ev["rawPath"] = ev["requestContext"]["http"]["path"] = path
    ev["requestContext"]["http"]["method"] = method
    ev["rawQueryString"] = "&".join(f"{k}={v}" for k, v in (query or {}).items())
    ev["queryStringParameters"] = dict(query) if query else None
    ev["headers"].update({k.lower(): v for k, v in (headers or {}).items()})
    if raw is None:
        ev.pop("body", None)
    else:
        ev["body"] = raw
    ev["isBase64Encoded"] = False
    return ev


def lambda_call(ev: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    from active_data_flow.lambda_app import http as lambda_http

    result = lambda_http.handler(ev, Context())
    return result["statusCode"], json.loads(result["body"])


@pytest.mark.parametrize("kind", ["rest", "http-api", "url"])
def test_the_lambda_http_handler_refuses_every_configuration_probe(
    kind: str, lambda_flows: Path, target: Path, trap: Trap, tmp_path: Path
) -> None:
    for _probe, body, key in body_probes(target, trap):
        assert_refused(*lambda_call(lambda_event(kind, "POST", "/flows/guarded/run", body=body)), key)
        assert_refused(*lambda_call(lambda_event(kind, "POST", "/flows/to_file/run", body=body)), key, declared=[])
    for _probe, query, key in query_probes(target, trap):
        assert_refused(*lambda_call(lambda_event(kind, "GET", "/flows/guarded/run", query=query)), key)
    for _probe, headers, key in header_probes(target, trap):
        assert_refused(*lambda_call(lambda_event(kind, "POST", "/flows/guarded/run", body=RECORDS,
                                                 headers=headers)), key)
    assert not (tmp_path / "to_file.jsonl").exists()
    # the same events without the probe run
    status, answer = lambda_call(lambda_event(kind, "POST", "/flows/to_file/run", body={"records": RECORDS}))
    assert status == 200 and answer["records_out"] == 2


def test_a_lambda_host_asked_for_payload_specs_still_refuses_them(
    lambda_flows: Path, target: Path, trap: Trap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADF_ALLOW_PAYLOAD_SPEC", "true")  # the old switch: it has no effect
    spec = {"source": {"type": "payload"}, "sink": {"type": "file", "path": str(target)}}
    with pytest.warns(DeprecationWarning):
        status, answer = lambda_call(lambda_event("url", "POST", "/flows/to_file/run",
                                                  body={"records": RECORDS, "spec": spec}))
    assert_refused(status, answer, "spec", declared=[])
    status, answer = lambda_call(lambda_event("url", "POST", "/flows/adhoc/run", body={"records": RECORDS, "spec": spec}))
    assert status == 404  # a request cannot bring a flow of its own


# --------------------------------------------------------------------------- (b) the web app's /invoke routes


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from active_data_flow.handlers.schedule.sql import SqlScheduleStore
    from active_data_flow.handlers.settings import Settings
    from active_data_flow.handlers.web.api import build_app

    url = f"sqlite:///{tmp_path / 'schedule.db'}"
    settings = Settings(state_dir=str(tmp_path / "state"), database_url=url, api_token="tok-safety")
    flow_host = LocalHost(flow_specs(tmp_path / "to_file.jsonl"), persist=False, environ={})
    app = build_app(settings, SqlScheduleStore(url), owns_store=True, flow_host=flow_host)
    with TestClient(app, headers={"Authorization": "Bearer tok-safety"}) as client:
        yield client
    flow_host.close()


def test_the_web_apps_invoke_routes_refuse_every_configuration_probe(
    web: Any, target: Path, trap: Trap, tmp_path: Path
) -> None:
    def answer(r: Any) -> tuple[int, dict[str, Any]]:
        return r.status_code, r.json()

    for _probe, body, key in body_probes(target, trap):
        assert_refused(*answer(web.post("/invoke/flows/guarded/run", json=body)), key)
        assert_refused(*answer(web.post("/invoke/flows/to_file/run", json=body)), key, declared=[])
    for _probe, query, key in query_probes(target, trap):
        assert_refused(*answer(web.get("/invoke/flows/guarded/run", params=query)), key)
    for _probe, headers, key in header_probes(target, trap):
        assert_refused(*answer(web.post("/invoke/flows/guarded/run", json=RECORDS, headers=headers)), key)
    assert not (tmp_path / "to_file.jsonl").exists()
    status, body = answer(web.post("/invoke/flows/guarded/run", json={"records": RECORDS, "params": {"below": 2}}))
    assert status == 200 and [r["n"] for r in body["records"]] == [1]


# --------------------------------------------------------------------------- messages: Redis, MQTT, SQS, S3


class Published:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, channel: str, message: bytes) -> None:
        self.sent.append((channel, json.loads(message)))


@pytest.mark.parametrize(("kind", "channel", "routes"), [
    ("redis", "jobs", {"jobs": "to_file", "guarded": "guarded"}),
    ("mqtt", "site/a/jobs", {"site/+/jobs": "to_file", "guarded": "guarded"}),
])
def test_redis_and_mqtt_messages_refuse_every_configuration_probe(
    kind: str, channel: str, routes: dict[str, str], tmp_path: Path, target: Path, trap: Trap
) -> None:
    published = Published()
    host = LocalHost(flow_specs(tmp_path / "to_file.jsonl"), persist=False, environ={}, publisher=published)
    for _probe, body, key in body_probes(target, trap):
        for on, declared in ((channel, []), ("guarded", DECLARED)):
            result = handle_message(host, kind, on, json.dumps(body).encode(), routes=routes)
            assert (result["status"], result["code"]) == ("error", 400), result
            assert key.lower() in result["error"].lower() and result["refused"]
            assert [p["name"] for p in result["declared_params"]] == declared
    assert all(m["code"] == 400 for _, m in published.sent)
    assert not (tmp_path / "to_file.jsonl").exists()
    # a declared parameter and records go through
    result = handle_message(host, kind, "guarded", json.dumps({"records": RECORDS, "params": {"below": 2}}).encode(),
                            routes=routes)
    assert result["status"] == "success" and [r["n"] for r in result["records"]] == [1]
    host.close()


def sqs_batch(*bodies: tuple[str, str]) -> dict[str, Any]:
    template = event("sqs-receive-message")["Records"][0]
    records = []
    for message_id, body in bodies:
        r = copy.deepcopy(template)
        r["messageId"], r["body"], r["messageAttributes"] = message_id, body, {}
        records.append(r)
    return {"Records": records}


def test_sqs_messages_with_a_probe_fail_alone_and_change_nothing(
    lambda_flows: Path, target: Path, trap: Trap, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from active_data_flow.lambda_app import sqs as sqs_handler

    monkeypatch.delenv("ADF_IDEMPOTENCY_TABLE", raising=False)
    probes = body_probes(target, trap)
    bodies = [(f"probe-{i}", json.dumps({"flow": "to_file", **body})) for i, (_, body, _) in enumerate(probes)]
    bodies += [(f"guarded-{i}", json.dumps({"flow": "guarded", **body})) for i, (_, body, _) in enumerate(probes)]
    bodies.append(("good", json.dumps({"flow": "to_file", "records": [{"n": 7}]})))
    result = sqs_handler.handler(sqs_batch(*bodies), Context())
    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    assert failed == {message_id for message_id, _ in bodies} - {"good"}
    out = tmp_path / "to_file.jsonl"
    assert [json.loads(line) for line in out.read_text().splitlines()] == [{"n": 7}]


def test_an_sqs_probe_is_refused_by_the_shared_rule_naming_the_key(target: Path, trap: Trap, tmp_path: Path) -> None:
    from active_data_flow.handlers.invoke.events import parse_flow_message, run_event_flow

    host = LocalHost(flow_specs(tmp_path / "to_file.jsonl"), persist=False, environ={})
    for _probe, body, key in body_probes(target, trap):
        flow, payload = parse_flow_message(json.dumps({"flow": "guarded", **body}))
        with pytest.raises(InvokeError) as refused:
            run_event_flow(host, flow, payload, trigger="sqs")
        assert refused.value.status == 400 and key.lower() in refused.value.message.lower()
    host.close()


BUCKET = "adf-safety-in"


def test_an_s3_event_sets_only_the_object_its_flow_reads(
    lambda_flows: Path, tmp_path: Path, target: Path, trap: Trap, monkeypatch: pytest.MonkeyPatch
) -> None:
    from active_data_flow.lambda_app import s3 as s3_handler

    out = tmp_path / "objects.jsonl"
    write_flows(lambda_flows, {
        "objects": {"source": {"type": "file", "path": f"s3://{BUCKET}/placeholder.csv", "format": "csv"},
                    "sink": {"type": "file", "path": str(out)}},
    })
    monkeypatch.setenv("ADF_S3_ROUTES", json.dumps({f"{BUCKET}/in/": "objects", f"{BUCKET}/payload/": "guarded"}))
    monkeypatch.delenv("ADF_DEFAULT_FLOW", raising=False)
    monkeypatch.delenv("ADF_IDEMPOTENCY_TABLE", raising=False)
    with moto_endpoint(export=True) as (url, _):
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="in/a.csv", Body=b"id,name\n1,ada\n2,grace\n")
        ev = event("s3-put")
        record = ev["Records"][0]
        record["s3"]["bucket"]["name"], record["s3"]["object"]["key"] = BUCKET, "in/a.csv"
        # an event carries no configuration: keys a forged event adds are never read
        record["config"] = {"sink": {"type": "file", "path": str(target)}}
        record["s3"]["object"]["config"] = {"sink.path": str(target)}
        ev["params"] = {"sink": {"type": "file", "path": str(target)}}
        result = s3_handler.handler(ev, Context())
        assert result["results"][0]["records_out"] == 2
        assert [json.loads(line) for line in out.read_text().splitlines()] == [
            {"id": "1", "name": "ada"}, {"id": "2", "name": "grace"}]
        # routed to a flow whose source is not a file: the object is refused, nothing runs
        s3.put_object(Bucket=BUCKET, Key="payload/b.csv", Body=b"id\n1\n")
        record["s3"]["object"]["key"] = "payload/b.csv"
        with pytest.raises(s3_handler.S3RunError, match="only a 'file' source reads the object"):
            s3_handler.handler(ev, Context())


# --------------------------------------------------------------------------- declared parameters


def test_declared_parameters_are_defaulted_typed_and_resolved(host: LocalHost) -> None:
    status, body = call(host, "POST", "/flows/guarded/run", {"records": [{"n": 1}, {"n": 500}]})
    assert status == 200, body
    assert body["records"] == [{"n": 1, "label": "plain", "tier": "silver", "ratio": 1.0, "strict": False,
                                "tags": [], "note": "tier=silver"}]
    # text from the query and headers is read as the declared type ("123" stays a string label)
    status, body = call(host, "POST", "/flows/guarded/run", [{"n": 1}, {"n": 5}],
                        query={"below": "3", "ratio": "2", "label": "123", "tags": '["a", "b"]'},
                        headers={"X-ADF-Param-Strict": "true", "X-ADF-Param-Tier": "gold"})
    assert status == 200, body
    assert body["records"] == [{"n": 1, "label": "123", "tier": "gold", "ratio": 2.0, "strict": True,
                                "tags": ["a", "b"], "note": "tier=gold"}]
    # JSON values in the body are coerced as configuration is
    status, body = call(host, "POST", "/flows/guarded/run",
                        {"records": [{"n": 1}], "params": {"ratio": 3, "strict": "yes", "below": "2"}})
    assert status == 200 and body["records"][0]["ratio"] == 3.0 and body["records"][0]["strict"] is True


def test_parameter_errors_are_422_listing_each_problem_and_the_declarations(host: LocalHost) -> None:
    status, body = call(host, "POST", "/flows/guarded/run",
                        {"records": RECORDS, "params": {"below": "lots", "tier": "bronze", "tags": "a,b"}})
    assert status == 422, body
    assert body["error"].startswith("invalid parameters for flow 'guarded'")
    problems = body["problems"]
    assert len(problems) == 3
    assert any("'below': expected integer" in p for p in problems)
    assert any("'tier': 'bronze' is not one of 'gold', 'silver'" in p for p in problems)
    assert any("'tags': expected list" in p for p in problems)
    assert [p["name"] for p in body["declared_params"]] == DECLARED
    assert body["declared_params"][1] == {"name": "tier", "type": "string", "required": False, "default": "silver",
                                          "choices": ["gold", "silver"]}
    status, body = call(host, "POST", "/flows/regional/run", {"records": RECORDS})
    assert status == 422 and body["problems"] == ["params: 'region' is required (string)"]
    assert "region (string, one of 'eu', 'us', required)" in body["error"]
    status, body = call(host, "POST", "/flows/regional/run", {"records": RECORDS}, query={"region": "eu"})
    assert status == 200 and body["records"][0] == {"n": 1, "region": "eu", "batch": 10}


def test_the_class_form_declares_its_configuration_attributes_as_parameters(tmp_path: Path) -> None:
    from active_data_flow.attributes import Attribute
    from active_data_flow.flow import DataFlow

    class Scaled(DataFlow):
        name = "scaled"
        source = {"type": "memory", "records": [{"n": 1}, {"n": 2}]}
        sink = {"type": "file", "path": str(tmp_path / "scaled.jsonl")}
        steps = ({"type": "filter", "field": "n", "op": "lt", "value": "${params.below}"},)
        configuration_attributes = (Attribute("factor", int, default=2), Attribute("below", int, default=10))

        def transform(self, record: dict[str, Any]) -> dict[str, Any]:
            record["scaled"] = record["n"] * self.config["factor"]
            return record

    spec = Scaled.spec(params={"factor": "3", "below": 2})
    assert spec.params == {"factor": 3, "below": 2} and spec.config == {"factor": 3, "below": 2}
    assert spec.steps[0]["value"] == 2
    assert [a.name for a in spec.param_attributes] == ["factor", "below"]
    summary = Scaled.run_now({"factor": 5}, params={"below": 2}, state_dir=str(tmp_path / "state"))
    assert summary.ok and json.loads((tmp_path / "scaled.jsonl").read_text()) == {"n": 1, "scaled": 5}
    with pytest.raises(SpecError, match="unknown key 'sink'"):
        Scaled.spec(params={"sink": {"type": "file", "path": str(tmp_path / "x")}})


def test_parameters_are_resolved_in_steps_and_context_only() -> None:
    from active_data_flow.spec import parse_spec

    base = {"name": "f", "source": {"type": "payload"}, "sink": {"type": "response"},
            "params": {"table": {"type": "string", "default": "t"}}}
    for section, value in (("sink", {"type": "response", "limit": "${params.table}"}),
                           ("source", {"type": "payload", "records": "${params.table}"}),
                           ("runtime", {"state_dir": "/tmp/${params.table}"}),
                           ("state", "sqlite:///${params.table}.db"),
                           ("dead_letter", {"type": "file", "path": "/tmp/${params.table}.jsonl"})):
        with pytest.raises(SpecError) as refused:
            parse_spec({**base, section: value})
        assert any(p.startswith(f"{section}: ${{params.table}} — parameters are resolved in step options")
                   for p in refused.value.problems), refused.value.problems
    spec = parse_spec({**base, "context": {"t": "${params.table}"}}, params={"table": "orders"})
    assert spec.context == {"t": "orders"}
    with pytest.raises(SpecError, match="no 'nope' in the parameters"):
        parse_spec({**base, "steps": [{"type": "filter", "field": "a", "op": "eq", "value": "${params.nope}"}]})


# --------------------------------------------------------------------------- generated requests


_HOSTILE_NAMES = ["config", "spec", "sink", "source", "steps", "runtime", "state", "dead_letter", "python_path",
                  "name", "context", "schema", "params", "records", "Config", "SPEC", "Records", "reply_to", "flow"]
_PATH_WORDS = ["sink", "source", "steps", "0", "1", "path", "url", "type", "runtime", "state_dir", "batch_size",
               "dead_letter", "params", "below", "tier", "config", "default", "name", "python_path"]
_DOTTED = st.lists(st.sampled_from(_PATH_WORDS), min_size=1, max_size=4).map(".".join)
_KEYS = st.one_of(st.sampled_from(_HOSTILE_NAMES + DECLARED), _DOTTED, st.text(max_size=12))
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)


def _json(hostile: list[Any]) -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                        st.floats(allow_nan=False, allow_infinity=False), _TEXT, st.sampled_from(hostile))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(_KEYS, inner, max_size=3)), max_leaves=8)


@st.composite
def hostile_requests(draw: st.DrawFn, hostile: list[Any]) -> tuple[str, bytes, dict[str, str], dict[str, str]]:
    values = _json(hostile)
    shape = draw(st.sampled_from(["object", "array", "raw", "none"]))
    if shape == "object":
        body_value: Any = draw(st.dictionaries(_KEYS, values, max_size=4))
        if draw(st.booleans()):
            body_value["params"] = draw(st.dictionaries(st.one_of(st.sampled_from(DECLARED), _KEYS), values, max_size=4))
        if draw(st.booleans()):
            body_value["records"] = draw(st.lists(st.dictionaries(st.sampled_from(["n", "m"]), values, max_size=2),
                                                  max_size=3))
        body = json.dumps(body_value).encode()
    elif shape == "array":
        body = json.dumps(draw(st.lists(values, max_size=3))).encode()
    elif shape == "raw":
        body = draw(st.binary(max_size=40))
    else:
        body = b""
    query = draw(st.dictionaries(st.one_of(st.sampled_from(DECLARED), _KEYS), _TEXT, max_size=3))
    header_names = st.tuples(st.sampled_from(["X-ADF-", "x-adf-", "X-Adf-", "X-ADF-Param-", "x-adf-param-"]),
                             st.one_of(st.sampled_from([*DECLARED, "Params", "Config", "Spec"]),
                                       _DOTTED, st.from_regex(r"[A-Za-z0-9.\-_]{1,20}", fullmatch=True)))
    headers = draw(st.dictionaries(header_names.map("".join), _TEXT.map(lambda t: t.strip()), max_size=3))
    method = draw(st.sampled_from(["GET", "POST"]))
    return method, body, query, headers


@pytest.fixture(scope="module")
def invariant(tmp_path_factory: pytest.TempPathFactory, trap: Trap) -> Iterator[tuple[LocalHost, Path, list[Any]]]:
    d = tmp_path_factory.mktemp("invariant")
    target = d / "written-by-a-request.jsonl"
    hostile: list[Any] = [
        str(target), f"{trap.url}/ssrf", f"sqlite:///{target}", "file",
        {"type": "file", "path": str(target)}, {"type": "http", "url": f"{trap.url}/ssrf"},
        [{"type": "http", "url": f"{trap.url}/ssrf"}], {"sink": {"type": "file", "path": str(target)}},
        {"below": {"default": 1}}, "${params.below}", "${context.x}",
    ]
    host = LocalHost(flow_specs(d / "to_file.jsonl"), persist=False, environ={})
    yield host, target, hostile
    host.close()


@SETTINGS
@given(data=st.data())
def test_whatever_a_request_carries_the_prepared_flow_is_the_stored_one(
    invariant: tuple[LocalHost, Path, list[Any]], trap: Trap, data: st.DataObject
) -> None:
    host, target, hostile = invariant
    method, body, query, headers = data.draw(hostile_requests(hostile))
    baseline = prepare_flow(host, "guarded").loaded.spec
    try:
        payload = parse_trigger_payload(body if method == "POST" else b"")
        params = RequestParams.from_http({k.lower(): v for k, v in headers.items()}, query, payload.params,
                                         payload.refused, reserved=RESERVED_QUERY)
        prepared = prepare_flow(host, "guarded", params=params, records=payload.records).loaded.spec
    except (InvokeError, ConfigError) as exc:
        assert 400 <= status_for(exc) < 500, exc
    else:
        # the whole configuration is the stored one; the steps differ only by the parameters' values
        assert prepared.raw == baseline.raw
        assert (prepared.sink, prepared.dead_letter, prepared.runtime, prepared.state, prepared.context) == (
            baseline.sink, baseline.dead_letter, baseline.runtime, baseline.state, baseline.context)
        assert {k: v for k, v in prepared.source.items() if k != "records"} == \
            {k: v for k, v in baseline.source.items() if k != "records"}
        assert list(prepared.params) == DECLARED
        assert prepared.steps == resolve_params(GUARDED_STEPS, prepared.params)
        assert prepared.steps[1]["function"] == "test_request_safety:stamp"
    # and end to end: an answer, never a crash; nothing written, nothing fetched
    status, answer = call(host, method, "/flows/guarded/run", body if method == "POST" else None,
                          query=query, headers=headers)
    assert status in (200, 400, 422) or (status == 500 and answer.get("status") == "failed"), (status, answer)
    assert not target.exists() and trap.hits == []
