"""``adf flink run`` and ``adf flink package``.

``run`` executes the job on Flink's local mini-cluster: in this interpreter when PyFlink is
installed here, else with the project's own Flink environment ``.venv-flink`` (made by
``scripts/flink-setup``: apache-flink pins its own numpy/pandas/pyarrow/protobuf, so it
lives in its own virtualenv, like aws-sam-cli). ``package`` writes what a cluster needs.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from active_data_flow.errors import AdfError

ROOT = Path(__file__).resolve().parent.parent
FLINK_VENV = ROOT / ".venv-flink"
#: the folders the zip carries, and where each goes in the import package
_PACKAGES = {"core": "active_data_flow", "flink_job": "active_data_flow/flink_job"}

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
    cmd = [python, "-m", "active_data_flow.flink_job.job", args.spec]
    if args.parallelism:
        cmd += ["--parallelism", str(args.parallelism)]
    if args.state_dir:
        cmd += ["--state-dir", args.state_dir]
    if args.json:
        cmd.append("--json")
    return subprocess.call(cmd)


#: what a connector type needs on the workers (the extras of pyproject.toml)
_TYPE_REQUIREMENTS: dict[str, list[str]] = {
    "sql": ["SQLAlchemy>=2.0"],
    "rafka": ["redis>=5.0"],
    "iceberg": ["pyiceberg[sql-sqlite,pyarrow]>=0.12,<0.13"],
    "sftp": ["paramiko>=3.4"],
    "wasm": ["wasmtime>=25", "cryptography>=42"],
}
_STEP_CALLABLE_KEYS = ("function", "class", "predicate")


class PackageError(Exception):
    """What stops a flow from being packaged, every problem at once."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _under(path: str, dirs: list[str]) -> bool:
    return any(os.path.commonpath([path, d]) == d for d in dirs)


def _static_prefix(path: str) -> str:
    """The part of a glob before its first wildcard (the directory that must be reachable)."""
    parts = []
    for part in Path(path).parts:
        if any(c in part for c in "*?["):
            break
        parts.append(part)
    return str(Path(*parts)) if parts else "/"


def pin_paths(spec: dict[str, Any], shared: list[str], cwd: str) -> list[str]:
    """Make the spec's local file paths absolute (from ``cwd``, as ``adf run`` reads them) and
    check that each is under a ``shared`` directory (a filesystem every TaskManager mounts at the
    same path); the problems, naming each path that only this machine can see."""
    problems: list[str] = []
    shared = [os.path.abspath(d) for d in shared]
    for section in ("source", "sink", "dead_letter"):
        conf = spec.get(section)
        if not isinstance(conf, dict):
            continue
        kind = conf.get("type")
        if kind == "file":
            key, values = "path", conf.get("path")
        elif kind == "sql" and isinstance(conf.get("url"), str) and conf["url"].startswith("sqlite:///"):
            key, values = "url", conf["url"]
        else:
            continue  # a service (database server, broker, object store…): reachable by URL
        listed = values if isinstance(values, list) else [values]
        pinned = []
        for value in listed:
            if not isinstance(value, str):
                pinned.append(value)
                continue
            prefix = "sqlite:///" if key == "url" else ""
            local = value[len(prefix):]
            if (not prefix and "://" in local) or local in ("", ":memory:") or local.startswith(":memory:"):
                pinned.append(value)  # s3://… and in-memory databases are not local files
                continue
            absolute = os.path.normpath(os.path.join(cwd, local))
            pinned.append(prefix + absolute)
            if not _under(_static_prefix(absolute), shared):
                problems.append(f"{section}.{key}: {value!r} ({absolute}) is a file on this machine only: the "
                                "TaskManagers cannot read or write it. Put it on a filesystem every TaskManager "
                                "mounts at the same path and declare that directory with --shared DIR, or use s3://")
        conf[key] = pinned if isinstance(values, list) else pinned[0]
    return problems


def _module_file(name: str, search: list[str]) -> tuple[Path, Path] | None:
    """(search directory, file or package directory) of top-level module ``name``, or None."""
    for base in search:
        b = Path(base)
        if (b / name / "__init__.py").is_file() or ((b / name).is_dir() and any((b / name).glob("*.py"))):
            return b, b / name
        if (b / f"{name}.py").is_file():
            return b, b / f"{name}.py"
    return None


def _imports(path: Path) -> set[str]:
    """The top-level names a Python file imports (absolute imports only)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def step_modules(spec: Mapping[str, Any]) -> set[str]:
    """The top-level modules a flow's steps name (``module:function`` and the like)."""
    names: set[str] = set()
    for step in spec.get("steps") or []:
        for key in _STEP_CALLABLE_KEYS:
            ref = step.get(key) if isinstance(step, dict) else None
            if isinstance(ref, str) and ":" in ref:
                names.add(ref.split(":", 1)[0].split(".")[0])
    return names


def bundle_modules(names: set[str], search: list[str]) -> tuple[dict[str, Path], list[str], list[str]]:
    """The local modules to bundle for ``names`` and what they import in turn, found in
    ``search`` the way the engine imports them: ``{name in the zip: file}``; the names that
    come from the installed environment (requirements, not bundled); the ones not found."""
    files: dict[str, Path] = {}
    installed: list[str] = []
    missing: list[str] = []
    todo, seen = sorted(names), set(_PACKAGES)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        found = _module_file(name, search)
        if found is None:
            if name in sys.stdlib_module_names:
                continue
            (installed if importlib.util.find_spec(name) is not None else missing).append(name)
            continue
        base, target = found
        sources = [target] if target.is_file() else sorted(p for p in target.rglob("*")
                                                             if p.is_file() and "__pycache__" not in p.parts
                                                             and p.suffix != ".pyc")
        for src in sources:
            files[str(src.relative_to(base))] = src
            if src.suffix == ".py":
                todo.extend(n for n in _imports(src) if n not in seen and n not in sys.stdlib_module_names)
    return files, sorted(installed), sorted(missing)


def _requirements_for(spec: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for section in ("source", "sink", "dead_letter"):
        conf = spec.get(section)
        if isinstance(conf, dict):
            out.extend(_TYPE_REQUIREMENTS.get(str(conf.get("type")), []))
            paths = conf.get("path")
            if any(isinstance(p, str) and p.startswith("s3://") for p in (paths if isinstance(paths, list) else [paths])):
                out.append("boto3>=1.34")
    for step in spec.get("steps") or []:
        if isinstance(step, dict):
            out.extend(_TYPE_REQUIREMENTS.get(str(step.get("type")), []))
    return list(dict.fromkeys(out))


def package(spec_path: str, out: Path, *, shared: list[str], requirements: list[str], python: str,
            set_values: list[str] | None = None) -> dict[str, Any]:
    """Write what ``flink run`` needs to run ``spec_path`` on a cluster into ``out`` (see
    :func:`_cmd_package`); raises :class:`PackageError`."""
    from active_data_flow.config import parse_set_args
    from active_data_flow.loader import load_flow

    cwd = os.getcwd()
    payload = parse_set_args(set_values or []) or None
    loaded = load_flow(spec_path, payload=payload, payload_origin="--set", origin=spec_path)
    spec = json.loads(json.dumps(loaded.spec.raw, default=str))
    problems = pin_paths(spec, shared, cwd)
    if shared and not (spec.get("runtime") or {}).get("flink_report_dir"):
        # where a detached bounded job commits its splits' counts (`adf flink status` adds them up)
        spec.setdefault("runtime", {})["flink_report_dir"] = os.path.join(os.path.abspath(shared[0]), ".adf-flink-runs")
    search = [os.path.dirname(os.path.abspath(spec_path)),
              *(os.path.abspath(p) for p in spec.get("python_path") or []), cwd]
    modules, installed, missing = bundle_modules(step_modules(spec), search)
    for name in missing:
        problems.append(f"module {name!r} (a step imports it) is neither beside the spec, on its python_path, "
                        "in the working directory nor installed here")
    if problems:
        raise PackageError(problems)
    spec.pop("python_path", None)  # the step modules are in the zip, which is on the workers' path
    warnings = []
    if not spec.get("dead_letter") and not _bounded(spec):
        warnings.append("an unbounded flow's dead letters, without a dead_letter sink, stay in files on each "
                        "TaskManager host (/tmp/adf-flink/…): give the flow a dead_letter sink the workers reach")
    out.mkdir(parents=True, exist_ok=True)
    archive = out / "adf-flink.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for folder, package in _PACKAGES.items():
            for path in sorted((ROOT / folder).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                    zf.write(path, f"{package}/{path.relative_to(ROOT / folder).as_posix()}")
        for arcname, path in sorted(modules.items()):
            zf.write(path, arcname)
    shutil.copy2(ROOT / "flink_job" / "job.py", out / "job.py")
    spec_name = Path(spec_path).stem + ".json"
    (out / spec_name).write_text(json.dumps(spec, indent=2) + "\n")
    reqs = list(dict.fromkeys([*_requirements_for(spec), *requirements]))
    req_file = out / "requirements.txt"
    if reqs:
        req_file.write_text("\n".join(reqs) + "\n")
    elif req_file.exists():
        req_file.unlink()
    resolved = out.resolve()
    command = ["flink", "run", "-py", str(resolved / "job.py"), "-pyfs", str(resolved / "adf-flink.zip")]
    if reqs:
        command += ["-pyreq", str(resolved / "requirements.txt")]
    command += ["-pyexec", python, "-pyclientexec", python, str(resolved / spec_name),
                "--state-dir", str(resolved / "runs")]
    line = " ".join(shlex.quote(c) for c in command)
    (out / "README.txt").write_text(
        f"Flow {loaded.spec.name!r} packaged for a Flink 2.x cluster (PyFlink on the TaskManagers).\n\n"
        "Submit it (the `flink` of the cluster's distribution, or .venv-flink's pyflink/bin/flink with\n"
        "FLINK_CONF_DIR pointing at the cluster's configuration):\n\n"
        f"  {line}\n\n"
        "Add -p N for N parallel subtasks, -d to submit detached (it prints the job id; then\n"
        "`adf flink status JOB_ID --rest http://JOBMANAGER:8081`).\n\n"
        f"{python} is the Python (3.11, with apache-flink installed) of the client and of every\n"
        "TaskManager (-pyexec: the workers', -pyclientexec: the client's); give another one with\n"
        "`adf flink package --python PATH`.\n\n"
        f"{spec_name}: the spec with every configuration layer resolved at packaging time and its\n"
        "file paths made absolute (they must be on a filesystem every TaskManager mounts).\n"
        f"adf-flink.zip: the engine and the Flink job (the active_data_flow package) and the step modules: {', '.join(sorted(modules)) or 'none'}.\n"
        + (f"requirements.txt: what the workers pip-install: {', '.join(reqs)}.\n" if reqs else
           "No requirements: the engine needs only the standard library.\n")
        + (f"Installed on the workers already, not bundled: {', '.join(installed)}.\n" if installed else "")
        + "".join(f"Note: {w}.\n" for w in warnings)
        + "\nThe client prints the run summary; its counts and dead letters come back from the job\n"
        f"(dead letters into {resolved / 'runs'}/<flow>/flink-runs/<run id>/ unless the flow has a dead_letter sink).\n")
    (out / "submit.sh").write_text("#!/bin/sh\n# the command of README.txt\nexec " + line.replace("flink run", '"${FLINK:-flink}" run', 1) + ' "$@"\n')
    (out / "submit.sh").chmod(0o755)
    return {"archive": str(archive), "job": str(out / "job.py"), "spec": spec_name, "modules": sorted(modules),
            "requirements": reqs, "installed": installed, "command": command, "warnings": warnings}


def _bounded(spec: Mapping[str, Any]) -> bool:
    """Whether the spec's source is bounded (True when that cannot be told without reaching it)."""
    from active_data_flow.registry import registry
    from active_data_flow.source import Boundedness

    try:
        source = dict(spec.get("source") or {})
        cls = registry.resolve("source", str(source.pop("type", "")))
        return bool(cls(source).boundedness is Boundedness.BOUNDED)
    except Exception:
        return True


def _cmd_package(args: argparse.Namespace) -> int:
    python = args.python or flink_python() or "python3"
    out = Path(args.out)
    manifests = []
    for spec in args.spec:
        try:
            manifests.append(package(spec, out, shared=args.shared, requirements=args.requirement,
                                     python=python, set_values=args.set))
        except PackageError as exc:
            _err(f"{spec}: cannot be packaged for a cluster:\n  " + "\n  ".join(exc.problems))
            return 2
        except AdfError as exc:
            _err(f"{spec}: {exc}")
            return 2
    for m in manifests:
        for warning in m["warnings"]:
            _err(f"{m['spec']}: {warning}")
    if args.json:
        print(json.dumps(manifests[0] if len(manifests) == 1 else manifests))
    else:
        for m in manifests:
            print(f"packaged {m['spec']} into {out}: job.py, adf-flink.zip ({Path(m['archive']).stat().st_size / 1e3:.0f} kB"
                  f"{', step modules ' + ', '.join(m['modules']) if m['modules'] else ''})"
                  f"{', requirements.txt' if m['requirements'] else ''}, README.txt, submit.sh\n"
                  f"  {' '.join(shlex.quote(c) for c in m['command'])}")
    return 0


_TERMINAL = ("FINISHED", "FAILED", "CANCELED")
_COUNTS = ("records_in", "records_out", "filtered", "fanned_out", "dead_letters", "splits")


def _rest_get(rest: str, path: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(rest.rstrip("/") + path, timeout=10) as r:
        return json.loads(r.read())


def job_status(job_id: str, rest: str) -> dict[str, Any]:
    """A job's state from the JobManager's REST API: state, duration, each operator's elements in
    and out, the ``adf_*`` counters while the job runs, and the Python traceback of a failure."""
    from active_data_flow.flink_job.cluster import python_traceback

    job = _rest_get(rest, f"/jobs/{job_id}")
    out: dict[str, Any] = {"job_id": job_id, "name": job.get("name"), "state": job.get("state"),
                           "duration_s": round(int(job.get("duration", 0)) / 1000, 3), "operators": [],
                           "counts": {}}
    for v in job.get("vertices", []):
        m = v.get("metrics", {})
        out["operators"].append({"name": v.get("name"), "status": v.get("status"), "parallelism": v.get("parallelism"),
                                 "elements_in": m.get("read-records"), "elements_out": m.get("write-records")})
        try:
            names = _rest_get(rest, f"/jobs/{job_id}/vertices/{v['id']}/subtasks/metrics")
        except OSError:
            continue
        wanted = [n["id"] for n in names if any(n["id"].endswith(f"adf_{c}") for c in _COUNTS)]
        if wanted:
            values = _rest_get(rest, f"/jobs/{job_id}/vertices/{v['id']}/subtasks/metrics?get=" + ",".join(wanted))
            for item in values:
                key = item["id"].rsplit("adf_", 1)[1]
                out["counts"][key] = out["counts"].get(key, 0) + int(float(item.get("sum", 0)))
    if job.get("state") == "FINISHED":
        out.update(_finished_run(rest, job_id))
    if job.get("state") == "FAILED":
        try:
            exc = _rest_get(rest, f"/jobs/{job_id}/exceptions")
            text = (exc.get("exceptionHistory", {}).get("entries") or [{}])[0].get("stacktrace") or \
                exc.get("root-exception") or ""
        except OSError:
            text = ""
        out["error"] = python_traceback(text) or text.splitlines()[0] if text else None
    return out


def _finished_run(rest: str, job_id: str) -> dict[str, Any]:
    """A finished detached bounded job's run: its file sink's parts joined into the file and its
    counts and dead letters added up, from what the job committed (:func:`active_data_flow.flink_job.job.finish_detached`;
    where: the job's parameters). Nothing when the job has no such report."""
    from active_data_flow.flink_job.cluster import REPORT_KEY
    from active_data_flow.flink_job.report import finish_detached

    try:
        config = _rest_get(rest, f"/jobs/{job_id}/config")
    except OSError:
        return {}
    report = ((config.get("execution-config") or {}).get("user-config") or {}).get(REPORT_KEY)
    if not report:
        return {}
    data = json.loads(report)
    where = data.get("parts") or data.get("metas")
    if not os.path.isdir(where) and not os.path.exists(f"{where}.summary-{data['run_id']}.json"):
        return {"summary_error": f"the run's directory {where} is not visible here: run `adf flink status` "
                                 "where the filesystem the job wrote it to is mounted"}
    try:
        summary = finish_detached(data)
    except AdfError as exc:
        return {"summary_error": str(exc)}
    if summary is None:
        return {}
    return {"summary": summary, "counts": {k: summary[k] for k in _COUNTS if k in summary}}


def _cmd_status(args: argparse.Namespace) -> int:
    import time

    rest = args.rest or os.environ.get("ADF_FLINK_REST") or "http://localhost:8081"
    deadline = time.monotonic() + args.wait
    while True:
        try:
            status = job_status(args.job_id, rest)
        except OSError as exc:
            _err(f"cannot read job {args.job_id} from {rest}: {exc}")
            return 2
        if status["state"] in _TERMINAL or time.monotonic() >= deadline:
            break
        time.sleep(1)
    if args.json:
        print(json.dumps(status))
    else:
        print(f"job {status['job_id']} ({status['name']}): {status['state']} after {status['duration_s']} s")
        for op in status["operators"]:
            print(f"  {op['name']}: {op['status']}, {op['elements_in']} elements in, {op['elements_out']} out")
        if status["counts"]:
            print("  " + ", ".join(f"{k} {v}" for k, v in status["counts"].items()))
        if status.get("summary"):
            sm = status["summary"]
            print(f"  {sm['flow']}: {sm['status']}: {sm['records_in']} in, {sm['records_out']} out, "
                  f"{sm['dead_letters']} dead letters; written to {sm['output']}"
                  + (f"; dead letters in {sm['dead_letter_destination']}" if sm.get("dead_letter_destination") else "")
                  + (f" — {sm['error']}" if sm.get("error") else ""))
        if status.get("summary_error"):
            print("  " + status["summary_error"])
        if status.get("error"):
            print(status["error"])
    if status.get("summary", {}).get("status") == "failed":
        return 1
    return {"FINISHED": 0, "FAILED": 1, "CANCELED": 1}.get(status["state"], 3)


def register(sub: Any) -> None:
    flink = sub.add_parser("flink", help="run flows as Apache Flink jobs (PyFlink)")
    fsub = flink.add_subparsers(dest="flink_cmd", required=True)
    run = fsub.add_parser("run", help="run a flow spec on Flink's local mini-cluster")
    run.add_argument("spec")
    run.add_argument("--parallelism", "-p", type=int, default=None)
    run.add_argument("--state-dir", default=None)
    run.add_argument("--json", action="store_true")
    run.set_defaults(func=_cmd_run)
    pkg = fsub.add_parser("package", help="what a Flink cluster needs: job.py, the project zip with the step "
                                          "modules, the resolved spec, requirements, the submit command")
    pkg.add_argument("spec", nargs="+", help="flow spec(s) to package")
    pkg.add_argument("--out", default="build/flink")
    pkg.add_argument("--shared", action="append", default=[], metavar="DIR",
                     help="a directory every TaskManager mounts at the same path (repeatable); local file paths "
                          "of the spec must be under one")
    pkg.add_argument("--python", default=None, help="the Python of the client and the TaskManagers "
                     "(-pyexec/-pyclientexec; default: the one with PyFlink here)")
    pkg.add_argument("--set", action="append", metavar="PATH=VALUE", help="override a value of the spec")
    pkg.add_argument("--requirement", "-r", action="append", default=[],
                     help="a requirement line for the workers (repeatable), e.g. 'SQLAlchemy>=2'")
    pkg.add_argument("--json", action="store_true")
    pkg.set_defaults(func=_cmd_package)
    st = fsub.add_parser("status", help="a job's state and counts from the JobManager's REST API")
    st.add_argument("job_id")
    st.add_argument("--rest", default=None, help="the JobManager's REST URL (default: $ADF_FLINK_REST, "
                    "else http://localhost:8081)")
    st.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait up to this long for the job to end")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_cmd_status)
