"""The MQTT component (spin-trigger-mqtt, ``handle-message``): a message → the flow its topic
is routed to (``adf_routes`` / the bundle; MQTT ``+``/``#`` filters), result published with
outbound Redis when ``adf_redis_address`` is set."""

from __future__ import annotations

import mqtt_world
from mqtt_world.imports import spin_mqtt_types
from mqtt_world.types import Err

from handlers.invoke import handle_message
from spin_app import runtime


class MqttWorld(mqtt_world.MqttWorld):
    def handle_message(self, message: bytes, metadata: spin_mqtt_types.Metadata) -> None:
        host = runtime.host("mqtt")
        result = handle_message(host, "mqtt", metadata.topic, bytes(message), routes=host.routes())
        if result.get("status") == "error" and result.get("code", 500) >= 500:
            raise Err(spin_mqtt_types.Error_Other(f"{result.get('error')} (error_id {result.get('error_id')})"))
