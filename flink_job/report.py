"""A Flink run's summary: its counts and dead letters added up and judged like every other target's."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Mapping
from typing import Any

from active_data_flow.context import RunContext
from active_data_flow.errors import AdfError
from active_data_flow.flink_job.parts import Parts, assemble_parts
from active_data_flow.outcome import BatchCounts, ReasonTally, judge
from active_data_flow.spec import parse_spec

__all__ = ['finish_detached', 'judge_run', 'merge_worker_files']


def judge_run(flow: Any, totals: Mapping[str, int], letters: list[Any], status: str,
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
    missing = [k for k in range(count) if not os.path.exists(Parts.meta(metas, k))]
    if missing and not parts:  # (with parts, assemble_parts names what is missing)
        raise AdfError(f"the job ended, but the counts of {len(missing)} of its {count} splits are missing from "
                       f"{metas} (first: split {missing[0]})")
    for k in range(count):
        meta_path = Parts.meta(metas, k)
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
    _, tally, status, error = judge_run(flow, totals, letters, "success", None)
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


def merge_worker_files(run_dir: str) -> tuple[dict[str, int], str | None, list[dict[str, Any]]]:
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
