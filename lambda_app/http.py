"""API Gateway (REST v1, HTTP API v2) and Function URL events → :func:`active_data_flow.handlers.invoke.handle_http`.

Routes, bodies, status codes: :mod:`active_data_flow.handlers.invoke.http` (``GET /flows``, ``GET /flows/{name}``,
``GET|POST /flows/{name}/run``). This module only translates:

* the event → :class:`active_data_flow.handlers.http.Request`: method, path (REST: ``path``; HTTP API / Function
  URL: ``rawPath``; a leading ``/<stage>`` is stripped, then ``ADF_BASE_PATH`` — a custom
  domain's base path mapping), headers (multi-value headers joined with ``", "``), query
  (single values; repeated keys: the last one), body (base64-decoded when ``isBase64Encoded``),
  source IP; the API Gateway request id becomes ``X-Request-Id`` unless the client sent one;
* the :class:`~active_data_flow.handlers.http.Response` → ``{statusCode, headers, body, isBase64Encoded: false}``;
  a streaming (NDJSON) answer is produced whole (Lambda buffers responses).

A body longer than ``ADF_MAX_BODY_BYTES`` (:func:`active_data_flow.handlers.settings.max_body_bytes`; decoded
length, a base64 body's told from its encoded length before decoding) → 413, nothing parsed.
An event that is not an HTTP event → 400 with a message. What a request may set at all:
:mod:`active_data_flow.handlers.invoke.params`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from aws_lambda_powertools.utilities.data_classes import (
    APIGatewayProxyEvent,
    APIGatewayProxyEventV2,
    LambdaFunctionUrlEvent,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from active_data_flow.handlers.http import JSON_HEADERS, Request, Response
from active_data_flow.handlers.invoke import PayloadTooLarge, StreamingResponse, handle_http, refuse_http
from active_data_flow.handlers.settings import max_body_bytes
from active_data_flow.lambda_app.host import count_http, get_host, logger, metrics, tracer

__all__ = ["handler", "to_request", "to_result"]


class NotHttpEvent(ValueError):
    """The event is not an API Gateway / Function URL event."""


def _strip_stage(path: str, stage: str | None) -> str:
    if stage and stage != "$default" and (path == f"/{stage}" or path.startswith(f"/{stage}/")):
        return path[len(stage) + 1 :] or "/"
    return path


def _body(raw: str | None, encoded: bool | None, limit: int | None = None) -> bytes:
    """The body's bytes; raises :class:`~active_data_flow.handlers.invoke.PayloadTooLarge` past ``limit``
    (before decoding whenever the length already tells)."""
    if raw is None:
        return b""
    if not encoded:
        if limit is not None and len(raw) > limit:  # a character is at least one UTF-8 byte
            raise PayloadTooLarge(limit, len(raw.encode("utf-8")))
        data = raw.encode("utf-8")
    else:
        if limit is not None:
            decoded = len(raw) // 4 * 3 - (len(raw) - len(raw.rstrip("=")))
            if decoded > limit:
                raise PayloadTooLarge(limit, decoded)
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise NotHttpEvent(f"the body is marked isBase64Encoded but is not base64: {exc}") from None
    if limit is not None and len(data) > limit:
        raise PayloadTooLarge(limit, len(data))
    return data


def to_request(event: dict[str, Any], *, limit: int | None = None) -> tuple[Request, str | None]:
    """``(request, API Gateway request id)`` of an HTTP event; raises :class:`NotHttpEvent`, and
    :class:`~active_data_flow.handlers.invoke.PayloadTooLarge` for a body longer than ``limit`` bytes."""
    request, request_id, raw, encoded = _parts(event)
    request.body = _body(raw, encoded, limit)
    return request, request_id


def _parts(event: dict[str, Any]) -> tuple[Request, str | None, str | None, bool]:
    """The request without its body, the request id, the raw body and whether it is base64."""
    if not isinstance(event, dict):
        raise NotHttpEvent(f"expected an API Gateway / Function URL event (a JSON object), got {type(event).__name__}")
    if event.get("version") == "2.0" and isinstance(event.get("requestContext"), dict) and "http" in event["requestContext"]:
        v2: APIGatewayProxyEventV2 = (
            LambdaFunctionUrlEvent(event) if ".lambda-url." in str(event["requestContext"].get("domainName", ""))
            else APIGatewayProxyEventV2(event)
        )
        ctx2 = v2.request_context
        headers = dict(v2.headers or {})
        if v2.cookies and "cookie" not in {k.lower() for k in headers}:
            headers["cookie"] = "; ".join(v2.cookies)
        path = _strip_stage(v2.raw_path or ctx2.http.path or "/", ctx2.stage)
        request = Request(
            ctx2.http.method, path, headers, dict(v2.query_string_parameters or {}), b"",
            ctx2.http.source_ip.split("/")[0] or None,
        )
        return request, ctx2.request_id, v2.body, bool(v2.is_base64_encoded)
    if "httpMethod" in event and isinstance(event.get("requestContext"), dict):
        v1 = APIGatewayProxyEvent(event)
        ctx1 = v1.request_context
        headers = {k: ", ".join(v) for k, v in (v1.multi_value_headers or {}).items() if v}
        headers.update(v1.headers or {})
        query = {k: v[-1] for k, v in (v1.multi_value_query_string_parameters or {}).items() if v}
        query.update(v1.query_string_parameters or {})
        request = Request(
            v1.http_method, _strip_stage(v1.path or "/", ctx1.stage), headers, query, b"", ctx1.identity.source_ip,
        )
        return request, ctx1.request_id, v1.body, bool(v1.is_base64_encoded)
    raise NotHttpEvent(
        "not an HTTP event: expected an API Gateway REST (httpMethod), HTTP API or Function URL (version 2.0) event"
    )


def to_result(response: Response | StreamingResponse) -> dict[str, Any]:
    """The API Gateway / Function URL result of a handler answer."""
    if isinstance(response, StreamingResponse):
        chunks: list[bytes] = []
        response.write_to(chunks.append)
        status, headers, body = response.status, dict(response.headers), b"".join(chunks)
    else:
        status, headers, body = response.status, dict(response.headers), response.encoded()
    return {"statusCode": status, "headers": headers, "body": body.decode("utf-8"), "isBase64Encoded": False}


def _bad_event(message: str) -> dict[str, Any]:
    body = json.dumps({"error": message}).encode()
    return {"statusCode": 400, "headers": dict(JSON_HEADERS), "body": body.decode(), "isBase64Encoded": False}


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(raise_on_empty_metrics=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point (API Gateway REST / HTTP API / Function URL)."""
    too_large: PayloadTooLarge | None = None
    try:
        request, request_id, raw, encoded = _parts(event)
        try:
            request.body = _body(raw, encoded, max_body_bytes())
        except PayloadTooLarge as exc:  # answered below like any refused request: nothing parsed
            too_large = exc
    except NotHttpEvent as exc:
        logger.warning("not an HTTP event", extra={"error": str(exc)})
        metrics.add_metric(name="BadEvents", unit="Count", value=1)
        return _bad_event(str(exc))
    if request_id:
        logger.set_correlation_id(request_id)
        request.headers.setdefault("x-request-id", request_id)
    base_path = os.environ.get("ADF_BASE_PATH", "")
    if too_large is not None:
        response = refuse_http(request, get_host(), too_large, base_path=base_path)
    else:
        response = handle_http(request, get_host(), base_path=base_path)
    result = to_result(response)
    count_http(result["statusCode"], run=request.method in ("GET", "POST") and request.path.rstrip("/").endswith("/run"))
    return result
