"""Base classes of sources and sinks.

A :class:`Source` is a factory of a :class:`~core.splits.SplitEnumerator` and of
:class:`~core.splits.SourceReader` s (Flink FLIP-27); a :class:`Sink` writes records.
Both take a configuration mapping checked against the attributes the subclass declares
(see :mod:`core.attributes`); every problem is reported at once.

Example — a sink that collects records::

    class ListSink(Sink):
        type_name = "list"
        attributes = (Attribute("name", str, required=True),)

        def write_batch(self, records):
            STORE.setdefault(self.option("name"), []).extend(records)
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.attributes import Configurable
from core.errors import ConfigError
from core.records import Record
from core.splits import (
    Boundedness,
    ReaderStatus,
    SourceReader,
    SourceReaderContext,
    Split,
    SplitEnumerator,
    SplitEnumeratorContext,
)

__all__ = ["RunContext", "Sink", "Source", "checked_init"]


@dataclass
class RunContext:
    """What a connector knows about the run it is part of.

    ``state_dir`` is the run's own directory (checkpoints, default dead letters);
    ``resuming`` is true when the run continues from a checkpoint, so a sink must not
    truncate what an earlier attempt wrote; ``store`` is the flow's state store (or None).
    """

    flow_name: str = "flow"
    run_id: str = "run"
    state_dir: str = ".adf"
    resuming: bool = False
    reader_id: int = 0
    parallelism: int = 1
    store: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


class Source(Configurable, abc.ABC):
    """A factory of split enumerators and source readers.

    Subclasses set ``type_name`` and ``attributes`` and implement the three factory
    methods. ``run_context`` is set by the engine before the enumerator or a reader is created.
    """

    run_context: RunContext = RunContext()

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
        """A new enumerator, or one restored from ``checkpoint`` (its ``snapshot_state``)."""

    @abc.abstractmethod
    def create_reader(self, context: SourceReaderContext) -> SourceReader: ...

    @abc.abstractmethod
    def split_from_dict(self, data: Mapping[str, Any]) -> Split:
        """Rebuild a split (with its position) from :meth:`Split.to_dict`."""

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
        from core.engine import single_reader

        for batch in single_reader(self, batch_size):
            yield from batch.records
            if batch.status is ReaderStatus.END_OF_INPUT:
                return


class Sink(Configurable, abc.ABC):
    """Writes records somewhere.

    Life cycle, per run: :meth:`setup` once in the coordinator before any reader starts
    (create a table, truncate a file — not when ``run_context.resuming``); then in each
    reader :meth:`open`, :meth:`write_batch` (or :meth:`write`) any number of times,
    :meth:`flush` after every batch — when flush returns, what was written must survive
    a crash of this process, because the engine checkpoints right after — and :meth:`close`.

    What the engine does with errors raised by ``write_batch`` / ``flush``: an outage (the
    destination cannot be reached or is not ready: see :func:`core.retry.unavailable_reason`)
    is retried within ``runtime.sink_retry``, then the run fails with its checkpoint; an
    error about the records (:class:`~core.errors.RecordValidationError`, a constraint or
    type error of the driver) makes the engine find the refused records by writing halves of
    the batch, and dead-letters only those; a :class:`~core.errors.ConfigError` fails the run.
    ``write_batch`` may return how many records it wrote: a number other than the batch's
    size fails the run (records would otherwise vanish without a trace).
    """

    run_context: RunContext = RunContext()
    #: True when writing the same record twice leaves one copy (upsert by key):
    #: then a resumed run is exactly-once.
    idempotent: bool = False

    @classmethod
    def _kind(cls) -> str:
        return "sink"

    def setup(self) -> None:
        """Prepare the destination once per run (in the coordinator)."""

    def open(self) -> None:
        """Open connections in the reader process."""

    def write(self, record: Record) -> None:
        """Write one record (by default a batch of one)."""
        self.write_batch([record])

    def write_batch(self, records: Sequence[Record]) -> int | None:
        """Write a batch (by default one :meth:`write` per record: override one of the two)."""
        if type(self).write is Sink.write:
            raise TypeError(f"{type(self).__name__} must implement write() or write_batch()")
        for record in records:
            self.write(record)
        return None

    def flush(self) -> None:
        """Make everything written so far durable."""

    def close(self) -> None:
        """Release resources; not guaranteed to be called when a process is killed."""

    def describe(self) -> str:
        """Where records go, for summaries (``sqlite:///out.db table orders``)."""
        return self.type_name or type(self).__name__


def checked_init(
    obj: Source | Sink,
    config: Mapping[str, Any] | None,
    kwargs: Mapping[str, Any],
    cross_check: Callable[[Mapping[str, Any]], list[str]],
) -> None:
    """Validate like :class:`Configurable` plus ``cross_check`` (the problems that involve
    several attributes); report every problem at once as one :class:`ConfigError`."""
    problems: list[str] = []
    try:
        Configurable.__init__(obj, config, **kwargs)
        values: Mapping[str, Any] = obj.config
    except ConfigError as exc:
        problems.extend(exc.problems)
        values = {**dict(config or {}), **kwargs}
    problems.extend(cross_check(values))
    if problems:
        raise ConfigError(f"{obj._kind()} {obj.type_name!r}", problems)
