"""The source: Flink FLIP-27 style splits, the enumerator, readers, their contexts and the factory.

The pieces and who owns what:

* a :class:`Split` is a plain serialisable value with a ``split_id`` (a file, a byte range
  of a file, a range of ids, a stream partition); a split may carry a *position* so that a
  checkpointed split resumes where it stopped;
* the :class:`SplitEnumerator` owns discovery and assignment: it runs once per flow run
  (in the coordinator), hands splits to readers when they ask, takes back the splits of a
  reader that failed, and snapshots its state;
* a :class:`SourceReader` owns reading: it runs once per parallel reader, reads the splits
  it was given in batches, and snapshots its unfinished splits *with their positions*;
* the two contexts are the only way they talk, so each piece is testable with a fake
  context.

A :class:`Source` is the factory of both: a pure factory, it holds no run state.

The file is one contract and is read as one: the interfaces with their contract docstrings,
the two base classes that do the bookkeeping (:class:`StaticSplitEnumerator`,
:class:`SplitReader`) and the in-process contexts; that is why it is a little over 600 lines.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from active_data_flow.attributes import Configurable
from active_data_flow.context import RunContextSlot
from active_data_flow.record import DeadLetter, Record

__all__ = [
    "Boundedness",
    "InlineContexts",
    "Origins",
    "ReaderBatch",
    "ReaderStatus",
    "Source",
    "SourceReader",
    "SourceReaderContext",
    "Split",
    "SplitEnumerator",
    "SplitEnumeratorContext",
    "SplitReader",
    "StaticSplitEnumerator",
    "single_reader",
]


class Boundedness(enum.Enum):
    """Whether a source ends (a batch job) or runs until stopped (a stream)."""

    BOUNDED = "bounded"
    CONTINUOUS_UNBOUNDED = "unbounded"


@dataclass
class Split:
    """A unit of work a reader can process on its own.

    Subclasses add their own fields; every field must be JSON-serialisable because splits
    travel between processes and into checkpoints through :meth:`to_dict` / :meth:`from_dict`.
    ``position`` is the reader's progress inside the split (``None`` = from the start);
    its meaning belongs to the source (a byte offset, a stream id, a cursor value).
    """

    split_id: str
    position: Any = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Split:
        return cls(**dict(data))


def _as_list(values: Sequence[Any] | int | None) -> list[Any] | int | None:
    """A segment's values as plain data: an on-demand sequence (active_data_flow.formats) gives all of them
    in one pass (``to_list``) rather than one look-up each."""
    if values is None or isinstance(values, int):
        return values
    whole = getattr(values, "to_list", None)
    return list(whole() if callable(whole) else values)


class Origins:
    """Where each record of a batch came from, without a dict per record.

    A batch is a run of *segments* of consecutive records: each segment has a ``base``
    (``{"file": "in/a.csv"}``, ``{"split": "orders:0-999"}``) and, optionally, a ``key``
    with one value per record (``"line"`` and each row's line number) — given as a sequence,
    or as a first value counted up by one per record (JSON Lines without blank lines).
    :meth:`of` builds the origin of one record only when a dead letter needs it.

    Example::

        origins = Origins()
        origins.add(3, {"file": "a.csv"}, "line", [2, 3, 5])
        origins.of(2)   # {"file": "a.csv", "line": 5}
    """

    __slots__ = ("_segments", "count")

    def __init__(self) -> None:
        self._segments: list[tuple[int, int, dict[str, Any], str | None, Sequence[Any] | int | None]] = []
        self.count = 0

    def add(
        self, count: int, base: Mapping[str, Any], key: str | None = None, values: Sequence[Any] | int | None = None
    ) -> None:
        """The next ``count`` records come from ``base``; ``values`` (a sequence of ``count``
        values, or the first of consecutive integers) goes under ``key``."""
        if count <= 0:
            return
        self._segments.append((self.count, count, dict(base), key, values))
        self.count += count

    def extend(self, other: Origins | None, count: int, base: Mapping[str, Any]) -> None:
        """Append the origins of ``count`` more records: ``other``'s, or ``base`` when it has none."""
        if other is None or other.count != count:
            self.add(count, base)
            return
        for start, n, seg_base, key, values in other._segments:
            self._segments.append((self.count + start, n, seg_base, key, values))
        self.count += count

    def to_list(self) -> list[list[Any]]:
        """Plain data (JSON) for :meth:`from_list`: the batch's origins sent to another process."""
        return [[start, n, base, key, _as_list(values)] for start, n, base, key, values in self._segments]

    @classmethod
    def from_list(cls, data: Sequence[Sequence[Any]]) -> Origins:
        out = cls()
        for start, n, base, key, values in data:
            out._segments.append((int(start), int(n), dict(base), key, values))
            out.count = max(out.count, int(start) + int(n))
        return out

    def locate(self, index: int) -> dict[str, Any]:
        """The origin of record ``index``; ``-1`` is a record a step made anew, of which only the
        batch is known (its first origin and its size)."""
        if index < 0:
            return {"batch_from": self.of(0), "batch_records": self.count}
        return self.of(index)

    def of(self, index: int) -> dict[str, Any]:
        """The origin of record ``index`` of the batch (``{}`` when out of range)."""
        for start, n, base, key, values in self._segments:
            if start <= index < start + n:
                out = dict(base)
                if key is not None and values is not None:
                    out[key] = values + (index - start) if isinstance(values, int) else values[index - start]
                return out
        return {}


class ReaderStatus(enum.Enum):
    """What a reader can say after a poll (Flink's ``InputStatus``)."""

    MORE_AVAILABLE = "more"
    NOTHING_AVAILABLE = "nothing"
    END_OF_INPUT = "end"


@dataclass
class ReaderBatch:
    """The result of one :meth:`SourceReader.poll_batch`.

    ``dead_letters`` holds input that could not be parsed (it is committed with the batch),
    ``finished_splits`` the ids of splits this poll completed, ``input_bytes`` how many
    bytes of input the batch covered (for progress).
    """

    records: list[Record]
    status: ReaderStatus
    dead_letters: list[DeadLetter] = field(default_factory=list)
    finished_splits: list[str] = field(default_factory=list)
    input_bytes: int = 0
    #: where each record came from (for the origin of a step's or the sink's dead letter);
    #: None: only the split is known
    origins: Origins | None = None


class SplitEnumeratorContext(abc.ABC):
    """What an enumerator may do: see the readers and assign splits to them."""

    @property
    @abc.abstractmethod
    def parallelism(self) -> int:
        """How many readers the run has (fixed for the run)."""

    @abc.abstractmethod
    def assign_split(self, split: Split, reader_id: int) -> None:
        """Give ``split`` to reader ``reader_id``. Called by the enumerator while it answers a
        request; the coordinator records the assignment before the reader hears of it."""

    @abc.abstractmethod
    def signal_no_more_splits(self, reader_id: int) -> None:
        """Tell reader ``reader_id`` it will get no more splits (a bounded source is done)."""


class SourceReaderContext(abc.ABC):
    """What a reader may do: know who it is and ask for work."""

    @property
    @abc.abstractmethod
    def reader_id(self) -> int:
        """Index of this reader, ``0 … parallelism-1``."""

    @abc.abstractmethod
    def send_split_request(self) -> None:
        """Ask the enumerator for another split (answered by ``add_splits`` or ``notify_no_more_splits``)."""


class CollectingEnumeratorContext(SplitEnumeratorContext):
    """An enumerator context that keeps what the enumerator assigns, to any of ``parallelism``
    readers, in ``assigned`` (and who was told "no more" in ``done``): for listing every split
    of a source outside a run (a Flink job's descriptors, tests)."""

    def __init__(self, parallelism: int = 1) -> None:
        self._parallelism = parallelism
        self.assigned: list[Split] = []
        self.done: set[int] = set()

    @property
    def parallelism(self) -> int:
        return self._parallelism

    def assign_split(self, split: Split, reader_id: int) -> None:
        self.assigned.append(split)

    def signal_no_more_splits(self, reader_id: int) -> None:
        self.done.add(reader_id)


class DetachedReaderContext(SourceReaderContext):
    """The context of a reader that is handed its splits from outside (a Flink subtask, a
    test): there is no enumerator to ask."""

    def __init__(self, reader_id: int = 0) -> None:
        self._reader_id = reader_id

    @property
    def reader_id(self) -> int:
        return self._reader_id

    def send_split_request(self) -> None:
        pass


class SplitEnumerator(abc.ABC):
    """Discovers splits and assigns them to readers on request.

    Contract:

    * :meth:`start` discovers the initial splits (or restores them from ``checkpoint``);
    * :meth:`handle_split_request` answers one request from ``reader_id``: assign a split,
      or signal no more splits when a bounded source has none left, or do nothing for now
      (an unbounded source; the reader will ask again);
    * :meth:`add_splits_back` takes back splits (possibly with positions) of a reader
      that failed; they must be handed out again;
    * :meth:`snapshot_state` returns JSON-serialisable state from which :meth:`start`
      can resume; it must include the splits not yet assigned.
    """

    def __init__(self, context: SplitEnumeratorContext) -> None:
        self.context = context

    @abc.abstractmethod
    def start(self) -> None:
        """Discover the initial splits, or take them from the checkpoint it was created with.

        Called once, in the coordinator, before any reader asks; it may reach the source (list
        files, read partitions) and raise when the source cannot be reached (the run then fails
        before reading). It must not assign anything yet: readers ask."""

    @abc.abstractmethod
    def handle_split_request(self, reader_id: int) -> None:
        """Answer one request of reader ``reader_id`` through the context: assign it a split,
        or signal no more splits (bounded, nothing left), or do nothing for now (unbounded: the
        reader asks again). Called by the coordinator whenever a reader asks; must not block."""

    @abc.abstractmethod
    def add_splits_back(self, splits: Sequence[Split], reader_id: int) -> None:
        """Take back ``splits`` (with their positions) of a reader that failed, or of the
        checkpoint a resumed run starts from (``reader_id`` -1); they must be handed out again,
        before new work. Called by the coordinator; must never drop one."""

    def add_reader(self, reader_id: int) -> None:
        """A reader registered; most enumerators wait for its request instead."""

    @abc.abstractmethod
    def snapshot_state(self) -> dict[str, Any]:
        """JSON-serialisable state from which a new enumerator resumes (``create_enumerator(ctx,
        checkpoint)``): at least the splits not assigned yet. Called by the coordinator between
        assignments; must not change the enumerator."""

    def discover(self) -> None:
        """Look for new splits (called periodically for unbounded sources)."""

    def warnings(self) -> list[dict[str, Any]]:
        """What the run's summary should tell about this source's work, each a JSON-friendly
        mapping with at least ``message`` (e.g. readers left idle because a file could not be
        cut). Called by the coordinator when the run ends; must not reach the source."""
        return []

    def close(self) -> None:
        """Release resources; not guaranteed to be called when a run is killed."""


class StaticSplitEnumerator(SplitEnumerator):
    """An enumerator over a list of splits computed once (files, id ranges…).

    Subclasses implement :meth:`discover_splits`; the pending list, assignment on request,
    taking back, and snapshot/restore are done here. With ``unbounded=True`` it never
    signals the end and :meth:`discover` adds splits whose ids it has not seen yet.
    """

    def __init__(
        self,
        context: SplitEnumeratorContext,
        checkpoint: Mapping[str, Any] | None = None,
        *,
        unbounded: bool = False,
    ) -> None:
        super().__init__(context)
        self._checkpoint = checkpoint
        self._pending: list[Split] = []
        self._seen: set[str] = set()
        self.unbounded = unbounded

    @abc.abstractmethod
    def discover_splits(self) -> list[Split]:
        """Every split the source has now (called at start and, if unbounded, periodically)."""

    #: the split type it hands out: :meth:`split_from_dict` rebuilds its checkpoint's splits with it
    split_class: type[Split] = Split

    def split_from_dict(self, data: Mapping[str, Any]) -> Split:
        """Rebuild a split of this source (with its position) from :meth:`Split.to_dict`."""
        return self.split_class.from_dict(data)

    def start(self) -> None:
        if self._checkpoint is not None:
            self._pending = [self.split_from_dict(d) for d in self._checkpoint.get("pending", [])]
            self._seen = set(self._checkpoint.get("seen", []))
            return
        for split in self.discover_splits():
            self._pending.append(split)
            self._seen.add(split.split_id)

    def discover(self) -> None:
        if not self.unbounded:
            return
        for split in self.discover_splits():
            if split.split_id not in self._seen:
                self._pending.append(split)
                self._seen.add(split.split_id)

    def handle_split_request(self, reader_id: int) -> None:
        if self._pending:
            self.context.assign_split(self._pending.pop(0), reader_id)
        elif not self.unbounded:
            self.context.signal_no_more_splits(reader_id)

    def add_splits_back(self, splits: Sequence[Split], reader_id: int) -> None:
        # Returned splits go first: they are the oldest work.
        self._pending[:0] = list(splits)

    @property
    def pending(self) -> list[Split]:
        return list(self._pending)

    def snapshot_state(self) -> dict[str, Any]:
        return {"pending": [s.to_dict() for s in self._pending], "seen": sorted(self._seen)}


class SourceReader(abc.ABC):
    """Reads the splits assigned to it, one batch per :meth:`poll_batch`.

    Contract:

    * :meth:`poll_batch` must not block for long; with nothing to read it returns an empty
      batch with ``NOTHING_AVAILABLE`` (the runner then asks for splits or waits), and
      ``END_OF_INPUT`` once it holds no split and was told there are no more;
    * after a poll, :meth:`snapshot_state` must describe the unfinished splits so that
      reading resumes *after* the last record returned — beware off-by-one;
    * a split finished by a poll is listed in ``finished_splits`` of that batch and is no
      longer in the snapshot;
    * :meth:`close` is not guaranteed to be called when a process is killed.
    """

    def __init__(self, context: SourceReaderContext) -> None:
        self.context = context

    def start(self) -> None:
        """Called once before the first poll."""

    @abc.abstractmethod
    def add_splits(self, splits: Sequence[Split]) -> None:
        """Take ``splits`` to read (from the enumerator, or from a checkpoint with positions: read
        each from its position). Called between polls, in the reader's own process; must not read."""

    @abc.abstractmethod
    def notify_no_more_splits(self) -> None:
        """No more splits will come: once the splits it holds are done, :meth:`poll_batch` says
        ``END_OF_INPUT``. Called between polls."""

    @abc.abstractmethod
    def poll_batch(self, max_records: int) -> ReaderBatch:
        """Up to ``max_records`` records (and the input it could not parse, as dead letters with
        their position). Called by the reader loop (:mod:`active_data_flow.engine.loop`) again and again; must
        not block for long and must never return a record twice unless the run resumed from a
        checkpoint taken before it. With nothing to read: an empty batch, ``NOTHING_AVAILABLE``
        (and a split request through the context when it holds no split)."""

    @abc.abstractmethod
    def snapshot_state(self) -> list[Split]:
        """The unfinished splits, each with the position *after* the last record returned. Called
        by the reader loop after the batch was written, for the checkpoint; must not change the
        reader."""

    def notify_checkpoint_complete(self) -> None:
        """The records of the last poll are written by the sink and the state after it is
        checkpointed: a source that acknowledges what it read (a message queue, a consumer
        group) acknowledges them now, never earlier (at-least-once)."""
        self.acknowledge(self.take_acknowledgement())

    def take_acknowledgement(self) -> Any:
        """What :meth:`notify_checkpoint_complete` would acknowledge now, taken from the reader as
        a token of plain JSON values, for a runner that acknowledges on a schedule of its own
        (Flink: once the checkpoint that covers the write completed; the token may be kept in
        that checkpoint). None: nothing to acknowledge."""
        return None

    def acknowledge(self, token: Any) -> None:
        """Acknowledge what :meth:`take_acknowledgement` returned (None: nothing)."""

    def close(self) -> None:
        """Release resources."""


class SplitReader(SourceReader):
    """A reader that works through its splits one at a time.

    Subclasses implement :meth:`read_split` (one batch from the open split, updating
    ``split.position``) and may override :meth:`open_split` / :meth:`close_split`. Split
    requests are sent here: at start and whenever the reader runs out of splits, at most
    one outstanding request at a time.
    """

    def __init__(self, context: SourceReaderContext) -> None:
        super().__init__(context)
        self._queue: list[Split] = []
        self._current: Split | None = None
        self._no_more = False
        self._requested = False

    def start(self) -> None:
        self._request()

    def _request(self) -> None:
        if not self._requested and not self._no_more:
            self._requested = True
            self.context.send_split_request()

    def add_splits(self, splits: Sequence[Split]) -> None:
        self._queue.extend(splits)
        self._requested = False

    def notify_no_more_splits(self) -> None:
        self._no_more = True
        self._requested = False

    def open_split(self, split: Split) -> None:
        """Prepare to read ``split`` from ``split.position``."""

    def close_split(self, split: Split) -> None:
        """The split is finished or the reader closes."""

    @abc.abstractmethod
    def read_split(self, split: Split, max_records: int) -> tuple[ReaderBatch, bool]:
        """Read up to ``max_records`` from the open split; return the batch and whether the split is done."""

    def poll_batch(self, max_records: int) -> ReaderBatch:
        """Read up to ``max_records`` from the held splits, continuing into the next split
        when one ends (many small files still make full batches)."""
        records: list[Record] = []
        dead: list[DeadLetter] = []
        finished: list[str] = []
        origins = Origins()
        nbytes = 0
        idle_status: ReaderStatus | None = None
        while len(records) < max_records:
            if self._current is None:
                if not self._queue:
                    self._request()  # may be answered at once (one reader in-process)
                if not self._queue:
                    break
                self._current = self._queue.pop(0)
                self.open_split(self._current)
            split = self._current
            batch, done = self.read_split(split, max_records - len(records))
            if batch.records:
                origins.extend(batch.origins, len(batch.records), {"split": split.split_id})
            if records:
                records.extend(batch.records)
            else:
                records = batch.records
            dead.extend(batch.dead_letters)
            finished.extend(batch.finished_splits)
            nbytes += batch.input_bytes
            if done:
                self.close_split(split)
                self._current = None
                finished.append(split.split_id)
            elif not batch.records and not batch.dead_letters:
                idle_status = batch.status  # an open split with nothing new: the subclass decides
                break
        exhausted = self._current is None and not self._queue
        if exhausted and not self._no_more:
            self._request()
        if records or dead:
            status = ReaderStatus.END_OF_INPUT if exhausted and self._no_more else ReaderStatus.MORE_AVAILABLE
        elif exhausted:
            status = ReaderStatus.END_OF_INPUT if self._no_more else ReaderStatus.NOTHING_AVAILABLE
        else:
            status = idle_status or ReaderStatus.NOTHING_AVAILABLE
        return ReaderBatch(records, status, dead, finished, nbytes, origins)

    def snapshot_state(self) -> list[Split]:
        held = [self._current] if self._current is not None else []
        return held + list(self._queue)

    def close(self) -> None:
        if self._current is not None:
            self.close_split(self._current)
            self._current = None


class Source(Configurable, abc.ABC):
    """A factory of split enumerators and source readers.

    Subclasses set ``type_name`` and ``attributes`` and implement the three factory
    methods. ``run_context`` is set by the engine before the enumerator or a reader is created.
    """

    run_context = RunContextSlot()

    @classmethod
    def _kind(cls) -> str:
        return "source"

    @property
    def boundedness(self) -> Boundedness:
        return Boundedness.BOUNDED

    @abc.abstractmethod
    def create_enumerator(
        self, context: SplitEnumeratorContext, checkpoint: Mapping[str, Any] | None = None
    ) -> SplitEnumerator:
        """A new enumerator, or one restored from ``checkpoint`` (its ``snapshot_state``).
        Called once per run, in the coordinator; must not discover yet (that is ``start``)."""

    @abc.abstractmethod
    def create_reader(self, context: SourceReaderContext) -> SourceReader:
        """A new reader, in the process that will read (a reader process, a Flink subtask). Called
        once per reader; must not read or connect yet (that is ``start`` and ``poll_batch``)."""

    #: the split type of this source: :meth:`split_from_dict` rebuilds splits with it
    split_class: type[Split] = Split

    def split_from_dict(self, data: Mapping[str, Any]) -> Split:
        """Rebuild a split (with its position) from :meth:`Split.to_dict`: splits travel between
        processes and into checkpoints as plain data. Must accept every dict ``to_dict`` made.
        By default ``split_class.from_dict``: a source sets ``split_class`` rather than this."""
        return self.split_class.from_dict(data)

    def total_work(self, splits: Sequence[Split]) -> int | None:
        """Total input bytes of ``splits`` when known (drives the progress bar), else None."""
        return None

    def on_run_success(self) -> None:
        """Called once in the coordinator after the whole run committed (incremental sources save their cursor)."""

    def each(self, batch_size: int = 500) -> Iterator[Record]:
        """Yield every record with one reader in this process (bounded sources; for scripts and tests).

        Records that could not be parsed are skipped here; the engine sends them to the
        dead-letter destination instead.
        """
        for batch in single_reader(self, batch_size):
            yield from batch.records
            if batch.status is ReaderStatus.END_OF_INPUT:
                return


class InlineContexts(SplitEnumeratorContext, SourceReaderContext):
    """Both contexts for one enumerator and one reader in the same process."""

    def __init__(self, record: Callable[[Split, int], bool] | None = None) -> None:
        # ``record(split, reader_id)`` checkpoints an assignment; False: a stale copy, skip it
        self.enumerator: SplitEnumerator | None = None
        self.reader: SourceReader | None = None
        self._record = record
        self._again = False

    @property
    def parallelism(self) -> int:
        return 1

    def assign_split(self, split: Split, reader_id: int) -> None:
        assert self.reader is not None
        if self._record is not None and not self._record(split, reader_id):
            self._again = True
            return
        self.reader.add_splits([split])

    def signal_no_more_splits(self, reader_id: int) -> None:
        assert self.reader is not None
        self.reader.notify_no_more_splits()

    @property
    def reader_id(self) -> int:
        return 0

    def send_split_request(self) -> None:
        assert self.enumerator is not None
        self.enumerator.handle_split_request(0)
        while self._again:  # a stale copy was skipped: ask again
            self._again = False
            self.enumerator.handle_split_request(0)


def single_reader(source: Source, batch_size: int = 500) -> Iterator[ReaderBatch]:
    """Run ``source`` with one reader in this process, yielding its batches (no checkpoints)."""
    ctx = InlineContexts()
    enumerator = source.create_enumerator(ctx)
    ctx.enumerator = enumerator
    enumerator.start()
    reader = source.create_reader(ctx)
    ctx.reader = reader
    reader.start()
    try:
        while True:
            batch = reader.poll_batch(batch_size)
            yield batch
            if batch.status is ReaderStatus.END_OF_INPUT:
                return
            if batch.status is ReaderStatus.NOTHING_AVAILABLE and not batch.records:
                return
    finally:
        reader.close()
        enumerator.close()
