"""Flows packaged with `adf flink package` and submitted with `flink run` to a standalone cluster
(one JobManager, two TaskManagers, started from the apache-flink wheel's scripts on loopback:
tests/flink_cluster.py). When `unshare` works here (root), each TaskManager has a private
/tmp and working directory, so nothing passes by reading the client's files: the packages and
the step modules live in pytest's tmp_path (under /tmp), only the data is in a shared directory."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flink_cluster import FLINK_PYTHON, FlinkCluster, descendants, unshare_works

from active_data_flow.flink_job.cli import flink_python

pytestmark = [pytest.mark.slow, pytest.mark.flink]

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "flink_data"
ORDERS_SINK_ENV = "ADF_ORDERS_TO_SQLITE__SINK"  # the operators' environment layer of the example flow


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[FlinkCluster]:
    if flink_python() is None:
        pytest.fail("PyFlink is not installed: run scripts/flink-setup")
    c = FlinkCluster(taskmanagers=2, private=unshare_works())
    c.start()
    failed = request.session.testsfailed
    try:
        yield c
    finally:
        c.stop()
        if request.session.testsfailed == failed:
            c.cleanup()
        else:  # the JobManager's and every TaskManager's log (and a JVM's crash report) say why
            print(f"\nFlink cluster logs kept in {c.log_dir}", file=sys.stderr)


@pytest.fixture(scope="module")
def shared() -> Iterator[Path]:
    """A directory the client and the TaskManagers both see (not under the client's /tmp)."""
    d = Path(tempfile.mkdtemp(prefix="adf-flink-shared-", dir="/var/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def adf(*args: str, cwd: Path | str = ROOT, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "active_data_flow.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def readme_command(pkg: Path) -> list[str]:
    """The submit command of the package's README, word for word."""
    lines = [ln.strip() for ln in (pkg / "README.txt").read_text().splitlines() if ln.strip().startswith("flink run ")]
    assert len(lines) == 1, (pkg / "README.txt").read_text()
    return shlex.split(lines[0])


def submit(cluster: FlinkCluster, pkg: Path, *flags: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the README's command with the cluster's `flink` (flags such as -p / -d go after `run`)."""
    cmd = readme_command(pkg)
    assert cmd[:2] == ["flink", "run"]
    return cluster.flink("run", *flags, *cmd[2:], cwd=str(cwd), timeout=timeout)


def summary_line(out: str) -> str:
    return [ln for ln in out.splitlines() if " on Flink " in ln][-1]


def test_package_refuses_paths_only_the_client_sees(tmp_path: Path) -> None:
    r = adf("flink", "package", "examples/orders/flow.yaml", "--out", str(tmp_path / "pkg"),
            env={ORDERS_SINK_ENV: json.dumps({"type": "file", "path": str(tmp_path / "out.jsonl")})})
    assert r.returncode == 2
    assert "source.path: 'examples/orders/data/*.csv'" in r.stderr and "--shared" in r.stderr
    assert f"sink.path: '{tmp_path / 'out.jsonl'}'" in r.stderr
    assert not (tmp_path / "pkg" / "adf-flink.zip").exists()


def test_the_example_flow_packaged_and_submitted_as_its_readme_says(cluster: FlinkCluster, shared: Path,
                                                                     tmp_path: Path) -> None:
    out = shared / "orders-flink.jsonl"
    local_out = tmp_path / "orders-local.jsonl"
    r = adf("run", "examples/orders/flow.yaml", env={ORDERS_SINK_ENV: json.dumps(
        {"type": "file", "path": str(local_out), "format": "jsonl"}), "ADF_STATE_DIR": str(tmp_path / "state")})
    assert r.returncode in (0, 1) and local_out.exists(), r.stderr[-2000:]
    pkg = tmp_path / "pkg"
    r = adf("flink", "package", "examples/orders/flow.yaml", "--out", str(pkg), "--shared", str(ROOT / "examples"),
            "--shared", str(shared), "--python", FLINK_PYTHON,
            env={ORDERS_SINK_ENV: json.dumps({"type": "file", "path": str(out), "format": "jsonl"})})
    assert r.returncode == 0, r.stderr
    import zipfile

    names = zipfile.ZipFile(pkg / "adf-flink.zip").namelist()
    assert "transforms.py" in names and "active_data_flow/engine/__init__.py" in names and "active_data_flow/engine/loop.py" in names and "active_data_flow/flink_job/job.py" in names
    started = time.monotonic()
    r = submit(cluster, pkg, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    line = summary_line(r.stdout)
    assert "orders_to_sqlite: partial on Flink (parallelism 1): 1200 in, 1080 out, 2 dead letters" in line, line
    local = sorted(json.loads(x)["id"] for x in local_out.read_text().splitlines())
    flink = sorted(json.loads(x)["id"] for x in out.read_text().splitlines())
    assert flink == local and len(flink) == 1080
    by_id = {json.loads(x)["id"]: json.loads(x) for x in local_out.read_text().splitlines()}
    assert all(by_id[rec["id"]] == rec for rec in map(json.loads, out.read_text().splitlines()))
    # the dead letters came back to the client from the job (no shared run directory)
    letters = list((pkg / "runs" / "orders_to_sqlite" / "flink-runs").glob("*/dead_letters.jsonl"))
    assert len(letters) == 1 and len(letters[0].read_text().splitlines()) == 2
    print(f"example flow on the cluster: {time.monotonic() - started:.1f} s")


def test_a_300k_record_flow_on_two_taskmanagers(cluster: FlinkCluster, shared: Path, tmp_path: Path) -> None:
    n = 300_000
    data = shared / "big"
    data.mkdir()
    with open(data / "in.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "name": f"n{i % 1000}", "v": i % 97}) + "\n")
    spec_dir = tmp_path / "flow"  # the step module only on the client: the package carries it
    spec_dir.mkdir()
    shutil.copy(DATA / "slow_steps.py", spec_dir / "bigsteps.py")
    (spec_dir / "big.json").write_text(json.dumps({
        "name": "big", "source": {"type": "file", "path": str(data / "in.jsonl"), "format": "jsonl",
                                  "split_bytes": 2 << 20},
        "steps": [{"type": "python", "function": "bigsteps:tag"}],
        "sink": {"type": "file", "path": str(data / "out.jsonl"), "format": "jsonl"},
        "runtime": {"batch_size": 1000}}))
    pkg = tmp_path / "pkg"
    r = adf("flink", "package", str(spec_dir / "big.json"), "--out", str(pkg), "--shared", str(shared),
            "--python", FLINK_PYTHON, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    started = time.monotonic()
    r = submit(cluster, pkg, "-p", "2", cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert f"big: success on Flink (parallelism 2): {n} in, {n} out, 0 dead letters" in summary_line(r.stdout)
    ids = sorted(json.loads(x)["id"] for x in (data / "out.jsonl").read_text().splitlines())
    assert ids == list(range(n))
    print(f"{n} records on 2 TaskManagers: {elapsed:.1f} s ({n / elapsed:,.0f} rec/s with submission)")


def test_a_python_error_in_a_worker_reaches_the_client_with_its_traceback(cluster: FlinkCluster, shared: Path,
                                                                           tmp_path: Path) -> None:
    (shared / "one.jsonl").write_text('{"id": 1}\n')
    spec_dir = tmp_path / "flow"
    spec_dir.mkdir()
    shutil.copy(DATA / "fails_on_workers.py", spec_dir / "fails_on_workers.py")
    (spec_dir / "fails.json").write_text(json.dumps({
        "name": "fails", "source": {"type": "file", "path": str(shared / "one.jsonl"), "format": "jsonl"},
        "steps": [{"type": "python", "function": "fails_on_workers:same"}],
        "sink": {"type": "file", "path": str(shared / "fails-out.jsonl"), "format": "jsonl"}}))
    pkg = tmp_path / "pkg"
    r = adf("flink", "package", str(spec_dir / "fails.json"), "--out", str(pkg), "--shared", str(shared),
            "--python", FLINK_PYTHON, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = submit(cluster, pkg, cwd=tmp_path)
    assert r.returncode != 0
    both = r.stdout + r.stderr  # the client Python's stderr comes out through the `flink` CLI
    assert "Traceback (most recent call last):" in both and "in parse_spec" in both, both[-6000:]
    line = summary_line(r.stdout)
    assert "fails: failed on Flink" in line
    assert "RuntimeError: this module refuses to load in a Flink worker (on purpose)" in line, line
    assert "and ended FAILED" in line  # after the cluster's restart attempts


def test_a_detached_submission_prints_the_job_id_and_status_reports_the_end(cluster: FlinkCluster, shared: Path,
                                                                            tmp_path: Path) -> None:
    (shared / "det.jsonl").write_text("".join(json.dumps({"id": i, "v": i}) + "\n" for i in range(1000)))
    spec = tmp_path / "det.json"
    spec.write_text(json.dumps({
        "name": "det", "source": {"type": "file", "path": str(shared / "det.jsonl"), "format": "jsonl"},
        "sink": {"type": "file", "path": str(shared / "det-out.jsonl"), "format": "jsonl"}}))
    pkg = tmp_path / "pkg"
    assert adf("flink", "package", str(spec), "--out", str(pkg), "--shared", str(shared), "--python", FLINK_PYTHON,
               cwd=tmp_path).returncode == 0
    r = submit(cluster, pkg, "-d", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert " in, " not in r.stdout  # no summary of a job that has not run yet
    found = re.search(r"submitted to Flink as job ([0-9a-f]{32})", r.stdout)
    assert found, r.stdout
    r = adf("flink", "status", found.group(1), "--rest", cluster.rest, "--wait", "120", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    status = json.loads(r.stdout)
    assert status["state"] == "FINISHED"
    assert "sink" in status["operators"][-1]["name"]
    print("status of a finished detached job:", json.dumps(status))
    # the run's summary from what the job committed with its parts; the parts joined into the file
    assert status["summary"]["status"] == "success", status
    assert (status["counts"]["records_in"], status["counts"]["records_out"]) == (1000, 1000), status
    assert len((shared / "det-out.jsonl").read_text().splitlines()) == 1000
    assert not (shared / "det-out.jsonl.adf-parts").exists()
    again = adf("flink", "status", found.group(1), "--rest", cluster.rest, "--json")
    assert json.loads(again.stdout)["summary"] == status["summary"]  # joined once
    assert len((shared / "det-out.jsonl").read_text().splitlines()) == 1000


def test_a_detached_job_with_a_database_sink_reports_its_counts_when_done(cluster: FlinkCluster, shared: Path,
                                                                        tmp_path: Path) -> None:
    """A sink that is not a file: the job commits each split's counts to the package's shared
    directory (runtime.flink_report_dir), and `adf flink status` adds them up once it finished."""
    import sqlite3

    (shared / "det-db.jsonl").write_text("".join(json.dumps({"id": i, "v": i}) + "\n" for i in range(2000))
                                         + "not json\n")
    db = shared / "det.db"
    spec = tmp_path / "detdb.json"
    spec.write_text(json.dumps({
        "name": "detdb", "source": {"type": "file", "path": str(shared / "det-db.jsonl"), "format": "jsonl",
                                    "split_bytes": 8192},
        "sink": {"type": "sql", "url": f"sqlite:///{db}", "table": "t", "mode": "upsert", "key": "id"}}))
    pkg = tmp_path / "pkg"
    assert adf("flink", "package", str(spec), "--out", str(pkg), "--shared", str(shared), "--python", FLINK_PYTHON,
               cwd=tmp_path).returncode == 0
    assert json.loads((pkg / "detdb.json").read_text())["runtime"]["flink_report_dir"].startswith(str(shared))
    r = submit(cluster, pkg, "-d", cwd=tmp_path)
    found = re.search(r"submitted to Flink as job ([0-9a-f]{32})", r.stdout)
    assert found, r.stdout + r.stderr[-3000:]
    r = adf("flink", "status", found.group(1), "--rest", cluster.rest, "--wait", "120", "--json")
    status = json.loads(r.stdout)
    assert status["state"] == "FINISHED", status
    summary = status["summary"]
    assert (summary["status"], summary["records_in"], summary["records_out"], summary["dead_letters"]) == \
        ("partial", 2001, 2000, 1), summary
    letters = [json.loads(x) for x in Path(summary["dead_letter_destination"]).read_text().splitlines()]
    assert len(letters) == 1 and letters[0]["record"] == "not json"
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*), min(id), max(id) from t").fetchone() == (2000, 0, 1999)
    r = adf("flink", "status", found.group(1), "--rest", cluster.rest)  # the text form, a second time
    assert r.returncode == 0 and "detdb: partial: 2001 in, 2000 out, 1 dead letters" in r.stdout, r.stdout


def test_python_workers_of_a_killed_taskmanager_stop(cluster: FlinkCluster, shared: Path, tmp_path: Path) -> None:
    (shared / "slow.jsonl").write_text("".join(json.dumps({"id": i, "v": i}) + "\n" for i in range(40_000)))
    flow_dir = tmp_path / "flow"
    flow_dir.mkdir()
    shutil.copy(DATA / "slow_steps.py", flow_dir / "slow_steps.py")
    (flow_dir / "slow.json").write_text(json.dumps({
        "name": "slow", "source": {"type": "file", "path": str(shared / "slow.jsonl"), "format": "jsonl",
                                   "split_bytes": 64 << 10},
        "steps": [{"type": "python", "function": "slow_steps:slow"}],
        "sink": {"type": "file", "path": str(shared / "slow-out.jsonl"), "format": "jsonl"},
        "runtime": {"batch_size": 100}}))
    pkg = tmp_path / "pkg"
    assert adf("flink", "package", str(flow_dir / "slow.json"), "--out", str(pkg), "--shared", str(shared),
               "--python", FLINK_PYTHON, cwd=tmp_path).returncode == 0
    r = submit(cluster, pkg, "-d", "-p", "2", cwd=tmp_path)
    job = re.search(r"submitted to Flink as job ([0-9a-f]{32})", r.stdout)
    assert job, r.stdout + r.stderr[-3000:]
    try:
        deadline, victim = time.monotonic() + 90, -1
        workers: list[int] = []
        while time.monotonic() < deadline and not workers:
            for i, tm in enumerate(cluster.taskmanagers):
                if tm.poll() is None:
                    found = [p for p in descendants(cluster.jvm_pid(tm)) if "beam_boot" in _cmdline(p)]
                    if found:
                        workers, victim = found, i
                        break
            time.sleep(0.5)
        assert workers, "no Python worker started: " + json.dumps(cluster.get(f"/jobs/{job.group(1)}"))[:2000]
        time.sleep(2)  # the workers are reading and writing now
        cluster.kill_taskmanager(victim)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.2)
        assert not [p for p in workers if _alive(p)], "Python workers outlived their TaskManager"
    finally:
        cluster.flink("cancel", job.group(1), timeout=60)
        cluster.add_taskmanager()  # two again, for any test after this one


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _written(sink: str, data: Path, url: str, topic: str) -> int:
    """Records the kill test's sink holds now (the file sink: its committed parts)."""
    if sink == "file":
        return sum(len(p.read_bytes().splitlines()) for p in data.glob("out.jsonl.adf-parts/part-*.jsonl"))
    import redis

    from active_data_flow.connectors.rafka import stream_key

    r = redis.Redis.from_url(url)
    try:
        return sum(int(r.xlen(stream_key(topic, p))) for p in range(2))
    finally:
        r.close()


def _job_by_name(cluster: FlinkCluster, fragment: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in cluster.get("/jobs/overview").get("jobs", []):
            if fragment in job.get("name", "") and job.get("state") == "RUNNING":
                return str(job["jid"])
        time.sleep(0.5)
    raise AssertionError(f"no running job named *{fragment}*: {cluster.get('/jobs/overview')}")


def _checkpoints(cluster: FlinkCluster, job: str) -> dict[str, int]:
    return {k: int(v) for k, v in cluster.get(f"/jobs/{job}/checkpoints").get("counts", {}).items()}


@pytest.mark.parametrize("sink", ["file", "rafka"])
def test_a_taskmanager_killed_mid_job_and_replaced_the_job_resumes_from_its_checkpoint(
        cluster: FlinkCluster, shared: Path, tmp_path: Path, sink: str) -> None:
    """1,000,000 records, parallelism 2, checkpoints every 2 s: one TaskManager is SIGKILLed after
    a checkpoint completed and a new one started; the job restarts from the checkpoint and the
    summary's counts are the input's. The file sink holds every record exactly once (in input
    order); the Rafka sink (an append sink) every record, with duplicates only of what was
    written after the checkpoint."""
    import uuid

    n, interval_s, split_bytes = 1_000_000, 2.0, 1 << 20
    data = shared / f"kill-{sink}"
    data.mkdir()
    with open(data / "in.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "name": f"n{i % 1000}", "v": i % 97}) + "\n")
    split_records = split_bytes * n // (data / "in.jsonl").stat().st_size
    flow_dir = tmp_path / "flow"
    flow_dir.mkdir()
    shutil.copy(DATA / "slow_steps.py", flow_dir / "killsteps.py")
    url, topic = "redis://127.0.0.1:6379", f"flink-kill-{uuid.uuid4().hex[:8]}"
    target = ({"type": "file", "path": str(data / "out.jsonl"), "format": "jsonl"} if sink == "file"
              else {"type": "rafka", "url": url, "topic": topic, "partitions": 2})
    (flow_dir / "kill.json").write_text(json.dumps({
        "name": f"kill_{sink}", "source": {"type": "file", "path": str(data / "in.jsonl"), "format": "jsonl",
                                           "split_bytes": split_bytes},
        "steps": [{"type": "python", "function": "killsteps:tag"}],
        "sink": target,
        "runtime": {"batch_size": 1000, "checkpoint_interval_ms": int(interval_s * 1000)}}))
    pkg = tmp_path / "pkg"
    r = adf("flink", "package", str(flow_dir / "kill.json"), "--out", str(pkg), "--shared", str(shared),
            "--python", FLINK_PYTHON, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # what the append sink holds, sampled while the job runs: how much was written between the
    # last checkpoint before the kill and the restore is the bound of its duplicates
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                samples.append((time.time(), _written(sink, data, url, topic)))
            stop.wait(0.1)

    cmd = readme_command(pkg)
    client = subprocess.Popen([*cluster.flink_cmd(), "run", "-p", "2", *cmd[2:]], cwd=str(tmp_path),
                              env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job = _job_by_name(cluster, f"adf kill_{sink} ")
        if sink != "file":
            threading.Thread(target=sample, daemon=True).start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _checkpoints(cluster, job).get("completed", 0) < 1:
            time.sleep(0.2)
        assert _checkpoints(cluster, job).get("completed", 0) >= 1, cluster.get(f"/jobs/{job}/checkpoints")
        assert client.poll() is None, "the job ended before a TaskManager could be killed"
        before_kill = cluster.get(f"/jobs/{job}/checkpoints")["latest"]["completed"]["trigger_timestamp"] / 1000
        written_before = _written(sink, data, url, topic)
        cluster.kill_taskmanager(next(i for i, tm in enumerate(cluster.taskmanagers) if tm.poll() is None))
        cluster.wait_for_taskmanager_loss(1)
        cluster.add_taskmanager()
        out, err = client.communicate(timeout=600)
    finally:
        stop.set()
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, out[-3000:] + err[-5000:]
    assert f"kill_{sink}: success on Flink (parallelism 2): {n} in, {n} out, 0 dead letters" in summary_line(out), out
    history = cluster.get(f"/jobs/{job}/exceptions").get("exceptionHistory", {}).get("entries") or []
    assert history, "the job did not restart: the TaskManager was not running it"
    details = cluster.get(f"/jobs/{job}/checkpoints")
    if sink == "file":
        ids = [json.loads(x)["id"] for x in (data / "out.jsonl").read_text().splitlines()]
        assert ids == list(range(n))  # every record once, none twice, in the input's order
        assert not list(data.glob("out.jsonl.adf-parts"))  # the parts were joined and removed
        duplicates = 0
    else:
        import redis

        from active_data_flow.connectors.rafka import stream_key

        client_r = redis.Redis.from_url(url)
        try:
            ids = []
            for partition in range(2):
                last = "-"
                while True:
                    entries = client_r.xrange(stream_key(topic, partition), min=last, count=50_000)
                    if last != "-":
                        entries = entries[1:]
                    if not entries:
                        break
                    ids.extend(json.loads(fields[b"v"])["id"]
                               for _, fields in entries)
                    last = entries[-1][0].decode()
            from active_data_flow.connectors.rafka import Admin

            Admin(url).delete_topic(topic)
        finally:
            client_r.close()
        assert set(ids) == set(range(n))  # nothing lost
        duplicates = len(ids) - n
        # at most what was written after the last checkpoint completed before the kill (a restore
        # goes back to it or to a later one) until the job was restored — the other subtask writes
        # on until Flink notices the loss (heartbeat.timeout) — and the splits then in progress
        restored_at = details["latest"]["restored"]["restore_timestamp"] / 1000
        at_checkpoint = max((w for t, w in samples if t <= before_kill), default=0)
        at_restore = min((w for t, w in samples if t >= restored_at), default=len(ids))
        bound = at_restore - at_checkpoint + 2 * split_records
        assert duplicates <= bound, (duplicates, bound, at_checkpoint, at_restore)
        print(f"written after the last checkpoint before the kill until the restore: {at_restore - at_checkpoint}")
    print(f"{sink}: {written_before} written before the kill; restarts {len(history)}; "
          f"checkpoints {_checkpoints(cluster, job)}; duplicates {duplicates}")


def test_a_streaming_rafka_job_checkpoints_takes_a_savepoint_and_resumes_from_it(
        cluster: FlinkCluster, shared: Path, tmp_path: Path) -> None:
    """3 partitions at parallelism 2: every partition read; checkpoints complete; entries are
    acknowledged once a checkpoint covers them; `flink stop` takes a savepoint right after records
    were written, records sent while the job is stopped are read by the job resumed from it
    (`flink run -s`): every record once — nothing lost, nothing read twice."""
    import uuid

    import redis

    from active_data_flow.connectors.rafka import Admin, Producer, stream_key

    url = "redis://127.0.0.1:6379"
    topic = f"flink-sp-{uuid.uuid4().hex[:8]}"
    admin = Admin(url)
    admin.create_topic(topic, 3)
    out = shared / f"{topic}.jsonl"
    spec = tmp_path / "stream.json"
    spec.write_text(json.dumps({
        "name": "sp_stream", "source": {"type": "rafka", "url": url, "topic": topic, "group": "g", "bounded": False},
        "sink": {"type": "file", "path": str(out), "format": "jsonl"},
        "runtime": {"checkpoint_interval_ms": 1000, "idle_sleep_s": 0.05}}))
    pkg = tmp_path / "pkg"
    r = adf("flink", "package", str(spec), "--out", str(pkg), "--shared", str(shared), "--python", FLINK_PYTHON,
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "give the flow a dead_letter sink" in r.stderr  # its dead letters would stay on the workers
    client_r = redis.Redis.from_url(url)

    def ids() -> list[int]:
        return [json.loads(x)["id"] for x in out.read_text().splitlines()] if out.exists() else []

    def wait_for(n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(set(ids())) < n and time.monotonic() < deadline:
            time.sleep(0.25)

    def pending() -> int:
        return sum(int(client_r.xpending(stream_key(topic, p), "g")["pending"]) for p in range(3))

    def wait_for_no_pending(timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while pending() and time.monotonic() < deadline:
            time.sleep(0.25)
        return pending()

    producer = Producer(url)
    jobs: list[str] = []
    try:
        producer.send_batch(topic, [{"id": i} for i in range(3000)], key_field="id")
        producer.flush()
        r = submit(cluster, pkg, "-d", "-p", "2", cwd=tmp_path)
        found = re.search(r"submitted to Flink as job ([0-9a-f]{32})", r.stdout)
        assert found, r.stdout + r.stderr[-3000:]
        jobs.append(found.group(1))
        wait_for(3000)
        assert set(ids()) == set(range(3000)), "a partition was not read"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _checkpoints(cluster, jobs[0]).get("completed", 0) < 2:
            time.sleep(0.5)
        first = _checkpoints(cluster, jobs[0])
        history = cluster.get(f"/jobs/{jobs[0]}/checkpoints").get("history") or []
        # (a checkpoint due while the tasks were still starting counts as failed, without a history entry)
        assert first.get("completed", 0) >= 2, first
        assert not [h for h in history if h.get("status") == "FAILED"], history
        assert wait_for_no_pending() == 0  # acknowledged once checkpoints covered them
        # written just before the savepoint: not acknowledged yet, held in the job's state
        producer.send_batch(topic, [{"id": i} for i in range(3000, 4000)], key_field="id")
        producer.flush()
        wait_for(4000)
        savepoints = shared / "savepoints"
        r = cluster.flink("stop", "--savepointPath", str(savepoints), jobs[0], timeout=180)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        saved = re.search(r"Savepoint completed\. Path: (\S+)", r.stdout)
        assert saved, r.stdout
        assert cluster.get(f"/jobs/{jobs[0]}")["state"] == "FINISHED"
        unacked_at_stop = pending()
        # sent while no job runs: the resumed job reads them
        producer.send_batch(topic, [{"id": i} for i in range(4000, 5500)], key_field="id")
        producer.flush()
        r = submit(cluster, pkg, "-d", "-p", "2", "-s", saved.group(1), cwd=tmp_path)
        found = re.search(r"submitted to Flink as job ([0-9a-f]{32})", r.stdout)
        assert found, r.stdout + r.stderr[-3000:]
        jobs.append(found.group(1))
        wait_for(5500)
        assert wait_for_no_pending() == 0
        time.sleep(2)  # nothing more arrives
        got = ids()
        assert sorted(got) == list(range(5500)), (len(got), sorted(set(range(5500)) - set(got))[:20])
        restored = cluster.get(f"/jobs/{jobs[1]}/checkpoints").get("latest", {}).get("restored") or {}
        assert restored.get("is_savepoint") is True, restored
        print(f"streaming: checkpoints before the savepoint {first}; {unacked_at_stop} entries written and "
              "not acknowledged at the savepoint, acknowledged by the resumed job from its state; no duplicates")
    finally:
        for job in jobs:
            cluster.flink("cancel", job, timeout=60)
        client_r.close()
        admin.delete_topic(topic)
