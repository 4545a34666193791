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
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Self

from core.attributes import Attribute, not_negative
from core.codec import codec
from core.errors import AdfError, ConfigError, MissingExtraError, RecordValidationError
from core.logs import get_logger, log_event
from core.record import DeadLetter, Record
from core.redact import redact_text
from core.sink import Sink
from core.source import (
    Boundedness,
    Origins,
    ReaderBatch,
    ReaderStatus,
    Source,
    SourceReader,
    SourceReaderContext,
    Split,
    SplitEnumerator,
    SplitEnumeratorContext,
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

DEFAULT_URL = "redis://127.0.0.1:6379"
#: environment variable that overrides :data:`DEFAULT_URL`
URL_ENV = "ADF_RAFKA_URL"
KEY_PREFIX = "rafka"
_TOPIC_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_log = get_logger("rafka")

# Atomic topic creation and growth (a topic's metadata is one hash).
_CREATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""
_GROW_LUA = """
local current = tonumber(redis.call('HGET', KEYS[1], 'partitions'))
if not current then return -1 end
local wanted = tonumber(ARGV[1])
if wanted <= current then return current end
redis.call('HSET', KEYS[1], 'partitions', wanted)
return wanted
"""


# --------------------------------------------------------------------------- errors and helpers


class RafkaError(AdfError):
    """A Rafka operation failed (the message says what to do)."""


class UnknownTopicError(RafkaError):
    def __init__(self, topic: str) -> None:
        self.topic = topic
        super().__init__(
            f"rafka topic {topic!r} does not exist; create it with "
            f"`adf rafka create-topic {topic} --partitions N`"
        )


class TopicExistsError(RafkaError):
    def __init__(self, topic: str) -> None:
        self.topic = topic
        super().__init__(f"rafka topic {topic!r} already exists")


def default_url() -> str:
    """``$ADF_RAFKA_URL`` or ``redis://127.0.0.1:6379``."""
    return os.environ.get(URL_ENV) or DEFAULT_URL


def check_topic_name(name: str) -> str:
    """``name`` when it is a valid topic name (letters, digits, ``.``, ``_``, ``-``; no ``:``)."""
    if not isinstance(name, str) or not _TOPIC_RE.match(name):
        raise RafkaError(
            f"invalid rafka topic name {name!r}: use letters, digits, '.', '_' and '-' "
            "(up to 200 characters, starting with a letter or digit)"
        )
    return name


def _topic_check(value: Any) -> str | None:
    return None if isinstance(value, str) and _TOPIC_RE.match(value) else (
        "must be letters, digits, '.', '_' or '-' (no ':'), starting with a letter or digit"
    )


def stream_key(topic: str, partition: int) -> str:
    """The stream of one partition: ``rafka:<topic>:<partition>``."""
    return f"{KEY_PREFIX}:{topic}:{partition}"


def meta_key(topic: str) -> str:
    """The metadata hash of a topic: ``rafka:<topic>:meta``."""
    return f"{KEY_PREFIX}:{topic}:meta"


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition of ``key``: CRC-32 of its UTF-8 bytes modulo ``partitions``.

    Stable across processes, hosts and Python versions (unlike ``hash()``), so every producer
    sends a key to the same partition while the partition count stays the same.
    """
    data = key if isinstance(key, bytes) else str(key).encode("utf-8")
    return zlib.crc32(data) % partitions


def parse_id(entry_id: str | bytes) -> tuple[int, int]:
    """A stream id as ``(milliseconds, sequence)`` for comparisons (``"5-1"`` → ``(5, 1)``)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _redis_module(what: str) -> Any:
    try:
        import redis
    except ImportError as exc:
        raise MissingExtraError("redis", "redis", what) from exc
    return redis


def connect(url: str | None = None, *, socket_timeout: float | None = None) -> Any:
    """A redis-py client for ``url`` (default :func:`default_url`); hiredis parses replies when installed."""
    redis = _redis_module("rafka")
    kwargs: dict[str, Any] = {}
    if socket_timeout is not None:
        kwargs["socket_timeout"] = socket_timeout
    return redis.Redis.from_url(url or default_url(), **kwargs)


def _raw(reply: Any, **options: Any) -> Any:
    return reply


def _raw_client(url: str | None, socket_timeout: float | None = None) -> Any:
    """A client whose stream reads return Redis' own reply (no per-entry dicts built by redis-py)."""
    client = connect(url, socket_timeout=socket_timeout)
    for command in ("XREADGROUP", "XAUTOCLAIM", "XCLAIM"):
        client.set_response_callback(command, _raw)
    return client


def _streams(reply: Any) -> Iterable[tuple[Any, Any]]:
    """``(key, entries)`` of an XREAD(GROUP) reply, RESP2 (list of pairs) or RESP3 (map)."""
    if not reply:
        return ()
    if isinstance(reply, dict):
        return reply.items()
    return reply  # type: ignore[no-any-return]


def _ensure_group(client: Any, key: str, group: str, start_id: str) -> bool:
    """Create ``group`` on stream ``key`` at ``start_id`` (``0`` or ``$``), creating the stream; False if it existed."""
    try:
        client.execute_command("XGROUP", "CREATE", key, group, start_id, "MKSTREAM")
        return True
    except Exception as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise


def _hiredis_pack() -> Any:
    """``hiredis.pack_command``, or None when hiredis is not installed."""
    try:
        from hiredis import pack_command
    except ImportError:
        return None
    return pack_command


def _execute_many(client: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` in one write and read their replies (a pipeline without a transaction).

    With hiredis the commands are packed by ``hiredis.pack_command`` and written to one pooled
    connection directly, about twice as fast as redis-py's pipeline object for thousands of
    small ``XADD`` s; without hiredis, redis-py's pipeline. An error reply raises (the
    connection is then dropped, its unread replies with it).
    """
    if not commands:
        return []
    pack_command = _hiredis_pack()
    pool = getattr(client, "connection_pool", None)
    if pack_command is None or pool is None or not hasattr(client, "response_callbacks"):
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute())
    data = b"".join([pack_command(command) for command in commands])
    try:
        conn = pool.get_connection()
    except TypeError:  # redis-py before 5.3 asks for a command name
        conn = pool.get_connection(commands[0][0])
    try:
        conn.send_packed_command([data])
        read = conn.read_response
        return [read() for _ in commands]
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def _server_ms(client: Any) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


# --------------------------------------------------------------------------- topics


@dataclass(frozen=True)
class TopicMeta:
    """What ``rafka:<topic>:meta`` says about a topic."""

    name: str
    partitions: int
    created_at: int = 0
    retention_maxlen: int | None = None
    retention_minid_ms: int | None = None

    @property
    def retention(self) -> dict[str, int]:
        """``{"maxlen": n}``, ``{"minid_ms": n}`` or ``{}`` (keep everything)."""
        if self.retention_maxlen is not None:
            return {"maxlen": self.retention_maxlen}
        if self.retention_minid_ms is not None:
            return {"minid_ms": self.retention_minid_ms}
        return {}


def read_meta(client: Any, topic: str) -> TopicMeta | None:
    """The topic's metadata, or None when the topic does not exist."""
    raw = client.hgetall(meta_key(topic))
    if not raw:
        return None
    data = {_text(k): _text(v) for k, v in raw.items()}
    if "partitions" not in data:
        return None

    def opt(name: str) -> int | None:
        value = data.get(name)
        return int(value) if value not in (None, "") else None

    return TopicMeta(
        name=topic,
        partitions=int(data["partitions"]),
        created_at=int(data.get("created_at") or 0),
        retention_maxlen=opt("retention_maxlen"),
        retention_minid_ms=opt("retention_minid_ms"),
    )


class _ClientOwner:
    """Holds a client (its own, closed by :meth:`close`, or one given by the caller)."""

    def __init__(self, url: str | None = None, client: Any = None) -> None:
        self.url = url or default_url()
        self._own = client is None
        self._client: Any = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.url)
        return self._client

    def close(self) -> None:
        if self._own and self._client is not None:
            self._client.close()
        self._client = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Admin(_ClientOwner):
    """Creates, grows, describes and deletes topics.

    Partitions only grow (as in Kafka): adding partitions changes which partition a key goes
    to from then on, so entries of one key written before and after may be read out of order.
    """

    def create_topic(
        self,
        name: str,
        partitions: int,
        retention_maxlen: int | None = None,
        retention_minid_ms: int | None = None,
        *,
        exist_ok: bool = False,
    ) -> TopicMeta:
        """Create ``name`` with ``partitions`` partitions.

        Retention (at most one): ``retention_maxlen`` keeps about the last n entries of each
        partition (``XADD … MAXLEN ~ n``); ``retention_minid_ms`` keeps the entries of about the
        last n milliseconds (``XADD … MINID ~ <now - n>``). Trimming happens as producers write.
        Raises :class:`TopicExistsError` when it exists (unless ``exist_ok``).
        """
        check_topic_name(name)
        if int(partitions) < 1:
            raise RafkaError(f"a topic needs at least 1 partition, got {partitions}")
        if retention_maxlen is not None and retention_minid_ms is not None:
            raise RafkaError("give either retention_maxlen or retention_minid_ms, not both")
        for label, value in (("retention_maxlen", retention_maxlen), ("retention_minid_ms", retention_minid_ms)):
            if value is not None and int(value) < 1:
                raise RafkaError(f"{label} must be at least 1, got {value}")
        fields: list[Any] = ["partitions", int(partitions), "created_at", int(time.time() * 1000)]
        if retention_maxlen is not None:
            fields += ["retention_maxlen", int(retention_maxlen)]
        if retention_minid_ms is not None:
            fields += ["retention_minid_ms", int(retention_minid_ms)]
        created = self.client.eval(_CREATE_LUA, 1, meta_key(name), *fields)
        if not created and not exist_ok:
            raise TopicExistsError(name)
        meta = read_meta(self.client, name)
        assert meta is not None
        return meta

    def topic(self, name: str) -> TopicMeta:
        """The topic's metadata; :class:`UnknownTopicError` when it does not exist."""
        meta = read_meta(self.client, check_topic_name(name))
        if meta is None:
            raise UnknownTopicError(name)
        return meta

    def exists(self, name: str) -> bool:
        return bool(self.client.exists(meta_key(check_topic_name(name))))

    def list_topics(self) -> list[str]:
        """Names of every topic on the server."""
        names = set()
        for key in self.client.scan_iter(match=f"{KEY_PREFIX}:*:meta", count=1000):
            names.add(_text(key)[len(KEY_PREFIX) + 1 : -len(":meta")])
        return sorted(names)

    def add_partitions(self, name: str, new_total: int) -> TopicMeta:
        """Grow ``name`` to ``new_total`` partitions (must be more than it has)."""
        check_topic_name(name)
        result = int(self.client.eval(_GROW_LUA, 1, meta_key(name), int(new_total)))
        if result == -1:
            raise UnknownTopicError(name)
        if result != int(new_total):
            raise RafkaError(
                f"topic {name!r} has {result} partitions; the new total must be more than that "
                f"(partitions can only be added), got {new_total}"
            )
        return self.topic(name)

    def delete_topic(self, name: str) -> bool:
        """Delete the topic: its metadata, every partition stream and their groups. False if absent."""
        check_topic_name(name)
        meta = read_meta(self.client, name)
        keys = [meta_key(name)]
        if meta is not None:
            keys += [stream_key(name, p) for p in range(meta.partitions)]
        # partition streams beyond the metadata (a half-finished create or grow)
        for key in self.client.scan_iter(match=f"{KEY_PREFIX}:{name}:*", count=1000):
            text = _text(key)
            if text[len(KEY_PREFIX) + len(name) + 2 :].isdigit() and text not in keys:
                keys.append(text)
        return bool(self.client.delete(*keys)) and meta is not None

    def describe(self, name: str) -> dict[str, Any]:
        """Partitions (length, first/last id, groups), and per group its consumers, pending and lag.

        Lag is Redis' own (``XINFO GROUPS`` ``lag``, Redis 7+) when it can tell, else counted
        from the group's last delivered id.
        """
        meta = self.topic(name)
        client = self.client
        partitions: list[dict[str, Any]] = []
        groups: dict[str, dict[str, Any]] = {}
        for p in range(meta.partitions):
            key = stream_key(name, p)
            info: dict[str, Any] = {"partition": p, "stream": key, "length": 0, "first_id": None,
                                    "last_id": None, "last_generated_id": None, "groups": []}
            if client.exists(key):
                s = client.xinfo_stream(key)
                first, last = s.get("first-entry"), s.get("last-entry")
                info["length"] = int(s.get("length") or 0)
                info["first_id"] = _text(first[0]) if first and first[0] is not None else None
                info["last_id"] = _text(last[0]) if last and last[0] is not None else None
                info["last_generated_id"] = _text(s.get("last-generated-id") or "0-0")
                for g in client.xinfo_groups(key):
                    gname = _text(g["name"])
                    last_delivered = _text(g.get("last-delivered-id") or "0-0")
                    lag = g.get("lag")
                    if lag is None:
                        lag = self._count_after(key, last_delivered)
                    consumers = [
                        {"name": _text(c["name"]), "pending": int(c.get("pending") or 0),
                         "idle_ms": int(c.get("idle") or 0)}
                        for c in client.xinfo_consumers(key, gname)
                    ]
                    pg = {"group": gname, "pending": int(g.get("pending") or 0), "lag": int(lag),
                          "last_delivered_id": last_delivered, "consumers": consumers}
                    info["groups"].append(pg)
                    total = groups.setdefault(gname, {"group": gname, "pending": 0, "lag": 0, "consumers": {}})
                    total["pending"] += pg["pending"]
                    total["lag"] += pg["lag"]
                    for c in consumers:
                        seen = total["consumers"].setdefault(
                            c["name"], {"name": c["name"], "pending": 0, "idle_ms": c["idle_ms"], "partitions": []}
                        )
                        seen["pending"] += c["pending"]
                        seen["idle_ms"] = min(seen["idle_ms"], c["idle_ms"])
                        seen["partitions"].append(p)
            partitions.append(info)
        return {
            "topic": name,
            "partition_count": meta.partitions,
            "created_at": meta.created_at,
            "retention": meta.retention,
            "length": sum(int(p["length"]) for p in partitions),
            "partitions": partitions,
            "groups": [
                {**g, "consumers": sorted(g["consumers"].values(), key=lambda c: c["name"])}
                for g in sorted(groups.values(), key=lambda g: g["group"])
            ],
        }

    def _count_after(self, key: str, last_id: str) -> int:
        """Entries with an id after ``last_id`` (walks the stream: used when Redis cannot tell the lag)."""
        if last_id in ("0-0", "0"):
            return int(self.client.xlen(key))
        count, cursor = 0, f"({last_id}"
        while True:
            chunk = self.client.xrange(key, min=cursor, max="+", count=10_000)
            if not chunk:
                return count
            count += len(chunk)
            cursor = f"({_text(chunk[-1][0])}"


# --------------------------------------------------------------------------- producer


class RecordMetadata(NamedTuple):
    """Where a sent entry went: its topic, partition and id (its offset)."""

    topic: str
    partition: int
    id: str


class Producer(_ClientOwner):
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
                self._skew_ms = _server_ms(self.client) - int(time.time() * 1000)
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
        ids = _execute_many(self.client, [command for _, _, command in buffer])
        self._sent.extend(RecordMetadata(t, p, _text(i)) for (t, p, _), i in zip(buffer, ids, strict=True))

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


# --------------------------------------------------------------------------- decoding


@dataclass
class ConsumerRecord:
    """One entry read by a :class:`Consumer`. ``error`` is set (and ``value`` None) when the
    entry could not be decoded; commit it anyway so it is not delivered again."""

    topic: str
    partition: int
    id: str
    value: Any
    key: str | None = None
    headers: dict[str, Any] | None = None
    error: str | None = None


def _pairs(fields: Any) -> dict[bytes, Any]:
    if isinstance(fields, dict):
        return {k if isinstance(k, bytes) else str(k).encode(): v for k, v in fields.items()}
    it = iter(fields)
    return {k if isinstance(k, bytes) else str(k).encode(): v for k, v in zip(it, it, strict=False)}


def _decode(fields: Any, loads: Any, need_object: bool) -> tuple[Any, str | None, dict[str, Any] | None, str | None]:
    """``(value, key, headers, error)`` of one entry's fields (``None`` fields: deleted entry)."""
    if fields is None:
        return None, None, None, "the entry was deleted (trimmed by retention) before it was acknowledged"
    pairs = _pairs(fields)
    key = pairs.get(b"k")
    key_text = None if key is None else _text(key)
    headers: dict[str, Any] | None = None
    raw_h = pairs.get(b"h")
    if raw_h is not None:
        try:
            loaded = loads(raw_h)
            headers = loaded if isinstance(loaded, dict) else {"_": loaded}
        except ValueError:
            headers = None
    if b"v" not in pairs:
        names = ", ".join(sorted(_text(k) for k in pairs)) or "none"
        return None, key_text, headers, f"the entry has no 'v' field (fields: {names})"
    try:
        value = loads(pairs[b"v"])
    except ValueError as exc:
        return None, key_text, headers, f"the 'v' field is not valid JSON: {exc}"
    if need_object and not isinstance(value, dict):
        return None, key_text, headers, f"the 'v' field is JSON {type(value).__name__}, not an object"
    return value, key_text, headers, None


def _raw_fields(fields: Any) -> dict[str, str] | None:
    if fields is None:
        return None
    return {_text(k): _text(v)[:2000] for k, v in _pairs(fields).items()}


# --------------------------------------------------------------------------- consumer


class Consumer(_ClientOwner):
    """Reads a topic as ``consumer_name`` of ``group``.

    * the group is created on each partition when missing, at the start of the stream
      (``start="earliest"``) or at its end (``"latest"``: only entries written from now on);
    * :meth:`poll` first re-reads this consumer's own pending entries (read earlier, never
      committed — after a crash) and then new ones (``XREADGROUP … >``), from all its
      partitions (``partitions=None``: every partition, re-checked every 5 s);
    * :meth:`commit` acknowledges (``XACK``) records: call it only once they are processed;
    * :meth:`claim_stale` takes over entries other consumers have held longer than ``idle_ms``
      (a consumer that died) and returns them.

    Consumers of one group share entries: each entry is delivered to one of them.
    """

    def __init__(
        self,
        url: str | None,
        topic: str,
        group: str,
        consumer_name: str,
        *,
        partitions: Sequence[int] | None = None,
        start: str = "earliest",
        block_ms: int = 100,
        client: Any = None,
    ) -> None:
        super().__init__(url, client)
        if start not in ("earliest", "latest"):
            raise RafkaError(f"start must be 'earliest' or 'latest', got {start!r}")
        self.topic = check_topic_name(topic)
        self.group = group
        self.name = consumer_name
        self.start = start
        self.block_ms = int(block_ms)
        self._fixed = list(partitions) if partitions is not None else None
        self._partitions: list[int] = []
        self._draining: dict[int, str] = {}  # partition -> cursor in the own pending list
        self._checked = 0.0
        self._turn = 0
        self._loads = codec().loads
        if client is None:
            self._client = _raw_client(self.url, socket_timeout=max(5.0, self.block_ms / 1000 + 5))
        else:
            for command in ("XREADGROUP", "XAUTOCLAIM", "XCLAIM"):
                client.set_response_callback(command, _raw)
        self._refresh(initial=True)

    @property
    def partitions(self) -> list[int]:
        return list(self._partitions)

    def _refresh(self, initial: bool = False) -> None:
        self._checked = time.monotonic()
        if self._fixed is not None:
            wanted = self._fixed
        else:
            meta = read_meta(self.client, self.topic)
            if meta is None:
                raise UnknownTopicError(self.topic)
            wanted = list(range(meta.partitions))
        for p in wanted:
            if p not in self._partitions:
                # a partition found later is read from its beginning (it is new)
                start_id = "$" if initial and self.start == "latest" else "0"
                _ensure_group(self.client, stream_key(self.topic, p), self.group, start_id)
                self._partitions.append(p)
                self._draining[p] = "0-0"

    def _records(self, key: Any, entries: Any) -> list[ConsumerRecord]:
        p = int(_text(key).rsplit(":", 1)[1])
        out = []
        for entry_id, fields in entries:
            value, k, headers, error = _decode(fields, self._loads, need_object=False)
            out.append(ConsumerRecord(self.topic, p, _text(entry_id), value, k, headers, error))
        return out

    def poll(self, max_records: int = 500, block_ms: int | None = None) -> list[ConsumerRecord]:
        """Up to ``max_records`` records (own pending ones first); waits up to ``block_ms`` for new ones."""
        if self._fixed is None and time.monotonic() - self._checked >= 5.0:
            self._refresh()
        if not self._partitions or max_records < 1:
            return []
        client = self.client
        while self._draining:  # one partition at a time, so a poll never takes more than max_records
            p = min(self._draining)
            key = stream_key(self.topic, p)
            reply = client.execute_command(
                "XREADGROUP", "GROUP", self.group, self.name, "COUNT", max_records,
                "STREAMS", key, self._draining[p],
            )
            entries = next((e for _, e in _streams(reply)), None)
            if not entries:
                del self._draining[p]
                continue
            self._draining[p] = _text(entries[-1][0])
            return self._records(key, entries)
        parts = self._partitions[self._turn % len(self._partitions):] + self._partitions[: self._turn % len(self._partitions)]
        self._turn += 1
        parts = parts[:max_records]
        block = self.block_ms if block_ms is None else int(block_ms)
        args: list[Any] = ["XREADGROUP", "GROUP", self.group, self.name, "COUNT", max_records // len(parts)]
        if block > 0:
            args += ["BLOCK", block]
        keys = [stream_key(self.topic, p) for p in parts]
        reply = client.execute_command(*args, "STREAMS", *keys, *[">"] * len(keys))
        out: list[ConsumerRecord] = []
        for key, entries in _streams(reply):
            out.extend(self._records(key, entries))
        return out

    def commit(self, records: Iterable[ConsumerRecord]) -> int:
        """Acknowledge ``records`` (``XACK``); returns how many were still pending."""
        by_partition: dict[int, list[str]] = {}
        for r in records:
            by_partition.setdefault(r.partition, []).append(r.id)
        if not by_partition:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for p, ids in by_partition.items():
            pipe.execute_command("XACK", stream_key(self.topic, p), self.group, *ids)
        return sum(int(n) for n in pipe.execute())

    def claim_stale(self, idle_ms: int, max_records: int = 1000) -> list[ConsumerRecord]:
        """Take over entries pending longer than ``idle_ms`` with any consumer (``XAUTOCLAIM``)
        and return them; they are now this consumer's (commit them once processed). Entries
        deleted meanwhile are dropped from the pending list by Redis."""
        out: list[ConsumerRecord] = []
        for p in list(self._partitions):
            key = stream_key(self.topic, p)
            cursor: Any = "0-0"
            while len(out) < max_records:
                reply = self.client.execute_command(
                    "XAUTOCLAIM", key, self.group, self.name, int(idle_ms), cursor, "COUNT", max_records - len(out)
                )
                cursor, entries = reply[0], reply[1]
                out.extend(self._records(key, [e for e in entries if e is not None]))
                if _text(cursor) == "0-0":
                    break
        return out

    def pending(self) -> int:
        """Entries this consumer read and has not committed."""
        total = 0
        for p in self._partitions:
            summary = self.client.xpending(stream_key(self.topic, p), self.group)
            total += sum(int(c["pending"]) for c in summary.get("consumers") or [] if _text(c["name"]) == self.name)
        return total


# --------------------------------------------------------------------------- source: splits and enumerator


@dataclass
class RafkaSplit(Split):
    """Partition ``partition`` of ``topic`` (split id ``<topic>:<partition>``).

    ``position`` is the id of the last entry returned (informational: the group's pending list
    and last delivered id in Redis are where reading resumes). ``end_id`` (bounded sources) is
    the partition's last id when the run started: the split ends once the group has read it.
    """

    topic: str = ""
    partition: int = 0
    end_id: str | None = None


def _as_split(data: Split | Mapping[str, Any]) -> RafkaSplit:
    if isinstance(data, RafkaSplit):
        return data
    fields = data.to_dict() if isinstance(data, Split) else dict(data)
    return RafkaSplit(**fields)


class RafkaSplitEnumerator(SplitEnumerator):
    """One split per partition; partition ``p`` goes to reader ``p % parallelism``.

    At start it reads the topic's partition count, creates the consumer group on each partition
    (at ``0``, or ``$`` with ``start: latest``) and, when bounded, records each partition's last
    generated id as the split's ``end_id``. Unbounded: :meth:`discover` (called by the engine,
    and at most once a second when a reader asks for work) adds a split for every partition
    added since; its group is created at ``0`` so nothing written to it is skipped.
    """

    def __init__(
        self, context: SplitEnumeratorContext, source: RafkaSource, checkpoint: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(context)
        self.source = source
        self._checkpoint = checkpoint
        self._pending: list[RafkaSplit] = []
        self._seen: set[int] = set()
        self._client: Any = None
        self._discovered_at = 0.0
        self._warned = False

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.source.url)
        return self._client

    @property
    def unbounded(self) -> bool:
        return not self.source.bounded

    def start(self) -> None:
        if self._checkpoint is not None:
            self._pending = [_as_split(d) for d in self._checkpoint.get("pending", [])]
            self._seen = {int(p) for p in self._checkpoint.get("seen", [])}
            return
        meta = read_meta(self.client, self.source.topic)
        if meta is None:
            if not self.unbounded:
                raise UnknownTopicError(self.source.topic)
            self._warn_missing()
            return
        self._add(meta.partitions, initial=True)
        self._discovered_at = time.monotonic()

    def _warn_missing(self) -> None:
        if not self._warned:
            self._warned = True
            log_event(_log, "rafka topic does not exist yet; waiting for it", logging.WARNING, topic=self.source.topic)

    def _add(self, partitions: int, initial: bool) -> None:
        topic, group = self.source.topic, self.source.group
        latest = self.source.config["start"] == "latest"
        for p in range(partitions):
            if p in self._seen:
                continue
            key = stream_key(topic, p)
            _ensure_group(self.client, key, group, "$" if initial and latest else "0")
            end_id = None
            if not self.unbounded:
                end_id = _text(self.client.xinfo_stream(key).get("last-generated-id") or "0-0")
            self._pending.append(RafkaSplit(f"{topic}:{p}", None, topic, p, end_id))
            self._seen.add(p)

    def discover(self) -> None:
        if not self.unbounded:
            return
        self._discovered_at = time.monotonic()
        meta = read_meta(self.client, self.source.topic)
        if meta is None:
            self._warn_missing()
            return
        self._add(meta.partitions, initial=False)

    def owner(self, split: RafkaSplit) -> int:
        return split.partition % max(1, self.context.parallelism)

    def handle_split_request(self, reader_id: int) -> None:
        if self.unbounded and time.monotonic() - self._discovered_at >= 1.0:
            self.discover()
        mine = [s for s in self._pending if self.owner(s) == reader_id]
        if mine:
            self._pending = [s for s in self._pending if self.owner(s) != reader_id]
            for split in mine:
                self.context.assign_split(split, reader_id)
        elif not self.unbounded:
            self.context.signal_no_more_splits(reader_id)

    def add_splits_back(self, splits: Sequence[Split], reader_id: int) -> None:
        back = [_as_split(s) for s in splits]
        self._pending[:0] = back
        for s in back:
            self._seen.add(s.partition)

    @property
    def pending(self) -> list[Split]:
        return [*self._pending]

    def snapshot_state(self) -> dict[str, Any]:
        return {"pending": [s.to_dict() for s in self._pending], "seen": sorted(self._seen)}

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None


# --------------------------------------------------------------------------- source: reader


@dataclass
class _Held:
    """A split the reader holds, with its stream key and reading state."""

    split: RafkaSplit
    key: str
    bkey: bytes
    end: tuple[int, int] | None
    draining: bool = True  # reading the consumer's own pending entries first
    cursor: Any = "0-0"
    done: bool = False


class _EntryIds(list):  # type: ignore[type-arg]
    """Stream entry ids as Redis returns them, given out as text (only for a dead letter's origin)."""

    def __getitem__(self, index: Any) -> Any:
        return _text(super().__getitem__(index))


class RafkaSourceReader(SourceReader):
    """Reads the partitions assigned to it with one ``XREADGROUP`` per poll.

    * a new split first takes over the pending entries of this flow's other readers (a run
      with another parallelism left them) and of any consumer idle for ``claim_idle_ms``,
      then re-reads its own pending entries (read before a crash, never acknowledged), then
      new entries (``>``), waiting up to ``block_ms`` when an unbounded source has none;
    * every ``claim_idle_ms / 2`` it takes over entries other consumers have held longer than
      ``claim_idle_ms`` (``XAUTOCLAIM``);
    * an entry that cannot be decoded becomes a dead letter with the reason and is
      acknowledged with its batch;
    * the ids of a batch are acknowledged (``XACK``) in :meth:`notify_checkpoint_complete`;
    * bounded: entries after a split's ``end_id`` are not returned (they stay pending for
      this consumer and come first in the next run); the split ends once the group has read
      up to ``end_id``.
    """

    REQUEST_EVERY_S = 1.0

    def __init__(self, context: SourceReaderContext, source: RafkaSource) -> None:
        super().__init__(context)
        self.source = source
        self.bounded = source.bounded
        self.group = source.group
        self.consumer = source.consumer_name(context.reader_id)
        self._client: Any = None
        self._held: dict[bytes, _Held] = {}
        self._new: list[RafkaSplit] = []
        self._no_more = False
        self._requested = False
        self._requested_at = 0.0
        self._claim_every = max(source.config["claim_idle_ms"] / 2000.0, 0.05)
        self._claimed_at = time.monotonic()
        self._inflight: dict[str, list[Any]] = {}
        # ids taken for a later acknowledgement (take_acknowledgement) and not acknowledged yet
        self._unconfirmed: set[str] = set()
        self._loads = codec().loads
        self._metadata = bool(source.config["metadata"])

    @property
    def client(self) -> Any:
        if self._client is None:
            block_s = self.source.config["block_ms"] / 1000.0
            self._client = _raw_client(self.source.url, socket_timeout=max(5.0, block_s + 5.0))
        return self._client

    # -- splits ---------------------------------------------------------------------

    def start(self) -> None:
        self._request(time.monotonic())

    def _request(self, now: float) -> None:
        self._requested = True
        self._requested_at = now
        self.context.send_split_request()

    def add_splits(self, splits: Sequence[Split]) -> None:
        for split in splits:
            assert isinstance(split, RafkaSplit), f"not a RafkaSplit: {split!r}"
            self._new.append(split)
        self._requested = False

    def notify_no_more_splits(self) -> None:
        self._no_more = True
        self._requested = False

    def snapshot_state(self) -> list[Split]:
        return [*(h.split for h in self._held.values()), *self._new]

    def _open(self, split: RafkaSplit) -> None:
        key = stream_key(split.topic, split.partition)
        end = None
        if self.bounded:
            end = parse_id(split.end_id or "0-0")
        held = _Held(split, key, key.encode(), end)
        if held.bkey in self._held:
            return  # already held (a duplicate assignment)
        self._take_over_siblings(key)
        self._autoclaim(key)
        if end == (0, 0):
            held.done = True  # nothing was written before the run started
        self._held[held.bkey] = held

    def _take_over_siblings(self, key: str) -> None:
        """Pending entries of this flow's other consumer names on ``key`` become ours at once.

        Within a run a partition is read by one reader only, and a flow runs once at a time
        (its run lock): so those entries belong to readers of an earlier run (another
        parallelism) that are gone.
        """
        client = self.client
        prefix = f"{self.source.consumer_prefix}-r"
        try:
            consumers = client.xinfo_consumers(key, self.group)
        except Exception as exc:
            if "NOGROUP" in str(exc) or "no such key" in str(exc):
                return
            raise
        for c in consumers:
            name = _text(c["name"])
            if name == self.consumer or not name.startswith(prefix) or not name[len(prefix) :].isdigit():
                continue
            if not int(c.get("pending") or 0):
                continue
            moved = 0
            while True:
                rows = client.xpending_range(key, self.group, "-", "+", 1000, name)
                if not rows:
                    break
                client.execute_command(
                    "XCLAIM", key, self.group, self.consumer, 0, *[r["message_id"] for r in rows], "JUSTID"
                )
                moved += len(rows)
                if len(rows) < 1000:
                    break
            log_event(_log, "took over pending entries of an earlier reader", stream=key, consumer=name, entries=moved)

    def _autoclaim(self, key: str) -> int:
        """``XAUTOCLAIM`` (ids only) of entries idle longer than ``claim_idle_ms``; how many became ours."""
        idle = int(self.source.config["claim_idle_ms"])
        cursor: Any = "0-0"
        claimed = 0
        for _ in range(100):
            try:
                reply = self.client.execute_command(
                    "XAUTOCLAIM", key, self.group, self.consumer, idle, cursor, "COUNT", 1000, "JUSTID"
                )
            except Exception as exc:
                if "NOGROUP" in str(exc):
                    return claimed
                raise
            cursor, ids = reply[0], reply[1]
            claimed += len(ids)
            if _text(cursor) == "0-0":
                break
        if claimed:
            log_event(_log, "claimed stale pending entries", stream=key, consumer=self.consumer, entries=claimed)
        return claimed

    def _maintain(self, now: float) -> None:
        if not self._no_more and (
            not self._requested or (not self.bounded and now - self._requested_at >= self.REQUEST_EVERY_S)
        ):
            self._request(now)
        if self._new:
            new, self._new = self._new, []
            for split in new:
                self._open(split)
        if now - self._claimed_at >= self._claim_every:
            self._claimed_at = now
            for held in self._held.values():
                if self._autoclaim(held.key):
                    held.draining, held.cursor = True, "0-0"

    # -- reading --------------------------------------------------------------------

    def _read(self, helds: list[_Held], ids: list[Any], count: int, block: int | None) -> tuple[bool, Any]:
        """``(ok, reply)``; ok is False when the group had to be re-created (read again)."""
        args: list[Any] = ["XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count]
        if block:
            args += ["BLOCK", block]
        args.append("STREAMS")
        args.extend(h.key for h in helds)
        args.extend(ids)
        try:
            return True, self.client.execute_command(*args)
        except Exception as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The group (or the topic) was deleted under us: re-create the group from the
            # start (at-least-once: re-read rather than skip), unless the topic is gone.
            if read_meta(self.client, self.source.topic) is None:
                raise UnknownTopicError(self.source.topic) from exc
            for h in helds:
                _ensure_group(self.client, h.key, self.group, "0")
            return False, None

    def _take(
        self, held: _Held, entries: list[Any], records: list[Record], dead: list[DeadLetter], skip: set[Any] | None,
        origins: Origins | None = None,
    ) -> None:
        end = held.end
        if end is not None:
            if parse_id(entries[-1][0]) >= end:
                held.done = True
                entries = [e for e in entries if parse_id(e[0]) <= end]
                if not entries:
                    return
        if skip:
            entries = [e for e in entries if e[0] not in skip]
            if not entries:
                return
        ids = self._inflight.setdefault(held.key, [])
        loads = self._loads
        append = records.append
        first = len(records)
        if not self._metadata:
            for entry_id, fields in entries:
                ids.append(entry_id)
                try:
                    if fields[0] == b"v":
                        value = loads(fields[1])
                        if type(value) is dict:
                            append(value)
                            continue
                except Exception:  # decoded again below, with the reason
                    pass
                self._slow(held, entry_id, fields, records, dead)
        else:
            for entry_id, fields in entries:
                ids.append(entry_id)
                self._slow(held, entry_id, fields, records, dead)
        held.split.position = _text(entries[-1][0])
        if origins is not None and len(records) > first:
            # each record's entry id, for a dead letter of a step or the sink (malformed entries
            # are dead letters already: the ids of the records are those not among them)
            part = held.split.partition
            bad = {d.origin.get("id") for d in dead if d.origin.get("partition") == part} if dead else set()
            taken = [e[0] for e in entries if not bad or _text(e[0]) not in bad]
            origins.add(len(records) - first, {"topic": held.split.topic, "partition": held.split.partition},
                        "id", _EntryIds(taken))

    def _slow(self, held: _Held, entry_id: Any, fields: Any, records: list[Record], dead: list[DeadLetter]) -> None:
        split = held.split
        try:
            value, key, headers, error = _decode(fields, self._loads, need_object=True)
        except Exception as exc:  # a reply shape nobody expected: keep the entry as a dead letter
            value, key, headers, error = None, None, None, f"{type(exc).__name__}: {exc}"
        if error is not None:
            dead.append(DeadLetter(
                {"id": _text(entry_id), "fields": _raw_fields(fields)}, error, "source", "MalformedEntry",
                origin={"topic": split.topic, "partition": split.partition, "id": _text(entry_id)},
            ))
            return
        if self._metadata:
            value["_rafka"] = {"topic": split.topic, "partition": split.partition, "id": _text(entry_id),
                               "key": key, "headers": headers}
        records.append(value)

    def poll_batch(self, max_records: int) -> ReaderBatch:
        now = time.monotonic()
        self._maintain(now)
        records: list[Record] = []
        dead: list[DeadLetter] = []
        origins = Origins()
        count = int(self.source.config["batch"] or max_records)
        skip: set[Any] | None = None
        if self._inflight or self._unconfirmed:  # returned, not yet confirmed: never returned twice
            returned = {_text(i) for ids in self._inflight.values() for i in ids} | self._unconfirmed
            skip = returned | {i.encode() for i in returned}  # ids come as bytes or text, by client
        helds = [h for h in self._held.values() if not h.done]
        draining = [h for h in helds if h.draining]
        if draining:
            ok, reply = self._read(draining, [h.cursor for h in draining], max(1, -(-count // len(draining))), None)
            got = dict(_streams(reply))
            for h in draining:
                entries = got.get(h.bkey)
                if not entries:
                    h.draining = not ok
                    continue
                h.cursor = entries[-1][0]
                self._take(h, entries, records, dead, skip, origins)
        if not records and not dead:
            active = [h for h in helds if not h.done and not h.draining]
            if active:
                block = None if self.bounded else int(self.source.config["block_ms"])
                ok, reply = self._read(active, [">"] * len(active), max(1, -(-count // len(active))), block)
                got = dict(_streams(reply))
                for h in active:
                    entries = got.get(h.bkey)
                    if entries:
                        self._take(h, entries, records, dead, skip, origins)
                    elif self.bounded and ok:
                        h.done = True  # nothing new: the group has read everything up to the end
        finished = [h.split.split_id for h in self._held.values() if h.done]
        if finished:
            self._held = {k: h for k, h in self._held.items() if not h.done}
        exhausted = not self._held and not self._new
        if exhausted and not self._no_more and not self._requested:
            self._request(now)
        if records or dead or finished:
            status = ReaderStatus.END_OF_INPUT if exhausted and self._no_more else ReaderStatus.MORE_AVAILABLE
        elif exhausted and self._no_more:
            status = ReaderStatus.END_OF_INPUT
        else:
            status = ReaderStatus.NOTHING_AVAILABLE
        return ReaderBatch(records, status, dead, finished, origins=origins if origins.count == len(records) else None)

    def take_acknowledgement(self) -> dict[str, list[str]] | None:
        """The ids of the batches returned since the last call (or the last acknowledgement), per stream."""
        inflight, self._inflight = self._inflight, {}
        token = {_text(key): [_text(i) for i in ids] for key, ids in inflight.items()}
        for ids in token.values():
            self._unconfirmed.update(ids)
        return token or None

    def acknowledge(self, token: Any) -> None:
        """``XACK`` the ids of a :meth:`take_acknowledgement` token (``notify_checkpoint_complete``:
        every entry of the batches returned since the last call)."""
        inflight: dict[str, list[Any]] = token or {}
        if not inflight:
            return
        if len(inflight) == 1:
            ((key, ids),) = inflight.items()
            self.client.execute_command("XACK", key, self.group, *ids)
        else:
            pipe = self.client.pipeline(transaction=False)
            for key, ids in inflight.items():
                pipe.execute_command("XACK", key, self.group, *ids)
            pipe.execute()
        for ids in inflight.values():
            self._unconfirmed.difference_update(ids)

    def close(self) -> None:
        # Unacknowledged entries stay pending for this consumer name: the next reader re-reads them.
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None


# --------------------------------------------------------------------------- source


def _check_positive(value: Any) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value}"




def _check_consumer(value: Any) -> str | None:
    return None if isinstance(value, str) and value and " " not in value else "must be a non-empty name without spaces"


class RafkaSource(Source):
    """Reads a Rafka topic as a consumer group (one split per partition; see docs/RAFKA.md)."""

    type_name = "rafka"
    attributes = (
        Attribute("url", str, secret=True, help="redis://host:6379/0; default $ADF_RAFKA_URL or redis://127.0.0.1:6379"),
        Attribute("topic", str, required=True, check=_topic_check, help="the topic to read"),
        Attribute("group", str, help="consumer group; default: the flow name"),
        Attribute("bounded", bool, default=False,
                  help="true: read what the topic holds when the run starts, then end; false: run until stopped"),
        Attribute("start", str, default="earliest", choices=("earliest", "latest"),
                  help="where a new group starts: the oldest entry or only entries written from now on"),
        Attribute("claim_idle_ms", int, default=30000, check=_check_positive,
                  help="take over entries other consumers held unacknowledged this long (dead consumers)"),
        Attribute("block_ms", int, default=100, check=not_negative,
                  help="unbounded: wait this long in XREADGROUP for new entries"),
        Attribute("batch", int, check=_check_positive, help="entries per XREADGROUP; default: the run's batch_size"),
        Attribute("consumer", str, check=_check_consumer,
                  help="consumer name prefix (names are <consumer>-r<reader id>); default: the flow name"),
        Attribute("metadata", bool, default=False,
                  help="add _rafka: {topic, partition, id, key, headers} to every record"),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.topic: str = self.config["topic"]

    @property
    def url(self) -> str:
        return str(self.config["url"] or default_url())

    @property
    def bounded(self) -> bool:
        return bool(self.config["bounded"])

    @property
    def group(self) -> str:
        return str(self.config["group"] or self.run_context.flow_name)

    @property
    def consumer_prefix(self) -> str:
        return str(self.config["consumer"] or self.run_context.flow_name)

    def consumer_name(self, reader_id: int) -> str:
        """The consumer name of reader ``reader_id``: ``<consumer>-r<reader_id>`` (stable across restarts)."""
        return f"{self.consumer_prefix}-r{reader_id}"

    @property
    def boundedness(self) -> Boundedness:
        return Boundedness.BOUNDED if self.bounded else Boundedness.CONTINUOUS_UNBOUNDED

    def create_enumerator(
        self, context: SplitEnumeratorContext, checkpoint: Mapping[str, Any] | None = None
    ) -> SplitEnumerator:
        _redis_module("the rafka source")
        return RafkaSplitEnumerator(context, self, checkpoint)

    def create_reader(self, context: SourceReaderContext) -> SourceReader:
        _redis_module("the rafka source")
        return RafkaSourceReader(context, self)

    def split_from_dict(self, data: Mapping[str, Any]) -> Split:
        return _as_split(data)

    def describe(self) -> str:
        return f"rafka {redact_text(self.url)} topic {self.topic} group {self.group}"


# --------------------------------------------------------------------------- sink


class RafkaSink(Sink):
    """Appends every record to a Rafka topic (one pipeline per batch), partitioned by ``key``."""

    type_name = "rafka"
    attributes = (
        Attribute("url", str, secret=True, help="redis://host:6379/0; default $ADF_RAFKA_URL or redis://127.0.0.1:6379"),
        Attribute("topic", str, required=True, check=_topic_check, help="the topic to write"),
        Attribute("key", str, help="record field whose value is the entry key (partitioning); none = round-robin"),
        Attribute("partitions", int, check=_check_positive, help="create the topic with this many partitions when missing"),
        Attribute("maxlen", int, check=_check_positive, help="retention of a topic created here: ~entries per partition"),
        Attribute("minid_ms", int, check=_check_positive, help="retention of a topic created here: ~milliseconds kept"),
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
        _redis_module("the rafka sink")
        with Admin(self.url) as admin:
            self._ensure_topic(admin.client)

    def open(self) -> None:
        if self._producer is None:
            _redis_module("the rafka sink")
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
