"""Helpers of the tests that run `adf run` in a subprocess and kill it (crash and resume)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def start_run(spec_path: Path, state: Path) -> subprocess.Popen[str]:
    """`adf run SPEC --json` in its own process group, step modules importable from tests/."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.Popen(
        [sys.executable, "-m", "active_data_flow.cli", "run", str(spec_path), "--json", "--state-dir", str(state)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def wait_for_lines(path: Path, at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= at_least:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {at_least} lines")


def children(pid: int) -> list[int]:
    """The process ids of ``pid``'s children (the reader processes of a run)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out.extend(int(t) for t in (task / "children").read_text().split())
    return out


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Wait for a run to end successfully; its JSON summary."""
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr[-3000:]
    summary: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return summary
