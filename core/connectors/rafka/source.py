"""The ``rafka`` source: one split per partition, its enumerator and its reader.

``{type: rafka, url: redis://…, topic: T, group: G, bounded: false, start: earliest}`` — one
:class:`RafkaSplit` per partition (split id ``T:<p>``); partition ``p`` is read by reader
``p % parallelism``, whose consumer name is ``<consumer>-r<reader_id>`` (``consumer``
defaults to the flow name), so a restarted reader finds its own pending entries again.
Entries are acknowledged in :meth:`RafkaSourceReader.notify_checkpoint_complete`, after
the sink wrote them and the engine checkpointed: at-least-once. See docs/RAFKA.md.

The split, the enumerator, the reader and the source stay in one module (about 600 lines):
they are one protocol over one consumer group.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from active_data_flow.attributes import Attribute, not_negative
from active_data_flow.codec import codec
from active_data_flow.connectors.rafka.checks import check_positive, topic_check
from active_data_flow.connectors.rafka.client import (
    UnknownTopicError,
    as_text,
    connect,
    default_url,
    ensure_group,
    parse_id,
    raw_client,
    read_meta,
    redis_module,
    reply_streams,
    stream_key,
)
from active_data_flow.connectors.rafka.consumer import decode_entry, raw_fields
from active_data_flow.logs import get_logger, log_event
from active_data_flow.record import DeadLetter, Record
from active_data_flow.redact import redact_text
from active_data_flow.source import (
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

__all__ = ["RafkaSource", "RafkaSourceReader", "RafkaSplit", "RafkaSplitEnumerator"]

_log = get_logger("rafka")


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
            ensure_group(self.client, key, group, "$" if initial and latest else "0")
            end_id = None
            if not self.unbounded:
                end_id = as_text(self.client.xinfo_stream(key).get("last-generated-id") or "0-0")
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
        return as_text(super().__getitem__(index))


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
            self._client = raw_client(self.source.url, socket_timeout=max(5.0, block_s + 5.0))
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
            name = as_text(c["name"])
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
            if as_text(cursor) == "0-0":
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
                ensure_group(self.client, h.key, self.group, "0")
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
        held.split.position = as_text(entries[-1][0])
        if origins is not None and len(records) > first:
            # each record's entry id, for a dead letter of a step or the sink (malformed entries
            # are dead letters already: the ids of the records are those not among them)
            part = held.split.partition
            bad = {d.origin.get("id") for d in dead if d.origin.get("partition") == part} if dead else set()
            taken = [e[0] for e in entries if not bad or as_text(e[0]) not in bad]
            origins.add(len(records) - first, {"topic": held.split.topic, "partition": held.split.partition},
                        "id", _EntryIds(taken))

    def _slow(self, held: _Held, entry_id: Any, fields: Any, records: list[Record], dead: list[DeadLetter]) -> None:
        split = held.split
        try:
            value, key, headers, error = decode_entry(fields, self._loads, need_object=True)
        except Exception as exc:  # a reply shape nobody expected: keep the entry as a dead letter
            value, key, headers, error = None, None, None, f"{type(exc).__name__}: {exc}"
        if error is not None:
            dead.append(DeadLetter(
                {"id": as_text(entry_id), "fields": raw_fields(fields)}, error, "source", "MalformedEntry",
                origin={"topic": split.topic, "partition": split.partition, "id": as_text(entry_id)},
            ))
            return
        if self._metadata:
            value["_rafka"] = {"topic": split.topic, "partition": split.partition, "id": as_text(entry_id),
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
            returned = {as_text(i) for ids in self._inflight.values() for i in ids} | self._unconfirmed
            skip = returned | {i.encode() for i in returned}  # ids come as bytes or text, by client
        helds = [h for h in self._held.values() if not h.done]
        draining = [h for h in helds if h.draining]
        if draining:
            ok, reply = self._read(draining, [h.cursor for h in draining], max(1, -(-count // len(draining))), None)
            got = dict(reply_streams(reply))
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
                got = dict(reply_streams(reply))
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
        token = {as_text(key): [as_text(i) for i in ids] for key, ids in inflight.items()}
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


def _check_consumer(value: Any) -> str | None:
    return None if isinstance(value, str) and value and " " not in value else "must be a non-empty name without spaces"


class RafkaSource(Source):
    """Reads a Rafka topic as a consumer group (one split per partition; see docs/RAFKA.md)."""

    type_name = "rafka"
    attributes = (
        Attribute("url", str, secret=True, help="redis://host:6379/0; default $ADF_RAFKA_URL or redis://127.0.0.1:6379"),
        Attribute("topic", str, required=True, check=topic_check, help="the topic to read"),
        Attribute("group", str, help="consumer group; default: the flow name"),
        Attribute("bounded", bool, default=False,
                  help="true: read what the topic holds when the run starts, then end; false: run until stopped"),
        Attribute("start", str, default="earliest", choices=("earliest", "latest"),
                  help="where a new group starts: the oldest entry or only entries written from now on"),
        Attribute("claim_idle_ms", int, default=30000, check=check_positive,
                  help="take over entries other consumers held unacknowledged this long (dead consumers)"),
        Attribute("block_ms", int, default=100, check=not_negative,
                  help="unbounded: wait this long in XREADGROUP for new entries"),
        Attribute("batch", int, check=check_positive, help="entries per XREADGROUP; default: the run's batch_size"),
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
        redis_module("the rafka source")
        return RafkaSplitEnumerator(context, self, checkpoint)

    def create_reader(self, context: SourceReaderContext) -> SourceReader:
        redis_module("the rafka source")
        return RafkaSourceReader(context, self)

    def split_from_dict(self, data: Mapping[str, Any]) -> Split:
        return _as_split(data)

    def describe(self) -> str:
        return f"rafka {redact_text(self.url)} topic {self.topic} group {self.group}"

