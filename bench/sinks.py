"""Sink throughput: ``adf run`` against a hand-written loop with the same driver, per sink.

Every measurement runs in a fresh interpreter on the same input (CSV rows ``id, name,
amount, qty, city`` for the SQL sinks, the same records as JSON Lines for the file and cache sinks),
with the same batch size (``--batch-size``, 1000). The engine's time is ``run_flow`` from
start to end (source, engine, sink start-up included); a hand loop's time starts after its
imports and includes reading and parsing the input. The hand loops:

* file (JSONL): ``json.loads`` per line, ``json.dumps`` per record, one write per line;
* SQLite insert / upsert: ``csv.reader`` rows as tuples, ``executemany`` of one prepared
  ``INSERT`` (``… ON CONFLICT (id) DO UPDATE``) per batch, one transaction per batch;
* PostgreSQL insert / upsert, with psycopg 3, two loops and the better one is the baseline:
  ``executemany`` per batch, and ``COPY`` per batch (straight into the table to insert; into a
  temporary staging table followed by one ``INSERT … SELECT … ON CONFLICT`` to upsert);
* Redis ``cache`` sink: a redis-py pipeline of ``SET key json`` per batch (keys under
  ``adf_bench_sink:``, removed before each measurement);
* Rafka sink (a topic of ``RAFKA_PARTITIONS`` partitions, round-robin): a redis-py pipeline of
  ``XADD rafka:<topic>:<partition> * v json`` per batch, into the same streams;
* Iceberg sink (``append``, a local warehouse with pyiceberg's SQL catalog on SQLite): one
  ``table.append`` of a pyarrow table per batch, the table created from the first batch.

The JSON loops use orjson when it is installed (as the engine's codec does), else ``json``.

Before each measurement the target table is dropped and created again with the same DDL, so
every contender writes into the same empty table. Each measurement is repeated
(``--repeat``, 3) with the contenders interleaved; the median is reported, and each ratio is
``adf run`` over the best hand loop. The SQL rows also run ``adf run`` with the sink's fast
writer switched off (every batch through SQLAlchemy Core, the path other drivers take). ``--markdown`` prints the table for docs/BENCHMARKS.md.

    python bench/sinks.py --records 100000 --markdown
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("ADF_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("ADF_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_PREFIX = "adf_bench_sink:"
RAFKA_TOPIC = "adf_bench_sink"
RAFKA_PARTITIONS = 4
ICEBERG_TABLE = "bench.sink"
SLOW = "adf run, SQLAlchemy path"
TABLE = "adf_bench_sink"
COLUMNS = ("id", "name", "amount", "qty", "city")
DDL = {
    "sqlite": f"CREATE TABLE {TABLE} (id BIGINT PRIMARY KEY, name TEXT, amount DOUBLE, qty BIGINT, city TEXT)",
    "postgresql": f"CREATE TABLE {TABLE} (id BIGINT PRIMARY KEY, name TEXT, amount DOUBLE PRECISION, qty BIGINT, city TEXT)",
}

ENGINE = """
import sys, time
sys.path.insert(0, {root!r})
from active_data_flow.engine import run_flow
spec = {{
    "name": "bench_sinks",
    "source": {{"type": "file", "path": {src!r}, "format": {fmt!r}}},
    "sink": {sink!r},
    "runtime": {{"batch_size": {batch}, "parallelism": 1}},
}}
t0 = time.perf_counter()
summary = run_flow(spec, state_dir={state!r}, resume=False)
elapsed = time.perf_counter() - t0
assert summary.status == "success", summary.error
assert summary.records_out == {records}, summary
print(elapsed)
"""

#: the same run with the sql sink's fast writer switched off: every batch through SQLAlchemy Core
ENGINE_SQLALCHEMY = ENGINE.replace(
    "from active_data_flow.engine import run_flow",
    "from active_data_flow.engine import run_flow\n"
    "import active_data_flow.connectors.sql.sink as sql_sink\n"
    "sql_sink.fast_writer = lambda *args, **kwargs: None",
)

HAND_FILE = """
import time
try:
    import orjson
    loads, dumps = orjson.loads, orjson.dumps
except ImportError:
    import json
    loads, encode = json.loads, json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    dumps = lambda value: encode(value).encode("utf-8")
t0 = time.perf_counter()
with open({src!r}, "rb") as fin, open({dst!r}, "wb") as fout:
    write = fout.write
    for line in fin:
        write(dumps(loads(line)) + b"\\n")
print(time.perf_counter() - t0)
"""

HAND_REDIS = """
import itertools, time, redis
try:
    import orjson
    loads, dumps = orjson.loads, orjson.dumps
except ImportError:
    import json
    loads, dumps = json.loads, lambda value: json.dumps(value, separators=(",", ":"))
client = redis.Redis.from_url({redis!r})
t0 = time.perf_counter()
with open({src!r}, "rb") as fin:
    while batch := list(itertools.islice(fin, {batch})):
        pipe = client.pipeline(transaction=False)
        for line in batch:
            record = loads(line)
            pipe.set({prefix!r} + str(record["id"]), dumps(record))
        pipe.execute()
print(time.perf_counter() - t0)
"""

HAND_RAFKA = """
import itertools, time, redis
try:
    import orjson
    loads, dumps = orjson.loads, orjson.dumps
except ImportError:
    import json
    loads, dumps = json.loads, lambda value: json.dumps(value, separators=(",", ":"))
client = redis.Redis.from_url({redis!r})
streams = [f"rafka:{topic}:{{p}}" for p in range({partitions})]
n = 0
t0 = time.perf_counter()
with open({src!r}, "rb") as fin:
    while batch := list(itertools.islice(fin, {batch})):
        pipe = client.pipeline(transaction=False)
        for line in batch:
            pipe.xadd(streams[n % {partitions}], {{"v": dumps(loads(line))}})
            n += 1
        pipe.execute()
print(time.perf_counter() - t0)
"""

HAND_ICEBERG = """
import itertools, time
import orjson
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
catalog = SqlCatalog("adf", uri="sqlite:///{warehouse}/catalog.db", warehouse="file://{warehouse}")
t0 = time.perf_counter()
catalog.create_namespace_if_not_exists("bench")
table = None
with open({src!r}, "rb") as fin:
    while batch := list(itertools.islice(fin, {batch})):
        data = pa.Table.from_pylist([orjson.loads(line) for line in batch])
        if table is None:
            table = catalog.create_table({iceberg_table!r}, schema=data.schema)
        table.append(data)
print(time.perf_counter() - t0)
"""

HAND_SQLITE = """
import csv, itertools, sqlite3, time
con = sqlite3.connect({db!r}, isolation_level=None)
sql = "INSERT INTO {table} (id, name, amount, qty, city) VALUES (?, ?, ?, ?, ?)" + {conflict!r}
t0 = time.perf_counter()
with open({src!r}, newline="", encoding="utf-8") as f:
    rows = csv.reader(f)
    next(rows)
    while batch := list(itertools.islice(rows, {batch})):
        con.execute("BEGIN IMMEDIATE")
        con.executemany(sql, [tuple(r) for r in batch])
        con.execute("COMMIT")
print(time.perf_counter() - t0)
"""

HAND_PG_EXECUTEMANY = """
import csv, itertools, psycopg, time
con = psycopg.connect({pg!r})
sql = "INSERT INTO {table} (id, name, amount, qty, city) VALUES (%s, %s, %s, %s, %s)" + {conflict!r}
t0 = time.perf_counter()
with open({src!r}, newline="", encoding="utf-8") as f, con.cursor() as cur:
    rows = csv.reader(f)
    next(rows)
    while batch := list(itertools.islice(rows, {batch})):
        cur.executemany(sql, batch)
        con.commit()
print(time.perf_counter() - t0)
"""

HAND_PG_COPY = """
import csv, itertools, psycopg, time
con = psycopg.connect({pg!r})
cols = "id, name, amount, qty, city"
upsert = {upsert!r}
t0 = time.perf_counter()
with open({src!r}, newline="", encoding="utf-8") as f, con.cursor() as cur:
    if upsert:
        cur.execute("CREATE TEMP TABLE stage (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
    target = "stage" if upsert else "{table}"
    rows = csv.reader(f)
    next(rows)
    while batch := list(itertools.islice(rows, {batch})):
        with cur.copy(f"COPY {{target}} ({{cols}}) FROM STDIN") as copy:
            for row in batch:
                copy.write_row(row)
        if upsert:
            cur.execute(f"INSERT INTO {table} ({{cols}}) SELECT {{cols}} FROM stage" + {conflict!r})
        con.commit()
print(time.perf_counter() - t0)
"""

CONFLICT = {
    "sqlite": " ON CONFLICT (id) DO UPDATE SET name = excluded.name, amount = excluded.amount, qty = excluded.qty, city = excluded.city",
    "postgresql": " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, amount = EXCLUDED.amount, qty = EXCLUDED.qty, city = EXCLUDED.city",
}


def make_input(tmp: Path, records: int) -> tuple[Path, Path]:
    """The same records as CSV (``in.csv``) and as JSON Lines (``in.jsonl``)."""
    rnd = random.Random(7)
    cities = ["".join(rnd.choices(string.ascii_lowercase, k=9)) for _ in range(200)]
    src_csv, src_jsonl = tmp / "in.csv", tmp / "in.jsonl"
    with src_csv.open("w", newline="", encoding="utf-8") as fc, src_jsonl.open("w", encoding="utf-8") as fj:
        out = csv.writer(fc)
        out.writerow(COLUMNS)
        for i in range(records):
            row = (i, f"customer {rnd.randrange(10**6)}", round(rnd.uniform(1, 500), 2), rnd.randint(1, 20), rnd.choice(cities))
            out.writerow(row)
            fj.write(json.dumps(dict(zip(COLUMNS, row, strict=True)), separators=(",", ":")) + "\n")
    return src_csv, src_jsonl


def run_probe(code: str) -> float:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return float(proc.stdout.strip().splitlines()[-1])


def reset_sqlite(db: Path) -> None:
    import sqlite3

    db.unlink(missing_ok=True)
    con = sqlite3.connect(db)
    con.execute(DDL["sqlite"])
    con.commit()
    con.close()


def reset_postgres() -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f"DROP TABLE IF EXISTS {TABLE}")
        con.execute(DDL["postgresql"])


def drop_postgres() -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f"DROP TABLE IF EXISTS {TABLE}")


def count_sqlite(db: Path) -> int:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return int(con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])
    finally:
        con.close()


def count_postgres() -> int:
    import psycopg

    with psycopg.connect(PG_URL) as con:
        row = con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
        return int(row[0]) if row else 0


def _redis_keys() -> list[bytes]:
    import redis

    return list(redis.Redis.from_url(REDIS_URL).scan_iter(match=REDIS_PREFIX + "*", count=10_000))


def reset_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = _redis_keys()
    for start in range(0, len(keys), 10_000):
        client.unlink(*keys[start : start + 10_000])


def count_redis() -> int:
    return len(_redis_keys())


def _rafka_streams() -> list[bytes]:
    import redis

    return list(redis.Redis.from_url(REDIS_URL).scan_iter(match=f"rafka:{RAFKA_TOPIC}:*", count=10_000))


def reset_rafka() -> None:
    """Remove the topic: its streams and its meta key."""
    import redis

    keys = _rafka_streams()
    if keys:
        redis.Redis.from_url(REDIS_URL).delete(*keys)


def count_rafka() -> int:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    return sum(client.xlen(key) for key in _rafka_streams() if not key.endswith(b":meta"))


def reset_iceberg(warehouse: Path) -> None:
    shutil.rmtree(warehouse, ignore_errors=True)
    warehouse.mkdir(parents=True)


def count_iceberg(warehouse: Path) -> int:
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("adf", uri=f"sqlite:///{warehouse}/catalog.db", warehouse=f"file://{warehouse}")
    return int(catalog.load_table(ICEBERG_TABLE).scan().to_arrow().num_rows)


class Bench:
    """Runs the contenders of each sink interleaved and keeps every timing."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.src_csv, self.src_jsonl = make_input(tmp, args.records)
        self.db = tmp / "bench.db"
        self.times: dict[tuple[str, str], list[float]] = {}

    def fmt(self, **extra: object) -> dict[str, object]:
        return {"root": str(ROOT), "records": self.args.records, "batch": self.args.batch_size,
                "state": str(self.tmp / "state"), "table": TABLE, "db": str(self.db), "pg": PG_URL, **extra}

    def measure(self, row: str, label: str, code: str, reset: Callable[[], None], check: Callable[[], int]) -> None:
        reset()
        seconds = run_probe(code)
        got = check()
        if got != self.args.records:
            raise SystemExit(f"{row} / {label}: {got:,} rows written, expected {self.args.records:,}")
        self.times.setdefault((row, label), []).append(seconds)
        print(f"{row:<22} {label:<26} {self.args.records / seconds:>10,.0f} records/s  ({seconds:.2f} s)", file=sys.stderr)

    def contenders(self) -> list[tuple[str, str, str, Callable[[], None], Callable[[], int]]]:
        out: list[tuple[str, str, str, Callable[[], None], Callable[[], int]]] = []
        dst = self.tmp / "out.jsonl"

        def lines() -> int:
            with dst.open("rb") as f:
                return sum(1 for _ in f)

        def no_file() -> None:
            dst.unlink(missing_ok=True)

        src = str(self.src_csv)
        sqlite_url = f"sqlite:///{self.db}"
        for mode in ("insert", "upsert"):
            conflict = CONFLICT["sqlite"] if mode == "upsert" else ""
            sink = {"type": "sql", "url": sqlite_url, "table": TABLE, "mode": mode, "key": "id",
                    "batch_size": self.args.batch_size}
            row = f"SQLite {mode}"
            reset, check = (lambda: reset_sqlite(self.db)), (lambda: count_sqlite(self.db))
            out.append((row, "adf run", ENGINE.format(**self.fmt(src=src, fmt="csv", sink=sink)), reset, check))
            out.append((row, SLOW, ENGINE_SQLALCHEMY.format(**self.fmt(src=src, fmt="csv", sink=sink)), reset, check))
            out.append((row, "sqlite3 executemany", HAND_SQLITE.format(**self.fmt(src=src, conflict=conflict)), reset, check))
        if not self.args.no_postgres:
            for mode in ("insert", "upsert"):
                conflict = CONFLICT["postgresql"] if mode == "upsert" else ""
                sink = {"type": "sql", "url": PG_URL, "table": TABLE, "mode": mode, "key": "id",
                        "batch_size": self.args.batch_size}
                row = f"PostgreSQL {mode}"
                fmt = self.fmt(src=src, conflict=conflict, upsert=mode == "upsert")
                out.append((row, "adf run", ENGINE.format(**self.fmt(src=src, fmt="csv", sink=sink)), reset_postgres, count_postgres))
                out.append((row, SLOW, ENGINE_SQLALCHEMY.format(**self.fmt(src=src, fmt="csv", sink=sink)), reset_postgres,
                            count_postgres))
                out.append((row, "psycopg executemany", HAND_PG_EXECUTEMANY.format(**fmt), reset_postgres, count_postgres))
                out.append((row, "psycopg COPY", HAND_PG_COPY.format(**fmt), reset_postgres, count_postgres))
        file_sink = {"type": "file", "path": str(dst), "format": "jsonl"}
        out.append(("file (JSONL)", "adf run", ENGINE.format(**self.fmt(src=str(self.src_jsonl), fmt="jsonl", sink=file_sink)), no_file, lines))
        out.append(("file (JSONL)", "orjson/json loop", HAND_FILE.format(src=str(self.src_jsonl), dst=str(dst)), no_file, lines))
        if not self.args.no_redis:
            cache = {"type": "cache", "url": REDIS_URL, "key_attribute": "id", "key_prefix": REDIS_PREFIX}
            fmt = self.fmt(src=str(self.src_jsonl), fmt="jsonl", sink=cache, redis=REDIS_URL, prefix=REDIS_PREFIX)
            out.append(("Redis cache", "adf run", ENGINE.format(**fmt), reset_redis, count_redis))
            out.append(("Redis cache", "redis-py pipeline", HAND_REDIS.format(**fmt), reset_redis, count_redis))
            rafka = {"type": "rafka", "url": REDIS_URL, "topic": RAFKA_TOPIC, "partitions": RAFKA_PARTITIONS}
            fmt = self.fmt(src=str(self.src_jsonl), fmt="jsonl", sink=rafka, redis=REDIS_URL, topic=RAFKA_TOPIC,
                           partitions=RAFKA_PARTITIONS)
            out.append(("Rafka", "adf run", ENGINE.format(**fmt), reset_rafka, count_rafka))
            out.append(("Rafka", "redis-py XADD pipeline", HAND_RAFKA.format(**fmt), reset_rafka, count_rafka))
        if not self.args.no_iceberg:
            warehouse = self.tmp / "warehouse"
            iceberg = {"type": "iceberg", "table": ICEBERG_TABLE, "warehouse": str(warehouse)}
            fmt = self.fmt(src=str(self.src_jsonl), fmt="jsonl", sink=iceberg, warehouse=str(warehouse),
                           iceberg_table=ICEBERG_TABLE)
            reset, check = (lambda: reset_iceberg(warehouse)), (lambda: count_iceberg(warehouse))
            out.append(("Iceberg append", "adf run", ENGINE.format(**fmt), reset, check))
            out.append(("Iceberg append", "pyiceberg append", HAND_ICEBERG.format(**fmt), reset, check))
        return out

    def run(self) -> list[tuple[str, float, str, float, float, float | None]]:
        """``[(sink, adf records/s, best hand loop, its records/s, ratio, adf records/s through
        SQLAlchemy or None)]`` from the medians."""
        contenders = self.contenders()
        for _ in range(self.args.repeat):
            for row, label, code, reset, check in contenders:
                self.measure(row, label, code, reset, check)
        table: list[tuple[str, float, str, float, float, float | None]] = []
        for row in dict.fromkeys(r for r, *_ in contenders):
            rates = {label: self.args.records / statistics.median(t) for (r, label), t in self.times.items() if r == row}
            adf = rates.pop("adf run")
            slow = rates.pop(SLOW, None)
            best = max(rates, key=rates.__getitem__)
            table.append((row, adf, best, rates[best], adf / rates[best], slow))
            for label, rate in rates.items():
                if label != best:
                    print(f"{row:<22} (also {label}: {rate:,.0f} records/s)", file=sys.stderr)
        return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender (the median counts)")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL rows")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis and Rafka rows")
    parser.add_argument("--no-iceberg", action="store_true", help="skip the Iceberg row")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        try:
            table = Bench(args, Path(tmp_name)).run()
        finally:  # leave nothing behind on the servers
            if not args.no_redis:
                reset_redis()
                reset_rafka()
            if not args.no_postgres:
                drop_postgres()
    print()
    for row, adf, best, rate, ratio, slow in table:
        was = f"   (SQLAlchemy path {slow:,.0f}/s, {slow / rate:.2f}x)" if slow else ""
        print(f"{row:<22} adf run {adf:>10,.0f}/s   {best:<22} {rate:>10,.0f}/s   {ratio:5.2f}x{was}")
    if args.markdown:
        print(f"\n{args.records:,} records, batch size {args.batch_size}, medians of {args.repeat}\n")
        print("| sink | `adf run` records/s | best hand loop | hand loop records/s | ratio | "
              "`adf run`, SQLAlchemy path | its ratio |\n|---|---:|---|---:|---:|---:|---:|")
        for row, adf, best, rate, ratio, slow in table:
            tail = f"{slow:,.0f} | {slow / rate:.2f}x" if slow else "— | —"
            print(f"| {row} | {adf:,.0f} | {best} | {rate:,.0f} | {ratio:.2f}x | {tail} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
