"""Queue messages and object-created events: the decisions a queue or storage trigger shares.

Used by the Lambda SQS and S3 handlers (``lambda_app/``); any other queue / object-store
adapter (MinIO webhooks, a Redis list worker) calls the same functions:

* :func:`parse_flow_message` — a message body naming its flow: ``{"flow": name, "records": [...],
  "params": {...}}``, or a bare array of records (or an object without ``flow``) whose flow comes
  from the transport (a message attribute, a default). As for every request, ``params`` are the
  values of the flow's declared parameters and any other key is refused
  (:mod:`active_data_flow.handlers.invoke.params`);
* :func:`object_route` / :func:`object_url` — which flow an object-created event runs
  (``{"bucket/prefix": "flow"}``, the longest matching prefix wins) and the ``s3://`` URL of the
  object (event keys are URL-encoded, ``+`` for a space): the object is the run's input, read by
  the flow's ``file`` source (``object_url`` of :func:`run_event_flow`), as records are a
  ``payload`` source's;
* :func:`run_event_flow` — run it, log one line, raise :class:`FlowFailed` when the run failed (a
  queue must see the failure to redeliver the message: nothing is swallowed).

Standard library only at module level (this runs inside a Spin component).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from active_data_flow.handlers.invoke.envelope import Envelope, summary_fields
from active_data_flow.handlers.invoke.errors import BadRequest, FlowFailed, NotFound
from active_data_flow.handlers.invoke.host import FlowHost
from active_data_flow.handlers.invoke.params import RequestParams
from active_data_flow.handlers.invoke.payload import TriggerPayload, parse_trigger_payload
from active_data_flow.handlers.invoke.run import Invocation, invoke_flow

__all__ = ["object_key", "object_route", "object_url", "parse_flow_message", "run_event_flow"]

_MESSAGE_KEYS = ("flow", "records", "params")


def parse_flow_message(body: bytes | str, *, flow: str | None = None) -> tuple[str, TriggerPayload]:
    """``(flow name, payload)`` of one message. The body's ``flow`` wins over ``flow`` (the
    transport's: a message attribute, a default). Raises :class:`BadRequest` for malformed JSON, a
    body of another shape, or no flow at all."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        value = json.loads(text) if text.strip() else None
    except ValueError as exc:
        raise BadRequest(f"malformed JSON message body: {exc}") from None
    if value is None:
        raise BadRequest("empty message body: send {\"flow\": name, \"records\": [...], \"params\": {...}} or an array")
    named = flow
    if isinstance(value, dict):
        given = value.pop("flow", None)
        if given is not None:
            if not isinstance(given, str) or not given:
                raise BadRequest(f"'flow' must be a flow name (string), got {given!r}")
            named = given
        payload = parse_trigger_payload(json.dumps(value), allowed=_MESSAGE_KEYS[1:])
    else:
        payload = parse_trigger_payload(text, allowed=_MESSAGE_KEYS[1:])
    if not named:
        raise BadRequest("the message names no flow: put \"flow\" in the body, or set the message's 'flow' attribute / a default flow")
    return named, payload


def object_route(routes: Mapping[str, str], bucket: str, key: str, default: str | None = None) -> str:
    """The flow for object ``bucket/key``: the route whose ``bucket/prefix`` is the longest prefix
    of ``bucket/key`` (a route ``bucket`` alone matches the whole bucket), else ``default``.
    Raises :class:`NotFound` when nothing matches."""
    full = f"{bucket}/{key}"
    best: tuple[int, str] | None = None
    for pattern, flow in routes.items():
        prefix = pattern if "/" in pattern else pattern + "/"
        if full.startswith(prefix) and (best is None or len(prefix) > best[0]):
            best = (len(prefix), flow)
    if best is not None:
        return best[1]
    if default:
        return default
    raise NotFound(f"no flow is routed for s3://{full} (routes: {', '.join(sorted(routes)) or 'none'}; no default flow)")


def object_key(key: str) -> str:
    """An S3 event's object key as it is named: notifications URL-encode it (``a+b%3D.csv`` →
    ``a b=.csv``). Routes and URLs use the decoded key."""
    return unquote_plus(key)


def object_url(bucket: str, key: str) -> str:
    """``s3://bucket/key`` with the event's URL-encoded key decoded (:func:`object_key`)."""
    return f"s3://{bucket}/{object_key(key)}"


def run_event_flow(
    host: FlowHost,
    flow: str,
    payload: TriggerPayload,
    *,
    trigger: str,
    object_url: str | None = None,
    request_id: str | None = None,
    fields: Mapping[str, Any] | None = None,
) -> Invocation:
    """Run ``flow`` with the payload's records and parameters (keys the payload may not set
    refuse it: :class:`~active_data_flow.handlers.invoke.params.RefusedRequest`), and, for an object-created
    event, ``object_url`` (:func:`object_url`) as the path its ``file`` source reads.
    Logs one line (``trigger``, ``flow``, counts, ``duration_ms``). Raises :class:`FlowFailed`
    for a failed run, and what :func:`active_data_flow.handlers.invoke.prepare_flow` raises."""
    envelope = Envelope(trigger, host, request_id)
    params = RequestParams.from_payload(payload.params, payload.refused)
    base = {"flow": flow, **(fields or {})}
    try:
        invocation = invoke_flow(host, flow, params=params, records=payload.records, object_url=object_url,
                                 request_id=envelope.request_id)
    except Exception as exc:
        envelope.log(logging.WARNING, f"{trigger} event refused", {**base, "error": str(exc)}, memory=False)
        raise
    line = {**base, **summary_fields(invocation)}
    if not invocation.ok:
        envelope.log(logging.ERROR, f"{trigger} event: flow failed", line)
        raise FlowFailed(invocation)
    envelope.log(logging.INFO, f"{trigger} event: flow ran", line)
    return invocation
