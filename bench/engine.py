"""Engine throughput: JSONL file -> python map step -> JSONL file, ~1 KB records.

Compares, in the same run and on the same input file:

* a hand-written loop (read line, ``json.loads``, transform, ``json.dumps``, write) — the
  baseline — and the engine at parallelism 1 and 2, with the standard ``json`` module;
* the same with orjson (the ``fast`` extra) when it is installed;
* Bytewax on the same job when it is installed.

Each measurement runs in a fresh interpreter. Prints records/s and the ratios; with
``--markdown`` prints a table for docs/BENCHMARKS.md.

    python bench/engine.py --records 400000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import string
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HAND_LOOP = """
import json, sys, time
sys.path.insert(0, {bench!r})
from transforms import enrich
t0 = time.perf_counter()
encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # built once, as a careful loop would
with open({src!r}, "rb") as fin, open({dst!r}, "w", encoding="utf-8") as fout:
    write = fout.write
    for line in fin:
        write(encode(enrich(json.loads(line))) + "\\n")
print(time.perf_counter() - t0)
"""

HAND_LOOP_ORJSON = """
import orjson, sys, time
sys.path.insert(0, {bench!r})
from transforms import enrich
t0 = time.perf_counter()
with open({src!r}, "rb") as fin, open({dst!r}, "wb") as fout:
    write = fout.write
    for line in fin:
        write(orjson.dumps(enrich(orjson.loads(line))) + b"\\n")
print(time.perf_counter() - t0)
"""

ENGINE = """
import sys, time
sys.path.insert(0, {bench!r}); sys.path.insert(0, {root!r})
from active_data_flow.engine import run_flow
spec = {{
    "name": "bench_engine",
    "source": {{"type": "file", "path": {src!r}, "format": "jsonl", "split_bytes": {split_bytes}}},
    "steps": [{{"type": "python", "function": "transforms:enrich"}}],
    "sink": {{"type": "file", "path": {dst!r}, "format": "jsonl"}},
    "runtime": {{"batch_size": 1000, "parallelism": {parallelism}}},
}}
t0 = time.perf_counter()
summary = run_flow(spec, state_dir={state!r}, resume=False)
elapsed = time.perf_counter() - t0
assert summary.status == "success", summary.error
assert summary.records_out == {records}, summary
print(elapsed)
"""

BYTEWAX = """
import sys, time, json
sys.path.insert(0, {bench!r})
from transforms import enrich
import bytewax.operators as op
from bytewax.connectors.files import FileSource, FileSink
from bytewax.dataflow import Dataflow
from bytewax.testing import run_main
flow = Dataflow("bench")
lines = op.input("in", flow, FileSource({src!r}))
# FileSink is partitioned by key: one key, one output file, as the other contenders write
encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
out = op.map("map", lines, lambda line: ("0", encode(enrich(json.loads(line)))))
op.output("out", out, FileSink({dst!r}))
t0 = time.perf_counter()
run_main(flow)
print(time.perf_counter() - t0)
"""


def make_input(path: Path, records: int) -> int:
    rnd = random.Random(42)
    words = ["".join(rnd.choices(string.ascii_lowercase, k=8)) for _ in range(500)]
    size = 0
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
            line = json.dumps(rec, separators=(",", ":")) + "\n"
            size += len(line)
            f.write(line)
    return size


def run_probe(code: str, env: dict[str, str] | None = None) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return float(proc.stdout.strip().splitlines()[-1])


def best_of(repeat: int, code: str, env: dict[str, str] | None = None) -> float:
    return min(run_probe(code, env) for _ in range(repeat))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per measurement")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "in.jsonl"
        size = make_input(src, args.records)
        print(f"input: {args.records:,} records, {size / args.records:.0f} bytes/record, {size / 1e6:.0f} MB", file=sys.stderr)
        fmt = {"bench": str(ROOT / "bench"), "root": str(ROOT), "src": str(src), "records": args.records,
               "state": str(tmp / "state"), "split_bytes": max(size // 8, 1 << 20)}
        rows: list[tuple[str, float]] = []

        digests: dict[str, str] = {}

        def measure(label: str, code: str, env: dict[str, str] | None = None, **extra: object) -> float:
            dst = tmp / "out.jsonl"
            seconds = best_of(args.repeat, code.format(**fmt, dst=str(dst), **extra), env)
            rate = args.records / seconds
            rows.append((label, rate))
            print(f"{label:<40} {rate:>12,.0f} records/s  ({seconds:.2f} s)", file=sys.stderr)
            # same work, same bytes: the output (as a multiset of lines) must match the baseline's
            digests[label] = hashlib.sha256(b"".join(sorted(dst.read_bytes().splitlines()))).hexdigest()
            dst.unlink(missing_ok=True)
            return rate

        std = {"ADF_CODEC": "json"}
        hand = measure("hand loop, json", HAND_LOOP)
        p1 = measure("engine p=1, json", ENGINE, std, parallelism=1)
        p2 = measure("engine p=2, json", ENGINE, std, parallelism=2)
        for label in ("engine p=1, json", "engine p=2, json"):
            if digests[label] != digests["hand loop, json"]:
                raise SystemExit(f"{label}: output differs from the hand loop's")
        ratios = [
            ("engine p=1 / hand loop (json)", p1 / hand, 0.95),
            ("engine p=2 / engine p=1 (json)", p2 / p1, 1.7),
        ]
        try:
            import orjson  # noqa: F401

            hand_fast = measure("hand loop, orjson", HAND_LOOP_ORJSON)
            f1 = measure("engine p=1, orjson", ENGINE, parallelism=1)
            f2 = measure("engine p=2, orjson", ENGINE, parallelism=2)
            for label in ("engine p=1, orjson", "engine p=2, orjson"):
                if digests[label] != digests["hand loop, orjson"]:
                    raise SystemExit(f"{label}: output differs from the hand loop's")
            ratios += [
                ("engine p=1 / hand loop (orjson)", f1 / hand_fast, 0.8),
                ("engine p=2 / engine p=1 (orjson)", f2 / f1, 1.7),
            ]
        except ImportError:
            print("orjson not installed: skipping the fast-codec comparison", file=sys.stderr)
        try:
            import bytewax  # noqa: F401

            bw = measure("bytewax, json", BYTEWAX)
            ratios.append(("bytewax / hand loop (json)", bw / hand, 0.0))
        except ImportError:
            print("bytewax not installed: not compared", file=sys.stderr)

    print()
    for label, ratio, target in ratios:
        verdict = "" if not target else ("  ok" if ratio >= target else f"  BELOW TARGET {target}")
        print(f"{label:<40} {ratio:6.2f}x{verdict}")
    if args.markdown:
        print("\n| measurement | records/s |\n|---|---:|")
        for label, rate in rows:
            print(f"| {label} | {rate:,.0f} |")
        print("\n| ratio | value | target |\n|---|---:|---:|")
        for label, ratio, target in ratios:
            print(f"| {label} | {ratio:.2f}x | {'≥ ' + str(target) + 'x' if target else '—'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
