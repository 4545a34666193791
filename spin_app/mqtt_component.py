"""The MQTT component (spin-trigger-mqtt, ``handle-message``): a message → the flow its topic
is routed to (``adf_routes`` / the bundle; MQTT ``+``/``#`` filters).

The result is published on MQTT — outbound ``fermyon:spin/mqtt`` to the broker at
``adf_mqtt_address`` (``adf_mqtt_username`` / ``adf_mqtt_password``), QoS 1 — on the topic
``adf_mqtt_response_topic`` (``{topic}`` in it is the request's topic; default
``<topic>/results``; a message's ``reply_to`` wins). With ``adf_mqtt_response_via=redis`` it
goes to the Redis channel of that name instead (outbound Redis, ``adf_redis_address``).
"""

from __future__ import annotations

import mqtt_world
from mqtt_world.imports import spin_mqtt_types
from mqtt_world.types import Err

from active_data_flow.handlers.invoke import handle_message
from active_data_flow.spin_app import runtime


class MqttWorld(mqtt_world.MqttWorld):  # type: ignore[misc]
    def handle_message(self, message: bytes, metadata: spin_mqtt_types.Metadata) -> None:
        host = runtime.host("mqtt")
        topic = metadata.topic
        result = handle_message(host, "mqtt", topic, bytes(message), routes=host.routes(),
                                reply_channel=runtime.mqtt_response_topic(topic))
        if result.get("status") == "error" and result.get("code", 500) >= 500:
            raise Err(spin_mqtt_types.Error_Other(f"{result.get('error')} (error_id {result.get('error_id')})"))
