"""The engine (core/) and the handlers (handlers/) must import and run with nothing but the standard library (they run
inside Spin). The one exception is ``active_data_flow.handlers.web.api``: the FastAPI edge of ``adf serve``,
imported only by ``active_data_flow.handlers.web.app.create_app`` and never inside a component."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

from package_tree import package_parent

import active_data_flow
import active_data_flow.handlers

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import importlib, json, pkgutil, sys
sys.path[:0] = [{root!r}]
before = set(sys.modules)
import active_data_flow, active_data_flow.handlers
EDGE = {{"active_data_flow.handlers.web.api"}}
HOSTS = ("active_data_flow.handlers", "active_data_flow.spin_app", "active_data_flow.lambda_app", "active_data_flow.flink_job")
names = ["active_data_flow", "active_data_flow.handlers"]
names += [m.name for m in pkgutil.walk_packages(active_data_flow.__path__, "active_data_flow.") if not m.name.startswith(HOSTS)]
names += [m.name for m in pkgutil.walk_packages(active_data_flow.handlers.__path__, "active_data_flow.handlers.") if m.name not in EDGE]
for name in names:
    importlib.import_module(name)
stdlib = set(sys.stdlib_module_names)
third_party = sorted({{m.split(".")[0] for m in sys.modules if not m.startswith("__")}} - stdlib - {{"active_data_flow"}} - {{m.split(".")[0] for m in before}})
# ... and a flow runs: memory source -> python step -> file sink, dead letters included
import tempfile, os
from active_data_flow.engine import run_flow
d = tempfile.mkdtemp()
spec = {{
    "name": "stdlib_probe",
    "source": {{"type": "memory", "records": [{{"n": i}} for i in range(50)]}},
    "steps": [{{"type": "filter", "field": "n", "op": "lt", "value": 40}}],
    "sink": {{"type": "file", "path": os.path.join(d, "out.jsonl")}},
    "runtime": {{"batch_size": 7}},
}}
summary = run_flow(spec, state_dir=d)
lines = open(os.path.join(d, "out.jsonl")).read().splitlines()
print(json.dumps({{"modules": names, "third_party": third_party, "status": summary.status, "lines": len(lines)}}))
"""


def test_every_core_and_handlers_module_imports_and_a_flow_runs_with_only_the_standard_library() -> None:
    # -S: no site-packages at all; -E: ignore PYTHON* variables. Only stdlib + the project.
    out = subprocess.run(
        [sys.executable, "-S", "-E", "-c", PROBE.format(root=str(package_parent()))],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # the modules as the installed package lists them (core/ is the package, handlers/ in it)
    expected = {"active_data_flow", "active_data_flow.handlers"}
    expected |= {m.name for m in pkgutil.walk_packages(active_data_flow.__path__, "active_data_flow.")}
    expected |= {m.name for m in pkgutil.walk_packages(active_data_flow.handlers.__path__, "active_data_flow.handlers.")}
    expected -= {"active_data_flow.handlers.web.api"}
    assert set(result["modules"]) == expected
    assert result["third_party"] == []
    assert result["status"] == "success"
    assert result["lines"] == 40
