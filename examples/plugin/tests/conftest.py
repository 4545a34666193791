"""Shared fixtures: files of readings to read, and what the sink wrote.

The tests expect the plugin to be installed (``pip install -e examples/plugin``): flows name
its types, which the engine finds through the plugin's entry points.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def _write_readings(directory: Path, files: int, per_file: int) -> list[int]:
    """``files`` files of ``per_file`` readings each (ids 1, 2, …); the ids written."""
    directory.mkdir(parents=True, exist_ok=True)
    ids = []
    for f in range(files):
        lines = [f"# file {f}"]
        for _ in range(per_file):
            ids.append(len(ids) + 1)
            lines.append(f'id={ids[-1]} sensor="sensor {f}" celsius={ids[-1] % 40}.5')
        (directory / f"readings-{f:02}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ids


def _read_parts(directory: Path) -> list[dict[str, Any]]:
    """Every record in the sink's part files (every line must be whole JSON)."""
    return [json.loads(line) for part in sorted(directory.glob("part-*.jsonl")) for line in part.read_text().splitlines()]


@pytest.fixture
def write_readings() -> Callable[[Path, int, int], list[int]]:
    return _write_readings


@pytest.fixture
def read_parts() -> Callable[[Path], list[dict[str, Any]]]:
    return _read_parts


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    """The runs' checkpoints and dead letters (never the working directory's ``.adf``)."""
    return str(tmp_path / "state")
