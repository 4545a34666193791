"""The setup scripts install what the committed files pin and never rewrite a tracked file."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p for p in (ROOT / "scripts").iterdir() if p.is_file() and p.read_text(errors="replace").startswith("#!"))


def test_node_packages_install_from_the_committed_lock_without_touching_it(tmp_path: Path) -> None:
    if shutil.which("npm") is None:
        pytest.fail("npm is not installed (scripts/spin-setup needs node and npm)")
    for name in ("package.json", "package-lock.json"):
        shutil.copy(ROOT / name, tmp_path / name)
    lock = (ROOT / "package-lock.json").read_bytes()
    # what scripts/spin-setup runs, in a copy of the project's node files
    done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error", "--prefer-offline",
                           "--ignore-scripts"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "package-lock.json").read_bytes() == lock
    assert (tmp_path / "node_modules" / "@bytecodealliance" / "jco").is_dir()


def test_no_setup_script_runs_a_command_that_rewrites_the_lock() -> None:
    # `npm install` / `npm update` rewrite package-lock.json; `npm ci` never does
    offenders = [f"{p.name}: {line.strip()}" for p in SCRIPTS for line in p.read_text().splitlines()
                 if re.search(r"\bnpm\s+(install|i|update|up|add)\b", line.split("#", 1)[0])]
    assert offenders == []
    assert any(re.search(r"\bnpm\s+ci\b", p.read_text()) for p in SCRIPTS)
