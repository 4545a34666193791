"""Run a flow spec as an Apache Flink job (PyFlink): the job's graph and its client.

::

    python -m active_data_flow.flink_job.job examples/orders/flow.yaml [--parallelism 2] [--json]
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
  ``runtime.batch_size`` records with their origins: see :func:`active_data_flow.flink_job.elements.pack`), so PyFlink's
  per-element cost is paid once per batch, and a step's or the sink's dead letter says where
  its record came from (file and line…), as under the local runner;
* each step: a ``flat_map`` running the core step on each batch; a record a step fails on
  is a dead letter;
* the sink: a function with ``open``/``close`` that writes what reaches it
  with the core sink, a batch per element (retries, then record-by-record isolation into dead
  letters, as the local runner does). A bounded, attached job's file sink commits each split's
  records as a part of its own instead (:class:`active_data_flow.flink_job.parts.Parts`): exactly once across restarts.

Counts and dead letters (:class:`active_data_flow.flink_job.outbox.Outbox`): in a bounded, attached job they travel with the
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
this interpreter. Every operator's ``open()`` starts a watchdog (:mod:`active_data_flow.flink_job.watchdog`): a
Python worker whose TaskManager JVM is gone kills itself.

Acknowledgements: PyFlink gives Python functions no checkpoint-complete hook, so a source that
acknowledges what it read (Rafka: ``XACK``) does so once the JobManager's REST API says a
checkpoint covering the write completed (``ReadKeyed._release`` in :mod:`active_data_flow.flink_job.operators`); the tokens not acknowledged
yet are keyed state, acknowledged by a job restored from them. Without the REST API (the local
mini-cluster) an entry is acknowledged at the reader's next poll, after the sink wrote it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from active_data_flow.context import RunContext
from active_data_flow.engine import (
    default_state_root,
    setup_destinations,
)
from active_data_flow.errors import AdfError
from active_data_flow.flink_job.cluster import (
    JOB_KEY,
    REPORT_KEY,
    REST_KEY,
    attached,
    error_text,
    flink_parallelism,
    job_end,
    rest_url,
    restore_path,
    submitted_by_flink_cli,
)
from active_data_flow.flink_job.operators import SPLIT_BYTES, all_splits, operator_classes
from active_data_flow.flink_job.parts import assemble_parts, parts_dir
from active_data_flow.flink_job.report import judge_run, merge_worker_files
from active_data_flow.ids import new_run_id
from active_data_flow.loader import load_flow
from active_data_flow.registry import registry
from active_data_flow.source import (
    Boundedness,
    Split,
)
from active_data_flow.spec import parse_spec

__all__ = ["all_splits", "assemble_parts", "build_job", "main", "run"]

# The pieces: active_data_flow.flink_job.operators (the PyFlink functions), active_data_flow.flink_job.elements (what travels between
# them), active_data_flow.flink_job.outbox (counts and dead letters), active_data_flow.flink_job.parts (exactly-once file output),
# active_data_flow.flink_job.report (the summary), active_data_flow.flink_job.cluster (job parameters, REST, submission).


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
    job's file sink commits its parts to (:class:`active_data_flow.flink_job.parts.Parts`). ``collected``: whether the client
    collects the sink's stream (default: ``carry``; a detached bounded job carries its counts to
    the sink, which commits them with the parts, and nobody collects them)."""
    from pyflink.common import Configuration, Types, WatermarkStrategy
    from pyflink.datastream import CheckpointingMode, RuntimeExecutionMode, StreamExecutionEnvironment
    from pyflink.datastream.connectors.number_seq import NumberSequenceSource

    flow = parse_spec(spec)
    source = registry.build("source", flow.source)
    bounded = source.boundedness is Boundedness.BOUNDED
    config = Configuration()
    if not submitted_by_flink_cli():
        # the local mini-cluster: its workers are this interpreter, which has this project
        # installed. Under `flink run`, -pyexec / -pyclientexec / python.executable in the
        # cluster's configuration say which interpreter the workers use, and -pyfs ships the
        # project (the zip holds the active_data_flow package).
        config.set_string("python.executable", sys.executable)
        config.set_string("python.client.executable", sys.executable)
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
    fns = operator_classes()
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


def run(spec: Mapping[str, Any] | str, *, parallelism: int | None = None, state_dir: str | None = None) -> dict[str, Any]:  # noqa: C901
    """Run ``spec`` (a mapping or a spec file) on Flink's local mini-cluster (or the cluster
    `flink run` submits to) and return a run summary.

    A bounded job's counts and dead letters come back from the job itself (see
    :class:`active_data_flow.flink_job.outbox.Outbox`): nothing is read from the TaskManagers' filesystems. A detached
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
    source = registry.build("source", flow.source)
    if cluster and not parallelism:  # `flink run -p N`, else the cluster's parallelism.default
        parallelism = flink_parallelism()
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
        rest = rest_url() if cluster and not bounded else None
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
            # finish after a restart (see job_end)
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
        status, error = "failed", error_text(exc)
        if cluster:  # how the job ended, after the cluster's restart strategy gave up (REST API)
            end = job_end(name)
            error = f"{error} — {end}" if end else error
    if not bounded and not cluster:
        totals, destination, letters = merge_worker_files(run_dir)
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
    counts, tally, status, error = judge_run(flow, totals, letters, status, error)
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
    ap = argparse.ArgumentParser(prog="active_data_flow.flink_job.job", description="Run a flow spec as a Flink job.")
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
