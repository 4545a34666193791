"""CSV reader throughput: the file source's CSV reader against a hand-written ``csv`` loop.

Three generated files, each read by both contenders in the same run:

* **64 KiB fields** (the point of this benchmark) — ``--records`` rows (default 2,000) of
  ``id, name, blob, n`` where ``blob`` is a quoted field of about ``--field-bytes`` bytes
  (default 65536) of JSON-like text: commas, doubled quotes, non-ASCII, no line ends. The
  hand loop raises ``csv.field_size_limit`` as a careful loop must for big fields (the
  module's default stops at 131,072 characters), as the reader does;
* **short fields** — ``--short-records`` ordinary rows (default 400,000, ~80 bytes), to show
  what the reader's accounting costs on everyday files;
* **multi-line fields** — the same rows, every fifth with a line end inside a quoted field
  (the reader then counts each row's lines as it goes, for the records' origins).

Contenders:

* **hand loop** — the baseline: ``open(path, newline="")``, ``csv.reader``, the header row,
  then ``dict(zip(names, row))`` for every non-empty row;
* **file source reader** — ``FileSource(path=…)``'s enumerator and reader, polled in
  batches of ``--batch`` (``read_csv`` through :class:`~active_data_flow.connectors.file.FileSourceReader`:
  line accounting, ``max_field_bytes``, dead letters, positions for checkpoints, record origins).

Each measurement runs in a fresh interpreter; the best of ``--repeat`` runs is kept. Both
contenders must produce the same records (a digest of them is compared). Prints records/s,
MB/s and the ratio; with ``--markdown`` prints a table for docs/BENCHMARKS.md.

    python bench/csv_reader.py --records 2000 --field-bytes 65536
"""

from __future__ import annotations

import argparse
import csv
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
import csv, hashlib, sys, time
csv.field_size_limit(1 << 30)  # the default stops at 131072 characters per field
t0 = time.perf_counter()
n = 0
digest = hashlib.sha256()
with open({path!r}, newline="", encoding="utf-8") as f:
    reader = csv.reader(f)
    names = next(reader)
    for row in reader:
        if row:
            record = dict(zip(names, row))
            n += 1
            if n % 97 == 0:
                digest.update(repr(record).encode())
elapsed = time.perf_counter() - t0
print(n, digest.hexdigest(), elapsed)
"""

READER = """
import hashlib, sys, time
sys.path.insert(0, {root!r})
from active_data_flow.connectors.file import FileSource
from active_data_flow.source import CollectingEnumeratorContext, DetachedReaderContext, ReaderStatus
t0 = time.perf_counter()
source = FileSource(path={path!r})
context = CollectingEnumeratorContext()
enumerator = source.create_enumerator(context)
enumerator.start()
enumerator.handle_split_request(0)
reader = source.create_reader(DetachedReaderContext())
reader.add_splits(context.assigned)
reader.notify_no_more_splits()
n = 0
digest = hashlib.sha256()
while True:
    batch = reader.poll_batch({batch})
    for record in batch.records:
        n += 1
        if n % 97 == 0:
            digest.update(repr(record).encode())
    assert not batch.dead_letters, batch.dead_letters[:1]
    if batch.status is ReaderStatus.END_OF_INPUT:
        break
reader.close()
elapsed = time.perf_counter() - t0
print(n, digest.hexdigest(), elapsed)
"""


def make_blob_file(path: Path, records: int, field_bytes: int) -> int:
    """Rows whose third field is a quoted ``field_bytes``-byte JSON-like text (commas, quotes, no line ends)."""
    rnd = random.Random(7)
    words = ["".join(rnd.choices(string.ascii_lowercase, k=rnd.randint(2, 9))) for _ in range(400)]
    pieces = [*words, ",", ', "key": ', '{"a": [1, 2]}', "é"]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "name", "blob", "n"])
        for i in range(records):
            parts: list[str] = []
            size = 2  # the enclosing quotes
            while size < field_bytes:
                piece = rnd.choice(pieces) + " "
                parts.append(piece)
                size += len(piece.encode()) + piece.count('"')  # a quote is written twice
            writer.writerow([i, rnd.choice(words), "".join(parts), rnd.randint(0, 10**6)])
    return path.stat().st_size


def make_short_file(path: Path, records: int, multiline: bool = False) -> int:
    rnd = random.Random(11)
    words = ["".join(rnd.choices(string.ascii_lowercase, k=8)) for _ in range(500)]
    extra = "\nsecond line" if multiline else ', "x"'
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "customer", "price", "quantity", "note"])
        for i in range(records):
            note = " ".join(rnd.choices(words, k=4)) + (extra if i % 5 == 0 else "")
            writer.writerow([i, rnd.choice(words), round(rnd.uniform(1, 500), 2), rnd.randint(1, 20), note])
    return path.stat().st_size


def run_probe(code: str) -> tuple[int, str, float]:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    n, digest, seconds = proc.stdout.split()
    return int(n), digest, float(seconds)


def best_of(repeat: int, code: str) -> tuple[int, str, float]:
    runs = [run_probe(code) for _ in range(repeat)]
    return min(runs, key=lambda r: r[2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2_000, help="rows of the file with big fields")
    parser.add_argument("--field-bytes", type=int, default=64 << 10, help="bytes of each big quoted field")
    parser.add_argument("--short-records", type=int, default=400_000, help="rows of the files with short fields")
    parser.add_argument("--batch", type=int, default=1000, help="records per poll of the file source reader")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per measurement")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    rows: list[tuple[str, float, float]] = []
    ratios: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files = [
            (f"{args.field_bytes // 1024} KiB fields", tmp / "blobs.csv",
             lambda p: make_blob_file(p, args.records, args.field_bytes)),
            ("short fields", tmp / "short.csv", lambda p: make_short_file(p, args.short_records)),
            ("multi-line fields", tmp / "multi.csv", lambda p: make_short_file(p, args.short_records, True)),
        ]
        for label, path, make in files:
            size = make(path)
            print(f"{label}: {path.name}, {size / 1e6:.0f} MB", file=sys.stderr)
            fmt = {"root": str(ROOT), "path": str(path), "batch": args.batch}
            results = {}
            for who, code in (("hand loop", HAND_LOOP), ("file source reader", READER)):
                n, digest, seconds = best_of(args.repeat, code.format(**fmt))
                results[who] = (n, digest)
                rate = n / seconds
                rows.append((f"{who}, {label}", rate, size / seconds / 1e6))
                print(f"{who + ', ' + label:<44} {rate:>12,.0f} records/s  {size / seconds / 1e6:7.1f} MB/s  "
                      f"({seconds:.2f} s)", file=sys.stderr)
            if results["hand loop"] != results["file source reader"]:
                raise SystemExit(f"{label}: the reader's records differ from the hand loop's")
            ratios.append((f"file source reader / hand loop ({label})", rows[-1][1] / rows[-2][1]))

    print()
    for label, ratio in ratios:
        print(f"{label:<52} {ratio:6.2f}x")
    if args.markdown:
        print("\n| measurement | records/s | MB/s |\n|---|---:|---:|")
        for label, rate, mbs in rows:
            print(f"| {label} | {rate:,.0f} | {mbs:.1f} |")
        print("\n| ratio | value |\n|---|---:|")
        for label, ratio in ratios:
            print(f"| {label} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
