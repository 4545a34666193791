"""active_data_flow.lambda_app.s3 and active_data_flow.lambda_app.sqs against moto's server on 127.0.0.1 (S3 and DynamoDB over real HTTP).

The S3 handler runs a flow reading the new object (s3:// source) and writing to S3 (file sink
on s3://); the same spec run by active_data_flow.engine.run_flow gives the same sink contents; SQS partial
batch failures name exactly the bad messages; Powertools idempotency (DynamoDB table in moto)
keeps a redelivered S3 / SQS event from running the flow twice.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from flowlib import steps
from lambda_env import Context, event, write_flows
from moto_endpoint import moto_endpoint

from active_data_flow.engine import run_flow
from active_data_flow.lambda_app import idempotency
from active_data_flow.lambda_app import s3 as s3_handler
from active_data_flow.lambda_app import sqs as sqs_handler

BUCKET = "adf-lambda-in"
OUT = "adf-lambda-out"
TABLE = "adf-idempotency"
ROWS = [{"id": str(i), "name": f"n{i}", "qty": str(i * 3)} for i in range(7)]


def _csv(rows: list[dict[str, str]]) -> bytes:
    lines = ["id,name,qty", *(f"{r['id']},{r['name']},{r['qty']}" for r in rows)]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_endpoint(export=True) as (url, _):
        try:
            s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
            s3.create_bucket(Bucket=BUCKET)
            s3.create_bucket(Bucket=OUT)
            boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1").create_table(
                TableName=TABLE, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
            )
            yield url
        finally:
            idempotency._layers.clear()


@pytest.fixture
def s3(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def orders_spec(sink_path: str) -> dict[str, Any]:
    return {
        "source": {"type": "file", "path": f"s3://{BUCKET}/placeholder.csv", "format": "csv"},
        "steps": [{"type": "python", "function": "flowlib.steps:tally"}],
        "sink": {"type": "file", "path": sink_path, "format": "jsonl"},
    }


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoint: str) -> Path:
    flows = write_flows(tmp_path / "flows", {
        "orders": orders_spec(f"s3://{OUT}/orders/result.jsonl"),
        "ingest": {"source": {"type": "payload"}, "steps": [{"type": "python", "function": "flowlib.steps:tally"}],
                   "sink": {"type": "file", "path": str(tmp_path / "ingest.jsonl")}},
        "failing": {"source": {"type": "payload"}, "steps": [{"type": "python", "function": "flowlib.steps:explode_on_sevens"}],
                    "sink": {"type": "file", "path": str(tmp_path / "failing.jsonl")}, "runtime": {"max_dead_letters": 0}},
    })
    monkeypatch.setenv("ADF_FLOWS_DIR", str(flows))
    monkeypatch.setenv("ADF_S3_ROUTES", json.dumps({f"{BUCKET}/incoming/": "orders"}))
    monkeypatch.delenv("ADF_DEFAULT_FLOW", raising=False)
    monkeypatch.delenv("ADF_IDEMPOTENCY_TABLE", raising=False)
    steps.TALLY.clear()
    return tmp_path


def s3_event(key: str, *, etag: str, version: str | None = None, bucket: str = BUCKET) -> dict[str, Any]:
    ev = event("s3-put")
    obj = ev["Records"][0]["s3"]["object"]
    obj["key"], obj["eTag"] = key, etag
    if version:
        obj["versionId"] = version
    ev["Records"][0]["s3"]["bucket"]["name"] = bucket
    ev["Records"][0]["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    return ev


def read_jsonl(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in text.splitlines()]


# --------------------------------------------------------------------------- S3


def test_s3_event_runs_the_routed_flow_on_the_object_end_to_end(env: Path, s3: Any) -> None:
    key = "incoming/day 1/orders=1.csv"
    put = s3.put_object(Bucket=BUCKET, Key=key, Body=_csv(ROWS))
    # S3 URL-encodes keys in notifications ("+" for a space)
    result = s3_handler.handler(s3_event("incoming/day+1/orders%3D1.csv", etag=put["ETag"].strip('"')), Context())
    [run] = result["results"]
    assert run["flow"] == "orders" and run["object"] == f"s3://{BUCKET}/{key}"
    assert run["records_in"] == run["records_out"] == 7
    assert read_jsonl(s3, OUT, "orders/result.jsonl") == ROWS


def test_routes_are_key_prefixes_of_the_routes_bucket_matched_decoded(
        env: Path, s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # as the SAM template sets them: S3Routes relative to its input bucket, keys as users write them
    monkeypatch.setenv("ADF_S3_ROUTES", json.dumps({"incoming/day 1/": "orders", "incoming/": "ingest"}))
    monkeypatch.setenv("ADF_S3_ROUTES_BUCKET", BUCKET)
    assert s3_handler.routes() == {f"{BUCKET}/incoming/day 1/": "orders", f"{BUCKET}/incoming/": "ingest"}
    key = "incoming/day 1/a+b.csv"
    put = s3.put_object(Bucket=BUCKET, Key=key, Body=_csv(ROWS))
    result = s3_handler.handler(s3_event("incoming/day+1/a%2Bb.csv", etag=put["ETag"].strip('"')), Context())
    [run] = result["results"]
    assert (run["flow"], run["object"], run["records_out"]) == ("orders", f"s3://{BUCKET}/{key}", 7)
    # another bucket's object is not under the routes' bucket
    with pytest.raises(s3_handler.S3RunError, match="no flow is routed"):
        s3_handler.handler(s3_event("incoming/day+1/x.csv", etag="e9", bucket=OUT), Context())


def test_same_sink_contents_as_the_local_runner(env: Path, s3: Any) -> None:
    key = "incoming/parity.csv"
    s3.put_object(Bucket=BUCKET, Key=key, Body=_csv(ROWS))
    s3_handler.handler(s3_event(key, etag="e1"), Context())
    via_lambda = read_jsonl(s3, OUT, "orders/result.jsonl")
    spec = {"name": "orders", **orders_spec(f"s3://{OUT}/local/result.jsonl")}
    spec["source"]["path"] = f"s3://{BUCKET}/{key}"
    summary = run_flow(spec, state_dir=str(env / "local-state"), persist=False)
    assert summary.ok, summary.error
    assert read_jsonl(s3, OUT, "local/result.jsonl") == via_lambda == ROWS


def test_s3_unrouted_object_and_other_event_names(env: Path, s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="elsewhere/x.csv", Body=_csv(ROWS[:1]))
    with pytest.raises(s3_handler.S3RunError, match="no flow is routed"):
        s3_handler.handler(s3_event("elsewhere/x.csv", etag="e2"), Context())
    ev = s3_event("incoming/x.csv", etag="e3")
    ev["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    assert s3_handler.handler(ev, Context())["results"][0]["skipped"] == "ObjectRemoved:Delete"
    assert steps.TALLY == []


def test_duplicate_s3_delivery_does_not_run_twice(env: Path, s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADF_IDEMPOTENCY_TABLE", TABLE)
    key = "incoming/dup.csv"
    s3.put_object(Bucket=BUCKET, Key=key, Body=_csv(ROWS[:3]))
    ev = s3_event(key, etag="dup-etag", version="v1")
    first = s3_handler.handler(copy.deepcopy(ev), Context())
    assert len(steps.TALLY) == 3
    again = s3_handler.handler(copy.deepcopy(ev), Context())  # S3 redelivers the same notification
    assert len(steps.TALLY) == 3, "the flow ran twice"
    assert again["results"][0]["run_id"] == first["results"][0]["run_id"]
    # a new version of the object is a new event: it runs
    s3_handler.handler(s3_event(key, etag="other-etag", version="v2"), Context())
    assert len(steps.TALLY) == 6


# --------------------------------------------------------------------------- SQS


def sqs_batch(*bodies: tuple[str, str, dict[str, Any] | None]) -> dict[str, Any]:
    template = event("sqs-receive-message")["Records"][0]
    records = []
    for message_id, body, attributes in bodies:
        r = copy.deepcopy(template)
        r["messageId"], r["body"] = message_id, body
        r["messageAttributes"] = attributes or {}
        records.append(r)
    return {"Records": records}


def test_sqs_partial_batch_reports_exactly_the_malformed_and_failing_messages(env: Path) -> None:
    batch = sqs_batch(
        ("ok-1", json.dumps({"flow": "ingest", "records": [{"n": 1}, {"n": 2}]}), None),
        ("bad-json", "Hello from SQS!", None),
        ("fails", json.dumps({"flow": "failing", "records": [{"n": 7}]}), None),
        ("ok-2", json.dumps([{"n": 3}]), {"flow": {"stringValue": "ingest", "stringListValues": [],
                                                    "binaryListValues": [], "dataType": "String"}}),
        ("no-flow", json.dumps([{"n": 4}]), None),
        ("unknown", json.dumps({"flow": "nope", "records": []}), None),
    )
    result = sqs_handler.handler(batch, Context())
    failed = sorted(f["itemIdentifier"] for f in result["batchItemFailures"])
    assert failed == ["bad-json", "fails", "no-flow", "unknown"]
    written = [json.loads(line) for line in (env / "ingest.jsonl").read_text().splitlines()]
    assert sorted(r["n"] for r in written) == [3] or sorted(r["n"] for r in written) == [1, 2, 3]
    assert sorted(r["n"] for r in steps.TALLY) == [1, 2, 3]


def test_sqs_default_flow_from_the_environment(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADF_DEFAULT_FLOW", "ingest")
    result = sqs_handler.handler(sqs_batch(("m1", json.dumps([{"n": 9}]), None)), Context())
    assert result == {"batchItemFailures": []}
    assert [r["n"] for r in steps.TALLY] == [9]


def test_duplicate_sqs_delivery_does_not_run_twice(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADF_IDEMPOTENCY_TABLE", TABLE)
    body = json.dumps({"flow": "ingest", "records": [{"n": 41}, {"n": 42}]})
    assert sqs_handler.handler(sqs_batch(("first-id", body, None)), Context()) == {"batchItemFailures": []}
    # redelivered (visibility timeout) and re-sent by the producer with a new message id
    assert sqs_handler.handler(sqs_batch(("first-id", body, None)), Context()) == {"batchItemFailures": []}
    assert sqs_handler.handler(sqs_batch(("second-id", body, None)), Context()) == {"batchItemFailures": []}
    assert [r["n"] for r in steps.TALLY] == [41, 42]
    # a failed run leaves no idempotency record: its redelivery runs (and fails) again
    bad = json.dumps({"flow": "failing", "records": [{"n": 14}]})
    for _ in range(2):
        result = sqs_handler.handler(sqs_batch(("bad", bad, None)), Context())
        assert result["batchItemFailures"] == [{"itemIdentifier": "bad"}]
