"""Rafka topics: create, grow, describe, list and delete them (:class:`Admin`)."""

from __future__ import annotations

import time
from typing import Any

from active_data_flow.connectors.rafka.client import (
    KEY_PREFIX,
    ClientOwner,
    RafkaError,
    TopicExistsError,
    TopicMeta,
    UnknownTopicError,
    as_text,
    check_topic_name,
    meta_key,
    read_meta,
    stream_key,
)

__all__ = ["Admin"]

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


class Admin(ClientOwner):
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
            names.add(as_text(key)[len(KEY_PREFIX) + 1 : -len(":meta")])
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
            text = as_text(key)
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
                info["first_id"] = as_text(first[0]) if first and first[0] is not None else None
                info["last_id"] = as_text(last[0]) if last and last[0] is not None else None
                info["last_generated_id"] = as_text(s.get("last-generated-id") or "0-0")
                for g in client.xinfo_groups(key):
                    gname = as_text(g["name"])
                    last_delivered = as_text(g.get("last-delivered-id") or "0-0")
                    lag = g.get("lag")
                    if lag is None:
                        lag = self._count_after(key, last_delivered)
                    consumers = [
                        {"name": as_text(c["name"]), "pending": int(c.get("pending") or 0),
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
            cursor = f"({as_text(chunk[-1][0])}"

