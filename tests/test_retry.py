"""active_data_flow.retry: what counts as an outage (real errors from real drivers and servers), and the
one retry loop (backoff with jitter inside a window)."""

from __future__ import annotations

import socket
import sqlite3
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from active_data_flow.errors import ConfigError, RecordValidationError, SinkUnavailableError
from active_data_flow.retry import (
    RetriesExhausted,
    RetryPolicy,
    is_unavailable,
    retry_after_seconds,
    retry_call,
    unavailable_reason,
)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raised(fn: Any) -> BaseException:
    try:
        fn()
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


@pytest.fixture
def answering() -> Iterator[str]:
    """A server answering 503 on /busy, 400 on /bad, 401 on /auth."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = {"/busy": 503, "/bad": 400, "/auth": 401}.get(self.path, 200)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_network_failures_are_outages(answering: str) -> None:
    refused = _raised(lambda: socket.create_connection(("127.0.0.1", _closed_port()), timeout=2))
    assert "refused" in (unavailable_reason(refused) or "").lower()
    url_refused = _raised(lambda: urllib.request.urlopen(f"http://127.0.0.1:{_closed_port()}/", timeout=2))
    assert is_unavailable(url_refused)
    unresolvable = _raised(lambda: socket.getaddrinfo("no-such-host.invalid", 80))
    assert "resolve" in (unavailable_reason(unresolvable) or "")
    busy = _raised(lambda: urllib.request.urlopen(f"{answering}/busy", timeout=2))
    assert unavailable_reason(busy) == "the server answered 503: Service Unavailable"
    assert not is_unavailable(_raised(lambda: urllib.request.urlopen(f"{answering}/bad", timeout=2)))


@pytest.mark.postgres
def test_postgres_refused_unknown_database_and_constraint_errors() -> None:
    psycopg = pytest.importorskip("psycopg")
    sa = pytest.importorskip("sqlalchemy")
    assert is_unavailable(_raised(lambda: psycopg.connect(f"postgresql://root@127.0.0.1:{_closed_port()}/x")))
    missing = _raised(lambda: psycopg.connect("postgresql://root@127.0.0.1:5432/adf_no_such_database"))
    assert "does not exist" in (unavailable_reason(missing) or "")
    engine = sa.create_engine("postgresql+psycopg://root@127.0.0.1:5432/test")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE TEMP TABLE t (id int PRIMARY KEY, n int CHECK (n > 0))")
            for sql in ("INSERT INTO t VALUES (1, 1), (1, 2)", "INSERT INTO t VALUES (2, -1)",
                        "INSERT INTO t VALUES ('x', 1)"):
                exc = _raised(lambda sql=sql: conn.exec_driver_sql(sql))
                assert not is_unavailable(exc), exc  # about the record, not the server
                conn.rollback()
                conn.exec_driver_sql("CREATE TEMP TABLE IF NOT EXISTS t (id int PRIMARY KEY, n int CHECK (n > 0))")
            killed = _raised(lambda: conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())"))
            assert is_unavailable(killed), killed  # the server dropped the connection
    finally:
        engine.dispose()


def test_sqlite_file_problems_are_outages_and_constraints_are_not(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(db, timeout=0.05)
    assert unavailable_reason(_raised(lambda: other.execute("INSERT INTO t VALUES (1)"))) == "database is locked"
    holder.execute("COMMIT")
    other.execute("INSERT INTO t VALUES (1)")
    other.commit()
    assert not is_unavailable(_raised(lambda: other.execute("INSERT INTO t VALUES (1)")))
    assert is_unavailable(_raised(lambda: sqlite3.connect(tmp_path / "no" / "dir.db").execute("SELECT 1")))


def test_engine_errors_say_what_they_are() -> None:
    assert is_unavailable(SinkUnavailableError("the server is gone"))
    assert not is_unavailable(RecordValidationError("amount", "not a number"))
    assert not is_unavailable(ConfigError("sink 'sql'", ["'table' is required"]))
    assert not is_unavailable(ValueError("x"))


def test_retry_call_rides_out_an_outage_and_gives_up_after_its_window() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    calls = [0]

    def flaky() -> str:
        calls[0] += 1
        if calls[0] < 4:
            raise ConnectionResetError(104, "Connection reset by peer")
        return "ok"

    policy = RetryPolicy(window_s=10, first_delay_s=1, max_delay_s=3, jitter=0)
    assert retry_call(flaky, policy=policy, retryable=is_unavailable, what="x", sleep=sleep, clock=lambda: now[0]) == "ok"
    assert waits == [1, 2, 3]  # doubled, capped

    def down() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    waits.clear()
    now[0] = 0.0
    with pytest.raises(RetriesExhausted) as info:
        retry_call(down, policy=policy, retryable=is_unavailable, what="sink 'sql'", sleep=sleep, clock=lambda: now[0])
    assert sum(waits) <= 10 and info.value.attempts == len(waits) + 1
    assert str(info.value).startswith("sink 'sql': [Errno 111] Connection refused (still failing after")
    assert isinstance(info.value.last, ConnectionRefusedError)

    with pytest.raises(ValueError):  # not retryable: at once
        retry_call(lambda: int("x"), policy=policy, retryable=is_unavailable, what="x", sleep=sleep)


def test_jitter_spreads_waits_and_attempts_and_hints_bound_them() -> None:
    policy = RetryPolicy(first_delay_s=1, max_delay_s=100, jitter=0.5)
    delays = policy.delays()
    waits = [next(delays) for _ in range(6)]
    assert all(0.5 * 2**i <= w <= 2**i for i, w in enumerate(waits)) and len(set(waits)) > 1
    with pytest.raises(RetriesExhausted) as info:
        retry_call(lambda: (_ for _ in ()).throw(TimeoutError("timed out")),
                   policy=RetryPolicy(max_attempts=3, first_delay_s=0), retryable=is_unavailable, what="x",
                   sleep=lambda s: None)
    assert info.value.attempts == 3
    assert retry_after_seconds("7") == 7.0 and retry_after_seconds("junk") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0


def test_a_bad_retry_policy_is_refused_with_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        RetryPolicy.from_config({"window_s": -1, "jitter": 2, "wait": 1}, "runtime.sink_retry")
    problems = " ".join(info.value.problems)
    assert "unknown key 'wait'" in problems and "'window_s' must be a number" in problems and "jitter" in problems
    assert RetryPolicy.from_config({"window_s": 5}).window_s == 5.0
