"""The local runner: one enumerator, N readers, checkpoints, dead letters and resume.

How a run goes:

1. The coordinator (the calling process) validates the spec, opens the checkpoint
   directory ``<state_dir>/<flow>/checkpoint`` and either resumes the unfinished run found
   there (same source, same flow) or starts a new one (then ``sink.setup()`` runs once).
2. It creates the source's enumerator and N readers — in this process when
   ``parallelism`` is 1, otherwise one process each. A reader asks for a split, reads
   it in batches; each batch goes through the steps into the sink; when the sink has
   flushed, the dead letters of the batch are written and the reader's checkpoint (its
   unfinished splits with their positions) is appended to its checkpoint log.
3. A reader process that dies is noticed; its unfinished splits go back to the
   enumerator *from its last checkpoint* and a new reader process takes its place (up to
   ``runtime.max_reader_restarts``). If the coordinator itself dies, running the flow
   again resumes from the checkpoint files.

Hence at-least-once: a record is lost only if its batch was never committed, and a batch
that was written but not yet checkpointed is written again — at most one batch per reader;
with an idempotent (upsert) sink that duplicate collapses, so the result is exactly-once.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as _dt
import json
import logging
import os
import queue
import shutil
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.codec import codec
from core.context import RunContext
from core.errors import AdfError, SinkUnavailableError, SpecError
from core.ids import new_id
from core.logs import get_logger, log_event, run_id_var
from core.outcome import BatchCounts, ReasonTally, verdict
from core.record import DeadLetter, Record
from core.redact import redact_text
from core.registry import Registry, registry
from core.retry import RetriesExhausted, RetryPolicy, is_unavailable, retry_call, unavailable_reason
from core.sink import Sink
from core.source import (
    InlineContexts,
    Origins,
    ReaderBatch,
    ReaderStatus,
    SourceReader,
    SourceReaderContext,
    Split,
    SplitEnumerator,
    SplitEnumeratorContext,
)
from core.step import Routed, Step, flow_steps

if TYPE_CHECKING:
    from core.source import Source
    from core.spec import FlowSpec

__all__ = [
    "DeadLetterWriter",
    "Progress",
    "ReplayResult",
    "RunSummary",
    "SpecChangedError",
    "default_state_root",
    "replay_dead_letters",
    "run_flow",
]

_log = get_logger("engine")


def default_state_root() -> str:
    """``$ADF_STATE_DIR`` or ``./.adf`` (absolute)."""
    return os.path.abspath(os.environ.get("ADF_STATE_DIR") or ".adf")


def _now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- results


@dataclass
class Progress:
    """Counts so far; ``bytes_total`` is None when the source cannot tell."""

    records_in: int = 0
    records_out: int = 0
    dead_letters: int = 0
    bytes_done: int = 0
    bytes_total: int | None = None
    splits_done: int = 0
    filtered: int = 0
    fanned_out: int = 0


@dataclass
class RunSummary:
    """What a run did.

    ``status`` is ``success`` (every record written or filtered), ``partial`` (done, with
    dead letters below ``runtime.max_dead_letter_ratio``), ``failed`` or ``stopped`` (an
    unbounded run that was stopped; its checkpoint is kept so the next run continues) — see
    :mod:`core.outcome`. The counts add up: ``records_in + fanned_out = records_out +
    filtered + dead_letters + in_flight``.
    """

    flow: str
    run_id: str
    status: str
    records_in: int = 0
    records_out: int = 0
    dead_letters: int = 0
    filtered: int = 0
    #: records steps added (one record in, several out)
    fanned_out: int = 0
    #: records of the batch a failed run was working on (read again when it resumes)
    in_flight: int = 0
    #: the most frequent reasons of this run's dead letters: ``[{"reason": …, "count": …}]``
    dead_letter_reasons: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    duration_s: float = 0.0
    started_at: str = ""
    ended_at: str = ""
    resumed: bool = False
    parallelism: int = 1
    splits: int = 0
    reader_restarts: int = 0
    sink: str = ""
    dead_letter_destination: str | None = None
    error: str | None = None
    error_type: str | None = None
    backtrace: str | None = None
    #: dead letters themselves, for runs that may not write files (``persist=False``)
    dead_letter_sample: list[dict[str, Any]] | None = None

    @property
    def ok(self) -> bool:
        """The run did what it had to: ``success``, ``partial`` or ``stopped``."""
        return self.status in ("success", "partial", "stopped")

    def to_dict(self) -> dict[str, Any]:
        # scalars but for the sample, whose entries are copied (dataclasses.asdict deep-copies
        # every value: measured a tenth of a small HTTP-triggered run)
        out = {name: getattr(self, name) for name in _SUMMARY_FIELDS}
        out["dead_letter_reasons"] = [dict(r) for r in self.dead_letter_reasons]
        if self.dead_letter_sample is not None:
            out["dead_letter_sample"] = [copy.deepcopy(d) for d in self.dead_letter_sample]
        return out


_SUMMARY_FIELDS = tuple(f.name for f in dataclasses.fields(RunSummary))


# --------------------------------------------------------------------------- dead letters


class DeadLetterWriter:
    """Writes dead letters with the flow, run id and time.

    Default destination: ``<run dir>/dead_letters.jsonl`` (opened with ``O_APPEND``; each
    batch is one ``write`` so several readers can share the file). With a sink spec, every
    dead letter becomes a record ``{flow, run_id, ts, stage, reason, error_type, record,
    origin, step}`` written to that sink. Without a run directory (a run that may not write
    files, such as inside a WebAssembly component) the first ``KEEP`` dead letters are kept
    in ``kept`` and returned in the run summary.
    """

    KEEP = 1000

    def __init__(
        self,
        spec: Mapping[str, Any] | None,
        run_ctx: RunContext,
        run_dir: str | None,
        reg: Registry,
        retry: RetryPolicy | None = None,
        *,
        keep_all: bool = False,
    ) -> None:
        self.run_ctx = run_ctx
        self.count = 0
        #: reasons of the dead letters written by this writer (not yet reported: see :meth:`take_reasons`)
        self.reasons = ReasonTally()
        self.retry = retry or RetryPolicy()
        self.kept: list[dict[str, Any]] | None = None
        self._fd: int | None = None
        self._sink: Sink | None = None
        if spec:
            cls = reg.resolve("sink", spec.get("type", ""))
            self._sink = cls({k: v for k, v in spec.items() if k != "type"})
            self._sink.run_context = run_ctx
            self.destination = f"sink {self._sink.describe()}"
            self.path: str | None = None
        elif run_dir is None or keep_all:
            self.kept = []
            self.path = None
            self.destination = "the run summary (dead_letter_sample)"
            if keep_all:  # every one, in memory (a replay gives them back to its caller)
                self.KEEP = sys.maxsize
                self.destination = "memory"
        else:
            self.path = os.path.join(run_dir, "dead_letters.jsonl")
            self.destination = self.path

    def setup(self) -> None:
        if self._sink is not None:
            self._sink.setup()

    def open(self) -> None:
        if self._sink is not None:
            self._sink.open()

    def write(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        ts = _now_iso()
        rows = []
        for letter in letters:
            row = {"flow": self.run_ctx.flow_name, "run_id": self.run_ctx.run_id, "ts": ts}
            row.update(letter.to_dict())
            rows.append(row)
        if self._sink is not None:
            sink = self._sink

            def deliver() -> None:
                sink.write_batch(rows)
                sink.flush()

            # An unreachable dead-letter destination is an outage like any other: retried, then
            # the run fails with its checkpoint (the batch is read again), never dropped.
            try:
                retry_call(deliver, policy=self.retry, retryable=is_unavailable, what=f"dead-letter {self.destination}")
            except RetriesExhausted as exc:
                raise SinkUnavailableError(
                    f"{exc}; the run's checkpoint is kept: make the dead-letter destination reachable and run the "
                    "flow again to resume"
                ) from exc.last
        elif self.kept is not None:
            self.kept.extend(rows[: max(self.KEEP - len(self.kept), 0)])
        else:
            assert self.path is not None
            if self._fd is None:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            dumps = codec().dumps
            os.write(self._fd, b"".join(dumps(r) + b"\n" for r in rows))
        self.count += len(rows)
        for letter in letters:
            self.reasons.add(letter.reason)

    def take_reasons(self) -> dict[str, list[Any]]:
        """The reasons tallied since the last call (a reader reports them with its progress)."""
        return self.reasons.take()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._sink is not None:
            self._sink.close()


# --------------------------------------------------------------------------- checkpoints


class Checkpoints:
    """The checkpoint files of one flow, under ``<flow dir>/checkpoint/``.

    ``run.json`` and ``enumerator.json`` are replaced atomically (temp file + ``os.replace``).
    Between two enumerator snapshots, each assignment is appended to ``assignments.log``, so
    a snapshot (whose size grows with the pending splits) is not rewritten per assignment.
    A reader's checkpoint is an append-only log ``reader-N.log``: one JSON line per committed
    batch with the reader's unfinished splits (with positions) and the splits it finished in
    that batch. Appending a line costs far less than a rename per batch, and a process killed
    mid-write leaves at most a torn last line, which :meth:`load_reader` ignores. The log is
    compacted into one line when it grows past ``compact_bytes``.
    """

    def __init__(self, flow_dir: str, *, fsync: bool = False, compact_bytes: int = 1 << 20) -> None:
        self.dir = os.path.join(flow_dir, "checkpoint")
        self.fsync = fsync
        self.compact_bytes = compact_bytes
        self._logs: dict[int, tuple[int, int, set[str]]] = {}  # reader -> (fd, size, finished)
        self._assign_fd: int | None = None

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def write(self, name: str, data: Any) -> None:
        os.makedirs(self.dir, exist_ok=True)
        path = self._path(name)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, default=str)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)

    def read(self, name: str) -> Any:
        try:
            with open(self._path(name), encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    # -- the coordinator's assignment log ------------------------------------------

    def log_assignment(self, entry: dict[str, Any]) -> None:
        """Append one assignment (before the reader hears of it)."""
        if self._assign_fd is None:
            os.makedirs(self.dir, exist_ok=True)
            self._assign_fd = os.open(self._path("assignments.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self._assign_fd, json.dumps(entry, default=str).encode() + b"\n")
        if self.fsync:
            os.fsync(self._assign_fd)

    def read_assignments(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        try:
            with open(self._path("assignments.log"), "rb") as f:
                for raw in f:
                    try:
                        out.append(json.loads(raw))
                    except ValueError:
                        break  # torn last line
        except FileNotFoundError:
            pass
        return out

    def truncate_assignments(self) -> None:
        """Drop the log (the enumerator snapshot just written covers it)."""
        if self._assign_fd is not None:
            os.close(self._assign_fd)
            self._assign_fd = None
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._path("assignments.log"))

    # -- reader logs -------------------------------------------------------------

    def _reader_path(self, reader_id: int) -> str:
        return self._path(f"reader-{reader_id}.log")

    def save_reader(self, reader_id: int, splits: list[dict[str, Any]], finished: list[str]) -> None:
        """Append the reader's state after a committed batch (``finished``: splits done in it)."""
        entry = self._logs.get(reader_id)
        if entry is None:
            os.makedirs(self.dir, exist_ok=True)
            fd = os.open(self._reader_path(reader_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            entry = (fd, os.fstat(fd).st_size, set())
        fd, size, done = entry
        done.update(finished)
        line = json.dumps({"splits": splits, "finished": finished}, default=str).encode() + b"\n"
        if size + len(line) > self.compact_bytes:
            os.close(fd)
            compact = json.dumps({"splits": splits, "finished": sorted(done)}, default=str).encode() + b"\n"
            tmp = f"{self._reader_path(reader_id)}.tmp"
            with open(tmp, "wb") as f:
                f.write(compact)
            os.replace(tmp, self._reader_path(reader_id))
            fd = os.open(self._reader_path(reader_id), os.O_WRONLY | os.O_APPEND)
            size = len(compact)
        else:
            os.write(fd, line)
            size += len(line)
        if self.fsync:
            os.fsync(fd)
        self._logs[reader_id] = (fd, size, done)

    def load_reader(self, reader_id: int) -> dict[str, Any]:
        """``{"splits": [...last snapshot...], "finished": [...all finished...]}`` (empty when none)."""
        splits: list[dict[str, Any]] = []
        finished: set[str] = set()
        try:
            with open(self._reader_path(reader_id), "rb") as f:
                for raw in f:
                    try:
                        entry = json.loads(raw)
                    except ValueError:
                        break  # a torn last line: the process died while appending
                    splits = entry.get("splits", [])
                    finished.update(entry.get("finished", []))
        except FileNotFoundError:
            pass
        return {"splits": splits, "finished": sorted(finished)}

    def reader_ids(self) -> list[int]:
        if not os.path.isdir(self.dir):
            return []
        return sorted(int(n[7:-4]) for n in os.listdir(self.dir) if n.startswith("reader-") and n.endswith(".log"))

    def remove_reader(self, reader_id: int) -> None:
        entry = self._logs.pop(reader_id, None)
        if entry is not None:
            os.close(entry[0])
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._reader_path(reader_id))

    def close(self) -> None:
        for fd, _, _ in self._logs.values():
            os.close(fd)
        self._logs.clear()
        if self._assign_fd is not None:
            os.close(self._assign_fd)
            self._assign_fd = None

    def clear(self) -> None:
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- the pipeline of one reader


def setup_destinations(
    spec: FlowSpec, run_ctx: RunContext, reg: Registry, *, run_dir: str | None = None, sink: Sink | None = None
) -> None:
    """Prepare a new run's sink and dead-letter sink, once, before anything is read (a file sink's
    ``mode: overwrite`` truncates here; every writer then appends): the local coordinator and the
    Flink client both call it. A destination that cannot be reached is retried within
    ``runtime.sink_retry``; then :class:`SinkUnavailableError`."""
    if sink is None:
        sink = reg.resolve("sink", spec.sink["type"])({k: v for k, v in spec.sink.items() if k != "type"})
    sink.run_context = run_ctx
    policy = RetryPolicy.from_config(spec.runtime.get("sink_retry"), "runtime.sink_retry")
    dead = DeadLetterWriter(spec.dead_letter, run_ctx, run_dir, reg)
    for what, setup in ((f"sink {redact_text(sink.describe())}", sink.setup), (f"dead-letter {dead.destination}", dead.setup)):
        try:
            retry_call(setup, policy=policy, retryable=is_unavailable, what=what)
        except RetriesExhausted as exc:
            raise SinkUnavailableError(
                f"{exc}; nothing was read yet: make it reachable and run the flow again"
            ) from exc.last


class _OriginTracker:
    """Finds where a record of a batch came from, for the origin of a step's or the sink's dead letter.

    Nothing is computed unless a dead letter needs it: the tracker keeps the record lists
    that entered each step, and maps a record back to its position in the source's batch
    through them when asked — a step that passes on one record per record (in order) keeps
    positions; one that drops or fans out records is followed by identity.
    """

    __slots__ = ("_by_id", "_index", "errors", "origins", "stages")

    def __init__(self, batch: ReaderBatch) -> None:
        self.origins: Origins | None = batch.origins
        #: the records entering each step (the last: entering the next step, or the sink)
        self.stages: list[list[Record]] = [batch.records]
        #: the records each step dead-lettered (their ids)
        self.errors: list[list[Any]] = []
        self._index: dict[int, list[int] | None] = {0: None}  # None: position = batch index
        self._by_id: dict[int, dict[int, int]] = {}

    def step_done(self, out: list[Record], failed: list[DeadLetter]) -> None:
        self.stages.append(out)
        self.errors.append([letter.record for letter in failed])

    def _positions(self, k: int) -> list[int] | None:
        if k in self._index:
            return self._index[k]
        prev = self._positions(k - 1)
        ins, out, bad = self.stages[k - 1], self.stages[k], self.errors[k - 1]
        result: list[int] | None
        if not bad and len(out) == len(ins):
            result = prev  # one record out per record in
        else:
            result = None
            if len(out) + len(bad) == len(ins):
                bad_ids = {id(r) for r in bad}
                keep = [j if prev is None else prev[j] for j, r in enumerate(ins) if id(r) not in bad_ids]
                if len(keep) == len(out):
                    result = keep
            if result is None:
                by_id = {id(r): (j if prev is None else prev[j]) for j, r in enumerate(ins)}
                result = [by_id.get(id(r), -1) for r in out]
        self._index[k] = result
        return result

    def origin_of(self, record: Any) -> dict[str, Any]:
        """The origin of ``record``, one of the records entering the current step (or the sink)."""
        if self.origins is None:
            return {}
        k = len(self.stages) - 1
        by_id = self._by_id.get(k)
        if by_id is None:
            positions = self._positions(k)
            by_id = self._by_id[k] = {
                id(r): (j if positions is None else positions[j]) for j, r in enumerate(self.stages[k])
            }
        index = by_id.get(id(record), -1)
        if index < 0:  # a record a step made anew: only its batch is known
            return {"batch_from": self.origins.of(0), "batch_records": self.origins.count}
        return self.origins.of(index)


class _Pipeline:
    """Steps + sink + dead letters of one reader; commits one batch at a time.

    Every batch is accounted for (see :mod:`core.outcome`): each record read is written,
    filtered by a step, or dead-lettered; steps that add records count as ``fanned_out``.
    ``current`` holds the counts of the batch being committed, so a run that fails in the
    middle of one can say what happened to it.

    What the sink's errors mean:

    * an **outage** (:func:`core.retry.unavailable_reason`: connection refused or reset,
      timeout, unknown database, authentication, 5xx…) is retried with backoff and jitter for
      ``runtime.sink_retry.window_s``; then :class:`SinkUnavailableError` fails the run with
      its checkpoint intact — records are never dead-lettered for an outage;
    * a **configuration** error fails the run at once;
    * anything else is about the records: the batch is cut in halves until the records the
      sink refuses are alone, and those are dead-lettered with the sink's reason
      (``runtime.sink_error_policy: fail`` fails the run instead).
    """

    def __init__(self, spec: FlowSpec, run_ctx: RunContext, run_dir: str | None, reg: Registry) -> None:
        self.spec = spec
        self.runtime = spec.runtime
        self.run_ctx = run_ctx
        self.steps: list[Step] = flow_steps(spec, reg)
        run_ctx.extras.setdefault("context", dict(spec.context))
        if spec.schema is not None:
            run_ctx.extras.setdefault("schema", spec.schema)
        for step in self.steps:
            step.run_context = run_ctx
        self.routing = any(step.can_route or step.static_next is not None for step in self.steps)
        sink_cls = reg.resolve("sink", spec.sink["type"])
        self.sink: Sink = sink_cls({k: v for k, v in spec.sink.items() if k != "type"})
        self.sink.run_context = run_ctx
        self.sink_retry = RetryPolicy.from_config(self.runtime.get("sink_retry"), "runtime.sink_retry")
        self.dead = DeadLetterWriter(spec.dead_letter, run_ctx, run_dir, reg, self.sink_retry)
        self.totals = BatchCounts()
        #: the counts of the batch being committed (None between batches)
        self.current: BatchCounts | None = None
        self.bytes_done = 0
        self._sink_name = redact_text(self.sink.describe())

    @property
    def records_in(self) -> int:
        return self.totals.records_in

    @property
    def records_out(self) -> int:
        return self.totals.records_out

    def open(self) -> None:
        for what, opener in ((f"sink {self._sink_name}", self.sink.open), (f"dead-letter {self.dead.destination}", self.dead.open)):
            try:  # a sink that connects when it opens may meet the outage there
                retry_call(opener, policy=self.sink_retry, retryable=is_unavailable, what=what)
            except RetriesExhausted as exc:
                raise _unavailable(exc.last, f"{exc}; the checkpoint is kept: make it reachable and run the flow "
                                             "again to resume") from exc.last
        for step in self.steps:
            step.open()

    def close(self) -> None:
        for step in self.steps:
            with contextlib.suppress(Exception):
                step.close()
        try:
            self.sink.close()
        finally:
            self.dead.close()

    def commit(self, batch: ReaderBatch) -> BatchCounts:
        """Run one batch through steps and sink, write its dead letters; return its counts."""
        counts = self.current = BatchCounts(records_in=len(batch.records) + len(batch.dead_letters))
        letters = list(batch.dead_letters)
        records = batch.records
        tracker = _OriginTracker(batch)
        if records:

            def on_error(record: Any, exc: BaseException, step: str) -> None:
                letters.append(
                    DeadLetter(
                        record, redact_text(f"{type(exc).__name__}: {exc}"), "step", type(exc).__name__,
                        tracker.origin_of(record), step=step,
                    )
                )

            if self.routing:
                records = self._route(records, on_error, counts, letters)
            else:
                for step in self.steps:
                    n, failed_before = len(records), len(letters)
                    records = step.process_batch(records, on_error)
                    failed = len(letters) - failed_before
                    _count_step(counts, n, len(records), failed)
                    tracker.step_done(records, letters[failed_before:])
                    if not records:
                        break
        if records:
            self._write(records, letters, counts, tracker)
        self.dead.write(letters)
        counts.dead_letters = len(letters)
        counts.check(f"flow {self.spec.name!r}, reader {self.run_ctx.reader_id}")
        self.current = None
        self.totals.add(counts)
        self.bytes_done += batch.input_bytes
        return counts

    def fail_current(self) -> BatchCounts | None:
        """The counts of the batch a failure cut short, the rest of it counted as in flight."""
        counts, self.current = self.current, None
        if counts is not None:
            counts.dead_letters = 0  # its dead letters were not written
            counts.settle_in_flight()
            self.totals.add(counts)
        return counts

    def _route(self, records: list[Record], on_error: Any, counts: BatchCounts, letters: list[DeadLetter]) -> list[Record]:
        """The steps with routing: a step may send a record on to later steps by id (one,
        several — a copy each — or none: done, straight to the sink). Forward only, so a
        record visits each step at most once."""
        steps = self.steps
        index = {step.id: i for i, step in enumerate(steps)}
        pending: list[list[Record]] = [[] for _ in range(len(steps) + 1)]
        pending[0] = list(records)
        for i, step in enumerate(steps):
            batch = pending[i]
            if not batch:
                continue
            static = step.static_next
            failed_before = len(letters)
            out: list[Any] = step.process_batch(batch, on_error)
            _count_step(counts, len(batch), len(out), len(letters) - failed_before)
            for got in out:
                if isinstance(got, Routed):
                    item = got
                elif static is None:
                    pending[i + 1].append(got)
                    continue
                else:
                    item = Routed(got, static)
                targets = item.targets
                if not targets:
                    pending[-1].append(item.record)
                    continue
                bad = [t for t in targets if index.get(t, -1) <= i]
                if bad:
                    on_error(item.record, AdfError(
                        f"invalid routing decision {list(targets)!r} from step {step.id!r}: "
                        f"{', '.join(repr(b) for b in bad)} {'is' if len(bad) == 1 else 'are'} not a later step "
                        f"(later steps: {', '.join(step.forward_ids) or 'none'})"), step.name)
                    continue
                unique = list(dict.fromkeys(targets))
                counts.fanned_out += len(unique) - 1  # a copy for each further target
                for n, target in enumerate(unique):
                    record = item.record if n == 0 else copy.deepcopy(item.record)
                    pending[index[target]].append(record)
        return pending[-1]

    # -- the sink ------------------------------------------------------------------

    def _deliver(self, records: list[Record]) -> None:
        """Write and flush ``records``, riding out an outage within the retry window."""
        sink = self.sink

        def attempt() -> Any:
            got = sink.write_batch(records)
            sink.flush()
            return got

        try:
            got = retry_call(attempt, policy=self.sink_retry, retryable=is_unavailable, what=f"sink {self._sink_name}")
        except RetriesExhausted as exc:
            message = (
                f"sink {self._sink_name} is unavailable: {unavailable_reason(exc.last) or exc.last} — still failing "
                f"after {exc.attempts} attempt(s) over {exc.elapsed_s:.1f} s (runtime.sink_retry.window_s="
                f"{self.sink_retry.window_s:g}). Nothing was dead-lettered and the checkpoint is kept: make the sink "
                "reachable (is the server up, are the URL and credentials right?) and run the flow again to resume"
            )
            raise _unavailable(exc.last, message) from exc.last
        if isinstance(got, int) and not isinstance(got, bool) and got != len(records):
            from core.outcome import AccountingError

            raise AccountingError(
                f"sink {self._sink_name} reported {got:,} record(s) written of a batch of {len(records):,}: "
                "the difference would be lost without a trace"
            )

    def _write(self, records: list[Record], letters: list[DeadLetter], counts: BatchCounts, tracker: _OriginTracker) -> None:
        try:
            self._deliver(records)
            counts.records_out += len(records)
            return
        except Exception as exc:
            error: Exception = exc
        kind = _sink_error_kind(error)
        if kind == "fatal" or self.runtime.get("sink_error_policy") == "fail":
            raise error
        if kind == "unknown":
            # A reason we cannot tell: a few retries of the whole batch before looking for bad records.
            retries = int(self.runtime.get("retries", 3))
            delay = float(self.runtime.get("retry_backoff_s", 0.1))
            for attempt in range(retries):
                log_event(
                    _log, "sink write failed; retrying", logging.WARNING,
                    attempt=attempt + 1, retries=retries, error=redact_text(f"{type(error).__name__}: {error}"),
                )
                time.sleep(delay * (2**attempt))
                try:
                    self._deliver(records)
                    counts.records_out += len(records)
                    return
                except Exception as exc:
                    error = exc
                kind = _sink_error_kind(error)
                if kind == "fatal":
                    raise error
                if kind == "record":
                    break
        self._isolate(records, error, letters, counts, tracker)

    def _isolate(
        self, chunk: list[Record], error: BaseException, letters: list[DeadLetter], counts: BatchCounts,
        tracker: _OriginTracker,
    ) -> None:
        """Halve ``chunk`` (which the sink refused with ``error``) until the refused records are alone."""
        if len(chunk) == 1:
            record = chunk[0]
            letters.append(
                DeadLetter(
                    record, redact_text(f"{type(error).__name__}: {error}"), "sink", type(error).__name__,
                    tracker.origin_of(record),
                )
            )
            return
        mid = len(chunk) // 2
        for part in (chunk[:mid], chunk[mid:]):
            try:
                self._deliver(part)
            except Exception as exc:
                if _sink_error_kind(exc) == "fatal":
                    raise
                self._isolate(part, exc, letters, counts, tracker)
                continue
            counts.records_out += len(part)


def _unavailable(last: BaseException, message: str) -> SinkUnavailableError:
    """The error a run fails with when its sink stayed unreachable: the sink's own class when it
    raised a :class:`SinkUnavailableError` subclass (``HttpSinkError``), so the summary keeps its type."""
    if isinstance(last, SinkUnavailableError):
        try:
            return type(last)(message)
        except Exception:
            pass
    return SinkUnavailableError(message)


def _count_step(counts: BatchCounts, n_in: int, n_out: int, failed: int) -> None:
    """A step took ``n_in`` records, passed on ``n_out`` and dead-lettered ``failed``: the rest it dropped
    (filtered), or it added records (fan-out)."""
    net = n_in - n_out - failed
    if net > 0:
        counts.filtered += net
    elif net < 0:
        counts.fanned_out -= net


#: Error classes (by name, anywhere in the chain) that a sink raises about a record's content.
_RECORD_ERROR_NAMES = frozenset(
    {"IntegrityError", "DataError", "ValueError", "TypeError", "KeyError", "UnicodeError", "OverflowError"}
)


def _sink_error_kind(exc: BaseException) -> str:
    """``fatal`` (the engine's own errors about the sink or the flow: an outage after its retry
    window, a configuration, the accounting), ``record`` (about the records: a constraint, a
    type, a field the table lacks) or ``unknown``."""
    from core.errors import RecordValidationError

    if isinstance(exc, RecordValidationError):
        return "record"
    if isinstance(exc, AdfError):
        return "fatal"
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if any(klass.__name__ in _RECORD_ERROR_NAMES for klass in type(current).__mro__):
            return "record"
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
    return "unknown"


# --------------------------------------------------------------------------- contexts


class _ProcessEnumeratorContext(SplitEnumeratorContext):
    def __init__(self, run: _Run) -> None:
        self.run = run

    @property
    def parallelism(self) -> int:
        return self.run.parallelism

    def registered_readers(self) -> list[int]:
        return sorted(self.run.alive_readers())

    def assign_split(self, split: Split, reader_id: int) -> None:
        self.run.assign(split, reader_id)

    def signal_no_more_splits(self, reader_id: int) -> None:
        self.run.send(reader_id, ("no_more",))


class _ProcessReaderContext(SourceReaderContext):
    def __init__(self, reader_id: int, outbox: Any) -> None:
        self._reader_id = reader_id
        self.outbox = outbox

    @property
    def reader_id(self) -> int:
        return self._reader_id

    def send_split_request(self) -> None:
        self.outbox.send(("request", self._reader_id))


# --------------------------------------------------------------------------- the run


ProgressCallback = Callable[[Progress], None]


class _Run:
    """State of one run in the coordinator."""

    def __init__(
        self,
        spec: FlowSpec,
        *,
        state_root: str | None,
        reg: Registry,
        resume: bool,
        on_progress: ProgressCallback | None,
        run_id: str | None,
        store: Any,
        persist: bool = True,
        on_spec_change: str = "refuse",
    ) -> None:
        self.spec = spec
        self.persist = persist
        self.reg = reg
        self.runtime = spec.runtime
        # A run that may not write files has no checkpoints and no reader processes.
        self.parallelism = int(self.runtime.get("parallelism") or 1) if persist else 1
        self.batch_size = int(self.runtime.get("batch_size") or 500)
        root = self.runtime.get("state_dir") or state_root or default_state_root()
        self.flow_dir = os.path.join(os.path.abspath(root), spec.name)
        self.checkpoints = Checkpoints(self.flow_dir, fsync=bool(self.runtime.get("checkpoint_fsync")))
        self.use_checkpoints = persist and bool(self.runtime.get("checkpoint", True))
        self.resume = resume
        self.on_progress = on_progress
        self.requested_run_id = run_id
        self.store = store
        self.progress = Progress()
        self.assignments: dict[int, dict[str, dict[str, Any]]] = {}
        self.processes: dict[int, Any] = {}
        self.inboxes: dict[int, Any] = {}
        #: each reader's own channel to the coordinator (the receiving end of a one-way pipe)
        self.outboxes: dict[int, Any] = {}
        self.done: set[int] = set()
        self.waiting: set[int] = set()
        self.again: set[int] = set()
        self.allow: Counter[str] = Counter()  # copies of a split id to hand out despite stale ones
        self.skip: Counter[str] = Counter()  # stale copies of a split id still in the enumerator
        self.seq = 0
        self.since_snapshot = 0
        self.snapshot_at = time.monotonic()
        self.restarts = 0
        self.stopping = False
        self.ended_by_input = False
        self.counts = BatchCounts()
        self.reasons = ReasonTally()
        self.max_dead = self.runtime.get("max_dead_letters")
        self.on_spec_change = on_spec_change

    # -- set-up ------------------------------------------------------------------

    def _source(self) -> Source:
        cls = self.reg.resolve("source", self.spec.source["type"])
        source: Source = cls({k: v for k, v in self.spec.source.items() if k != "type"})
        source.run_context = self.run_ctx
        return source

    def lock(self) -> None:
        """Hold ``<flow dir>/run.lock`` for the run: two runs of one flow would share checkpoints."""
        self.lock_fd: int | None = None
        if not self.persist:
            return
        try:
            import fcntl
        except ImportError:  # no file locks here (a WebAssembly host): one runner per state dir
            return
        os.makedirs(self.flow_dir, exist_ok=True)
        path = os.path.join(self.flow_dir, "run.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AdfError(
                f"flow {self.spec.name!r} is already running with state directory {os.path.dirname(self.flow_dir)} "
                f"(lock {path}); wait for that run, or give this one another --state-dir"
            ) from None
        self.lock_fd = fd

    def unlock(self) -> None:
        fd = getattr(self, "lock_fd", None)
        if fd is not None:
            os.close(fd)
            self.lock_fd = None

    def prepare(self) -> None:
        self.lock()
        prior = self.checkpoints.read("run.json") if self.use_checkpoints else None
        self.resumed = False
        if prior and self.resume:
            changed = self._changed_sections(prior)
            if not changed:
                self.resumed = True
            elif self.on_spec_change == "refuse" or (self.on_spec_change == "resume" and "source" in changed):
                raise SpecChangedError(self.spec.name, prior.get("run_id"), changed, self.checkpoints.dir)
            elif self.on_spec_change == "resume":
                self.resumed = True
                log_event(_log, "resuming although the flow changed", logging.WARNING,
                          changed=changed, run_id=prior.get("run_id"))
        if prior and not self.resumed:
            reason = "resume disabled" if not self.resume else "the flow changed"
            log_event(_log, "discarding an unfinished checkpoint", logging.WARNING, reason=reason, run_id=prior.get("run_id"))
            self.checkpoints.clear()
        self.run_id = prior["run_id"] if self.resumed and prior else self._unique_run_id(self.requested_run_id)
        self.run_dir = os.path.join(self.flow_dir, "runs", self.run_id)
        if self.persist:
            os.makedirs(self.run_dir, exist_ok=True)
            if not self.resumed:
                # what `adf dead-letters replay` needs to find the flow again
                with contextlib.suppress(OSError), open(os.path.join(self.run_dir, "flow.json"), "w", encoding="utf-8") as f:
                    json.dump({"flow": self.spec.name, "origin": self.spec.origin,
                               "sections": self.spec.fingerprint_sections()}, f)
        self.started_at = prior["started_at"] if self.resumed and prior else _now_iso()
        self.run_ctx = RunContext(
            flow_name=self.spec.name,
            run_id=self.run_id,
            state_dir=self.run_dir,
            resuming=self.resumed,
            parallelism=self.parallelism,
            store=self.store,
        )
        self.source = self._source()
        self.unbounded = self.source.boundedness.value == "unbounded"

    def _changed_sections(self, prior: Mapping[str, Any]) -> list[str]:
        """The parts of the flow that differ from the checkpoint's (source, steps, schema, sink)."""
        sections = prior.get("sections")
        if not isinstance(sections, Mapping):  # a checkpoint from before sections were recorded
            return [] if prior.get("fingerprint") == self.spec.legacy_fingerprint() else ["source"]
        now = self.spec.fingerprint_sections()
        return [key for key, value in now.items() if sections.get(key) != value]

    def _unique_run_id(self, requested: str | None) -> str:
        """``requested`` (or a new id) — never one whose run directory exists: run ids are unique
        in a state directory, so a run never appends to another run's dead letters or summary."""
        run_id = requested or _new_run_id()
        if not self.persist:
            return run_id
        runs = os.path.join(self.flow_dir, "runs")
        while os.path.exists(os.path.join(runs, run_id)):
            run_id = f"{requested or _new_run_id()}-{new_id(6)}"
        return run_id

    def restore_enumerator(self, ctx: SplitEnumeratorContext) -> SplitEnumerator:
        """A started enumerator: fresh, or from the checkpoint with unfinished splits handed back."""
        if not self.resumed:
            enumerator = self.source.create_enumerator(ctx)
            enumerator.start()
            if self.use_checkpoints:
                self.checkpoints.write(
                    "run.json",
                    {
                        "run_id": self.run_id, "fingerprint": self.spec.fingerprint(),
                        "sections": self.spec.fingerprint_sections(), "started_at": self.started_at,
                    },
                )
            return enumerator
        saved = self.checkpoints.read("enumerator.json") or {}
        enumerator = self.source.create_enumerator(ctx, saved.get("state"))
        enumerator.start()
        returned: list[Split] = []
        assignments: dict[str, dict[str, Any]] = saved.get("assignments") or {}
        self.allow.update(saved.get("allow", {}))
        self.skip.update(saved.get("skip", {}))
        # A split assigned after the snapshot is still pending in it: that copy is now stale
        # and is skipped when the enumerator hands it out again (see assign()).
        for entry in self.checkpoints.read_assignments():
            if entry.get("seq", 0) > saved.get("seq", 0):
                sid = entry["split"]["split_id"]
                assignments.setdefault(str(entry["reader"]), {})[sid] = entry["split"]
                if self.allow[sid] > 0:
                    self.allow[sid] -= 1  # the copy it consumed was an allowed one
                self.skip[sid] += 1
        for reader_key, assigned in assignments.items():
            returned.extend(self._unfinished(int(reader_key), assigned))
        # readers that checkpointed splits the enumerator file does not know as assigned
        for reader_id in self.checkpoints.reader_ids():
            if str(reader_id) not in assignments:
                returned.extend(self._unfinished(reader_id, {}))
        if returned:
            self.allow.update(s.split_id for s in returned)
            enumerator.add_splits_back(returned, -1)
        self._save_enumerator(enumerator)
        for reader_id in self.checkpoints.reader_ids():
            self.checkpoints.remove_reader(reader_id)
        log_event(_log, "resuming from checkpoint", returned_splits=len(returned))
        return enumerator

    def _unfinished(self, reader_id: int, assigned: Mapping[str, Any]) -> list[Split]:
        state = self.checkpoints.load_reader(reader_id)
        finished = set(state["finished"])
        positions = {s["split_id"]: s for s in state.get("splits", [])}
        out = []
        ids = list(assigned) + [sid for sid in positions if sid not in assigned]
        for sid in ids:
            if sid in finished:
                continue
            data = positions.get(sid) or assigned.get(sid)
            if data is not None:
                out.append(self.source.split_from_dict(data))
        return out

    def _save_enumerator(self, enumerator: SplitEnumerator) -> None:
        """Snapshot the enumerator, the assignments and the stale split ids; restart the assignment log."""
        if self.use_checkpoints:
            self.checkpoints.write(
                "enumerator.json",
                {
                    "state": enumerator.snapshot_state(),
                    "assignments": {str(k): v for k, v in self.assignments.items()},
                    "seq": self.seq,
                    "allow": {k: v for k, v in self.allow.items() if v > 0},
                    "skip": {k: v for k, v in self.skip.items() if v > 0},
                },
            )
            self.checkpoints.truncate_assignments()
            self.since_snapshot = 0
            self.snapshot_at = time.monotonic()

    def setup_sinks(self, pipeline_sink: Sink | None = None) -> None:
        if self.resumed:
            return
        setup_destinations(self.spec, self.run_ctx, self.reg, run_dir=self.run_dir if self.persist else None,
                           sink=pipeline_sink)

    def report(self, counts: BatchCounts | Mapping[str, int] | None, d_bytes: int, finished: int,
               reasons: Mapping[str, Any] | None = None) -> None:
        """Add a committed batch (or a reader's in-flight remainder) to the run's counts."""
        if counts is not None:
            self.counts.add(counts)
        if reasons:
            self.reasons.merge(reasons)
        c, p = self.counts, self.progress
        p.records_in, p.records_out, p.dead_letters = c.records_in, c.records_out, c.dead_letters
        p.filtered, p.fanned_out = c.filtered, c.fanned_out
        p.bytes_done += d_bytes
        p.splits_done += finished
        if self.on_progress is not None:
            self.on_progress(p)
        if self.max_dead is not None and c.dead_letters > self.max_dead:
            raise AdfError(
                f"{c.dead_letters:,} records were dead-lettered, more than runtime.max_dead_letters="
                f"{self.max_dead:,}; see {self.dead_letter_destination}. The checkpoint is kept: fix the cause and "
                "run the flow again to resume"
            )

    # -- inline (parallelism 1) ----------------------------------------------------

    def run_inline(self) -> None:
        ctx = InlineContexts(self.record_assignment)
        enumerator = self.enumerator = self.restore_enumerator(ctx)
        ctx.enumerator = enumerator
        pipeline = self.pipeline = _Pipeline(self.spec, self.run_ctx, self.run_dir if self.persist else None, self.reg)
        self.dead_kept = pipeline.dead.kept
        self.setup_sinks(pipeline.sink)
        self.dead_letter_destination = pipeline.dead.destination
        self.progress.bytes_total = self.source.total_work(_pending_splits(enumerator))
        reader = self.source.create_reader(ctx)
        ctx.reader = reader
        deadline = self._deadline()
        next_discovery = time.monotonic() + float(self.runtime.get("discovery_interval_s", 5.0))
        pipeline.open()
        try:
            reader.start()
            while True:
                batch = reader.poll_batch(self.batch_size)
                if batch.records or batch.dead_letters or batch.finished_splits:
                    counts = pipeline.commit(batch) if (batch.records or batch.dead_letters) else None
                    if self.use_checkpoints:
                        self.checkpoints.save_reader(0, [s.to_dict() for s in reader.snapshot_state()], batch.finished_splits)
                    reader.notify_checkpoint_complete()
                    self._forget(0, batch.finished_splits)
                    self.report(counts, batch.input_bytes, len(batch.finished_splits), pipeline.dead.take_reasons())
                if batch.status is ReaderStatus.END_OF_INPUT:
                    self.ended_by_input = True
                    break
                if self.stopping or (deadline is not None and time.monotonic() >= deadline):
                    break
                if batch.status is ReaderStatus.NOTHING_AVAILABLE:
                    if time.monotonic() >= next_discovery:
                        enumerator.discover()
                        next_discovery = time.monotonic() + float(self.runtime.get("discovery_interval_s", 5.0))
                        if not reader.snapshot_state():
                            enumerator.handle_split_request(0)
                    time.sleep(float(self.runtime.get("idle_sleep_s", 0.2)))
        finally:
            reader.close()
            enumerator.close()
            pipeline.close()

    def _deadline(self) -> float | None:
        stop_after = self.runtime.get("stop_after_s")
        return time.monotonic() + float(stop_after) if stop_after else None

    # -- processes (parallelism > 1) -----------------------------------------------

    def alive_readers(self) -> set[int]:
        return {i for i, p in self.processes.items() if p.is_alive()}

    def send(self, reader_id: int, message: tuple[Any, ...]) -> None:
        self.inboxes[reader_id].put(message)

    def record_assignment(self, split: Split, reader_id: int) -> bool:
        """Checkpoint that ``split`` goes to ``reader_id`` — before the reader hears of it, so
        an assignment is never lost. False when this copy is stale and must be skipped."""
        if not self.accept(split.split_id):
            return False
        data = split.to_dict()
        self.assignments.setdefault(reader_id, {})[split.split_id] = data
        if self.use_checkpoints:
            self.seq += 1
            self.checkpoints.log_assignment({"seq": self.seq, "reader": reader_id, "split": data})
            self.since_snapshot += 1
            if self.since_snapshot >= 64 or time.monotonic() - self.snapshot_at >= 2.0:
                self._save_enumerator(self.enumerator)
        return True

    def assign(self, split: Split, reader_id: int) -> None:
        if not self.record_assignment(split, reader_id):
            self.again.add(reader_id)
            return
        self.waiting.discard(reader_id)
        self.send(reader_id, ("splits", [split.to_dict()]))

    def accept(self, split_id: str) -> bool:
        """Whether to hand out this copy of a split (False: a stale copy, ask again).

        Handed-back splits go to the front of the enumerator's queue, so the first copies of
        an id that come out are the allowed (positioned) ones, and later copies are stale
        leftovers of a snapshot taken before the split was assigned.
        """
        if self.allow[split_id] > 0:
            self.allow[split_id] -= 1
        elif self.skip[split_id] > 0:
            self.skip[split_id] -= 1
            return False
        return True

    def _forget(self, reader_id: int, finished: list[str]) -> None:
        """Finished splits (recorded in the reader's log) no longer need their assignment."""
        assigned = self.assignments.get(reader_id)
        if assigned:
            for sid in finished:
                assigned.pop(sid, None)

    def _request(self, reader_id: int) -> None:
        self.enumerator.handle_split_request(reader_id)
        while reader_id in self.again:  # stale copies were skipped: ask again
            self.again.discard(reader_id)
            self.enumerator.handle_split_request(reader_id)

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
            name=f"adf-reader-{self.spec.name}-{reader_id}",
            args=(
                self.spec, self.run_ctx, self.run_dir, self.checkpoints, reader_id, inbox, send,
                self.batch_size, self.lock_fd if _mp_context().get_start_method() == "fork" else None,
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

    def run_processes(self) -> None:
        ctx = _ProcessEnumeratorContext(self)
        self.enumerator = self.restore_enumerator(ctx)
        self.setup_sinks()
        self.dead_letter_destination = DeadLetterWriter(
            self.spec.dead_letter, self.run_ctx, self.run_dir, self.reg
        ).destination
        self.progress.bytes_total = self.source.total_work(_pending_splits(self.enumerator))
        for i in range(self.parallelism):
            self._start_reader(i)
            self.enumerator.add_reader(i)
        deadline = self._deadline()
        discovery_every = float(self.runtime.get("discovery_interval_s", 5.0))
        next_discovery = time.monotonic() + discovery_every
        stop_sent = False
        try:
            while len(self.done) < self.parallelism:
                messages = self._receive(timeout=0.2)
                for msg in messages:
                    self._handle(msg)
                now = time.monotonic()
                if self.unbounded and now >= next_discovery:
                    self.enumerator.discover()
                    next_discovery = now + discovery_every
                    for reader_id in sorted(self.waiting):  # readers still waiting for work
                        self._request(reader_id)
                if (self.stopping or (deadline is not None and now >= deadline)) and not stop_sent:
                    for i in self.inboxes:
                        if i not in self.done:
                            self.send(i, ("stop",))
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
            for proc in self.processes.values():
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()
            for conn in self.outboxes.values():
                conn.close()
            self.outboxes.clear()
            self.enumerator.close()
        self.ended_by_input = not stop_sent

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind, reader_id = msg[0], msg[1]
        if kind == "request":
            if reader_id in self.processes and reader_id not in self.done:
                self.waiting.add(reader_id)
                self._request(reader_id)
        elif kind == "progress":
            _, _, counts, d_bytes, finished, reasons = msg
            self._forget(reader_id, finished)
            self.report(counts, d_bytes, len(finished), reasons)
        elif kind == "done":
            self.done.add(reader_id)
        elif kind == "error":
            _, _, message, error_type, backtrace, in_flight, reasons = msg
            if in_flight:
                self.counts.add(in_flight)
            if reasons:
                self.reasons.merge(reasons)
            raise _ReaderFailed(message, error_type, backtrace)

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
            self.restarts += 1
            log_event(
                _log, "reader process died; handing its splits back", logging.WARNING,
                reader=reader_id, exitcode=proc.exitcode, restarts=self.restarts,
            )
            if self.restarts > int(self.runtime.get("max_reader_restarts", 3)):
                raise AdfError(
                    f"reader {reader_id} died (exit code {proc.exitcode}) and the restart limit "
                    f"runtime.max_reader_restarts={self.runtime.get('max_reader_restarts')} is reached; "
                    "run the flow again to resume from the checkpoint"
                )
            splits = self._unfinished(reader_id, self.assignments.get(reader_id, {}))
            self.assignments[reader_id] = {}
            self.allow.update(s.split_id for s in splits)
            self.enumerator.add_splits_back(splits, reader_id)
            self._save_enumerator(self.enumerator)
            self.checkpoints.remove_reader(reader_id)
            self._start_reader(reader_id)

    # -- finish --------------------------------------------------------------------

    def finish(self, status: str, error: BaseException | None, t0: float) -> RunSummary:
        pipeline: _Pipeline | None = getattr(self, "pipeline", None)
        if pipeline is not None:
            in_flight = pipeline.fail_current()  # the batch an error cut short (inline runs)
            if in_flight is not None:
                self.counts.add(in_flight)
            self.reasons.merge(pipeline.dead.take_reasons())
        counts = self.counts
        if error is None and status == "success":
            try:
                counts.check(f"flow {self.spec.name!r}")
                status, verdict_error = verdict(
                    counts, self.runtime.get("max_dead_letter_ratio"), self.reasons.top()
                )
                error = verdict_error
            except AdfError as exc:
                status, error = "failed", exc
        summary = RunSummary(
            flow=self.spec.name,
            run_id=getattr(self, "run_id", self.requested_run_id or ""),
            status=status,
            records_in=counts.records_in,
            records_out=counts.records_out,
            dead_letters=counts.dead_letters,
            filtered=counts.filtered,
            fanned_out=counts.fanned_out,
            in_flight=counts.in_flight,
            dead_letter_reasons=self.reasons.top(),
            duration_s=round(time.monotonic() - t0, 3),
            started_at=getattr(self, "started_at", _now_iso()),
            ended_at=_now_iso(),
            resumed=getattr(self, "resumed", False),
            parallelism=self.parallelism,
            splits=self.progress.splits_done,
            reader_restarts=self.restarts,
            sink=self._describe_sink(),
            dead_letter_destination=getattr(self, "dead_letter_destination", None),
        )
        if error is not None:
            if isinstance(error, _ReaderFailed):
                summary.error, summary.error_type, summary.backtrace = error.args
            else:
                summary.error = redact_text(f"{error}")
                summary.error_type = type(error).__name__
                summary.backtrace = redact_text("".join(traceback.format_exception(error)))
        if summary.dead_letters == 0 and summary.dead_letter_destination and summary.dead_letter_destination.endswith(".jsonl"):
            summary.dead_letter_destination = None if not os.path.exists(summary.dead_letter_destination) else summary.dead_letter_destination
        summary.dead_letter_sample = getattr(self, "dead_kept", None)
        if getattr(self, "run_dir", None) and self.persist:
            with contextlib.suppress(OSError):
                with open(os.path.join(self.run_dir, "summary.json"), "w", encoding="utf-8") as f:
                    json.dump(summary.to_dict(), f, indent=2)
        return summary

    def _describe_sink(self) -> str:
        try:
            cls = self.reg.resolve("sink", self.spec.sink["type"])
            sink: Sink = cls({k: v for k, v in self.spec.sink.items() if k != "type"})
            return redact_text(sink.describe())
        except Exception:
            return str(self.spec.sink.get("type"))


class _ReaderFailed(AdfError):
    """A reader process reported an error: (message, error type, backtrace)."""


class SpecChangedError(SpecError):
    """An unfinished checkpoint belongs to another version of the flow: resuming it would send
    part of the data one way and the rest another (another sink, other steps)."""

    def __init__(self, flow: str, run_id: str | None, changed: list[str], checkpoint_dir: str) -> None:
        self.flow = flow
        self.run_id = run_id
        self.changed = list(changed)
        self.checkpoint_dir = checkpoint_dir
        what = " and ".join(", ".join(changed).rsplit(", ", 1))
        problems = [
            f"flow {flow!r} has an unfinished run{f' ({run_id})' if run_id else ''}, and its {what} changed since "
            "that run started: resuming it now would write the rest of its data differently from the part already "
            "written. Either run it with the spec it was started with to finish it, or start over with --fresh "
            f"(discards the checkpoint in {checkpoint_dir})"
            + ("" if "source" in changed else "; --resume-anyway resumes it with the new spec")
        ]
        super().__init__(problems, where=f"flow {flow!r}")


def _pending_splits(enumerator: SplitEnumerator) -> list[Split]:
    pending = getattr(enumerator, "pending", None)
    return list(pending) if pending is not None else []


def _new_run_id() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + new_id(8)


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
    ctx = RunContext(**{**run_ctx.__dict__, "reader_id": reader_id})
    pipeline = None
    try:
        cls = registry.resolve("source", spec.source["type"])
        source: Source = cls({k: v for k, v in spec.source.items() if k != "type"})
        source.run_context = ctx
        pipeline = _Pipeline(spec, ctx, run_dir, registry)
        pipeline.open()
        reader = source.create_reader(_ProcessReaderContext(reader_id, outbox))
        reader.start()
        stop = False
        idle = float(spec.runtime.get("idle_sleep_s", 0.2))
        while True:
            # messages from the coordinator
            while True:
                try:
                    msg = inbox.get_nowait()
                except queue.Empty:
                    break
                stop = stop or _apply(msg, reader, source)
            if os.getppid() != coordinator:
                return  # the coordinator died: stop; the next run resumes from the checkpoints
            batch = reader.poll_batch(batch_size)
            if batch.records or batch.dead_letters or batch.finished_splits:
                counts = pipeline.commit(batch) if (batch.records or batch.dead_letters) else None
                checkpoints.save_reader(reader_id, [s.to_dict() for s in reader.snapshot_state()], batch.finished_splits)
                reader.notify_checkpoint_complete()
                outbox.send((
                    "progress", reader_id, counts.to_dict() if counts is not None else None, batch.input_bytes,
                    batch.finished_splits, pipeline.dead.take_reasons(),
                ))
            if batch.status is ReaderStatus.END_OF_INPUT or stop:
                break
            if batch.status is ReaderStatus.NOTHING_AVAILABLE:
                try:
                    msg = inbox.get(timeout=idle)
                except queue.Empty:
                    continue
                stop = stop or _apply(msg, reader, source)
        reader.close()
        pipeline.close()
        outbox.send(("done", reader_id))
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
            )
        )
        if pipeline is not None:
            with contextlib.suppress(Exception):
                pipeline.close()
    finally:
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


# --------------------------------------------------------------------------- replay


@dataclass
class ReplayResult:
    """What a replay of dead letters did: ``written`` + ``filtered`` + ``len(dead)`` = ``replayed`` + ``fanned_out``.

    ``dead`` are the dead letters that failed again (with their new reason and their first
    origin), ``kept`` the ones that cannot be replayed (malformed input: fix the input and run
    the flow again; or a step the flow no longer has), unchanged.
    """

    replayed: int = 0
    written: int = 0
    filtered: int = 0
    fanned_out: int = 0
    dead: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    kept: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def replay_dead_letters(
    flow: Any,
    letters: list[dict[str, Any]],
    *,
    run_id: str,
    state_dir: str | None = None,
    store: Any = None,
    reg: Registry | None = None,
) -> ReplayResult:
    """Send dead letters (rows as written to ``dead_letters.jsonl``) through the *current* flow.

    A record a step refused enters the flow again at that step (the record is as it was
    when it reached the step); a record the sink refused goes to the sink. Input that could
    not be parsed (stage ``source``) cannot be replayed: it is kept. Dead letters that fail
    again come back in ``ReplayResult.dead`` with the new reason; the sink is not set up
    again (a file sink in overwrite mode is not truncated: records are appended).
    """
    from core.flow import as_spec

    spec = as_spec(flow, reg=reg)
    reg = reg or registry
    root = spec.runtime.get("state_dir") or state_dir or default_state_root()
    run_dir = os.path.join(os.path.abspath(root), spec.name, "runs", run_id)
    run_ctx = RunContext(flow_name=spec.name, run_id=run_id, state_dir=run_dir, resuming=True, store=store)
    pipeline = _Pipeline(spec, run_ctx, None, reg)
    pipeline.dead = DeadLetterWriter(None, run_ctx, None, reg, pipeline.sink_retry, keep_all=True)
    steps = pipeline.steps
    names = [step.name for step in steps]
    result = ReplayResult()
    groups: dict[int, list[dict[str, Any]]] = {}
    for letter in letters:
        stage = letter.get("stage")
        start: int | None = None
        if stage == "sink":
            start = len(steps)
        elif stage == "step" and letter.get("step") in names:
            start = names.index(letter["step"])
        if start is None or not isinstance(letter.get("record"), dict):
            result.kept.append(letter)
        else:
            groups.setdefault(start, []).append(letter)
    batch_size = int(spec.runtime.get("batch_size") or 500)
    pipeline.open()
    try:
        for start in sorted(groups):
            pipeline.steps = steps[start:]
            pipeline.routing = any(s.can_route or s.static_next is not None for s in pipeline.steps)
            group = groups[start]
            for i in range(0, len(group), batch_size):
                chunk = group[i : i + batch_size]
                origins = Origins()
                for letter in chunk:
                    origins.add(1, letter.get("origin") or {})
                batch = ReaderBatch([copy.deepcopy(letter["record"]) for letter in chunk], ReaderStatus.MORE_AVAILABLE,
                                    origins=origins)
                counts = pipeline.commit(batch)
                result.replayed += len(chunk)
                result.written += counts.records_out
                result.filtered += counts.filtered
                result.fanned_out += counts.fanned_out
    finally:
        pipeline.steps = steps
        pipeline.close()
    result.dead = list(pipeline.dead.kept or [])
    return result


# --------------------------------------------------------------------------- entry points


def run_flow(
    flow: Any,
    *,
    state_dir: str | None = None,
    resume: bool = True,
    on_progress: ProgressCallback | None = None,
    run_id: str | None = None,
    store: Any = None,
    reg: Registry | None = None,
    persist: bool = True,
    on_spec_change: str = "refuse",
) -> RunSummary:
    """Run a flow to the end (or until stopped) and return its summary.

    ``flow`` is a :class:`~core.spec.FlowSpec`, a spec mapping, or a
    :class:`~core.flow.DataFlow` subclass or instance. With ``persist=False`` the run writes
    no files (no checkpoints, no run record, one reader in this process, dead letters returned
    in ``summary.dead_letter_sample`` unless the spec names a dead-letter sink) — for hosts
    without a writable filesystem such as a Spin component. Never raises for a failing flow:
    the summary has ``status="failed"`` with the error and its backtrace, and the
    checkpoint is kept so the next run resumes. An invalid spec raises ``SpecError``.

    A checkpoint resumes only the same flow (source, steps, schema and sink). When the flow
    changed since its checkpoint was made, ``on_spec_change`` decides: ``"refuse"`` raises
    :class:`SpecChangedError` naming what changed; ``"fresh"`` discards the checkpoint and
    starts over (a request-driven run, whose records are its source); ``"resume"`` resumes
    anyway unless the source changed.
    """
    if on_spec_change not in ("refuse", "fresh", "resume"):
        raise ValueError(f"on_spec_change must be 'refuse', 'fresh' or 'resume', not {on_spec_change!r}")
    from core.flow import as_spec

    spec = as_spec(flow, reg=reg)
    reg = reg or registry
    t0 = time.monotonic()
    run = _Run(
        spec, state_root=state_dir, reg=reg, resume=resume, on_progress=on_progress, run_id=run_id, store=store,
        persist=persist, on_spec_change=on_spec_change,
    )
    status: str = "success"
    error: BaseException | None = None
    old_handler = None
    token = None
    try:
        run.prepare()
        token = run_id_var.set(run.run_id)
        log_event(_log, "run started", flow=spec.name, parallelism=run.parallelism, resumed=run.resumed)
        if run.unbounded:
            old_handler = _install_stop_handler(run)
        if run.parallelism == 1:
            run.run_inline()
        else:
            run.run_processes()
        if run.ended_by_input:
            run.source.on_run_success()
            if run.use_checkpoints:
                run.checkpoints.clear()
        else:
            status = "stopped"
    except KeyboardInterrupt as exc:
        status, error = "failed", AdfError("interrupted; run the flow again to resume from its checkpoint")
        error.__cause__ = exc
    except SpecChangedError:
        raise  # not a run: the caller chooses how to go on (--fresh, the old spec, --resume-anyway)
    except Exception as exc:
        status, error = "failed", exc
    finally:
        run.checkpoints.close()
        run.unlock()
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    summary = run.finish(status, error, t0)
    log_event(
        _log, "run finished", logging.INFO if summary.ok else logging.ERROR,
        **{k: v for k, v in summary.to_dict().items() if k != "backtrace"},
    )
    if token is not None:
        run_id_var.reset(token)
    return summary


def _install_stop_handler(run: _Run) -> Any:
    def stop(signum: int, frame: Any) -> None:
        run.stopping = True

    try:
        return signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread
        return None
