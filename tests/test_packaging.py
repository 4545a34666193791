"""The distribution as it ships: a wheel built from the checkout's files holds one import package,
``active_data_flow`` (core/ as the package, the host folders inside it), every module and data
file of the folders, and runs from its own files — the editable install's import hook absent."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from package_tree import IMPORT_NAMES

ROOT = Path(__file__).resolve().parent.parent
#: folder -> where it lies in the wheel
FOLDERS = {folder: name.replace(".", "/") for folder, name in IMPORT_NAMES.items()}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the files the distribution is made of (the checkout stays
    as it is: no build/ or egg-info written into it)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                        str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (built,) = out.glob("active_data_flow-*.whl")
    return built


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    return target


def _tracked(folder: str) -> list[Path]:
    """The folder's files that belong in the distribution (what git tracks, minus requirements.txt)."""
    listed = subprocess.run(["git", "ls-files", folder], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / line for line in listed.stdout.splitlines() if not line.endswith("requirements.txt")]


def test_the_wheel_installs_one_import_package_and_nothing_generic(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        tops = {name.split("/", 1)[0] for name in zf.namelist()}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"active_data_flow"}
    assert len(dist_info) == 1


def test_every_module_and_data_file_of_the_folders_is_in_the_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    missing = []
    for folder, place in FOLDERS.items():
        for path in _tracked(folder):
            arcname = f"{place}/{path.relative_to(ROOT / folder).as_posix()}"
            if arcname not in names:
                missing.append(f"{path.relative_to(ROOT)} (as {arcname})")
    assert not missing, missing
    for data in ("active_data_flow/py.typed", "active_data_flow/handlers/schedule/migrations/env.py",
                 "active_data_flow/spin_app/wit/adf.wit"):
        assert data in names, data


def _run_without_site(unpacked: Path, code: str, *extra_path: str) -> subprocess.CompletedProcess[str]:
    """``code`` in an interpreter whose only project code is the unpacked wheel."""
    prelude = f"import sys; sys.path[:0] = {[str(unpacked), *extra_path]!r}\n"
    return subprocess.run([sys.executable, "-S", "-E", "-c", prelude + code], capture_output=True, text=True,
                          timeout=120, cwd=unpacked)


def test_the_public_api_of_the_wheel_runs_a_flow_with_only_the_standard_library(unpacked: Path, tmp_path: Path) -> None:
    code = f"""
import json, os
import active_data_flow
from active_data_flow import DataFlow, Record, Sink, Source, Step, run_flow
assert active_data_flow.__file__.startswith({str(unpacked)!r}), active_data_flow.__file__
missing = [n for n in active_data_flow.__all__ if not hasattr(active_data_flow, n)]
out = os.path.join({str(tmp_path)!r}, "out.jsonl")
summary = run_flow({{"name": "wheel", "source": {{"type": "memory", "records": [{{"n": i}} for i in range(30)]}},
                     "steps": [{{"type": "filter", "field": "n", "op": "lt", "value": 20}}],
                     "sink": {{"type": "file", "path": out}}}}, state_dir={str(tmp_path / "state")!r})
third_party = sorted({{m.split(".")[0] for m in sys.modules}} - set(sys.stdlib_module_names) - {{"active_data_flow", "__main__"}})
print(json.dumps({{"missing": missing, "status": summary.status, "lines": len(open(out).read().splitlines()),
                  "third_party": third_party, "version": active_data_flow.__version__}}))
"""
    r = _run_without_site(unpacked, code)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.splitlines()[-1])
    assert result == {"missing": [], "status": "success", "lines": 20, "third_party": [],
                      "version": result["version"]}
    assert f"Version: {result['version']}" in _metadata(unpacked)


def _metadata(unpacked: Path) -> str:
    (info,) = unpacked.glob("active_data_flow-*.dist-info")
    return (info / "METADATA").read_text()


def test_every_entry_point_of_the_wheel_resolves_from_its_files(unpacked: Path) -> None:
    (info,) = unpacked.glob("active_data_flow-*.dist-info")
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(info / "entry_points.txt")
    targets = {f"{group}:{name}": value.strip() for group in parser.sections() for name, value in parser[group].items()}
    assert targets["console_scripts:adf"] == "active_data_flow.cli:main"
    assert len(targets) >= 7
    code = f"""
import importlib, json
found = {{}}
for key, target in {targets!r}.items():
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    found[key] = obj.__module__.startswith("active_data_flow") and callable(obj) and \\
        importlib.import_module(module).__file__.startswith({str(unpacked)!r})
print(json.dumps(found))
"""
    # the third-party libraries (PyYAML, rich) from this environment; the project only from the wheel
    r = _run_without_site(unpacked, code, sysconfig.get_paths()["purelib"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1]) == dict.fromkeys(targets, True)


def test_the_wheels_adf_prints_its_version(unpacked: Path) -> None:
    r = _run_without_site(unpacked, "from active_data_flow.cli import main; sys.exit(main(['--version']))",
                          sysconfig.get_paths()["purelib"])
    assert r.returncode == 0, r.stderr
    version = next(line for line in _metadata(unpacked).splitlines() if line.startswith("Version: ")).split(": ")[1]
    assert r.stdout.strip() == f"adf {version}"
