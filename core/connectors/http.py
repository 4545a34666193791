"""HTTP source and sink: JSON APIs over ``http://`` / ``https://`` with the standard library.

``http`` source
    ``{type: http, url: https://api.example.com/orders, records_path: data.items,
    pagination: {type: next_link, path: links.next}}`` — each response must be JSON;
    ``records_path`` is the dotted path of the records list in it (``""``: the body is the
    list; a number in a path indexes a list). A response that is not JSON, or whose
    ``records_path`` is not a list, fails the run with :class:`HttpSourceError` (a
    misconfiguration); an element of the list that is not an object becomes a dead letter.

    Pagination kinds (``pagination.type``):

    * ``next_link`` — the next page's URL is at ``path`` in the body (default ``links.next``;
      relative URLs are resolved against the request); stops when it is missing or empty;
    * ``link_header`` — the next page's URL is the ``Link: <…>; rel="next"`` header;
    * ``page`` — ``param`` (default ``page``) counts from ``start`` (default 1), with
      ``size_param``/``size`` sent when set; stops at an empty page;
    * ``offset`` — ``param`` (default ``offset``) from ``start`` (default 0) moved by the
      number of records received, ``limit_param``/``limit`` (default ``limit``/100); stops at
      an empty page;
    * ``cursor`` — the next cursor is at ``path`` (default ``meta.next_cursor``) and sent
      as ``param`` (default ``cursor``); stops when the cursor is missing, unchanged, or
      the page is empty.

    Splits: for ``page`` and ``offset`` with ``total_path`` (the total number of records in
    the first response) or ``total_pages_path``, the enumerator fetches the first page
    once, and makes one split per ``pages_per_split`` pages (default 1), so parallel
    readers fetch different pages. Otherwise the source is one sequential split. A split's
    position is ``{"next": <next URL | page | offset | cursor | page index>, "skip":
    <records of that page already read>, "pages": <pages read>, "value": <incremental
    value>}``, so a resumed run continues with the page it stopped in.

    ``incremental: {param: since, path_in_record: updated_at}`` remembers the largest
    ``path_in_record`` value read by a successful run in the flow's state store (key
    ``http_cursor/<flow>/<hash of url>``); the next run sends it as ``param`` on every
    request. With ``pagination.type: cursor`` and no ``path_in_record``, the last cursor
    received is remembered instead and the next run starts from it.

    429, 408 and 5xx answers and network errors are retried ``retries`` times with
    exponential backoff (``retry_backoff_s`` doubled each time, at most ``max_backoff_s``);
    a ``Retry-After`` header (seconds or an HTTP date) replaces the computed wait, capped
    the same way.

``http`` sink
    ``{type: http, url: …, method: POST, batch_size: 100, format: json_array}`` — one
    request per ``batch_size`` records, the body a JSON array, NDJSON, or one object per
    request (``single``). Each request carries ``Idempotency-Key`` (the header named by
    ``idempotency_key_header``; ``""`` turns it off): a hash of the run id and the body, so
    a retried request carries the same key. 429/408/5xx are retried like the source, then
    fail the run (:class:`HttpSinkError`; the checkpoint lets the next run resume); 401 and
    403 fail the run at once (:class:`HttpAuthError`: credentials are a configuration
    matter). Any other 4xx raises :class:`HttpRejected`, a
    :class:`~core.errors.RecordValidationError`: the engine then writes the batch's records
    one by one and dead-letters those the server refuses, with the status and the body of
    the answer. Records of the batch that the server already took are not sent again
    while the engine isolates the refused ones.

``auth`` (both): ``{type: bearer, token: …}``, ``{type: basic, username: …, password: …}``
or ``{type: header, name: X-Api-Key, value: …}``. ``auth`` and ``headers`` are secret
attributes: redacted in logs, run records and ``adf config explain``. Credentials are
not sent again after a redirect.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.attributes import Attribute, at_least_one
from core.errors import AdfError, ConfigError, RecordValidationError, SinkUnavailableError
from core.http_client import HttpClient, HttpNetworkError, HttpResponse, is_retryable_status
from core.logs import get_logger, log_event
from core.record import DeadLetter, Record
from core.redact import redact_text
from core.retry import retry_after_seconds
from core.sink import Sink
from core.source import (
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

__all__ = [
    "HttpAuthError",
    "HttpRejected",
    "HttpSink",
    "HttpSinkError",
    "HttpSource",
    "HttpSourceError",
    "HttpSplit",
    "json_path",
    "parse_link_header",
    "retry_after_seconds",
]

_log = get_logger("connectors.http")

_USER_AGENT = "active-data-flow/0.1"
_PAGINATION_KEYS: dict[str, dict[str, Any]] = {
    "next_link": {"path": "links.next"},
    "link_header": {},
    "page": {
        "param": "page", "start": 1, "size_param": None, "size": None,
        "total_path": None, "total_pages_path": None, "pages_per_split": 1,
    },
    "offset": {
        "param": "offset", "start": 0, "limit_param": "limit", "limit": 100,
        "total_path": None, "total_pages_path": None, "pages_per_split": 1,
    },
    "cursor": {"param": "cursor", "path": "meta.next_cursor"},
}
_AUTH_KEYS = {"bearer": ("token",), "basic": ("username", "password"), "header": ("name", "value")}
_INCREMENTAL_KEYS = ("param", "path_in_record", "initial")
_MISSING: Any = object()
_SNIPPET = 500


class HttpSourceError(AdfError):
    """The API answered something the source cannot read (an error status, not JSON, no records list)."""


class HttpSinkError(SinkUnavailableError):
    """The sink's server kept failing (5xx/429/network) after every retry: the run fails and can resume."""


class HttpAuthError(SinkUnavailableError):
    """401/403: the credentials are wrong, for every record alike; the run fails."""


class HttpRejected(RecordValidationError):
    """The server refused the records of a request (a 4xx other than 401/403/408/429).

    ``status`` and ``body`` are the answer's; the engine dead-letters each refused record
    with this message.
    """

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        self.status = status
        self.body = body
        self.field = "(request)"
        self.reason = f"{method} {url} answered {status}: {body}"
        Exception.__init__(self, self.reason)


# --------------------------------------------------------------------------- helpers


def json_path(doc: Any, path: str | None, default: Any = None) -> Any:
    """The value at dotted ``path`` in ``doc`` (``""``/None: ``doc`` itself); numbers index lists."""
    if not path:
        return doc
    cur = doc
    for part in path.split("."):
        if isinstance(cur, Mapping):
            if part not in cur:
                return default
            cur = cur[part]
        elif isinstance(cur, list) and re.fullmatch(r"-?\d+", part):
            i = int(part)
            if not -len(cur) <= i < len(cur):
                return default
            cur = cur[i]
        else:
            return default
    return cur


_LINK_RE = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]+)*)")


def parse_link_header(value: str | None) -> dict[str, str]:
    """``{rel: url}`` of an RFC 8288 ``Link`` header (``<u1>; rel="next", <u2>; rel="last"``)."""
    out: dict[str, str] = {}
    if not value:
        return out
    for match in _LINK_RE.finditer(value):
        url, params = match.group(1).strip(), match.group(2)
        for param in params.split(";"):
            name, _, raw = param.strip().partition("=")
            if name.strip().lower() == "rel":
                for rel in raw.strip().strip('"').split():
                    out.setdefault(rel.lower(), url)
    return out


def with_params(url: str, params: Mapping[str, Any]) -> str:
    """``url`` with the query parameters ``params`` set (replacing ones of the same name; None values dropped)."""
    if not params:
        return url
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    for key, value in params.items():
        if value is None:
            continue
        query.append((str(key), _param_text(value)))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


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


def _snippet(raw: bytes) -> str:
    text = raw[:_SNIPPET].decode("utf-8", "replace").strip()
    return text + ("…" if len(raw) > _SNIPPET else "")


def _check_url(value: Any) -> str | None:
    return None if str(value).startswith(("http://", "https://")) else f"{value!r} must start with http:// or https://"


def _check_nonneg(value: Any) -> str | None:
    return None if value >= 0 else f"must be 0 or more, got {value}"




def _check_auth(value: Any) -> str | None:
    kind = value.get("type")
    if kind not in _AUTH_KEYS:
        return f"'type' must be one of {', '.join(_AUTH_KEYS)}, got {kind!r}"
    need = _AUTH_KEYS[kind]
    unknown = sorted(set(value) - {"type", *need})
    if unknown:
        return f"unknown key(s) {', '.join(map(repr, unknown))} for {kind} (accepted: {', '.join(need)})"
    missing = [k for k in need if value.get(k) in (None, "")]
    if missing:
        return f"{kind} needs {', '.join(map(repr, missing))}"
    return None


def _check_pagination(value: Any) -> str | None:
    kind = value.get("type")
    if kind not in _PAGINATION_KEYS:
        return f"'type' must be one of {', '.join(_PAGINATION_KEYS)}, got {kind!r}"
    accepted = _PAGINATION_KEYS[kind]
    unknown = sorted(set(value) - {"type", *accepted})
    if unknown:
        return f"unknown key(s) {', '.join(map(repr, unknown))} for {kind} (accepted: {', '.join(accepted) or 'none'})"
    for key in ("start", "size", "limit", "pages_per_split"):
        if key in value and value[key] is not None and (not isinstance(value[key], int) or isinstance(value[key], bool)):
            return f"{key!r} must be an integer"
    if value.get("total_path") and value.get("total_pages_path"):
        return "give 'total_path' or 'total_pages_path', not both"
    return None


def _check_incremental(value: Any) -> str | None:
    unknown = sorted(set(value) - set(_INCREMENTAL_KEYS))
    if unknown:
        return f"unknown key(s) {', '.join(map(repr, unknown))} (accepted: {', '.join(_INCREMENTAL_KEYS)})"
    if value.get("path_in_record") and not value.get("param"):
        return "'param' (the query parameter that carries the remembered value) is required with 'path_in_record'"
    return None


def _auth_header(auth: Mapping[str, Any] | None) -> tuple[str, str] | None:
    if not auth:
        return None
    kind = auth["type"]
    if kind == "bearer":
        return "Authorization", f"Bearer {auth['token']}"
    if kind == "basic":
        raw = f"{auth['username']}:{auth['password']}".encode()
        return "Authorization", "Basic " + base64.b64encode(raw).decode("ascii")
    return str(auth["name"]), str(auth["value"])


# --------------------------------------------------------------------------- the client


def _client(what: str, config: Mapping[str, Any], accept: str) -> HttpClient:
    headers = {"User-Agent": _USER_AGENT, "Accept": accept}
    headers.update({str(k): str(v) for k, v in (config.get("headers") or {}).items()})
    return HttpClient(
        what=what,
        headers=headers,
        auth=_auth_header(config.get("auth")),
        timeout=float(config["timeout_s"]),
        retries=int(config["retries"]),
        backoff=float(config["retry_backoff_s"]),
        max_backoff=float(config["max_backoff_s"]),
    )


_COMMON = (
    Attribute("headers", dict, secret=True, help="request headers (values may hold secrets)"),
    Attribute("auth", dict, secret=True, check=_check_auth,
              help="{type: bearer, token} | {type: basic, username, password} | {type: header, name, value}"),
    Attribute("timeout_s", float, default=30.0, help="seconds to wait for an answer"),
    Attribute("retries", int, default=3, check=_check_nonneg, help="retries of 408/429/5xx answers and network errors"),
    Attribute("retry_backoff_s", float, default=0.5, help="first retry wait; doubled each retry"),
    Attribute("max_backoff_s", float, default=30.0, help="longest wait between retries (also caps Retry-After)"),
)


# --------------------------------------------------------------------------- source


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
    """Reads records from a paginated JSON API (see the module doc)."""

    type_name = "http"
    attributes = (
        Attribute("url", str, required=True, check=_check_url, help="the first page's URL"),
        Attribute("method", str, default="GET", choices=("GET", "POST")),
        Attribute("params", dict, help="query parameters added to the URL"),
        Attribute("body", object, help="JSON body of POST requests"),
        Attribute("records_path", str, default="", help="dotted path of the records list ('' = the body is the list)"),
        Attribute("pagination", dict, check=_check_pagination,
                  help="{type: next_link|link_header|page|offset|cursor, ...}; default: one request"),
        *_COMMON,
        Attribute("max_pages", int, check=at_least_one, help="stop after this many pages"),
        Attribute("incremental", dict, check=_check_incremental,
                  help="{param, path_in_record}: remember the largest value read; next run sends it as param"),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.url: str = self.config["url"]
        pagination = self.config["pagination"] or {}
        kind = pagination.get("type")
        self.paging: str | None = kind
        self.page_opts: dict[str, Any] = {**_PAGINATION_KEYS.get(kind or "", {}), **pagination} if kind else {}
        inc = self.config["incremental"]
        self.incremental: dict[str, Any] | None = dict(inc) if inc is not None else None
        if self.incremental is not None and not self.incremental.get("path_in_record") and kind != "cursor":
            raise ConfigError(
                "source 'http'",
                ["'incremental' needs 'path_in_record' (the record field whose largest value is remembered), "
                 "or pagination type 'cursor' (the last cursor is remembered)"],
            )
        self.client = _client("source 'http'", self.config, "application/json")
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
        from core.state import open_state_store

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
            raise HttpSourceError(f"source 'http': {method} {shown} answered {resp.status}{tries}: {_snippet(resp.body)}")
        try:
            doc = json.loads(resp.body.decode("utf-8-sig")) if resp.body.strip() else None
        except (UnicodeDecodeError, ValueError):
            kind = resp.header("Content-Type") or "no content type"
            raise HttpSourceError(
                f"source 'http': {method} {shown} did not answer JSON ({kind}): {_snippet(resp.body)}"
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
            target = urllib.parse.urljoin(resp.url or url, link.strip())
            return target, target == url
        if kind == "link_header":
            link = parse_link_header(resp.header("Link")).get("next")
            if not link:
                return None, True
            target = urllib.parse.urljoin(resp.url or url, link)
            return target, target == url
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
        self._after: tuple[Any, bool, Any] = (None, True, None)
        self._url = ""

    def open_split(self, split: Split) -> None:
        self._buffer = None

    def close_split(self, split: Split) -> None:
        self._buffer = None

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
            nxt, ended = source.next_state(split, pos["next"], url, resp, doc, items)
            value = pos["value"]
            if source.cursor_mode:
                cursor = source.next_cursor(doc)
                if cursor is not None and items:
                    value = cursor
            self._after = (nxt, ended, value)
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
            nxt, ended, page_value = self._after
            if source.cursor_mode:
                value = page_value
            pages = int(pos["pages"]) + 1
            max_pages = source.config["max_pages"]
            done = ended or (split.kind == "sequential" and max_pages is not None and pages >= int(max_pages))
            split.position = {"next": nxt, "skip": 0, "pages": pages, "value": value}
            self._buffer = None
            if done:
                source.record_result(split, value)
        return ReaderBatch(records, ReaderStatus.MORE_AVAILABLE, dead, input_bytes=nbytes), done


# --------------------------------------------------------------------------- sink


_FORMATS = {"json_array": "application/json", "ndjson": "application/x-ndjson", "single": "application/json"}


def _check_method(value: Any) -> str | None:
    return None if str(value).upper() in ("POST", "PUT", "PATCH") else f"must be POST, PUT or PATCH, got {value!r}"


class HttpSink(Sink):
    """Sends records to an HTTP endpoint in batches (see the module doc)."""

    type_name = "http"
    attributes = (
        Attribute("url", str, required=True, check=_check_url),
        Attribute("method", str, default="POST", check=_check_method),
        Attribute("batch_size", int, check=at_least_one,
                  help="records per request (default 100; 1 = one record per request)"),
        Attribute("format", str, default="json_array", choices=tuple(_FORMATS),
                  help="json_array, ndjson, or single (one JSON object per request)"),
        Attribute("idempotency_key_header", str, default="Idempotency-Key",
                  help="header carrying a stable key per request body ('' = none)"),
        *_COMMON,
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.url: str = self.config["url"]
        self.method: str = str(self.config["method"]).upper()
        self.format: str = self.config["format"]
        size = self.config["batch_size"]
        if self.format == "single":
            if size is not None and size != 1:
                raise ConfigError("sink 'http'", [f"'batch_size' must be 1 with format 'single', got {size}"])
            size = 1
        self.batch_size: int = int(size or 100)
        self.client = _client("sink 'http'", self.config, "application/json, */*;q=0.5")
        # Records of the last failed write_batch that the server already took (by identity):
        # the engine sends that batch again, or its records one by one, and those are skipped.
        self._failed: list[Record] = []
        self._failed_ids: set[int] = set()
        self._delivered: set[int] = set()

    def describe(self) -> str:
        return f"http {self.method} {redact_text(self.url)} ({self.format})"

    def encode(self, records: Sequence[Record]) -> bytes:
        def dumps(value: Any) -> bytes:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")

        if self.format == "ndjson":
            return b"".join(dumps(r) + b"\n" for r in records)
        if self.format == "single":
            return dumps(records[0])
        return dumps(list(records))

    def idempotency_key(self, body: bytes) -> str:
        """A stable key for ``body`` in this run: the same request retried carries the same key."""
        digest = hashlib.sha256()
        digest.update(self.run_context.run_id.encode())
        digest.update(b"\n")
        digest.update(body)
        return digest.hexdigest()

    def write_batch(self, records: Sequence[Record]) -> None:
        if not records:
            return
        if self._failed_ids and all(id(r) in self._failed_ids for r in records):
            todo = [r for r in records if id(r) not in self._delivered]
        else:
            self._failed, self._failed_ids, self._delivered = [], set(), set()
            todo = list(records)
        try:
            for chunk in _chunks(todo, self.batch_size):
                self._send(chunk)
                self._delivered.update(id(r) for r in chunk)
        except Exception:
            if not self._failed_ids:
                self._failed = list(records)
                self._failed_ids = {id(r) for r in records}
            raise

    def _send(self, chunk: Sequence[Record]) -> None:
        body = self.encode(chunk)
        headers = {"Content-Type": _FORMATS[self.format]}
        key_header = self.config["idempotency_key_header"]
        if key_header:
            headers[str(key_header)] = self.idempotency_key(body)
        shown = redact_text(self.url)
        try:
            resp = self.client.send(self.method, self.url, body, headers)
        except HttpNetworkError as exc:
            raise HttpSinkError(str(exc)) from None
        if 200 <= resp.status < 300:
            return
        snippet = _snippet(resp.body)
        if resp.status in (401, 403):
            raise HttpAuthError(f"{self.method} {shown} answered {resp.status} (check 'auth' and 'headers'): {snippet}")
        if is_retryable_status(resp.status):
            raise HttpSinkError(
                f"{self.method} {shown} answered {resp.status} after {resp.attempts} attempt(s): {snippet}"
            )
        raise HttpRejected(self.method, shown, resp.status, snippet)

    def close(self) -> None:
        self._failed, self._failed_ids, self._delivered = [], set(), set()


def _chunks(items: Sequence[Record], size: int) -> Iterable[Sequence[Record]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
