"""Run a flow spec as an Apache Flink job (PyFlink).

::

    python -m flink_job.job examples/orders/flow.yaml [--parallelism 2] [--json]
    adf flink run examples/orders/flow.yaml --parallelism 2          # the same, through the CLI
    adf flink package flow.yaml --out pkg --shared /data              # for a cluster: see pkg/README.txt
    flink run -py pkg/job.py -pyfs pkg/adf-flink.zip -pyexec PY -pyclientexec PY pkg/flow.json

How the flow maps onto Flink (PyFlink has no Python source API; docs/FLINK.md says more):

* the job's source is Flink's ``NumberSequenceSource`` (FLIP-27: Flink assigns its number
  ranges to the subtasks and checkpoints each reader's position). A bounded flow's number ``k``
  is split ``k`` of those the source's enumerator listed at submission, read whole by one call
  of :class:`ReadSplits` chained after the source. An unbounded flow's numbers are ticks, keyed
  by reader group (one group a subtask): each tick polls the group once, and the group's
  reader positions are keyed state (``ReadKeyed``). Each call returns and the Python bundle is
  one element, so checkpoint barriers pass between calls;
* the elements between the operators are batches of records (a JSON object each, up to
  ``runtime.batch_size`` records with their origins: see :func:`_pack`), so PyFlink's
  per-element cost is paid once per batch, and a step's or the sink's dead letter says where
  its record came from (file and line…), as under the local runner;
* each step: a ``flat_map`` running the core step on each batch; a record a step fails on
  is a dead letter;
* the sink: a function with ``open``/``close`` that writes what reaches it
  with the core sink, a batch per element (retries, then record-by-record isolation into dead
  letters, as the local runner does). A bounded, attached job's file sink commits each split's
  records as a part of its own instead (:class:`_Parts`): exactly once across restarts.

Counts and dead letters (:class:`_Outbox`): in a bounded, attached job they travel with the
elements to the sink operator, whose output the client collects (``execute_and_collect``): the
summary comes from the job, not from files, and no filesystem is shared with the TaskManagers.
The sink operator writes the dead letters to the flow's ``dead_letter`` sink when it has one;
otherwise the client writes them to its run directory. An unbounded job and a detached one
(``flink run -d``: the client prints the job id and returns) write counts and dead letters to
files in each worker's run directory (the client's on the local mini-cluster; the TaskManager
host's temporary directory on a cluster), and count ``adf_*`` Flink metrics
(``adf flink status``).

Every job runs in STREAMING mode with checkpoints (``runtime.checkpoint_interval_ms``, default
2 s bounded, 10 s unbounded). Parallelism: ``--parallelism``, else — under ``flink run`` — Flink's (``-p``, the
cluster's default), else the spec's ``runtime.parallelism``. Routing between steps (``next``)
is not supported under Flink: the steps run in order. Under ``flink run``, the workers'
interpreter is the one ``-pyexec`` (``python.executable``) names; the local mini-cluster uses
this interpreter. Every operator's ``open()`` starts a watchdog (:mod:`flink_job.watchdog`): a
Python worker whose TaskManager JVM is gone kills itself.

Acknowledgements: PyFlink gives Python functions no checkpoint-complete hook, so a source that
acknowledges what it read (Rafka: ``XACK``) does so once the JobManager's REST API says a
checkpoint covering the write completed (``ReadKeyed._release``); the tokens not acknowledged
yet are keyed state, acknowledged by a job restored from them. Without the REST API (the local
mini-cluster) an entry is acknowledged at the reader's next poll, after the sink wrote it.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import sys
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # under `flink run -py`, the project is beside this file
    sys.path.insert(0, str(ROOT))

from core.context import RunContext  # noqa: E402
from core.engine import (  # noqa: E402
    DeadLetterWriter,
    OriginTracker,
    Pipeline,
    ReaderLoop,
    count_step,
    default_state_root,
    setup_destinations,
)
from core.errors import AdfError  # noqa: E402
from core.ids import new_run_id, utc_now_iso  # noqa: E402
from core.loader import load_flow  # noqa: E402
from core.outcome import BatchCounts, ReasonTally, judge  # noqa: E402
from core.record import DeadLetter  # noqa: E402
from core.registry import registry  # noqa: E402
from core.source import (  # noqa: E402
    Boundedness,
    CollectingEnumeratorContext,
    DetachedReaderContext,
    Origins,
    ReaderStatus,
    Split,
)
from core.spec import parse_spec  # noqa: E402

__all__ = ["all_splits", "assemble_parts", "build_job", "main", "run"]

#: the job parameter that holds what ``adf flink status`` needs to finish a detached run
REPORT_KEY = "adf.report"
#: the job parameters with the JobManager's REST URL and the job's name (checkpoint-gated acks)
REST_KEY, JOB_KEY = "adf.rest", "adf.job"


class _CompletedCheckpoints:
    """When the job's latest completed checkpoint was triggered (epoch seconds, JobManager
    clock), from the REST API, asked at most twice a second; 0 while none completed or the API
    does not answer (nothing is acknowledged then: entries stay pending, read again after a
    restart)."""

    def __init__(self, rest: str, job_name: str) -> None:
        self.rest, self.job_name = rest.rstrip("/"), job_name
        self.job_id: str | None = None
        self.trigger = 0.0
        self.asked = 0.0

    def _get(self, path: str) -> Any:
        import urllib.request

        with urllib.request.urlopen(self.rest + path, timeout=5) as r:
            return json.loads(r.read())

    def latest(self) -> float:
        now = time.monotonic()
        if now - self.asked < 0.5:
            return self.trigger
        self.asked = now
        try:
            if self.job_id is None:
                jobs = [j for j in self._get("/jobs/overview").get("jobs", [])
                        if j.get("name") == self.job_name and j.get("state") == "RUNNING"]
                if not jobs:
                    return self.trigger
                self.job_id = str(jobs[0]["jid"])
            completed = ((self._get(f"/jobs/{self.job_id}/checkpoints").get("latest") or {}).get("completed") or {})
            if completed.get("trigger_timestamp"):
                self.trigger = max(self.trigger, float(completed["trigger_timestamp"]) / 1000)
        except (OSError, ValueError, KeyError):
            pass
        return self.trigger

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


def _letter_dict(letter: DeadLetter, flow: str, run_id: str) -> dict[str, Any]:
    data = letter.to_dict() if hasattr(letter, "to_dict") else dict(vars(letter))
    data.setdefault("flow", flow)
    data.setdefault("run_id", run_id)
    data.setdefault("ts", utc_now_iso())
    return data


def _pack(records: list[Any], origins: Origins | None, positions: list[int] | None,
          carried: Mapping[str, Any] | None = None) -> str:
    """One element between the operators: the batch's records, the origins of the batch the read
    operator made (``o``), and — once a step dropped or added records — each record's position
    in that batch (``p``; -1: a record a step made anew). A bounded job's element also carries
    the counts (``c``) and dead letters (``d``) of the operators it went through (:class:`_Outbox`)."""
    data: dict[str, Any] = {"r": records, "o": None if origins is None else origins.to_list(), "p": positions}
    if carried:
        data.update(carried)
    return json.dumps(data, default=str)


def _unpack(value: str) -> tuple[list[Any], Origins | None, list[int] | None, dict[str, Any]]:
    data = json.loads(value)
    carried = {k: data[k] for k in ("c", "d", "k", "e") if k in data}
    return data["r"], None if data["o"] is None else Origins.from_list(data["o"]), data["p"], carried


def _marks(carried: Mapping[str, Any]) -> dict[str, Any]:
    """What an element says about its split besides counts: ``k``, the bounded split it comes
    from; ``e``, the split's end (the sink then commits the split's part: :class:`_Parts`)."""
    return {key: carried[key] for key in ("k", "e") if key in carried}


def _origin(origins: Origins | None, positions: list[int] | None, index: int) -> dict[str, Any]:
    """The origin of record ``index`` of an element (as the local runner's :class:`~core.engine.OriginTracker` says it)."""
    if origins is None or index < 0:
        return {}
    return origins.locate(index if positions is None else positions[index])


def _origins_of(origins: Origins | None, positions: list[int] | None, count: int) -> Origins | None:
    """The origins of an element's ``count`` records, for a :class:`~core.source.ReaderBatch`."""
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


class _Outbox:
    """What an operator reports besides its records: counts and dead letters.

    A bounded job *carries* them downstream in the elements (``c``: counts, ``d``: dead letters),
    so the client gets them back through ``execute_and_collect`` — no filesystem is shared
    between the client and the TaskManagers — and the sink operator writes the dead letters to
    the flow's ``dead_letter`` sink when it has one. An unbounded job (whose collect would never
    end) and a detached one write them to files in the worker's run directory instead.
    """

    def __init__(self, flow: Any, run_id: str, run_dir: str, op: str, subtask: int, carry: bool,
                 metrics: Any = None) -> None:
        self.flow_name, self.run_id, self.carry = flow.name, run_id, carry
        self.metrics = metrics  # the operator's Flink metric group: counters adf_<count> (REST, while it runs)
        self._counters: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.pending: dict[str, int] = {}
        self.letters: list[dict[str, Any]] = []
        self.files = None if carry else _Files(run_dir, op, subtask)
        self.dead: Any = None  # an uncarried job's dead letters go straight to the flow's dead-letter sink
        if not carry and flow.dead_letter and op != "sink":  # (the sink operator's own go there already)
            self.dead = DeadLetterWriter(flow.dead_letter, RunContext(flow_name=flow.name, run_id=run_id,
                                                                      state_dir=run_dir, reader_id=subtask),
                                         None, registry)
            self.dead.open()

    def count(self, key: str, n: int = 1) -> None:
        if n:
            self.counts[key] = self.counts.get(key, 0) + n
            if self.metrics is not None:
                counter = self._counters.get(key)
                if counter is None:
                    counter = self._counters[key] = self.metrics.counter(f"adf_{key}")
                counter.inc(n)
            if self.carry:
                self.pending[key] = self.pending.get(key, 0) + n

    def letter(self, letter: DeadLetter) -> None:
        self.count("dead_letters")
        if self.dead is not None:
            self.dead.write([letter])
        elif self.files is not None:
            self.files.letter(_letter_dict(letter, self.flow_name, self.run_id))
        else:
            self.letters.append(_letter_dict(letter, self.flow_name, self.run_id))

    def rows(self, rows: list[dict[str, Any]]) -> None:
        """Dead letters already made into rows (the sink's, from its writer)."""
        if self.files is not None:
            for row in rows:
                self.files.letter(row)
        else:
            self.letters.extend(rows)

    def take(self, carried: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What goes downstream with the next element: what came in (``carried``) and what this added."""
        counts = dict((carried or {}).get("c") or {})
        for k, v in self.pending.items():
            counts[k] = counts.get(k, 0) + v
        letters = [*((carried or {}).get("d") or []), *self.letters]
        self.pending, self.letters = {}, []
        return {"c": counts, "d": letters} if (counts or letters) else {}

    def close(self) -> None:
        if self.dead is not None:
            self.dead.close()
        if self.files is not None:
            self.files.close(self.counts)


def _worker_dir(run_dir: str | None, flow: str, run_id: str) -> str:
    """The run directory a subtask writes to: the client's on the local mini-cluster, else one
    of the TaskManager host's own (nothing is assumed shared with the client)."""
    if run_dir:
        return run_dir
    import tempfile

    return os.path.join(tempfile.gettempdir(), "adf-flink", flow, run_id)


def _functions() -> dict[str, Any]:  # noqa: C901
    """The PyFlink functions (imported here: pyflink is needed only to run a job)."""
    from pyflink.datastream.functions import (
        FlatMapFunction,
        KeyedProcessFunction,
        MapFunction,
        RuntimeContext,
    )

    def open_read(fn: Any, ctx: RuntimeContext) -> None:
        """What both read operators set up: the flow, its source and the outbox."""
        from flink_job.watchdog import watch_parent

        watch_parent()
        fn.flow = parse_spec(fn.spec)
        run_dir = _worker_dir(fn.run_dir, fn.flow.name, fn.run_id)
        cls = registry.resolve("source", fn.flow.source["type"])
        fn.source = cls({k: v for k, v in fn.flow.source.items() if k != "type"})
        fn.subtask, fn.parallelism = ctx.get_index_of_this_subtask(), ctx.get_number_of_parallel_subtasks()
        fn.source.run_context = RunContext(flow_name=fn.flow.name, run_id=fn.run_id, state_dir=run_dir,
                                           reader_id=fn.subtask, parallelism=fn.parallelism)
        fn.batch = int(fn.flow.runtime.get("batch_size", 500))
        fn.idle = float(fn.flow.runtime.get("idle_sleep_s", 0.05))
        fn.discovery = float(fn.flow.runtime.get("discovery_interval_s", 10))
        fn.out = _Outbox(fn.flow, fn.run_id, run_dir, "read", fn.subtask, fn.carry, ctx.get_metrics_group())

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
                        yield _pack(batch.records, batch.origins, None, {**self.out.take(), "k": k})
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
            yield _pack([], None, None, {**self.out.take(), "k": k, "e": 1})

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
            self.checkpoints = _CompletedCheckpoints(rest, job) if rest and job else None

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
                yield _pack(batch.records, batch.origins, None, self.out.take())
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
            from core.step import build_steps
            from flink_job.watchdog import watch_parent

            watch_parent()
            self.flow = parse_spec(self.spec)
            run_dir = _worker_dir(self.run_dir, self.flow.name, self.run_id)
            if self.index < 0:  # the spec's schema: validation and coercion, as the local runner does
                from core.record import Schema
                from core.step import SchemaStep

                self.step: Any = SchemaStep(Schema.from_spec(self.flow.schema))
            else:
                self.step = build_steps([self.flow.steps[self.index]], registry.resolve)[0]
                if self.step.name.startswith("steps[0]:"):  # named as the local runner names it
                    self.step.name = f"steps[{self.index}]:" + self.step.name[len("steps[0]:"):]
            self.step.run_context = RunContext(flow_name=self.flow.name, run_id=self.run_id, state_dir=run_dir,
                                               reader_id=ctx.get_index_of_this_subtask())
            self.step.run_context.extras["context"] = dict(self.flow.context)
            self.step.open()
            self.tracker: _StageTracker | None = None  # while a batch goes through the step
            self.origins: Origins | None = None
            self.positions: list[int] | None = None
            self.out = _Outbox(self.flow, self.run_id, run_dir, f"step{self.index}", ctx.get_index_of_this_subtask(),
                               self.carry, ctx.get_metrics_group())

        def _error(self, record: Any, exc: BaseException, step: str) -> None:
            from core.redact import redact_text

            tracker = self.tracker
            origin: dict[str, Any] = {} if tracker is None else _origin(self.origins, self.positions, tracker.index_of(record))
            letter = DeadLetter(record, redact_text(f"{type(exc).__name__}: {exc}"), "step", type(exc).__name__,
                                origin=origin, step=step)
            if tracker is not None:
                tracker.failed.append(letter)
            self.out.letter(letter)

        def flat_map(self, value: str) -> Iterator[str]:
            from core.source import ReaderBatch

            records, self.origins, self.positions, carried = _unpack(value)
            marks = _marks(carried)
            if not records:  # counts and dead letters only (or a split's end): pass them on
                yield _pack([], None, None, {**self.out.take(carried), **marks})
                return
            self.tracker = _StageTracker(OriginTracker(ReaderBatch(records, ReaderStatus.MORE_AVAILABLE)), records)
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
                yield _pack(plain, self.origins, tracker.positions_after(plain, self.positions), {**extra, **marks})
            elif extra:
                yield _pack([], None, None, {**extra, **marks})

        def close(self) -> None:
            self.step.close()
            self.out.close()

    class WriteSink(MapFunction):  # type: ignore[misc]
        def __init__(self, spec: Mapping[str, Any], run_id: str, run_dir: str | None, carry: bool = False,
                     parts: str | None = None, metas: str | None = None) -> None:
            self.spec, self.run_id, self.run_dir, self.carry = dict(spec), run_id, run_dir, carry
            self.parts_dir = parts  # a file sink's output, committed split by split (see _Parts)
            self.metas_dir = metas  # another sink's split tallies (a detached job's summary)

        def open(self, ctx: RuntimeContext) -> None:
            from flink_job.watchdog import watch_parent

            watch_parent()
            flow = parse_spec(self.spec)
            flow.steps = []  # the steps ran upstream
            flow.schema = None
            subtask = ctx.get_index_of_this_subtask()
            run_dir = _worker_dir(self.run_dir, flow.name, self.run_id)
            self.run_ctx = RunContext(flow_name=flow.name, run_id=self.run_id, state_dir=run_dir,
                                      reader_id=subtask, parallelism=ctx.get_number_of_parallel_subtasks())
            if self.carry or flow.dead_letter:
                # the sink's dead letters: kept in memory and carried on (or the dead-letter sink's)
                self.pipeline = Pipeline(flow, self.run_ctx, None, registry)
                self.pipeline.dead.KEEP = sys.maxsize
            else:
                self.pipeline = Pipeline(flow, self.run_ctx, os.path.join(run_dir, f"sink-{subtask}"), registry)
            self.pipeline.open()
            self.out = _Outbox(flow, self.run_id, run_dir, "sink", subtask, self.carry, ctx.get_metrics_group())
            self.parts = None if self.parts_dir is None else _Parts(self.parts_dir)
            self.metas = self.parts or (None if self.metas_dir is None else _Parts(self.metas_dir))

        def map(self, value: str) -> str:
            # an element is already a batch (up to runtime.batch_size records): write it now, so
            # an unbounded job's records reach the sink as they come
            from core.source import ReaderBatch

            records, origins, positions, carried = _unpack(value)
            parts = self.parts
            k = int(carried["k"]) if parts is not None and "k" in carried else None
            if parts is not None and k is not None:
                if records:
                    parts.write(k, records)
                    self.out.count("records_out", len(records))
            elif records:
                before = self.pipeline.records_out
                counts = self.pipeline.commit(ReaderBatch(records=records, status=ReaderStatus.MORE_AVAILABLE,
                                                          origins=_origins_of(origins, positions, len(records))))
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


class _Parts:
    """A bounded job's file output, committed split by split: exactly once, whatever restarts.

    The records of split ``k`` go to a temporary file of their own; at the split's end the file is
    renamed to ``part-<k>.jsonl`` (atomically, after ``fsync``). A split that a restart reads
    again — from the last checkpoint on — writes a new temporary file and replaces its part
    whole, so each split's records are in the output once, however often it was read. The
    client joins the parts, in split order, into the sink's file when the job ended
    (:func:`assemble_parts`): the file is then the one ``adf run`` writes."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self._open: dict[int, tuple[int, str]] = {}
        self._tally: dict[int, dict[str, Any]] = {}

    @staticmethod
    def final(directory: str, k: int) -> str:
        return os.path.join(directory, f"part-{k:06d}.jsonl")

    @staticmethod
    def meta(directory: str, k: int) -> str:
        """Split ``k``'s counts and dead letters, committed just before its part (a detached job's
        summary: :func:`finish_detached`)."""
        return os.path.join(directory, f"part-{k:06d}.meta.json")

    def tally(self, k: int, taken: Mapping[str, Any]) -> None:
        """Add what an element of split ``k`` carried (counts, dead letters) to the split's tally."""
        acc = self._tally.setdefault(k, {"c": {}, "d": []})
        for key, n in (taken.get("c") or {}).items():
            acc["c"][key] = acc["c"].get(key, 0) + int(n)
        acc["d"].extend(taken.get("d") or [])

    def _fd(self, k: int) -> int:
        entry = self._open.get(k)
        if entry is None:
            tmp = os.path.join(self.dir, f"part-{k:06d}.{uuid.uuid4().hex[:12]}.tmp")
            entry = self._open[k] = (os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), tmp)
        return entry[0]

    def write(self, k: int, records: list[Any]) -> None:
        from core.formats import encode_jsonl

        data = memoryview(encode_jsonl(records))
        fd = self._fd(k)
        while data:
            data = data[os.write(fd, data):]

    def commit_meta(self, k: int) -> None:
        """Commit split ``k``'s tally (its counts and dead letters) by rename."""
        meta = self._tally.pop(k, {"c": {}, "d": []})
        tmp_meta = self.meta(self.dir, k) + f".{uuid.uuid4().hex[:12]}.tmp"
        with open(tmp_meta, "w", encoding="utf-8") as f:
            json.dump(meta, f, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_meta, self.meta(self.dir, k))

    def commit(self, k: int) -> None:
        """Commit split ``k``: its tally, then its part."""
        self.commit_meta(k)
        fd = self._fd(k)
        tmp = self._open.pop(k)[1]
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.final(self.dir, k))

    def abort(self) -> None:
        """Parts not committed (the job is cancelled or fails): their temporary files go."""
        for fd, tmp in self._open.values():
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._open.clear()


def parts_dir(flow: Any) -> str | None:
    """Where a bounded job's file sink commits its parts (None: the sink writes directly). One
    directory per sink file: a job resumed from a savepoint finds the parts committed before it."""
    sink = flow.sink
    path = str(sink.get("path") or "")
    if sink.get("type") != "file" or not path or "://" in path:
        return None
    return f"{path}.adf-parts"


def assemble_parts(flow: Any, directory: str, count: int, run_ctx: RunContext) -> None:
    """Join the committed parts ``0 … count-1`` into the file sink's file (prepared by the client
    before the job, as :func:`~core.engine.setup_destinations` prepares every run's sink), then
    remove them. JSON Lines parts are copied as they are; any other format is written through
    the file sink, so the file is the one the local runner writes."""
    import shutil

    missing = [k for k in range(count) if not os.path.exists(_Parts.final(directory, k))]
    if missing:
        raise AdfError(f"the job ended, but the parts of {len(missing)} of its {count} splits are missing "
                       f"from {directory} (first: split {missing[0]}): the output is incomplete")
    cls = registry.resolve("sink", "file")
    sink = cls({**{k: v for k, v in flow.sink.items() if k != "type"}, "mode": "append"})
    sink.run_context = run_ctx
    if getattr(sink, "format", None) == "jsonl":
        with open(sink.path, "ab") as out:
            for k in range(count):
                with open(_Parts.final(directory, k), "rb") as part:
                    shutil.copyfileobj(part, out, 1 << 20)
            if sink.config.get("fsync"):
                out.flush()
                os.fsync(out.fileno())
    else:
        sink.open()
        try:
            for k in range(count):
                with open(_Parts.final(directory, k), encoding="utf-8") as part:
                    batch: list[Any] = []
                    for line in part:
                        batch.append(json.loads(line))
                        if len(batch) >= 5000:
                            sink.write_batch(batch)
                            batch = []
                    if batch:
                        sink.write_batch(batch)
        finally:
            sink.close()
    shutil.rmtree(directory, ignore_errors=True)


def _judge(flow: Any, totals: Mapping[str, int], letters: list[Any], status: str,
           error: str | None) -> tuple[BatchCounts, ReasonTally, str, str | None]:
    """A Flink run's counts, dead-letter reasons and verdict: the same accounting as every other
    target (in = out + filtered + dead letters) when the job succeeded; else its failure stands."""
    counts = BatchCounts(records_in=totals["records_in"], records_out=totals["records_out"],
                         filtered=totals["filtered"], fanned_out=totals["fanned_out"],
                         dead_letters=totals["dead_letters"])
    tally = ReasonTally()
    for letter in letters:
        tally.add(str(letter.get("reason", "")))
    if status != "success":
        counts.settle_in_flight()
        return counts, tally, status, error
    status, problem = judge(counts, flow.runtime.get("max_dead_letter_ratio"), tally.top(), f"flow {flow.name!r} on Flink")
    return counts, tally, status, str(problem) if problem is not None else None


def finish_detached(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """The summary of a detached bounded job that FINISHED, from what its subtasks committed
    (``report``: what the client left in the job's parameters, see :func:`run`): its file
    sink's parts are joined into the file (once: a second call reads the summary written by the
    first) and the splits' counts and dead letters added up — also for another sink, whose
    splits' tallies the job committed to ``runtime.flink_report_dir`` (``metas``). None: the job
    left no tallies."""
    parts = report.get("parts")
    metas = report.get("metas") or parts
    if not metas:
        return None
    flow = parse_spec(report["spec"])
    done = f"{parts}.summary-{report['run_id']}.json" if parts else os.path.join(metas, "summary.json")
    if os.path.exists(done):
        with open(done, encoding="utf-8") as f:
            return dict(json.load(f))
    count = int(report["splits"])
    totals: dict[str, int] = {k: 0 for k in ("records_in", "records_out", "dead_letters", "splits", "filtered",
                                             "fanned_out")}
    letters: list[Any] = []
    missing = [k for k in range(count) if not os.path.exists(_Parts.meta(metas, k))]
    if missing and not parts:  # (with parts, assemble_parts names what is missing)
        raise AdfError(f"the job ended, but the counts of {len(missing)} of its {count} splits are missing from "
                       f"{metas} (first: split {missing[0]})")
    for k in range(count):
        meta_path = _Parts.meta(metas, k)
        if not os.path.exists(meta_path):
            break
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        for key, n in (meta.get("c") or {}).items():
            totals[key] = totals.get(key, 0) + int(n)
        letters.extend(meta.get("d") or [])
    if parts:
        assemble_parts(flow, parts, count, RunContext(flow_name=flow.name, run_id=report["run_id"],
                                                      state_dir=os.path.dirname(parts) or ".", parallelism=1))
    _, tally, status, error = _judge(flow, totals, letters, "success", None)
    destination = f"sink {flow.dead_letter.get('type')}" if flow.dead_letter and totals["dead_letters"] else None
    if letters:
        destination = (f"{parts}.dead_letters-{report['run_id']}.jsonl" if parts
                       else os.path.join(metas, "dead_letters.jsonl"))
        with open(destination, "w", encoding="utf-8") as f:
            for letter in letters:
                f.write(json.dumps(letter, default=str) + "\n")
    summary = {"flow": flow.name, "run_id": report["run_id"], "status": status, "runtime": "flink",
               **totals, "dead_letter_reasons": tally.top(), "dead_letter_destination": destination,
               "error": error, "output": str(flow.sink.get("path") or flow.sink.get("table") or flow.sink.get("type"))}
    with open(done, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary


class _StageTracker:
    """Where the records of one step's input and output sit in the element's batch: the local
    runner's :class:`~core.engine.OriginTracker` over one step."""

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


def submitted_by_flink_cli() -> bool:
    """Whether this process is the client of ``flink run -py`` (whose Python driver hands it the
    gateway's port), as opposed to ``python -m flink_job.job`` starting a local mini-cluster."""
    return "PYFLINK_GATEWAY_PORT" in os.environ


def _assignments(splits: list[Split], parallelism: int, bounded: bool) -> list[list[Split]]:
    """The read operator's work: the splits each reader reads together.

    Bounded: one split each, read by whichever subtask the source's number ``k`` goes to. An
    unbounded split is never finished, so the splits are dealt round-robin into one group per
    subtask, and a reader reads its group together (a Rafka reader: one ``XREADGROUP`` over its
    partitions) — every split is read, whatever the ratio of splits to parallelism."""
    if bounded:
        return [[s] for s in splits]
    groups: list[list[Split]] = [[] for _ in range(max(1, min(parallelism, len(splits))))]
    for i, split in enumerate(splits):
        groups[i % len(groups)].append(split)
    return groups


def build_job(spec: Mapping[str, Any], *, parallelism: int | None, run_id: str, run_dir: str | None,
              splits: list[Split], carry: bool = False, parts: str | None = None,
              collected: bool | None = None, metas: str | None = None) -> Any:
    """The PyFlink environment with the job's graph, and the sink's stream (run it with
    ``env.execute``; with ``carry``, collect the sink's stream: counts and dead letters).

    Every job runs in STREAMING mode with checkpoints (``runtime.checkpoint_interval_ms``,
    default 2 s bounded, 10 s unbounded). Its source is a ``NumberSequenceSource`` — a FLIP-27
    source: Flink assigns its number ranges to the subtasks and checkpoints each reader's
    position. A bounded flow's number ``k`` is its split ``k`` (read whole by one call of
    ``ReadSplits``); an unbounded flow's numbers are ticks, keyed by reader group, one poll each
    (``ReadKeyed``, whose positions are keyed state). Each Python call returns, so checkpoint
    barriers pass between them (one element a bundle).

    ``run_dir``: where the subtasks write (the client's on the mini-cluster); None on a cluster,
    where each TaskManager host uses a directory of its own. ``parts``: the directory a bounded
    job's file sink commits its parts to (:class:`_Parts`). ``collected``: whether the client
    collects the sink's stream (default: ``carry``; a detached bounded job carries its counts to
    the sink, which commits them with the parts, and nobody collects them)."""
    from pyflink.common import Configuration, Types, WatermarkStrategy
    from pyflink.datastream import CheckpointingMode, RuntimeExecutionMode, StreamExecutionEnvironment
    from pyflink.datastream.connectors.number_seq import NumberSequenceSource

    flow = parse_spec(spec)
    cls = registry.resolve("source", flow.source["type"])
    source = cls({k: v for k, v in flow.source.items() if k != "type"})
    bounded = source.boundedness is Boundedness.BOUNDED
    config = Configuration()
    if not submitted_by_flink_cli():
        # the local mini-cluster: its workers are this interpreter with this project. Under
        # `flink run`, -pyexec / -pyclientexec / python.executable in the cluster's configuration
        # say which interpreter the workers use, and -pyfs ships the project.
        config.set_string("python.executable", sys.executable)
        config.set_string("python.client.executable", sys.executable)
        config.set_string("python.pythonpath", str(ROOT))
        # one process, one machine: a failure is not worth a restart (a cluster's own
        # restart-strategy applies under `flink run`)
        config.set_string("restart-strategy.type", "none")
    # one element a bundle: the Java operator hands the Python worker a split (or a tick) and
    # waits for it, so a checkpoint barrier never waits behind elements sent ahead
    config.set_string("python.fn-execution.bundle.size", "1")
    config.set_string("python.operator-chaining.enabled", "true")
    env = StreamExecutionEnvironment.get_execution_environment(config)
    p = int(parallelism or flow.runtime.get("parallelism", 1) or 1)
    env.set_parallelism(p)
    env.set_runtime_mode(RuntimeExecutionMode.STREAMING)
    # a bounded job's default is short: its end waits for a last checkpoint (which commits what
    # the collection delivers), and what a restart writes again is what came after the last one
    interval = int(flow.runtime.get("checkpoint_interval_ms") or (2_000 if bounded else 10_000))
    env.enable_checkpointing(interval, CheckpointingMode.EXACTLY_ONCE)
    fns = _functions()
    raw = dict(flow.raw)
    groups = [[s.to_dict() for s in group] for group in _assignments(splits, p, bounded)]
    if bounded:
        numbers = env.from_source(NumberSequenceSource(0, max(len(groups), 1) - 1), WatermarkStrategy.no_watermarks(),
                                  "splits").uid("adf-splits")
        stream = numbers.flat_map(fns["ReadSplits"](raw, run_id, run_dir, carry, groups), output_type=Types.STRING())
    else:
        # ticks, keyed so that each subtask owns one reader group and its state. A tick is
        # padded to a network buffer's size (32 KiB): only a few queue between the operators,
        # so a barrier — a savepoint's is always aligned — never waits behind thousands of them
        env.set_max_parallelism(MAX_PARALLELISM)
        groups += [[] for _ in range(p - len(groups))]  # a group a subtask: splits found later go there too
        keys = _subtask_keys(p)
        ticks = env.from_source(NumberSequenceSource(0, 2**62), WatermarkStrategy.no_watermarks(), "ticks").uid("adf-ticks")
        padded = ticks.map(_Tick(keys), output_type=Types.TUPLE([Types.LONG(), Types.STRING()])).name("tick").uid("adf-tick")
        stream = padded.key_by(_tick_key, key_type=Types.LONG()) \
            .process(fns["ReadKeyed"](raw, run_id, run_dir, carry, groups, keys), output_type=Types.STRING())
    stream = stream.name("read").uid("adf-read")
    if flow.schema is not None:
        stream = stream.flat_map(fns["Step"](raw, -1, run_id, run_dir, carry), output_type=Types.STRING()).name("schema")
    for i, step in enumerate(flow.steps):
        stream = stream.flat_map(fns["Step"](raw, i, run_id, run_dir, carry), output_type=Types.STRING()) \
            .name(f"step {i}: {step.get('type', 'python')}")
    written = stream.map(fns["WriteSink"](raw, run_id, run_dir, carry, parts, metas), output_type=Types.STRING()) \
        .name("sink")
    if not (carry if collected is None else collected):
        written.filter(lambda _: False).print()  # a terminal operator; nothing reaches it
    return env, written


#: the job's maximum parallelism (key groups): fixed, so that savepoints restore onto the same keys
MAX_PARALLELISM = 128


def _subtask_keys(parallelism: int) -> list[int]:
    """One key per subtask: ``keys[i]`` is a key Flink hands to subtask ``i`` (Flink hashes keys
    to key groups, so keys 0…p-1 could land on one subtask and leave another idle)."""
    from pyflink.java_gateway import get_gateway

    assign = get_gateway().jvm.org.apache.flink.runtime.state.KeyGroupRangeAssignment.assignKeyToParallelOperator
    found: dict[int, int] = {}
    key = 0
    while len(found) < parallelism:
        found.setdefault(int(assign(key, MAX_PARALLELISM, parallelism)), key)
        key += 1
    return [found[i] for i in range(parallelism)]


#: a tick's size: a network buffer (Flink's default memory segment), see build_job
TICK_BYTES = 32 << 10


class _Tick:
    """A tick: the key of the reader group whose turn it is, and padding (see build_job)."""

    def __init__(self, keys: list[int]) -> None:
        self.keys = keys
        self.pad = "." * TICK_BYTES

    def __call__(self, tick: int) -> tuple[int, str]:
        return self.keys[int(tick) % len(self.keys)], self.pad


def _tick_key(tick: tuple[int, str]) -> int:
    return int(tick[0])


def _flink_parallelism() -> int | None:
    """The parallelism ``flink run`` gives the job (``-p``, else the cluster's default)."""
    try:
        from pyflink.datastream import StreamExecutionEnvironment

        value = int(StreamExecutionEnvironment.get_execution_environment().get_parallelism())
    except Exception:
        return None
    return value if value > 0 else None


def attached() -> bool:
    """False when the job is submitted detached (``flink run -d``)."""
    try:
        from pyflink.datastream import StreamExecutionEnvironment
        from pyflink.java_gateway import get_gateway

        env = StreamExecutionEnvironment.get_execution_environment()
        options = get_gateway().jvm.org.apache.flink.configuration.DeploymentOptions
        return bool(env._j_stream_execution_environment.getConfiguration().get(options.ATTACHED))
    except Exception:
        return True


def restore_path() -> str | None:
    """The savepoint or checkpoint ``flink run -s PATH`` restores the job from (None: a new run)."""
    try:
        from pyflink.datastream import StreamExecutionEnvironment
        from pyflink.java_gateway import get_gateway

        env = StreamExecutionEnvironment.get_execution_environment()
        options = get_gateway().jvm.org.apache.flink.configuration.StateRecoveryOptions
        value = env._j_stream_execution_environment.getConfiguration().get(options.SAVEPOINT_PATH)
    except Exception:
        return None
    return str(value) if value else None


def python_traceback(text: str) -> str | None:
    """The Python traceback inside a Java exception's text (a worker's error as the client gets
    it: a ``Py4JJavaError`` whose causes hold the worker's traceback), or None."""
    start = text.rfind("Traceback (most recent call last):")
    if start < 0:
        return None
    lines: list[str] = []
    for line in text[start:].splitlines():
        if line.startswith(("\tat ", "\t... ", "Caused by:")):
            break
        lines.append(line)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines) if lines else None


def _rest_url() -> str | None:
    """The JobManager's REST URL from the configuration ``flink run`` uses."""
    try:
        from pyflink.datastream import StreamExecutionEnvironment
        from pyflink.java_gateway import get_gateway

        conf = StreamExecutionEnvironment.get_execution_environment()._j_stream_execution_environment.getConfiguration()
        options = get_gateway().jvm.org.apache.flink.configuration.RestOptions
        host = conf.get(options.ADDRESS) or "localhost"
        return f"http://{host}:{int(conf.get(options.PORT))}"
    except Exception:
        return None


def _job_end(job_name: str, timeout: float = 600) -> str | None:
    """After the job failed (or its collection broke off): wait for its end on the REST API and
    describe it — how often it restarted, its final state and the Python traceback of the failure."""
    import urllib.request

    rest = _rest_url()
    if rest is None:
        return None

    def get(path: str) -> Any:
        with urllib.request.urlopen(rest + path, timeout=10) as r:
            return json.loads(r.read())

    try:
        jobs = [j for j in get("/jobs/overview").get("jobs", []) if j.get("name") == job_name]
        if not jobs:
            return None
        job_id = jobs[0]["jid"]
        deadline = time.monotonic() + timeout
        state = jobs[0].get("state")
        while state not in ("FINISHED", "FAILED", "CANCELED") and time.monotonic() < deadline:
            time.sleep(1)
            state = get(f"/jobs/{job_id}").get("state")
        history = get(f"/jobs/{job_id}/exceptions").get("exceptionHistory", {}).get("entries") or []
    except OSError:
        return None
    cause = None
    for entry in history:
        tb = python_traceback(entry.get("stacktrace") or "")
        if tb is not None:
            last = [ln for ln in tb.splitlines() if ln.strip() and not ln.startswith(" ")]
            cause = last[-1].strip() if last else None
            break
        cause = cause or (entry.get("exceptionName") or "") + ": " + (entry.get("stacktrace") or "").split("\n")[0]
    restarts = max(0, len(history) - (state == "FAILED"))
    return f"job {job_id} restarted {restarts} times ({cause or 'cause unknown'}) and ended {state}"


def _error_text(exc: BaseException) -> str:
    """One line saying why the job failed: the worker's Python exception when there is one."""
    text = str(exc)
    tb = python_traceback(text)
    if tb is not None:
        sys.stderr.write("adf: the job failed in a Python worker:\n" + tb + "\n")
        last = [ln for ln in tb.splitlines() if ln.strip() and not ln.startswith(" ")]
        return last[-1].strip() if last else tb.splitlines()[-1].strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


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


def run(spec: Mapping[str, Any] | str, *, parallelism: int | None = None, state_dir: str | None = None) -> dict[str, Any]:  # noqa: C901
    """Run ``spec`` (a mapping or a spec file) on Flink's local mini-cluster (or the cluster
    `flink run` submits to) and return a run summary.

    A bounded job's counts and dead letters come back from the job itself (see
    :class:`_Outbox`): nothing is read from the TaskManagers' filesystems. A detached
    submission (``flink run -d``) returns at once with the job's id (status ``submitted``)."""

    cluster = submitted_by_flink_cli()
    # every configuration layer, resolved once here (a package holds its key-value layer already)
    flow = load_flow(spec, origin="flink", use_store=not cluster).spec
    raw = dict(flow.raw)
    if not cluster:
        # the mini-cluster's subtasks import step modules from where the client does: beside the
        # spec file, and the working directory (on a cluster: the package's zip, see `adf flink package`)
        extra_path = [os.path.dirname(os.path.abspath(spec))] if isinstance(spec, str) else []
        raw["python_path"] = [*raw.get("python_path", []), *extra_path, os.getcwd()]
    if flow.source.get("type") == "file" and flow.source.get("split_bytes") is None:
        # a split is what a checkpoint (and a restart) is counted in: a big file is cut into
        # byte ranges, so that a barrier passes while it is read (formats that cannot be cut,
        # a JSON array…, stay one split)
        flow.source = {**flow.source, "split_bytes": int(flow.runtime.get("flink_split_bytes") or SPLIT_BYTES)}
        raw["source"] = dict(flow.source)
    flow.raw = raw
    if any(s.get("next") is not None for s in flow.steps):
        raise AdfError("routing between steps ('next') is not supported under Flink: the steps run in order")
    run_id = new_run_id()
    root = state_dir or default_state_root()
    run_dir = os.path.join(root, flow.name, "flink-runs", run_id)
    os.makedirs(run_dir, exist_ok=True)
    cls = registry.resolve("source", flow.source["type"])
    source = cls({k: v for k, v in flow.source.items() if k != "type"})
    if cluster and not parallelism:  # `flink run -p N`, else the cluster's parallelism.default
        parallelism = _flink_parallelism()
    p = int(parallelism or flow.runtime.get("parallelism", 1) or 1)
    source.run_context = RunContext(flow_name=flow.name, run_id=run_id, state_dir=run_dir, parallelism=p)
    splits = all_splits(source, p)
    bounded = source.boundedness is Boundedness.BOUNDED

    # the sink and the dead-letter sink, prepared once here before any subtask writes, as the
    # local coordinator does (a file sink's `mode: overwrite` truncates once; the subtasks append)
    restoring = restore_path() if cluster else None
    if restoring is None:
        setup_destinations(flow, RunContext(flow_name=flow.name, run_id=run_id, state_dir=run_dir, parallelism=p),
                           registry)
    # else: a job resumed from a savepoint goes on with what the sink holds (as a resumed local run)
    started = time.time()
    status, error, job_id = "success", None, None
    totals = {"records_in": 0, "records_out": 0, "dead_letters": 0, "splits": 0, "filtered": 0, "fanned_out": 0}
    letters: list[dict[str, Any]] = []
    destination: str | None = None
    worker_dir = None if cluster else run_dir
    name = f"adf {flow.name} {run_id}"  # unique: the client finds its job by name on the REST API
    parts: str | None = None
    try:
        is_attached = attached()
        # a bounded job's file sink commits split by split (exactly once); the client joins the
        # parts at the end, or — detached — `adf flink status` once the job finished
        parts = parts_dir(flow) if bounded else None
        if parts is not None and restoring is None and os.path.isdir(parts):
            import shutil

            shutil.rmtree(parts)  # a failed run's: not this run's output
        # a detached bounded job's other sinks: the splits' tallies go to the report directory
        report_root = flow.runtime.get("flink_report_dir")
        metas = (os.path.join(str(report_root), flow.name, run_id)
                 if bounded and not is_attached and parts is None and report_root else None)
        # counts and dead letters travel with the elements when someone takes them at the end:
        # the client (attached), the parts' or the report directory's tallies (detached); else each
        # operator writes them itself (files; dead letters to the flow's dead-letter sink)
        carry = bounded and (is_attached or parts is not None or metas is not None)
        env, written = build_job(flow.raw, parallelism=p, run_id=run_id, run_dir=worker_dir, splits=splits,
                                 carry=carry, parts=parts, collected=bounded and is_attached, metas=metas)
        params: dict[str, str] = {}
        rest = _rest_url() if cluster and not bounded else None
        if rest:  # an unbounded job's readers acknowledge what a completed checkpoint covers
            params.update({REST_KEY: rest, JOB_KEY: name})
        if not is_attached and (parts or metas):  # what `adf flink status` needs to finish the run
            params[REPORT_KEY] = json.dumps({"run_id": run_id, "parts": parts, "metas": metas or parts,
                                             "splits": len(splits), "spec": flow.raw}, default=str)
        if params:
            env.get_config().set_global_job_parameters(params)
        if not is_attached:
            client = env.execute_async(name)
            job_id = str(client.get_job_id())
            summary = {"flow": flow.name, "run_id": run_id, "status": "submitted", "runtime": "flink",
                       "job_id": job_id, "parallelism": p, "splits": len(splits), "run_dir": run_dir,
                       "error": None}
            with open(os.path.join(run_dir, "summary.json"), "w", encoding="utf-8") as f:
                json.dump(summary, f, indent=2)
            return summary
        if bounded:
            results = written.execute_and_collect(name)
            # not closed when the collection fails: closing cancels the job, which may still
            # finish after a restart (see _job_end)
            for value in results:
                if not value:
                    continue
                data = json.loads(value)
                for k, v in (data.get("c") or {}).items():
                    totals[k] = totals.get(k, 0) + int(v)
                letters.extend(data.get("d") or [])
            results.close()
            if parts is not None:
                assemble_parts(flow, parts, len(splits),
                               RunContext(flow_name=flow.name, run_id=run_id, state_dir=run_dir, parallelism=p))
        else:
            env.execute(name)
    except Exception as exc:  # the job failed: report it like the local runner does
        status, error = "failed", _error_text(exc)
        if cluster:  # how the job ended, after the cluster's restart strategy gave up (REST API)
            end = _job_end(name)
            error = f"{error} — {end}" if end else error
    if not bounded and not cluster:
        totals, destination, letters = _merge(run_dir)
        if destination is None and flow.dead_letter and totals["dead_letters"]:
            destination = f"sink {flow.dead_letter.get('type')}"
    elif letters:
        destination = os.path.join(run_dir, "dead_letters.jsonl")
        with open(destination, "w", encoding="utf-8") as f:
            for letter in letters:
                f.write(json.dumps(letter, default=str) + "\n")
    elif flow.dead_letter and totals["dead_letters"]:
        destination = f"sink {flow.dead_letter.get('type')}"
    dead = totals["dead_letters"]
    counts, tally, status, error = _judge(flow, totals, letters, status, error)
    summary = {
        "flow": flow.name, "run_id": run_id, "status": status, "runtime": "flink", "parallelism": p,
        "records_in": counts.records_in, "records_out": counts.records_out, "filtered": counts.filtered,
        "fanned_out": counts.fanned_out, "in_flight": counts.in_flight,
        "dead_letters": dead, "dead_letter_reasons": tally.top(), "splits": len(splits),
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
    elif summary["status"] == "submitted":  # detached: the job runs on; `adf flink status JOB_ID` tells
        print(f"{summary['flow']}: submitted to Flink as job {summary['job_id']} (detached; "
              f"adf flink status {summary['job_id']} --rest URL: the job's state, and once it finished its "
              "counts, with a file sink's parts joined into the file)")
    else:
        print(f"{summary['flow']}: {summary['status']} on Flink (parallelism {summary['parallelism']}): "
              f"{summary['records_in']} in, {summary['records_out']} out, {summary['dead_letters']} dead letters "
              f"in {summary['duration_s']} s" + (f" — {summary['error']}" if summary["error"] else ""))
    return 0 if summary["status"] in ("success", "partial", "submitted") else 1


if __name__ == "__main__":
    sys.exit(main())
