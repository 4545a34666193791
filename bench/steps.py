"""Per-record I/O steps: the ``http`` step (and the ``sql`` step) with ``concurrency``.

The ``http`` part serves a local threaded HTTP/1.1 server from this process; each answer is
delayed by ``--delay-ms`` (5 ms: a real API's latency) and carries a small JSON body. The
flow is a JSONL file → ``http`` step (``GET /items/${record.id}``, the answer under ``api``)
→ JSONL file. In the same run, interleaved, each in a fresh interpreter:

* **today**, by hand: one record at a time, a new connection per request (``urllib``) — the
  baseline, what the step did before it kept connections alive;
* the engine (``run_flow``, what ``adf run`` runs) with ``concurrency`` 1, 4, 8 and 16;
* **ceiling**, by hand: a ``ThreadPoolExecutor`` of 8 threads, each with its own kept-alive
  ``http.client`` connection.

The ``sql`` part (``--sql``, needs PostgreSQL on 127.0.0.1:5432 and the ``postgres`` extra)
does the same with a primary-key lookup per record: by hand with one SQLAlchemy engine, one
statement after another (what the step did), the engine at ``concurrency`` 1, 4 and 8, and a
hand-written pool of 8 psycopg connections.

Every output is checked (each record carries its own answer, in input order). Prints the
median records/s of ``--repeat`` rounds and the ratios against the baseline; ``--markdown``
prints the tables for docs/BENCHMARKS.md.

    python bench/steps.py --records 1000 --repeat 3 [--sql] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"

HTTP_TODAY = """
import json, time, urllib.request
t0 = time.perf_counter()
with open({src!r}, "rb") as fin, open({dst!r}, "w") as fout:
    for line in fin:
        record = json.loads(line)
        with urllib.request.urlopen({base!r} + "/items/" + str(record["id"]), timeout=10) as resp:
            record["api"] = json.loads(resp.read())
        fout.write(json.dumps(record) + "\\n")
print(time.perf_counter() - t0)
"""

HTTP_CEILING = """
import http.client, json, threading, time
from concurrent.futures import ThreadPoolExecutor
local = threading.local()

def fetch(record):
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = local.conn = http.client.HTTPConnection("127.0.0.1", {port}, timeout=10)
    conn.request("GET", "/items/" + str(record["id"]))
    resp = conn.getresponse()
    record["api"] = json.loads(resp.read())
    return record

t0 = time.perf_counter()
with open({src!r}, "rb") as fin, open({dst!r}, "w") as fout, ThreadPoolExecutor(8) as pool:
    records = [json.loads(line) for line in fin]
    for record in pool.map(fetch, records):
        fout.write(json.dumps(record) + "\\n")
print(time.perf_counter() - t0)
"""

ENGINE = """
import sys, time
sys.path.insert(0, {root!r})
from active_data_flow.engine import run_flow
{preload}
spec = {{
    "name": "bench_steps",
    "source": {{"type": "file", "path": {src!r}, "format": "jsonl"}},
    "steps": [{step}],
    "sink": {{"type": "file", "path": {dst!r}, "format": "jsonl"}},
    "runtime": {{"batch_size": 500}},
}}
t0 = time.perf_counter()
summary = run_flow(spec, state_dir={state!r}, resume=False)
elapsed = time.perf_counter() - t0
assert summary.status == "success" and summary.dead_letters == 0, summary
assert summary.records_out == {records}, summary
print(elapsed)
"""

SQL_TODAY = """
import json, time, sqlalchemy
engine = sqlalchemy.create_engine({url!r}, pool_pre_ping=True)
query = sqlalchemy.text('select v from "{table}" where id = :id')
t0 = time.perf_counter()
with open({src!r}, "rb") as fin, open({dst!r}, "w") as fout:
    for line in fin:
        record = json.loads(line)
        with engine.begin() as conn:
            row = conn.execute(query, {{"id": record["id"]}}).fetchone()
        record["row"] = {{"v": row[0]}}
        fout.write(json.dumps(record) + "\\n")
print(time.perf_counter() - t0)
"""

SQL_CEILING = """
import json, threading, time, psycopg
from concurrent.futures import ThreadPoolExecutor
local = threading.local()

def lookup(record):
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = local.conn = psycopg.connect({dsn!r}, autocommit=True)
    row = conn.execute('select v from "{table}" where id = %s', (record["id"],)).fetchone()
    record["row"] = {{"v": row[0]}}
    return record

t0 = time.perf_counter()
with open({src!r}, "rb") as fin, open({dst!r}, "w") as fout, ThreadPoolExecutor(8) as pool:
    records = [json.loads(line) for line in fin]
    for record in pool.map(lookup, records):
        fout.write(json.dumps(record) + "\\n")
print(time.perf_counter() - t0)
"""


def serve(delay_s: float) -> ThreadingHTTPServer:
    """A threaded HTTP/1.1 server answering ``GET /items/<id>`` with ``{"id": <id>, …}`` after ``delay_s``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            # as production servers (nginx, uvicorn, Go's net/http) do: otherwise the body, written
            # after the headers, waits for the client's delayed ACK on a kept-alive connection
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self) -> None:
            time.sleep(delay_s)
            raw = json.dumps({"id": self.path.rsplit("/", 1)[-1], "price": 9.5, "currency": "EUR"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.request_queue_size = 128
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_probe(code: str) -> float:
    """Seconds a snippet reports, run in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=dict(os.environ), cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return float(proc.stdout.strip().splitlines()[-1])


def check_output(dst: Path, records: int, answered: Callable[[dict[str, Any]], bool]) -> None:
    """Every record is there, in input order, with its own answer."""
    rows = [json.loads(line) for line in dst.read_text().splitlines()]
    if [r["id"] for r in rows] != list(range(records)):
        raise SystemExit(f"{dst}: records missing or out of order")
    wrong = [r for r in rows if not answered(r)]
    if wrong:
        raise SystemExit(f"{dst}: record {wrong[0]['id']} has another record's answer: {wrong[0]!r}")


def measure_rounds(contenders: list[tuple[str, str, dict[str, str]]], fmt: dict[str, Any], tmp: Path, repeat: int,
                   check: Callable[[Path], None]) -> dict[str, float]:
    """Median records/s of each contender over ``repeat`` interleaved rounds."""
    times: dict[str, list[float]] = {label: [] for label, _, _ in contenders}
    for _ in range(repeat):
        for label, code, extra in contenders:
            dst = tmp / "out.jsonl"
            state = tmp / f"state-{len(times[label])}-{abs(hash(label))}"
            times[label].append(run_probe(code.format(**fmt, **extra, dst=str(dst), state=str(state))))
            check(dst)
            dst.unlink()
    rates = {label: fmt["records"] / statistics.median(seconds) for label, seconds in times.items()}
    for label, rate in rates.items():
        spread = ", ".join(f"{fmt['records'] / s:,.0f}" for s in times[label])
        print(f"{label:<44} {rate:>10,.0f} records/s  (rounds: {spread})", file=sys.stderr)
    return rates


def http_part(tmp: Path, src: Path, records: int, repeat: int, delay_ms: float) -> tuple[dict[str, float], str]:
    server = serve(delay_ms / 1000)
    port = server.server_address[1]
    base = f"http://127.0.0.1:{port}"
    fmt = {"root": str(ROOT), "src": str(src), "records": records, "base": base, "port": port}

    def step(concurrency: int) -> str:
        return repr({"type": "http", "url": base + "/items/${record.id}", "into": "api", "concurrency": concurrency})

    contenders = [("http: today (serial, new connection each)", HTTP_TODAY, {})]
    # as the hand loops, the engine's probe imports what it talks with before its clock starts
    preload = "import active_data_flow.steps_io"
    contenders += [(f"http: engine, concurrency {n}", ENGINE, {"step": step(n), "preload": preload})
                   for n in (1, 4, 8, 16)]
    contenders.append(("http: hand pool of 8, kept alive (ceiling)", HTTP_CEILING, {}))
    try:
        rates = measure_rounds(contenders, fmt, tmp, repeat,
                               lambda dst: check_output(dst, records, lambda r: r["api"]["id"] == str(r["id"])))
    finally:
        server.shutdown()
        server.server_close()
    return rates, contenders[0][0]


def sql_part(tmp: Path, src: Path, records: int, repeat: int) -> tuple[dict[str, float], str]:
    import psycopg

    table = f"bench_lookup_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'create table "{table}" (id integer primary key, v text)')
        conn.execute(f"insert into \"{table}\" select g, 'v' || g from generate_series(0, {records - 1}) g")
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    fmt = {"root": str(ROOT), "src": str(src), "records": records, "url": url, "dsn": PG_ADMIN, "table": table}

    def step(concurrency: int) -> str:
        return repr({"type": "sql", "url": url, "query": f'select v from "{table}" where id = :id',
                     "params": {"id": "${record.id}"}, "into": "row", "one": True, "concurrency": concurrency})

    contenders = [("sql: today (serial, one engine)", SQL_TODAY, {})]
    preload = "import active_data_flow.steps_io, sqlalchemy, psycopg"
    contenders += [(f"sql: engine, concurrency {n}", ENGINE, {"step": step(n), "preload": preload})
                   for n in (1, 4, 8)]
    contenders.append(("sql: hand pool of 8 psycopg connections (ceiling)", SQL_CEILING, {}))
    try:
        rates = measure_rounds(contenders, fmt, tmp, repeat,
                               lambda dst: check_output(dst, records, lambda r: r["row"] == {"v": f"v{r['id']}"}))
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'drop table if exists "{table}"')
    return rates, contenders[0][0]


def report(rates: dict[str, float], baseline: str, markdown: bool, targets: dict[str, float]) -> None:
    print()
    base = rates[baseline]
    for label, rate in rates.items():
        target = targets.get(label)
        verdict = "" if target is None else ("  ok" if rate / base >= target else f"  BELOW TARGET {target}x")
        print(f"{label:<52} {rate:>10,.0f} records/s  {rate / base:6.2f}x{verdict}")
    if markdown:
        print("\n| measurement | records/s | vs. today | target |\n|---|---:|---:|---:|")
        for label, rate in rates.items():
            target = targets.get(label)
            print(f"| {label} | {rate:,.0f} | {rate / base:.2f}x | {'≥ ' + str(target) + 'x' if target else '—'} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="the server's delay per answer")
    parser.add_argument("--sql", action="store_true", help="also the sql step against PostgreSQL")
    parser.add_argument("--sql-records", type=int, default=5000)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "in.jsonl"
        src.write_text("".join(json.dumps({"id": i, "sku": f"sku-{i % 97}", "qty": i % 7 + 1}) + "\n"
                               for i in range(args.records)))
        print(f"{args.records:,} records, server delay {args.delay_ms} ms, {args.repeat} rounds", file=sys.stderr)
        rates, baseline = http_part(tmp, src, args.records, args.repeat, args.delay_ms)
        report(rates, baseline, args.markdown, {"http: engine, concurrency 8": 5.0})
        if args.sql:
            src.write_text("".join(json.dumps({"id": i, "sku": f"sku-{i % 97}"}) + "\n" for i in range(args.sql_records)))
            print(f"{args.sql_records:,} records, primary-key lookups in PostgreSQL", file=sys.stderr)
            rates, baseline = sql_part(tmp, src, args.sql_records, args.repeat)
            report(rates, baseline, args.markdown, {})
    return 0


if __name__ == "__main__":
    sys.exit(main())
