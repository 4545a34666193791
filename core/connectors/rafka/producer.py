"""Sending entries to Rafka topics (:class:`Producer`): partition choice, buffering, retention trimming."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from active_data_flow.codec import codec
from active_data_flow.connectors.rafka.client import (
    ClientOwner,
    RafkaError,
    TopicMeta,
    UnknownTopicError,
    as_text,
    check_topic_name,
    execute_many,
    partition_for,
    read_meta,
    server_ms,
    stream_key,
)

__all__ = ["Producer", "RecordMetadata"]


class RecordMetadata(NamedTuple):
    """Where a sent entry went: its topic, partition and id (its offset)."""

    topic: str
    partition: int
    id: str


class Producer(ClientOwner):
    """Sends entries to topics.

    :meth:`send` buffers an entry (choosing its partition at once) and writes the buffer when
    it holds ``max_buffer`` entries; :meth:`flush` writes what is buffered in one pipeline
    and returns the metadata of every entry written since the last flush. Leaving a ``with``
    block or :meth:`close` flushes. Partition: ``partition`` when given, else
    :func:`partition_for` the key, else round-robin (from a random start per producer).
    The topic's partition count and retention are re-read every ``metadata_ttl_s`` seconds,
    so partitions added meanwhile are used.
    """

    def __init__(
        self, url: str | None = None, *, client: Any = None, max_buffer: int = 1000, metadata_ttl_s: float = 5.0
    ) -> None:
        super().__init__(url, client)
        self.max_buffer = max(1, int(max_buffer))
        self.metadata_ttl_s = metadata_ttl_s
        self._meta: dict[str, tuple[TopicMeta, float]] = {}
        self._rr: dict[str, int] = {}
        self._buffer: list[tuple[str, int, tuple[Any, ...]]] = []
        self._sent: list[RecordMetadata] = []
        self._skew_ms: int | None = None
        self._dumps = codec().dumps

    def metadata(self, topic: str) -> TopicMeta:
        """The topic's metadata (cached for ``metadata_ttl_s``); :class:`UnknownTopicError` if absent."""
        now = time.monotonic()
        cached = self._meta.get(topic)
        if cached is not None and now - cached[1] < self.metadata_ttl_s:
            return cached[0]
        meta = read_meta(self.client, check_topic_name(topic))
        if meta is None:
            raise UnknownTopicError(topic)
        self._meta[topic] = (meta, now)
        return meta

    def _partition(self, topic: str, meta: TopicMeta, key: str | None, partition: int | None) -> int:
        if partition is not None:
            if not 0 <= int(partition) < meta.partitions:
                raise RafkaError(f"topic {topic!r} has partitions 0..{meta.partitions - 1}, not {partition}")
            return int(partition)
        if key is not None:
            return partition_for(key, meta.partitions)
        n = self._rr.get(topic)
        if n is None:
            n = random.randrange(meta.partitions)
        self._rr[topic] = n + 1
        return n % meta.partitions

    def _trim_args(self, meta: TopicMeta) -> list[Any]:
        if meta.retention_maxlen is not None:
            return ["MAXLEN", "~", meta.retention_maxlen]
        if meta.retention_minid_ms is not None:
            if self._skew_ms is None:  # ids are the server's clock: measure the difference once
                self._skew_ms = server_ms(self.client) - int(time.time() * 1000)
            cutoff = int(time.time() * 1000) + self._skew_ms - meta.retention_minid_ms
            return ["MINID", "~", f"{max(cutoff, 0)}-0"]
        return []

    def _entry(self, value: Any, key: str | None, headers: Mapping[str, Any] | None) -> list[Any]:
        fields: list[Any] = ["v", self._dumps(value)]
        if key is not None:
            fields += ["k", key]
        if headers:
            fields += ["h", self._dumps(dict(headers))]
        return fields

    def send(
        self,
        topic: str,
        value: Any,
        key: str | None = None,
        headers: Mapping[str, Any] | None = None,
        partition: int | None = None,
    ) -> int:
        """Buffer one entry; returns its partition. ``value`` is any JSON value (a dict for flows)."""
        meta = self.metadata(topic)
        key = None if key is None else str(key)
        p = self._partition(topic, meta, key, partition)
        self._buffer.append((topic, p, ("XADD", stream_key(topic, p), *self._trim_args(meta), "*",
                                        *self._entry(value, key, headers))))
        if len(self._buffer) >= self.max_buffer:
            self._write()
        return p

    def send_batch(
        self,
        topic: str,
        values: Iterable[Any],
        *,
        keys: Iterable[str | None] | None = None,
        key_field: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> list[RecordMetadata]:
        """Send many entries with one pipeline; keys from ``keys`` (parallel to ``values``) or each
        value's ``key_field``. Returns the metadata of what was written, in order."""
        meta = self.metadata(topic)
        trim = self._trim_args(meta)
        values = list(values)
        if keys is not None:
            key_list: list[str | None] = [None if k is None else str(k) for k in keys]
            if len(key_list) != len(values):
                raise RafkaError(f"send_batch: {len(key_list)} keys for {len(values)} values")
        elif key_field is not None:
            key_list = [None if v.get(key_field) is None else str(v.get(key_field)) for v in values]
        else:
            key_list = [None] * len(values)
        dumps = self._dumps
        h: tuple[Any, ...] = ("h", dumps(dict(headers))) if headers else ()
        keys_of = [stream_key(topic, p) for p in range(meta.partitions)]
        head = ("XADD",)
        tail = (*trim, "*", "v")
        buffer = self._buffer
        partition = self._partition
        for value, key in zip(values, key_list, strict=True):
            p = partition(topic, meta, key, None)
            if key is None:
                buffer.append((topic, p, (*head, keys_of[p], *tail, dumps(value), *h)))
            else:
                buffer.append((topic, p, (*head, keys_of[p], *tail, dumps(value), "k", key, *h)))
            if len(buffer) >= self.max_buffer:
                self._write()
                buffer = self._buffer
        return self.flush()

    def _write(self) -> None:
        if not self._buffer:
            return
        buffer, self._buffer = self._buffer, []
        ids = execute_many(self.client, [command for _, _, command in buffer])
        self._sent.extend(RecordMetadata(t, p, as_text(i)) for (t, p, _), i in zip(buffer, ids, strict=True))

    def flush(self) -> list[RecordMetadata]:
        """Write the buffer; the metadata of every entry written since the last flush."""
        self._write()
        sent, self._sent = self._sent, []
        return sent

    def close(self) -> None:
        try:
            if self._client is not None:
                self.flush()
        finally:
            super().close()

