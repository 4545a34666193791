"""Readers in processes (``parallelism`` > 1): one process per reader, the coordinator in this one."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import time
import traceback
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from active_data_flow import telemetry
from active_data_flow.context import RunContext, RunNotes
from active_data_flow.engine.checkpoints import Checkpoints
from active_data_flow.engine.coordinator import Coordinator, ReaderFailed, pending_splits
from active_data_flow.engine.dead_letter_writer import DeadLetterWriter
from active_data_flow.engine.loop import ReaderLoop
from active_data_flow.engine.pipeline import Pipeline
from active_data_flow.errors import AdfError
from active_data_flow.logs import get_logger, log_event, run_id_var
from active_data_flow.outcome import BatchCounts
from active_data_flow.redact import redact_text
from active_data_flow.registry import registry
from active_data_flow.source import (
    ReaderBatch,
    SourceReader,
    SourceReaderContext,
    Split,
    SplitEnumeratorContext,
)

if TYPE_CHECKING:
    from active_data_flow.source import Source
    from active_data_flow.spec import FlowSpec

_log = get_logger("engine")


class ProcessReaders:
    """The readers of a run with ``parallelism`` > 1, one process each.

    The coordinator's enumerator hands out splits when a reader asks (``request``); a reader
    reports each committed batch (``progress``), its end (``done``) or its failure (``error``)
    over its own one-way pipe. A reader that dies is replaced (up to
    ``runtime.max_reader_restarts``) and its unfinished splits go back to the enumerator from its
    last checkpoint.
    """

    def __init__(self, run: Coordinator) -> None:
        self.run = run
        self.processes: dict[int, Any] = {}
        self.inboxes: dict[int, Any] = {}
        #: each reader's own channel to the coordinator (the receiving end of a one-way pipe)
        self.outboxes: dict[int, Any] = {}
        self.done: set[int] = set()
        self.waiting: set[int] = set()
        self.again: set[int] = set()

    def alive_readers(self) -> set[int]:
        return {i for i, p in self.processes.items() if p.is_alive()}

    def send(self, reader_id: int, message: tuple[Any, ...]) -> None:
        self.inboxes[reader_id].put(message)

    def assign(self, split: Split, reader_id: int) -> None:
        if not self.run.record_assignment(split, reader_id):
            self.again.add(reader_id)
            return
        self.waiting.discard(reader_id)
        self.send(reader_id, ("splits", [split.to_dict()]))

    def _request(self, reader_id: int) -> None:
        self.run.enumerator.handle_split_request(reader_id)
        while reader_id in self.again:  # stale copies were skipped: ask again
            self.again.discard(reader_id)
            self.run.enumerator.handle_split_request(reader_id)

    def _start_reader(self, reader_id: int) -> None:
        mp = _mp_context()
        inbox = mp.Queue()
        self.inboxes[reader_id] = inbox
        # One channel per reader, not one queue for all: a reader killed in the middle of a
        # message (SIGKILL, the OOM killer) would leave a shared queue's write lock taken and the
        # other readers blocked on it for good; here it only cuts its own channel short.
        receive, send = mp.Pipe(duplex=False)
        self.outboxes[reader_id] = receive
        proc = mp.Process(
            target=_reader_main,
            name=f"adf-reader-{self.run.spec.name}-{reader_id}",
            args=(
                self.run.spec, self.run.run_ctx, self.run.run_dir, self.run.checkpoints, reader_id, inbox, send,
                self.run.batch_size, self.run.lock_fd if _mp_context().get_start_method() == "fork" else None,
            ),
            daemon=True,
        )
        with _no_log_writes_in_flight():
            proc.start()
        send.close()  # the reader holds the only sending end: when it dies, its channel ends (EOF)
        self.processes[reader_id] = proc

    def _receive(self, timeout: float) -> list[tuple[Any, ...]]:
        """The messages the readers have sent, waiting up to ``timeout`` for the first."""
        from multiprocessing.connection import wait

        by_conn = {conn: reader_id for reader_id, conn in self.outboxes.items()}
        messages: list[tuple[Any, ...]] = []
        ready: list[Any] = wait(list(by_conn), timeout)
        for conn in ready:
            try:
                messages.append(conn.recv())
            except (EOFError, OSError):  # the reader ended (or died mid-message): _check_readers sees to it
                self.outboxes.pop(by_conn[conn], None)
                conn.close()
        return messages

    def serve(self) -> bool:
        """Start the readers and serve them until they are done (True: the input ended) or stopped."""
        ctx = _ProcessEnumeratorContext(self)
        self.run.enumerator = self.run.restore_enumerator(ctx)
        self.run.setup_sinks()
        self.run.dead_letter_destination = DeadLetterWriter(
            self.run.spec.dead_letter, self.run.run_ctx, self.run.run_dir, self.run.reg
        ).destination
        self.run.progress.bytes_total = self.run.source.total_work(pending_splits(self.run.enumerator))
        for i in range(self.run.parallelism):
            self._start_reader(i)
            self.run.enumerator.add_reader(i)
        deadline = self.run.deadline()
        discovery_every = float(self.run.runtime.get("discovery_interval_s", 5.0))
        next_discovery = time.monotonic() + discovery_every
        stop_sent = False
        try:
            while len(self.done) < self.run.parallelism:
                messages = self._receive(timeout=0.2)
                for msg in messages:
                    self._handle(msg)
                now = time.monotonic()
                if self.run.unbounded and now >= next_discovery:
                    self.run.enumerator.discover()
                    next_discovery = now + discovery_every
                    for reader_id in sorted(self.waiting):  # readers still waiting for work
                        self._request(reader_id)
                if (self.run.stopping or (deadline is not None and now >= deadline)) and not stop_sent:
                    self._stop_all()
                    stop_sent = True
                if not messages:
                    self._check_readers()
        except BaseException:
            # The run failed: its checkpoint stays for the next run; stop the other readers now.
            for proc in self.processes.values():
                if proc.is_alive():
                    proc.kill()
            raise
        finally:
            self._end()
        return not stop_sent

    def _stop_all(self) -> None:
        """Tell every reader still running to stop after its current batch."""
        for i in self.inboxes:
            if i not in self.done:
                self.send(i, ("stop",))

    def _end(self) -> None:
        """Wait for the reader processes (killing one that does not end), close the channels and the enumerator."""
        for proc in self.processes.values():
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        for conn in self.outboxes.values():
            conn.close()
        self.outboxes.clear()
        self.run.enumerator.close()

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind, reader_id = msg[0], msg[1]
        if kind == "request":
            if reader_id in self.processes and reader_id not in self.done:
                self.waiting.add(reader_id)
                self._request(reader_id)
        elif kind == "progress":
            _, _, counts, d_bytes, finished, reasons, notes = msg
            self.run.run_ctx.notes.merge(notes)
            self.run.forget(reader_id, finished)
            self.run.report(counts, d_bytes, len(finished), reasons)
        elif kind == "done":
            self.run.run_ctx.notes.merge(msg[2] if len(msg) > 2 else None)
            self.done.add(reader_id)
        elif kind == "error":
            _, _, message, error_type, backtrace, in_flight, reasons, notes = msg
            self.run.run_ctx.notes.merge(notes)
            if in_flight:
                self.run.counts.add(in_flight)
            if reasons:
                self.run.reasons.merge(reasons)
            raise ReaderFailed(message, error_type, backtrace)

    def _check_readers(self) -> None:
        for reader_id, proc in list(self.processes.items()):
            if reader_id in self.done or proc.is_alive():
                continue
            # Read what it said before it died (a late "done" means it finished cleanly); a
            # message it was cut off in the middle of ends its channel (EOF) instead of blocking.
            conn = self.outboxes.pop(reader_id, None)
            if conn is not None:
                with contextlib.suppress(EOFError, OSError):
                    while conn.poll(0):
                        self._handle(conn.recv())
                conn.close()
            if reader_id in self.done:
                continue
            self.run.restarts += 1
            log_event(
                _log, "reader process died; handing its splits back", logging.WARNING,
                reader=reader_id, exitcode=proc.exitcode, restarts=self.run.restarts,
            )
            if self.run.restarts > int(self.run.runtime.get("max_reader_restarts", 3)):
                raise AdfError(
                    f"reader {reader_id} died (exit code {proc.exitcode}) and the restart limit "
                    f"runtime.max_reader_restarts={self.run.runtime.get('max_reader_restarts')} is reached; "
                    "run the flow again to resume from the checkpoint"
                )
            splits = self.run.unfinished(reader_id, self.run.assignments.get(reader_id, {}))
            self.run.assignments[reader_id] = {}
            self.run.allow.update(s.split_id for s in splits)
            self.run.enumerator.add_splits_back(splits, reader_id)
            self.run.save_enumerator(self.run.enumerator)
            self.run.checkpoints.remove_reader(reader_id)
            self._start_reader(reader_id)



class _ProcessEnumeratorContext(SplitEnumeratorContext):
    def __init__(self, readers: ProcessReaders) -> None:
        self.readers = readers

    @property
    def parallelism(self) -> int:
        return self.readers.run.parallelism

    def assign_split(self, split: Split, reader_id: int) -> None:
        self.readers.assign(split, reader_id)

    def signal_no_more_splits(self, reader_id: int) -> None:
        self.readers.send(reader_id, ("no_more",))


class _ProcessReaderContext(SourceReaderContext):
    def __init__(self, reader_id: int, outbox: Any) -> None:
        self._reader_id = reader_id
        self.outbox = outbox

    @property
    def reader_id(self) -> int:
        return self._reader_id

    def send_split_request(self) -> None:
        self.outbox.send(("request", self._reader_id))


@contextlib.contextmanager
def _no_log_writes_in_flight() -> Iterator[None]:
    """Hold every logging handler's lock while a reader process is forked.

    A fork copies only the forking thread. Another thread in the middle of writing a log line
    (the heartbeat server's request threads, a library's worker) holds its stream's internal lock
    at that moment, and in the child that lock then stays held forever: the reader's first log
    line would never return. logging itself only resets the handlers' own locks in the child, not
    the streams'. Holding the handler locks here means no thread is writing through them then.
    """
    handlers: dict[int, logging.Handler] = {}
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", ()):
            handlers.setdefault(id(handler), handler)
    held: list[logging.Handler] = []
    try:
        for handler in handlers.values():
            handler.acquire()
            held.append(handler)
        yield
    finally:
        for handler in reversed(held):
            handler.release()


def _mp_context() -> Any:
    # fork keeps class-form flows and functions defined in __main__ usable in readers.
    import multiprocessing  # only for parallel readers (and not where processes cannot start)

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def _reader_main(
    spec: FlowSpec,
    run_ctx: RunContext,
    run_dir: str,
    checkpoints: Checkpoints,
    reader_id: int,
    inbox: Any,
    outbox: Any,
    batch_size: int,
    lock_fd: int | None,
) -> None:
    """Body of a reader process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    coordinator = os.getppid()
    if lock_fd is not None:
        os.close(lock_fd)  # only the coordinator holds the flow's run lock
    run_id_var.set(run_ctx.run_id)
    ctx = RunContext(**{**run_ctx.__dict__, "reader_id": reader_id, "notes": RunNotes()})
    pipeline = None
    try:
        source: Source = registry.build("source", spec.source, ctx)
        pipeline = Pipeline(spec, ctx, run_dir, registry)
        pipeline.open()
        reader = source.create_reader(_ProcessReaderContext(reader_id, outbox))
        reader.start()
        stop = False
        idle = float(spec.runtime.get("idle_sleep_s", 0.2))
        live = pipeline

        def before_poll() -> bool:
            """Take the coordinator's messages; False when the coordinator is gone."""
            nonlocal stop
            while True:
                try:
                    msg = inbox.get_nowait()
                except queue.Empty:
                    break
                stop = stop or _apply(msg, reader, source)
            # the coordinator died: stop; the next run resumes from the checkpoints
            return os.getppid() == coordinator

        def on_idle() -> None:
            nonlocal stop
            try:
                msg = inbox.get(timeout=idle)
            except queue.Empty:
                return
            stop = stop or _apply(msg, reader, source)

        def checkpoint(reader: SourceReader, batch: ReaderBatch) -> None:
            checkpoints.save_reader(reader_id, [s.to_dict() for s in reader.snapshot_state()], batch.finished_splits)

        def committed(batch: ReaderBatch, counts: BatchCounts | None) -> None:
            outbox.send((
                "progress", reader_id, counts.to_dict() if counts is not None else None, batch.input_bytes,
                batch.finished_splits, live.dead.take_reasons(), ctx.notes.take(),
            ))

        loop = ReaderLoop(reader, batch_size, checkpoint=checkpoint, committed=committed)
        if loop.run(pipeline.commit, should_stop=lambda: stop, on_idle=on_idle, before_poll=before_poll) is None:
            return
        reader.close()
        pipeline.close()
        outbox.send(("done", reader_id, ctx.notes.take()))
    except BaseException as exc:
        in_flight = pipeline.fail_current() if pipeline is not None else None
        outbox.send(
            (
                "error",
                reader_id,
                redact_text(f"reader {reader_id}: {type(exc).__name__}: {exc}"),
                type(exc).__name__,
                redact_text("".join(traceback.format_exception(exc))),
                in_flight.to_dict() if in_flight is not None else None,
                pipeline.dead.take_reasons() if pipeline is not None else None,
                ctx.notes.take(),
            )
        )
        if pipeline is not None:
            with contextlib.suppress(Exception):
                pipeline.close()
    finally:
        telemetry.flush()  # this process ends with os._exit: no exit handler exports its spans
        outbox.close()


def _apply(msg: tuple[Any, ...], reader: SourceReader, source: Source) -> bool:
    kind = msg[0]
    if kind == "splits":
        reader.add_splits([source.split_from_dict(d) for d in msg[1]])
    elif kind == "no_more":
        reader.notify_no_more_splits()
    elif kind == "stop":
        return True
    return False
