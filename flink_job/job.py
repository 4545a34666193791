"""Run a flow spec as an Apache Flink job (PyFlink).

::

    python -m flink_job.job examples/orders/flow.yaml [--parallelism 2] [--json]
    adf flink run examples/orders/flow.yaml --parallelism 2          # the same, through the CLI
    flink run -py flink_job/job.py -pyfs adf-flink.zip -- flow.yaml  # on a cluster (adf flink package)

How the flow maps onto Flink (PyFlink has no Python source API, so splits travel as
descriptors):

* the client asks the source's enumerator for every split and sends the splits, as JSON
  descriptors, through ``from_collection``; Flink spreads them over the parallel subtasks;
* ``read``: a ``flat_map`` that reads each split with the core ``SourceReader``; the elements
  that flow between the operators are batches of records (a JSON object each, up to
  ``runtime.batch_size`` records with their origins: see :func:`_pack`), so PyFlink's
  per-element cost is paid once per batch, and a step's or the sink's dead letter says where
  its record came from (file and line…), as under the local runner;
* each step: a ``flat_map`` running the core step on each batch; a record a step fails on
  goes to the dead-letter destination (one JSON Lines file per subtask in the run directory,
  merged by the client, or the spec's ``dead_letter`` sink);
* the sink: a function with ``open``/``close`` that writes what reaches it
  with the core sink, a batch per element (retries, then record-by-record isolation into dead
  letters, as the local runner does).

A bounded source runs in BATCH mode; an unbounded one in STREAMING mode with checkpointing
(``runtime.checkpoint_interval_ms``, default 10 s). Parallelism: ``--parallelism``, else the
spec's ``runtime.parallelism``. The job's result is a run summary like the local runner's.
Routing between steps (``next``) is not supported under Flink: the steps run in order.

Acknowledgements: a source that acknowledges what it read (Rafka: ``XACK``) does so when the
read operator hands a batch on, not after the sink wrote it as the local runner does — the
hand-off does not cross Flink operators. A job that fails after that point does not re-read
those entries; run such flows with the local runner when at-least-once matters more than scale.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # under `flink run -py`, the project is beside this file
    sys.path.insert(0, str(ROOT))

from core.connectors.base import RunContext  # noqa: E402
from core.errors import AdfError  # noqa: E402
from core.loader import load_flow  # noqa: E402
from core.outcome import BatchCounts, ReasonTally, verdict  # noqa: E402
from core.registry import registry  # noqa: E402
from core.spec import parse_spec  # noqa: E402
from core.splits import (  # noqa: E402
    Boundedness,
    CollectingEnumeratorContext,
    DeadLetter,
    DetachedReaderContext,
    Origins,
    ReaderStatus,
    Split,
)

__all__ = ["all_splits", "build_job", "main", "run"]


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


def _letter_dict(letter: DeadLetter, flow: str, run_id: str) -> dict[str, Any]:
    from core.engine import _now_iso

    data = letter.to_dict() if hasattr(letter, "to_dict") else dict(vars(letter))
    data.setdefault("flow", flow)
    data.setdefault("run_id", run_id)
    data.setdefault("ts", _now_iso())
    return data


def _pack(records: list[Any], origins: Origins | None, positions: list[int] | None) -> str:
    """One element between the operators: the batch's records, the origins of the batch the read
    operator made (``o``), and — once a step dropped or added records — each record's position
    in that batch (``p``; -1: a record a step made anew)."""
    return json.dumps({"r": records, "o": None if origins is None else origins.to_list(), "p": positions},
                      default=str)


def _unpack(value: str) -> tuple[list[Any], Origins | None, list[int] | None]:
    data = json.loads(value)
    return data["r"], None if data["o"] is None else Origins.from_list(data["o"]), data["p"]


def _origin(origins: Origins | None, positions: list[int] | None, index: int) -> dict[str, Any]:
    """The origin of record ``index`` of an element (as the local runner's ``_OriginTracker`` says it)."""
    if origins is None or index < 0:
        return {}
    at = index if positions is None else positions[index]
    if at < 0:  # a record a step made anew: only its batch is known
        return {"batch_from": origins.of(0), "batch_records": origins.count}
    return origins.of(at)


def _origins_of(origins: Origins | None, positions: list[int] | None, count: int) -> Origins | None:
    """The origins of an element's ``count`` records, for a :class:`~core.splits.ReaderBatch`."""
    if origins is None or positions is None:
        return origins
    out = Origins()
    for i in range(count):
        out.add(1, _origin(origins, positions, i))
    return out


class _Files:
    """Where a subtask writes its dead letters and its counts (read back by the client)."""

    def __init__(self, run_dir: str, op: str, subtask: int) -> None:
        os.makedirs(run_dir, exist_ok=True)
        self.letters_path = os.path.join(run_dir, f"dead_letters-{op}-{subtask}.jsonl")
        self.counts_path = os.path.join(run_dir, f"counts-{op}-{subtask}.json")
        self._letters: Any = None

    def letter(self, data: Mapping[str, Any]) -> None:
        if self._letters is None:
            self._letters = open(self.letters_path, "a", encoding="utf-8")
        self._letters.write(json.dumps(data, default=str) + "\n")

    def close(self, counts: Mapping[str, int]) -> None:
        if self._letters is not None:
            self._letters.close()
        with open(self.counts_path, "w", encoding="utf-8") as f:
            json.dump(dict(counts), f)


def _functions() -> dict[str, Any]:
    """The PyFlink functions (imported here: pyflink is needed only to run a job)."""
    from pyflink.datastream.functions import FlatMapFunction, MapFunction, RuntimeContext

    class ReadSplits(FlatMapFunction):  # type: ignore[misc]
        def __init__(self, spec: Mapping[str, Any], run_id: str, run_dir: str) -> None:
            self.spec, self.run_id, self.run_dir = dict(spec), run_id, run_dir

        def open(self, ctx: RuntimeContext) -> None:
            self.flow = parse_spec(self.spec)
            cls = registry.resolve("source", self.flow.source["type"])
            self.source = cls({k: v for k, v in self.flow.source.items() if k != "type"})
            self.source.run_context = RunContext(flow_name=self.flow.name, run_id=self.run_id, state_dir=self.run_dir,
                                                 reader_id=ctx.get_index_of_this_subtask(),
                                                 parallelism=ctx.get_number_of_parallel_subtasks())
            self.batch = int(self.flow.runtime.get("batch_size", 500))
            self.files = _Files(self.run_dir, "read", ctx.get_index_of_this_subtask())
            self.counts = {"records_in": 0, "dead_letters": 0, "splits": 0}

        def flat_map(self, descriptor: str) -> Iterator[str]:
            split = self.source.split_from_dict(json.loads(descriptor))
            reader = self.source.create_reader(DetachedReaderContext(self.source.run_context.reader_id))
            reader.add_splits([split])
            reader.notify_no_more_splits()
            reader.start()
            try:
                while True:
                    batch = reader.poll_batch(self.batch)
                    for letter in batch.dead_letters:
                        self.files.letter(_letter_dict(letter, self.flow.name, self.run_id))
                        self.counts["dead_letters"] += 1
                    self.counts["records_in"] += len(batch.records) + len(batch.dead_letters)
                    if batch.records:  # a batch per element: the per-element cost of PyFlink is paid per batch
                        yield _pack(batch.records, batch.origins, None)
                    # Flink takes the batch from here: an acknowledging source (Rafka) acknowledges
                    # it now — under Flink, when the read operator hands it on (see the module doc)
                    reader.notify_checkpoint_complete()
                    if batch.status is ReaderStatus.END_OF_INPUT:
                        break
                    if batch.status is ReaderStatus.NOTHING_AVAILABLE and not batch.records:
                        # not the end, even of a bounded split (a stream not yet read up to its
                        # end id): only END_OF_INPUT ends it
                        time.sleep(float(self.flow.runtime.get("idle_sleep_s", 0.05)))
            finally:
                reader.close()
            self.counts["splits"] += 1

        def close(self) -> None:
            self.files.close(self.counts)

    class Step(FlatMapFunction):  # type: ignore[misc]
        def __init__(self, spec: Mapping[str, Any], index: int, run_id: str, run_dir: str) -> None:
            self.spec, self.index, self.run_id, self.run_dir = dict(spec), index, run_id, run_dir

        def open(self, ctx: RuntimeContext) -> None:
            from core.steps import build_steps

            self.flow = parse_spec(self.spec)
            if self.index < 0:  # the spec's schema: validation and coercion, as the local runner does
                from core.engine import _SchemaStep
                from core.records import Schema

                self.step: Any = _SchemaStep(Schema.from_spec(self.flow.schema))
            else:
                self.step = build_steps([self.flow.steps[self.index]], registry.resolve)[0]
                if self.step.name.startswith("steps[0]:"):  # named as the local runner names it
                    self.step.name = f"steps[{self.index}]:" + self.step.name[len("steps[0]:"):]
            self.step.run_context = RunContext(flow_name=self.flow.name, run_id=self.run_id, state_dir=self.run_dir,
                                               reader_id=ctx.get_index_of_this_subtask())
            self.step.run_context.extras["context"] = dict(self.flow.context)
            self.step.open()
            self.tracker: _StageTracker | None = None  # while a batch goes through the step
            self.origins: Origins | None = None
            self.positions: list[int] | None = None
            self.files = _Files(self.run_dir, f"step{self.index}", ctx.get_index_of_this_subtask())
            self.counts = {"dead_letters": 0, "filtered": 0, "fanned_out": 0}

        def _error(self, record: Any, exc: BaseException, step: str) -> None:
            from core.redact import redact_text

            tracker = self.tracker
            origin: dict[str, Any] = {} if tracker is None else _origin(self.origins, self.positions, tracker.index_of(record))
            letter = DeadLetter(record, redact_text(f"{type(exc).__name__}: {exc}"), "step", type(exc).__name__,
                                origin=origin, step=step)
            if tracker is not None:
                tracker.failed.append(letter)
            self.files.letter(_letter_dict(letter, self.flow.name, self.run_id))
            self.counts["dead_letters"] += 1

        def flat_map(self, value: str) -> Iterator[str]:
            from core.engine import _OriginTracker
            from core.splits import ReaderBatch

            records, self.origins, self.positions = _unpack(value)
            self.tracker = _StageTracker(_OriginTracker(ReaderBatch(records, ReaderStatus.MORE_AVAILABLE)), records)
            failed_before = self.counts["dead_letters"]
            try:
                out = self.step.process_batch(records, self._error)
            finally:
                tracker, self.tracker = self.tracker, None
            # what the step dropped (filtered) or added (fan-out), as the local runner counts it
            net = len(records) - len(out) - (self.counts["dead_letters"] - failed_before)
            self.counts["filtered" if net > 0 else "fanned_out"] += abs(net)
            if out:  # routing decisions are not followed under Flink: the record goes on
                plain = [getattr(r, "record", r) if type(r) is not dict else r for r in out]
                yield _pack(plain, self.origins, tracker.positions_after(plain, self.positions))

        def close(self) -> None:
            self.step.close()
            self.files.close(self.counts)

    class WriteSink(MapFunction):  # type: ignore[misc]
        def __init__(self, spec: Mapping[str, Any], run_id: str, run_dir: str) -> None:
            self.spec, self.run_id, self.run_dir = dict(spec), run_id, run_dir

        def open(self, ctx: RuntimeContext) -> None:
            from core.engine import _Pipeline

            flow = parse_spec(self.spec)
            flow.steps = []  # the steps ran upstream
            flow.schema = None
            subtask = ctx.get_index_of_this_subtask()
            self.run_ctx = RunContext(flow_name=flow.name, run_id=self.run_id, state_dir=self.run_dir,
                                      reader_id=subtask, parallelism=ctx.get_number_of_parallel_subtasks())
            letters_dir = os.path.join(self.run_dir, f"sink-{subtask}")
            self.pipeline = _Pipeline(flow, self.run_ctx, letters_dir, registry)
            self.pipeline.open()
            self.buffer: list[Any] = []
            self.files = _Files(self.run_dir, "sink", subtask)
            self.dead = 0

        def _flush(self) -> None:
            from core.splits import ReaderBatch

            if self.buffer:
                counts = self.pipeline.commit(ReaderBatch(records=self.buffer, status=ReaderStatus.MORE_AVAILABLE))
                self.dead += counts.dead_letters
                self.buffer = []

        def map(self, value: str) -> int:
            # an element is already a batch (up to runtime.batch_size records): write it now, so
            # an unbounded job's records reach the sink as they come
            from core.splits import ReaderBatch

            records, origins, positions = _unpack(value)
            self._flush()
            if records:
                counts = self.pipeline.commit(ReaderBatch(records=records, status=ReaderStatus.MORE_AVAILABLE,
                                                          origins=_origins_of(origins, positions, len(records))))
                self.dead += counts.dead_letters
            return 0

        def close(self) -> None:
            self._flush()
            self.pipeline.close()
            self.files.close({"records_out": self.pipeline.records_out, "dead_letters": self.dead})

    return {"ReadSplits": ReadSplits, "Step": Step, "WriteSink": WriteSink}


class _StageTracker:
    """Where the records of one step's input and output sit in the element's batch: the local
    runner's ``_OriginTracker`` over one step."""

    def __init__(self, tracker: Any, records: list[Any]) -> None:
        self.tracker, self.records = tracker, records
        self.failed: list[DeadLetter] = []
        self._ids: dict[int, int] | None = None

    def index_of(self, record: Any) -> int:
        """The position of ``record`` (one of the step's input records) in its input; -1: none."""
        if self._ids is None:
            self._ids = {id(r): i for i, r in enumerate(self.records)}
        return self._ids.get(id(record), -1)

    def positions_after(self, out: list[Any], before: list[int] | None) -> list[int] | None:
        """The positions of the step's output records in the element's batch (None: the same as before)."""
        self.tracker.step_done(out, self.failed)
        local = self.tracker._positions(1)
        if local is None:
            return before
        return [p if p < 0 or before is None else before[p] for p in local]


def build_job(spec: Mapping[str, Any], *, parallelism: int | None, run_id: str, run_dir: str,
              splits: list[Split]) -> Any:
    """The PyFlink environment with the job's graph (run it with ``env.execute``)."""
    from pyflink.common import Configuration, Types
    from pyflink.datastream import RuntimeExecutionMode, StreamExecutionEnvironment

    flow = parse_spec(spec)
    cls = registry.resolve("source", flow.source["type"])
    source = cls({k: v for k, v in flow.source.items() if k != "type"})
    config = Configuration()
    config.set_string("python.executable", sys.executable)
    config.set_string("python.client.executable", sys.executable)
    config.set_string("python.pythonpath", str(ROOT))
    env = StreamExecutionEnvironment.get_execution_environment(config)
    p = int(parallelism or flow.runtime.get("parallelism", 1) or 1)
    env.set_parallelism(p)
    if source.boundedness is Boundedness.BOUNDED:
        env.set_runtime_mode(RuntimeExecutionMode.BATCH)
    else:
        env.set_runtime_mode(RuntimeExecutionMode.STREAMING)
        env.enable_checkpointing(int(flow.runtime.get("checkpoint_interval_ms", 10_000)))
    fns = _functions()
    raw = dict(flow.raw)
    descriptors = [json.dumps(s.to_dict(), default=str) for s in splits]
    stream = env.from_collection(descriptors, type_info=Types.STRING()).rebalance()
    stream = stream.flat_map(fns["ReadSplits"](raw, run_id, run_dir), output_type=Types.STRING()).name("read")
    if flow.schema is not None:
        stream = stream.flat_map(fns["Step"](raw, -1, run_id, run_dir), output_type=Types.STRING()).name("schema")
    for i, step in enumerate(flow.steps):
        stream = stream.flat_map(fns["Step"](raw, i, run_id, run_dir), output_type=Types.STRING()) \
            .name(f"step {i}: {step.get('type', 'python')}")
    written = stream.map(fns["WriteSink"](raw, run_id, run_dir), output_type=Types.INT()).name("sink")
    written.filter(lambda _: False).print()  # a terminal operator; nothing reaches it
    return env


def _merge(run_dir: str) -> tuple[dict[str, int], str | None, list[dict[str, Any]]]:
    totals = {"records_in": 0, "records_out": 0, "dead_letters": 0, "splits": 0, "filtered": 0, "fanned_out": 0}
    for path in glob.glob(os.path.join(run_dir, "counts-*.json")):
        with open(path, encoding="utf-8") as f:
            for k, v in json.load(f).items():
                totals[k] = totals.get(k, 0) + int(v)
    letters: list[dict[str, Any]] = []
    parts = sorted(glob.glob(os.path.join(run_dir, "dead_letters-*.jsonl")))
    parts += sorted(glob.glob(os.path.join(run_dir, "sink-*", "dead_letters.jsonl")))
    for path in parts:
        with open(path, encoding="utf-8") as f:
            letters.extend(json.loads(line) for line in f if line.strip())
    destination = None
    if letters:
        destination = os.path.join(run_dir, "dead_letters.jsonl")
        with open(destination, "w", encoding="utf-8") as f:
            for letter in letters:
                f.write(json.dumps(letter, default=str) + "\n")
    return totals, destination, letters


def run(spec: Mapping[str, Any] | str, *, parallelism: int | None = None, state_dir: str | None = None) -> dict[str, Any]:
    """Run ``spec`` (a mapping or a spec file) on Flink's local mini-cluster (or the cluster
    `flink run` submits to) and return a run summary."""
    from core.engine import default_state_root

    flow = load_flow(spec, origin="flink").spec  # every configuration layer, resolved once here
    raw = dict(flow.raw)
    # the subtasks import step modules from where the client does: beside the spec file, and
    # resolve relative paths from the client's working directory
    extra_path = [os.path.dirname(os.path.abspath(spec))] if isinstance(spec, str) else []
    raw["python_path"] = [*raw.get("python_path", []), *extra_path, os.getcwd()]
    flow.raw = raw
    if any(s.get("next") is not None for s in flow.steps):
        raise AdfError("routing between steps ('next') is not supported under Flink: the steps run in order")
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
    root = state_dir or default_state_root()
    run_dir = os.path.join(root, flow.name, "flink-runs", run_id)
    os.makedirs(run_dir, exist_ok=True)
    cls = registry.resolve("source", flow.source["type"])
    source = cls({k: v for k, v in flow.source.items() if k != "type"})
    p = int(parallelism or flow.runtime.get("parallelism", 1) or 1)
    source.run_context = RunContext(flow_name=flow.name, run_id=run_id, state_dir=run_dir, parallelism=p)
    splits = all_splits(source, p)
    started = time.time()
    status, error = "success", None
    try:
        env = build_job(flow.raw, parallelism=p, run_id=run_id, run_dir=run_dir, splits=splits)
        env.execute(f"adf {flow.name}")
    except Exception as exc:  # the job failed: report it like the local runner does
        status, error = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    totals, destination, letters = _merge(run_dir)
    counts = BatchCounts(
        records_in=totals["records_in"], records_out=totals["records_out"], filtered=totals["filtered"],
        fanned_out=totals["fanned_out"], dead_letters=len(letters),
    )
    tally = ReasonTally()
    for letter in letters:
        tally.add(str(letter.get("reason", "")))
    if status == "success":
        try:  # the same accounting and verdict as every other target
            counts.check(f"flow {flow.name!r} on Flink")
            status, problem = verdict(counts, flow.runtime.get("max_dead_letter_ratio"), tally.top())
            error = str(problem) if problem is not None else None
        except AdfError as exc:
            status, error = "failed", str(exc)
    else:
        counts.settle_in_flight()
    summary = {
        "flow": flow.name, "run_id": run_id, "status": status, "runtime": "flink", "parallelism": p,
        "records_in": counts.records_in, "records_out": counts.records_out, "filtered": counts.filtered,
        "fanned_out": counts.fanned_out, "in_flight": counts.in_flight,
        "dead_letters": len(letters), "dead_letter_reasons": tally.top(), "splits": len(splits),
        "duration_s": round(time.time() - started, 3),
        "dead_letter_destination": destination, "error": error, "run_dir": run_dir,
    }
    with open(os.path.join(run_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="flink_job.job", description="Run a flow spec as a Flink job.")
    ap.add_argument("spec", help="flow spec file (YAML or JSON)")
    ap.add_argument("--parallelism", "-p", type=int, default=None)
    ap.add_argument("--state-dir", default=None, help="where the run directory goes (default: the state root)")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    args = ap.parse_args(argv)
    summary = run(args.spec, parallelism=args.parallelism, state_dir=args.state_dir)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['flow']}: {summary['status']} on Flink (parallelism {summary['parallelism']}): "
              f"{summary['records_in']} in, {summary['records_out']} out, {summary['dead_letters']} dead letters "
              f"in {summary['duration_s']} s" + (f" — {summary['error']}" if summary["error"] else ""))
    return 0 if summary["status"] in ("success", "partial") else 1


if __name__ == "__main__":
    sys.exit(main())
