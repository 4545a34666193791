"""Helpers of the Lambda handler tests: the event fixtures and a Lambda context."""

from __future__ import annotations

import base64
import copy
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Before lambda_app is imported: no X-Ray daemon here.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "adf")

EVENTS = Path(__file__).resolve().parent / "events"


def event(name: str) -> dict[str, Any]:
    """A fresh copy of ``tests/events/<name>.json``."""
    data: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return copy.deepcopy(data)


@dataclass
class Context:
    """What the Lambda runtime passes as ``context`` (the attributes Powertools reads)."""

    function_name: str = "adf-test"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:adf-test"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/adf-test"
    log_stream_name: str = "2024/01/01/[$LATEST]abc"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def write_flows(directory: Path, specs: dict[str, dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, spec in specs.items():
        (directory / f"{name}.json").write_text(json.dumps({"name": name, **spec}))
    return directory


# --------------------------------------------------------------------------- events, as the tools print them


def rest_event(method: str, path: str, *, body: Any = None, stage: str = "prod") -> dict[str, Any]:
    """``sam local generate-event apigateway aws-proxy`` for ``method path`` (JSON body, base64 as API Gateway sends it)."""
    ev = event("apigateway-aws-proxy")
    ev["httpMethod"] = ev["requestContext"]["httpMethod"] = method
    ev["path"], ev["requestContext"]["path"], ev["requestContext"]["stage"] = path, f"/{stage}{path}", stage
    ev["queryStringParameters"] = ev["multiValueQueryStringParameters"] = None
    if body is None:
        ev["body"], ev["isBase64Encoded"] = None, False
    else:
        ev["body"], ev["isBase64Encoded"] = base64.b64encode(json.dumps(body).encode()).decode(), True
    return ev


def v2_event(kind: str, method: str, path: str, *, body: Any = None) -> dict[str, Any]:
    """An HTTP API (``kind="http-api"``) or Function URL (``kind="url"``) event for ``method path``."""
    ev = event("apigateway-http-api-proxy" if kind == "http-api" else "lambda-function-url")
    ev["rawPath"] = ev["requestContext"]["http"]["path"] = path
    ev["requestContext"]["http"]["method"] = method
    ev["requestContext"]["stage"] = "$default"
    ev["rawQueryString"], ev["queryStringParameters"] = "", None
    if body is None:
        ev.pop("body", None)
    else:
        ev["body"] = json.dumps(body)
    ev["isBase64Encoded"] = False
    return ev


def sqs_event(messages: list[tuple[str, str]]) -> dict[str, Any]:
    """``sam local generate-event sqs receive-message`` with one record per ``(message id, body)``."""
    ev = event("sqs-receive-message")
    (template,) = ev["Records"]
    ev["Records"] = [copy.deepcopy(template) | {"messageId": mid, "body": body} for mid, body in messages]
    return ev


def s3_put_event(bucket: str, key: str, *, etag: str) -> dict[str, Any]:
    """``sam local generate-event s3 put`` for ``bucket``/``key`` (give the key URL-encoded, as S3 does)."""
    ev = event("s3-put")
    record = ev["Records"][0]["s3"]
    record["bucket"]["name"], record["bucket"]["arn"] = bucket, f"arn:aws:s3:::{bucket}"
    record["object"]["key"], record["object"]["eTag"] = key, etag
    return ev
