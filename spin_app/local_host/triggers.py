"""The trigger entry points of the local host's command line: serving HTTP until stopped,
and delivering Redis and MQTT messages from real servers to a component (:class:`MqttBridge`
does for MQTT what the spin-trigger-mqtt plugin does)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from active_data_flow.spin_app.local_host.component import ComponentHost, GuestError
from active_data_flow.spin_app.local_host.http_server import HttpHost

__all__ = ["MqttBridge", "report", "serve_http", "serve_mqtt", "serve_redis"]


def report(kind: str, fn: Callable[[], None]) -> bool:
    """Run ``fn`` (one event) and print its outcome as a JSON line; True when it succeeded."""
    t0 = time.perf_counter()
    try:
        fn()
    except GuestError as exc:
        print(json.dumps({"event": kind, "ok": False, "error": str(exc), "ms": round((time.perf_counter() - t0) * 1000, 2)}), flush=True)
        return False
    print(json.dumps({"event": kind, "ok": True, "ms": round((time.perf_counter() - t0) * 1000, 2)}), flush=True)
    return True


def serve_http(http: HttpHost) -> int:
    """Serve until SIGTERM or Ctrl-C, printing the host's log lines as they come."""
    http.output = _Echo()
    http.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        http.stop()
    return 0


class _Echo(list):  # type: ignore[type-arg]
    """The host's output list, printed as it grows (``serve`` on the command line)."""

    def append(self, line: str) -> None:
        print(line, flush=True)


def serve_redis(host: ComponentHost, address: str, channel: str, count: int | None) -> int:
    """Deliver every message of a Redis channel (``count`` of them, or until stopped)."""
    import redis

    pubsub = redis.Redis.from_url(address).pubsub()
    pubsub.subscribe(channel)
    print(json.dumps({"event": "subscribed", "channel": channel, "address": address}), flush=True)
    n = 0
    for message in pubsub.listen():  # type: ignore[no-untyped-call]
        if message.get("type") != "message":
            continue
        data = message["data"]
        body = data if isinstance(data, bytes) else str(data).encode()

        def deliver(body: bytes = body) -> Any:
            return host.redis(body)

        report("redis", deliver)
        n += 1
        if count is not None and n >= count:
            break
    pubsub.close()
    return 0


def serve_mqtt(host: ComponentHost, address: str, topic: str, qos: int, count: int | None) -> int:
    """Deliver every message on an MQTT topic filter (``count`` of them, or until stopped)."""
    bridge = MqttBridge(host, address, topic, qos=qos)
    bridge.start()
    print(json.dumps({"event": "subscribed", "topic": topic, "address": address}), flush=True)
    try:
        while count is None or bridge.delivered < count:
            time.sleep(0.1)
    finally:
        bridge.stop()
    return 0


class MqttBridge:
    """Subscribes to a real MQTT broker (paho-mqtt) and delivers each message to the component,
    as the spin-trigger-mqtt plugin does. Messages are delivered one at a time, in order."""

    def __init__(self, host: ComponentHost, address: str, topic: str, *, qos: int = 1,
                 on_result: Callable[[str, bytes, GuestError | None], None] | None = None) -> None:
        import queue as _queue

        self.host = host
        self.address = address
        self.topic = topic
        self.qos = qos
        self.delivered = 0
        self.on_result = on_result
        self._queue: _queue.Queue[tuple[str, bytes] | None] = _queue.Queue()
        self._subscribed = threading.Event()
        self._client: Any = None
        self._worker: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> MqttBridge:
        from urllib.parse import urlparse

        import paho.mqtt.client as mqtt

        url = urlparse(self.address if "://" in self.address else f"mqtt://{self.address}")
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
                             client_id=f"adf-spin-host-{os.getpid()}-{id(self)}")
        if url.username:
            client.username_pw_set(url.username, url.password)

        def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
            c.subscribe(self.topic, qos=self.qos)

        def on_subscribe(c: Any, userdata: Any, mid: Any, reasons: Any, props: Any = None) -> None:
            self._subscribed.set()

        def on_message(c: Any, userdata: Any, msg: Any) -> None:
            self._queue.put((msg.topic, bytes(msg.payload)))

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.connect(url.hostname or "127.0.0.1", url.port or 1883, keepalive=30)
        client.loop_start()
        self._client = client
        self._worker = threading.Thread(target=self._deliver, name="spin-mqtt-bridge", daemon=True)
        self._worker.start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise RuntimeError(f"could not subscribe to {self.topic!r} on {self.address}")
        return self

    def _deliver(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            topic, payload = item
            error: GuestError | None = None
            try:
                self.host.mqtt(payload, topic)
            except GuestError as exc:
                error = exc
            self.delivered += 1
            print(json.dumps({"event": "mqtt", "topic": topic, "ok": error is None,
                              **({"error": str(error)} if error else {})}), flush=True)
            if self.on_result is not None:
                self.on_result(topic, payload, error)

    def stop(self) -> None:
        if self._client is not None:
            self._client.loop_stop()
            with contextlib.suppress(Exception):
                self._client.disconnect()
            self._client = None
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout=30)
            self._worker = None

