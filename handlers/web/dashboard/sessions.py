"""Login sessions of the dashboard: the signed cookie values (:class:`SessionCodec`), the
session itself with its CSRF token (:class:`Session`), the cookie and field names, and where a
login may lead (:func:`safe_next`).

Standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SESSION_COOKIE = "adf_session"
FLASH_COOKIE = "adf_flash"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
#: a login lasts this long (seconds); a pre-login session (the login form's CSRF token) too
SESSION_SECONDS = 12 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def session_key(token: str | None) -> bytes:
    """The signing key: derived from ``ADF_API_TOKEN`` (sessions end when it changes), or
    random for this process when there is no token (then nobody can log in anyway)."""
    if not token:
        return secrets.token_bytes(32)
    return hmac.new(token.encode("utf-8"), b"adf-dashboard-session-v1", hashlib.sha256).digest()


class SessionCodec:
    """Signed, expiring JSON values for cookies: ``<base64 JSON>.<base64 HMAC-SHA256>``.
    ``purpose`` is part of what is signed, so a value signed for one cookie is refused by another."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, purpose: str, body: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}.{body}".encode("ascii"), hashlib.sha256).digest())

    def sign(self, purpose: str, payload: Mapping[str, Any], max_age: int) -> str:
        data = {**payload, "exp": int(time.time()) + int(max_age)}
        body = _b64(json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        return f"{body}.{self._mac(purpose, body)}"

    def unsign(self, purpose: str, value: str | None) -> dict[str, Any] | None:
        """The payload, or None when ``value`` is missing, tampered with or expired."""
        if not value or len(value) > 4096 or value.count(".") != 1:
            return None
        body, mac = value.split(".")
        try:
            if not hmac.compare_digest(mac.encode("ascii"), self._mac(purpose, body).encode("ascii")):
                return None
            payload = json.loads(_unb64(body))
        except (ValueError, UnicodeError):
            return None
        if not isinstance(payload, dict):
            return None
        exp = payload.get("exp")
        if not isinstance(exp, int) or exp <= time.time():
            return None
        return payload


@dataclass(frozen=True)
class Session:
    """A browser session: ``user`` is True once logged in; ``csrf`` is the token every form
    of this session carries."""

    sid: str
    csrf: str
    user: bool
    exp: int = 0

    @classmethod
    def new(cls, *, user: bool) -> Session:
        return cls(sid=secrets.token_urlsafe(16), csrf=secrets.token_urlsafe(32), user=user)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any] | None) -> Session | None:
        if payload is None:
            return None
        sid, csrf, user = payload.get("sid"), payload.get("csrf"), payload.get("user")
        if not isinstance(sid, str) or not isinstance(csrf, str) or not isinstance(user, bool) or len(csrf) < 16:
            return None
        return cls(sid=sid, csrf=csrf, user=user, exp=int(payload["exp"]))

    def payload(self) -> dict[str, Any]:
        return {"sid": self.sid, "csrf": self.csrf, "user": self.user}

    def csrf_ok(self, provided: str | None) -> bool:
        return bool(provided) and hmac.compare_digest(str(provided).encode("utf-8"), self.csrf.encode("utf-8"))


def safe_next(value: str | None, base: str) -> str:
    """Where to go after the login: a path under the dashboard, never another site."""
    default = f"{base}/flows"
    if not value or len(value) > 2000 or any(c in value for c in "\\\r\n\t"):
        return default
    if not value.startswith(base + "/") and value != base:
        return default
    if value.startswith("//") or "/../" in value or value.endswith("/.."):
        return default
    return value
