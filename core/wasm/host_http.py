"""The ``adf.http_request`` host function: one HTTP request, within ``http:read`` (GET, HEAD) or
``http:write`` permissions, its response answered to the guest.

Redirects are answered (3xx + ``Location``), never followed; the body is capped at the call's
``max_output_bytes`` and the timeout at what remains of the call's.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from active_data_flow.wasm.host_call import HostCallState

__all__ = ["http_request"]

_READ_METHODS = frozenset({"GET", "HEAD"})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answered to the guest (3xx + Location), never followed: a redirect must not
    lead to a URL the permissions do not allow."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def http_request(state: HostCallState, req: dict[str, Any]) -> dict[str, Any]:
    method = str(req.get("method") or "GET").upper()
    url = req.get("url")
    if not isinstance(url, str) or not url:
        return {"ok": False, "error": "http_request needs a 'url'"}
    kind = "http:read" if method in _READ_METHODS else "http:write"
    denied = state.check("http_request", kind, url)
    if denied is not None:
        return denied
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        return {"ok": False, "error": f"only http and https URLs are supported, not {scheme or 'no scheme'!r}"}
    headers = req.get("headers") or {}
    if not isinstance(headers, dict):
        return {"ok": False, "error": "'headers' must be an object"}
    body: bytes | None = None
    if req.get("body_base64") is not None:
        body = base64.b64decode(str(req["body_base64"]))
    elif req.get("body") is not None:
        raw_body = req["body"]
        body = (raw_body if isinstance(raw_body, str) else json.dumps(raw_body)).encode("utf-8")
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={str(k): str(v) for k, v in headers.items()})
    timeout = state.remaining_s(state.host.http_timeout_s)
    limit = state.max_response_bytes
    try:
        try:
            resp = _opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:  # 4xx/5xx (and unfollowed 3xx) are answers too
            resp = exc
        with resp:
            status = int(resp.status if hasattr(resp, "status") and resp.status else resp.getcode())
            data = resp.read(limit + 1)
            resp_headers: dict[str, str] = {}
            for k, v in resp.headers.items():
                resp_headers[k] = f"{resp_headers[k]}, {v}" if k in resp_headers else v
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"ok": False, "error": f"{type(exc).__name__}: {reason}"}
    if len(data) > limit:
        return {"ok": False, "status": status,
                "error": f"response body exceeds the limit of {limit} bytes (max_output_bytes)"}
    out: dict[str, Any] = {"ok": True, "status": status, "headers": resp_headers}
    try:
        out["body"] = data.decode("utf-8")
    except UnicodeDecodeError:
        out["body_base64"] = base64.b64encode(data).decode("ascii")
    return out
