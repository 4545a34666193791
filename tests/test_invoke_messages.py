"""active_data_flow.handlers.invoke.handle_message: routing (MQTT wildcards, Redis patterns), payloads, results
published to the response channel — once through the real Redis on 127.0.0.1:6379."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from active_data_flow.handlers.invoke import (
    LocalHost,
    default_reply_channel,
    handle_message,
    mqtt_topic_matches,
    parse_routes,
    route_for,
)

SPECS: dict[str, dict[str, Any]] = {
    "echo": {
        "source": {"type": "payload"},
        "params": {"below": {"type": "integer", "default": 100}},
        "steps": [{"type": "python", "function": "flowlib.steps:double"},
                  {"type": "filter", "field": "n", "op": "lt", "value": "${params.below}"}],
        "sink": {"type": "response"},
    },
    "sensors": {"source": {"type": "payload"}, "sink": {"type": "response"}},
    "kitchen": {"source": {"type": "payload"}, "sink": {"type": "response"}},
    "failing": {
        "source": {"type": "payload"},
        "steps": [{"type": "python", "function": "flowlib.steps:batch_upper", "batch": True}],
        "sink": {"type": "response"},
        "runtime": {"max_dead_letters": 0},
    },
}


class Publisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, channel: str, message: bytes) -> None:
        self.sent.append((channel, json.loads(message)))


def make_host(**kw: Any) -> tuple[LocalHost, Publisher]:
    publisher = Publisher()
    return LocalHost(SPECS, persist=False, environ={}, publisher=publisher, **kw), publisher


@pytest.mark.parametrize(
    ("pattern", "topic", "hit"),
    [
        ("home/+/temp", "home/kitchen/temp", True),
        ("home/+/temp", "home/kitchen/hall/temp", False),
        ("home/#", "home/kitchen/temp", True),
        ("home/#", "home", True),
        ("#", "anything/at/all", True),
        ("+/+", "a/b", True),
        ("+/+", "a/b/c", False),
        ("home/kitchen", "home/kitchen", True),
        ("home/kitchen", "home/kitchen/temp", False),
        ("#", "$SYS/broker/load", False),
        ("+/broker/load", "$SYS/broker/load", False),
        ("home/+", "home/", True),
    ],
)
def test_mqtt_topic_filters(pattern: str, topic: str, hit: bool) -> None:
    assert mqtt_topic_matches(pattern, topic) is hit


def test_routing_prefers_exact_then_the_most_specific_pattern() -> None:
    routes = {"home/#": "sensors", "home/+/temp": "kitchen", "home/kitchen/temp": "echo", "#": "failing"}
    assert route_for("mqtt", "home/kitchen/temp", routes) == "echo"
    assert route_for("mqtt", "home/hall/temp", routes) == "kitchen"
    assert route_for("mqtt", "home/hall/humidity", routes) == "sensors"
    assert route_for("mqtt", "garden/x", routes) == "failing"
    assert route_for("mqtt", "garden/x", {"home/#": "sensors"}) is None
    redis_routes = {"orders": "echo", "orders.*": "sensors", "*": "failing"}
    assert route_for("redis", "orders", redis_routes) == "echo"
    assert route_for("redis", "orders.eu", redis_routes) == "sensors"
    assert route_for("redis", "other", redis_routes) == "failing"
    assert route_for("redis", "home/+/temp", {"home/+/temp": "kitchen"}) == "kitchen"  # exact names only for +
    assert route_for("redis", "home/x/temp", {"home/+/temp": "kitchen"}) is None


def test_parse_routes() -> None:
    assert parse_routes('{"a": "f1", "b/#": "f2"}') == {"a": "f1", "b/#": "f2"}
    assert parse_routes("a=f1, b/# = f2\nc=f3") == {"a": "f1", "b/#": "f2", "c": "f3"}
    with pytest.raises(ValueError, match="pattern=flow"):
        parse_routes("a=f1,oops")


def test_a_message_runs_the_routed_flow_and_publishes_the_result() -> None:
    host, publisher = make_host()
    body = json.dumps({"records": [{"n": 2}, "bad", {"n": 30}], "params": {"below": 10}}).encode()
    result = handle_message(host, "redis", "jobs", body, routes={"jobs": "echo"})
    assert result["status"] == "partial" and result["flow"] == "echo"
    assert result["records"] == [{"n": 2, "doubled": 4}] and result["filtered"] == 1
    assert result["dead_letters"] == 1 and result["dead_letter_sample"][0]["record"] == "bad"
    assert (result["published"], result["reply_to"], result["trigger"]) == (True, "jobs:results", "redis")
    [(channel, message)] = publisher.sent
    assert channel == "jobs:results"
    assert message["records"] == [{"n": 2, "doubled": 4}] and message["run_id"] == result["run_id"]
    assert "published" not in message and "backtrace" not in message


def test_mqtt_wildcard_routes_a_bare_array_and_reply_to_is_honoured() -> None:
    host, publisher = make_host()
    routes = {"home/+/temp": "kitchen", "home/#": "sensors"}
    result = handle_message(host, "mqtt", "home/kitchen/temp", b'[{"c": 21.5}]', routes=routes)
    assert result["flow"] == "kitchen" and result["records"] == [{"c": 21.5}]
    assert publisher.sent[-1][0] == "home/kitchen/temp/results" == default_reply_channel("mqtt", "home/kitchen/temp")
    result = handle_message(host, "mqtt", "home/door", b'{"records": [{"open": true}], "reply_to": "audit"}', routes=routes)
    assert result["flow"] == "sensors" and publisher.sent[-1][0] == "audit"
    result = handle_message(host, "mqtt", "home/door", b"[]", routes=routes, reply_channel="adf/out")
    assert result["reply_to"] == "adf/out" and publisher.sent[-1][0] == "adf/out"
    result = handle_message(host, "mqtt", "home/door", b'{"records": [], "reply_to": null}', routes=routes)
    assert result["status"] == "success" and result["published"] is False and len(publisher.sent) == 3


def test_results_channels_are_not_routed_back_through_a_wildcard() -> None:
    host, publisher = make_host()
    result = handle_message(host, "mqtt", "home/kitchen/temp/results", b"{}", routes={"home/#": "sensors"})
    assert result["status"] == "skipped" and publisher.sent == []
    result = handle_message(host, "redis", "jobs:results", b"{}", routes={"*": "sensors"})
    assert result["status"] == "skipped"


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"{not json", "malformed JSON"),
        (b'"a string"', "must be a JSON object"),
        (b'{"records": {"n": 1}}', "'records' must be a JSON array"),
        (b'{"recs": []}', "refused: body key 'recs'"),
        (b'{"params": [1]}', "'params' must be a JSON object"),
        (b'{"reply_to": 5}', "'reply_to' must be a channel name"),
        (b"\xff\xfe\x00", "malformed JSON"),
    ],
)
def test_malformed_payloads_publish_an_error_result_with_an_error_id(payload: bytes, problem: str) -> None:
    host, publisher = make_host()
    result = handle_message(host, "redis", "jobs", payload, routes={"jobs": "echo"})
    assert result["status"] == "error" and result["code"] == 400
    assert problem in result["error"] and len(result["error_id"]) == 12
    [(channel, message)] = publisher.sent
    assert channel == "jobs:results" and message["error_id"] == result["error_id"]


def test_unrouted_unknown_invalid_and_failing_flows_are_reported() -> None:
    host, publisher = make_host()
    result = handle_message(host, "redis", "nowhere", b"[]", routes={"jobs": "echo"})
    assert (result["status"], result["code"]) == ("error", 404) and "no flow is routed" in result["error"]
    result = handle_message(host, "redis", "jobs", b"[]", routes={"jobs": "missing"})
    assert result["code"] == 404 and "echo" in result["flows"]
    result = handle_message(host, "redis", "jobs", b'{"params": {"below": 0.5}}', routes={"jobs": "echo"})
    assert result["code"] == 422 and any("below" in p for p in result["problems"])
    assert [p["name"] for p in result["declared_params"]] == ["below"]
    result = handle_message(host, "redis", "jobs", b'{"config": {"runtime": {"batch_size": 0}}}', routes={"jobs": "echo"})
    assert result["code"] == 400 and result["refused"] == ["body key 'config' (runtime)"]
    result = handle_message(host, "redis", "jobs", b'[{"name": "boom"}]', routes={"jobs": "failing"})
    assert result["status"] == "failed" and result["code"] == 500 and result["error_id"]
    assert "max_dead_letters" in result["error"]
    assert [m["status"] for _, m in publisher.sent] == ["error", "error", "error", "error", "failed"]


def test_publish_errors_are_reported_not_raised() -> None:
    host = LocalHost(SPECS, persist=False, environ={})  # cannot publish at all
    result = handle_message(host, "redis", "jobs", b"[]", routes={"jobs": "echo"})
    assert result["status"] == "success" and result["published"] is False
    assert result["publish_error"].startswith("PublishUnsupported: this host cannot publish")

    def refuse(channel: str, message: bytes) -> None:
        raise ConnectionError("Redis went away: redis://app:hunter2@10.1.1.1:6379")

    host = LocalHost(SPECS, persist=False, environ={}, publisher=refuse)
    result = handle_message(host, "redis", "jobs", b"[]", routes={"jobs": "echo"})
    assert result["published"] is False and "ConnectionError: Redis went away" in result["publish_error"]
    assert "hunter2" not in result["publish_error"]
    unreachable = LocalHost(SPECS, persist=False, environ={}, redis_url="redis://127.0.0.1:1/0")
    result = handle_message(unreachable, "redis", "jobs", b"[]", routes={"jobs": "echo"})
    assert result["status"] == "success" and result["published"] is False
    assert "ConnectionError" in result["publish_error"]


def test_an_unknown_kind_is_an_error_result() -> None:
    host, _ = make_host()
    result = handle_message(host, "kafka", "jobs", b"[]", routes={"jobs": "echo"})
    assert result["status"] == "error" and result["code"] == 500 and result["error_id"]


@pytest.mark.redis
def test_the_result_reaches_the_response_channel_of_the_real_redis(tmp_path: Path) -> None:
    import redis
    client = redis.Redis(host="127.0.0.1", port=6379)
    channel = f"adf-test-{uuid.uuid4().hex[:8]}"
    pubsub = client.pubsub()
    pubsub.subscribe(f"{channel}:results")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # wait for the subscription to be active
        msg = pubsub.get_message(timeout=0.5)
        if msg and msg["type"] == "subscribe":
            break
    host = LocalHost(SPECS, persist=False, environ={}, redis_url="redis://127.0.0.1:6379/0")
    try:
        result = handle_message(host, "redis", channel, b'{"records": [{"n": 21}]}', routes={channel: "echo"})
        assert result["published"] is True, result
        received = None
        while time.monotonic() < deadline + 5:
            msg = pubsub.get_message(timeout=0.5)
            if msg and msg["type"] == "message":
                received = json.loads(msg["data"])
                break
        assert received is not None, "no result on the response channel"
        assert received["records"] == [{"n": 21, "doubled": 42}]
        assert received["run_id"] == result["run_id"] and received["status"] == "success"
    finally:
        host.close()
        pubsub.close()
        client.close()
