"""Dead letters you can act on: find a run's dead letters, read them, replay them after a fix.

A run's dead letters are in ``<state dir>/<flow>/runs/<run id>/dead_letters.jsonl`` (one JSON
object per line: ``flow, run_id, ts, stage, reason, error_type, record, origin, step``), next to
its ``summary.json`` and ``flow.json`` (where the flow's spec came from). Run ids are unique in
a state directory, so a run id alone finds its run.

:func:`replay` sends a run's dead letters through the flow *as it is now* (after the step, the
schema or the sink was fixed): each record enters the flow again where it was refused — at
the step that refused it, or at the sink. Records that now go through are removed from the
file; those that fail again stay, with their new reason (and the previous one); malformed
input (stage ``source``) is kept as it is — fix the input file and run the flow again. The file
is rewritten atomically under a lock, so two replays of one run never send a record twice at
the same time. A replay that is interrupted may send some records again the next time
(at-least-once, like a run; an upsert sink collapses them).

Example::

    run = find_run("20261207T055908Z-05b96a68")
    letters = read_letters(run)
    result = replay(run, load_flow("flows/orders.yaml").spec)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from active_data_flow.errors import AdfError

__all__ = ["RunDir", "count_letters", "find_run", "list_runs", "read_letters", "replay"]


@dataclass
class RunDir:
    """A run's directory in a state directory."""

    flow: str
    run_id: str
    path: str
    state_root: str

    @property
    def letters_path(self) -> str:
        return os.path.join(self.path, "dead_letters.jsonl")

    def summary(self) -> dict[str, Any]:
        return _read_json(os.path.join(self.path, "summary.json")) or {}

    def flow_info(self) -> dict[str, Any]:
        return _read_json(os.path.join(self.path, "flow.json")) or {}


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _runs(state_root: str, flow: str | None = None) -> Iterator[RunDir]:
    root = os.path.abspath(state_root)
    try:
        flows = [flow] if flow else sorted(os.listdir(root))
    except FileNotFoundError:
        return
    for name in flows:
        runs = os.path.join(root, name, "runs")
        if not os.path.isdir(runs):
            continue
        for run_id in sorted(os.listdir(runs)):
            path = os.path.join(runs, run_id)
            if os.path.isdir(path):
                yield RunDir(name, run_id, path, root)


def find_run(ref: str, state_root: str) -> RunDir:
    """The run ``ref`` names (``RUN_ID`` or ``FLOW/RUN_ID``) in ``state_root``."""
    flow, _, run_id = ref.rpartition("/")
    found = [r for r in _runs(state_root, flow or None) if r.run_id == run_id]
    if not found:
        raise AdfError(
            f"no run {ref!r} in the state directory {os.path.abspath(state_root)}; "
            "`adf dead-letters list` shows the runs with dead letters (--state-dir for another directory)"
        )
    if len(found) > 1:
        raise AdfError(
            f"run id {run_id!r} exists for several flows ({', '.join(r.flow for r in found)}): name it as FLOW/{run_id}"
        )
    return found[0]


def list_runs(state_root: str, flow: str | None = None) -> list[dict[str, Any]]:
    """The runs that have dead letters now, newest first: flow, run id, status, counts."""
    out = []
    for run in _runs(state_root, flow):
        remaining = _count_lines(run.letters_path)
        if not remaining:
            continue
        summary = run.summary()
        out.append({
            "flow": run.flow, "run_id": run.run_id, "status": summary.get("status"),
            "records_in": summary.get("records_in"), "dead_letters": remaining,
            "ended_at": summary.get("ended_at"), "path": run.letters_path,
        })
    out.sort(key=lambda r: str(r.get("ended_at") or r["run_id"]), reverse=True)
    return out


def _count_lines(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return 0


def read_letters(run: RunDir, *, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
    """The run's dead letters, each with its 1-based ``number`` in the file: all of them, or
    ``limit`` from the ``offset``-th on (the file is read line by line; only those are parsed)."""
    if not os.path.exists(run.letters_path):
        destination = run.summary().get("dead_letter_destination")
        if destination and str(destination).startswith("sink "):
            raise AdfError(
                f"the dead letters of run {run.run_id} went to the {destination}: read them there "
                "(only the default destination, the run's dead_letters.jsonl, can be listed and replayed)"
            )
        return []
    out: list[dict[str, Any]] = []
    seen = 0
    with open(run.letters_path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            seen += 1
            if seen <= offset:
                continue
            if limit is not None and len(out) >= limit:
                break
            try:
                letter = json.loads(line)
            except ValueError:
                letter = {"stage": "unreadable", "reason": "a torn line in the dead-letter file", "record": line}
            letter["number"] = number
            out.append(letter)
    return out


def count_letters(run: RunDir) -> int:
    """How many dead letters the run has now (without parsing them)."""
    return _count_lines(run.letters_path)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # no flock here: one replay at a time is up to the user
        yield
        return
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AdfError(f"the dead letters in {path} are being replayed by another process; try again when it is done") from None
        yield
    finally:
        os.close(fd)


def replay(run: RunDir, flow: Any, *, store: Any = None) -> dict[str, Any]:
    """Replay ``run``'s dead letters through ``flow`` (its current spec); return what happened.

    ``{"replayed", "written", "filtered", "fanned_out", "dead_letters" (still dead), "kept"
    (not replayable), "remaining"}``; the dead-letter file then holds only the remaining ones
    and the run's ``summary.json`` records the replay.
    """
    from active_data_flow.codec import codec
    from active_data_flow.engine import replay_dead_letters
    from active_data_flow.spec import as_spec

    spec = as_spec(flow)
    if spec.name != run.flow:
        raise AdfError(f"run {run.run_id} belongs to flow {run.flow!r}, not {spec.name!r}")
    with _locked(run.letters_path):
        letters = read_letters(run)
        if not letters:
            return {"replayed": 0, "written": 0, "filtered": 0, "fanned_out": 0, "dead_letters": 0, "kept": 0, "remaining": 0}
        result = replay_dead_letters(spec, letters, run_id=run.run_id, state_dir=run.state_root, store=store)
        previous = {id(letter): letter for letter in letters}
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        rows: list[dict[str, Any]] = []
        for letter in result.kept:
            row = {k: v for k, v in letter.items() if k != "number"}
            rows.append(row)
        for row in result.dead:
            row = dict(row)
            row["ts"] = now
            rows.append(row)
        # the previous reason and how often a letter was replayed, from the letter it came from
        by_origin: dict[str, dict[str, Any]] = {}
        for letter in previous.values():
            by_origin.setdefault(json.dumps(letter.get("origin"), sort_keys=True, default=str), letter)
        for row in rows[len(result.kept):]:
            before = by_origin.get(json.dumps(row.get("origin"), sort_keys=True, default=str))
            if before is not None:
                row["replays"] = int(before.get("replays") or 0) + 1
                row["previous_reason"] = before.get("reason")
        dumps = codec().dumps
        tmp = f"{run.letters_path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            for row in rows:
                f.write(dumps(row) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, run.letters_path)
        outcome = {
            "replayed": result.replayed, "written": result.written, "filtered": result.filtered,
            "fanned_out": result.fanned_out, "dead_letters": len(result.dead), "kept": len(result.kept),
            "remaining": len(rows),
        }
        _record(run, {"at": now, **outcome})
    return outcome


def _record(run: RunDir, entry: dict[str, Any]) -> None:
    path = os.path.join(run.path, "summary.json")
    summary = _read_json(path)
    if not isinstance(summary, dict):
        return
    summary.setdefault("replays", []).append(entry)
    summary["dead_letters_remaining"] = entry["remaining"]
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    os.replace(tmp, path)
