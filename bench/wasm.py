"""WASM steps: what calling a WebAssembly module costs next to doing the same in Python.

Measured in one run, each against a baseline measured in the same run:

* **per record**: a trivial memory-ABI function (it returns its input) called once per record
  through a :class:`~active_data_flow.wasm.executor.CallSession` (N small JSON records), against Python
  doing ``json.loads(json.dumps(record))`` per record — the (de)serialisation a step pays
  anyway. Overhead = (wasm - python) / N. For reference, also ``WasmExecutor.call`` per record
  (a fresh store and instance for every call).
* **batched**: one call with all the records in one JSON array, against Python over the same
  array. Overhead per record = (wasm - python) / N.
* **cache hit**: ``ModuleCache.get`` of a compiled module (µs), and ``WasmExecutor.compile`` of
  bytes already in the cache (hash + lookup + ABI check + pre-instantiation).
* **AOT warm load**: ``wasmtime.Module.deserialize_file`` (memory-mapped) of a ~1 MB module's
  serialised form, and the cache's own warm path in a fresh cache: read the file, check its
  CRC-32, ``Module.deserialize`` from memory (ms).
* **cold compile**: compiling that ~1 MB module (many small functions) from bytes (ms), the
  baseline the two above avoid.

Every figure is the best of ``--repeat`` runs. Prints a table; ``--markdown`` prints it for
docs/BENCHMARKS.md.

    python bench/wasm.py
    python bench/wasm.py --records 2000 --batch 1000 --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import wasmtime  # noqa: E402

from active_data_flow.wasm.cache import ModuleCache  # noqa: E402
from active_data_flow.wasm.executor import WasmExecutor, executor_engine_key  # noqa: E402
from active_data_flow.wasm.limits import Limits  # noqa: E402

# Returns its input: alloc hands out one buffer at 1024 (grown as needed), run answers (ptr, len).
IDENTITY_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param $n i32) (result i32)
    (local $pages i32)
    (local.set $pages (i32.sub (i32.shr_u (i32.add (i32.add (local.get $n) (i32.const 1024)) (i32.const 65535))
                                          (i32.const 16))
                               (memory.size)))
    (if (i32.gt_s (local.get $pages) (i32.const 0))
      (then (if (i32.eq (memory.grow (local.get $pages)) (i32.const -1)) (then (return (i32.const 0))))))
    (i32.const 1024))
  (func (export "run") (param $p i32) (param $n i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32)) (i64.extend_i32_u (local.get $n))))
)
"""

TARGETS = {
    "single": 20.0,   # µs per record
    "batched": 3.0,   # µs per record
    "cache_hit": 50.0,  # µs
    "aot_load": 5.0,  # ms
}


def big_module_wat(functions: int) -> str:
    """A module of ``functions`` small arithmetic functions (~200 bytes of code each)."""
    parts = ["(module"]
    body = " ".join(f"(local.set 1 (i32.add (i32.mul (local.get 1) (i32.const {k + 3})) (local.get 0)))"
                    for k in range(24))
    for i in range(functions):
        parts.append(f'(func (export "f{i}") (param i32) (result i32) (local i32) (local.set 1 (i32.const {i})) '
                     f"{body} (i32.xor (local.get 1) (local.get 0)))")
    parts.append(")")
    return "\n".join(parts)


def best(fn: Callable[[], object], repeat: int) -> float:
    """The smallest wall time of ``repeat`` runs of ``fn`` (seconds)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def make_records(n: int) -> list[dict[str, object]]:
    return [{"id": i, "name": f"customer-{i}", "amount": round(i * 1.25, 2), "tags": ["a", "b"], "active": i % 2 == 0}
            for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000, help="records for the per-record run")
    parser.add_argument("--batch", type=int, default=1000, help="records in the batched call")
    parser.add_argument("--functions", type=int, default=3800, help="functions in the ~1 MB module")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    ex = WasmExecutor(cache=ModuleCache(executor_engine_key(), aot_dir=""))
    identity = ex.compile(bytes(wasmtime.wat2wasm(IDENTITY_WAT)), module_id="identity")
    limits = Limits(max_output_bytes=64 << 20)

    # -- per record -------------------------------------------------------------------------------
    records = make_records(args.records)
    loads, dumps = json.loads, json.dumps

    def python_per_record() -> None:
        for r in records:
            loads(dumps(r))

    session = ex.session(identity, limits=limits)
    session.call(records[0])  # instantiate outside the timing

    def wasm_per_record() -> None:
        call = session.call
        for r in records:
            call(r)

    fresh_n = min(500, len(records))

    def wasm_fresh_instances() -> None:
        for r in records[:fresh_n]:
            ex.call(identity, r, limits=limits)

    out = [session.call(r).output for r in records[:3]]
    assert out == records[:3], out
    py_single = best(python_per_record, args.repeat)
    wasm_single = best(wasm_per_record, args.repeat)
    single_overhead_us = (wasm_single - py_single) / len(records) * 1e6
    fresh_us = best(wasm_fresh_instances, args.repeat) / fresh_n * 1e6

    # -- batched ---------------------------------------------------------------------------------
    batch = make_records(args.batch)

    def python_batched() -> None:
        loads(dumps(batch))

    def wasm_batched() -> None:
        session.call(batch)

    assert session.call(batch).output == batch
    py_batch = best(python_batched, args.repeat * 4)
    wasm_batch = best(wasm_batched, args.repeat * 4)
    batched_overhead_us = (wasm_batch - py_batch) / len(batch) * 1e6
    session.close()

    # -- cache hit ------------------------------------------------------------------------------
    hits = 20_000
    cache = ex.cache
    sha = identity.sha256
    assert cache.get(sha) is not None
    cache_hit_us = best(lambda: [cache.get(sha) for _ in range(hits)], args.repeat) / hits * 1e6
    identity_bytes = bytes(wasmtime.wat2wasm(IDENTITY_WAT))
    compiles = 2000
    compile_hit_us = best(lambda: [ex.compile(identity_bytes) for _ in range(compiles)], args.repeat) / compiles * 1e6

    # -- ~1 MB module: cold compile, AOT warm load ----------------------------------------------
    big = bytes(wasmtime.wat2wasm(big_module_wat(args.functions)))
    engine = ex.engine
    t0 = time.perf_counter()
    big_module = wasmtime.Module(engine, big)
    cold_ms = (time.perf_counter() - t0) * 1000  # once: a repeat would measure the same work
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "big.cwasm")
        Path(raw).write_bytes(bytes(big_module.serialize()))
        cwasm_mb = os.path.getsize(raw) / 1e6
        aot_raw_ms = best(lambda: wasmtime.Module.deserialize_file(engine, raw), args.repeat) * 1000

        aot_dir = os.path.join(tmp, "aot")
        ModuleCache(executor_engine_key(), aot_dir=aot_dir).get_or_compile(engine, big)  # writes the file

        def warm_load() -> None:
            fresh = ModuleCache(executor_engine_key(), aot_dir=aot_dir)
            fresh.get_or_compile(engine, big)
            assert fresh.aot_hits == 1 and fresh.compiles == 0

        aot_cache_ms = best(warm_load, args.repeat) * 1000

    rows = [
        ("per record, python json.loads+dumps (baseline)", f"{py_single / len(records) * 1e6:.2f} µs/record", "", ""),
        (f"per record, wasm CallSession.call x{len(records)}", f"{wasm_single / len(records) * 1e6:.2f} µs/record",
         "", ""),
        ("per record overhead (wasm - python)", f"{single_overhead_us:.2f} µs/record", f"≤ {TARGETS['single']:g} µs",
         _ok(single_overhead_us <= TARGETS["single"])),
        ("per record, WasmExecutor.call (a fresh instance per call)", f"{fresh_us:.2f} µs/record", "", ""),
        (f"batched, python over {len(batch)} records (baseline)", f"{py_batch / len(batch) * 1e6:.2f} µs/record",
         "", ""),
        (f"batched, one wasm call with {len(batch)} records", f"{wasm_batch / len(batch) * 1e6:.2f} µs/record", "", ""),
        ("batched overhead (wasm - python)", f"{batched_overhead_us:.2f} µs/record", f"≤ {TARGETS['batched']:g} µs",
         _ok(batched_overhead_us <= TARGETS["batched"])),
        ("cache hit (ModuleCache.get)", f"{cache_hit_us:.2f} µs", f"≤ {TARGETS['cache_hit']:g} µs",
         _ok(cache_hit_us <= TARGETS["cache_hit"])),
        ("compile() of cached bytes (hash + get + ABI check + pre-instantiate)", f"{compile_hit_us:.1f} µs", "", ""),
        (f"cold compile, {len(big) / 1e6:.2f} MB module ({args.functions} functions) (baseline)",
         f"{cold_ms:.0f} ms", "", ""),
        (f"AOT warm load, Module.deserialize_file ({cwasm_mb:.2f} MB .cwasm)", f"{aot_raw_ms:.2f} ms",
         f"≤ {TARGETS['aot_load']:g} ms", _ok(aot_raw_ms <= TARGETS["aot_load"])),
        ("AOT warm load through ModuleCache (read + CRC-32 + deserialize)", f"{aot_cache_ms:.2f} ms",
         f"≤ {TARGETS['aot_load']:g} ms", _ok(aot_cache_ms <= TARGETS["aot_load"])),
        ("cold compile / AOT warm load", f"{cold_ms / aot_cache_ms:.0f}x", "", ""),
    ]
    if args.markdown:
        print("| measurement | result | target | met |")
        print("|---|---:|---:|---|")
        for name, value, target, met in rows:
            print(f"| {name} | {value} | {target} | {met} |")
    else:
        width = max(len(r[0]) for r in rows)
        for name, value, target, met in rows:
            print(f"{name:<{width}}  {value:>16}  {target:>10}  {met}")


def _ok(flag: bool) -> str:
    return "yes" if flag else "NO"


if __name__ == "__main__":
    main()
