"""active_data_flow.lambda_app.http: API Gateway REST (v1), HTTP API (v2) and Function URL events, in-process."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from lambda_env import Context, event, write_flows

from active_data_flow.lambda_app import http


@pytest.fixture(autouse=True)
def flows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = write_flows(tmp_path / "flows", {
        "echo": {
            "source": {"type": "payload"},
            "params": {"below": {"type": "integer", "default": 100}},
            "steps": [{"type": "python", "function": "flowlib.steps:double"},
                      {"type": "filter", "field": "n", "op": "lt", "value": "${params.below}"}],
            "sink": {"type": "response"},
            "runtime": {"batch_size": 2},
        },
        "to_file": {
            "source": {"type": "payload"},
            "params": {"min_a": {"type": "integer", "default": 0}},
            "steps": [{"type": "filter", "field": "a", "op": "ge", "value": "${params.min_a}"}],
            "sink": {"type": "file", "path": str(tmp_path / "out.jsonl")},
        },
        "numbers": {
            "source": {"type": "memory", "records": [{"n": i} for i in range(5)]},
            "params": {"below": {"type": "integer", "default": 3}},
            "steps": [{"type": "filter", "field": "n", "op": "lt", "value": "${params.below}"}],
            "sink": {"type": "response"},
        },
    })
    monkeypatch.setenv("ADF_FLOWS_DIR", str(d))
    monkeypatch.delenv("ADF_BASE_PATH", raising=False)
    return d


def rest(method: str, path: str, *, body: Any = None, query: dict[str, str] | None = None,
         headers: dict[str, str] | None = None, stage: str = "prod") -> dict[str, Any]:
    ev = event("apigateway-aws-proxy")
    ev["httpMethod"] = ev["requestContext"]["httpMethod"] = method
    ev["path"] = path
    ev["requestContext"]["path"] = f"/{stage}{path}"
    ev["requestContext"]["stage"] = stage
    ev["queryStringParameters"] = query
    ev["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} if query else None
    for k, v in (headers or {}).items():
        ev["headers"][k] = v
        ev["multiValueHeaders"][k] = [v]
    if body is None:
        ev["body"], ev["isBase64Encoded"] = None, False
    else:
        ev["body"] = base64.b64encode(json.dumps(body).encode()).decode()
        ev["isBase64Encoded"] = True
    return ev


def v2(kind: str, method: str, path: str, *, body: Any = None, query: str = "",
       headers: dict[str, str] | None = None, stage: str = "$default") -> dict[str, Any]:
    ev = event("apigateway-http-api-proxy" if kind == "http-api" else "lambda-function-url")
    raw_path = path if stage == "$default" else f"/{stage}{path}"
    ev["rawPath"] = ev["requestContext"]["http"]["path"] = raw_path
    ev["requestContext"]["http"]["method"] = method
    ev["requestContext"]["stage"] = stage
    ev["rawQueryString"] = query
    ev["queryStringParameters"] = dict(p.split("=", 1) for p in query.split("&")) if query else None
    ev["headers"].update(headers or {})
    if body is None:
        ev.pop("body", None)
        ev["isBase64Encoded"] = False
    else:
        ev["body"], ev["isBase64Encoded"] = json.dumps(body), False
    return ev


def call(ev: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any]]:
    result = http.handler(ev, Context())
    assert set(result) == {"statusCode", "headers", "body", "isBase64Encoded"}
    assert result["isBase64Encoded"] is False
    return result["statusCode"], result["headers"], json.loads(result["body"])


def test_rest_v1_post_json_with_base64_body_runs_the_flow() -> None:
    status, headers, body = call(rest("POST", "/flows/echo/run", body={"records": [{"n": 1}, {"n": 2}]}))
    assert status == 200, body
    assert body["status"] == "success" and body["records_out"] == 2
    assert [r["doubled"] for r in body["records"]] == [2, 4]
    # the API Gateway request id is the run's request id (correlation)
    assert body["request_id"] == headers["x-request-id"] == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"


def test_rest_v1_get_with_query_parameters() -> None:
    status, _, body = call(rest("GET", "/flows/numbers/run", query={"below": "2"}))
    assert status == 200, body
    assert [r["n"] for r in body["records"]] == [0, 1]


def test_rest_v1_strips_the_stage_and_a_base_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # custom domain: the path carries the stage / base path mapping
    status, _, body = call(rest("GET", "/prod/flows", stage="prod"))
    assert status == 200 and {f["name"] for f in body["flows"]} == {"echo", "to_file", "numbers"}
    monkeypatch.setenv("ADF_BASE_PATH", "/adf")
    status, _, body = call(rest("GET", "/adf/flows/echo"))
    assert status == 200 and body["name"] == "echo"


def test_rest_v1_x_adf_headers_give_the_declared_parameters(tmp_path: Path) -> None:
    status, _, body = call(rest("POST", "/flows/to_file/run", body=[{"a": 1}, {"a": 5}],
                                headers={"X-ADF-Param-Min-A": "2"}))
    assert status == 200, body
    out = tmp_path / "out.jsonl"
    assert [json.loads(line) for line in out.read_text().splitlines()] == [{"a": 5}]


def test_http_api_v2_get_query_and_post_json() -> None:
    status, _, body = call(v2("http-api", "GET", "/flows/numbers/run", query="below=1"))
    assert status == 200, body
    assert [r["n"] for r in body["records"]] == [0]
    status, _, body = call(v2("http-api", "POST", "/flows/echo/run", body={"records": [{"n": 5}]}, stage="prod"))
    assert status == 200, body
    assert body["records"] == [{"n": 5, "doubled": 10}]


def test_http_api_v2_base64_body() -> None:
    ev = v2("http-api", "POST", "/flows/echo/run")
    ev["body"] = base64.b64encode(json.dumps([{"n": 3}]).encode()).decode()
    ev["isBase64Encoded"] = True
    status, _, body = call(ev)
    assert status == 200 and body["records"] == [{"n": 3, "doubled": 6}]


def test_function_url_get_post_and_headers() -> None:
    status, _, body = call(v2("url", "GET", "/flows"))
    assert status == 200 and len(body["flows"]) == 3
    status, _, body = call(v2("url", "POST", "/flows/echo/run", body={"records": [{"n": 1}, {"n": 2}, {"n": 3}]},
                              headers={"x-adf-param-below": "3"}))
    assert status == 200, body
    assert (body["records_in"], body["records_out"]) == (3, 2)


def test_streaming_is_returned_whole() -> None:
    ev = v2("url", "POST", "/flows/echo/run", body=[{"n": 1}], query="stream=true")
    result = http.handler(ev, Context())
    assert result["statusCode"] == 200
    assert result["headers"]["content-type"] == "application/x-ndjson"
    events = [json.loads(line) for line in result["body"].splitlines()]
    assert events[0]["event"] == "start" and events[-1]["event"] == "summary"


@pytest.mark.parametrize(
    ("ev", "status", "fragment"),
    [
        (lambda: rest("POST", "/flows/echo/run", body=None) | {"body": "{not json", "isBase64Encoded": False}, 400, "malformed JSON"),
        (lambda: rest("GET", "/flows/nope/run"), 404, "no flow named"),
        (lambda: rest("DELETE", "/flows/echo/run"), 405, "not allowed"),
        (lambda: rest("POST", "/flows/numbers/run", body=[{"n": 1}]), 422, "payload"),
        (lambda: rest("GET", "/flows/echo/run", headers={"X-ADF-Bogus": "1"}), 400, "x-adf-bogus"),
        (lambda: rest("GET", "/flows/echo/run", query={"below": "lots"}), 422, "below"),
        (lambda: event("sqs-receive-message"), 400, "not an HTTP event"),
        (lambda: rest("POST", "/flows/echo/run", body=None) | {"body": "%%%", "isBase64Encoded": True}, 400, "base64"),
    ],
)
def test_bad_input_is_a_4xx_with_a_message(ev: Any, status: int, fragment: str) -> None:
    got, _, body = call(ev())
    assert got == status, body
    text = json.dumps(body)
    assert fragment in text


def test_a_body_over_the_limit_is_413_before_it_is_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADF_MAX_BODY_BYTES", "100")
    big = {"records": [{"n": i} for i in range(40)]}  # ~400 bytes of JSON
    raw = json.dumps(big)
    # REST v1 with a base64 body: judged by its decoded length
    status, headers, body = call(rest("POST", "/flows/to_file/run", body=big))
    assert status == 413, body
    assert "too large" in body["error"] and "100" in body["error"] and body["error_id"]
    assert headers["x-request-id"] == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    # an HTTP API body, plain and base64; a Function URL body
    assert call(v2("http-api", "POST", "/flows/echo/run", body=big))[0] == 413
    ev = v2("http-api", "POST", "/flows/echo/run")
    ev["body"], ev["isBase64Encoded"] = base64.b64encode(raw.encode()).decode(), True
    assert call(ev)[0] == 413
    assert call(v2("url", "POST", "/flows/echo/run", body=big))[0] == 413
    # nothing of it was parsed: malformed JSON past the limit is a 413, not a 400; nothing ran
    junk = rest("POST", "/flows/to_file/run") | {"body": "{" * 500, "isBase64Encoded": False}
    assert call(junk)[0] == 413
    assert not (tmp_path / "out.jsonl").exists()
    # the limit is in bytes: 67 characters of which 55 take two bytes each
    ev = v2("url", "POST", "/flows/echo/run")
    ev["body"], ev["isBase64Encoded"] = json.dumps([{"s": "é" * 55}], ensure_ascii=False), False
    assert len(ev["body"]) < 100 < len(ev["body"].encode())
    assert call(ev)[0] == 413
    small = [{"n": 1}]
    assert len(json.dumps(small)) < 100
    status, _, body = call(v2("url", "POST", "/flows/echo/run", body=small))
    assert status == 200 and body["records"] == [{"n": 1, "doubled": 2}]


def test_the_default_limit_is_lambdas_own_six_mib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADF_MAX_BODY_BYTES", raising=False)
    from active_data_flow.handlers.settings import max_body_bytes

    assert max_body_bytes() == 6 * 1024 * 1024
    records = [{"n": 1, "pad": "x" * 1000}] * 6500  # ~6.6 MB
    status, _, body = call(v2("url", "POST", "/flows/echo/run", body=records))
    assert status == 413 and "6291456" in body["error"]


def test_metrics_are_flushed_per_invocation(capsys: pytest.CaptureFixture[str]) -> None:
    call(rest("GET", "/flows"))
    out = capsys.readouterr().out
    emf = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]
    assert emf and emf[-1]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "ActiveDataFlow"
    assert emf[-1]["HttpRequests"] == [1.0] or emf[-1]["HttpRequests"] == 1.0
