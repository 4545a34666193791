"""One file, two readers: does ``runtime.parallelism: 2`` make one big JSON Lines file go faster?

One generated JSON Lines file (~1 KB records, as bench/engine.py makes them), the same flow
each time — the file source, a light python step (``transforms:enrich``), a JSON Lines file
sink — run with ``adf run`` at parallelism 1 and 2, each in a fresh interpreter. The file
source has no ``split_bytes``: at parallelism 2 it cuts the file into byte ranges itself.
For reference, hand-written loops doing the same work (read a line, ``json.loads``, enrich,
``json.dumps``, write) in one process and in two processes, each reading half the file (cut
at a line start) into a file of its own.

The machine may be shared: the contenders run interleaved, round after round; each rate is
the median over the rounds and each ratio the median of the ratios within a round. Each output is checked against the one-process loop's (the same lines,
in any order). Prints records/s, the CPU seconds each contender used (processes and their
children: what the second reader costs, whatever else runs on the machine) and the ratios; ``--markdown`` prints the table for
docs/BENCHMARKS.md.

    python bench/parallel.py --size-mb 200 --repeat 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from engine import make_input  # noqa: E402  (bench/engine.py's ~1 KB records)

BYTES_PER_RECORD = 1000  # about what make_input writes; the file's real size is printed

#: one process of the hand loop: the lines of [start, end) of the input, ``start`` a line start
HAND_PART = """
import json, sys
sys.path.insert(0, {bench!r})
from transforms import enrich
start, end = {start}, {end}
encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
with open({src!r}, "rb") as fin, open({dst!r}, "w", encoding="utf-8") as fout:
    fin.seek(start)
    write = fout.write
    pos = start
    for line in fin:
        if pos >= end:
            break
        pos += len(line)
        write(encode(enrich(json.loads(line))) + "\\n")
"""

HAND_LOOP = """
import subprocess, sys, time
parts = {parts!r}
t0 = time.perf_counter()
procs = [subprocess.Popen([sys.executable, "-c", code]) for code in parts]
assert all(p.wait() == 0 for p in procs)
print(time.perf_counter() - t0)
"""


def line_start_at_or_after(path: Path, offset: int) -> int:
    """The first line start at or after ``offset``."""
    if offset <= 0:
        return 0
    with path.open("rb") as f:
        f.seek(offset - 1)
        f.readline()
        return f.tell()


def hand_loop(args: dict[str, object], src: Path, dst: Path, processes: int) -> float:
    """Seconds the hand loop takes with ``processes`` processes (each writes ``dst.<i>``)."""
    size = src.stat().st_size
    cuts = [line_start_at_or_after(src, size * i // processes) for i in range(processes)] + [size]
    parts = [
        textwrap.dedent(HAND_PART).format(**args, start=cuts[i], end=cuts[i + 1], dst=f"{dst}.{i}")
        for i in range(processes)
    ]
    seconds = run_probe([sys.executable, "-c", textwrap.dedent(HAND_LOOP).format(parts=parts)])
    with dst.open("wb") as out:
        for i in range(processes):
            part = Path(f"{dst}.{i}")
            out.write(part.read_bytes())
            part.unlink()
    return seconds


def adf_run(tmp: Path, src: Path, dst: Path, parallelism: int) -> float:
    """Wall-clock seconds of ``adf run`` (a fresh interpreter, its start-up included)."""
    spec = {
        "name": f"bench_parallel_{parallelism}",
        "source": {"type": "file", "path": str(src), "format": "jsonl"},
        "steps": [{"type": "python", "function": "transforms:enrich"}],
        "sink": {"type": "file", "path": str(dst), "format": "jsonl", "mode": "overwrite"},
        "runtime": {"batch_size": 1000, "parallelism": parallelism},
    }
    path = tmp / f"flow{parallelism}.json"
    path.write_text(json.dumps(spec))
    env = {"ADF_CODEC": "json", "PYTHONPATH": os.pathsep.join([str(BENCH), str(ROOT)])}
    t0 = time.perf_counter()
    out = run_cmd(
        [sys.executable, "-m", "active_data_flow.cli", "run", str(path), "--json", "--state-dir", str(tmp / "state")],
        env,
    )
    seconds = time.perf_counter() - t0
    summary = json.loads(out.strip().splitlines()[-1])
    if summary["status"] != "success":
        raise RuntimeError(f"adf run p={parallelism}: {summary.get('error')}")
    if parallelism > 1 and summary["splits"] < parallelism:
        raise RuntimeError(f"adf run p={parallelism}: only {summary['splits']} split(s)")
    return seconds


def children_cpu() -> float:
    """CPU seconds (user + system) of every finished child process so far, their children included."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cmd(cmd: list[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return proc.stdout


def run_probe(cmd: list[str]) -> float:
    return float(run_cmd(cmd).strip().splitlines()[-1])


def digest(path: Path) -> str:
    """The output's lines as a multiset (readers write in any order)."""
    return hashlib.sha256(b"\n".join(sorted(path.read_bytes().splitlines()))).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=200, help="input size in MB (10^6 bytes)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median of each contender is reported")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "in.jsonl"
        records = max(1, args.size_mb * 1_000_000 // BYTES_PER_RECORD)
        size = make_input(src, records)
        print(f"input: {records:,} records, {size / records:.0f} bytes/record, {size / 1e6:.0f} MB; "
              f"{os.cpu_count()} CPUs; {args.repeat} interleaved rounds, medians", file=sys.stderr)
        fmt: dict[str, object] = {"bench": str(BENCH), "src": str(src)}
        dst = tmp / "out.jsonl"
        contenders = {
            "hand loop, 1 process": lambda: hand_loop(fmt, src, dst, 1),
            "hand loop, 2 processes": lambda: hand_loop(fmt, src, dst, 2),
            "adf run, parallelism 1": lambda: adf_run(tmp, src, dst, 1),
            "adf run, parallelism 2": lambda: adf_run(tmp, src, dst, 2),
        }
        times: dict[str, list[float]] = {label: [] for label in contenders}
        cpu: dict[str, list[float]] = {label: [] for label in contenders}
        reference: str | None = None
        for round_no in range(args.repeat):
            for label, measure in contenders.items():
                cpu_before = children_cpu()
                seconds = measure()
                cpu[label].append(children_cpu() - cpu_before)
                found = digest(dst)
                reference = reference or found
                if found != reference:
                    raise SystemExit(f"{label}: the output differs from the one-process hand loop's")
                dst.unlink()
                times[label].append(seconds)
                print(f"round {round_no + 1}: {label:<26} {records / seconds:>10,.0f} records/s ({seconds:.2f} s, "
                      f"{cpu[label][-1]:.2f} CPU s)", file=sys.stderr)

    rate = {label: records / statistics.median(t) for label, t in times.items()}
    # CPU seconds do not depend on how busy the machine is: the work parallelism adds, if any
    work = {label: statistics.median(c) for label, c in cpu.items()}

    def speed_ratio(a: str, b: str) -> float:
        """Median over the rounds of a's speed / b's in the same round (paired: the load of a
        shared machine changes from round to round, less within one)."""
        return statistics.median(tb / ta for ta, tb in zip(times[a], times[b], strict=True))

    ratios = [
        ("adf p=2 / adf p=1", speed_ratio("adf run, parallelism 2", "adf run, parallelism 1"), 1.7),
        ("hand 2 processes / hand 1 process", speed_ratio("hand loop, 2 processes", "hand loop, 1 process"), 0.0),
        ("adf p=2 / hand 2 processes", speed_ratio("adf run, parallelism 2", "hand loop, 2 processes"), 0.0),
        ("adf p=1 / hand 1 process", speed_ratio("adf run, parallelism 1", "hand loop, 1 process"), 0.0),
        ("CPU s adf p=2 / adf p=1", work["adf run, parallelism 2"] / work["adf run, parallelism 1"], 0.0),
    ]
    print()
    for label, r in rate.items():
        print(f"{label:<36} {r:>12,.0f} records/s, {work[label]:6.2f} CPU s (medians of {args.repeat})")
    for label, ratio, target in ratios:
        verdict = "" if not target else ("  ok" if ratio >= target else f"  BELOW TARGET {target}")
        print(f"{label:<36} {ratio:6.2f}x{verdict}")
    if args.markdown:
        print(f"\n{size / 1e6:.0f} MB, {records:,} records, median of {args.repeat} interleaved rounds\n")
        print("| measurement | records/s | CPU s |\n|---|---:|---:|")
        for label, r in rate.items():
            print(f"| {label} | {r:,.0f} | {work[label]:.2f} |")
        print("\n| ratio | value | target |\n|---|---:|---:|")
        for label, ratio, target in ratios:
            print(f"| {label} | {ratio:.2f}x | {'≥ ' + str(target) + 'x' if target else '—'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
