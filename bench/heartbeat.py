"""Heartbeat claims per second on PostgreSQL, and duplicate claims (must be 0).

A pool of due flows (default 20,000) is claimed to the end by 1, 4 and 16 concurrent
heartbeat clients (separate processes, each with its own connection), in batches of 10:

* **store**: :meth:`SqlScheduleStore.claim_due` in async mode (what ``POST /heartbeat``
  with ``mode=async`` does: lock due flows with ``FOR UPDATE SKIP LOCKED``, move their
  next_run_at one interval on, create one pending run each);
* **raw**: the baseline, a hand-written psycopg loop doing the same claim — ``SELECT … FOR
  UPDATE SKIP LOCKED LIMIT n``, ``UPDATE`` next_run_at, ``INSERT`` the runs ``RETURNING id`` —
  with the same batch size and clients, in the same run, on the same tables.

After each round every flow must have exactly one run: ``duplicates`` (a flow with two runs
in one interval) and ``missed`` (a due flow with none) must both be 0. A throwaway database
is created and dropped.

    python bench/heartbeat.py                      # batches of 10, 1/4/16 clients
    python bench/heartbeat.py --batch 1,10 --markdown
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONFIG = {
    "source": {"type": "memory", "records": [{"n": 1}]},
    "sink": {"type": "stdout"},
}

RAW_SELECT = (
    "SELECT id, run_interval FROM data_flows WHERE enabled AND next_run_at <= %s "
    "ORDER BY next_run_at LIMIT %s FOR UPDATE SKIP LOCKED"
)
RAW_UPDATE = "UPDATE data_flows SET next_run_at = %s, last_run_at = %s, last_run_status = 'pending' WHERE id = %s"
RAW_INSERT = (
    "INSERT INTO data_flow_runs (flow_id, status, trigger, attempt, created_at) "
    "VALUES (%s, 'pending', 'heartbeat', 1, %s) RETURNING id"
)


def _psycopg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


# --------------------------------------------------------------------------- clients (child processes)


def _store_client(url: str, batch: int, barrier: Any, out: Any) -> None:
    from active_data_flow.handlers.schedule.sql import SqlScheduleStore

    store = SqlScheduleStore(url, auto_migrate=False)
    store.claim_due(dt.datetime(2000, 1, 1, tzinfo=dt.UTC), limit=batch)  # warm the pool and statement cache
    claims = 0
    barrier.wait()
    t0 = time.perf_counter()
    while True:
        runs = store.claim_due(limit=batch)
        if not runs:
            break
        claims += len(runs)
    out.put((claims, t0, time.perf_counter()))
    store.close()


def _raw_client(url: str, batch: int, barrier: Any, out: Any) -> None:
    import psycopg

    conn = psycopg.connect(_psycopg_url(url))
    claims = 0
    barrier.wait()
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        while True:
            now = dt.datetime.now(dt.UTC)
            cur.execute(RAW_SELECT, (now, batch))
            rows = cur.fetchall()
            if not rows:
                conn.commit()
                break
            cur.executemany(RAW_UPDATE, [(now + dt.timedelta(seconds=interval), now, fid) for fid, interval in rows])
            cur.executemany(RAW_INSERT, [(fid, now) for fid, _ in rows], returning=True)
            run_ids = []
            while True:
                run_ids.append(cur.fetchone())
                if not cur.nextset():
                    break
            conn.commit()
            claims += len(run_ids)
    out.put((claims, t0, time.perf_counter()))
    conn.close()


# --------------------------------------------------------------------------- the benchmark


def _reset(url: str) -> None:
    import psycopg

    with psycopg.connect(_psycopg_url(url), autocommit=True) as conn:
        conn.execute("TRUNCATE data_flow_runs RESTART IDENTITY")
        conn.execute(
            "UPDATE data_flows SET next_run_at = now() - interval '1 hour', last_run_at = NULL, last_run_status = NULL"
        )
        conn.execute("VACUUM ANALYZE data_flows")
        conn.execute("VACUUM ANALYZE data_flow_runs")


def _check(url: str, flows: int) -> tuple[int, int]:
    """(duplicates, missed) after a round."""
    import psycopg

    with psycopg.connect(_psycopg_url(url)) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT flow_id) FROM data_flow_runs").fetchone()
        assert row is not None
        total, distinct = row
    return int(total - distinct), int(flows - distinct)


def _round(url: str, impl: str, clients: int, batch: int, flows: int) -> dict[str, Any]:
    _reset(url)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(clients + 1)
    out = ctx.Queue()
    target = _store_client if impl == "store" else _raw_client
    procs = [ctx.Process(target=target, args=(url, batch, barrier, out)) for _ in range(clients)]
    for p in procs:
        p.start()
    barrier.wait()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a {impl} client failed (exit code {p.exitcode})")
    claims = sum(r[0] for r in results)
    seconds = max(r[2] for r in results) - min(r[1] for r in results)
    duplicates, missed = _check(url, flows)
    return {
        "impl": impl, "clients": clients, "batch": batch, "claims": claims, "seconds": round(seconds, 3),
        "claims_per_s": round(claims / seconds) if seconds > 0 else 0, "duplicates": duplicates, "missed": missed,
    }


def _setup(url: str, flows: int) -> None:
    import psycopg

    from active_data_flow.handlers.schedule.sql import SqlScheduleStore

    with SqlScheduleStore(url) as store:  # migrations, and one flow through the validating API
        store.create_flow("flow-0", CONFIG, 3600)
    with psycopg.connect(_psycopg_url(url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO data_flows (name, description, enabled, configuration, run_interval, next_run_at, "
            "created_at, updated_at) SELECT 'flow-' || g, '', true, %s::jsonb, 3600, now(), now(), now() "
            "FROM generate_series(1, %s) g",
            (json.dumps(CONFIG), flows - 1),
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432", help="PostgreSQL server URL (no database)")
    parser.add_argument("--admin-db", default="test", help="existing database to connect to for CREATE/DROP DATABASE")
    parser.add_argument("--flows", type=int, default=20_000, help="due flows per round")
    parser.add_argument("--batch", default="10", help="claim batch sizes, comma-separated")
    parser.add_argument("--clients", default="1,4,16", help="concurrent heartbeat clients, comma-separated")
    parser.add_argument("--markdown", action="store_true", help="also print a table for docs/BENCHMARKS.md")
    args = parser.parse_args()
    import psycopg

    batches = [int(b) for b in args.batch.split(",")]
    client_counts = [int(c) for c in args.clients.split(",")]
    name = f"adf_bench_{uuid.uuid4().hex[:10]}"
    admin = f"{args.server}/{args.admin_db}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{args.server}/{name}"
    rows: list[dict[str, Any]] = []
    failed = False
    try:
        _setup(url, args.flows)
        print(f"{args.flows} due flows; clients are processes with one connection each", file=sys.stderr)
        for batch in batches:
            for clients in client_counts:
                pair = {}
                for impl in ("raw", "store"):
                    r = _round(url, impl, clients, batch, args.flows)
                    pair[impl] = r
                    rows.append(r)
                    print(
                        f"{impl:5} batch {batch:3} clients {clients:2}: {r['claims_per_s']:8,} claims/s "
                        f"({r['claims']} in {r['seconds']} s)  duplicates {r['duplicates']}  missed {r['missed']}"
                    )
                    failed |= bool(r["duplicates"] or r["missed"])
                ratio = pair["store"]["claims_per_s"] / max(pair["raw"]["claims_per_s"], 1)
                pair["store"]["ratio"] = round(ratio, 2)
                print(f"      ratio store / raw = {ratio:.2f}x (target >= 0.5x)")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if args.markdown:
        print()
        print("| batch | clients | raw psycopg loop (claims/s) | SqlScheduleStore.claim_due (claims/s) | ratio | duplicates | missed |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            if r["impl"] != "store":
                continue
            raw = next(x for x in rows if x["impl"] == "raw" and x["batch"] == r["batch"] and x["clients"] == r["clients"])
            print(
                f"| {r['batch']} | {r['clients']} | {raw['claims_per_s']:,} | {r['claims_per_s']:,} | {r['ratio']:.2f}x "
                f"| {r['duplicates'] + raw['duplicates']} | {r['missed'] + raw['missed']} |"
            )
    if failed:
        print("FAILED: duplicate or missed claims", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
