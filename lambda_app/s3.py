"""S3 ``ObjectCreated:*`` → run the flow routed for the object, on that object.

The flow: ``ADF_S3_ROUTES`` (JSON ``{"bucket/prefix": "flow", "bucket": "flow"}``, or key prefixes
of ``ADF_S3_ROUTES_BUCKET`` when that is set: :func:`routes`; the longest matching prefix of the
URL-decoded key wins), else ``ADF_DEFAULT_FLOW`` (:func:`active_data_flow.handlers.invoke.events.object_route`).
The object is the run's input: its ``s3://bucket/key`` URL (key URL-decoded) becomes the
``source.path`` of the flow's ``file`` source (:func:`active_data_flow.handlers.invoke.events.run_event_flow`), so
it reads exactly the new object (its format from the spec or the extension); a flow with another
source refuses the event. Nothing else of the event configures the run.

Other event names are skipped. A failed run raises after every record was tried (Lambda's
asynchronous retries / the on-failure destination see it); with ``ADF_IDEMPOTENCY_TABLE`` set
a redelivered event (same bucket, key, versionId, eTag) does not run the flow again, and the
records that already succeeded are not run again by a retry either.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.typing import LambdaContext

from active_data_flow.handlers.invoke.errors import FlowFailed
from active_data_flow.handlers.invoke.events import object_key, object_route, object_url, run_event_flow
from active_data_flow.handlers.invoke.payload import TriggerPayload
from active_data_flow.lambda_app.host import count_run, get_host, logger, metrics, tracer
from active_data_flow.lambda_app.idempotency import once

__all__ = ["S3RunError", "handler", "routes"]


class S3RunError(RuntimeError):
    """At least one object's flow failed (the message lists them)."""


def routes() -> dict[str, str]:
    """``ADF_S3_ROUTES`` parsed, as ``{"bucket/prefix": "flow"}``; raises ``ValueError`` when it
    is not a JSON object of strings.

    With ``ADF_S3_ROUTES_BUCKET`` set (the SAM template sets it to its input bucket) the routes
    are key prefixes of that bucket — ``{"incoming/orders/": "orders"}`` — as the template's
    ``S3Routes`` parameter takes them (a route that already starts with the bucket's name is
    taken as it is); without it, each route names its bucket."""
    raw = os.environ.get("ADF_S3_ROUTES") or ""
    if not raw.strip():
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError('ADF_S3_ROUTES must be a JSON object {"bucket/prefix": "flow"}')
    bucket = (os.environ.get("ADF_S3_ROUTES_BUCKET") or "").strip().strip("/")
    if not bucket:
        return {str(k): v for k, v in value.items()}
    out: dict[str, str] = {}
    for key, flow in value.items():
        prefix = str(key).lstrip("/")
        if prefix and prefix != bucket and not prefix.startswith(bucket + "/"):
            prefix = f"{bucket}/{prefix}"
        out[prefix or bucket] = flow
    return out


def _run_object(bucket: str, key: str, request_id: str) -> dict[str, Any]:
    flow = object_route(routes(), bucket, object_key(key), os.environ.get("ADF_DEFAULT_FLOW"))
    url = object_url(bucket, key)
    try:
        invocation = run_event_flow(get_host(), flow, TriggerPayload(), trigger="s3",
                                    object_url=url, request_id=request_id, fields={"object": url})
    except FlowFailed as exc:
        count_run(exc.invocation, ok=False)
        raise
    count_run(invocation, ok=True)
    s = invocation.summary
    return {"flow": flow, "object": url, "run_id": s.run_id, "status": s.status, "records_in": s.records_in,
            "records_out": s.records_out, "dead_letters": s.dead_letters}


def _runner(bucket: str, key: str, request_id: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda _key: _run_object(bucket, key, request_id)


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(raise_on_empty_metrics=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point (S3 event notification)."""
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    for record in S3Event(event).records:
        name = record.event_name
        bucket, obj = record.s3.bucket.name, record.s3.get_object
        if not name.startswith("ObjectCreated"):
            logger.info("event skipped", extra={"event_name": name, "bucket": bucket, "key": obj.key})
            results.append({"object": object_url(bucket, obj.key), "skipped": name})
            continue
        request_id = str(record.response_elements.get("x-amz-request-id") or getattr(context, "aws_request_id", ""))
        logger.set_correlation_id(request_id or None)
        key = {"trigger": "s3", "bucket": bucket, "key": obj.key, "version_id": obj.version_id, "etag": obj.etag}
        try:
            results.append(once(_runner(bucket, obj.key, request_id), key, context))
        except Exception as exc:
            logger.exception("object failed", extra={"bucket": bucket, "key": obj.key})
            errors.append(f"s3://{bucket}/{obj.key}: {type(exc).__name__}: {exc}")
    if errors:
        raise S3RunError("; ".join(errors))
    return {"results": results}
