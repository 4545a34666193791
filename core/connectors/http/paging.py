"""Pagination of the ``http`` source: the kinds and their settings, and reading an answer.

:data:`PAGINATION_KEYS` lists each kind's settings with their defaults; :func:`json_path`
reads a value of a JSON body, :func:`parse_link_header` a ``Link`` header, and
:func:`with_params` sets the query parameters of a page's URL.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
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
}


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
