"""Pagination of the ``http`` source: the kinds and their settings, and reading an answer.

:data:`PAGINATION_KEYS` lists each kind's settings with their defaults; :func:`json_path`
reads a value of a JSON body, :func:`parse_link_header` a ``Link`` header, and
:func:`with_params` sets the query parameters of a page's URL. Without a ``pagination``
setting the source finds the pagination in the first answer (:func:`detect_next`, then
:func:`follow_next` on every later page): the ``Link`` header's ``rel="next"`` first, then a
next-page URL at one of :data:`NEXT_LINK_PATHS` of the body, then a cursor at one of
:data:`CURSOR_PATHS` (sent back as that entry's query parameter). :func:`more_signalled`
tells whether an answer says there are more pages in a way the source cannot follow.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Each pagination kind's settings and their defaults.
PAGINATION_KEYS: dict[str, dict[str, Any]] = {
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
    "none": {},
}

#: Body fields holding the next page's URL, looked for in this order when no pagination is set
#: (a key with a dot, such as OData's ``@odata.nextLink``, is first looked for as a top-level key).
NEXT_LINK_PATHS = (
    "next", "links.next", "links.next.href", "_links.next.href", "paging.next", "pagination.next",
    "meta.next", "next_url", "next_page_url", "nextLink", "@odata.nextLink",
)
#: Body fields holding the next page's cursor, and the query parameter it is sent back as.
CURSOR_PATHS = (
    ("next_cursor", "cursor"),
    ("meta.next_cursor", "cursor"),
    ("response_metadata.next_cursor", "cursor"),
    ("pagination.next_cursor", "cursor"),
    ("cursors.next", "cursor"),
    ("next_page_token", "page_token"),
    ("nextPageToken", "pageToken"),
)
#: Body fields that say, when true, that more pages follow.
MORE_FLAGS = ("has_more", "hasMore", "meta.has_more", "pagination.has_more", "response_metadata.has_more")


@dataclass(frozen=True)
class NextPage:
    """Where an answer says the next page is: ``style`` ``link_header`` (``where`` is
    ``Link``), ``next_link`` (a URL at body path ``where``) or ``cursor`` (a cursor at body path
    ``where``, sent as query parameter ``param``); ``value`` is the URL or the cursor."""

    style: str
    where: str
    param: str | None
    value: str

    def describe(self) -> str:
        if self.style == "link_header":
            return 'the Link header (rel="next")'
        if self.style == "next_link":
            return f"the next page URL at {self.where!r} of the body"
        return f"the cursor at {self.where!r} of the body, sent as query parameter {self.param!r}"

    def as_list(self) -> list[Any]:
        """The choice, for a split's position (JSON)."""
        return [self.style, self.where, self.param]


def _field(doc: Any, path: str) -> Any:
    if isinstance(doc, Mapping) and path in doc:
        return doc[path]
    return json_path(doc, path) if "." in path else None


def _looks_like_url(value: Any) -> bool:
    if not isinstance(value, str) or not value.strip():
        return False
    text = value.strip()
    return urllib.parse.urlsplit(text).scheme in ("http", "https") or text.startswith(("/", "?"))


def _cursor_text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        return None
    return str(value)


def follow_next(choice: list[Any] | tuple[Any, ...], link_header: str | None, doc: Any) -> NextPage | None:
    """The next page of an answer by the pagination chosen earlier (:meth:`NextPage.as_list`); None: the last page."""
    style, where, param = choice[0], str(choice[1]), choice[2]
    if style == "link_header":
        link = parse_link_header(link_header).get("next")
        return NextPage(style, where, None, link) if link else None
    value = _field(doc, where)
    if style == "next_link":
        return NextPage(style, where, None, value.strip()) if _looks_like_url(value) else None
    cursor = _cursor_text(value)
    return NextPage(style, where, str(param), cursor) if cursor is not None else None


def detect_next(link_header: str | None, doc: Any) -> NextPage | None:
    """The pagination an answer shows (see the module doc), or None when it shows none."""
    link = parse_link_header(link_header).get("next")
    if link:
        return NextPage("link_header", "Link", None, link)
    if not isinstance(doc, Mapping):
        return None
    for path in NEXT_LINK_PATHS:
        value = _field(doc, path)
        if _looks_like_url(value):
            return NextPage("next_link", path, None, value.strip())
    for path, param in CURSOR_PATHS:
        cursor = _cursor_text(_field(doc, path))
        if cursor is not None:
            return NextPage("cursor", path, param, cursor)
    return None


def more_signalled(link_header: str | None, doc: Any) -> str | None:
    """How an answer says more pages follow (``Link rel="next"``, a body field), or None."""
    found = detect_next(link_header, doc)
    if found is not None:
        return "the Link header" if found.style == "link_header" else f"{found.where!r} in the body"
    if isinstance(doc, Mapping):
        for path in MORE_FLAGS:
            if _field(doc, path) is True:
                return f"{path!r}: true in the body"
    return None


def check_pagination(value: Any) -> str | None:
    """A ``pagination`` setting: a known ``type`` with only its keys, integers where numbers go."""
    kind = value.get("type")
    if kind not in PAGINATION_KEYS:
        return f"'type' must be one of {', '.join(PAGINATION_KEYS)}, got {kind!r}"
    accepted = PAGINATION_KEYS[kind]
    unknown = sorted(set(value) - {"type", *accepted})
    if unknown:
        return f"unknown key(s) {', '.join(map(repr, unknown))} for {kind} (accepted: {', '.join(accepted) or 'none'})"
    for key in ("start", "size", "limit", "pages_per_split"):
        if key in value and value[key] is not None and (not isinstance(value[key], int) or isinstance(value[key], bool)):
            return f"{key!r} must be an integer"
    if value.get("total_path") and value.get("total_pages_path"):
        return "give 'total_path' or 'total_pages_path', not both"
    return None


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
