"""The pipeline of one reader: steps, then the sink, then the dead letters, one batch at a time."""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import TYPE_CHECKING, Any

from active_data_flow.context import RunContext
from active_data_flow.engine.dead_letter_writer import DeadLetterWriter
from active_data_flow.errors import AdfError, SinkUnavailableError
from active_data_flow.logs import get_logger, log_event
from active_data_flow.outcome import BatchCounts
from active_data_flow.record import DeadLetter, Record
from active_data_flow.redact import redact_text
from active_data_flow.registry import Registry
from active_data_flow.retry import (
    RetriesExhausted,
    RetryPolicy,
    is_unavailable,
    retry_call,
    unavailable_reason,
)
from active_data_flow.sink import Sink
from active_data_flow.source import (
    Origins,
    ReaderBatch,
)
from active_data_flow.step import Routed, Step, flow_steps
from active_data_flow.telemetry import span, tracer

if TYPE_CHECKING:
    from active_data_flow.spec import FlowSpec

_log = get_logger("engine")


def setup_destinations(
    spec: FlowSpec, run_ctx: RunContext, reg: Registry, *, run_dir: str | None = None, sink: Sink | None = None
) -> None:
    """Prepare a new run's sink and dead-letter sink, once, before anything is read (a file sink's
    ``mode: overwrite`` truncates here; every writer then appends): the local coordinator and the
    Flink client both call it. A destination that cannot be reached is retried within
    ``runtime.sink_retry``; then :class:`SinkUnavailableError`."""
    if sink is None:
        sink = reg.build("sink", spec.sink)
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


class OriginTracker:
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
        return self.origins.locate(by_id.get(id(record), -1))


class Pipeline:
    """Steps + sink + dead letters of one reader; commits one batch at a time.

    Every batch is accounted for (see :mod:`active_data_flow.outcome`): each record read is written,
    filtered by a step, or dead-lettered; steps that add records count as ``fanned_out``.
    ``current`` holds the counts of the batch being committed, so a run that fails in the
    middle of one can say what happened to it.

    What the sink's errors mean:

    * an **outage** (:func:`active_data_flow.retry.unavailable_reason`: connection refused or reset,
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
        self.sink: Sink = reg.build("sink", spec.sink, run_ctx)
        self.sink_retry = RetryPolicy.from_config(self.runtime.get("sink_retry"), "runtime.sink_retry")
        self.dead = DeadLetterWriter(spec.dead_letter, run_ctx, run_dir, reg, self.sink_retry)
        self.totals = BatchCounts()
        #: the counts of the batch being committed (None between batches)
        self.current: BatchCounts | None = None
        self.bytes_done = 0
        self._sink_name = redact_text(self.sink.describe())
        #: OpenTelemetry's tracer when it is on (active_data_flow.telemetry): a span per batch, per step
        #: and sink write of a batch; None: no spans
        self._tracer = tracer()
        self._step_attributes = [
            {"adf.flow": spec.name, "adf.step.name": step.name, "adf.step.type": step.type_name or type(step).__name__}
            for step in self.steps
        ]

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
        if self._tracer is None:
            return self._commit(batch)
        attributes = {"adf.flow": self.spec.name, "adf.reader_id": self.run_ctx.reader_id,
                      "adf.records_in": len(batch.records) + len(batch.dead_letters)}
        with span(self._tracer, "adf.batch", attributes) as batch_span:
            counts = self._commit(batch)
            batch_span.set_attributes({"adf.records_out": counts.records_out, "adf.filtered": counts.filtered,
                                       "adf.dead_letters": counts.dead_letters})
        return counts

    def _commit(self, batch: ReaderBatch) -> BatchCounts:
        counts = self.current = BatchCounts(records_in=len(batch.records) + len(batch.dead_letters))
        letters = list(batch.dead_letters)
        records = batch.records
        tracker = OriginTracker(batch)
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
                for i, step in enumerate(self.steps):
                    n, failed_before = len(records), len(letters)
                    with span(self._tracer, "adf.step", self._step_attributes[i]) as step_span:
                        records = step.process_batch(records, on_error)
                        if step_span is not None:
                            step_span.set_attributes({"adf.records_in": n, "adf.records_out": len(records),
                                                      "adf.dead_letters": len(letters) - failed_before})
                    failed = len(letters) - failed_before
                    count_step(counts, n, len(records), failed)
                    tracker.step_done(records, letters[failed_before:])
                    if not records:
                        break
        if records:
            with span(self._tracer, "adf.sink", {"adf.flow": self.spec.name, "adf.sink": self._sink_name,
                                                 "adf.records_in": len(records)}):
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
            with span(self._tracer, "adf.step", self._step_attributes[i]):
                out: list[Any] = step.process_batch(batch, on_error)
            count_step(counts, len(batch), len(out), len(letters) - failed_before)
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
            from active_data_flow.outcome import AccountingError

            raise AccountingError(
                f"sink {self._sink_name} reported {got:,} record(s) written of a batch of {len(records):,}: "
                "the difference would be lost without a trace"
            )

    def _write(self, records: list[Record], letters: list[DeadLetter], counts: BatchCounts, tracker: OriginTracker) -> None:
        """Deliver the batch; an error of a kind we cannot tell is retried ``runtime.retries`` times
        (backoff from ``runtime.retry_backoff_s``, doubling) before the refused records are looked for."""
        retries = int(self.runtime.get("retries", 3))
        delay = float(self.runtime.get("retry_backoff_s", 0.1))
        fail_fast = self.runtime.get("sink_error_policy") == "fail"
        policy = RetryPolicy(window_s=float("inf"), first_delay_s=delay, max_delay_s=delay * 2 ** max(retries, 0),
                             jitter=0.0, max_attempts=max(retries, 0) + 1)

        def log(exc: BaseException, attempt: int, wait: float) -> None:
            log_event(_log, "sink write failed; retrying", logging.WARNING, attempt=attempt, retries=retries,
                      error=redact_text(f"{type(exc).__name__}: {exc}"))

        try:
            retry_call(lambda: self._deliver(records), policy=policy, what=f"sink {self._sink_name}", on_retry=log,
                       retryable=lambda exc: not fail_fast and _sink_error_kind(exc) == "unknown")
            counts.records_out += len(records)
            return
        except RetriesExhausted as exc:
            error: BaseException = exc.last
        except Exception as exc:
            error = exc
        if _sink_error_kind(error) == "fatal" or fail_fast:
            raise error
        self._isolate(records, error, letters, counts, tracker)

    def _isolate(
        self, chunk: list[Record], error: BaseException, letters: list[DeadLetter], counts: BatchCounts,
        tracker: OriginTracker,
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


def count_step(counts: BatchCounts, n_in: int, n_out: int, failed: int) -> None:
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
    from active_data_flow.errors import RecordValidationError

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
