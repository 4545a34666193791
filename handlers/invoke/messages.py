"""Redis and MQTT messages: :func:`handle_message` (routing, running, publishing the result).

Standard library only at module level (this runs inside a Spin component).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from active_data_flow.handlers.invoke.envelope import Envelope
from active_data_flow.handlers.invoke.errors import FlowFailed, NotFound, new_error_id, status_for
from active_data_flow.handlers.invoke.host import FlowHost
from active_data_flow.handlers.invoke.params import RequestParams
from active_data_flow.handlers.invoke.payload import PAYLOAD_KEYS, parse_trigger_payload
from active_data_flow.handlers.invoke.run import invoke_flow
from active_data_flow.redact import redact_text

__all__ = ["KINDS", "default_reply_channel", "handle_message", "mqtt_topic_matches", "parse_routes", "route_for"]


KINDS = ("redis", "mqtt")


def mqtt_topic_matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching: ``+`` is one level, ``#`` (last) the rest, parent included
    (``a/#`` matches ``a``); a wildcard first level does not match ``$SYS``-style topics."""
    p_levels, t_levels = pattern.split("/"), topic.split("/")
    if topic.startswith("$") and p_levels[0] in ("+", "#"):
        return False
    for i, p in enumerate(p_levels):
        if p == "#":
            return i == len(p_levels) - 1
        if i >= len(t_levels):
            return False
        if p != "+" and p != t_levels[i]:
            return False
    return len(p_levels) == len(t_levels)


def _specificity(kind: str, pattern: str) -> tuple[int, int, int]:
    if kind == "mqtt":
        levels = pattern.split("/")
        return (levels.count("#"), levels.count("+"), -len(levels))
    wild = sum(pattern.count(c) for c in "*?[")
    return (1 if wild else 0, wild, -len(pattern))


def route_for(kind: str, channel: str, routes: Mapping[str, str]) -> str | None:
    """The flow ``channel`` routes to: an exact entry first, then the most specific pattern
    (MQTT ``+``/``#`` filters; Redis glob patterns ``*``, ``?``, ``[...]``, as PSUBSCRIBE);
    ties go to the first listed. None when nothing matches."""
    if channel in routes:
        return routes[channel]
    matches = []
    for order, (pattern, flow) in enumerate(routes.items()):
        if kind == "mqtt":
            hit = ("+" in pattern or "#" in pattern) and mqtt_topic_matches(pattern, channel)
        else:
            hit = any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(channel, pattern)
        if hit:
            matches.append((_specificity(kind, pattern), order, flow))
    return min(matches)[2] if matches else None


def parse_routes(text: str | Mapping[str, str]) -> dict[str, str]:
    """Routes from a manifest value: a JSON object ``{"pattern": "flow"}`` or ``pattern=flow``
    items separated by commas or new lines. Raises ``ValueError`` for anything else."""
    if isinstance(text, Mapping):
        return {str(k): str(v) for k, v in text.items()}
    stripped = text.strip()
    if stripped.startswith("{"):
        value = json.loads(stripped)
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError("routes JSON must map channel patterns to flow names")
        return {str(k): v for k, v in value.items()}
    routes: dict[str, str] = {}
    for item in re.split(r"[,\n]", stripped):
        if not item.strip():
            continue
        pattern, sep, flow = item.partition("=")
        if not sep or not pattern.strip() or not flow.strip():
            raise ValueError(f"route {item.strip()!r} is not pattern=flow")
        routes[pattern.strip()] = flow.strip()
    return routes


def default_reply_channel(kind: str, channel: str) -> str:
    """Where results go without ``reply_to``: ``<channel>:results`` (Redis), ``<topic>/results`` (MQTT)."""
    return f"{channel}/results" if kind == "mqtt" else f"{channel}:results"


def _is_results_channel(kind: str, channel: str) -> bool:
    return channel.endswith("/results") if kind == "mqtt" else channel.endswith(":results")


def handle_message(
    host: FlowHost,
    kind: str,
    channel_or_topic: str,
    payload: bytes,
    *,
    routes: Mapping[str, str],
    reply_channel: str | None = None,
) -> dict[str, Any]:
    """Run the flow a Redis channel or MQTT topic routes to and publish the result.

    ``payload``: JSON ``{"records": [...], "params": {...}, "reply_to": "channel"}`` or a bare
    array of records; empty means ``{}``. ``params`` are values of the flow's declared
    parameters; any other key is refused (code 400, see :mod:`active_data_flow.handlers.invoke.params`).
    The result — the same body as the HTTP answer, plus ``trigger``, ``channel``,
    ``reply_to``; on errors ``status: "error"``, ``error``, ``error_id``, ``code`` (the HTTP
    status it would have) and ``problems`` — is published as JSON to ``reply_to`` (``null``:
    not at all), else ``reply_channel`` (the component's configured response channel), else
    :func:`default_reply_channel`, through ``host.publish``, and returned with
    ``published`` (and ``publish_error`` when publishing failed). A message on a results
    channel that no route names exactly is skipped (``status: "skipped"``; no feedback loop
    through a wildcard route). Never raises into the host.
    """
    envelope = Envelope(kind, host)
    result: dict[str, Any] = {"trigger": kind, "channel": channel_or_topic, "request_id": envelope.request_id}
    reply_to: str | None = reply_channel or default_reply_channel(kind, channel_or_topic)
    error: BaseException | None = None
    try:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if channel_or_topic not in routes and _is_results_channel(kind, channel_or_topic):
            result.update(status="skipped", reason="a results channel: not routed (no feedback loop)", published=False)
            envelope.log(logging.INFO, f"{kind} message skipped", result, memory=False)
            return result
        message = parse_trigger_payload(payload, allowed=(*PAYLOAD_KEYS, "reply_to"))
        if message.reply_to_given:
            reply_to = message.reply_to
        flow = route_for(kind, channel_or_topic, routes)
        if flow is None:
            raise NotFound(f"no flow is routed to {kind} {'topic' if kind == 'mqtt' else 'channel'} {channel_or_topic!r}")
        result["flow"] = flow
        invocation = invoke_flow(
            host, flow, params=RequestParams.from_payload(message.params, message.refused), records=message.records,
            request_id=envelope.request_id,
        )
        result.update(invocation.body())
        result["trigger"], result["channel"] = kind, channel_or_topic
        if not invocation.ok:
            error = FlowFailed(invocation)
            result["error_id"] = new_error_id()
            result["code"] = error.status
    except Exception as exc:
        error = exc
        result.update(status="error", code=status_for(exc),
                      **envelope.error(exc, keys=("problems", "flows", "refused", "declared_params")))
    result["reply_to"] = reply_to
    if reply_to:
        try:
            host.publish(reply_to, json.dumps(result, default=str).encode("utf-8"))
            result["published"] = True
        except Exception as exc:
            result["published"] = False
            result["publish_error"] = redact_text(f"{type(exc).__name__}: {exc}")
    else:
        result["published"] = False
    fields: dict[str, Any] = {
        k: result.get(k)
        for k in ("request_id", "trigger", "channel", "flow", "run_id", "status", "records_in", "records_out",
                  "dead_letters", "error_id", "code", "reply_to", "published", "publish_error")
    }
    if isinstance(error, FlowFailed):
        fields.update(error=result.get("error"), error_type=error.invocation.summary.error_type,
                      backtrace=error.invocation.summary.backtrace)
    elif error is not None:
        fields["error"] = result.get("error")
    level = logging.ERROR if error is not None or "publish_error" in result else logging.INFO
    unexpected = error if error is not None and status_for(error) >= 500 and not isinstance(error, FlowFailed) else None
    envelope.log(level, f"{kind} message {result.get('status')}", fields, unexpected)
    return result

