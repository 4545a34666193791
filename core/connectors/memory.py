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

Example::

    source = MemorySource(records=[{"id": 1}, {"id": 2}], splits=2)
    sink = MemorySink(name="out")
    sink.write_batch(list(source.each()))
    assert MemorySink.get("out") == [{"id": 1}, {"id": 2}]
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from core.attributes import Attribute
from core.connectors.base import Sink, Source
from core.records import Record
from core.splits import (
    ReaderBatch,
    ReaderStatus,
    SourceReader,
    SourceReaderContext,
    Split,
    SplitEnumerator,
    SplitEnumeratorContext,
    SplitReader,
    StaticSplitEnumerator,
)

__all__ = ["MemorySink", "MemorySource", "MemorySplit"]


def _check_records(value: Any) -> str | None:
    bad = [i for i, item in enumerate(value) if not isinstance(item, Mapping)]
    if bad:
        return f"every record must be a mapping; items {', '.join(map(str, bad[:5]))} are not"
    return None


def _check_positive(value: Any) -> str | None:
    return None if value >= 1 else f"must be at least 1, got {value}"


@dataclass
class MemorySplit(Split):
    """Split ``index`` of ``count``: the records ``records[index::count]``.

    ``position`` is how many of them were already read (``None`` = none).
    """

    index: int = 0
    count: int = 1


class _MemoryEnumerator(StaticSplitEnumerator):
    def __init__(
        self, context: SplitEnumeratorContext, checkpoint: Mapping[str, Any] | None, splits: int
    ) -> None:
        super().__init__(context, checkpoint)
        self._splits = splits

    def discover_splits(self) -> list[Split]:
        return [MemorySplit(f"memory-{i}", None, i, self._splits) for i in range(self._splits)]

    def split_from_dict(self, data: Mapping[str, Any]) -> Split:
        return MemorySplit.from_dict(data)


class _MemoryReader(SplitReader):
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
        batch = ReaderBatch([copy.deepcopy(r) for r in chunk], ReaderStatus.MORE_AVAILABLE)
        return batch, split.position >= len(mine)


class MemorySource(Source):
    """Records given in the configuration, dealt round-robin into ``splits`` splits."""

    type_name = "memory"
    attributes = (
        Attribute(
            "records", list, required=True, help="the records (a list of mappings)", check=_check_records
        ),
        Attribute(
            "splits", int, default=1, help="how many splits to deal the records into", check=_check_positive
        ),
    )

    def create_enumerator(
        self, context: SplitEnumeratorContext, checkpoint: Mapping[str, Any] | None = None
    ) -> SplitEnumerator:
        return _MemoryEnumerator(context, checkpoint, int(self.option("splits")))

    def create_reader(self, context: SourceReaderContext) -> SourceReader:
        return _MemoryReader(context, [dict(r) for r in self.option("records")])

    def split_from_dict(self, data: Mapping[str, Any]) -> Split:
        return MemorySplit.from_dict(data)

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
