"""The http and sql steps with ``concurrency``: order, bounds, pooled connections, failures and
retries per record — against a real local HTTP server and real SQLite/PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from active_data_flow.connectors.memory import MemorySink
from active_data_flow.engine import run_flow
from active_data_flow.errors import ConfigError
from active_data_flow.steps_io import HttpStep

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class Api:
    """A threaded HTTP/1.1 server that counts what a client does to it.

    ``/r/<id>?delay_ms=&fail=&flaky=&hold=`` answers ``{"id": <id>}``: after ``delay_ms``;
    with ``fail=<status>`` that status; ``flaky=<n>``: 503 with ``Retry-After: 0`` for the
    first n calls of that id; ``hold=1``: waits until ``hold_for`` requests are in flight
    together. ``/moved/<id>`` (302) and ``/moved307/<id>`` (307) redirect to ``/r/<id>``. ``/gate/<i>``: record 0 answers only after record ``gate_after`` was answered.
    ``close_after_each``: the server closes every connection after its answer (without a
    ``Connection: close`` header); ``drop_second``: a connection's second request is read and
    left without an answer.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0
        self.calls: Counter[str] = Counter()
        self.answered: list[str] = []
        self.close_after_each = False
        self.drop_second = False
        self.hold_for = 1
        self.barrier: threading.Barrier | None = None
        self.gate = threading.Event()
        self.gate_after = "7"
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                self.served = 0
                with api.lock:
                    api.connections += 1

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.served += 1
                parts = urlsplit(self.path)
                rid = parts.path.rsplit("/", 1)[-1]
                with api.lock:
                    api.calls[rid] += 1
                    calls = api.calls[rid]
                    api.in_flight += 1
                    api.max_in_flight = max(api.max_in_flight, api.in_flight)
                try:
                    if api.drop_second and self.served == 2:
                        self.close_connection = True
                        return  # read, never answered
                    status, headers = api.decide(parts.path, parse_qs(parts.query), calls)
                finally:
                    with api.lock:
                        api.in_flight -= 1
                raw = json.dumps({"id": rid, "status": status}).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
                self.wfile.flush()
                with api.lock:
                    api.answered.append(rid)
                if rid == api.gate_after:
                    api.gate.set()
                if api.close_after_each:
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def decide(self, path: str, query: dict[str, list[str]], calls: int) -> tuple[int, dict[str, str]]:
        """The status and headers of one answer (after the asked delay or wait)."""
        def arg(name: str) -> int:
            return int(query.get(name, ["0"])[0])

        if path.startswith("/moved/"):
            return 302, {"Location": "/r/" + path.rsplit("/", 1)[-1]}
        if path.startswith("/moved307/"):
            return 307, {"Location": "/r/" + path.rsplit("/", 1)[-1]}
        if path.startswith("/gate/") and path.endswith("/0") and not self.gate.wait(10):
            return 504, {}
        if arg("hold"):
            try:
                (self.barrier or threading.Barrier(1)).wait(10)
            except threading.BrokenBarrierError:
                return 500, {}
        time.sleep(arg("delay_ms") / 1000)
        if calls <= arg("flaky"):
            return 503, {"Retry-After": "0"}
        return (arg("fail") or 200), {}

    def reset(self) -> None:
        with self.lock:
            self.in_flight = self.max_in_flight = self.connections = 0
            self.calls.clear()
            self.answered.clear()
        self.close_after_each = self.drop_second = False
        self.gate.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def shared_api() -> Iterator[Api]:
    api = Api()
    yield api
    api.close()


@pytest.fixture
def api(shared_api: Api) -> Api:
    shared_api.reset()
    return shared_api


def _run(step: dict[str, Any], records: list[dict[str, Any]], tmp_path: Path,
         batch_size: int = 500) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    name = f"io{uuid.uuid4().hex[:10]}"
    spec = {"name": name, "source": {"type": "memory", "records": records}, "steps": [step],
            "sink": {"type": "memory", "name": name}, "runtime": {"batch_size": batch_size}}
    summary = run_flow(spec, state_dir=str(tmp_path / name))
    letters: list[dict[str, Any]] = []
    if summary.dead_letters:
        letters = [json.loads(line) for line in Path(summary.dead_letter_destination).read_text().splitlines()]
    return summary, list(MemorySink.get(name)), letters


def _http(api: Api, path: str, **options: Any) -> dict[str, Any]:
    return {"type": "http", "url": api.url + path, "into": "api", "retry_backoff_s": 0.01, **options}


# --------------------------------------------------------------------------- http step


def test_answers_arriving_out_of_order_come_out_in_input_order(api: Api, tmp_path: Path) -> None:
    records = [{"id": str(i)} for i in range(24)]
    summary, out, _ = _run(_http(api, "/gate/${record.id}", concurrency=8), records, tmp_path)
    assert [r["id"] for r in out] == [str(i) for i in range(24)]
    assert [r["api"]["id"] for r in out] == [str(i) for i in range(24)]
    # record 0 was answered only after record 7: the server really answered out of order
    assert api.answered.index("7") < api.answered.index("0")
    assert (summary.records_in, summary.records_out, summary.dead_letters) == (24, 24, 0)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_never_more_than_concurrency_requests_in_flight(api: Api, tmp_path: Path, concurrency: int) -> None:
    api.barrier = threading.Barrier(concurrency)  # each request waits for `concurrency` in flight together
    records = [{"id": str(i)} for i in range(concurrency * 6)]
    _, out, letters = _run(_http(api, "/r/${record.id}?hold=1", concurrency=concurrency), records, tmp_path)
    assert letters == [] and len(out) == len(records)
    assert api.max_in_flight == concurrency


def test_connections_are_kept_alive_across_records_and_batches(api: Api, tmp_path: Path) -> None:
    records = [{"id": str(i)} for i in range(120)]
    _, out, _ = _run(_http(api, "/r/${record.id}", concurrency=4), records, tmp_path, batch_size=10)
    assert len(out) == 120 and sum(api.calls.values()) == 120
    assert 1 <= api.connections <= 4
    api.reset()
    _, out, _ = _run(_http(api, "/r/${record.id}"), records, tmp_path, batch_size=10)
    assert len(out) == 120 and api.connections == 1


def test_one_failing_record_among_successes_is_dead_lettered_with_its_position(api: Api, tmp_path: Path) -> None:
    records = [{"id": str(i), "fail": 404 if i == 13 else 0, "delay": (i * 7) % 5} for i in range(40)]
    step = _http(api, "/r/${record.id}?fail=${record.fail}&delay_ms=${record.delay}", concurrency=8)
    summary, out, letters = _run(step, records, tmp_path)
    assert [r["id"] for r in out] == [str(i) for i in range(40) if i != 13]
    assert len(letters) == 1
    assert letters[0]["record"]["id"] == "13" and letters[0]["origin"] == {"index": 13}
    assert "answered 404" in letters[0]["reason"] and letters[0]["stage"] == "step"
    assert summary.records_in == summary.records_out + summary.dead_letters == 40


def test_retry_after_503_is_honoured_per_record_under_concurrency(api: Api, tmp_path: Path) -> None:
    records = [{"id": str(i), "flaky": i % 3} for i in range(30)]  # 0, 1 or 2 answers of 503 first
    _, out, letters = _run(_http(api, "/r/${record.id}?flaky=${record.flaky}", concurrency=8, retries=2),
                           records, tmp_path)
    assert letters == [] and [r["id"] for r in out] == [str(i) for i in range(30)]
    assert all(r["api"]["status"] == 200 for r in out)
    assert {rid: api.calls[rid] for rid in api.calls} == {str(i): i % 3 + 1 for i in range(30)}


def test_retries_exhausted_on_503_dead_letter_only_that_record(api: Api, tmp_path: Path) -> None:
    records = [{"id": str(i), "flaky": 5 if i == 4 else 0} for i in range(12)]
    _, out, letters = _run(_http(api, "/r/${record.id}?flaky=${record.flaky}", concurrency=8, retries=1),
                           records, tmp_path)
    assert [r["id"] for r in out] == [str(i) for i in range(12) if i != 4]
    assert [letter["record"]["id"] for letter in letters] == ["4"] and "answered 503" in letters[0]["reason"]
    assert api.calls["4"] == 2


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_server_closing_kept_alive_connections_between_requests_is_handled(
    api: Api, tmp_path: Path, method: str
) -> None:
    api.close_after_each = True
    records = [{"id": str(i)} for i in range(40)]
    step = _http(api, "/r/${record.id}", method=method, concurrency=4,
                 **({"body": {"id": "${record.id}"}} if method == "POST" else {"retries": 0}))
    _, out, letters = _run(step, records, tmp_path)
    assert letters == [] and [r["id"] for r in out] == [str(i) for i in range(40)]
    assert dict(api.calls) == {str(i): 1 for i in range(40)}  # each request processed once
    assert api.connections == 40


def test_a_reused_connection_dropped_after_the_request_resends_only_idempotent_requests(
    api: Api, tmp_path: Path
) -> None:
    api.drop_second = True  # a connection's second request reaches the server and gets no answer
    records = [{"id": "a"}, {"id": "b"}]
    _, out, letters = _run(_http(api, "/r/${record.id}", retries=0), records, tmp_path)
    assert [r["id"] for r in out] == ["a", "b"] and letters == []
    assert api.calls == Counter({"a": 1, "b": 2})  # the GET went again on a new connection, once

    api.reset()
    api.drop_second = True
    _, out, letters = _run(_http(api, "/r/${record.id}", method="POST", body={"x": 1}, retries=0), records, tmp_path)
    assert [r["id"] for r in out] == ["a"]
    assert [letter["record"]["id"] for letter in letters] == ["b"]
    assert api.calls == Counter({"a": 1, "b": 1})  # the POST may have been processed: not sent again

    api.reset()
    api.drop_second = True
    _, out, letters = _run(_http(api, "/r/${record.id}", method="POST", body={"x": 1}, retries=1), records, tmp_path)
    assert [r["id"] for r in out] == ["a", "b"] and letters == []
    assert api.calls == Counter({"a": 1, "b": 2})  # ... unless the retry policy allows it


def test_redirects_are_followed_over_kept_alive_connections_as_urllib_follows_them(api: Api, tmp_path: Path) -> None:
    records = [{"id": str(i)} for i in range(6)]
    _, out, letters = _run(_http(api, "/moved/${record.id}", concurrency=2), records, tmp_path)
    assert letters == [] and [r["api"] for r in out] == [{"id": str(i), "status": 200} for i in range(6)]
    assert api.connections <= 2
    api.reset()
    _, out, _ = _run(_http(api, "/moved/${record.id}", method="POST", body={"a": 1}), records[:1], tmp_path)
    assert out[0]["api"] == {"id": "0", "status": 200}  # a POST redirected by 302 goes on as a GET
    _, out, letters = _run(_http(api, "/moved307/${record.id}", method="POST", body={"a": 1}), records[:1], tmp_path)
    assert out == [] and "answered 307" in letters[0]["reason"]  # ... and is not re-sent after a 307


def test_secrets_stay_out_of_dead_letters_and_references_resolve_per_record(api: Api, tmp_path: Path) -> None:
    records = [{"id": str(i), "fail": 400 if i % 5 == 0 else 0} for i in range(20)]
    step = _http(api, "/r/${record.id}?fail=${record.fail}", concurrency=4, method="POST",
                 headers={"Authorization": "Bearer ${context.token}"}, body={"n": "${record.id}"})
    name = f"io{uuid.uuid4().hex[:10]}"
    spec = {"name": name, "source": {"type": "memory", "records": records}, "steps": [step],
            "sink": {"type": "memory", "name": name}, "context": {"token": "t0psecret"}}
    summary = run_flow(spec, state_dir=str(tmp_path))
    text = Path(summary.dead_letter_destination).read_text()
    assert "t0psecret" not in text
    assert [json.loads(line)["record"]["id"] for line in text.splitlines()] == ["0", "5", "10", "15"]
    assert [r["api"]["id"] for r in MemorySink.get(name)] == [str(i) for i in range(20) if i % 5]


def test_concurrency_is_checked_when_the_step_is_configured(api: Api) -> None:
    for bad in (0, 65):
        with pytest.raises(ConfigError, match="concurrency"):
            HttpStep({"url": api.url, "concurrency": bad})


_outcomes = st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=0, max_size=40)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(outcomes=_outcomes, concurrency=st.sampled_from([1, 3, 8]))
def test_output_is_the_successes_and_dead_letters_the_failures_in_input_order(
    shared_api: Api, outcomes: list[tuple[int, bool]], concurrency: int
) -> None:
    config = _http(shared_api, "/r/${record.id}?delay_ms=${record.delay}&fail=${record.fail}",
                   concurrency=concurrency, retries=0)
    step = HttpStep({k: v for k, v in config.items() if k != "type"})
    step.run_context = None
    records = [{"id": str(i), "delay": delay, "fail": 500 if fails else 0} for i, (delay, fails) in enumerate(outcomes)]
    failed: list[tuple[Any, str]] = []
    step.open()
    try:
        out = step.process_batch(records, lambda record, exc, name: failed.append((record, str(exc))))
    finally:
        step.close()
    assert out == [{**r, "api": {"id": r["id"], "status": 200}} for r in records if not r["fail"]]
    assert [r["id"] for r, _ in failed] == [r["id"] for r in records if r["fail"]]
    assert all("answered 500" in reason for _, reason in failed)
    assert len(records) == len(out) + len(failed)


# --------------------------------------------------------------------------- sql step


def test_sql_step_on_sqlite_at_concurrency_4_keeps_order_and_writes_every_row(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t (id integer primary key, v text)")
        conn.executemany("insert into t values (?, ?)", [(i, f"v{i}") for i in range(50)])
        conn.execute("create table audit (id integer)")
    url = f"sqlite:///{db}"
    steps = {"type": "sql", "url": url, "query": "select v from t where id = :id", "params": {"id": "${record.id}"},
             "merge": True, "concurrency": 4}
    records = [{"id": i} for i in range(60)]  # 50..59 have no row: merge leaves them as they are
    _, out, _ = _run(steps, records, tmp_path, batch_size=16)
    assert out == [{"id": i, "v": f"v{i}"} if i < 50 else {"id": i} for i in range(60)]
    write = {"type": "sql", "url": url, "query": "insert into audit values (:id)", "params": {"id": "${record.id}"},
             "concurrency": 4}
    _, out, _ = _run(write, records, tmp_path)
    assert [r["sql"] for r in out] == [{"rowcount": 1}] * 60
    with sqlite3.connect(db) as conn:
        assert sorted(r[0] for r in conn.execute("select id from audit")) == list(range(60))


@pytest.fixture
def pg_table() -> Iterator[str]:
    sa = pytest.importorskip("sqlalchemy")
    engine = sa.create_engine(PG_URL)
    table = f"adf_lookup_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'create table "{table}" (id integer primary key, v text)'))
        conn.execute(sa.text(f'insert into "{table}" select g, \'v\' || g from generate_series(0, 199) g'))
    try:
        yield table
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'drop table if exists "{table}"'))
        engine.dispose()


@pytest.mark.postgres
def test_sql_step_on_postgres_at_concurrency_4_returns_each_records_own_row(pg_table: str, tmp_path: Path) -> None:
    step = {"type": "sql", "url": PG_URL, "query": f'select v, pg_backend_pid() as pid from "{pg_table}" where id = :id',
            "params": {"id": "${record.id}"}, "into": "row", "one": True, "concurrency": 4}
    records = [{"id": (i * 37) % 200} for i in range(200)]
    summary, out, letters = _run(step, records, tmp_path, batch_size=50)
    assert letters == [] and summary.records_out == 200
    assert [(r["id"], r["row"]["v"]) for r in out] == [(r["id"], f"v{r['id']}") for r in records]
    assert 1 <= len({r["row"]["pid"] for r in out}) <= 4  # the engine's pool: at most `concurrency` sessions
