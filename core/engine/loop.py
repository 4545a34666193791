"""The at-least-once loop of one reader: poll → write → checkpoint → acknowledge.

Every target reads through this loop:

1. **poll** a batch from the :class:`~active_data_flow.source.SourceReader`;
2. **write** it: the caller's ``write`` sends it through the steps into the sink and writes its
   dead letters (:meth:`active_data_flow.engine.Pipeline.commit`); when it returns, the sink has flushed;
3. **checkpoint**: the caller's ``checkpoint`` stores the reader's unfinished splits with their
   positions (:meth:`~active_data_flow.source.SourceReader.snapshot_state`) and the splits it finished;
4. **acknowledge**: :meth:`~active_data_flow.source.SourceReader.notify_checkpoint_complete` lets the
   source release what the checkpoint covers (a stream's entries, a queue's messages).

Only in this order: a process that dies after 2 and before 3 writes that batch again when the run
resumes (at-least-once; exactly-once with an upsert sink), and nothing is acknowledged that a
checkpoint does not cover. The local runner drives the whole loop (:meth:`ReaderLoop.run`, one
reader in the coordinator or one per process); a Flink operator writes by emitting the batch
downstream, so it calls :meth:`ReaderLoop.poll` and :meth:`ReaderLoop.commit` around its own
``yield`` and leaves step 3 to Flink's checkpoints.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

from active_data_flow.source import ReaderBatch, ReaderStatus, SourceReader

__all__ = ["ReaderLoop", "steady_gc"]

#: ``write(batch)``: steps → sink → dead letters, durable when it returns; what it returns
#: (the batch's counts) is passed on to ``committed``
Write = Callable[[ReaderBatch], Any]
#: ``checkpoint(reader, batch)``: store the reader's positions and the splits the batch finished
Checkpoint = Callable[[SourceReader, ReaderBatch], None]
#: ``committed(batch, written)``: the batch is written, checkpointed and acknowledged
Committed = Callable[[ReaderBatch, Any], None]


#: Allocations between two collections of the youngest generation while a reader loop runs (the
#: interpreter's default is 700): a batch's records stay alive until it is written, so with the
#: default most collections would walk a half-read batch and find nothing to free.
GC_YOUNG_THRESHOLD = 10_000


_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[tuple[int, int, int], bool] = ((700, 10, 10), False)


@contextlib.contextmanager
def steady_gc(young: int = GC_YOUNG_THRESHOLD) -> Iterator[None]:
    """While the block runs, the cyclic garbage collector leaves alone what was alive when it
    started (:func:`gc.freeze`: modules, the flow's objects) and collects the youngest generation
    every ``young`` allocations at most; both are restored when it ends. Cycles are still collected
    (the collector stays enabled); a process that has frozen objects already keeps them so. Runs
    in several threads of one process (a heartbeat server) share the setting: the first to start
    applies it, the last to end restores it."""
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            thresholds = gc.get_threshold()
            freeze = gc.isenabled() and gc.get_freeze_count() == 0
            _gc_saved = (thresholds, freeze)
            if freeze:
                gc.freeze()
            if 0 < thresholds[0] < young:
                gc.set_threshold(young, *thresholds[1:])
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0:
                thresholds, freeze = _gc_saved
                gc.set_threshold(*thresholds)
                if freeze:
                    gc.unfreeze()


def has_content(batch: ReaderBatch) -> bool:
    """Whether a polled batch needs a commit: records, dead letters or finished splits."""
    return bool(batch.records or batch.dead_letters or batch.finished_splits)


class ReaderLoop:
    """Drives one :class:`~active_data_flow.source.SourceReader` through poll → write → checkpoint → acknowledge."""

    def __init__(
        self,
        reader: SourceReader,
        batch_size: int,
        *,
        checkpoint: Checkpoint | None = None,
        committed: Committed | None = None,
    ) -> None:
        self.reader = reader
        self.batch_size = batch_size
        self._checkpoint = checkpoint
        self._committed = committed

    def poll(self) -> ReaderBatch:
        """Step 1: the reader's next batch (possibly empty)."""
        return self.reader.poll_batch(self.batch_size)

    def commit(self, batch: ReaderBatch, written: Any = None) -> None:
        """Steps 3 and 4, once the caller has written ``batch`` (step 2); nothing for an empty batch."""
        if not has_content(batch):
            return
        if self._checkpoint is not None:
            self._checkpoint(self.reader, batch)
        self.reader.notify_checkpoint_complete()
        if self._committed is not None:
            self._committed(batch, written)

    def run(
        self,
        write: Write,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        on_idle: Callable[[], None] | None = None,
        before_poll: Callable[[], bool] | None = None,
    ) -> bool | None:
        """Loop until the input ends (True) or ``should_stop()`` says so after a batch (False).

        ``write`` is called for a batch with records or dead letters (a batch that only finished
        splits is checkpointed without a write). ``on_idle`` runs when the reader had nothing
        (wait there: sleep, discover new splits, wait for a message). ``before_poll`` runs before
        every poll; when it returns False the loop ends at once (None) — the process that owns
        the run is gone and the next run resumes from the checkpoints. The collector runs
        less often meanwhile (:func:`steady_gc`).
        """
        with steady_gc():
            return self._run(write, should_stop, on_idle, before_poll)

    def _run(
        self,
        write: Write,
        should_stop: Callable[[], bool],
        on_idle: Callable[[], None] | None,
        before_poll: Callable[[], bool] | None,
    ) -> bool | None:
        while True:
            if before_poll is not None and not before_poll():
                return None
            batch = self.poll()
            if has_content(batch):
                written = write(batch) if (batch.records or batch.dead_letters) else None
                self.commit(batch, written)
            if batch.status is ReaderStatus.END_OF_INPUT:
                return True
            if should_stop():
                return False
            if batch.status is ReaderStatus.NOTHING_AVAILABLE and on_idle is not None:
                on_idle()
