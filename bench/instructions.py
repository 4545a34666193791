"""Instructions, not seconds: ``adf run`` against a hand-written loop, counted by callgrind.

The job is bench/engine.py's: JSONL file -> python map step (``transforms:enrich``) -> JSONL
file, ~1 KB records. Both contenders run as users run them, in a fresh interpreter each: the
real console entry ``adf run spec.yaml`` and a hand-written ``for line in file`` loop, with
the standard ``json`` module (``ADF_CODEC=json``) and with orjson (the ``fast`` extra) when it
is installed. ``valgrind --tool=callgrind`` counts the instructions each process executes
(children included), which does not depend on how busy the machine is:

* start-up: the instructions of a run over a one-record input;
* per record: ``(I(N2) - I(N1)) / (N2 - N1)`` over two input sizes (``--small``, ``--large``).

Before counting, every command runs once without valgrind (which also compiles the bytecode
caches) and the outputs are compared: ``adf`` must write the same lines as the hand loop.
Prints the counts and the ratios against their targets (start-up <= 1.5x the hand loop's,
per record <= 1.05x with orjson and <= 1.01x with json) and exits 1 when a target is missed;
``--markdown`` also prints a table for docs/BENCHMARKS.md.

    python bench/instructions.py --small 2000 --large 12000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import string
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

HAND_LOOP = """
import json, sys
sys.path.insert(0, {bench!r})
from transforms import enrich
encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # built once, as a careful loop would
with open(sys.argv[1], "rb") as fin, open(sys.argv[2], "w", encoding="utf-8") as fout:
    write = fout.write
    for line in fin:
        write(encode(enrich(json.loads(line))) + "\\n")
"""

HAND_LOOP_ORJSON = """
import orjson, sys
sys.path.insert(0, {bench!r})
from transforms import enrich
with open(sys.argv[1], "rb") as fin, open(sys.argv[2], "wb") as fout:
    write = fout.write
    for line in fin:
        write(orjson.dumps(enrich(orjson.loads(line))) + b"\\n")
"""

SPEC = """
name: bench_instructions
source: {{type: file, path: {src}, format: jsonl}}
steps:
  - {{type: python, function: "transforms:enrich"}}
sink: {{type: file, path: {dst}, format: jsonl}}
runtime: {{parallelism: 1}}
"""

COLLECTED = re.compile(r"^==\d+== Collected : (\d+)$", re.MULTILINE)

#: (label, limit): the ratios this benchmark holds the engine to
TARGETS = {"start-up": 1.5, "per record, orjson": 1.05, "per record, json": 1.01}


def make_input(path: Path, records: int) -> None:
    """``records`` JSON lines of ~1 KB each, the same generator as bench/engine.py's."""
    rnd = random.Random(42)
    words = ["".join(rnd.choices(string.ascii_lowercase, k=8)) for _ in range(500)]
    with path.open("w", encoding="utf-8") as f:
        for i in range(records):
            rec = {
                "id": i,
                "customer": rnd.choice(words),
                "price": round(rnd.uniform(1, 500), 2),
                "quantity": rnd.randint(1, 20),
                "tags": rnd.sample(words, 8),
                "note": " ".join(rnd.choices(words, k=92)),
            }
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")


def _env(codec: str, pycache: Path) -> dict[str, str]:
    """The contenders' environment: a fixed hash seed, bytecode caches as users have them (kept in
    ``pycache``, written by the warm-up runs), ``ADF_CODEC=json`` for the standard library's codec."""
    path = os.pathsep.join(p for p in (str(BENCH), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": path, "PYTHONPYCACHEPREFIX": str(pycache)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if codec == "json":
        env["ADF_CODEC"] = "json"
    else:
        env.pop("ADF_CODEC", None)
    return env


def _run(cmd: Sequence[str], codec: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env=_env(codec, cwd.parent / "pycache"), cwd=cwd)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return proc


def instructions(cmd: Sequence[str], codec: str, cwd: Path) -> int:
    """The instructions ``cmd`` executes, its child processes included, counted by callgrind."""
    proc = _run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", "--trace-children=yes", *cmd],
                codec, cwd)
    counts = [int(n) for n in COLLECTED.findall(proc.stderr)]
    if not counts:
        raise SystemExit(f"no instruction count in callgrind's summary:\n{proc.stderr[-3000:]}")
    return sum(counts)


def _digest(path: Path) -> str:
    return hashlib.sha256(b"".join(sorted(path.read_bytes().splitlines()))).hexdigest()


class Job:
    """The two contenders' command lines for one input size and codec."""

    def __init__(self, tmp: Path, records: int, codec: str) -> None:
        self.tmp, self.records, self.codec = tmp, records, codec
        self.src = tmp / f"in-{records}.jsonl"
        self.work = tmp / f"{codec}-{records}"
        self.work.mkdir()
        spec = self.work / "spec.yaml"
        spec.write_text(SPEC.format(src=json.dumps(str(self.src)), dst=json.dumps(str(self.work / "adf.jsonl"))))
        adf = Path(sys.executable).parent / "adf"
        self.adf = [str(adf), "run", str(spec), "--fresh", "--no-progress", "--json",
                    "--state-dir", str(self.work / "state")]
        script = tmp / f"hand-{codec}.py"
        self.hand = [sys.executable, str(script), str(self.src), str(self.work / "hand.jsonl")]

    def check(self) -> None:
        """Runs both once (warming the bytecode caches) and checks that they wrote the same lines."""
        _run(self.hand, self.codec, self.work)
        out = _run(self.adf, self.codec, self.work).stdout.strip().splitlines()[-1]
        summary = json.loads(out)
        if summary["status"] != "success" or summary["records_out"] != self.records:
            raise SystemExit(f"adf run did not write {self.records} records: {out}")
        if _digest(self.work / "adf.jsonl") != _digest(self.work / "hand.jsonl"):
            raise SystemExit(f"{self.codec}, {self.records} records: adf's output differs from the hand loop's")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=2_000, help="N1 records")
    parser.add_argument("--large", type=int, default=12_000, help="N2 records")
    parser.add_argument("--jobs", type=int, default=2, help="callgrind runs at a time")
    parser.add_argument("--codec", choices=("json", "orjson", "both"), default="both")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    codecs = ["json", "orjson"] if args.codec == "both" else [args.codec]
    if "orjson" in codecs:
        try:
            import orjson  # noqa: F401
        except ImportError:
            print("orjson not installed: measuring the standard json module only", file=sys.stderr)
            codecs.remove("orjson")
    sizes = (1, args.small, args.large)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for n in sizes:
            make_input(tmp / f"in-{n}.jsonl", n)
        for codec, code in (("json", HAND_LOOP), ("orjson", HAND_LOOP_ORJSON)):
            (tmp / f"hand-{codec}.py").write_text(textwrap.dedent(code.format(bench=str(BENCH))))
        jobs = {(codec, n): Job(tmp, n, codec) for codec in codecs for n in sizes}
        for job in jobs.values():
            job.check()
        runs = [(key, side) for key in jobs for side in ("hand", "adf")]
        with ThreadPoolExecutor(max(args.jobs, 1)) as pool:
            counted = list(pool.map(lambda r: instructions(getattr(jobs[r[0]], r[1]), r[0][0], jobs[r[0]].work), runs))
        count = dict(zip(runs, counted, strict=True))

    rows: list[tuple[str, int, int]] = []  # (measurement, hand, adf)
    ratios: list[tuple[str, float, float]] = []
    for codec in codecs:
        start = {side: count[((codec, 1), side)] for side in ("hand", "adf")}
        per = {side: (count[((codec, args.large), side)] - count[((codec, args.small), side)]) / (args.large - args.small)
               for side in ("hand", "adf")}
        rows.append((f"start-up (1 record), {codec}", start["hand"], start["adf"]))
        rows.append((f"per record, {codec}", round(per["hand"]), round(per["adf"])))
        ratios.append((f"start-up, {codec}", start["adf"] / start["hand"], TARGETS["start-up"]))
        ratios.append((f"per record, {codec}", per["adf"] / per["hand"], TARGETS[f"per record, {codec}"]))

    print(f"{'instructions':<32} {'hand loop':>14} {'adf run':>14}")
    for label, hand, adf in rows:
        print(f"{label:<32} {hand:>14,} {adf:>14,}")
    print()
    missed = 0
    for label, ratio, target in ratios:
        ok = ratio <= target
        missed += not ok
        print(f"{'adf / hand loop, ' + label:<44} {ratio:6.3f}x  {'ok' if ok else 'ABOVE TARGET'} (<= {target}x)")
    if args.markdown:
        print(f"\n{args.small:,} and {args.large:,} records for the per-record cost.\n")
        print("| instructions | hand loop | `adf run` | adf / hand | target |\n|---|---:|---:|---:|---:|")
        for (label, hand, adf), (_, ratio, target) in zip(rows, ratios, strict=True):
            print(f"| {label} | {hand:,} | {adf:,} | {ratio:.3f}x | ≤ {target}x |")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
