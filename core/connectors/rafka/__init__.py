"""Rafka: a Kafka-like log over Redis streams — client API, ``rafka`` source and ``rafka`` sink.

Layout in Redis (any Redis ≥ 6.2; 7.0+ reports consumer lag itself):

* topic ``T`` with ``N`` partitions is ``N`` streams ``rafka:T:0`` … ``rafka:T:<N-1>``;
* its metadata is the hash ``rafka:T:meta``: ``partitions``, ``created_at`` (epoch ms) and the
  retention, ``retention_maxlen`` or ``retention_minid_ms`` (absent = keep everything);
* an entry has the fields ``v`` (the value as JSON), ``k`` (the key, when there is one) and
  ``h`` (headers as a JSON object, when there are some); its stream id is its offset;
* a consumer group ``G`` is the Redis consumer group ``G`` on every partition stream; what a
  consumer read and has not acknowledged (``XACK``) stays in the group's pending list.

Client API (redis-py is imported when a client is created; ``pip install 'active-data-flow[redis]'``,
which also installs hiredis, used by redis-py automatically)::

    admin = Admin("redis://127.0.0.1:6379")
    admin.create_topic("orders", partitions=4, retention_maxlen=1_000_000)
    with Producer("redis://127.0.0.1:6379") as producer:
        producer.send("orders", {"id": 1, "total": 9.5}, key="customer-7")
    consumer = Consumer("redis://127.0.0.1:6379", "orders", "billing", "billing-1")
    records = consumer.poll(500)
    ...  # process them
    consumer.commit(records)

``rafka`` source
    ``{type: rafka, url: redis://…, topic: T, group: G, bounded: false, start: earliest}`` — one
    :class:`RafkaSplit` per partition (split id ``T:<p>``); partition ``p`` is read by reader
    ``p % parallelism``, whose consumer name is ``<consumer>-r<reader_id>`` (``consumer``
    defaults to the flow name), so a restarted reader finds its own pending entries again.
    Entries are acknowledged in :meth:`RafkaSourceReader.notify_checkpoint_complete`, after
    the sink wrote them and the engine checkpointed: at-least-once. See docs/RAFKA.md.

``rafka`` sink
    ``{type: rafka, url: redis://…, topic: T, key: customer_id, partitions: 4}`` — one pipeline
    of ``XADD`` per batch, partition from the ``key`` field's value; creates the topic when it
    does not exist and ``partitions`` is given.

The modules: ``client`` (keys, errors, the connection: what every client shares), ``admin``
(:class:`Admin`), ``producer`` (:class:`Producer`), ``consumer`` (:class:`Consumer` and entry
decoding) talk to Redis and know nothing of the engine; ``source`` and ``sink`` are the
connectors built on them, ``checks`` their shared attribute checks. The names in ``__all__``
are importable from ``active_data_flow.connectors.rafka`` itself; each module is imported when one of
its names is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from active_data_flow.connectors.rafka.admin import Admin
    from active_data_flow.connectors.rafka.client import (
        DEFAULT_URL,
        URL_ENV,
        RafkaError,
        TopicExistsError,
        TopicMeta,
        UnknownTopicError,
        connect,
        default_url,
        meta_key,
        parse_id,
        partition_for,
        stream_key,
    )
    from active_data_flow.connectors.rafka.consumer import Consumer, ConsumerRecord
    from active_data_flow.connectors.rafka.producer import Producer, RecordMetadata
    from active_data_flow.connectors.rafka.sink import RafkaSink
    from active_data_flow.connectors.rafka.source import (
        RafkaSource,
        RafkaSourceReader,
        RafkaSplit,
        RafkaSplitEnumerator,
    )

__all__ = [
    "DEFAULT_URL",
    "URL_ENV",
    "Admin",
    "Consumer",
    "ConsumerRecord",
    "Producer",
    "RafkaError",
    "RafkaSink",
    "RafkaSource",
    "RafkaSourceReader",
    "RafkaSplit",
    "RafkaSplitEnumerator",
    "RecordMetadata",
    "TopicExistsError",
    "TopicMeta",
    "UnknownTopicError",
    "connect",
    "default_url",
    "meta_key",
    "parse_id",
    "partition_for",
    "stream_key",
]


def __getattr__(name: str) -> Any:
    # A name's module is imported when the name is first asked for. A Spin component's build
    # imports every package it walks, this one included, and leaves the Rafka modules out (they
    # need sockets): there, asking for a name fails as a module that is not part of the build.
    if name == "Admin":
        from active_data_flow.connectors.rafka import admin

        return admin.Admin
    if name in ("Consumer", "ConsumerRecord"):
        from active_data_flow.connectors.rafka import consumer

        return getattr(consumer, name)
    if name in ("Producer", "RecordMetadata"):
        from active_data_flow.connectors.rafka import producer

        return getattr(producer, name)
    if name in ("RafkaSource", "RafkaSourceReader", "RafkaSplit", "RafkaSplitEnumerator"):
        from active_data_flow.connectors.rafka import source

        return getattr(source, name)
    if name == "RafkaSink":
        from active_data_flow.connectors.rafka import sink

        return sink.RafkaSink
    if name in __all__:
        from active_data_flow.connectors.rafka import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
