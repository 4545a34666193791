"""The PyFlink functions of a job: the read operators, the steps and the sink, built on the engine's pieces."""

from __future__ import annotations

import json
import os
import sys
import time
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

from active_data_flow.context import RunContext
from active_data_flow.engine import (
    OriginTracker,
    Pipeline,
    ReaderLoop,
    count_step,
)
from active_data_flow.flink_job.cluster import JOB_KEY, REST_KEY, CompletedCheckpoints
from active_data_flow.flink_job.elements import StageTracker, origin_at, origins_of, pack, split_marks, unpack
from active_data_flow.flink_job.outbox import Outbox, worker_dir
from active_data_flow.flink_job.parts import Parts
from active_data_flow.outcome import BatchCounts
from active_data_flow.record import DeadLetter
from active_data_flow.registry import registry
from active_data_flow.source import (
    CollectingEnumeratorContext,
    DetachedReaderContext,
    Origins,
    ReaderStatus,
    Split,
)
from active_data_flow.spec import parse_spec

__all__ = ['SPLIT_BYTES', 'all_splits', 'operator_classes']


#: the byte ranges a file source is cut into under Flink when its spec sets no ``split_bytes``
SPLIT_BYTES = 4 << 20


def all_splits(source: Any, parallelism: int = 1, limit: int = 1_000_000) -> list[Split]:
    """Every split ``source``'s enumerator hands out (a bounded source's whole input; an
    unbounded one's current splits), asking as each of ``parallelism`` readers in turn."""
    ctx = CollectingEnumeratorContext(parallelism)
    enumerator = source.create_enumerator(ctx)
    enumerator.start()
    try:
        for reader_id in range(parallelism):
            enumerator.add_reader(reader_id)
        while len(ctx.done) < parallelism and len(ctx.assigned) < limit:
            before = len(ctx.assigned)
            for reader_id in range(parallelism):
                if reader_id not in ctx.done:
                    enumerator.handle_split_request(reader_id)
            if len(ctx.assigned) == before:
                break  # unbounded: nothing more for now
    finally:
        enumerator.close()
    unique: dict[str, Split] = {}
    for split in ctx.assigned:
        unique.setdefault(split.split_id, split)
    return list(unique.values())


def operator_classes() -> dict[str, Any]:  # noqa: C901
    """The PyFlink functions (imported here: pyflink is needed only to run a job)."""
    from pyflink.datastream.functions import (
        FlatMapFunction,
        KeyedProcessFunction,
        MapFunction,
        RuntimeContext,
    )

    def open_read(fn: Any, ctx: RuntimeContext) -> None:
        """What both read operators set up: the flow, its source and the outbox."""
        from active_data_flow.flink_job.watchdog import watch_parent

        watch_parent()
        fn.flow = parse_spec(fn.spec)
        run_dir = worker_dir(fn.run_dir, fn.flow.name, fn.run_id)
        fn.source = registry.build("source", fn.flow.source)
        fn.subtask, fn.parallelism = ctx.get_index_of_this_subtask(), ctx.get_number_of_parallel_subtasks()
        fn.source.run_context = RunContext(flow_name=fn.flow.name, run_id=fn.run_id, state_dir=run_dir,
                                           reader_id=fn.subtask, parallelism=fn.parallelism)
        fn.batch = int(fn.flow.runtime.get("batch_size", 500))
        fn.idle = float(fn.flow.runtime.get("idle_sleep_s", 0.05))
        fn.discovery = float(fn.flow.runtime.get("discovery_interval_s", 10))
        fn.out = Outbox(fn.flow, fn.run_id, run_dir, "read", fn.subtask, fn.carry, ctx.get_metrics_group())

    class ReadSplits(FlatMapFunction):  # type: ignore[misc]
        """A bounded flow's read operator. Its input is a number from the job's
        ``NumberSequenceSource`` (a FLIP-27 source: Flink assigns its number ranges to the subtasks
        and checkpoints each reader's position): number ``k`` is split ``k`` of ``work``. One call
        reads that split whole and returns, so a checkpoint barrier passes between splits and a
        restart resumes after the last split the checkpoint covers."""

        def __init__(self, spec: Mapping[str, Any], run_id: str, run_dir: str | None, carry: bool = False,
                     work: list[list[dict[str, Any]]] | None = None) -> None:
            self.spec, self.run_id, self.run_dir, self.carry = dict(spec), run_id, run_dir, carry
            self.work = list(work or [])

        def open(self, ctx: RuntimeContext) -> None:
            open_read(self, ctx)

        def flat_map(self, k: int) -> Iterator[str]:
            k = int(k)
            if k >= len(self.work):
                return
            splits = [self.source.split_from_dict(d) for d in self.work[k]]
            reader = self.source.create_reader(DetachedReaderContext(self.subtask))
            reader.add_splits(splits)
            reader.notify_no_more_splits()
            reader.start()
            # poll → write (emit downstream: the operators after this one run chained, so the
            # element is written when the generator is resumed) → acknowledge; the checkpoint is
            # Flink's, whose barrier passes after this split
            loop = ReaderLoop(reader, self.batch)
            try:
                while True:
                    batch = loop.poll()
                    for letter in batch.dead_letters:
                        self.out.letter(letter)
                    self.out.count("records_in", len(batch.records) + len(batch.dead_letters))
                    if batch.records:  # a batch per element: the per-element cost of PyFlink is paid per batch
                        yield pack(batch.records, batch.origins, None, {**self.out.take(), "k": k})
                    loop.commit(batch)
                    if batch.status is ReaderStatus.END_OF_INPUT:
                        break
                    if batch.status is ReaderStatus.NOTHING_AVAILABLE and not batch.records:
                        # not the end, even of a bounded split (a stream not yet read up to its
                        # end id): only END_OF_INPUT ends it
                        time.sleep(self.idle)
            finally:
                reader.close()
            self.out.count("splits", len(splits))
            # the split's end (its last counts and dead letters): the sink commits the split's part here
            yield pack([], None, None, {**self.out.take(), "k": k, "e": 1})

        def close(self) -> None:
            self.out.close()

    class ReadKeyed(KeyedProcessFunction):  # type: ignore[misc]
        """An unbounded flow's read operator: keyed by reader group (one key a subtask,
        :func:`_subtask_keys`), driven by ticks (the ``NumberSequenceSource``'s numbers). One
        call polls the group's splits once and returns, so barriers pass.

        The group's reader positions (its splits' ``snapshot_state``) and the splits it knows are
        the key's ``ValueState``: checkpoints and savepoints hold them, and a restarted or restored
        job's reader goes on from there (a file from its offset; a Rafka partition from its
        consumer's pending entries). Every call first takes what the previous call read — written
        by then: the operators after this one run chained in the same worker, an element after
        the other — for acknowledgement once a checkpoint covers it (:meth:`_release`). A split
        found later (a new partition, a new file of a watched directory) goes to the group its id
        hashes to."""

        def __init__(self, spec: Mapping[str, Any], run_id: str, run_dir: str | None, carry: bool,
                     work: list[list[dict[str, Any]]], keys: list[int]) -> None:
            self.spec, self.run_id, self.run_dir, self.carry = dict(spec), run_id, run_dir, carry
            self.work, self.keys = list(work), list(keys)

        def open(self, ctx: RuntimeContext) -> None:
            from pyflink.common import Types
            from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

            open_read(self, ctx)
            self.state = ctx.get_state(ValueStateDescriptor("adf-reader", Types.STRING()))
            # acknowledgement tokens of what was written and not acknowledged yet (see _release)
            self.unacked = ctx.get_list_state(ListStateDescriptor("adf-unacked", Types.STRING()))
            self.group_of = {key: g for g, key in enumerate(self.keys)}
            self.readers: dict[int, list[Any]] = {}  # group -> [reader, known split ids, last discovery]
            self.held: dict[int, list[tuple[float, Any]]] = {}  # group -> [(taken at, token)]
            rest, job = ctx.get_job_parameter(REST_KEY, ""), ctx.get_job_parameter(JOB_KEY, "")
            self.checkpoints = CompletedCheckpoints(rest, job) if rest and job else None

        def _reader(self, g: int) -> list[Any]:
            saved = self.state.value()
            if saved:  # restored from a checkpoint or savepoint
                data = json.loads(saved)
                splits = [self.source.split_from_dict(d) for d in data["splits"]]
                known = set(data["known"])
            else:
                splits = [self.source.split_from_dict(d) for d in (self.work[g] if g < len(self.work) else [])]
                known = {str(d.get("split_id")) for group in self.work for d in group}
                self.out.count("splits", len(splits))
            reader = self.source.create_reader(DetachedReaderContext(self.subtask))
            reader.add_splits(splits)
            reader.start()
            if saved:
                # written before the checkpoint this job was restored from: acknowledged now, so
                # they are not read again
                for token in self.unacked.get() or []:
                    reader.acknowledge(json.loads(token))
                self.unacked.clear()
            return [reader, known, time.monotonic()]

        def _release(self, g: int, reader: Any) -> None:
            """Acknowledge what the checkpoints cover: a token taken (after its records were
            written) before the latest completed checkpoint was triggered, by the JobManager's
            clock, less a second for the clocks' skew. Tokens not acknowledged yet are keyed state:
            a job restored from a checkpoint acknowledges those it holds (:meth:`_reader`)."""
            held = self.held.get(g)
            if not held or self.checkpoints is None:
                return
            covered_until = self.checkpoints.latest() - 1.0
            ready = [token for at, token in held if at < covered_until]
            if not ready:
                return
            merged: dict[str, list[str]] = {}
            for token in ready:
                for key, ids in token.items():
                    merged.setdefault(key, []).extend(ids)
            reader.acknowledge(merged)
            self.held[g] = rest = [(at, token) for at, token in held if at >= covered_until]
            self.unacked.update([json.dumps(token) for _, token in rest])

        def _discover(self, g: int, entry: list[Any]) -> None:
            entry[2] = time.monotonic()
            try:
                found = all_splits(self.source, len(self.keys))
            except Exception:  # the source is unreachable just now: try again at the next interval
                return
            known: set[str] = entry[1]
            new = [s for s in found if s.split_id not in known]
            known.update(s.split_id for s in new)
            mine = [s for s in new if zlib.crc32(s.split_id.encode()) % len(self.keys) == g]
            if mine:
                entry[0].add_splits(mine)
                self.out.count("splits", len(mine))

        def process_element(self, tick: int, ctx: Any) -> Iterator[str]:
            g = self.group_of.get(ctx.get_current_key(), 0)
            entry = self.readers.get(g)
            if entry is None:
                entry = self.readers[g] = self._reader(g)
            else:
                # what the previous call read is written by now: acknowledged once a checkpoint
                # covers it (Rafka: XACK), or — without the JobManager's REST API (the local
                # mini-cluster) — now, after the write
                token = entry[0].take_acknowledgement()
                if token and self.checkpoints is None:
                    entry[0].acknowledge(token)
                elif token:
                    self.held.setdefault(g, []).append((time.time(), token))
                    self.unacked.add(json.dumps(token))
                self._release(g, entry[0])
            if self.discovery > 0 and time.monotonic() - entry[2] >= self.discovery:
                self._discover(g, entry)
            reader = entry[0]
            batch = reader.poll_batch(self.batch)
            for letter in batch.dead_letters:
                self.out.letter(letter)
            self.out.count("records_in", len(batch.records) + len(batch.dead_letters))
            self.state.update(json.dumps({"splits": [s.to_dict() for s in reader.snapshot_state()],
                                          "known": sorted(entry[1])}, default=str))
            if batch.records:
                yield pack(batch.records, batch.origins, None, self.out.take())
            elif batch.status is not ReaderStatus.END_OF_INPUT:
                time.sleep(self.idle)

        def close(self) -> None:
            for entry in self.readers.values():
                entry[0].close()
            self.out.close()

    class Step(FlatMapFunction):  # type: ignore[misc]
        def __init__(self, spec: Mapping[str, Any], index: int, run_id: str, run_dir: str | None,
                     carry: bool = False) -> None:
            self.spec, self.index, self.run_id, self.run_dir, self.carry = dict(spec), index, run_id, run_dir, carry

        def open(self, ctx: RuntimeContext) -> None:
            from active_data_flow.flink_job.watchdog import watch_parent
            from active_data_flow.step import build_steps

            watch_parent()
            self.flow = parse_spec(self.spec)
            run_dir = worker_dir(self.run_dir, self.flow.name, self.run_id)
            if self.index < 0:  # the spec's schema: validation and coercion, as the local runner does
                from active_data_flow.record import Schema
                from active_data_flow.step import SchemaStep

                self.step: Any = SchemaStep(Schema.from_spec(self.flow.schema))
            else:
                self.step = build_steps([self.flow.steps[self.index]], registry.resolve)[0]
                if self.step.name.startswith("steps[0]:"):  # named as the local runner names it
                    self.step.name = f"steps[{self.index}]:" + self.step.name[len("steps[0]:"):]
            self.step.run_context = RunContext(flow_name=self.flow.name, run_id=self.run_id, state_dir=run_dir,
                                               reader_id=ctx.get_index_of_this_subtask())
            self.step.run_context.extras["context"] = dict(self.flow.context)
            self.step.open()
            self.tracker: StageTracker | None = None  # while a batch goes through the step
            self.origins: Origins | None = None
            self.positions: list[int] | None = None
            self.out = Outbox(self.flow, self.run_id, run_dir, f"step{self.index}", ctx.get_index_of_this_subtask(),
                               self.carry, ctx.get_metrics_group())

        def _error(self, record: Any, exc: BaseException, step: str) -> None:
            from active_data_flow.redact import redact_text

            tracker = self.tracker
            origin: dict[str, Any] = {} if tracker is None else origin_at(self.origins, self.positions, tracker.index_of(record))
            letter = DeadLetter(record, redact_text(f"{type(exc).__name__}: {exc}"), "step", type(exc).__name__,
                                origin=origin, step=step)
            if tracker is not None:
                tracker.failed.append(letter)
            self.out.letter(letter)

        def flat_map(self, value: str) -> Iterator[str]:
            from active_data_flow.source import ReaderBatch

            records, self.origins, self.positions, carried = unpack(value)
            marks = split_marks(carried)
            if not records:  # counts and dead letters only (or a split's end): pass them on
                yield pack([], None, None, {**self.out.take(carried), **marks})
                return
            self.tracker = StageTracker(OriginTracker(ReaderBatch(records, ReaderStatus.MORE_AVAILABLE)), records)
            failed_before = self.out.counts.get("dead_letters", 0)
            try:
                out = self.step.process_batch(records, self._error)
            finally:
                tracker, self.tracker = self.tracker, None
            # what the step dropped (filtered) or added (fan-out), as the local runner counts it
            counts = BatchCounts()
            count_step(counts, len(records), len(out), self.out.counts.get("dead_letters", 0) - failed_before)
            self.out.count("filtered", counts.filtered)
            self.out.count("fanned_out", counts.fanned_out)
            extra = self.out.take(carried)
            if out:  # routing decisions are not followed under Flink: the record goes on
                plain = [getattr(r, "record", r) if type(r) is not dict else r for r in out]
                yield pack(plain, self.origins, tracker.positions_after(plain, self.positions), {**extra, **marks})
            elif extra:
                yield pack([], None, None, {**extra, **marks})

        def close(self) -> None:
            self.step.close()
            self.out.close()

    class WriteSink(MapFunction):  # type: ignore[misc]
        def __init__(self, spec: Mapping[str, Any], run_id: str, run_dir: str | None, carry: bool = False,
                     parts: str | None = None, metas: str | None = None) -> None:
            self.spec, self.run_id, self.run_dir, self.carry = dict(spec), run_id, run_dir, carry
            self.parts_dir = parts  # a file sink's output, committed split by split (see Parts)
            self.metas_dir = metas  # another sink's split tallies (a detached job's summary)

        def open(self, ctx: RuntimeContext) -> None:
            from active_data_flow.flink_job.watchdog import watch_parent

            watch_parent()
            flow = parse_spec(self.spec)
            flow.steps = []  # the steps ran upstream
            flow.schema = None
            subtask = ctx.get_index_of_this_subtask()
            run_dir = worker_dir(self.run_dir, flow.name, self.run_id)
            self.run_ctx = RunContext(flow_name=flow.name, run_id=self.run_id, state_dir=run_dir,
                                      reader_id=subtask, parallelism=ctx.get_number_of_parallel_subtasks())
            if self.carry or flow.dead_letter:
                # the sink's dead letters: kept in memory and carried on (or the dead-letter sink's)
                self.pipeline = Pipeline(flow, self.run_ctx, None, registry)
                self.pipeline.dead.KEEP = sys.maxsize
            else:
                self.pipeline = Pipeline(flow, self.run_ctx, os.path.join(run_dir, f"sink-{subtask}"), registry)
            self.pipeline.open()
            self.out = Outbox(flow, self.run_id, run_dir, "sink", subtask, self.carry, ctx.get_metrics_group())
            self.parts = None if self.parts_dir is None else Parts(self.parts_dir)
            self.metas = self.parts or (None if self.metas_dir is None else Parts(self.metas_dir))

        def map(self, value: str) -> str:
            # an element is already a batch (up to runtime.batch_size records): write it now, so
            # an unbounded job's records reach the sink as they come
            from active_data_flow.source import ReaderBatch

            records, origins, positions, carried = unpack(value)
            parts = self.parts
            k = int(carried["k"]) if parts is not None and "k" in carried else None
            if parts is not None and k is not None:
                if records:
                    parts.write(k, records)
                    self.out.count("records_out", len(records))
            elif records:
                before = self.pipeline.records_out
                counts = self.pipeline.commit(ReaderBatch(records=records, status=ReaderStatus.MORE_AVAILABLE,
                                                          origins=origins_of(origins, positions, len(records))))
                self.out.count("records_out", self.pipeline.records_out - before)
                self.out.count("dead_letters", counts.dead_letters)
                kept = self.pipeline.dead.kept
                if kept:
                    self.out.rows(list(kept))
                    kept.clear()
            if not self.carry:
                if parts is not None and k is not None and carried.get("e"):
                    parts.commit(k)
                return ""
            taken = self.out.take(carried)
            dead_sink = getattr(self.pipeline.dead, "_sink", None)
            if dead_sink is not None and taken.get("d"):  # the upstream operators' dead letters
                dead_sink.write_batch(taken["d"])
                dead_sink.flush()
                taken["d"] = []
            metas = self.metas
            if metas is not None and "k" in carried:  # the split's counts and dead letters go with its part
                metas.tally(int(carried["k"]), taken)
                if carried.get("e"):
                    if parts is not None:
                        parts.commit(int(carried["k"]))
                    else:
                        metas.commit_meta(int(carried["k"]))
            return json.dumps(taken, default=str)

        def close(self) -> None:
            if self.parts is not None:
                self.parts.abort()
            self.pipeline.close()
            self.out.close()

    return {"ReadSplits": ReadSplits, "ReadKeyed": ReadKeyed, "Step": Step, "WriteSink": WriteSink}
