"""Rafka source throughput: records/s through a flow ``rafka source -> null sink`` against a raw
redis-py loop doing the same consumer-group work.

One topic with ``--partitions`` partitions (default 2) holds ``--records`` small JSON records
(default 200,000, ~110 bytes each). Every measurement reads all of them with a consumer group
of its own (created at ``0``), in batches of ``--batch`` entries per round trip, and
acknowledges every batch:

* **raw loop** — the baseline: ``r.xreadgroup(group, name, {partition: ">"}, count=…)``, then
  ``json.loads`` of each entry's ``v`` field and ``r.xack`` of the batch's ids, until every
  record is read. One consumer reads both partitions (``count = batch / partitions`` per
  stream, so a round trip moves ``batch`` entries as the flow's does); with two consumers,
  two processes read one partition each. The raw figures are timed inside the consumer
  processes after start-up (the clock starts when the consumers start reading);
* **flow** — ``run_flow`` of ``{source: {type: rafka, bounded: true}, sink: {type: null}}`` with
  ``batch_size = --batch`` at parallelism 1 and 2, timed around the whole ``run_flow`` call
  (enumerator start, reader processes, checkpoints and all; modules are imported before the
  clock starts, as in the raw loop). The ``null`` sink is defined here:
  it counts the records and drops them. The flow acknowledges each batch only after the sink
  wrote it and the engine checkpointed it (at-least-once), as it always does.

Each measurement runs in a fresh interpreter; the best of ``--repeat`` runs is kept. The raw
loop is measured with ``json.loads`` (the baseline) and with orjson; the flow with its codec
(orjson when installed) and with ``ADF_CODEC=json``.

    python bench/rafka.py --records 200000 --markdown
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RAW = """
import json, sys, time
import redis
{imports}
url, group, name, start_at, total = {url!r}, {group!r}, {name!r}, {start_at!r}, {total!r}
keys = {keys!r}
r = redis.Redis.from_url(url)
streams = {{k: ">" for k in keys}}
count = max(1, {batch} // len(keys))
r.ping()
while time.time() < start_at:
    time.sleep(0.001)
t0 = time.time()
n = 0
while n < total:
    reply = r.xreadgroup(group, name, streams, count=count)
    for key, entries in reply:
        ids = []
        for entry_id, fields in entries:
            record = loads(fields[b"v"])
            ids.append(entry_id)
        r.xack(key, group, *ids)
        n += len(entries)
print(t0, time.time(), n)
"""

FLOW = """
import sys, time
sys.path.insert(0, {root!r})
import redis  # imported before the clock starts, as the raw loop does
import active_data_flow.connectors.rafka.source
from active_data_flow.sink import Sink
from active_data_flow.engine import run_flow
from active_data_flow.registry import register

@register("sink", "null")
class NullSink(Sink):
    "Counts the records and drops them."
    type_name = "null"
    count = 0
    def write_batch(self, records):
        NullSink.count += len(records)

spec = {{
    "name": "bench_rafka",
    "source": {{"type": "rafka", "url": {url!r}, "topic": {topic!r}, "group": {group!r}, "bounded": True}},
    "sink": {{"type": "null"}},
    "runtime": {{"batch_size": {batch}, "parallelism": {parallelism}}},
}}
t0 = time.perf_counter()
summary = run_flow(spec, state_dir={state!r}, resume=False)
elapsed = time.perf_counter() - t0
assert summary.status == "success", summary.error
assert summary.records_out == {total}, (summary.records_out, {total})
print(elapsed)
"""


def make_records(n: int) -> list[dict[str, object]]:
    users = [f"user-{i:04d}" for i in range(1000)]
    return [
        {"id": i, "user": users[i % 1000], "amount": round((i * 7919) % 100_000 / 100, 2),
         "ts": 1_700_000_000_000 + i, "tags": ["a", "b"] if i % 3 else ["c"], "ok": i % 5 != 0}
        for i in range(n)
    ]


def run_code(code: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return proc.stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--batch", type=int, default=500, help="entries per round trip (and flow batch_size)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per measurement")
    parser.add_argument("--url", default=os.environ.get("ADF_RAFKA_URL") or "redis://127.0.0.1:6379")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    from active_data_flow.codec import codec
    from active_data_flow.connectors.rafka import Admin, Producer, stream_key

    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = Admin(args.url)
    admin.create_topic(topic, args.partitions)
    keys = [stream_key(topic, p) for p in range(args.partitions)]
    try:
        records = make_records(args.records)
        t0 = time.perf_counter()
        with Producer(args.url) as producer:
            for start in range(0, len(records), 10_000):
                producer.send_batch(topic, records[start : start + 10_000])
        produce_s = time.perf_counter() - t0
        size = sum(len(codec().dumps(r)) for r in records[:1000]) / 1000
        print(f"topic {topic}: {args.records:,} records of ~{size:.0f} bytes over {args.partitions} partitions "
              f"(produced at {args.records / produce_s:,.0f} records/s); batch {args.batch}", file=sys.stderr)
        client = admin.client
        rows: list[tuple[str, float]] = []

        def new_group() -> str:
            group = f"bench-{uuid.uuid4().hex[:8]}"
            for key in keys:
                client.xgroup_create(key, group, "0")
            return group

        def raw(consumers: int, fast: bool) -> float:
            imports = "from orjson import loads" if fast else "from json import loads"
            group = new_group()
            start_at = time.time() + 1.5  # every consumer process is up and connected by then
            shares = [keys[i::consumers] for i in range(consumers)]
            procs = []
            for i, share in enumerate(shares):
                code = RAW.format(imports=imports, url=args.url, group=group, name=f"raw-{i}", start_at=start_at,
                                  keys=share, batch=args.batch, total=_count(client, share))
                procs.append(subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            results = []
            for proc in procs:
                out, err = proc.communicate(timeout=600)
                if proc.returncode != 0:
                    raise RuntimeError(err[-3000:])
                results.append(out.split())
            begin = min(float(r[0]) for r in results)
            end = max(float(r[1]) for r in results)
            assert sum(int(r[2]) for r in results) == args.records
            return end - begin

        def flow(parallelism: int, env: dict[str, str] | None) -> float:
            with tempfile.TemporaryDirectory() as state:
                code = FLOW.format(root=str(ROOT), url=args.url, topic=topic, group=new_group(), batch=args.batch,
                                   parallelism=parallelism, state=state, total=args.records)
                return float(run_code(code, env))

        def measure(label: str, run: object) -> float:
            assert callable(run)
            seconds = min(run() for _ in range(args.repeat))
            rate = args.records / seconds
            rows.append((label, rate))
            print(f"{label:<44} {rate:>12,.0f} records/s  ({seconds:.3f} s)", file=sys.stderr)
            return rate

        std = {"ADF_CODEC": "json"}
        results: dict[str, float] = {}
        for n in (1, 2):
            results[f"raw{n}"] = measure(f"raw redis-py loop, json.loads, {n} consumer(s)", lambda n=n: raw(n, False))
            results[f"rawfast{n}"] = measure(f"raw redis-py loop, orjson, {n} consumer(s)", lambda n=n: raw(n, True))
            results[f"flow{n}"] = measure(f"flow p={n} ({codec().name} codec)", lambda n=n: flow(n, None))
            results[f"flowjson{n}"] = measure(f"flow p={n} (ADF_CODEC=json)", lambda n=n: flow(n, std))
    finally:
        admin.delete_topic(topic)
        admin.close()

    ratios = []
    for n in (1, 2):
        ratios += [
            (f"flow p={n} / raw loop json.loads ({n} consumer(s))", results[f"flow{n}"] / results[f"raw{n}"], 0.8),
            (f"flow p={n} ADF_CODEC=json / raw loop json.loads", results[f"flowjson{n}"] / results[f"raw{n}"], 0.0),
            (f"flow p={n} / raw loop orjson", results[f"flow{n}"] / results[f"rawfast{n}"], 0.0),
        ]
    ratios.append(("flow p=2 / flow p=1", results["flow2"] / results["flow1"], 0.0))
    print()
    for label, ratio, target in ratios:
        verdict = "" if not target else ("  ok" if ratio >= target else f"  BELOW TARGET {target}")
        print(f"{label:<48} {ratio:6.2f}x{verdict}")
    if args.markdown:
        print("\n| measurement | records/s |\n|---|---:|")
        for label, rate in rows:
            print(f"| {label} | {rate:,.0f} |")
        print("\n| ratio | value | target |\n|---|---:|---:|")
        for label, ratio, target in ratios:
            print(f"| {label} | {ratio:.2f}x | {'≥ ' + str(target) + 'x' if target else '—'} |")
    return 0


def _count(client: object, keys: list[str]) -> int:
    return sum(int(client.xlen(k)) for k in keys)  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
