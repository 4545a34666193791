"""Flows as Flink jobs on the local mini-cluster (PyFlink in .venv-flink, scripts/flink-setup):
the same spec gives the same sink contents as the local runner; dead letters under Flink too."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from active_data_flow.engine import run_flow
from active_data_flow.flink_job.cli import flink_python

pytestmark = [pytest.mark.slow, pytest.mark.flink]

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def python() -> str:
    found = flink_python()
    if found is None:
        pytest.fail("PyFlink is not installed: run scripts/flink-setup")
    return found


def _orders(d: Path, files: int = 3, rows: int = 200) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        with open(d / f"orders-{f}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "n", "customer"])
            for i in range(rows):
                w.writerow([f * rows + i, (f * rows + i) % 50, f"c{i % 7}"])


def _spec(tmp: Path, db: Path, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "python_path": [str(TESTS)],
        "source": {"type": "file", "path": str(tmp / "in" / "*.csv"), "format": "csv"},
        "schema": {"id": "integer", "n": "integer", "customer": "string"},
        "steps": [{"type": "python", "function": "flowlib.steps:explode_on_sevens"},
                  {"type": "python", "function": "flowlib.steps:double"},
                  {"type": "filter", "field": "n", "op": "lt", "value": 60}],
        "sink": {"type": "sql", "url": f"sqlite:///{db}", "table": "orders", "mode": "upsert", "key": "id"},
        "runtime": {"batch_size": 64},
    }


def _flink(python: str, spec_path: Path, tmp: Path, parallelism: int) -> dict[str, Any]:
    r = subprocess.run([python, "-m", "active_data_flow.flink_job.job", str(spec_path), "--parallelism", str(parallelism),
                        "--state-dir", str(tmp / "state"), "--json"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp)})
    assert r.stdout.strip(), r.stderr[-3000:]
    summary: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return summary


def _start_streaming(python: str, spec_path: Path, tmp: Path) -> subprocess.Popen[bytes]:
    """A streaming job at parallelism 2 on the mini-cluster, in its own process group (kill it)."""
    return subprocess.Popen([python, "-m", "active_data_flow.flink_job.job", str(spec_path), "-p", "2", "--state-dir", str(tmp / "state")],
                            cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _ids(out: Path) -> list[int]:
    return sorted(json.loads(x)["id"] for x in out.read_text().splitlines()) if out.exists() else []


def _wait_for(out: Path, n: int, timeout: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout
    while len(_ids(out)) < n and time.monotonic() < deadline:
        time.sleep(0.25)


def _rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return sorted(conn.execute("select id, n, customer from orders"))


@pytest.mark.parametrize("parallelism", [1, 2])
def test_the_same_spec_gives_the_same_rows_and_dead_letters_on_flink_as_locally(
    python: str, tmp_path: Path, parallelism: int
) -> None:
    _orders(tmp_path / "in")
    local_db, flink_db = tmp_path / "local.db", tmp_path / "flink.db"
    local = run_flow(_spec(tmp_path, local_db, "orders_local"), state_dir=str(tmp_path / "local-state"))
    spec_path = tmp_path / "orders.json"
    spec_path.write_text(json.dumps(_spec(tmp_path, flink_db, "orders_flink")))
    summary = _flink(python, spec_path, tmp_path, parallelism)
    assert summary["status"] == local.status == "partial", summary  # the same verdict as locally
    assert summary["parallelism"] == parallelism and summary["splits"] == 3
    assert _rows(flink_db) == _rows(local_db) and len(_rows(local_db)) > 0
    assert (summary["records_in"], summary["records_out"], summary["filtered"]) == (local.records_in, local.records_out, local.filtered)
    # a step that raises on some records: those records are dead letters under Flink too
    assert summary["dead_letters"] == local.dead_letters > 0
    letters = [json.loads(x) for x in Path(summary["dead_letter_destination"]).read_text().splitlines()]
    local_letters = [json.loads(x) for x in Path(local.dead_letter_destination).read_text().splitlines()]
    assert sorted(x["record"]["id"] for x in letters) == sorted(x["record"]["id"] for x in local_letters)
    assert all("explode_on_sevens" in (x.get("step") or "") or "7" in x["reason"] for x in letters)


def test_adf_flink_run_and_package(python: str, tmp_path: Path) -> None:
    _orders(tmp_path / "in", files=1, rows=20)
    spec_path = tmp_path / "orders.json"
    spec_path.write_text(json.dumps(_spec(tmp_path, tmp_path / "cli.db", "orders_cli")))
    r = subprocess.run([sys.executable, "-m", "active_data_flow.cli", "flink", "run", str(spec_path), "-p", "1", "--json",
                        "--state-dir", str(tmp_path / "state")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["status"] == "partial"
    out = tmp_path / "pkg"
    r = subprocess.run([sys.executable, "-m", "active_data_flow.cli", "flink", "package", str(spec_path), "--out", str(out),
                        "-r", "SQLAlchemy>=2", "--shared", str(tmp_path), "--json"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    import zipfile

    names = zipfile.ZipFile(out / "adf-flink.zip").namelist()
    assert "active_data_flow/engine/__init__.py" in names and "active_data_flow/engine/loop.py" in names
    assert "active_data_flow/flink_job/job.py" in names and not [n for n in names if n.startswith(("core/", "flink_job/"))]
    assert "flowlib/steps.py" in names  # the step modules the flow imports, from its python_path
    assert (out / "job.py").exists() and (out / "orders.json").exists()
    packaged = json.loads((out / "orders.json").read_text())
    assert "python_path" not in packaged and packaged["source"]["path"] == str(tmp_path / "in" / "*.csv")
    assert "SQLAlchemy>=2" in (out / "requirements.txt").read_text()
    assert "-pyreq" in (out / "README.txt").read_text()
    # a path only this machine sees is refused, named
    r = subprocess.run([sys.executable, "-m", "active_data_flow.cli", "flink", "package", str(spec_path), "--out",
                        str(tmp_path / "pkg2")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "source.path" in r.stderr and "sink.url" in r.stderr


@pytest.mark.redis
def test_a_rafka_topic_gives_the_same_file_on_flink_as_locally(python: str, tmp_path: Path) -> None:
    import uuid

    from active_data_flow.connectors.rafka import Admin, Producer

    url = "redis://127.0.0.1:6379"
    topic = f"flink-{uuid.uuid4().hex[:8]}"
    admin = Admin(url)
    admin.create_topic(topic, 3)
    try:
        producer = Producer(url)
        producer.send_batch(topic, [{"id": i, "n": i % 50, "customer": f"c{i % 7}"} for i in range(600)],
                            key_field="id")
        producer.flush()

        def spec(name: str, out: Path) -> dict[str, Any]:
            return {"name": name, "python_path": [str(TESTS)],
                    "source": {"type": "rafka", "url": url, "topic": topic, "group": name, "bounded": True},
                    "steps": [{"type": "python", "function": "flowlib.steps:explode_on_sevens"}],
                    "sink": {"type": "file", "path": str(out), "format": "jsonl"}}

        local = run_flow(spec("rafka_local", tmp_path / "local.jsonl"), state_dir=str(tmp_path / "local-state"))
        spec_path = tmp_path / "rafka.json"
        spec_path.write_text(json.dumps(spec("rafka_flink", tmp_path / "flink.jsonl")))
        summary = _flink(python, spec_path, tmp_path, 2)
        assert summary["status"] == local.status == "partial", summary
        rows = sorted(json.loads(x)["id"] for x in (tmp_path / "flink.jsonl").read_text().splitlines())
        local_rows = sorted(json.loads(x)["id"] for x in (tmp_path / "local.jsonl").read_text().splitlines())
        assert rows == local_rows and len(rows) == 600 - local.dead_letters
        assert summary["dead_letters"] == local.dead_letters > 0 and summary["splits"] == 3
    finally:
        admin.delete_topic(topic)


@pytest.mark.redis
def test_an_unbounded_source_runs_as_a_streaming_job_and_delivers_records_as_they_come(
    python: str, tmp_path: Path
) -> None:
    import os
    import signal
    import uuid

    from active_data_flow.connectors.rafka import Admin, Producer

    url = "redis://127.0.0.1:6379"
    topic = f"flink-stream-{uuid.uuid4().hex[:8]}"
    admin = Admin(url)
    admin.create_topic(topic, 3)  # more partitions than subtasks: every one must be read
    out = tmp_path / "stream.jsonl"
    spec_path = tmp_path / "stream.json"
    spec_path.write_text(json.dumps({
        "name": "rafka_stream", "source": {"type": "rafka", "url": url, "topic": topic, "group": "g", "bounded": False},
        "sink": {"type": "file", "path": str(out), "format": "jsonl"},
        "runtime": {"checkpoint_interval_ms": 1000, "discovery_interval_s": 1}}))

    def ids() -> list[int]:
        return _ids(out)

    def wait_for(n: int) -> None:
        _wait_for(out, n)

    producer = Producer(url)
    producer.send_batch(topic, [{"id": i} for i in range(100)], key_field="id")
    producer.flush()
    proc = _start_streaming(python, spec_path, tmp_path)
    try:
        wait_for(100)
        assert ids() == list(range(100)), proc.poll()
        producer.send_batch(topic, [{"id": i} for i in range(100, 150)], key_field="id")
        producer.flush()
        wait_for(150)
        assert ids() == list(range(150))
        # a partition added while the job runs is found and read
        admin.add_partitions(topic, 4)
        producer = Producer(url)
        producer.send_batch(topic, [{"id": i} for i in range(150, 350)], key_field="id")
        producer.flush()
        import redis

        from active_data_flow.connectors.rafka import stream_key

        assert redis.Redis.from_url(url).xlen(stream_key(topic, 3)) > 0  # the new partition has entries
        wait_for(350)
        assert ids() == list(range(350))
        assert proc.poll() is None  # still running: a streaming job does not end by itself
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        admin.delete_topic(topic)


@pytest.mark.parametrize(("mode", "copies"), [("overwrite", 1), ("append", 2)])
def test_a_rerun_overwrites_the_file_sink_once_as_locally(python: str, tmp_path: Path, mode: str, copies: int) -> None:
    _orders(tmp_path / "in", files=3, rows=50)
    out = tmp_path / "out.jsonl"
    spec = {"name": "orders_file", "source": {"type": "file", "path": str(tmp_path / "in" / "*.csv"), "format": "csv"},
            "sink": {"type": "file", "path": str(out), "mode": mode}}
    spec_path = tmp_path / "orders.json"
    spec_path.write_text(json.dumps(spec))
    for _ in range(2):  # parallelism 2: both subtasks append to the file the client prepared once
        summary = _flink(python, spec_path, tmp_path, 2)
        assert (summary["status"], summary["records_out"]) == ("success", 150), summary
    ids = sorted(json.loads(line)["id"] for line in out.read_text().splitlines())
    assert ids == sorted(str(i) for i in range(150) for _ in range(copies))


def test_a_watched_directory_is_a_streaming_job_that_reads_each_new_file_once(python: str, tmp_path: Path) -> None:
    import os
    import signal
    import time

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(100)))
    out = tmp_path / "watched.jsonl"
    spec_path = tmp_path / "watch.json"
    spec_path.write_text(json.dumps({
        "name": "watched", "source": {"type": "file", "path": str(inbox / "*.jsonl"), "watch": True},
        "sink": {"type": "file", "path": str(out), "format": "jsonl"},
        "dead_letter": {"type": "file", "path": str(tmp_path / "dead.jsonl"), "format": "jsonl"},
        "runtime": {"checkpoint_interval_ms": 1000, "discovery_interval_s": 1, "idle_sleep_s": 0.05}}))

    def ids() -> list[int]:
        return _ids(out)

    def wait_for(n: int) -> None:
        _wait_for(out, n)

    proc = _start_streaming(python, spec_path, tmp_path)
    try:
        wait_for(100)
        assert ids() == list(range(100)), proc.poll()
        for name, first in (("b", 100), ("c", 250)):  # files that appear while the job runs
            tmp = inbox / f".{name}.part"
            tmp.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(first, first + 150))
                           + ("not json\n" if name == "b" else ""))
            tmp.rename(inbox / f"{name}.jsonl")
        wait_for(400)
        time.sleep(3)  # more discoveries: nothing is read twice
        assert ids() == list(range(400))
        # a streaming job's dead letters go to the flow's dead-letter sink, with where they came from
        letters = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
        assert len(letters) == 1 and letters[0]["stage"] == "source", letters
        assert "b.jsonl" in json.dumps(letters[0]) and letters[0]["record"] == "not json", letters
        assert proc.poll() is None  # watching: the job does not end by itself
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def test_a_file_sink_is_the_file_adf_run_writes_also_at_parallelism_2(python: str, tmp_path: Path) -> None:
    """The parts each split commits are joined in split order: the CSV file is byte for byte the
    local runner's, whichever subtask read which split."""
    _orders(tmp_path / "in", files=3, rows=400)

    def spec(out: Path) -> dict[str, Any]:
        return {"name": "csv_out", "source": {"type": "file", "path": str(tmp_path / "in" / "*.csv"), "format": "csv",
                                              "split_bytes": 2048},
                "sink": {"type": "file", "path": str(out)}, "runtime": {"batch_size": 50}}

    local = run_flow(spec(tmp_path / "local.csv"), state_dir=str(tmp_path / "local-state"))
    assert local.status == "success"
    spec_path = tmp_path / "csv.json"
    spec_path.write_text(json.dumps(spec(tmp_path / "flink.csv")))
    summary = _flink(python, spec_path, tmp_path, 2)
    assert (summary["status"], summary["records_in"], summary["records_out"]) == ("success", 1200, 1200), summary
    assert summary["splits"] > 6  # the files were cut into byte ranges
    assert (tmp_path / "flink.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert not (tmp_path / "flink.csv.adf-parts").exists()
