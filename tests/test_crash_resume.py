"""Crash and resume: SIGKILL readers or the whole run mid-way; nothing is lost.

These start `adf run` as a real process tree and kill parts of it with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from adf_runs import children, finish, start_run, wait_for_lines

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
N = 12_000
BATCH = 100


def make_input(tmp: Path) -> Path:
    src = tmp / "in.jsonl"
    src.write_text("".join(json.dumps({"n": i, "pad": "x" * 50}) + "\n" for i in range(N)))
    return src


def spec_file(tmp: Path, src: Path, sink: dict[str, Any], parallelism: int) -> Path:
    spec = {
        "name": "crashy",
        "source": {"type": "file", "path": str(src), "split_bytes": 60_000},
        "steps": [{"type": "python", "function": "flowlib.steps:slow", "options": {"delay": 0.0004}}],
        "sink": sink,
        "runtime": {"batch_size": BATCH, "parallelism": parallelism},
    }
    path = tmp / "flow.json"
    path.write_text(json.dumps(spec))
    return path










def output_counts(path: Path) -> Counter[int]:
    return Counter(json.loads(line)["n"] for line in path.read_text().splitlines() if line.strip())


def test_a_killed_reader_process_is_replaced_and_nothing_is_lost(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    spec = spec_file(tmp_path, make_input(tmp_path), {"type": "file", "path": str(out)}, parallelism=2)
    proc = start_run(spec, tmp_path / "state")
    wait_for_lines(out, 1500)
    readers = children(proc.pid)
    assert len(readers) >= 2, readers
    os.kill(readers[0], signal.SIGKILL)
    summary = finish(proc)
    assert summary["status"] == "success"
    assert summary["reader_restarts"] == 1
    counts = output_counts(out)
    assert set(counts) == set(range(N)), "records lost"
    duplicates = sum(c - 1 for c in counts.values())
    assert duplicates <= BATCH, f"{duplicates} duplicates: more than one batch of the killed reader"


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_killed_run_resumes_from_its_checkpoint_when_run_again(tmp_path: Path, parallelism: int) -> None:
    out = tmp_path / "out.jsonl"
    state = tmp_path / "state"
    spec = spec_file(tmp_path, make_input(tmp_path), {"type": "file", "path": str(out)}, parallelism)
    proc = start_run(spec, state)
    wait_for_lines(out, 3000)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = output_counts(out)
    assert 0 < len(before) < N
    assert (state / "crashy" / "checkpoint" / "run.json").exists()

    summary = finish(start_run(spec, state))
    assert summary["status"] == "success" and summary["resumed"] is True
    counts = output_counts(out)
    assert set(counts) == set(range(N)), "records lost"
    duplicates = sum(c - 1 for c in counts.values())
    assert duplicates <= BATCH * parallelism, f"{duplicates} duplicates"
    # the resumed run read only what was left, not everything again
    assert summary["records_in"] < N
    assert not (state / "crashy" / "checkpoint").exists(), "a finished run clears its checkpoint"


def test_with_an_upsert_sink_a_resumed_run_is_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "out.db"
    state = tmp_path / "state"
    sink = {"type": "sql", "url": f"sqlite:///{db}", "table": "t", "mode": "upsert", "key": "n"}
    spec = spec_file(tmp_path, make_input(tmp_path), sink, parallelism=2)
    proc = start_run(spec, state)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    if conn.execute("select count(*) from t").fetchone()[0] > 3000:
                        break
            except sqlite3.OperationalError:
                continue
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    summary = finish(start_run(spec, state))
    assert summary["resumed"] is True
    with sqlite3.connect(db) as conn:
        total, distinct = conn.execute("select count(*), count(distinct n) from t").fetchone()
    assert total == distinct == N


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_readers_stop_when_the_coordinator_is_killed_and_a_second_run_is_refused_meanwhile(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    state = tmp_path / "state"
    spec = spec_file(tmp_path, make_input(tmp_path), {"type": "file", "path": str(out)}, parallelism=2)
    proc = start_run(spec, state)
    wait_for_lines(out, 1500)

    second = start_run(spec, state)
    stdout, _ = second.communicate(timeout=60)
    assert second.returncode == 1
    assert "already running" in json.loads(stdout.strip().splitlines()[-1])["error"]

    readers = children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)  # the coordinator only: its readers are orphaned
    proc.wait()
    deadline = time.monotonic() + 20
    while any(_alive(r) for r in readers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(r) for r in readers), "orphaned readers kept running"

    summary = finish(start_run(spec, state))
    assert summary["resumed"] is True
    counts = output_counts(out)
    assert set(counts) == set(range(N))
    assert sum(c - 1 for c in counts.values()) <= 2 * BATCH


@pytest.mark.parametrize("parallelism", [1, 2])
def test_many_small_files_survive_two_crashes_in_a_row(tmp_path: Path, parallelism: int) -> None:
    # Hundreds of splits: assignments are logged between enumerator snapshots, so a resume
    # must skip the stale copies of splits assigned after the last snapshot.
    inbox = tmp_path / "in"
    inbox.mkdir()
    total = 0
    for f in range(300):
        (inbox / f"part-{f:04d}.jsonl").write_text("".join(json.dumps({"n": total + i}) + "\n" for i in range(40)))
        total += 40
    out = tmp_path / "out.jsonl"
    spec = tmp_path / "flow.json"
    spec.write_text(json.dumps({
        "name": "crashy",
        "source": {"type": "file", "path": str(inbox / "*.jsonl")},
        "steps": [{"type": "python", "function": "flowlib.steps:slow", "options": {"delay": 0.0003}}],
        "sink": {"type": "file", "path": str(out)},
        "runtime": {"batch_size": BATCH, "parallelism": parallelism},
    }))
    state = tmp_path / "state"
    for at_least in (2500, 6000):
        proc = start_run(spec, state)
        wait_for_lines(out, at_least)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    summary = finish(start_run(spec, state))
    assert summary["resumed"] is True
    counts = output_counts(out)
    assert set(counts) == set(range(total)), f"{total - len(counts)} records lost"
    duplicates = sum(c - 1 for c in counts.values())
    assert duplicates <= 2 * BATCH * parallelism, f"{duplicates} duplicates"
