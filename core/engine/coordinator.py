"""The coordinator: one run's set-up, its enumerator and assignment ledger, its counts and its summary."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from active_data_flow.context import RunContext
from active_data_flow.engine.checkpoints import Checkpoints, default_state_root
from active_data_flow.engine.pipeline import Pipeline, setup_destinations
from active_data_flow.engine.summary import Progress, RunSummary
from active_data_flow.errors import AdfError, SpecError
from active_data_flow.ids import new_id, new_run_id, utc_now_iso
from active_data_flow.logs import get_logger, log_event
from active_data_flow.outcome import BatchCounts, ReasonTally, judge
from active_data_flow.redact import redact_text
from active_data_flow.registry import Registry
from active_data_flow.sink import Sink
from active_data_flow.source import (
    Split,
    SplitEnumerator,
    SplitEnumeratorContext,
)
from active_data_flow.telemetry import RunTelemetry

if TYPE_CHECKING:
    from active_data_flow.source import Source
    from active_data_flow.spec import FlowSpec

_log = get_logger("engine")


ProgressCallback = Callable[[Progress], None]


class Coordinator:
    """One run, seen from the coordinator (the calling process).

    It prepares the run (lock, checkpoint or fresh start, run id, run context, source), restores
    or creates the enumerator, keeps the assignment ledger (which split went to which reader, so a
    reader that dies gives its splits back from its last checkpoint), adds up what the readers
    report and writes the summary. The readers themselves run in :mod:`active_data_flow.engine.inline`
    (parallelism 1) or :mod:`active_data_flow.engine.processes`.
    """

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
        # set as the run goes (prepare, then the readers: active_data_flow.engine.inline or active_data_flow.engine.processes)
        self.enumerator: SplitEnumerator
        self.pipeline: Pipeline | None = None  # the inline reader's (its in-flight batch counts when it fails)
        self.dead_kept: list[dict[str, Any]] | None = None
        self.dead_letter_destination: str | None = None
        #: the run's span and counters (active_data_flow.telemetry); run_flow begins and ends it
        self.telemetry = RunTelemetry(spec.name)

    # -- set-up ------------------------------------------------------------------

    def _source(self) -> Source:
        source: Source = self.reg.build("source", self.spec.source, self.run_ctx)
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
        self.started_at = prior["started_at"] if self.resumed and prior else utc_now_iso()
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
        run_id = requested or new_run_id()
        if not self.persist:
            return run_id
        runs = os.path.join(self.flow_dir, "runs")
        while os.path.exists(os.path.join(runs, run_id)):
            run_id = f"{requested or new_run_id()}-{new_id(6)}"
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
            returned.extend(self.unfinished(int(reader_key), assigned))
        # readers that checkpointed splits the enumerator file does not know as assigned
        for reader_id in self.checkpoints.reader_ids():
            if str(reader_id) not in assignments:
                returned.extend(self.unfinished(reader_id, {}))
        if returned:
            self.allow.update(s.split_id for s in returned)
            enumerator.add_splits_back(returned, -1)
        self.save_enumerator(enumerator)
        for reader_id in self.checkpoints.reader_ids():
            self.checkpoints.remove_reader(reader_id)
        sink = self._sink()
        # what the batch each reader wrote after its last checkpoint becomes when it is written again
        log_event(_log, "resuming from checkpoint", returned_splits=len(returned),
                  delivery="exactly-once" if sink is not None and sink.idempotent else "at-least-once")
        return enumerator

    def unfinished(self, reader_id: int, assigned: Mapping[str, Any]) -> list[Split]:
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

    def save_enumerator(self, enumerator: SplitEnumerator) -> None:
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
        self.telemetry.progress(c)
        if self.on_progress is not None:
            self.on_progress(p)
        if self.max_dead is not None and c.dead_letters > self.max_dead:
            raise AdfError(
                f"{c.dead_letters:,} records were dead-lettered, more than runtime.max_dead_letters="
                f"{self.max_dead:,}; see {self.dead_letter_destination}. The checkpoint is kept: fix the cause and "
                "run the flow again to resume"
            )

    def deadline(self) -> float | None:
        stop_after = self.runtime.get("stop_after_s")
        return time.monotonic() + float(stop_after) if stop_after else None

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
                self.save_enumerator(self.enumerator)
        return True

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

    def forget(self, reader_id: int, finished: list[str]) -> None:
        """Finished splits (recorded in the reader's log) no longer need their assignment."""
        assigned = self.assignments.get(reader_id)
        if assigned:
            for sid in finished:
                assigned.pop(sid, None)

    # -- finish --------------------------------------------------------------------

    def _source_warnings(self) -> list[dict[str, Any]]:
        enumerator: SplitEnumerator | None = getattr(self, "enumerator", None)
        found = list(enumerator.warnings()) if enumerator is not None else []
        run_ctx: RunContext | None = getattr(self, "run_ctx", None)
        return found + run_ctx.notes.warnings() if run_ctx is not None else found

    def _schema_changes(self) -> list[dict[str, Any]]:
        run_ctx: RunContext | None = getattr(self, "run_ctx", None)
        return run_ctx.notes.schema_changes() if run_ctx is not None else []

    def finish(self, status: str, error: BaseException | None, t0: float) -> RunSummary:
        pipeline: Pipeline | None = getattr(self, "pipeline", None)
        if pipeline is not None:
            in_flight = pipeline.fail_current()  # the batch an error cut short (inline runs)
            if in_flight is not None:
                self.counts.add(in_flight)
            self.reasons.merge(pipeline.dead.take_reasons())
        counts = self.counts
        if error is None and status == "success":
            status, error = judge(counts, self.runtime.get("max_dead_letter_ratio"), self.reasons.top(),
                                  f"flow {self.spec.name!r}")
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
            started_at=getattr(self, "started_at", utc_now_iso()),
            ended_at=utc_now_iso(),
            resumed=getattr(self, "resumed", False),
            parallelism=self.parallelism,
            splits=self.progress.splits_done,
            reader_restarts=self.restarts,
            sink=self._describe_sink(),
            dead_letter_destination=getattr(self, "dead_letter_destination", None),
            warnings=self._source_warnings(),
            schema_changes=self._schema_changes(),
        )
        if error is not None:
            if isinstance(error, ReaderFailed):
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

    def _sink(self) -> Sink | None:
        """The flow's sink as configured (not opened), to describe it; None when it cannot be made."""
        try:
            sink: Sink = self.reg.build("sink", self.spec.sink)
            return sink
        except Exception:
            return None

    def _describe_sink(self) -> str:
        sink = self._sink()
        return redact_text(sink.describe()) if sink is not None else str(self.spec.sink.get("type"))


class ReaderFailed(AdfError):
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


def pending_splits(enumerator: SplitEnumerator) -> list[Split]:
    pending = getattr(enumerator, "pending", None)
    return list(pending) if pending is not None else []
