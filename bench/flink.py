"""The engine benchmark's job on Flink (parallelism 1 and 2) against the local runner, same run.

    scripts/flink-setup && .venv/bin/python bench/flink.py [--records 40000]

The job of bench/engine.py: ~1 KB JSON records in a JSONL file (split into byte ranges) →
the python map step of bench/transforms.py → a JSONL file. The local runner runs in this
interpreter's environment; the Flink job with the Flink environment's interpreter
(`.venv-flink`, on the local mini-cluster). Each figure is the wall time of the whole run, in a
fresh process, so Flink's start-up (JVM, mini-cluster, Python workers: several seconds) is
counted — that is what a user of `adf flink run` waits for. A second figure subtracts the
time of the same Flink job over 10 records (start-up and tear-down) to show the steady
throughput. The baseline, same run: the same work as a plain PyFlink job (bench/flink_native.py:
a FileSource of lines → ``map`` → a FileSink; target: the engine's job ≥ 0.8x its throughput).

``--cluster`` runs the same job on a standalone cluster as well (one JobManager and two
TaskManagers of one slot each on loopback, started from the wheel's scripts by
tests/flink_cluster.py, not counted): packaged with ``adf flink package`` and submitted with
``flink run -p N`` exactly as the package's README says; the figure is the wall time of
``flink run`` (client start, submission, the job, the summary). The plain PyFlink job runs on
the same cluster the same way (``flink run -py bench/flink_native.py``), as its baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from engine import make_input  # noqa: E402


def spec(inp: Path, out: Path, name: str) -> dict[str, object]:
    return {"name": name, "python_path": [str(ROOT / "bench")],
            "source": {"type": "file", "path": str(inp), "format": "jsonl", "split_bytes": 4 << 20},
            "steps": [{"type": "python", "function": "transforms:enrich"}],
            "sink": {"type": "file", "path": str(out), "format": "jsonl"},
            "runtime": {"batch_size": 500}}


def local(inp: Path, work: Path, parallelism: int) -> float:
    s = spec(inp, work / f"local-{parallelism}.jsonl", f"bench_local_{parallelism}")
    s["runtime"] = {"batch_size": 500, "parallelism": parallelism}
    code = ("import json, sys, time; from active_data_flow.engine import run_flow; t = time.perf_counter(); "
            f"r = run_flow(json.loads({json.dumps(json.dumps(s))}), state_dir={str(work / 'state')!r}, resume=False); "
            "assert r.status == 'success', r.error; print(time.perf_counter() - t)")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    return time.perf_counter() - t0


def flink(python: str, inp: Path, work: Path, parallelism: int, tag: str) -> float:
    spec_path = work / f"flink-{tag}-{parallelism}.json"
    spec_path.write_text(json.dumps(spec(inp, work / f"flink-{tag}-{parallelism}.jsonl", f"bench_flink_{tag}")))
    t0 = time.perf_counter()
    r = subprocess.run([python, "-m", "active_data_flow.flink_job.job", str(spec_path), "--parallelism", str(parallelism),
                        "--state-dir", str(work / "state"), "--json"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    elapsed = time.perf_counter() - t0
    summary = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
    if summary.get("status") != "success":
        raise RuntimeError(f"flink job failed: {summary or r.stderr[-2000:]}")
    return elapsed


def native(python: str, inp: Path, work: Path, parallelism: int, tag: str) -> float:
    """The same work as a plain PyFlink job (bench/flink_native.py), in a fresh process."""
    out = work / f"native-{tag}-{parallelism}"
    t0 = time.perf_counter()
    r = subprocess.run([python, str(ROOT / "bench" / "flink_native.py"), str(inp), str(out), str(parallelism)],
                       cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(f"the native job failed: {r.stderr[-2000:]}")
    return elapsed


def on_cluster(inp: Path, work: Path, parallelisms: tuple[int, ...]) -> dict[int, float]:
    import shlex

    sys.path.insert(0, str(ROOT / "tests"))
    from flink_cluster import FLINK_PYTHON, FlinkCluster

    out = work / "cluster-out.jsonl"
    spec_path = work / "cluster.json"
    spec_path.write_text(json.dumps(spec(inp, out, "bench_flink_cluster")))
    pkg = work / "pkg"
    r = subprocess.run([sys.executable, "-m", "active_data_flow.cli", "flink", "package", str(spec_path), "--out", str(pkg),
                        "--shared", str(work), "--python", FLINK_PYTHON], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode:
        raise RuntimeError(r.stderr)
    line = next(ln.strip() for ln in (pkg / "README.txt").read_text().splitlines() if ln.strip().startswith("flink run"))
    times: dict[int, tuple[float, float]] = {}
    with FlinkCluster(taskmanagers=2) as cluster:
        for p in parallelisms:
            out.unlink(missing_ok=True)
            t0 = time.perf_counter()
            r = cluster.flink("run", "-p", str(p), *shlex.split(line)[2:], cwd=str(work))
            t_engine = time.perf_counter() - t0
            if r.returncode or " success on Flink " not in r.stdout:
                raise RuntimeError(r.stdout[-2000:] + r.stderr[-2000:])
            # the baseline on the same cluster, submitted the same way
            native_out = work / f"cluster-native-{p}"
            t0 = time.perf_counter()
            r = cluster.flink("run", "-p", str(p), "-py", str(ROOT / "bench" / "flink_native.py"),
                              "-pyexec", FLINK_PYTHON, "-pyclientexec", FLINK_PYTHON,
                              str(inp), str(native_out), str(p), cwd=str(work))
            t_native = time.perf_counter() - t0
            if r.returncode:
                raise RuntimeError(r.stdout[-2000:] + r.stderr[-2000:])
            times[p] = (t_engine, t_native)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=40_000)
    ap.add_argument("--cluster", action="store_true", help="also on a standalone cluster (flink run)")
    args = ap.parse_args()
    from active_data_flow.flink_job.cli import flink_python

    python = flink_python()
    if python is None:
        print("PyFlink is not installed: run scripts/flink-setup", file=sys.stderr)
        return 2
    # not under /tmp: a TaskManager may have a private /tmp (tests/flink_cluster.py)
    with tempfile.TemporaryDirectory(dir="/var/tmp" if args.cluster else None) as tmp:
        work = Path(tmp)
        inp, tiny = work / "in.jsonl", work / "tiny.jsonl"
        size = make_input(inp, args.records)
        make_input(tiny, 10)
        print(f"{args.records} records, {size / 1e6:.1f} MB")
        start = flink(python, tiny, work, 1, "tiny")
        rows = []
        for p in (1, 2):
            t_local = local(inp, work, p)
            t_flink = flink(python, inp, work, p, "full")
            t_native = native(python, inp, work, p, "full")
            steady = t_flink - start if t_flink > start * 1.2 else float("nan")  # too close to tell
            rows.append((p, t_local, t_flink, steady, t_native))
            print(f"parallelism {p}: local {args.records / t_local:,.0f} rec/s ({t_local:.1f} s), "
                  f"flink {args.records / t_flink:,.0f} rec/s ({t_flink:.1f} s; {args.records / steady:,.0f} rec/s "
                  f"without the {start:.1f} s start-up), flink / local = {t_local / t_flink:.2f}x; "
                  f"plain PyFlink {args.records / t_native:,.0f} rec/s ({t_native:.1f} s), "
                  f"the engine's job / plain PyFlink = {t_native / t_flink:.2f}x (target >= 0.8x)")
        print("\n| parallelism | local runner (rec/s) | Flink, whole run (rec/s) | Flink without start-up (rec/s) "
              "| Flink / local | plain PyFlink job (rec/s) | engine's job / plain PyFlink |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for p, t_local, t_flink, steady, t_native in rows:
            print(f"| {p} | {args.records / t_local:,.0f} | {args.records / t_flink:,.0f} | "
                  f"{args.records / steady:,.0f} | {t_local / t_flink:.2f}x | {args.records / t_native:,.0f} | "
                  f"{t_native / t_flink:.2f}x |")
        print(f"\nFlink start-up and tear-down (a 10-record job): {start:.1f} s")
        if args.cluster:
            print("\n| parallelism | standalone cluster: the engine's job (rec/s, wall s) "
                  "| plain PyFlink job (rec/s, wall s) | engine's job / plain PyFlink |")
            print("|---:|---:|---:|---:|")
            for p, (t, t_native) in on_cluster(inp, work, (1, 2)).items():
                print(f"| {p} | {args.records / t:,.0f} ({t:.1f} s) | {args.records / t_native:,.0f} "
                      f"({t_native:.1f} s) | {t_native / t:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
