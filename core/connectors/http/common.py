"""What the ``http`` source and sink share: credentials, headers, retries and their client.

:data:`COMMON_ATTRIBUTES` are the attributes of both (headers, auth, timeout and retries);
:func:`make_client` configures a :class:`~active_data_flow.http_client.HttpClient` from them.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from active_data_flow.attributes import Attribute
from active_data_flow.http_client import HttpClient

_USER_AGENT = "active-data-flow/0.1"
_AUTH_KEYS = {"bearer": ("token",), "basic": ("username", "password"), "header": ("name", "value")}
_SNIPPET = 500


def answer_snippet(raw: bytes) -> str:
    """The start of an answer's body, as text for a message."""
    text = raw[:_SNIPPET].decode("utf-8", "replace").strip()
    return text + ("…" if len(raw) > _SNIPPET else "")


def check_url(value: Any) -> str | None:
    """An ``http://`` or ``https://`` URL."""
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


def make_client(what: str, config: Mapping[str, Any], accept: str) -> HttpClient:
    """The client of a connector configured by ``config`` (its headers, auth, timeout and retries)."""
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


COMMON_ATTRIBUTES = (
    Attribute("headers", dict, secret=True, help="request headers (values may hold secrets)"),
    Attribute("auth", dict, secret=True, check=_check_auth,
              help="{type: bearer, token} | {type: basic, username, password} | {type: header, name, value}"),
    Attribute("timeout_s", float, default=30.0, help="seconds to wait for an answer"),
    Attribute("retries", int, default=3, check=_check_nonneg, help="retries of 408/429/5xx answers and network errors"),
    Attribute("retry_backoff_s", float, default=0.5, help="first retry wait; doubled each retry"),
    Attribute("max_backoff_s", float, default=30.0, help="longest wait between retries (also caps Retry-After)"),
)
