"""Real sink outages in the middle of a run: the connection to PostgreSQL or to an HTTP API cut.

Every flow runs as ``adf run`` in its own process and writes through a :class:`TcpProxy` the
test cuts: open connections are reset and new ones refused, as when the server or the network
goes away. Nothing is mocked: the errors are the drivers' own.

What the engine owes (see "Reliability model" in the design notes): an outage shorter than
``runtime.sink_retry.window_s`` is ridden out; a longer one fails the run (exit 1, status
``failed``) with its checkpoint kept, so running the flow again resumes and writes the rest.
Either way no record is dead-lettered: dead letters are for records a sink refuses for their
content, and these records were not refused, they were not delivered. The counts of every run
add up (``records_in + fanned_out = records_out + filtered + dead_letters + in_flight``).

A run that parked the undelivered records in dead letters and ended ``success`` fails each
test below on its ``dead_letters == 0`` / status / exit code / every-id assertions.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import socketserver
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from adf_runs import start_run
from tcp_proxy import TcpProxy

PG = ("127.0.0.1", 5432)
PG_ADMIN = "postgresql://root@127.0.0.1:5432/test"
N = 20_000
BATCH = 200
#: seconds the pace step waits per batch: 100 batches, a run of about 3 s without outage
PACE_S = 0.03
OUTAGE_S = 15.0
#: how long a run may take at most, outage included (a run that hangs fails the test)
RUN_TIMEOUT_S = 120.0

# --------------------------------------------------------------------------- waiting


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.02) -> Any:
    """Poll ``check`` until it returns something true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


class Runs:
    """`adf run` processes of one test; any still running at the end are killed (their process group)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, spec: Path, state: Path) -> subprocess.Popen[str]:
        proc = start_run(spec, state)
        self.procs.append(proc)
        return proc

    @staticmethod
    def finish(proc: subprocess.Popen[str], timeout: float = RUN_TIMEOUT_S) -> tuple[int, dict[str, Any], str]:
        """Wait for ``proc``; its exit code, JSON summary (the last stdout line) and stderr."""
        stdout, stderr = proc.communicate(timeout=timeout)
        lines = stdout.strip().splitlines()
        assert lines, f"no summary on stdout (exit {proc.returncode}): {stderr[-3000:]}"
        return proc.returncode, json.loads(lines[-1]), stderr

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def runs() -> Iterator[Runs]:
    r = Runs()
    try:
        yield r
    finally:
        r.kill_all()


# --------------------------------------------------------------------------- flows


def make_input(tmp: Path, n: int = N) -> Path:
    src = tmp / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "pad": "x" * 40}) + "\n" for i in range(n)))
    return src


def write_spec(
    tmp: Path, src: Path, sink: dict[str, Any], *, window_s: float, pace_s: float = PACE_S, parallelism: int = 1
) -> Path:
    spec = {
        "name": "outage",
        # several splits, so that two reader processes share the file
        "source": {"type": "file", "path": str(src), "split_bytes": 300_000},
        "steps": [
            {"type": "python", "function": "flowlib.steps:pace", "batch": True, "options": {"seconds": pace_s}}
        ],
        "sink": sink,
        # max_delay_s: 2 so that a run notices within 2 s that the sink is back (the default 10 s
        # would only make the tests longer)
        "runtime": {
            "batch_size": BATCH, "parallelism": parallelism,
            "sink_retry": {"window_s": window_s, "first_delay_s": 0.2, "max_delay_s": 2},
        },
    }
    path = tmp / "flow.json"
    path.write_text(json.dumps(spec))
    return path


def dead_letter_lines(state: Path) -> int:
    """Dead letters written under ``state`` by every run so far."""
    return sum(p.read_bytes().count(b"\n") for p in state.rglob("dead_letters*.jsonl"))


def assert_counts_add_up(summary: dict[str, Any]) -> None:
    into = summary["records_in"] + summary["fanned_out"]
    out = summary["records_out"] + summary["filtered"] + summary["dead_letters"] + summary["in_flight"]
    assert into == out, f"counts do not add up: {summary}"


def assert_rode_out(code: int, summary: dict[str, Any], stderr: str, n: int = N) -> None:
    assert code == 0, stderr[-3000:]
    assert summary["status"] == "success", summary["error"]
    assert (summary["records_in"], summary["records_out"], summary["dead_letters"]) == (n, n, 0)
    assert '"msg": "retrying"' in stderr, "the run never saw the outage"
    assert_counts_add_up(summary)


def assert_failed_for_the_sink(code: int, summary: dict[str, Any], sink_type: str) -> None:
    assert code == 1, summary
    assert summary["status"] == "failed"
    assert summary["dead_letters"] == 0
    assert summary["error_type"] in ("SinkUnavailableError", "HttpSinkError"), summary["error_type"]
    error = summary["error"]
    assert f"sink {sink_type}" in error, error  # the sink, named
    assert "is unavailable" in error and "still failing after" in error, error  # retried, then given up
    # and what to do about it
    assert "make the sink reachable" in error and "run the flow again to resume" in error, error
    assert_counts_add_up(summary)


# --------------------------------------------------------------------------- PostgreSQL


@contextlib.contextmanager
def _admin() -> Iterator[Any]:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        yield conn


class PgDb:
    """A database of this test (created or not): its name, direct counts, and its sink URL."""

    def __init__(self, name: str) -> None:
        self.name = name

    def create(self) -> None:
        with _admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def url(self, port: int = PG[1]) -> str:
        return f"postgresql+psycopg://root@127.0.0.1:{port}/{self.name}"

    def counts(self, table: str = "t") -> tuple[int, int]:
        """COUNT(*) and COUNT(DISTINCT id) of ``table``, over a direct connection (not the proxy); (0, 0)
        while the table does not exist."""
        import psycopg

        with psycopg.connect(f"postgresql://root@127.0.0.1:{PG[1]}/{self.name}", autocommit=True) as conn:
            try:
                row = conn.execute(f'SELECT count(*), count(DISTINCT id) FROM "{table}"').fetchone()
            except psycopg.errors.UndefinedTable:
                return 0, 0
        assert row is not None
        return int(row[0]), int(row[1])


@pytest.fixture
def pg_db() -> Iterator[PgDb]:
    """A fresh database (dropped afterwards, with whatever connections still use it)."""
    db = PgDb(f"adf_outage_{uuid.uuid4().hex[:12]}")
    db.create()
    try:
        yield db
    finally:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')


@pytest.fixture
def missing_db() -> Iterator[PgDb]:
    """The name of a database that does not exist yet (dropped afterwards if the test created it)."""
    db = PgDb(f"adf_missing_{uuid.uuid4().hex[:12]}")
    try:
        yield db
    finally:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')


@pytest.fixture
def pg_proxy() -> Iterator[TcpProxy]:
    with TcpProxy(PG) as proxy:
        yield proxy


def pg_sink(db: PgDb, port: int) -> dict[str, Any]:
    return {"type": "sql", "url": db.url(port), "table": "t", "mode": "upsert", "key": "id"}


def cut_when_rows(db: PgDb, proxy: TcpProxy, proc: subprocess.Popen[str], at_least: int = 2_000) -> int:
    """Cut the proxy once the run has written ``at_least`` rows; the rows written by then."""
    wait_until(lambda: db.counts()[0] >= at_least or proc.poll() is not None, 60, f"{at_least} rows")
    assert proc.poll() is None, "the run ended before the outage"
    proxy.cut()
    rows = db.counts()[0]
    assert rows < N, "the run wrote everything before the outage"
    return rows


def rerun_succeeds(runs: Runs, spec: Path, state: Path, *, resumed_of: int | None = None) -> dict[str, Any]:
    """Run ``spec`` again once the sink is back: exit 0, success, nothing dead-lettered, counts
    that add up (and, with ``resumed_of``, a resume that read fewer than that many records)."""
    code, again, stderr = runs.finish(runs.start(spec, state))
    assert code == 0, stderr[-3000:]
    assert again["status"] == "success" and again["dead_letters"] == 0, again
    if resumed_of is not None:
        assert again["resumed"] is True, again
        assert again["records_in"] < resumed_of, "the rerun read everything again instead of resuming"
    assert_counts_add_up(again)
    assert dead_letter_lines(state) == 0
    return again


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_cut_for_15s_mid_run_is_ridden_out_within_the_retry_window(
    tmp_path: Path, pg_db: PgDb, pg_proxy: TcpProxy, runs: Runs
) -> None:
    """Two reader processes upsert into PostgreSQL through the proxy; it is cut for 15 s mid-run.

    With ``sink_retry.window_s: 60`` the run waits for the database and ends ``success`` with
    every id in the table exactly once and no dead letter. (Dead-lettering the batches written
    during the outage would leave ids missing from the table and dead_letters > 0.)
    """
    state = tmp_path / "state"
    spec = write_spec(tmp_path, make_input(tmp_path), pg_sink(pg_db, pg_proxy.port), window_s=60, parallelism=2)
    proc = runs.start(spec, state)
    cut_when_rows(pg_db, pg_proxy, proc)
    # the outage itself; a commit the cut raced with is visible after 1 s
    time.sleep(1)
    before = pg_db.counts()[0]
    time.sleep(OUTAGE_S - 1)
    assert proc.poll() is None, "the run ended during an outage shorter than its retry window"
    assert pg_db.counts()[0] == before, "rows were written while the database was unreachable"
    pg_proxy.restore()

    code, summary, stderr = runs.finish(proc)
    assert_rode_out(code, summary, stderr)
    assert pg_db.counts() == (N, N)
    assert dead_letter_lines(state) == 0


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_cut_longer_than_the_window_fails_the_run_and_the_rerun_resumes_exactly_once(
    tmp_path: Path, pg_db: PgDb, pg_proxy: TcpProxy, runs: Runs
) -> None:
    """The same flow with ``sink_retry.window_s: 3``: the outage outlasts the window.

    The run fails (exit 1, status ``failed``) while the database is still unreachable, names
    the sink and says what to do, dead-letters nothing, and its counts add up with the
    interrupted batches ``in_flight``. After the proxy is restored, running the same spec again
    resumes from the checkpoint (``resumed: true``, fewer records read than the file has) and
    the table ends with every id exactly once.
    """
    state = tmp_path / "state"
    spec = write_spec(tmp_path, make_input(tmp_path), pg_sink(pg_db, pg_proxy.port), window_s=3, parallelism=2)
    proc = runs.start(spec, state)
    cut_when_rows(pg_db, pg_proxy, proc)
    code, summary, _ = runs.finish(proc, timeout=OUTAGE_S)  # fails within the outage
    assert_failed_for_the_sink(code, summary, "postgresql")
    assert summary["in_flight"] > 0
    assert summary["records_out"] < N
    written = pg_db.counts()[0]
    assert written < N
    assert dead_letter_lines(state) == 0
    pg_proxy.restore()

    rerun_succeeds(runs, spec, state, resumed_of=N)
    assert pg_db.counts() == (N, N)


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_down_when_the_run_starts_is_waited_for(
    tmp_path: Path, pg_db: PgDb, pg_proxy: TcpProxy, runs: Runs
) -> None:
    """The database is unreachable before the run starts and comes back 5 s later: with
    ``window_s: 60`` the first write waits for it and the run ends ``success`` with every id
    once. (An engine that gave up on the first refused connection would fail the run or
    dead-letter the first batches.)"""
    n = 5_000
    state = tmp_path / "state"
    spec = write_spec(tmp_path, make_input(tmp_path, n), pg_sink(pg_db, pg_proxy.port), window_s=60, pace_s=0)
    pg_proxy.cut()
    proc = runs.start(spec, state)
    time.sleep(5)  # the outage itself
    assert proc.poll() is None, "the run did not wait for the database"
    assert pg_db.counts() == (0, 0)
    pg_proxy.restore()

    code, summary, stderr = runs.finish(proc)
    assert_rode_out(code, summary, stderr, n)
    assert pg_db.counts() == (n, n)
    assert dead_letter_lines(state) == 0


@pytest.mark.slow
@pytest.mark.postgres
def test_a_database_that_does_not_exist_fails_the_run_and_the_rerun_writes_everything_once(
    tmp_path: Path, missing_db: PgDb, runs: Runs
) -> None:
    """The sink's database does not exist (PostgreSQL answers 3D000 at connect): the run fails
    within its 2 s window with exit 1, names the database and says what to do, and dead-letters
    nothing. Once the database is created, the same spec runs again and writes every id once."""
    n = 2_000
    state = tmp_path / "state"
    spec = write_spec(tmp_path, make_input(tmp_path, n), pg_sink(missing_db, PG[1]), window_s=2, pace_s=0)
    started = time.monotonic()
    code, summary, _ = runs.finish(runs.start(spec, state), timeout=60)
    assert_failed_for_the_sink(code, summary, "postgresql")
    assert f'database "{missing_db.name}" does not exist' in summary["error"], summary["error"]
    assert summary["records_out"] == 0
    assert summary["duration_s"] < 2 + 3, "the run kept trying well past its window"
    assert time.monotonic() - started < 30
    assert dead_letter_lines(state) == 0

    missing_db.create()
    rerun_succeeds(runs, spec, state)
    assert missing_db.counts() == (n, n)


# --------------------------------------------------------------------------- HTTP


class Receiver:
    """An HTTP endpoint on a thread that takes JSON arrays of records and keeps every id it got,
    in order of arrival (an id delivered twice is there twice).

    With :meth:`cut_after`, the request that brings the count to ``n`` is stored and then the
    proxy is cut before it is answered: the client never learns that it was delivered, the one
    case where at-least-once delivery sends records twice.
    """

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.lock = threading.Lock()
        self.cut = threading.Event()
        self._cut_at: tuple[int, TcpProxy] | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                records = json.loads(body)
                receiver.store([int(r["id"]) for r in records])
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # an answer to a connection the proxy reset: expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def cut_after(self, n: int, proxy: TcpProxy) -> None:
        self._cut_at = (n, proxy)

    def store(self, ids: list[int]) -> None:
        with self.lock:
            self.ids.extend(ids)
            if self._cut_at is not None and len(self.ids) >= self._cut_at[0] and not self.cut.is_set():
                self._cut_at[1].cut()
                self.cut.set()

    def received(self) -> Counter[int]:
        with self.lock:
            return Counter(self.ids)

    def count(self) -> int:
        with self.lock:
            return len(self.ids)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def http_proxy(receiver: Receiver) -> Iterator[TcpProxy]:
    with TcpProxy(("127.0.0.1", receiver.port)) as proxy:
        yield proxy


def http_sink(port: int) -> dict[str, Any]:
    # requests of half an engine batch, so a batch the outage interrupts is partly delivered
    return {"type": "http", "url": f"http://127.0.0.1:{port}/ingest", "batch_size": BATCH // 2}


def cut_when_received(receiver: Receiver, proxy: TcpProxy, proc: subprocess.Popen[str], at_least: int = 2_000) -> int:
    """Cut the proxy when the request that brings the records received to ``at_least`` has
    arrived, before it is answered; the records received by then."""
    receiver.cut_after(at_least, proxy)
    wait_until(lambda: receiver.cut.is_set() or proc.poll() is not None, 60, f"{at_least} records")
    assert receiver.cut.is_set(), "the run ended before the outage"
    got = receiver.count()
    assert got < N, "the run sent everything before the outage"
    return got


def assert_every_id_at_least_once(receiver: Receiver, n: int, cuts: int) -> None:
    """Every id arrived; the request whose answer a cut lost was sent again: one batch at most."""
    got = receiver.received()
    missing = set(range(n)) - set(got)
    assert not missing, f"{len(missing)} id(s) never arrived, e.g. {sorted(missing)[:5]}"
    duplicates = sum(c - 1 for c in got.values())
    assert 0 < duplicates <= BATCH * cuts, f"{duplicates} duplicate deliveries for {cuts} outage(s)"


@pytest.mark.slow
def test_http_api_cut_for_15s_mid_run_is_ridden_out_within_the_retry_window(
    tmp_path: Path, receiver: Receiver, http_proxy: TcpProxy, runs: Runs
) -> None:
    """The HTTP sink posts batches to a real server through the proxy; it is cut for 15 s
    mid-run, between a request the server stored and its answer. The sink's own retries give
    up, the engine's 60 s window keeps trying, and the run ends ``success``: every id arrived,
    nothing dead-lettered. The request whose answer was lost is sent again (at-least-once), and
    only that one: duplicates are at most one batch."""
    state = tmp_path / "state"
    spec = write_spec(tmp_path, make_input(tmp_path), http_sink(http_proxy.port), window_s=60)
    proc = runs.start(spec, state)
    before = cut_when_received(receiver, http_proxy, proc)
    time.sleep(OUTAGE_S)  # the outage itself
    assert proc.poll() is None, "the run ended during an outage shorter than its retry window"
    assert receiver.count() == before, "records arrived while the API was unreachable"
    http_proxy.restore()

    code, summary, stderr = runs.finish(proc)
    assert_rode_out(code, summary, stderr)
    assert_every_id_at_least_once(receiver, N, cuts=1)
    assert dead_letter_lines(state) == 0


@pytest.mark.slow
def test_http_api_cut_longer_than_the_window_fails_the_run_and_the_rerun_resumes(
    tmp_path: Path, receiver: Receiver, http_proxy: TcpProxy, runs: Runs
) -> None:
    """With ``window_s: 3`` the HTTP outage outlasts the window: the run fails (exit 1,
    ``failed``, the sink named, nothing dead-lettered, counts adding up with ``in_flight``);
    after the API is back the same spec resumes and every id has arrived, duplicates bounded by
    the one batch the failure interrupted (the outage begins between a request the server
    stored and its answer, so that batch was partly delivered)."""
    state = tmp_path / "state"
    spec = write_spec(tmp_path, make_input(tmp_path), http_sink(http_proxy.port), window_s=3)
    proc = runs.start(spec, state)
    cut_when_received(receiver, http_proxy, proc)
    code, summary, _ = runs.finish(proc, timeout=OUTAGE_S * 2)  # the sink's own retries come first
    assert_failed_for_the_sink(code, summary, "http")
    assert summary["in_flight"] > 0
    assert summary["records_out"] < N
    assert dead_letter_lines(state) == 0
    http_proxy.restore()

    rerun_succeeds(runs, spec, state, resumed_of=N)
    assert_every_id_at_least_once(receiver, N, cuts=1)


# --------------------------------------------------------------------------- nothing listening


@pytest.mark.slow
@pytest.mark.parametrize("sink_type", [pytest.param("postgresql", marks=pytest.mark.postgres), "http"])
def test_a_closed_port_fails_the_run_and_the_rerun_writes_everything_once(
    tmp_path: Path, sink_type: str, runs: Runs, request: pytest.FixtureRequest
) -> None:
    """Nothing listens on the sink's port (connection refused): the run fails within its 2 s
    window, exit 1, nothing dead-lettered, the error naming the sink and saying what to do.
    Once something listens there, the same spec runs again and every record arrives once."""
    n = 2_000
    state = tmp_path / "state"
    stack = contextlib.ExitStack()
    request.addfinalizer(stack.close)
    db: PgDb | None = None
    receiver: Receiver | None = None
    if sink_type == "http":
        receiver = stack.enter_context(contextlib.closing(Receiver()))
        proxy = stack.enter_context(TcpProxy(("127.0.0.1", receiver.port)))
        sink = http_sink(proxy.port) | {"retries": 1, "retry_backoff_s": 0.1}
    else:
        db = request.getfixturevalue("pg_db")
        proxy = stack.enter_context(TcpProxy(PG))
        sink = pg_sink(db, proxy.port)
    proxy.cut()  # the port is closed: nothing listens on it
    spec = write_spec(tmp_path, make_input(tmp_path, n), sink, window_s=2, pace_s=0)
    code, summary, _ = runs.finish(runs.start(spec, state), timeout=60)
    assert_failed_for_the_sink(code, summary, sink_type)
    assert summary["records_out"] == 0
    assert summary["duration_s"] < 2 + 5, "the run kept trying well past its window"
    assert dead_letter_lines(state) == 0

    proxy.restore()
    rerun_succeeds(runs, spec, state)
    if receiver is not None:
        assert receiver.received() == Counter(range(n))
    else:
        assert db is not None and db.counts() == (n, n)


@pytest.mark.slow
@pytest.mark.parametrize("sink_type", [pytest.param("postgresql", marks=pytest.mark.postgres), "http"])
def test_a_server_that_never_answers_fails_the_run_without_dead_letters(
    tmp_path: Path, sink_type: str, runs: Runs, request: pytest.FixtureRequest
) -> None:
    """The sink's port takes connections but nothing ever answers (a hung server, a half-open
    network path): every attempt ends in the client's timeout (PostgreSQL ``connect_timeout``,
    the HTTP sink's ``timeout_s``). That is an outage like a refused connection: the run fails
    within its 3 s window (plus the attempt under way), exit 1, nothing dead-lettered, the whole
    batch in flight. Once a real server answers on that port, the same spec writes everything once.
    (A timeout taken for a refused record sends the whole batch, halved again and again, to the
    dead letters.)"""
    n = 500
    state = tmp_path / "state"
    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # the kernel completes the handshakes; nobody ever reads or answers
    request.addfinalizer(silent.close)
    port = silent.getsockname()[1]
    stack = contextlib.ExitStack()
    request.addfinalizer(stack.close)
    db: PgDb | None = None
    receiver: Receiver | None = None
    if sink_type == "http":
        receiver = stack.enter_context(contextlib.closing(Receiver()))
        target = ("127.0.0.1", receiver.port)
        sink = http_sink(port) | {"timeout_s": 1, "retries": 0}
    else:
        db = request.getfixturevalue("pg_db")
        target = PG
        sink = pg_sink(db, port) | {"url": db.url(port) + "?connect_timeout=2"}
    spec = write_spec(tmp_path, make_input(tmp_path, n), sink, window_s=3, pace_s=0)
    code, summary, _ = runs.finish(runs.start(spec, state), timeout=60)
    assert_failed_for_the_sink(code, summary, sink_type)
    assert (summary["records_out"], summary["in_flight"]) == (0, BATCH)
    assert summary["duration_s"] < 3 + 2 * 2 + 2, "the run kept trying well past its window"
    assert dead_letter_lines(state) == 0

    silent.close()
    stack.enter_context(TcpProxy(target, port=port))  # now something answers there
    rerun_succeeds(runs, spec, state)
    if receiver is not None:
        assert receiver.received() == Counter(range(n))
    else:
        assert db is not None and db.counts() == (n, n)


# --------------------------------------------------------------------------- the proxy itself


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server.server_address[:2]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_the_proxy_forwards_cuts_and_restores_on_the_same_port(echo: tuple[str, int]) -> None:
    with TcpProxy(echo) as proxy:
        port = proxy.port
        assert _roundtrip(port, b"hello") == b"hello"
        big = os.urandom(1 << 20)
        assert _roundtrip(port, big) == big

        open_conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        open_conn.sendall(b"ping")
        assert open_conn.recv(4) == b"ping"
        proxy.cut()
        # the open connection is gone: reset, or closed at once (no hang: the timeout is 5 s)
        try:
            assert open_conn.recv(4) == b""
        except ConnectionResetError:
            pass
        open_conn.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)

        proxy.restore()
        assert proxy.port == port
        assert _roundtrip(port, b"again") == b"again"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_the_proxy_resets_the_client_when_its_target_is_down() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    closed = probe.getsockname()[:2]
    probe.close()  # nothing listens there
    with TcpProxy(closed) as proxy, socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        try:
            assert sock.recv(1) == b""
        except ConnectionResetError:
            pass
