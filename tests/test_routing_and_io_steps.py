"""Step ids and routing, ${...} references, and the http and sql steps, through real runs."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from active_data_flow.connectors.memory import MemorySink
from active_data_flow.engine import run_flow
from active_data_flow.errors import SpecError
from active_data_flow.refs import resolve
from active_data_flow.registry import registry
from active_data_flow.spec import parse_spec

registry.register("step", "route_by_field", "flowlib.steps:RouteByField")


def _run(steps: list[dict[str, Any]], records: list[dict[str, Any]], tmp_path: Path, **extra: Any) -> tuple[Any, list[Any]]:
    name = f"t{abs(hash(json.dumps(steps, default=str))) % 10**8}"
    spec = {"name": name, "source": {"type": "memory", "records": records}, "steps": steps,
            "sink": {"type": "memory", "name": name}, **extra}
    summary = run_flow(spec, state_dir=str(tmp_path))
    return summary, list(MemorySink.get(name))


def _tag(label: str, sid: str | None = None) -> dict[str, Any]:
    step = {"type": "python", "function": "flowlib.steps:tag", "options": {"label": label}}
    return {**step, "id": sid} if sid else step


# --------------------------------------------------------------------------- routing


def test_routing_sends_records_to_one_several_or_no_later_steps(tmp_path: Path) -> None:
    records = [
        {"k": "on"},                          # no decision: every step after the router
        {"k": "b", "to": ["b"]},              # skips a
        {"k": "bc", "to": ["b", "c"]},        # a copy to b and one to c
        {"k": "done", "to": []},              # straight to the sink
        {"k": "back", "to": ["router"]},      # not a later step: dead letter
    ]
    steps = [{"type": "route_by_field", "id": "router"}, _tag("a", "a"), _tag("b", "b"), _tag("c", "c")]
    summary, out = _run(steps, records, tmp_path)
    seen = sorted((r["k"], tuple(r.get("seen", []))) for r in out)
    assert seen == [("b", ("b", "c")), ("bc", ("b", "c")), ("bc", ("c",)), ("done", ()), ("on", ("a", "b", "c"))]
    assert summary.dead_letters == 1
    letters = [json.loads(x) for x in Path(summary.dead_letter_destination).read_text().splitlines()]
    assert letters[0]["record"]["k"] == "back"
    assert "invalid routing decision ['router']" in letters[0]["reason"] and "later steps: a, b, c" in letters[0]["reason"]


def test_a_static_next_makes_branches_that_end(tmp_path: Path) -> None:
    records = [{"k": "x", "to": ["small"]}, {"k": "y", "to": ["big"]}, {"k": "z"}]
    steps = [{"type": "route_by_field", "id": "router"},
             {**_tag("small", "small"), "next": []},   # a branch that ends at the sink
             {**_tag("big", "big"), "next": ["last"]},
             _tag("skipped", "skipped"),
             _tag("last", "last")]
    _, out = _run(steps, records, tmp_path)
    assert sorted((r["k"], tuple(r["seen"])) for r in out) == [("x", ("small",)), ("y", ("big", "last")),
                                                              ("z", ("small",))]


def test_step_ids_are_checked_when_the_flow_is_saved() -> None:
    base = {"name": "ids", "source": {"type": "memory", "records": []}, "sink": {"type": "memory"}}
    with pytest.raises(SpecError) as err:
        parse_spec({**base, "steps": [_tag("x", "same"), _tag("y", "same"), {**_tag("z"), "id": 3}]})
    assert "steps[1]: id 'same' is already used by steps[0]" in str(err.value)
    assert "steps[2]: 'id' must be a non-empty string" in str(err.value)
    with pytest.raises(SpecError) as err:
        parse_spec({**base, "steps": [{**_tag("a", "a"), "next": ["b", "a"]}, _tag("b", "b"), {**_tag("c"), "next": "b"}]})
    assert "steps[0]: next 'a' is not a later step (later steps: b, steps[2])" in str(err.value)
    assert "steps[2]: 'next' must be a list of step ids" in str(err.value)
    with pytest.raises(SpecError, match="'context' must be a mapping"):
        parse_spec({**base, "context": [1]})


# --------------------------------------------------------------------------- references


def test_references_keep_types_whole_and_format_inside_strings() -> None:
    ctx = {"tier": "gold", "limits": {"max": 5}, "ids": [7, 8]}
    rec = {"id": 3, "name": "x y"}
    assert resolve("${record.id}", ctx, rec) == 3
    assert resolve("/orders/${record.id}?t=${context.tier}", ctx, rec) == "/orders/3?t=gold"
    assert resolve({"a": ["${context.limits.max}", "${context.ids.1}"], "b": "$${literal}"}, ctx, rec) == \
        {"a": [5, 8], "b": "${literal}"}
    with pytest.raises(KeyError, match=r"\$\{context.nope\}: no 'nope'"):
        resolve("${context.nope}", ctx, rec)
    with pytest.raises(KeyError, match="no record"):
        resolve("${record.id}", ctx)


# --------------------------------------------------------------------------- http step


@pytest.fixture
def api() -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {"calls": [], "flaky": 1}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"null")
            state["calls"].append((self.path, dict(self.headers), body))
            if self.path.startswith("/orders/busy") and state["flaky"]:
                state["flaky"] -= 1
                self._answer(429, {"error": "slow down"}, {"Retry-After": "0"})
            elif self.path.startswith("/orders/bad"):
                self._answer(400, {"error": "bad order"})
            else:
                self._answer(201, {"accepted": self.path.rsplit("/", 1)[-1], "echo": body})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()


def test_http_step_posts_each_record_with_references_retries_429_and_dead_letters_a_400(
    api: dict[str, Any], tmp_path: Path
) -> None:
    steps = [{"type": "http", "method": "POST", "url": api["url"] + "/orders/${record.id}",
              "headers": {"Authorization": "Bearer ${context.token}"}, "body": {"qty": "${record.qty}"},
              "into": "api", "retry_backoff_s": 0.01}]
    records = [{"id": "a1", "qty": 2}, {"id": "busy", "qty": 1}, {"id": "bad", "qty": 9}]
    summary, out = _run(steps, records, tmp_path, context={"token": "s3cret"})
    assert sorted((r["id"], r["api"]["accepted"], r["api"]["echo"]) for r in out) == \
        [("a1", "a1", {"qty": 2}), ("busy", "busy", {"qty": 1})]
    assert summary.dead_letters == 1
    letter = json.loads(Path(summary.dead_letter_destination).read_text().splitlines()[0])
    assert letter["record"]["id"] == "bad" and "answered 400" in letter["reason"] and "bad order" in letter["reason"]
    assert api["calls"][0][1]["Authorization"] == "Bearer s3cret"
    assert [c[0] for c in api["calls"]].count("/orders/busy") == 2  # the 429, then the retry


# --------------------------------------------------------------------------- sql step


def test_sql_step_looks_up_and_writes_rows_per_record(tmp_path: Path) -> None:
    db = tmp_path / "lookup.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table customers (id integer primary key, tier text)")
        conn.executemany("insert into customers values (?, ?)", [(1, "gold"), (2, "basic")])
        conn.execute("create table audit (order_id text, tier text)")
    url = f"sqlite:///{db}"
    steps = [
        {"type": "sql", "url": url, "query": "select tier from customers where id = :id",
         "params": {"id": "${record.customer}"}, "merge": True},
        {"type": "sql", "url": url, "query": "insert into audit values (:o, :t)",
         "params": {"o": "${record.id}", "t": "${record.tier}"}, "into": "audit"},
    ]
    records = [{"id": "o1", "customer": 1}, {"id": "o2", "customer": 2}, {"id": "o3", "customer": 99}]
    summary, out = _run(steps, records, tmp_path)
    by_id = {r["id"]: r for r in out}
    assert by_id["o1"]["tier"] == "gold" and by_id["o2"]["tier"] == "basic" and by_id["o1"]["audit"] == {"rowcount": 1}
    # customer 99 has no row: merge leaves the record as it is, and ${record.tier} is then missing
    assert summary.dead_letters == 1
    letter = json.loads(Path(summary.dead_letter_destination).read_text().splitlines()[0])
    assert letter["record"]["id"] == "o3" and "${record.tier}" in letter["reason"]
    with sqlite3.connect(db) as conn:
        assert sorted(conn.execute("select * from audit")) == [("o1", "gold"), ("o2", "basic")]
