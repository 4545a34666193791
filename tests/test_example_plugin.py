"""The example plugin (examples/plugin) works as it ships.

It is installed with pip into a fresh virtualenv, as a plugin author's users would install it,
and found only through its entry points: ``adf run examples/plugin/flow.yaml`` and ``adf
connectors`` run with that virtualenv's interpreter, and so do the plugin's own tests.

The virtualenv sees this project's environment (active-data-flow and its dependencies)
through a ``.pth`` file, so nothing is downloaded. (``--system-site-packages`` would not do:
a virtualenv made from this one's interpreter inherits the *base* interpreter's
site-packages, not this environment's.) pip runs offline: ``--no-index --no-deps
--no-build-isolation`` (the plugin builds with this environment's setuptools), with no pip
configuration file, on a copy of the plugin, so that the build leaves nothing in the repository.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import site
import subprocess
import tomllib
import venv
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "examples" / "plugin"


def _env() -> dict[str, str]:
    """This environment without PYTHONPATH or pip settings: the plugin must come from the virtualenv."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PYTHONDONTWRITEBYTECODE="1")  # no __pycache__ left in examples/plugin
    return env


def _run(*args: str | Path, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=ROOT, env={**_env(), **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a fresh virtualenv with the plugin installed by pip."""
    home = tmp_path_factory.mktemp("plugin") / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(home)
    python = home / "bin" / "python"
    target = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    assert target and Path(target).is_dir(), target
    ours = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    Path(target, "_adf_project_env.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in ours))

    source = home.parent / "plugin-src"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    res = _run(python, "-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation", "--no-cache-dir",
               source)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Successfully installed adf-example-plugin-0.1.0" in res.stdout
    return python


def _summary(res: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert res.returncode == 0, res.stderr[-3000:]
    summary: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return summary


def test_the_example_flow_runs_with_the_installed_plugin(python: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _run(python, "-m", "active_data_flow.cli", "run", "examples/plugin/flow.yaml", "--json",
               "--state-dir", tmp_path / "state", "--set", f"sink.directory={out}")
    summary = _summary(res)

    # 24 readings: one filtered (id 9, status=test), one dead-lettered (id 19, an unclosed quote)
    assert summary["status"] == "partial"
    assert (summary["records_in"], summary["records_out"], summary["filtered"], summary["dead_letters"]) == (24, 22, 1, 1)
    assert summary["records_in"] == summary["records_out"] + summary["filtered"] + summary["dead_letters"]
    assert (summary["parallelism"], summary["splits"], summary["in_flight"]) == (2, 3, 0)
    assert summary["sink"] == f"example_parts {out}/part-*.jsonl"

    records = [json.loads(line) for part in sorted(out.glob("part-*.jsonl")) for line in part.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == [i for i in range(1, 25) if i not in (9, 19)]
    assert {"id": 3, "sensor": "flow pipe", "celsius": 55.2, "status": "ok"} in records  # typed by the flow's schema
    assert {p.name for p in out.iterdir()} <= {"part-0.jsonl", "part-1.jsonl"}

    (letter,) = [json.loads(line) for line in Path(summary["dead_letter_destination"]).read_text().splitlines()]
    roof = (PLUGIN / "data" / "roof.txt").read_bytes().splitlines(keepends=True)
    assert letter["stage"] == "source" and letter["reason"] == "no closing quotation"
    assert letter["record"] == roof[5].decode().rstrip("\n")
    assert letter["origin"] == {"file": "examples/plugin/data/roof.txt", "line": 6, "offset": len(b"".join(roof[:5]))}


def test_adf_finds_the_plugin_types_through_their_entry_points(python: Path) -> None:
    res = _run(python, "-m", "active_data_flow.cli", "connectors", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    listed = json.loads(res.stdout)
    source = next(row for row in listed["sources"] if row["type"] == "example_lines")
    sink = next(row for row in listed["sinks"] if row["type"] == "example_parts")
    assert source["origin"] == "entry point active_data_flow.sources (adf-example-plugin)"
    assert sink["origin"] == "entry point active_data_flow.sinks (adf-example-plugin)"
    assert [a["name"] for a in source["attributes"]] == ["path", "pattern", "encoding"]
    assert [a["name"] for a in sink["attributes"]] == ["directory", "fsync"]
    assert all(a.get("help") for a in source["attributes"] + sink["attributes"])

    res = _run(python, "-m", "active_data_flow.cli", "validate", "examples/plugin/flow.yaml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_plugin_tests_pass_in_the_virtualenv(python: Path) -> None:
    # they need no pytest plugin: not loading this environment's (hypothesis, schemathesis…) saves seconds
    res = _run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", PLUGIN / "tests", timeout=240,
               env={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    last = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-3000:]
    assert " passed" in last and not any(word in last for word in ("failed", "skipped", "error", "deselected")), last


def test_the_main_distribution_leaves_the_plugin_out() -> None:
    with open(ROOT / "pyproject.toml", "rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    listed = [*setuptools["packages"], *setuptools["package-dir"].values()]
    for package in ("examples", "examples.plugin", "examples.plugin.src.adf_example_plugin", "adf_example_plugin"):
        assert not any(fnmatch.fnmatchcase(package, pattern) for pattern in listed), package
    # (the built wheel's contents: tests/test_packaging.py)
