"""The ``http`` source: records from a paginated JSON API, in page splits when the total is known.

:class:`HttpSource` builds each page's request and reads its answer (the pagination kinds of
:mod:`active_data_flow.connectors.http.paging`), plans the splits and keeps the incremental value; its
reader hands out a page's records over as many polls as they need.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from active_data_flow.attributes import Attribute, at_least_one
from active_data_flow.connectors.http.common import COMMON_ATTRIBUTES, answer_snippet, check_url, make_client
from active_data_flow.connectors.http.paging import (
    PAGINATION_KEYS,
    NextPage,
    check_pagination,
    detect_next,
    follow_next,
    json_path,
    more_signalled,
    parse_link_header,
    with_params,
)
from active_data_flow.errors import AdfError, ConfigError
from active_data_flow.http_client import HttpNetworkError, HttpResponse
from active_data_flow.logs import get_logger, log_event
from active_data_flow.record import DeadLetter, Record
from active_data_flow.redact import redact_text
from active_data_flow.source import (
    ReaderBatch,
    ReaderStatus,
    Source,
    SourceReader,
    SourceReaderContext,
    Split,
    SplitEnumerator,
    SplitEnumeratorContext,
    SplitReader,
    StaticSplitEnumerator,
)

_log = get_logger("connectors.http")

_INCREMENTAL_KEYS = ("param", "path_in_record", "initial")
_MISSING: Any = object()


class HttpSourceError(AdfError):
    """The API answered something the source cannot read (an error status, not JSON, no records list)."""



def _later(a: Any, b: Any) -> Any:
    """The larger of two incremental values (None is smallest; mixed types compare as text)."""
    if a is None:
        return b
    if b is None:
        return a
    try:
        return b if b > a else a
    except TypeError:
        return b if str(b) > str(a) else a


def _check_incremental(value: Any) -> str | None:
    unknown = sorted(set(value) - set(_INCREMENTAL_KEYS))
    if unknown:
        return f"unknown key(s) {', '.join(map(repr, unknown))} (accepted: {', '.join(_INCREMENTAL_KEYS)})"
    if value.get("path_in_record") and not value.get("param"):
        return "'param' (the query parameter that carries the remembered value) is required with 'path_in_record'"
    return None


@dataclass
class HttpSplit(Split):
    """``kind`` ``sequential`` (follow the pagination from the start) or ``pages`` (page
    indexes ``first``..``last``, 0-based, inclusive). ``since`` is the incremental value the
    run started from (sent as the incremental ``param``; the start cursor in cursor mode)."""

    kind: str = "sequential"
    first: int = 0
    last: int = 0
    since: Any = None


class _HttpEnumerator(StaticSplitEnumerator):
    def __init__(
        self, context: SplitEnumeratorContext, source: HttpSource, checkpoint: Mapping[str, Any] | None
    ) -> None:
        super().__init__(context, checkpoint)
        self.source = source

    split_class = HttpSplit

    def discover_splits(self) -> list[Split]:
        return list(self.source.plan_splits())


class HttpSource(Source):
    """Reads records from a paginated JSON API (see the package doc)."""

    type_name = "http"
    attributes = (
        Attribute("url", str, required=True, check=check_url, help="the first page's URL"),
        Attribute("method", str, default="GET", choices=("GET", "POST")),
        Attribute("params", dict, help="query parameters added to the URL"),
        Attribute("body", object, help="JSON body of POST requests"),
        Attribute("records_path", str, default="", help="dotted path of the records list ('' = the body is the list)"),
        Attribute("pagination", dict, check=check_pagination,
                  help="{type: next_link|link_header|page|offset|cursor|none, ...}; default: detected from the "
                       "first response (Link header, a next URL or cursor in the body)"),
        *COMMON_ATTRIBUTES,
        Attribute("max_pages", int, check=at_least_one, help="stop after this many pages"),
        Attribute("incremental", dict, check=_check_incremental,
                  help="{param, path_in_record}: remember the largest value read; next run sends it as param"),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.url: str = self.config["url"]
        pagination = self.config["pagination"] or {}
        kind = pagination.get("type")
        #: the pagination kind; ``auto`` when none is set (found in the first answer)
        self.paging: str = kind or "auto"
        self.page_opts: dict[str, Any] = {**PAGINATION_KEYS.get(kind or "", {}), **pagination} if kind else {}
        inc = self.config["incremental"]
        self.incremental: dict[str, Any] | None = dict(inc) if inc is not None else None
        if self.incremental is not None and not self.incremental.get("path_in_record") and kind != "cursor":
            raise ConfigError(
                "source 'http'",
                ["'incremental' needs 'path_in_record' (the record field whose largest value is remembered), "
                 "or pagination type 'cursor' (the last cursor is remembered)"],
            )
        self.client = make_client("source 'http'", self.config, "application/json")
        self.results: dict[str, Any] = {}

    # -- incremental state -------------------------------------------------------

    @property
    def cursor_mode(self) -> bool:
        """Incremental by remembering the last pagination cursor (no ``path_in_record``)."""
        return self.incremental is not None and not self.incremental.get("path_in_record")

    def state_key(self) -> str:
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        return f"http_cursor/{self.run_context.flow_name}/{digest}"

    def _with_store(self, use: Callable[[Any], Any]) -> Any:
        store = self.run_context.store
        if store is not None:
            return use(store)
        from active_data_flow.state import open_state_store

        with open_state_store(None) as own:
            return use(own)

    def saved_value(self) -> Any:
        """The value remembered by the last successful run (or ``incremental.initial``), or None."""
        if self.incremental is None:
            return None
        saved = self._with_store(lambda store: store.get(self.state_key()))
        return saved if saved is not None else self.incremental.get("initial")

    def _results_dir(self) -> str:
        return os.path.join(self.run_context.state_dir, "http-incremental")

    def record_result(self, split: HttpSplit, value: Any) -> None:
        """A split is finished: keep its incremental value until the run succeeds."""
        if self.incremental is None or value is None:
            return
        self.results[split.split_id] = value
        if not os.path.isdir(self.run_context.state_dir):
            return  # a run that writes no files has one reader, in this process
        folder = self._results_dir()
        os.makedirs(folder, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", split.split_id)
        tmp = os.path.join(folder, f".{name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"split": split.split_id, "value": value}, f)
        os.replace(tmp, os.path.join(folder, f"{name}.json"))

    def _all_results(self) -> list[Any]:
        values = dict(self.results)
        folder = self._results_dir()
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.endswith(".json") and not name.startswith("."):
                    with contextlib.suppress(OSError, ValueError), open(os.path.join(folder, name), encoding="utf-8") as f:
                        data = json.load(f)
                        values.setdefault(str(data["split"]), data["value"])
        return list(values.values())

    def on_run_success(self) -> None:
        """Remember the run's largest value (or last cursor); a run that read nothing keeps the old one."""
        if self.incremental is None:
            return
        saved = self.saved_value()
        values = self._all_results()
        if not values:
            return
        new: Any = None
        if self.cursor_mode:
            new = values[-1]
        else:
            for value in values:
                new = _later(new, value)
            new = _later(saved, new)
        if new is not None and new != saved:
            self._with_store(lambda store: store.set(self.state_key(), new))
            log_event(_log, "incremental value saved", key=self.state_key())

    # -- requests ----------------------------------------------------------------

    def _base_params(self, split: HttpSplit) -> dict[str, Any]:
        params: dict[str, Any] = dict(self.config["params"] or {})
        if self.incremental is not None and not self.cursor_mode and split.since is not None:
            params[str(self.incremental["param"])] = split.since
        return params

    def start_state(self, split: HttpSplit) -> Any:
        """The ``next`` of a split that has not been read yet."""
        if split.kind == "pages":
            return split.first
        if self.paging == "page":
            return int(self.page_opts["start"])
        if self.paging == "offset":
            return int(self.page_opts["start"])
        if self.paging == "cursor":
            return split.since if self.cursor_mode else None
        return with_params(self.url, self._base_params(split))

    def request_url(self, split: HttpSplit, nxt: Any) -> str:
        """The URL of the request for state ``nxt`` of ``split``."""
        opts = self.page_opts
        if split.kind == "pages":
            index = int(nxt)
            if self.paging == "page":
                paging = {opts["param"]: int(opts["start"]) + index}
                if opts.get("size_param") and opts.get("size"):
                    paging[opts["size_param"]] = opts["size"]
            else:
                paging = {opts["param"]: int(opts["start"]) + index * int(opts["limit"])}
                if opts.get("limit_param"):
                    paging[opts["limit_param"]] = opts["limit"]
            return with_params(self.url, {**self._base_params(split), **paging})
        if self.paging == "page":
            paging = {opts["param"]: nxt}
            if opts.get("size_param") and opts.get("size"):
                paging[opts["size_param"]] = opts["size"]
            return with_params(self.url, {**self._base_params(split), **paging})
        if self.paging == "offset":
            paging = {opts["param"]: nxt}
            if opts.get("limit_param"):
                paging[opts["limit_param"]] = opts["limit"]
            return with_params(self.url, {**self._base_params(split), **paging})
        if self.paging == "cursor":
            extra = {opts["param"]: nxt} if nxt not in (None, "") else {}
            return with_params(self.url, {**self._base_params(split), **extra})
        return str(nxt)

    def fetch(self, url: str) -> tuple[HttpResponse, Any]:
        """GET (or POST) ``url``; the answer and its parsed JSON. Raises :class:`HttpSourceError`."""
        method = self.config["method"]
        body = self.config["body"]
        data = None
        headers: dict[str, str] = {}
        if method == "POST" and body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        shown = redact_text(url)
        try:
            resp = self.client.send(method, url, data, headers)
        except HttpNetworkError as exc:
            raise HttpSourceError(str(exc)) from None
        if not 200 <= resp.status < 300:
            tries = f" after {resp.attempts} attempts" if resp.attempts > 1 else ""
            raise HttpSourceError(f"source 'http': {method} {shown} answered {resp.status}{tries}: {answer_snippet(resp.body)}")
        try:
            doc = json.loads(resp.body.decode("utf-8-sig")) if resp.body.strip() else None
        except (UnicodeDecodeError, ValueError):
            kind = resp.header("Content-Type") or "no content type"
            raise HttpSourceError(
                f"source 'http': {method} {shown} did not answer JSON ({kind}): {answer_snippet(resp.body)}"
            ) from None
        return resp, doc

    def records_of(self, doc: Any, url: str) -> list[Any]:
        path = self.config["records_path"]
        items = json_path(doc, path, _MISSING)
        if not isinstance(items, list):
            got = "nothing" if items is _MISSING else type(items).__name__
            where = f"records_path {path!r}" if path else "the body (records_path '')"
            hint = ", ".join(sorted(doc)) if isinstance(doc, Mapping) else type(doc).__name__
            raise HttpSourceError(
                f"source 'http': {where} of {redact_text(url)} is not a list (got {got}); set records_path to the "
                f"dotted path of the records list (top-level keys: {hint})"
            )
        return items

    def next_state(self, split: HttpSplit, nxt: Any, url: str, resp: HttpResponse, doc: Any, items: list[Any]) -> tuple[Any, bool]:
        """``(next state, ended)`` after the page of state ``nxt``."""
        if split.kind == "pages":
            return int(nxt) + 1, not items or int(nxt) >= split.last
        kind = self.paging
        if kind == "next_link":
            link = json_path(doc, self.page_opts["path"])
            if not isinstance(link, str) or not link.strip():
                return None, True
            return urllib.parse.urljoin(resp.url or url, link.strip()), False  # the reader stops a loop
        if kind == "link_header":
            link = parse_link_header(resp.header("Link")).get("next")
            if not link:
                return None, True
            return urllib.parse.urljoin(resp.url or url, link), False
        if kind == "page":
            return int(nxt) + 1, not items
        if kind == "offset":
            return int(nxt) + len(items), not items
        if kind == "cursor":
            cursor = json_path(doc, self.page_opts["path"])
            if cursor in (None, "") or isinstance(cursor, Mapping | list) or not items or cursor == nxt:
                return None, True
            return cursor, False
        return None, True

    def auto_next(
        self, choice: list[Any] | None, url: str, resp: HttpResponse, doc: Any, items: list[Any]
    ) -> tuple[Any, bool, list[Any] | None]:
        """``(next URL, ended, choice)`` after a page read without a ``pagination`` setting:
        the first answer chooses the pagination (said in the log and the run summary), later
        pages follow it."""
        link = resp.header("Link")
        found = follow_next(choice, link, doc) if choice else detect_next(link, doc)
        if choice is None:
            if found is None:
                self.unfollowed(link, doc, url, "no pagination is set and none was recognised in it")
                return None, True, None
            choice = found.as_list()
            self._announce(found, url)
        if found is None:
            return None, True, choice
        if found.style == "cursor":
            if not items:
                self.unfollowed(link, doc, url, "its page is empty, so the cursor is not followed")
                return None, True, choice
            return with_params(url, {str(found.param): found.value}), False, choice
        return urllib.parse.urljoin(resp.url or url, found.value), False, choice

    def _announce(self, found: NextPage, url: str) -> None:
        message = f"source 'http': no pagination set; following {found.describe()}, found in the first response"
        log_event(_log, message, paginator=found.style, field=found.where, url=redact_text(url))
        self.run_context.warn(message, kind="pagination_detected", paginator=found.style, field=found.where)

    def unfollowed(self, link: str | None, doc: Any, url: str, why: str) -> None:
        """Warn (log and run summary) when the answer of ``url`` signals more pages the source will not read."""
        signal = more_signalled(link, doc)
        if signal is None:
            return
        message = (f"source 'http': the response says more pages follow ({signal}) but they are not read: {why}; "
                   "set 'pagination' (or raise 'max_pages') to read them")
        log_event(_log, message, logging.WARNING, url=redact_text(url))
        self.run_context.warn(message, kind="pages_not_followed")

    def next_cursor(self, doc: Any) -> Any:
        cursor = json_path(doc, self.page_opts.get("path"))
        return None if cursor in (None, "") or isinstance(cursor, Mapping | list) else cursor

    # -- planning ----------------------------------------------------------------

    def plan_splits(self) -> list[HttpSplit]:
        since = self.saved_value()
        opts = self.page_opts
        total_path = opts.get("total_path")
        pages_path = opts.get("total_pages_path")
        if self.paging not in ("page", "offset") or not (total_path or pages_path):
            return [HttpSplit("http-0", None, "sequential", since=since)]
        probe = HttpSplit("probe", None, "pages", 0, 0, since)
        url = self.request_url(probe, 0)
        _, doc = self.fetch(url)
        items = self.records_of(doc, url)
        if pages_path:
            pages = json_path(doc, pages_path)
            what = f"total_pages_path {pages_path!r}"
        else:
            total = json_path(doc, total_path)
            what = f"total_path {total_path!r}"
            size = int(opts["limit"]) if self.paging == "offset" else int(opts.get("size") or len(items) or 1)
            pages = math.ceil(total / size) if isinstance(total, int | float) and not isinstance(total, bool) else None
        if not isinstance(pages, int | float) or isinstance(pages, bool):
            raise HttpSourceError(
                f"source 'http': {what} of {redact_text(url)} is not a number; check pagination.{what.split()[0]}"
            )
        count = int(pages)
        if self.config["max_pages"]:
            count = min(count, int(self.config["max_pages"]))
        per = max(1, int(opts.get("pages_per_split") or 1))
        splits = []
        for first in range(0, count, per):
            last = min(first + per, count) - 1
            splits.append(HttpSplit(f"pages-{first}-{last}", None, "pages", first, last, since))
        log_event(_log, "http source planned page splits", pages=count, splits=len(splits))
        return splits

    # -- Source ------------------------------------------------------------------

    def create_enumerator(
        self, context: SplitEnumeratorContext, checkpoint: Mapping[str, Any] | None = None
    ) -> SplitEnumerator:
        return _HttpEnumerator(context, self, checkpoint)

    def create_reader(self, context: SourceReaderContext) -> SourceReader:
        return _HttpReader(context, self)

    split_class = HttpSplit

    def describe(self) -> str:
        return f"http {self.config['method']} {redact_text(self.url)}"


class _HttpReader(SplitReader):
    """Reads one page per fetch; a page bigger than the batch is handed out over several polls."""

    def __init__(self, context: SourceReaderContext, source: HttpSource) -> None:
        super().__init__(context)
        self.source = source
        self._buffer: list[Any] | None = None
        self._after: tuple[Any, bool, Any, Any] = (None, True, None, None)
        self._url = ""
        #: the URLs of the split's pages read so far: a next page among them is a loop
        self._seen: set[str] = set()

    def open_split(self, split: Split) -> None:
        self._buffer = None
        self._seen = set()

    def close_split(self, split: Split) -> None:
        self._buffer = None

    def _next_page(
        self, split: HttpSplit, pos: Mapping[str, Any], url: str, resp: HttpResponse, doc: Any, items: list[Any]
    ) -> tuple[Any, bool, Any]:
        """``(next state, ended, detected pagination)`` after the page of ``url``; a next URL
        already read ends the split with a warning instead of reading pages again forever."""
        source = self.source
        self._seen.add(url)
        choice = pos.get("auto")
        if split.kind == "sequential" and source.paging == "auto":
            nxt, ended, choice = source.auto_next(choice, url, resp, doc, items)
        else:
            nxt, ended = source.next_state(split, pos["next"], url, resp, doc, items)
            if source.paging == "none":
                source.unfollowed(resp.header("Link"), doc, url, "pagination is 'none'")
        if not ended and isinstance(nxt, str) and nxt in self._seen:
            message = ("source 'http': the response names a page already read as the next page; stopped there "
                       "instead of reading pages again in a loop")
            log_event(_log, message, logging.WARNING, url=redact_text(url), next=redact_text(nxt))
            source.run_context.warn(message, kind="pagination_loop")
            ended = True
        return nxt, ended, choice

    def _position(self, split: HttpSplit) -> dict[str, Any]:
        pos = split.position
        if isinstance(pos, Mapping):
            return dict(pos)
        start_value = split.since if self.source.cursor_mode else None
        return {"next": self.source.start_state(split), "skip": 0, "pages": 0, "value": start_value}

    def read_split(self, split: Split, max_records: int) -> tuple[ReaderBatch, bool]:
        assert isinstance(split, HttpSplit), f"not an HttpSplit: {split!r}"
        source = self.source
        pos = self._position(split)
        nbytes = 0
        if self._buffer is None:
            url = source.request_url(split, pos["next"])
            resp, doc = source.fetch(url)
            items = source.records_of(doc, url)
            nbytes = len(resp.body)
            nxt, ended, choice = self._next_page(split, pos, url, resp, doc, items)
            value = pos["value"]
            if source.cursor_mode:
                cursor = source.next_cursor(doc)
                if cursor is not None and items:
                    value = cursor
            self._after = (nxt, ended, value, choice)
            self._url = url
            self._buffer = items[int(pos["skip"]):]
        taken = self._buffer[:max_records]
        self._buffer = self._buffer[len(taken):]
        records: list[Record] = []
        dead: list[DeadLetter] = []
        first_index = int(pos["skip"])
        path = source.incremental.get("path_in_record") if source.incremental else None
        value = pos["value"]
        for i, item in enumerate(taken, first_index):
            if isinstance(item, dict):
                records.append(item)
                if path:
                    got = json_path(item, path)
                    if got is not None and not isinstance(got, Mapping | list | bool):
                        value = _later(value, got)
            else:
                dead.append(
                    DeadLetter(
                        item,
                        f"record {i} of the page is not an object (got {type(item).__name__})",
                        "source",
                        "ValueError",
                        {"url": redact_text(self._url), "index": i},
                    )
                )
        done = False
        if self._buffer:
            split.position = {**pos, "skip": first_index + len(taken), "value": value}
        else:
            nxt, ended, page_value, choice = self._after
            if source.cursor_mode:
                value = page_value
            pages = int(pos["pages"]) + 1
            max_pages = source.config["max_pages"]
            done = ended or (split.kind == "sequential" and max_pages is not None and pages >= int(max_pages))
            if done and not ended:
                source.run_context.warn(
                    f"source 'http': stopped after max_pages={max_pages} page(s) although the response links to "
                    "a next page; raise 'max_pages' to read the rest", kind="pages_not_followed",
                )
            split.position = {"next": nxt, "skip": 0, "pages": pages, "value": value}
            if source.paging == "auto":
                split.position["auto"] = choice
            self._buffer = None
            if done:
                source.record_result(split, value)
        return ReaderBatch(records, ReaderStatus.MORE_AVAILABLE, dead, input_bytes=nbytes), done
