"""The ``http`` source without a ``pagination`` setting: it finds the pagination in the first
response and reads every page, says which pagination it chose, and never drops pages in
silence (``pagination: none``, ``max_pages`` and next-page loops are warnings in the summary).
A real HTTP server on loopback serves the pages."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from active_data_flow.cli import main
from active_data_flow.connectors.http.paging import detect_next, follow_next, more_signalled
from active_data_flow.connectors.memory import MemorySink
from active_data_flow.engine import run_flow

#: how each style says where the next page is (and the detection the source reports)
STYLES = {
    "link_header": ("link_header", "Link"),
    "next": ("next_link", "next"),
    "links.next": ("next_link", "links.next"),
    "_links.next.href": ("next_link", "_links.next.href"),
    "relative_next": ("next_link", "next"),
    "next_cursor": ("cursor", "next_cursor"),
    "meta.next_cursor": ("cursor", "meta.next_cursor"),
    "nextPageToken": ("cursor", "nextPageToken"),
}


@dataclass
class PagedApi:
    """``/items``: ``total`` records, ``size`` per page, the next page told in ``style``."""

    base: str = ""
    total: int = 250
    size: int = 50
    style: str = "link_header"
    has_more_only: bool = False  # says has_more: true without any way to follow
    loop_at: int | None = None  # this page links back to the second one
    requests: list[str] = field(default_factory=list)

    def page(self, query: dict[str, str]) -> tuple[dict[str, str], Any]:
        token = query.get("page") or query.get("cursor") or query.get("pageToken") or "0"
        start = int(token.removeprefix("c")) if token.removeprefix("c").isdigit() else 0
        items = [{"id": i, "name": f"item-{i}"} for i in range(start, min(start + self.size, self.total))]
        following = start + self.size
        headers: dict[str, str] = {}
        body: dict[str, Any] = {"items": items}
        if self.loop_at is not None and start == self.loop_at:
            following = self.size
        elif following >= self.total:
            return headers, body
        if self.has_more_only:
            body["has_more"] = True
            return headers, body
        url = f"{self.base}/items?page={following}"
        if self.style == "link_header":
            headers["Link"] = f'<{url}>; rel="next", <{self.base}/items?page=0>; rel="first"'
        elif self.style == "next":
            body["next"] = url
        elif self.style == "relative_next":
            body["next"] = f"/items?page={following}"
        elif self.style == "links.next":
            body["links"] = {"self": f"{self.base}/items?page={start}", "next": url}
        elif self.style == "_links.next.href":
            body["_links"] = {"next": {"href": url}}
        elif self.style == "next_cursor":
            body["next_cursor"] = f"c{following}"
        elif self.style == "meta.next_cursor":
            body["meta"] = {"next_cursor": f"c{following}"}
        elif self.style == "nextPageToken":
            body["nextPageToken"] = f"c{following}"
        return headers, body


def _handler(api: PagedApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            api.requests.append(self.path)
            headers, body = api.page(dict(urllib.parse.parse_qsl(parts.query)))
            raw = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    return Handler


@pytest.fixture(scope="module")
def server() -> Iterator[PagedApi]:
    api = PagedApi()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def api(server: PagedApi) -> PagedApi:
    server.total, server.size, server.style = 250, 50, "link_header"
    server.has_more_only, server.loop_at = False, None
    server.requests.clear()
    return server


def _run(api: PagedApi, tmp_path: Path, name: str, **source: Any) -> tuple[Any, list[dict[str, Any]]]:
    spec = {
        "name": name,
        "source": {"type": "http", "url": f"{api.base}/items", "records_path": "items", **source},
        "sink": {"type": "memory", "name": name},
        "runtime": {"batch_size": 40, "retries": 0},
    }
    summary = run_flow(spec, state_dir=str(tmp_path / "state"))
    return summary, list(MemorySink.get(name))


def test_an_api_with_link_header_paging_is_read_completely_without_settings(
    api: PagedApi, tmp_path: Path
) -> None:
    summary, rows = _run(api, tmp_path, "link_pages")
    assert summary.status == "success", summary.error
    assert [r["id"] for r in rows] == list(range(250))
    assert summary.records_in == summary.records_out == 250
    assert len(api.requests) == 5
    assert summary.warnings == [
        {
            "message": "source 'http': no pagination set; following the Link header (rel=\"next\"), found in the "
            "first response",
            "kind": "pagination_detected",
            "paginator": "link_header",
            "field": "Link",
        }
    ]


def test_an_api_with_a_next_url_in_the_body_is_read_completely_without_settings(
    api: PagedApi, tmp_path: Path
) -> None:
    api.style = "next"
    summary, rows = _run(api, tmp_path, "body_next")
    assert summary.status == "success", summary.error
    assert [r["id"] for r in rows] == list(range(250))
    assert [(w["paginator"], w["field"]) for w in summary.warnings] == [("next_link", "next")]
    assert "the next page URL at 'next' of the body" in summary.warnings[0]["message"]


def test_a_body_cursor_is_sent_back_as_its_conventional_parameter(api: PagedApi, tmp_path: Path) -> None:
    api.style = "nextPageToken"
    summary, rows = _run(api, tmp_path, "token_pages")
    assert [r["id"] for r in rows] == list(range(250))
    assert "pageToken=c50" in api.requests[1]
    assert "sent as query parameter 'pageToken'" in summary.warnings[0]["message"]


def test_stopping_at_max_pages_while_a_next_page_is_linked_is_a_warning(
    api: PagedApi, tmp_path: Path
) -> None:
    api.style = "links.next"
    summary, rows = _run(api, tmp_path, "resume_auto", max_pages=2)
    assert [r["id"] for r in rows] == list(range(100))
    assert [w["kind"] for w in summary.warnings] == ["pagination_detected", "pages_not_followed"]
    assert "max_pages=2" in summary.warnings[1]["message"]


def test_pagination_none_reads_one_page_and_warns_that_more_were_signalled(
    api: PagedApi, tmp_path: Path
) -> None:
    summary, rows = _run(api, tmp_path, "explicit_none", pagination={"type": "none"})
    assert summary.status == "success"
    assert len(rows) == 50 and len(api.requests) == 1
    assert len(summary.warnings) == 1 and summary.warnings[0]["kind"] == "pages_not_followed"
    assert (
        "the Link header" in summary.warnings[0]["message"]
        and "pagination is 'none'" in summary.warnings[0]["message"]
    )


def test_a_has_more_flag_without_a_way_to_follow_is_a_warning(api: PagedApi, tmp_path: Path) -> None:
    api.has_more_only = True
    summary, rows = _run(api, tmp_path, "has_more")
    assert len(rows) == 50
    assert [w["kind"] for w in summary.warnings] == ["pages_not_followed"]
    assert "'has_more': true" in summary.warnings[0]["message"]


def test_a_next_link_back_to_a_page_already_read_stops_with_a_warning(api: PagedApi, tmp_path: Path) -> None:
    api.style, api.loop_at = "next", 100
    summary, rows = _run(api, tmp_path, "loop")
    assert summary.status == "success"
    assert [r["id"] for r in rows] == list(range(150))
    assert [w["kind"] for w in summary.warnings] == ["pagination_detected", "pagination_loop"]


def test_an_explicit_link_header_pagination_warns_about_a_loop_too(api: PagedApi, tmp_path: Path) -> None:
    api.loop_at = 50
    summary, rows = _run(api, tmp_path, "loop_explicit", pagination={"type": "link_header"})
    assert [r["id"] for r in rows] == list(range(100))
    assert [w["kind"] for w in summary.warnings] == ["pagination_loop"]


def test_a_single_page_api_is_one_request_and_no_warning(api: PagedApi, tmp_path: Path) -> None:
    api.total = 30
    summary, rows = _run(api, tmp_path, "single")
    assert len(rows) == 30 and len(api.requests) == 1 and summary.warnings == []


def test_adf_run_prints_the_chosen_pagination(
    api: PagedApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.style = "_links.next.href"
    spec = tmp_path / "flow.json"
    spec.write_text(
        json.dumps(
            {
                "name": "printed_paging",
                "source": {"type": "http", "url": f"{api.base}/items", "records_path": "items"},
                "sink": {"type": "memory", "name": "printed_paging"},
            }
        )
    )
    assert main(["run", str(spec), "--state-dir", str(tmp_path / "state")]) == 0
    out = capsys.readouterr().out
    assert "records in 250" in out
    assert (
        "warning: source 'http': no pagination set; following the next page URL at '_links.next.href'" in out
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    total=st.integers(min_value=0, max_value=130),
    size=st.integers(min_value=1, max_value=40),
    style=st.sampled_from(sorted(STYLES)),
    batch=st.integers(min_value=1, max_value=60),
)
def test_every_record_is_read_exactly_once_whatever_the_paging(
    server: PagedApi, tmp_path_factory: pytest.TempPathFactory, total: int, size: int, style: str, batch: int
) -> None:
    server.total, server.size, server.style, server.has_more_only, server.loop_at = (
        total,
        size,
        style,
        False,
        None,
    )
    server.requests.clear()
    name = "paged_property"
    spec = {
        "name": name,
        "source": {"type": "http", "url": f"{server.base}/items", "records_path": "items"},
        "sink": {"type": "memory", "name": name},
        "runtime": {"batch_size": batch, "retries": 0},
    }
    summary = run_flow(spec, state_dir=str(tmp_path_factory.mktemp("state")))
    ids = [r["id"] for r in MemorySink.get(name)]
    assert summary.status == "success", summary.error
    assert ids == list(range(total))
    pages = max(1, -(-total // size))
    assert len(server.requests) == pages
    detected = [(w["paginator"], w["field"]) for w in summary.warnings if w["kind"] == "pagination_detected"]
    assert detected == ([STYLES[style]] if pages > 1 else [])
    assert [w for w in summary.warnings if w["kind"] != "pagination_detected"] == []


def test_detection_helpers_on_hostile_bodies() -> None:
    assert detect_next(None, {"next": "not a url", "next_cursor": ""}) is None
    assert detect_next(None, {"next": None, "links": {"next": 5}}) is None
    assert detect_next(None, ["a", "list"]) is None
    assert detect_next(None, {"next_cursor": True}) is None  # a flag, not a cursor
    found = detect_next(None, {"@odata.nextLink": "https://x/y?$skip=10"})
    assert found is not None and (found.style, found.where) == ("next_link", "@odata.nextLink")
    cursor = detect_next(None, {"response_metadata": {"next_cursor": "dXNlcjpVMEc5V0ZYTlo="}})
    assert cursor is not None and (cursor.style, cursor.param) == ("cursor", "cursor")
    assert follow_next(cursor.as_list(), None, {"response_metadata": {"next_cursor": ""}}) is None
    assert more_signalled(None, {"hasMore": True}) == "'hasMore': true in the body"
    assert more_signalled(None, {"has_more": False}) is None
