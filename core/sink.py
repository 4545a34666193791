"""The sink: where a flow's records go.

A :class:`Sink` takes a configuration mapping checked against the attributes the subclass
declares (see :mod:`active_data_flow.attributes`); every problem is reported at once.

Example — a sink that collects records::

    class ListSink(Sink):
        type_name = "list"
        attributes = (Attribute("name", str, required=True),)

        def write_batch(self, records):
            STORE.setdefault(self.option("name"), []).extend(records)
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from active_data_flow.attributes import Configurable
from active_data_flow.context import RunContextSlot
from active_data_flow.record import Record

__all__ = ["Sink"]


class Sink(Configurable, abc.ABC):
    """Writes records somewhere.

    Life cycle, per run: :meth:`setup` once in the coordinator before any reader starts
    (create a table, truncate a file — not when ``run_context.resuming``); then in each
    reader :meth:`open`, :meth:`write_batch` (or :meth:`write`) any number of times,
    :meth:`flush` after every batch — when flush returns, what was written must survive
    a crash of this process, because the engine checkpoints right after — and :meth:`close`.

    What the engine does with errors raised by ``write_batch`` / ``flush``: an outage (the
    destination cannot be reached or is not ready: see :func:`active_data_flow.retry.unavailable_reason`)
    is retried within ``runtime.sink_retry``, then the run fails with its checkpoint; an
    error about the records (:class:`~active_data_flow.errors.RecordValidationError`, a constraint or
    type error of the driver) makes the engine find the refused records by writing halves of
    the batch, and dead-letters only those; a :class:`~active_data_flow.errors.ConfigError` fails the run.
    ``write_batch`` may return how many records it wrote: a number other than the batch's
    size fails the run (records would otherwise vanish without a trace).
    """

    run_context = RunContextSlot()
    #: True when writing the same record twice leaves one copy (upsert by key): then the batch a
    #: resumed run writes again collapses, and the run is exactly-once (the coordinator says so
    #: when it resumes).
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
