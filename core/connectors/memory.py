"""In-memory source and sink, for tests, examples and flows given records by a caller.

``memory`` source
    ``{type: memory, records: [{...}, ...], splits: 2}`` — the records are dealt round-robin
    into ``splits`` splits (record ``i`` goes to split ``i % splits``). A split's position
    is the number of its records already read, so a checkpointed split resumes after the
    last record returned.

``memory`` sink
    ``{type: memory, name: results}`` — appends copies of the records to the class-level
    list ``MemorySink.stores[name]`` *of the current process* (readers running in other
    processes write to their own copy). :meth:`MemorySink.get` reads it back.

``payload`` source
    ``{type: payload, records: [...]}`` — the records that came with the trigger (an HTTP
    POST body, a Redis or MQTT message). A trigger handler (:mod:`active_data_flow.handlers.invoke`) puts the
    request's records at ``source.records``; ``records`` defaults to ``[]``. Unlike the
    ``memory`` source, an item that is not a JSON object is not a configuration error: it
    becomes a dead letter (stage ``source``) saying which item it was, and the rest goes on.
    One split; its position is how many items were read.

``response`` sink
    ``{type: response, limit: 1000}`` — keeps the records written by a run so the handler
    that started the run can return them in its response. They are kept per run id in the
    class-level :attr:`ResponseSink.runs` *of the current process* (process-local, like the
    ``memory`` sink: a reader in another process keeps its own copy, so the handlers run such
    flows with parallelism 1), at most ``limit`` records per run (the rest are counted, not
    kept) and at most :attr:`ResponseSink.max_runs` runs (the oldest run is forgotten first).
    The handler takes them with :meth:`ResponseSink.pop` after the run.

Example::

    source = MemorySource(records=[{"id": 1}, {"id": 2}], splits=2)
    sink = MemorySink(name="out")
    sink.write_batch(list(source.each()))
    assert MemorySink.get("out") == [{"id": 1}, {"id": 2}]
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from active_data_flow.attributes import Attribute, at_least_one, not_negative
from active_data_flow.record import DeadLetter, Record
from active_data_flow.sink import Sink
from active_data_flow.source import (
    Origins,
    ReaderBatch,
    ReaderStatus,
    Source,
    SourceReader,
    SourceReaderContext,
    Split,
    SplitEnumerator,
    SplitEnumeratorContext,
    SplitReader,
    StaticSplitEnumerator,
)

__all__ = ["MemorySink", "MemorySource", "MemorySplit", "PayloadSource", "ResponseRecords", "ResponseSink"]


def _check_records(value: Any) -> str | None:
    bad = [i for i, item in enumerate(value) if not isinstance(item, Mapping)]
    if bad:
        return f"every record must be a mapping; items {', '.join(map(str, bad[:5]))} are not"
    return None




@dataclass
class MemorySplit(Split):
    """Split ``index`` of ``count``: the records ``records[index::count]``.

    ``position`` is how many of them were already read (``None`` = none).
    """

    index: int = 0
    count: int = 1


class MemoryEnumerator(StaticSplitEnumerator):
    def __init__(
        self, context: SplitEnumeratorContext, checkpoint: Mapping[str, Any] | None, splits: int
    ) -> None:
        super().__init__(context, checkpoint)
        self._splits = splits

    def discover_splits(self) -> list[Split]:
        return [MemorySplit(f"memory-{i}", None, i, self._splits) for i in range(self._splits)]

    split_class = MemorySplit


class MemoryReader(SplitReader):
    def __init__(self, context: SourceReaderContext, records: list[dict[str, Any]]) -> None:
        super().__init__(context)
        self._records = records

    def read_split(self, split: Split, max_records: int) -> tuple[ReaderBatch, bool]:
        assert isinstance(split, MemorySplit)
        mine = self._records[split.index :: split.count]
        start = int(split.position or 0)
        chunk = mine[start : start + max_records]
        split.position = start + len(chunk)
        # Copies: a step mutating a record must not change the source's configuration.
        origins = Origins()  # the record's index in the configured list
        origins.add(len(chunk), {}, "index", range(split.index + start * split.count, len(self._records), split.count))
        batch = ReaderBatch([copy.deepcopy(r) for r in chunk], ReaderStatus.MORE_AVAILABLE, origins=origins)
        return batch, split.position >= len(mine)


class MemorySource(Source):
    """Records given in the configuration, dealt round-robin into ``splits`` splits."""

    type_name = "memory"
    attributes = (
        Attribute(
            "records", list, required=True, help="the records (a list of mappings)", check=_check_records
        ),
        Attribute(
            "splits", int, default=1, help="how many splits to deal the records into", check=at_least_one
        ),
    )

    def create_enumerator(
        self, context: SplitEnumeratorContext, checkpoint: Mapping[str, Any] | None = None
    ) -> SplitEnumerator:
        return MemoryEnumerator(context, checkpoint, int(self.option("splits")))

    def create_reader(self, context: SourceReaderContext) -> SourceReader:
        return MemoryReader(context, [dict(r) for r in self.option("records")])

    split_class = MemorySplit

    def describe(self) -> str:
        return f"memory ({len(self.option('records'))} records)"


class MemorySink(Sink):
    """Appends records to ``MemorySink.stores[name]`` in this process.

    :meth:`setup` empties the list (not when the run resumes from a checkpoint), so after a
    run it holds that run's output. Writing the same record twice keeps two copies: the sink
    is not idempotent.
    """

    type_name = "memory"
    attributes = (
        Attribute("name", str, default="default", help="the name of the list in MemorySink.stores"),
    )

    #: Every named list of records written in this process.
    stores: ClassVar[dict[str, list[dict[str, Any]]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def get(cls, name: str = "default") -> list[dict[str, Any]]:
        """The records written to ``name`` so far (the live list; empty when none)."""
        with cls._lock:
            return cls.stores.setdefault(name, [])

    @classmethod
    def clear(cls, name: str | None = None) -> None:
        """Forget the records of ``name``, or of every name when ``name`` is None."""
        with cls._lock:
            if name is None:
                cls.stores.clear()
            else:
                cls.stores.pop(name, None)

    @property
    def name(self) -> str:
        return str(self.option("name"))

    def setup(self) -> None:
        if not self.run_context.resuming:
            with self._lock:
                self.stores[self.name] = []

    def write_batch(self, records: Sequence[Record]) -> None:
        copies = [copy.deepcopy(dict(r)) for r in records]
        with self._lock:
            self.stores.setdefault(self.name, []).extend(copies)

    def describe(self) -> str:
        return f"memory {self.name!r}"


# --------------------------------------------------------------------------- payload source


def _json_type(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "an array"}
    if value is None:
        return "null"
    return names.get(type(value), f"a {type(value).__name__}")


class _PayloadEnumerator(StaticSplitEnumerator):
    def discover_splits(self) -> list[Split]:
        return [Split("payload-0")]


class _PayloadReader(SplitReader):
    def __init__(self, context: SourceReaderContext, items: list[Any]) -> None:
        super().__init__(context)
        self._items = items

    def read_split(self, split: Split, max_records: int) -> tuple[ReaderBatch, bool]:
        start = int(split.position or 0)
        chunk = self._items[start : start + max_records]
        records: list[Record] = []
        letters: list[DeadLetter] = []
        for offset, item in enumerate(chunk):
            if isinstance(item, (dict, Mapping)):  # dict first: no ABC call per record
                records.append(dict(item))
            else:
                index = start + offset
                letters.append(
                    DeadLetter(
                        item,
                        f"payload record {index} is {_json_type(item)}, not a JSON object",
                        "source",
                        "TypeError",
                        origin={"payload_index": index},
                    )
                )
        split.position = start + len(chunk)
        origins = None
        if records:
            origins = Origins()
            indexes = [start + i for i, item in enumerate(chunk) if isinstance(item, (dict, Mapping))]
            origins.add(len(records), {}, "payload_index", indexes)
        batch = ReaderBatch(records, ReaderStatus.MORE_AVAILABLE, dead_letters=letters, origins=origins)
        return batch, split.position >= len(self._items)


class PayloadSource(Source):
    """The records given with the trigger (``source.records``, default ``[]``).

    Items that are not objects are dead-lettered with the reason, not refused as
    configuration: a caller's bad record must not cost the good ones.
    """

    type_name = "payload"
    attributes = (
        Attribute(
            "records", list, default=[],
            help="the records given with the trigger (a handler fills this in from the request)",
        ),
    )

    def create_enumerator(
        self, context: SplitEnumeratorContext, checkpoint: Mapping[str, Any] | None = None
    ) -> SplitEnumerator:
        return _PayloadEnumerator(context, checkpoint)

    def create_reader(self, context: SourceReaderContext) -> SourceReader:
        return _PayloadReader(context, list(self.option("records") or []))

    def describe(self) -> str:
        return f"payload ({len(self.option('records') or [])} records)"


# --------------------------------------------------------------------------- response sink




@dataclass
class ResponseRecords:
    """What a run wrote to a ``response`` sink: the first ``limit`` records and how many were written."""

    records: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    limit: int = 0

    @property
    def truncated(self) -> bool:
        """True when more records were written than kept."""
        return self.total > len(self.records)


class ResponseSink(Sink):
    """Collects the records of a run for the handler to return (process-local; see the module doc)."""

    type_name = "response"
    attributes = (
        Attribute(
            "limit", int, default=1000, check=not_negative,
            help="most records kept for the response; more are counted but not returned",
        ),
    )

    #: Records per run id, oldest run first (this process only).
    runs: ClassVar[OrderedDict[str, ResponseRecords]] = OrderedDict()
    #: How many runs are remembered before the oldest is forgotten.
    max_runs: ClassVar[int] = 256
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def pop(cls, run_id: str) -> ResponseRecords | None:
        """Take (and forget) what run ``run_id`` wrote; None when it wrote nothing here."""
        with cls._lock:
            return cls.runs.pop(run_id, None)

    @classmethod
    def peek(cls, run_id: str) -> ResponseRecords | None:
        """What run ``run_id`` wrote so far (the live object), without taking it."""
        with cls._lock:
            return cls.runs.get(run_id)

    @classmethod
    def clear(cls) -> None:
        with cls._lock:
            cls.runs.clear()

    @property
    def limit(self) -> int:
        return int(self.option("limit"))

    def _entry(self, reset: bool = False) -> ResponseRecords:
        """The run's entry (the caller holds the lock)."""
        run_id = self.run_context.run_id
        entry = self.runs.get(run_id)
        if entry is None or reset:
            entry = self.runs[run_id] = ResponseRecords(limit=self.limit)
            while len(self.runs) > max(self.max_runs, 1):
                self.runs.popitem(last=False)
        return entry

    def setup(self) -> None:
        with self._lock:
            self._entry(reset=not self.run_context.resuming)

    def write_batch(self, records: Sequence[Record]) -> None:
        with self._lock:
            entry = self._entry()
            room = self.limit - len(entry.records)
            if room > 0:
                entry.records.extend(dict(r) for r in records[:room])
            entry.total += len(records)

    def describe(self) -> str:
        return f"response (up to {self.limit} records returned)"
