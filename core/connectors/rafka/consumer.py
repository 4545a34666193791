"""Reading Rafka topics as a consumer group (:class:`Consumer`), and decoding stream entries.

:func:`decode_entry` is how both the consumer and the ``rafka`` source read an entry's fields.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from active_data_flow.codec import codec
from active_data_flow.connectors.rafka.client import (
    ClientOwner,
    RafkaError,
    UnknownTopicError,
    as_text,
    check_topic_name,
    ensure_group,
    raw_client,
    raw_reply,
    read_meta,
    reply_streams,
    stream_key,
)

__all__ = ["Consumer", "ConsumerRecord", "decode_entry", "raw_fields"]

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


def decode_entry(fields: Any, loads: Any, need_object: bool) -> tuple[Any, str | None, dict[str, Any] | None, str | None]:
    """``(value, key, headers, error)`` of one entry's fields (``None`` fields: deleted entry)."""
    if fields is None:
        return None, None, None, "the entry was deleted (trimmed by retention) before it was acknowledged"
    pairs = _pairs(fields)
    key = pairs.get(b"k")
    key_text = None if key is None else as_text(key)
    headers: dict[str, Any] | None = None
    raw_h = pairs.get(b"h")
    if raw_h is not None:
        try:
            loaded = loads(raw_h)
            headers = loaded if isinstance(loaded, dict) else {"_": loaded}
        except ValueError:
            headers = None
    if b"v" not in pairs:
        names = ", ".join(sorted(as_text(k) for k in pairs)) or "none"
        return None, key_text, headers, f"the entry has no 'v' field (fields: {names})"
    try:
        value = loads(pairs[b"v"])
    except ValueError as exc:
        return None, key_text, headers, f"the 'v' field is not valid JSON: {exc}"
    if need_object and not isinstance(value, dict):
        return None, key_text, headers, f"the 'v' field is JSON {type(value).__name__}, not an object"
    return value, key_text, headers, None


def raw_fields(fields: Any) -> dict[str, str] | None:
    """An entry's fields as text (each value cut at 2,000 characters), for a dead letter; None when deleted."""
    if fields is None:
        return None
    return {as_text(k): as_text(v)[:2000] for k, v in _pairs(fields).items()}


# --------------------------------------------------------------------------- consumer


class Consumer(ClientOwner):
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
            self._client = raw_client(self.url, socket_timeout=max(5.0, self.block_ms / 1000 + 5))
        else:
            for command in ("XREADGROUP", "XAUTOCLAIM", "XCLAIM"):
                client.set_response_callback(command, raw_reply)
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
                ensure_group(self.client, stream_key(self.topic, p), self.group, start_id)
                self._partitions.append(p)
                self._draining[p] = "0-0"

    def _records(self, key: Any, entries: Any) -> list[ConsumerRecord]:
        p = int(as_text(key).rsplit(":", 1)[1])
        out = []
        for entry_id, fields in entries:
            value, k, headers, error = decode_entry(fields, self._loads, need_object=False)
            out.append(ConsumerRecord(self.topic, p, as_text(entry_id), value, k, headers, error))
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
            entries = next((e for _, e in reply_streams(reply)), None)
            if not entries:
                del self._draining[p]
                continue
            self._draining[p] = as_text(entries[-1][0])
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
        for key, entries in reply_streams(reply):
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
                if as_text(cursor) == "0-0":
                    break
        return out

    def pending(self) -> int:
        """Entries this consumer read and has not committed."""
        total = 0
        for p in self._partitions:
            summary = self.client.xpending(stream_key(self.topic, p), self.group)
            total += sum(int(c["pending"]) for c in summary.get("consumers") or [] if as_text(c["name"]) == self.name)
        return total

