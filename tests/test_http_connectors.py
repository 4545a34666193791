"""HTTP source and sink against a real HTTP server on loopback: pagination kinds, page splits
read in parallel, auth, retries (429 + Retry-After, 5xx), incremental runs, resume inside a
page, sink batches with idempotency keys, dead letters for refused records, redaction."""

from __future__ import annotations

import base64
import email.utils
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from active_data_flow.connectors.http import (
    HttpSink,
    HttpSource,
    HttpSplit,
    json_path,
    parse_link_header,
    retry_after_seconds,
    with_params,
)
from active_data_flow.connectors.memory import MemorySink
from active_data_flow.engine import run_flow
from active_data_flow.errors import ConfigError
from active_data_flow.logs import JsonFormatter
from active_data_flow.source import CollectingEnumeratorContext, DetachedReaderContext, ReaderStatus
from active_data_flow.state import MemoryStateStore, SqliteStateStore


def _explain(spec_file: Path) -> str:
    """``adf config explain --json`` output (a real process, like a user runs it)."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "tests")])}
    res = subprocess.run([sys.executable, "-m", "active_data_flow.cli", "config", "explain", str(spec_file), "--json"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


# --------------------------------------------------------------------------- a test API server


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


Reply = tuple[int, dict[str, str], Any]
Route = Callable[[Seen], Reply]


@dataclass
class Api:
    base: str = ""
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return self.base + path

    def hits(self, path: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path == path]


def _handler(api: Api) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(
                self.command,
                parts.path,
                dict(urllib.parse.parse_qsl(parts.query)),
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length) if length else b"",
            )
            with api.lock:
                api.seen.append(seen)
            route = api.routes.get(parts.path)
            reply: Reply = (404, {}, {"error": "no route"}) if route is None else route(seen)
            status, headers, body = reply
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            headers = {"Content-Type": "application/json", **headers}
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = _serve
        do_POST = _serve
        do_PUT = _serve

    return Handler


@pytest.fixture
def api() -> Iterator[Api]:
    state = Api()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


ITEMS = [{"id": i, "name": f"item-{i}"} for i in range(1, 12)]


def _run(spec_source: dict[str, Any], tmp_path: Path, **kw: Any) -> tuple[Any, list[dict[str, Any]]]:
    name = kw.pop("name", "http_flow")
    runtime = kw.pop("runtime", {"batch_size": 4, "retries": 0})
    spec = {"name": name, "source": spec_source, "sink": {"type": "memory", "name": name}, "runtime": runtime}
    summary = run_flow(spec, state_dir=str(tmp_path / "state"), **kw)
    return summary, list(MemorySink.get(name))


# --------------------------------------------------------------------------- helpers


def test_helpers_json_path_link_header_retry_after_params() -> None:
    doc = {"data": {"items": [{"a": 1}, {"a": 2}]}, "links": {"next": None}}
    assert json_path(doc, "data.items.1.a") == 2
    assert json_path(doc, "") is doc
    assert json_path(doc, "data.nothing", "dflt") == "dflt"
    assert json_path(doc, "links.next", "dflt") is None
    header = '<https://x/items?page=2>; rel="next", <https://x/items?page=9>; rel="last"'
    assert parse_link_header(header) == {"next": "https://x/items?page=2", "last": "https://x/items?page=9"}
    assert parse_link_header('<https://x/a?b=1,2>; rel="prev next"')["next"] == "https://x/a?b=1,2"
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("soon") is None
    now = time.time()
    date = email.utils.formatdate(now + 5, usegmt=True)
    waited = retry_after_seconds(date, now=now)
    assert waited is not None and 3.5 <= waited <= 5.5
    assert retry_after_seconds(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0
    assert with_params("http://h/x?a=1&page=3", {"page": 4, "b": True, "skip": None}) == "http://h/x?a=1&page=4&b=true"


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="must start with http"):
        HttpSource(url="ftp://x")
    with pytest.raises(ConfigError, match="'type' must be one of next_link, link_header, page, offset, cursor"):
        HttpSource(url="http://x", pagination={"type": "magic"})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'limit' for page"):
        HttpSource(url="http://x", pagination={"type": "page", "limit": 5})
    with pytest.raises(ConfigError, match="basic needs 'password'"):
        HttpSource(url="http://x", auth={"type": "basic", "username": "u"})
    with pytest.raises(ConfigError, match=r"'param'.*is required with 'path_in_record'"):
        HttpSource(url="http://x", incremental={"path_in_record": "updated_at"})
    with pytest.raises(ConfigError, match="needs 'path_in_record'"):
        HttpSource(url="http://x", incremental={"param": "since"})
    with pytest.raises(ConfigError, match="'batch_size' must be 1 with format 'single'"):
        HttpSink(url="http://x", format="single", batch_size=5)
    assert {"auth", "headers"} <= HttpSource.secret_keys()
    assert {"auth", "headers"} <= HttpSink.secret_keys()


# --------------------------------------------------------------------------- pagination


def test_next_link_in_the_body(api: Api, tmp_path: Path) -> None:
    def items(seen: Seen) -> Reply:
        page = int(seen.query.get("page", "1"))
        chunk = ITEMS[(page - 1) * 3 : page * 3]
        nxt = f"/items?page={page + 1}&kind={seen.query['kind']}" if page * 3 < len(ITEMS) else None
        return 200, {}, {"data": {"items": chunk}, "links": {"next": nxt}}

    api.routes["/items"] = items
    summary, out = _run(
        {"type": "http", "url": api.url("/items"), "params": {"kind": "all"}, "records_path": "data.items",
         "pagination": {"type": "next_link", "path": "links.next"}},
        tmp_path,
    )
    assert summary.status == "success", summary.error
    assert out == ITEMS
    assert [s.query.get("page", "1") for s in api.hits("/items")] == ["1", "2", "3", "4"]
    assert all(s.query["kind"] == "all" for s in api.hits("/items"))


def test_link_header_with_the_body_as_the_list(api: Api, tmp_path: Path) -> None:
    def items(seen: Seen) -> Reply:
        page = int(seen.query.get("p", "1"))
        chunk = ITEMS[(page - 1) * 5 : page * 5]
        headers: dict[str, str] = {}
        if page * 5 < len(ITEMS):
            headers["Link"] = f'<{api.url("/list")}?p={page + 1}>; rel="next", <{api.url("/list")}?p=3>; rel="last"'
        return 200, headers, chunk

    api.routes["/list"] = items
    summary, out = _run(
        {"type": "http", "url": api.url("/list"), "pagination": {"type": "link_header"}}, tmp_path
    )
    assert summary.status == "success", summary.error
    assert out == ITEMS
    assert len(api.hits("/list")) == 3


def _paged(total: int, *, by_offset: bool = False) -> Route:
    rows = [{"id": i} for i in range(total)]

    def route(seen: Seen) -> Reply:
        if by_offset:
            start, size = int(seen.query.get("offset", "0")), int(seen.query.get("limit", "100"))
        else:
            size = int(seen.query.get("per_page", "100"))
            start = (int(seen.query.get("page", "1")) - 1) * size
        return 200, {}, {"meta": {"total": total}, "items": rows[start : start + size]}

    return route


def test_page_pagination_with_a_total_makes_page_splits_read_in_parallel(api: Api, tmp_path: Path) -> None:
    api.routes["/pages"] = _paged(23)
    out = tmp_path / "out.jsonl"
    spec = {
        "name": "pages_parallel",
        "source": {
            "type": "http", "url": api.url("/pages"), "records_path": "items",
            "pagination": {"type": "page", "param": "page", "start": 1, "size_param": "per_page", "size": 5,
                           "total_path": "meta.total"},
        },
        "sink": {"type": "file", "path": str(out)},
        "runtime": {"batch_size": 3, "parallelism": 2},
    }
    summary = run_flow(spec, state_dir=str(tmp_path / "state"))
    assert summary.status == "success", summary.error
    assert summary.parallelism == 2
    assert summary.splits == 5  # ceil(23 / 5) pages, one split each
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == list(range(23))
    pages = sorted(int(s.query["page"]) for s in api.hits("/pages"))
    assert pages == [1, 1, 2, 3, 4, 5]  # the enumerator's probe + one request per page
    assert all(s.query["per_page"] == "5" for s in api.hits("/pages"))


def test_offset_pagination_with_a_total_and_pages_per_split(api: Api, tmp_path: Path) -> None:
    api.routes["/off"] = _paged(10, by_offset=True)
    source = HttpSource(
        url=api.url("/off"), records_path="items",
        pagination={"type": "offset", "limit": 3, "total_path": "meta.total", "pages_per_split": 2},
    )
    splits = source.plan_splits()
    assert [(s.first, s.last) for s in splits] == [(0, 1), (2, 3)]
    assert sorted(r["id"] for r in source.each(batch_size=2)) == list(range(10))
    offsets = sorted(int(s.query["offset"]) for s in api.hits("/off"))
    assert offsets == [0, 0, 0, 3, 6, 9]  # two probes (plan_splits above, each()) + four pages


def test_sequential_page_and_offset_pagination_stop_at_an_empty_page(api: Api, tmp_path: Path) -> None:
    api.routes["/p"] = _paged(7)
    api.routes["/o"] = _paged(7, by_offset=True)
    src = HttpSource(url=api.url("/p"), records_path="items",
                     pagination={"type": "page", "size_param": "per_page", "size": 3})
    assert [r["id"] for r in src.each()] == list(range(7))
    assert [s.query["page"] for s in api.hits("/p")] == ["1", "2", "3", "4"]
    src = HttpSource(url=api.url("/o"), records_path="items", pagination={"type": "offset", "limit": 4})
    assert [r["id"] for r in src.each()] == list(range(7))
    assert [s.query["offset"] for s in api.hits("/o")] == ["0", "4", "7"]
    src = HttpSource(url=api.url("/p"), records_path="items", max_pages=2,
                     pagination={"type": "page", "size_param": "per_page", "size": 3})
    assert [r["id"] for r in src.each()] == list(range(6))


def _feed(rows: list[dict[str, Any]], size: int = 2) -> Route:
    """A change feed: the cursor is the last id returned (the same one again at the end)."""

    def route(seen: Seen) -> Reply:
        after = int(seen.query.get("cursor", "0"))
        chunk = [r for r in rows if r["id"] > after][:size]
        return 200, {}, {"data": chunk, "meta": {"next_cursor": str(chunk[-1]["id"]) if chunk else str(after)}}

    return route


def test_cursor_pagination(api: Api, tmp_path: Path) -> None:
    api.routes["/feed"] = _feed(ITEMS, size=4)
    summary, out = _run(
        {"type": "http", "url": api.url("/feed"), "records_path": "data",
         "pagination": {"type": "cursor", "param": "cursor", "path": "meta.next_cursor"}},
        tmp_path,
    )
    assert summary.status == "success", summary.error
    assert out == ITEMS
    assert [s.query.get("cursor") for s in api.hits("/feed")] == [None, "4", "8", "11"]


# --------------------------------------------------------------------------- auth and retries


def test_bearer_and_basic_auth_are_checked_by_the_server(api: Api, tmp_path: Path) -> None:
    def bearer(seen: Seen) -> Reply:
        if seen.headers.get("authorization") != "Bearer tok-123":
            return 401, {}, {"error": "bad token"}
        return 200, {}, ITEMS[:2]

    def basic(seen: Seen) -> Reply:
        expected = "Basic " + base64.b64encode(b"alice:wonder-land").decode()
        if seen.headers.get("authorization") != expected:
            return 401, {}, {"error": "who are you"}
        return 200, {}, ITEMS[2:4]

    api.routes["/bearer"] = bearer
    api.routes["/basic"] = basic
    src = HttpSource(url=api.url("/bearer"), auth={"type": "bearer", "token": "tok-123"})
    assert list(src.each()) == ITEMS[:2]
    src = HttpSource(url=api.url("/basic"), auth={"type": "basic", "username": "alice", "password": "wonder-land"})
    assert list(src.each()) == ITEMS[2:4]
    summary, _ = _run({"type": "http", "url": api.url("/bearer"), "auth": {"type": "bearer", "token": "nope"}},
                      tmp_path, name="bad_token")
    assert summary.status == "failed"
    assert "answered 401" in (summary.error or "") and "bad token" in (summary.error or "")
    assert "nope" not in json.dumps(summary.to_dict())


def test_429_with_retry_after_then_success(api: Api, tmp_path: Path) -> None:
    calls: list[float] = []

    def limited(seen: Seen) -> Reply:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return 429, {"Retry-After": "1"}, {"error": "slow down"}
        return 200, {}, ITEMS[:3]

    api.routes["/limited"] = limited
    src = HttpSource(url=api.url("/limited"), retries=2, retry_backoff_s=0.01)
    assert list(src.each()) == ITEMS[:3]
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.95  # waited as the server said, not the 0.01 s backoff


def test_a_500_that_recovers_and_one_that_does_not(api: Api, tmp_path: Path) -> None:
    state = {"n": 0}

    def flaky(seen: Seen) -> Reply:
        state["n"] += 1
        if state["n"] <= 2:
            return 500, {}, b"oops"
        return 200, {}, ITEMS[:1]

    api.routes["/flaky"] = flaky
    api.routes["/down"] = lambda seen: (503, {}, b"maintenance")
    src = HttpSource(url=api.url("/flaky"), retries=3, retry_backoff_s=0.01)
    assert list(src.each()) == ITEMS[:1]
    assert state["n"] == 3
    summary, _ = _run({"type": "http", "url": api.url("/down"), "retries": 2, "retry_backoff_s": 0.01},
                      tmp_path, name="down")
    assert summary.status == "failed"
    assert "answered 503 after 3 attempts: maintenance" in (summary.error or "")
    assert len(api.hits("/down")) == 3


def test_non_json_and_a_records_path_that_is_not_a_list_fail_the_run(api: Api, tmp_path: Path) -> None:
    api.routes["/html"] = lambda seen: (200, {"Content-Type": "text/html"}, b"<html>hello</html>")
    api.routes["/obj"] = lambda seen: (200, {}, {"data": {"items": {"id": 1}}, "count": 1})
    summary, _ = _run({"type": "http", "url": api.url("/html")}, tmp_path, name="html")
    assert summary.status == "failed" and summary.error_type == "HttpSourceError"
    assert "did not answer JSON (text/html): <html>hello</html>" in (summary.error or "")
    summary, _ = _run({"type": "http", "url": api.url("/obj"), "records_path": "data.items"}, tmp_path, name="obj")
    assert summary.status == "failed"
    assert "records_path 'data.items'" in (summary.error or "") and "is not a list (got dict)" in (summary.error or "")
    summary, _ = _run({"type": "http", "url": api.url("/obj"), "records_path": "data.rows"}, tmp_path, name="obj2")
    assert "is not a list (got nothing)" in (summary.error or "") and "top-level keys: count, data" in (summary.error or "")


def test_an_element_that_is_not_an_object_is_a_dead_letter(api: Api, tmp_path: Path) -> None:
    api.routes["/mixed"] = lambda seen: (200, {}, [{"id": 1}, 7, {"id": 2}])
    summary, out = _run({"type": "http", "url": api.url("/mixed")}, tmp_path, name="mixed")
    assert summary.status == "partial" and out == [{"id": 1}, {"id": 2}]
    assert summary.dead_letters == 1
    assert summary.dead_letter_destination is not None
    letter = json.loads(Path(summary.dead_letter_destination).read_text().splitlines()[0])
    assert letter["reason"] == "record 1 of the page is not an object (got int)"
    assert letter["origin"]["index"] == 1


# --------------------------------------------------------------------------- incremental


def _updated_rows(n: int, start: int = 1) -> list[dict[str, Any]]:
    return [{"id": i, "updated_at": f"2024-01-{i:02d}T00:00:00Z"} for i in range(start, start + n)]


def test_incremental_runs_remember_the_largest_value(api: Api, tmp_path: Path) -> None:
    rows = _updated_rows(5)

    def route(seen: Seen) -> Reply:
        since = seen.query.get("since")
        chosen = [r for r in rows if since is None or r["updated_at"] > since]
        page = int(seen.query.get("page", "1"))
        return 200, {}, {"items": chosen[(page - 1) * 2 : page * 2]}

    api.routes["/changes"] = route
    store = SqliteStateStore(str(tmp_path / "kv.db"))
    source = {"type": "http", "url": api.url("/changes"), "records_path": "items",
              "pagination": {"type": "page", "size_param": "n", "size": 2},
              "incremental": {"param": "since", "path_in_record": "updated_at"}}
    first, out = _run(source, tmp_path, name="inc", store=store)
    assert first.status == "success", first.error
    assert [r["id"] for r in out] == [1, 2, 3, 4, 5]
    keys = store.keys("http_cursor/inc/")
    assert len(keys) == 1 and store.get(keys[0]) == "2024-01-05T00:00:00Z"
    assert all("since" not in s.query for s in api.hits("/changes"))
    rows.extend(_updated_rows(3, start=6))
    api.seen.clear()
    second, out = _run(source, tmp_path, name="inc", store=store)
    assert second.status == "success", second.error
    assert [r["id"] for r in out] == [6, 7, 8]  # only the new items
    assert {s.query["since"] for s in api.hits("/changes")} == {"2024-01-05T00:00:00Z"}
    assert store.get(keys[0]) == "2024-01-08T00:00:00Z"
    third, out = _run(source, tmp_path, name="inc", store=store)  # nothing new: the value stays
    assert third.status == "success" and out == []
    assert store.get(keys[0]) == "2024-01-08T00:00:00Z"
    store.close()


def test_incremental_with_parallel_page_splits(api: Api, tmp_path: Path) -> None:
    rows = _updated_rows(9)

    def route(seen: Seen) -> Reply:
        since = seen.query.get("since")
        chosen = [r for r in rows if since is None or r["updated_at"] > since]
        page = int(seen.query.get("page", "1"))
        return 200, {}, {"total": len(chosen), "items": chosen[(page - 1) * 2 : page * 2]}

    api.routes["/ch"] = route
    store = SqliteStateStore(str(tmp_path / "kv.db"))
    spec = {
        "name": "inc_par",
        "source": {"type": "http", "url": api.url("/ch"), "records_path": "items",
                   "pagination": {"type": "page", "size_param": "n", "size": 2, "total_path": "total"},
                   "incremental": {"param": "since", "path_in_record": "updated_at"}},
        "sink": {"type": "file", "path": str(tmp_path / "out.jsonl"), "mode": "append"},
        "runtime": {"parallelism": 2, "batch_size": 2},
    }
    assert run_flow(spec, state_dir=str(tmp_path / "state"), store=store).status == "success"
    (key,) = store.keys("http_cursor/inc_par/")
    assert store.get(key) == "2024-01-09T00:00:00Z"
    rows.extend(_updated_rows(2, start=10))
    summary = run_flow(spec, state_dir=str(tmp_path / "state"), store=store)
    assert summary.status == "success" and summary.records_out == 2
    ids = [json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(ids) == list(range(1, 12))
    assert store.get(key) == "2024-01-11T00:00:00Z"
    store.close()


def test_incremental_cursor_mode_starts_the_next_run_from_the_last_cursor(api: Api, tmp_path: Path) -> None:
    rows = [{"id": i} for i in range(1, 6)]
    api.routes["/feed"] = _feed(rows, size=2)
    store = MemoryStateStore()
    source = {"type": "http", "url": api.url("/feed"), "records_path": "data",
              "pagination": {"type": "cursor", "path": "meta.next_cursor"}, "incremental": {}}
    first, out = _run(source, tmp_path, name="feed", store=store)
    assert first.status == "success", first.error
    assert [r["id"] for r in out] == [1, 2, 3, 4, 5]
    (key,) = store.keys("http_cursor/feed/")
    assert store.get(key) == "5"
    rows.extend({"id": i} for i in range(6, 9))
    api.seen.clear()
    second, out = _run(source, tmp_path, name="feed", store=store)
    assert second.status == "success", second.error
    assert [r["id"] for r in out] == [6, 7, 8]
    assert [s.query.get("cursor") for s in api.hits("/feed")] == ["5", "7", "8"]
    assert store.get(key) == "8"


# --------------------------------------------------------------------------- resume inside a page


def test_a_snapshot_resumes_inside_a_page_without_duplicates(api: Api) -> None:
    api.routes["/pg"] = _paged(10)
    source = HttpSource(url=api.url("/pg"), records_path="items",
                        pagination={"type": "page", "size_param": "per_page", "size": 4})
    enum = source.create_enumerator(CollectingEnumeratorContext())
    enum.start()
    (split,) = [source.split_from_dict(d) for d in enum.snapshot_state()["pending"]]
    reader = source.create_reader(DetachedReaderContext())
    reader.add_splits([split])
    reader.notify_no_more_splits()
    got = reader.poll_batch(3).records + reader.poll_batch(3).records  # page 1 (4) + 2 of page 2
    assert [r["id"] for r in got] == [0, 1, 2, 3, 4, 5]
    (snap,) = reader.snapshot_state()
    assert isinstance(snap, HttpSplit) and snap.position == {"next": 2, "skip": 2, "pages": 1, "value": None}
    reader.close()
    # a new reader (a restarted process) from the checkpointed split
    again = source.create_reader(DetachedReaderContext())
    again.add_splits([source.split_from_dict(json.loads(json.dumps(snap.to_dict())))])
    again.notify_no_more_splits()
    rest: list[dict[str, Any]] = []
    for _ in range(10):
        batch = again.poll_batch(100)
        rest += batch.records
        if batch.status is ReaderStatus.END_OF_INPUT:
            break
    assert [r["id"] for r in rest] == [6, 7, 8, 9]


# --------------------------------------------------------------------------- sink


@dataclass
class Received:
    requests: list[tuple[str | None, str, list[dict[str, Any]]]] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        return [r for _, _, batch in self.requests for r in batch]


def _collector(received: Received, *, fail_first: bool = False) -> Route:
    attempts: dict[bytes, int] = {}

    def route(seen: Seen) -> Reply:
        kind = seen.headers.get("content-type", "")
        if kind == "application/x-ndjson":
            batch = [json.loads(line) for line in seen.body.decode().splitlines()]
        else:
            body = json.loads(seen.body)
            batch = body if isinstance(body, list) else [body]
        attempts[seen.body] = attempts.get(seen.body, 0) + 1
        received.requests.append((seen.headers.get("idempotency-key"), kind, batch))
        if fail_first and attempts[seen.body] == 1:
            return 502, {}, {"error": "try again"}
        bad = [r["id"] for r in batch if r.get("bad")]
        if bad:
            return 400, {}, {"error": f"invalid records {bad}"}
        return 201, {}, {"ok": len(batch)}

    return route


def _sink_flow(api: Api, tmp_path: Path, name: str, records: list[dict[str, Any]], **sink: Any) -> Any:
    spec = {
        "name": name,
        "source": {"type": "memory", "records": records},
        "sink": {"type": "http", "url": api.url("/in"), **sink},
        "runtime": {"batch_size": 7, "retry_backoff_s": 0.01, "sink_retry": {"window_s": 0.5, "first_delay_s": 0.05}},
    }
    return run_flow(spec, state_dir=str(tmp_path / "state"))


def test_sink_json_array_batches_with_idempotency_keys(api: Api, tmp_path: Path) -> None:
    received = Received()
    api.routes["/in"] = _collector(received)
    records = [{"id": i} for i in range(10)]
    summary = _sink_flow(api, tmp_path, "to_api", records, batch_size=3)
    assert summary.status == "success", summary.error
    assert received.records() == records
    # engine batches of 7 → requests of 3, 3, 1 then 3
    assert [len(b) for _, _, b in received.requests] == [3, 3, 1, 3]
    assert {kind for _, kind, _ in received.requests} == {"application/json"}
    keys = [k for k, _, _ in received.requests]
    assert all(k and len(k) == 64 for k in keys) and len(set(keys)) == 4
    sink = HttpSink(url=api.url("/in"))
    sink.run_context.run_id = summary.run_id
    assert keys[0] == sink.idempotency_key(sink.encode(records[:3]))


def test_sink_ndjson_and_single(api: Api, tmp_path: Path) -> None:
    received = Received()
    api.routes["/in"] = _collector(received)
    records = [{"id": i} for i in range(5)]
    assert _sink_flow(api, tmp_path, "nd", records, format="ndjson", batch_size=2).status == "success"
    assert [len(b) for _, _, b in received.requests] == [2, 2, 1]
    assert {kind for _, kind, _ in received.requests} == {"application/x-ndjson"}
    received.requests.clear()
    assert _sink_flow(api, tmp_path, "one", records, format="single", method="PUT").status == "success"
    assert received.records() == records and len(received.requests) == 5
    assert {s.method for s in api.hits("/in")[-5:]} == {"PUT"}


def test_sink_retry_sends_the_same_idempotency_key(api: Api, tmp_path: Path) -> None:
    received = Received()
    api.routes["/in"] = _collector(received, fail_first=True)
    records = [{"id": i} for i in range(4)]
    summary = _sink_flow(api, tmp_path, "retry", records, batch_size=2, retry_backoff_s=0.01)
    assert summary.status == "success", summary.error
    keys = [k for k, _, _ in received.requests]
    assert len(keys) == 4 and keys[0] == keys[1] and keys[2] == keys[3] and keys[0] != keys[2]


def test_sink_400_dead_letters_the_refused_records_and_delivers_the_rest(api: Api, tmp_path: Path) -> None:
    received = Received()
    api.routes["/in"] = _collector(received)
    records = [{"id": i, "bad": i in (2, 8)} for i in range(12)]
    summary = _sink_flow(api, tmp_path, "refused", records, batch_size=3)
    assert summary.status == "partial", summary.error
    assert summary.records_out == 10 and summary.dead_letters == 2
    # requests without a bad record were answered 201: each good record was taken exactly once
    delivered = [r["id"] for _, _, batch in received.requests if not any(x["bad"] for x in batch) for r in batch]
    assert sorted(delivered) == [i for i in range(12) if i not in (2, 8)]
    assert summary.dead_letter_destination is not None
    letters = [json.loads(line) for line in Path(summary.dead_letter_destination).read_text().splitlines()]
    assert sorted(letter["record"]["id"] for letter in letters) == [2, 8]
    for letter in letters:
        assert letter["stage"] == "sink" and letter["error_type"] == "HttpRejected"
        assert "answered 400" in letter["reason"] and f"invalid records [{letter['record']['id']}]" in letter["reason"]


def test_sink_5xx_after_retries_and_401_fail_the_run(api: Api, tmp_path: Path) -> None:
    api.routes["/in"] = lambda seen: (503, {"Retry-After": "0"}, b"busy")
    summary = _sink_flow(api, tmp_path, "busy", [{"id": 1}], retries=2, retry_backoff_s=0.01)
    assert summary.status == "failed" and summary.error_type == "HttpSinkError"
    assert "answered 503 after 3 attempt(s): busy" in (summary.error or "")
    assert summary.dead_letters == 0
    api.routes["/in"] = lambda seen: (401, {}, b"no")
    summary = _sink_flow(api, tmp_path, "unauth", [{"id": 1}],
                         auth={"type": "basic", "username": "u", "password": "hunter2-pw"})
    assert summary.status == "failed" and summary.error_type == "HttpAuthError"
    assert "answered 401" in (summary.error or "")
    assert "hunter2-pw" not in json.dumps(summary.to_dict())


# --------------------------------------------------------------------------- redaction


def test_secrets_stay_out_of_logs_run_records_and_config_explain(
    api: Api, tmp_path: Path
) -> None:
    password, token = "pa55-w0rd-xyz", "custom-header-secret"

    def route(seen: Seen) -> Reply:
        if seen.headers.get("x-custom") != token:
            return 400, {}, {"error": "header missing"}
        return (503, {}, b"later") if len(api.hits("/s")) == 1 else (401, {}, b"wrong password")

    api.routes["/s"] = route
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("adf")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    source = {"type": "http", "url": api.url("/s"), "retries": 1, "retry_backoff_s": 0.01,
              "headers": {"X-Custom": token}, "auth": {"type": "basic", "username": "bob", "password": password}}
    try:
        summary, _ = _run(source, tmp_path, name="secret_flow")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert summary.status == "failed" and "answered 401" in (summary.error or "")
    logs = stream.getvalue()
    assert "retrying" in logs
    run_dir = tmp_path / "state" / "secret_flow" / "runs" / summary.run_id
    written = (run_dir / "summary.json").read_text()
    for secret in (password, token, base64.b64encode(f"bob:{password}".encode()).decode()):
        assert secret not in logs
        assert secret not in json.dumps(summary.to_dict())
        assert secret not in written
    spec_file = tmp_path / "flow.json"
    spec_file.write_text(json.dumps({
        "name": "secret_flow", "source": source,
        "sink": {"type": "http", "url": api.url("/out"), "headers": {"X-Custom": token}},
    }))
    shown = _explain(spec_file)
    assert "source.url" in shown
    assert password not in shown and token not in shown
