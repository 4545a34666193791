"""``adf flink run`` and ``adf flink package``.

``run`` executes the job on Flink's local mini-cluster: in this interpreter when PyFlink is
installed here, else with the project's own Flink environment ``.venv-flink`` (made by
``scripts/flink-setup``: apache-flink pins its own numpy/pandas/pyarrow/protobuf, so it
lives in its own virtualenv, like aws-sam-cli). ``package`` writes what a cluster needs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLINK_VENV = ROOT / ".venv-flink"
_PACKAGES = ("core", "flink_job")

__all__ = ["flink_python", "register"]


def _err(message: str) -> None:
    sys.stderr.write(f"adf: {message}\n")


def flink_python() -> str | None:
    """An interpreter that can import pyflink: this one, else ``.venv-flink``'s; None."""
    if importlib.util.find_spec("pyflink") is not None:
        return sys.executable
    candidate = FLINK_VENV / "bin" / "python"
    return str(candidate) if candidate.exists() else None


def _cmd_run(args: argparse.Namespace) -> int:
    python = flink_python()
    if python is None:
        _err("PyFlink is not installed: run scripts/flink-setup (apache-flink in .venv-flink, ~850 MB) "
             "or pip install 'active-data-flow[flink]' into this environment; Java 17 is needed")
        return 127
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        _err("Flink needs Java 17 (apt-get install openjdk-17-jre-headless) or JAVA_HOME")
        return 127
    cmd = [python, "-m", "flink_job.job", args.spec]
    if args.parallelism:
        cmd += ["--parallelism", str(args.parallelism)]
    if args.state_dir:
        cmd += ["--state-dir", args.state_dir]
    if args.json:
        cmd.append("--json")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.call(cmd, env=env)


def _cmd_package(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    archive = out / "adf-flink.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in _PACKAGES:
            for path in sorted((ROOT / package).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                    zf.write(path, path.relative_to(ROOT))
    shutil.copy2(ROOT / "flink_job" / "job.py", out / "job.py")
    specs = []
    for spec in args.spec or []:
        shutil.copy2(spec, out / Path(spec).name)
        specs.append(Path(spec).name)
    requirements = ["# what the flows' connectors import (core itself needs only the standard library)",
                    *args.requirement]
    (out / "requirements.txt").write_text("\n".join(requirements) + "\n")
    first = specs[0] if specs else "flow.yaml"
    (out / "README.txt").write_text(
        "Submit to a Flink cluster (Flink 2.x with PyFlink on the TaskManagers, Python 3.11):\n\n"
        f"  flink run -py job.py -pyfs adf-flink.zip -pyreq requirements.txt -- {first} --parallelism 4\n\n"
        "job.py is flink_job/job.py; adf-flink.zip holds the core and flink_job packages. Step modules\n"
        "that flows import go into the zip too (add them with -pyfs) or onto the workers' PYTHONPATH.\n")
    manifest: dict[str, Any] = {"archive": str(archive), "job": str(out / "job.py"), "specs": specs,
                                "requirements": args.requirement}
    print(json.dumps(manifest) if args.json else f"packaged into {out}: job.py, adf-flink.zip "
          f"({archive.stat().st_size / 1e3:.0f} kB), requirements.txt, README.txt")
    return 0


def register(sub: Any) -> None:
    flink = sub.add_parser("flink", help="run flows as Apache Flink jobs (PyFlink)")
    fsub = flink.add_subparsers(dest="flink_cmd", required=True)
    run = fsub.add_parser("run", help="run a flow spec on Flink's local mini-cluster")
    run.add_argument("spec")
    run.add_argument("--parallelism", "-p", type=int, default=None)
    run.add_argument("--state-dir", default=None)
    run.add_argument("--json", action="store_true")
    run.set_defaults(func=_cmd_run)
    pkg = fsub.add_parser("package", help="what a Flink cluster needs: job.py, the project zip, requirements")
    pkg.add_argument("spec", nargs="*", help="flow specs to include")
    pkg.add_argument("--out", default="build/flink")
    pkg.add_argument("--requirement", "-r", action="append", default=[],
                     help="a requirement line for the workers (repeatable), e.g. 'SQLAlchemy>=2'")
    pkg.add_argument("--json", action="store_true")
    pkg.set_defaults(func=_cmd_package)
