"""The ``rafka`` sink: appends every record of a batch to a topic.

``{type: rafka, url: redis://…, topic: T, key: customer_id, partitions: 4}`` — one pipeline
of ``XADD`` per batch, partition from the ``key`` field's value; creates the topic when it
does not exist and ``partitions`` is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from active_data_flow.attributes import Attribute
from active_data_flow.connectors.rafka.admin import Admin
from active_data_flow.connectors.rafka.checks import check_positive, topic_check
from active_data_flow.connectors.rafka.client import UnknownTopicError, default_url, meta_key, redis_module
from active_data_flow.connectors.rafka.producer import Producer
from active_data_flow.errors import ConfigError, RecordValidationError
from active_data_flow.record import Record
from active_data_flow.redact import redact_text
from active_data_flow.sink import Sink

__all__ = ["RafkaSink"]


class RafkaSink(Sink):
    """Appends every record to a Rafka topic (one pipeline per batch), partitioned by ``key``."""

    type_name = "rafka"
    attributes = (
        Attribute("url", str, secret=True, help="redis://host:6379/0; default $ADF_RAFKA_URL or redis://127.0.0.1:6379"),
        Attribute("topic", str, required=True, check=topic_check, help="the topic to write"),
        Attribute("key", str, help="record field whose value is the entry key (partitioning); none = round-robin"),
        Attribute("partitions", int, check=check_positive, help="create the topic with this many partitions when missing"),
        Attribute("maxlen", int, check=check_positive, help="retention of a topic created here: ~entries per partition"),
        Attribute("minid_ms", int, check=check_positive, help="retention of a topic created here: ~milliseconds kept"),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        if self.config["maxlen"] is not None and self.config["minid_ms"] is not None:
            raise ConfigError(f"sink {self.type_name!r}", ["give either 'maxlen' or 'minid_ms', not both"])
        self.topic: str = self.config["topic"]
        self._producer: Producer | None = None

    @property
    def url(self) -> str:
        return str(self.config["url"] or default_url())

    def _ensure_topic(self, client: Any) -> None:
        if client.exists(meta_key(self.topic)):
            return
        partitions = self.config["partitions"]
        if partitions is None:
            raise UnknownTopicError(self.topic)
        Admin(self.url, client=client).create_topic(
            self.topic, partitions, self.config["maxlen"], self.config["minid_ms"], exist_ok=True
        )

    def setup(self) -> None:
        redis_module("the rafka sink")
        with Admin(self.url) as admin:
            self._ensure_topic(admin.client)

    def open(self) -> None:
        if self._producer is None:
            redis_module("the rafka sink")
            producer = Producer(self.url)
            self._ensure_topic(producer.client)
            self._producer = producer

    def _keys(self, records: Sequence[Record]) -> list[str | None] | None:
        name = self.config["key"]
        if name is None:
            return None
        keys: list[str | None] = []
        for record in records:
            value = record.get(name)
            if value is None or isinstance(value, dict | list):
                shown = "missing" if name not in record else "null" if value is None else type(value).__name__
                raise RecordValidationError(name, f"the rafka key field is {shown}; it must be a string or a number")
            keys.append(str(value))
        return keys

    def write_batch(self, records: Sequence[Record]) -> None:
        if not records:
            return
        keys = self._keys(records)
        self.open()
        assert self._producer is not None
        self._producer.send_batch(self.topic, records, keys=keys)

    def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            producer.close()

    def describe(self) -> str:
        return f"rafka {redact_text(self.url)} topic {self.topic}"
