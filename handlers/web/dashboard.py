"""The dashboard: server-rendered HTML pages under ``/ui`` for flows, runs, WASM modules and
the heartbeat request log.

:func:`mount_dashboard` mounts it on the app :func:`handlers.web.app.create_app` builds. It
works on the same schedule store as the management API and on the WASM module registry of
``ModuleRegistry.from_env()`` (``ADF_WASM_*``), opened on first use.

Access: every page needs a login with the token of ``ADF_API_TOKEN`` (the management API's
bearer token; without it the login is disabled). Wrong tokens count per client address in
the same :class:`~handlers.security.FailureThrottle` as the API's wrong bearer tokens; a
throttled address gets 429 for a wrong token, never for the right one. A login creates a session cookie
(``adf_session``: HttpOnly, SameSite=Lax, Secure over HTTPS) signed with HMAC-SHA256 under a
key derived from the token, so sessions survive a restart and end when the token changes.
Every POST carries the session's CSRF token (hidden ``csrf_token`` field or ``X-CSRF-Token``
header); a missing or wrong one is refused with 403 before anything runs.

A flow's configuration is shown with its secrets masked (:func:`core.redact.mask`, the rule
of the management API); a masked value saved back unchanged keeps the stored secret.

A run's page shows the run's current dead letters and replays them through the flow's
current configuration: :func:`read_run_dead_letters` and :func:`replay_run_dead_letters`
(over :mod:`core.dead_letters`), which the management API's dead-letter routes call too.

Only the standard library is imported at module level (``handlers`` must import without
third-party packages); Starlette and Jinja2 load in :func:`mount_dashboard`.

Example::

    app = create_app(settings)          # mounts the dashboard at /ui
    # browse http://127.0.0.1:8000/ui/ and log in with ADF_API_TOKEN
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode

from core.logs import get_logger, log_event
from core.redact import mask, unmask
from core.spec import flow_secret_keys
from handlers.dead_letters import (
    DeadLetterError,
    describe_replay,
    letters_of,
    replay_run_dead_letters,
    run_directory,
)
from handlers.schedule.store import (
    ACTIVE_RUN_STATUSES,
    RUN_STATUSES,
    FlowValidationError,
    NotFoundError,
    RunRecord,
    ScheduleStore,
    flow_problems,
)
from handlers.security import AUTH_FAILURES, AUTH_WINDOW, FailureThrottle, client_ip, token_ok, unstorable
from handlers.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from jinja2 import Environment
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Receive, Scope, Send
    from starlette.types import Message as AsgiMessage

    from core.wasm.registry import ModuleRecord, ModuleRegistry

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "FLASH_COOKIE",
    "PREFIX",
    "SESSION_COOKIE",
    "Dashboard",
    "Form",
    "FormError",
    "SessionCodec",
    "UploadedFile",
    "mount_dashboard",
    "parse_configuration",
    "parse_form",
]

_log = get_logger("web.dashboard")

#: where the dashboard is mounted
PREFIX = "/ui"
SESSION_COOKIE = "adf_session"
FLASH_COOKIE = "adf_flash"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
#: a login lasts this long (seconds); a pre-login session (the login form's CSRF token) too
SESSION_SECONDS = 12 * 3600
#: largest form body (configuration edits and the like) and largest module upload
FORM_LIMIT = 2 * 1024 * 1024
UPLOAD_LIMIT = 64 * 1024 * 1024
#: failed logins (and wrong API tokens) per client within LOGIN_WINDOW seconds before further
#: failed attempts get 429 (handlers.security.FailureThrottle)
LOGIN_FAILURES = AUTH_FAILURES
LOGIN_WINDOW = AUTH_WINDOW
#: dead letters listed on a run page (all of them: the API, or `adf dead-letters show`)
LETTERS_SHOWN = 200
#: a record whose JSON is longer than this is shortened on the run page, the whole of it a click away
RECORD_PREVIEW = 160

_HERE = Path(__file__).resolve().parent
TEMPLATES = _HERE / "templates"
STATIC = _HERE / "static"

_SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; "
     b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


# --------------------------------------------------------------------------- sessions


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


# --------------------------------------------------------------------------- forms


class FormError(ValueError):
    """A request body that cannot be read as a form (``status``: 400, 413 or 415)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class UploadedFile:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Form:
    """Fields of a urlencoded or multipart form (repeated names keep every value) and files."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[0] if values else default

    def getlist(self, name: str) -> list[str]:
        return list(self.fields.get(name, []))

    def add(self, name: str, value: str) -> None:
        self.fields.setdefault(name, []).append(value)


def _header_params(value: str) -> tuple[str, dict[str, str]]:
    """``form-data; name="a"; filename="b.wasm"`` → ``("form-data", {name: a, filename: b.wasm})``."""
    msg = Message()
    msg["x"] = value
    params = msg.get_params(header="x") or []
    main = params[0][0].lower() if params else ""
    out: dict[str, str] = {}
    for key, val in params[1:]:
        out[key.lower()] = val if isinstance(val, str) else str(val[2])
    return main, out


def _parse_multipart(body: bytes, boundary: str) -> Form:
    if not boundary or len(boundary) > 200:
        raise FormError(400, "multipart form without a valid boundary")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    chunks = (b"\r\n" + body).split(delimiter)
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise FormError(400, "malformed multipart form: the closing boundary is missing")
    form = Form()
    for chunk in chunks[1:-1]:
        # after the delimiter: optional transport padding, CRLF, headers, CRLF CRLF, content
        line_end = chunk.find(b"\r\n")
        if line_end < 0 or chunk[:line_end].strip(b" \t"):
            raise FormError(400, "malformed multipart form: bad boundary line")
        head, sep, content = chunk[line_end + 2 :].partition(b"\r\n\r\n")
        if not sep:
            if not chunk[line_end + 2 :].endswith(b"\r\n"):
                raise FormError(400, "malformed multipart form: a part has no header end")
            head, content = chunk[line_end + 2 : -2], b""
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        kind, params = _header_params(headers.get("content-disposition", ""))
        if kind != "form-data" or "name" not in params:
            continue
        if "filename" in params:
            form.files[params["name"]] = UploadedFile(
                filename=params["filename"], content_type=headers.get("content-type", "application/octet-stream"),
                data=content,
            )
        else:
            form.add(params["name"], content.decode("utf-8", "replace"))
    return form


def parse_form(content_type: str, body: bytes) -> Form:
    """A form from a request body: ``application/x-www-form-urlencoded`` or
    ``multipart/form-data`` (an empty body is an empty form). :class:`FormError` otherwise."""
    kind, params = _header_params(content_type or "")
    if not body and kind in ("", "application/x-www-form-urlencoded", "multipart/form-data"):
        return Form()
    if kind == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise FormError(400, "the form is not UTF-8") from None
        form = Form()
        for key, value in parse_qsl(text, keep_blank_values=True, max_num_fields=1000):
            form.add(key, value)
        return form
    if kind == "multipart/form-data":
        return _parse_multipart(body, params.get("boundary", ""))
    raise FormError(415, f"expected a form (application/x-www-form-urlencoded or multipart/form-data), "
                         f"got {content_type or 'no Content-Type'}")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FormError(413, f"the request body is larger than {_human_size(limit)}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise FormError(413, f"the request body is larger than {_human_size(limit)}")
        chunks.append(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------- values


def parse_configuration(text: str, fmt: str) -> tuple[Any, list[str]]:
    """A flow configuration typed as JSON or YAML: ``(value, problems)``; value is None when
    the text cannot be read as a mapping."""
    if not text.strip():
        return None, ["configuration: is empty (the flow spec: source, steps, sink, runtime)"]
    if fmt == "yaml":
        import yaml

        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            reason = getattr(exc, "problem", None) or str(exc)
            return None, [f"configuration: invalid YAML{where}: {reason}"]
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, [f"configuration: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]
    if not isinstance(value, dict):
        return None, [f"configuration: must be a mapping (source, steps, sink, runtime), got {type(value).__name__}"]
    return value, []


def format_configuration(configuration: Mapping[str, Any], fmt: str) -> str:
    if fmt == "yaml":
        import yaml

        return str(yaml.safe_dump(dict(configuration), sort_keys=False, allow_unicode=True, default_flow_style=False))
    return json.dumps(configuration, indent=2, ensure_ascii=False)


def _parse_interval(text: str) -> tuple[int | None, list[str]]:
    text = text.strip()
    if not re.fullmatch(r"[0-9]{1,12}", text):
        return None, [f"run_interval: must be a positive integer (seconds), got {text!r}"]
    return int(text), []


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"  # pragma: no cover


def _when(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return str(value.strftime("%Y-%m-%d %H:%M:%S")) + " UTC"
    if isinstance(value, str):
        try:
            return _when(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return value
    return str(value)


def _wait_text(seconds: int) -> str:
    return f"{seconds} s" if seconds < 120 else f"{math.ceil(seconds / 60)} minutes"


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "—"
    s = float(seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.2f} s"
    minutes, rest = divmod(int(s), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _interval(seconds: Any) -> str:
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size and s % size == 0:
            return f"{s // size} {unit}"
    return f"{s} s"


def _count(value: Any) -> str:
    return "—" if value is None else str(value)


def _first_line(value: Any, limit: int = 120) -> str:
    text = str(value or "").strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _module_id_from_filename(name: str) -> str:
    stem = name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    stem = re.sub(r"\.(wasm|wat)$", "", stem, flags=re.IGNORECASE).lower()
    stem = re.sub(r"[^a-z0-9_.-]+", "-", stem).strip("-._")
    return stem[:128]


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


def _origin(origin: Any) -> str:
    """Where a dead letter's record came from, e.g. ``/in/orders.jsonl, line 12, offset 340``."""
    if not isinstance(origin, Mapping) or not origin:
        return "—" if not origin else str(origin)
    parts: list[str] = []
    for key, value in origin.items():
        if isinstance(value, (Mapping, list)):
            value = json.dumps(value, ensure_ascii=False, default=str)
        parts.append(str(value) if key in ("file", "split") else f"{str(key).replace('_', ' ')} {value}")
    return ", ".join(parts)


def _letter_view(letter: Mapping[str, Any]) -> dict[str, Any]:
    """What the run page shows of a dead letter: the record as compact JSON (shortened when
    long) and indented JSON (all of it)."""
    record = letter.get("record")
    compact = record if isinstance(record, str) else json.dumps(record, ensure_ascii=False, default=str)
    full = record if isinstance(record, str) else json.dumps(record, ensure_ascii=False, default=str, indent=2)
    return {
        **letter,
        "origin_text": _origin(letter.get("origin")),
        "record_text": compact,
        "record_full": full,
        "record_short": compact[:RECORD_PREVIEW] + "…" if len(compact) > RECORD_PREVIEW else None,
    }


# --------------------------------------------------------------------------- requests


class _SecurityHeaders:
    """ASGI middleware: CSP and friends on every dashboard response, ``no-store`` on pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = "/static/" in scope.get("path", "")

        async def with_headers(message: AsgiMessage) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in _SECURITY_HEADERS if k not in present]
                if not static and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


@dataclass
class Ctx:
    """What a page handler gets: the request, the session (None before the first visit),
    the parsed form of a POST and the dashboard's base path."""

    request: Request
    session: Session | None
    form: Form
    base: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.request.path_params)

    def query(self, name: str, default: str = "") -> str:
        return str(self.request.query_params.get(name, default))

    @property
    def wants_json(self) -> bool:
        return self.request.headers.get("x-requested-with", "").lower() == "fetch"


class _NotFound(Exception):
    """A page for something that does not exist (rendered as 404)."""


class _Unavailable(Exception):
    """A backend the page needs cannot be opened (rendered as 503)."""


class Dashboard:
    """The pages and their state: settings, schedule store, WASM registry (opened lazily with
    ``ModuleRegistry.from_env()`` unless given), session codec, templates."""

    def __init__(
        self,
        settings: Settings,
        store: ScheduleStore,
        *,
        registry: ModuleRegistry | None = None,
        session_seconds: int = SESSION_SECONDS,
        throttle: FailureThrottle | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.session_seconds = int(session_seconds)
        self.codec = SessionCodec(session_key(settings.api_token))
        self._registry = registry
        self._owns_registry = registry is None
        self._registry_lock = threading.Lock()
        self._revoked: dict[str, float] = {}
        self.throttle = throttle or FailureThrottle(LOGIN_FAILURES, LOGIN_WINDOW)
        self._lock = threading.Lock()
        self.env = self._environment()

    # -- resources ---------------------------------------------------------------------

    def registry(self) -> ModuleRegistry:
        """The WASM module registry (``ModuleRegistry.from_env()`` on first use)."""
        with self._registry_lock:
            if self._registry is None:
                from core.wasm.registry import ModuleRegistry

                self._registry = ModuleRegistry.from_env()
            return self._registry

    def close(self) -> None:
        with self._registry_lock:
            if self._registry is not None and self._owns_registry:
                self._registry.close()
                self._registry = None

    def _environment(self) -> Environment:
        from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

        env = Environment(
            loader=FileSystemLoader(str(TEMPLATES)),
            autoescape=select_autoescape(["html"], default=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters.update(when=_when, duration=_duration, size=_human_size, interval=_interval, count=_count,
                           first_line=_first_line)
        env.globals.update(run_statuses=RUN_STATUSES)
        return env

    # -- sessions, cookies, rendering ----------------------------------------------------

    def session_of(self, request: Request) -> Session | None:
        session = Session.from_payload(self.codec.unsign("session", request.cookies.get(SESSION_COOKIE)))
        if session is not None and session.user:
            with self._lock:
                if session.sid in self._revoked:
                    return None
        return session

    def set_session(self, ctx: Ctx, response: Response, session: Session) -> None:
        response.set_cookie(
            SESSION_COOKIE, self.codec.sign("session", session.payload(), self.session_seconds),
            max_age=self.session_seconds, path=ctx.base or "/", httponly=True, samesite="lax",
            secure=ctx.request.url.scheme == "https",
        )

    def flash(self, ctx: Ctx, response: Response, message: str, kind: str = "ok") -> Response:
        response.set_cookie(
            FLASH_COOKIE, self.codec.sign("flash", {"m": message[:500], "k": kind}, 300), max_age=300,
            path=ctx.base or "/", httponly=True, samesite="lax", secure=ctx.request.url.scheme == "https",
        )
        return response

    def render(self, ctx: Ctx, template: str, http_status: int = 200, /, **values: Any) -> Response:
        from starlette.responses import HTMLResponse

        flash = self.codec.unsign("flash", ctx.request.cookies.get(FLASH_COOKIE))
        session = ctx.session
        html = self.env.get_template(template).render(
            base=ctx.base,
            csrf_field=CSRF_FIELD,
            csrf_token=session.csrf if session else "",
            logged_in=bool(session and session.user),
            flash=flash,
            path=ctx.request.url.path,
            **{"nav": None, "refresh": False, **values},
        )
        response = HTMLResponse(html, status_code=http_status)
        if FLASH_COOKIE in ctx.request.cookies:
            response.delete_cookie(FLASH_COOKIE, path=ctx.base or "/")
        return response

    def error_page(self, ctx: Ctx, status: int, title: str, message: str) -> Response:
        if ctx.wants_json:
            from starlette.responses import JSONResponse

            return JSONResponse({"error": message}, status_code=status)
        return self.render(ctx, "error.html", status, title=title, message=message)

    def redirect(self, url: str, background: Any = None) -> Response:
        from starlette.responses import RedirectResponse

        return RedirectResponse(url, status_code=303, background=background)

    def login_redirect(self, ctx: Ctx) -> Response:
        url = ctx.request.url
        here = url.path + (f"?{url.query}" if url.query else "")
        if ctx.request.method != "GET":
            here = f"{ctx.base}/flows"
        if ctx.wants_json:
            from starlette.responses import JSONResponse

            return JSONResponse({"error": "not logged in (or the session expired): log in again"}, status_code=401)
        return self.redirect(f"{ctx.base}/login?{urlencode({'next': here})}")

    # -- the request wrapper ------------------------------------------------------------

    def page(self, handler: Callable[[Ctx], Response], *, auth: bool = True,
             limit: int = FORM_LIMIT) -> Callable[[Request], Awaitable[Response]]:
        """An endpoint: login check (``auth``), then for a POST the form and its CSRF token,
        then ``handler`` in the thread pool (the store and the registry block)."""
        from starlette.concurrency import run_in_threadpool

        async def endpoint(request: Request) -> Response:
            ctx = Ctx(request, self.session_of(request), Form(), str(request.scope.get("root_path", "")))
            try:
                if auth and (ctx.session is None or not ctx.session.user):
                    return self.login_redirect(ctx)
                if request.method == "POST":
                    problem: FormError | None = None
                    try:
                        ctx.form = parse_form(request.headers.get("content-type", ""), await _read_body(request, limit))
                    except FormError as exc:
                        if exc.status == 413:
                            return self.error_page(ctx, 413, "Too large", str(exc))
                        problem = exc
                    provided = ctx.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
                    if ctx.session is None or not ctx.session.csrf_ok(provided):
                        log_event(_log, "dashboard request refused: missing or invalid CSRF token", logging.WARNING,
                                  path=request.url.path, client=request.client.host if request.client else None)
                        return self.error_page(
                            ctx, 403, "Forbidden",
                            "The form's CSRF token is missing or invalid (the page may be stale or the session "
                            "expired). Reload the page and try again.",
                        )
                    if problem is not None:
                        return self.error_page(ctx, problem.status, "Bad request", str(problem))
                return await run_in_threadpool(self._guarded, handler, ctx)
            except Exception as exc:  # an HTML page rather than the API's JSON 500
                error_id = uuid.uuid4().hex[:12]
                _log.error("dashboard request failed", exc_info=exc,
                           extra={"fields": {"error_id": error_id, "path": request.url.path}})
                return self.error_page(ctx, 500, "Internal error",
                                       f"Something went wrong (error_id {error_id}; details in the server log).")

        return endpoint

    def _guarded(self, handler: Callable[[Ctx], Response], ctx: Ctx) -> Response:
        try:
            return handler(ctx)
        except _NotFound as exc:
            return self.error_page(ctx, 404, "Not found", str(exc))
        except _Unavailable as exc:
            return self.error_page(ctx, 503, "Unavailable", str(exc))

    # -- login -------------------------------------------------------------------------

    def _client(self, ctx: Ctx) -> str:
        peer = ctx.request.client.host if ctx.request.client else None
        headers = {k.lower(): v for k, v in ctx.request.headers.items()}
        try:
            return client_ip(peer, headers, self.settings.trusted_proxies) or "unknown"
        except ValueError:
            return peer or "unknown"

    def login_form(self, ctx: Ctx) -> Response:
        target = safe_next(ctx.query("next"), ctx.base)
        if ctx.session is not None and ctx.session.user:
            return self.redirect(target)
        session = ctx.session or Session.new(user=False)
        ctx.session = session
        notice = "You are logged out." if ctx.query("logged_out") else None
        response = self.render(ctx, "login.html", next=target, error=None, notice=notice,
                               enabled=bool(self.settings.api_token))
        self.set_session(ctx, response, session)
        return response

    def login_submit(self, ctx: Ctx) -> Response:
        target = safe_next(ctx.form.get("next"), ctx.base)
        if not self.settings.api_token:
            return self.render(ctx, "login.html", 503, next=target, notice=None, enabled=False,
                               error="Login is disabled: set ADF_API_TOKEN to use the dashboard.")
        client = self._client(ctx)
        # The token first: the right one always logs in, however many wrong ones came from
        # this address (someone else's guesses must not lock its owner out).
        if not token_ok(ctx.form.get("token"), self.settings.api_token):
            wait = self.throttle.retry_after(client)
            self.throttle.failed(client)
            if wait is not None:
                log_event(_log, "dashboard login throttled", logging.WARNING, client=client, retry_after=wait)
                response = self.render(
                    ctx, "login.html", 429, next=target, notice=None, enabled=True,
                    error=f"Too many failed logins from {client}; try again in {_wait_text(wait)}.")
                response.headers["retry-after"] = str(wait)
                return response
            log_event(_log, "dashboard login failed", logging.WARNING, client=client)
            return self.render(ctx, "login.html", 401, next=target, notice=None, enabled=True,
                               error="Wrong token.")
        session = Session.new(user=True)  # a new id and CSRF token: nothing carries over from before the login
        log_event(_log, "dashboard login", client=client)
        response = self.redirect(target)
        self.set_session(ctx, response, session)
        return response

    def logout(self, ctx: Ctx) -> Response:
        if ctx.session is not None:
            with self._lock:
                now = time.time()
                self._revoked = {sid: exp for sid, exp in self._revoked.items() if exp > now}
                self._revoked[ctx.session.sid] = float(ctx.session.exp or now + self.session_seconds)
        response = self.redirect(f"{ctx.base}/login?logged_out=1")
        response.delete_cookie(SESSION_COOKIE, path=ctx.base or "/")
        return response

    # -- flows -------------------------------------------------------------------------

    def _flow(self, name: str) -> Any:
        try:
            return self.store.get_flow(name)
        except NotFoundError:
            raise _NotFound(f"There is no flow named {name!r}.") from None

    def home(self, ctx: Ctx) -> Response:
        return self.redirect(f"{ctx.base}/flows")

    def flows(self, ctx: Ctx) -> Response:
        return self.render(ctx, "flows.html", flows=self.store.list_flows(), nav="flows")

    def _flow_page(self, ctx: Ctx, flow: Any, *, status: int = 200, fmt: str | None = None, text: str | None = None,
                   interval: str | None = None, description: str | None = None,
                   problems: list[str] | None = None) -> Response:
        fmt = fmt if fmt in ("json", "yaml") else ("yaml" if ctx.query("format") == "yaml" else "json")
        shown = mask(flow.configuration, flow_secret_keys(flow.configuration))
        return self.render(
            ctx, "flow.html", status, nav="flows", flow=flow, fmt=fmt, masked=shown != flow.configuration,
            text=text if text is not None else format_configuration(shown, fmt),
            interval=interval if interval is not None else str(flow.run_interval),
            description=description if description is not None else flow.description,
            problems=problems or [], runs=self.store.list_runs(flow=flow.name, limit=10),
            mode=self.settings.heartbeat_mode,
        )

    def flow(self, ctx: Ctx) -> Response:
        return self._flow_page(ctx, self._flow(ctx.params["name"]))

    def _read_flow_form(self, ctx: Ctx, name: str | None,
                        stored: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
        """The form's values and every problem with them; ``stored`` is the configuration the
        editor showed masked (None for a new flow)."""
        form = ctx.form
        fmt = form.get("format") if form.get("format") in ("json", "yaml") else "json"
        configuration, problems = parse_configuration(form.get("configuration"), fmt)
        interval, interval_problems = _parse_interval(form.get("run_interval"))
        problems += interval_problems
        values = {"configuration": configuration, "run_interval": interval, "description": form.get("description")}
        problems += unstorable(values["description"], "description")
        if configuration is not None:
            problems += unstorable(configuration, "configuration")
        if configuration is not None and not problems:
            values["configuration"], masked = unmask(configuration, stored, flow_secret_keys(stored))
            problems += [f"configuration.{p}" for p in masked]
        if problems:
            # report the fields that could be read as well, all at once
            check = [k for k in ("configuration", "run_interval") if values[k] is not None]
            if name is not None:
                check.append("name")
            problems += flow_problems(name, configuration, interval, description=values["description"], check=check)
        return values, list(dict.fromkeys(problems))

    def flow_save(self, ctx: Ctx) -> Response:
        flow = self._flow(ctx.params["name"])
        values, problems = self._read_flow_form(ctx, flow.name, flow.configuration)
        if not problems:
            try:
                self.store.update_flow(flow.name, **values)
            except FlowValidationError as exc:
                problems = exc.problems
            except NotFoundError:
                raise _NotFound(f"There is no flow named {flow.name!r}.") from None
        if problems:
            return self._flow_page(
                ctx, flow, status=422, fmt=ctx.form.get("format"), text=ctx.form.get("configuration"),
                interval=ctx.form.get("run_interval"), description=ctx.form.get("description"), problems=problems,
            )
        log_event(_log, "flow changed from the dashboard", flow=flow.name)
        fmt = "yaml" if ctx.form.get("format") == "yaml" else "json"
        return self.flash(ctx, self.redirect(f"{ctx.base}/flows/{quote(flow.name)}?format={fmt}"),
                          "Configuration saved; it applies from the next run.")

    def flow_enabled(self, ctx: Ctx, enabled: bool) -> Response:
        name = self._flow(ctx.params["name"]).name
        self.store.update_flow(name, enabled=enabled)
        log_event(_log, "flow enabled" if enabled else "flow disabled", flow=name, via="dashboard")
        return self.flash(ctx, self.redirect(f"{ctx.base}/flows/{quote(name)}"),
                          f"Flow {name} {'enabled' if enabled else 'disabled'}.")

    def flow_trigger(self, ctx: Ctx) -> Response:
        from starlette.background import BackgroundTask

        from handlers import scheduler

        name = self._flow(ctx.params["name"]).name
        if self.settings.heartbeat_mode == "async":
            run = self.store.create_run(name, trigger="manual")
            log_event(_log, "run enqueued from the dashboard", run=run.id, flow=name)
            return self.flash(ctx, self.redirect(f"{ctx.base}/runs/{run.id}"),
                              f"Run #{run.id} of {name} is pending: an `adf worker` will run it.")
        worker_id = scheduler.default_worker_id("manual")
        run = self.store.create_run(name, trigger="manual", worker_id=worker_id,
                                    lease_seconds=self.settings.lease_seconds)
        log_event(_log, "run started from the dashboard", run=run.id, flow=name)
        task = BackgroundTask(self._execute, run, worker_id)
        return self.flash(ctx, self.redirect(f"{ctx.base}/runs/{run.id}", background=task),
                          f"Run #{run.id} of {name} started.")

    def _execute(self, run: Any, worker_id: str) -> None:
        from handlers import scheduler

        try:
            scheduler.execute_run(self.store, run, self.settings, worker_id=worker_id)
        except Exception as exc:  # execute_run records failures itself; this is a store outage
            _log.error("dashboard run failed", exc_info=exc, extra={"fields": {"run": run.id}})

    def flow_new(self, ctx: Ctx) -> Response:
        example = {"source": {"type": "memory", "records": [{"id": 1}]}, "sink": {"type": "memory"}}
        fmt = "yaml" if ctx.query("format") == "yaml" else "json"
        return self.render(ctx, "flow_new.html", nav="flows", fmt=fmt, name="", interval="60", description="",
                           text=format_configuration(example, fmt), problems=[])

    def flow_create(self, ctx: Ctx) -> Response:
        name = ctx.form.get("name").strip()
        values, problems = self._read_flow_form(ctx, name)
        if not problems:
            try:
                self.store.create_flow(name, values["configuration"], values["run_interval"],
                                       description=values["description"], enabled=ctx.form.get("enabled") == "on")
            except FlowValidationError as exc:
                problems = exc.problems
        if problems:
            fmt = ctx.form.get("format") if ctx.form.get("format") in ("json", "yaml") else "json"
            return self.render(ctx, "flow_new.html", 422, nav="flows", fmt=fmt, name=name,
                               interval=ctx.form.get("run_interval"), description=ctx.form.get("description"),
                               text=ctx.form.get("configuration"), problems=problems)
        log_event(_log, "flow created from the dashboard", flow=name)
        return self.flash(ctx, self.redirect(f"{ctx.base}/flows/{quote(name)}"), f"Flow {name} created.")

    # -- runs and heartbeats ------------------------------------------------------------

    def runs(self, ctx: Ctx) -> Response:
        flow = ctx.query("flow") or None
        status = ctx.query("status") or None
        if status not in (None, *RUN_STATUSES):
            status = None
        page_text = ctx.query("page", "1")
        page = max(int(page_text), 1) if page_text.isdigit() else 1
        size = 50
        runs = self.store.list_runs(flow=flow, status=status, limit=size + 1, offset=(page - 1) * size)
        more = len(runs) > size
        runs = runs[:size]
        filters = {k: v for k, v in (("flow", flow), ("status", status)) if v}
        return self.render(
            ctx, "runs.html", nav="runs", runs=runs, flow=flow or "", status=status or "", page=page, more=more,
            flows=[f.name for f in self.store.list_flows()],
            prev_query=urlencode({**filters, "page": page - 1}), next_query=urlencode({**filters, "page": page + 1}),
            refresh=any(r.status in ("pending", "in_progress") for r in runs),
        )

    def run(self, ctx: Ctx) -> Response:
        run_id = ctx.params["run_id"]
        try:
            run = self.store.get_run(run_id)
        except NotFoundError:
            raise _NotFound(f"There is no run #{run_id}.") from None
        return self.render(ctx, "run.html", nav="runs", run=run, refresh=run.status in ACTIVE_RUN_STATUSES,
                           letters=self._dead_letters(run))

    def _dead_letters(self, run: RunRecord) -> dict[str, Any] | None:
        """The run page's dead-letter section: None when the run has no run directory, or
        nothing to show (no dead letters now, none before, no replay)."""
        directory = run_directory(self.store, run, self.settings)
        if directory is None:
            return None
        summary = directory.summary()
        replays = [r for r in summary.get("replays") or [] if isinstance(r, Mapping)]
        problem: str | None = None
        letters: list[dict[str, Any]] = []
        total = 0
        try:
            letters, total = letters_of(directory, run, limit=LETTERS_SHOWN)
        except DeadLetterError as exc:
            problem = str(exc)
        if not letters and not replays and not problem and not run.dead_letters:
            return None
        ref = f"{run.flow_name}/{directory.run_id}"
        return {
            "shown": [_letter_view(letter) for letter in letters],
            "total": total,
            "more": max(total - LETTERS_SHOWN, 0),
            "replays": list(reversed(replays)),
            "problem": problem,
            "finished": run.status not in ACTIVE_RUN_STATUSES,
            "show_command": f"adf dead-letters show {ref} --state-dir {directory.state_root}",
        }

    def run_replay(self, ctx: Ctx) -> Response:
        run_id = ctx.params["run_id"]
        try:
            run = self.store.get_run(run_id)
        except NotFoundError:
            raise _NotFound(f"There is no run #{run_id}.") from None
        url = f"{ctx.base}/runs/{run.id}#dead-letters"
        try:
            outcome = replay_run_dead_letters(self.store, run, self.settings)
        except DeadLetterError as exc:
            log_event(_log, "dead-letter replay refused", logging.WARNING, run=run.id, status=exc.status,
                      error=str(exc))
            return self.flash(ctx, self.redirect(url), f"Not replayed: {exc}", "error")
        return self.flash(ctx, self.redirect(url), describe_replay(outcome), "ok" if not outcome["remaining"] else "info")

    def heartbeats(self, ctx: Ctx) -> Response:
        limit_text = ctx.query("limit", "200")
        limit = min(max(int(limit_text), 1), 1000) if limit_text.isdigit() else 200
        return self.render(ctx, "heartbeats.html", nav="heartbeats", beats=self.store.list_heartbeats(limit=limit),
                           limit=limit, path_hb=self.settings.heartbeat_path)

    # -- WASM modules --------------------------------------------------------------------

    def _open_registry(self) -> ModuleRegistry:
        try:
            return self.registry()
        except Exception as exc:
            log_event(_log, "the wasm registry is unavailable", logging.ERROR, error=str(exc))
            raise _Unavailable(f"The WASM module registry cannot be opened: {exc}") from exc

    def _modules_page(self, ctx: Ctx, registry: ModuleRegistry, *, status: int = 200,
                      upload: Mapping[str, str] | None = None, problems: list[str] | None = None) -> Response:
        modules: list[ModuleRecord] = []
        for latest in registry.list():
            modules.extend(reversed(registry.versions(latest.id)))
        return self.render(ctx, "modules.html", status, nav="modules", modules=modules, upload=upload or {},
                           problems=problems or [], limit=_human_size(UPLOAD_LIMIT),
                           require_signature=registry.require_signature)

    def modules(self, ctx: Ctx) -> Response:
        registry = self._open_registry()
        return self._modules_page(ctx, registry)

    def module_upload(self, ctx: Ctx) -> Response:
        from core.errors import MissingExtraError
        from core.wasm.errors import SignatureError

        registry = self._open_registry()
        form = ctx.form
        module = form.files.get("module")
        module_id = form.get("id").strip() or (_module_id_from_filename(module.filename) if module else "")
        version = form.get("version").strip()
        permissions = [line.strip() for line in form.get("permissions").splitlines() if line.strip()]
        author = form.get("author").strip() or None
        signature = form.files.get("signature")
        problems: list[str] = []
        if module is None or not module.data:
            problems.append("choose a .wasm file (drop it on the drop zone or use the file picker)")
        if not module_id:
            problems.append("module id: is required")
        if not version:
            problems.append("version: is required (a semantic version, e.g. 1.0.0)")
        record = None
        if not problems and module is not None:
            try:
                record = registry.upload(
                    module_id, version, module.data, permissions=permissions, author=author,
                    signature=signature.data if signature is not None and signature.data else None,
                    description=form.get("description").strip(),
                )
            except (ValueError, SignatureError, MissingExtraError) as exc:
                problems.append(str(exc))
        if record is None:
            if ctx.wants_json:
                from starlette.responses import JSONResponse

                return JSONResponse({"error": "; ".join(problems), "problems": problems}, status_code=422)
            values = {"id": module_id, "version": version, "permissions": form.get("permissions"),
                      "description": form.get("description"), "author": form.get("author")}
            return self._modules_page(ctx, registry, status=422, upload=values, problems=problems)
        log_event(_log, "wasm module uploaded from the dashboard", ref=record.ref, size=record.size)
        url = f"{ctx.base}/modules/{quote(record.id)}/{quote(record.version)}"
        message = f"Uploaded {record.ref} ({_human_size(record.size)})."
        if ctx.wants_json:
            from starlette.responses import JSONResponse

            return self.flash(ctx, JSONResponse({"ok": True, "ref": record.ref, "redirect": url}), message)
        return self.flash(ctx, self.redirect(url), message)

    def _module(self, registry: ModuleRegistry, ctx: Ctx) -> ModuleRecord:
        from core.wasm.errors import ModuleNotFoundInRegistry

        ref = f"{ctx.params['module_id']}@{ctx.params['version']}"
        try:
            return registry.get(ref)
        except (ModuleNotFoundInRegistry, ValueError):
            raise _NotFound(f"There is no module {ref} in the registry.") from None

    def _module_page(self, ctx: Ctx, registry: ModuleRegistry, record: ModuleRecord, *, status: int = 200,
                     permission: str = "", permission_error: str | None = None) -> Response:
        changes = [e for e in registry.audit_log(module_id=record.id, event="permissions_changed", limit=50)
                   if e.get("resource") == record.ref][:10]
        return self.render(
            ctx, "module.html", status, nav="modules", module=record, versions=registry.versions(record.id),
            stats=registry.stats(record.ref), all_stats=registry.stats(record.id),
            executions=registry.query(module_id=record.ref, limit=20), changes=changes,
            permission=permission, permission_error=permission_error,
        )

    def module(self, ctx: Ctx) -> Response:
        registry = self._open_registry()
        return self._module_page(ctx, registry, self._module(registry, ctx))

    def permission_add(self, ctx: Ctx) -> Response:
        from core.wasm.permissions import Permission

        registry = self._open_registry()
        record = self._module(registry, ctx)
        text = ctx.form.get("permission").strip()
        try:
            if not text:
                raise ValueError("enter a permission such as http:read:https://api.example.com/*")
            permission = str(Permission.parse(text))
        except ValueError as exc:
            return self._module_page(ctx, registry, record, status=422, permission=text, permission_error=str(exc))
        url = f"{ctx.base}/modules/{quote(record.id)}/{quote(record.version)}"
        current = record.permissions.to_list()
        if permission in current:
            return self.flash(ctx, self.redirect(url), f"{record.ref} already has {permission}.", "info")
        registry.set_permissions(record.ref, [*current, permission])
        log_event(_log, "wasm permission added from the dashboard", ref=record.ref, permission=permission)
        return self.flash(ctx, self.redirect(url), f"Granted {permission} to {record.ref}.")

    def permission_remove(self, ctx: Ctx) -> Response:
        registry = self._open_registry()
        record = self._module(registry, ctx)
        permission = ctx.form.get("permission").strip()
        url = f"{ctx.base}/modules/{quote(record.id)}/{quote(record.version)}"
        current = record.permissions.to_list()
        if permission not in current:
            return self.flash(ctx, self.redirect(url), f"{record.ref} does not have {permission!r}.", "error")
        registry.set_permissions(record.ref, [p for p in current if p != permission])
        log_event(_log, "wasm permission removed from the dashboard", ref=record.ref, permission=permission)
        return self.flash(ctx, self.redirect(url), f"Revoked {permission} from {record.ref}.")

    def module_delete_confirm(self, ctx: Ctx) -> Response:
        registry = self._open_registry()
        return self.render(ctx, "module_delete.html", nav="modules", module=self._module(registry, ctx))

    def module_delete(self, ctx: Ctx) -> Response:
        registry = self._open_registry()
        record = self._module(registry, ctx)
        if ctx.form.get("confirm") != "yes":
            return self.redirect(f"{ctx.base}/modules/{quote(record.id)}/{quote(record.version)}/delete")
        registry.delete(record.ref)
        log_event(_log, "wasm module deleted from the dashboard", ref=record.ref)
        return self.flash(ctx, self.redirect(f"{ctx.base}/modules"), f"Deleted {record.ref}.")

    def not_found(self, ctx: Ctx) -> Response:
        return self.error_page(ctx, 404, "Not found", f"There is no dashboard page at {ctx.request.url.path}.")

    # -- the ASGI app ------------------------------------------------------------------

    def asgi_app(self) -> Starlette:
        from starlette.applications import Starlette
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles

        get, post = ["GET", "HEAD"], ["POST"]
        module = "/modules/{module_id}/{version}"
        routes = [
            Route("/", self.page(self.home), methods=get),
            Route("/login", self.page(self.login_form, auth=False), methods=get),
            Route("/login", self.page(self.login_submit, auth=False), methods=post),
            Route("/logout", self.page(self.logout), methods=post),
            Route("/flows", self.page(self.flows), methods=get),
            Route("/new-flow", self.page(self.flow_new), methods=get),
            Route("/new-flow", self.page(self.flow_create), methods=post),
            Route("/flows/{name}", self.page(self.flow), methods=get),
            Route("/flows/{name}/configuration", self.page(self.flow_save), methods=post),
            Route("/flows/{name}/enable", self.page(lambda ctx: self.flow_enabled(ctx, True)), methods=post),
            Route("/flows/{name}/disable", self.page(lambda ctx: self.flow_enabled(ctx, False)), methods=post),
            Route("/flows/{name}/trigger", self.page(self.flow_trigger), methods=post),
            Route("/runs", self.page(self.runs), methods=get),
            Route("/runs/{run_id:int}", self.page(self.run), methods=get),
            Route("/runs/{run_id:int}/dead-letters/replay", self.page(self.run_replay), methods=post),
            Route("/heartbeats", self.page(self.heartbeats), methods=get),
            Route("/modules", self.page(self.modules), methods=get),
            Route("/modules/upload", self.page(self.module_upload, limit=UPLOAD_LIMIT), methods=post),
            Route(module, self.page(self.module), methods=get),
            Route(module + "/permissions/add", self.page(self.permission_add), methods=post),
            Route(module + "/permissions/remove", self.page(self.permission_remove), methods=post),
            Route(module + "/delete", self.page(self.module_delete_confirm), methods=get),
            Route(module + "/delete", self.page(self.module_delete), methods=post),
            Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
            Route("/{path:path}", self.page(self.not_found), methods=["GET", "HEAD", "POST"]),
        ]
        app = Starlette(routes=routes)
        app.add_middleware(_SecurityHeaders)
        return app


def mount_dashboard(
    app: FastAPI,
    settings: Settings,
    store: ScheduleStore,
    *,
    registry: ModuleRegistry | None = None,
    prefix: str = PREFIX,
    throttle: FailureThrottle | None = None,
) -> Dashboard:
    """Mount the dashboard at ``prefix`` on ``app``; a registry it opens itself is closed
    when the app shuts down. ``throttle`` counts the failed logins (give the API's, so that
    wrong tokens from an address count together; a new one otherwise)."""
    from starlette.responses import RedirectResponse

    dashboard = Dashboard(settings, store, registry=registry, throttle=throttle)
    app.mount(prefix, dashboard.asgi_app(), name="dashboard")
    if not settings.api_token:
        log_event(_log, f"the dashboard ({prefix}) has no login until ADF_API_TOKEN is set")

    async def to_dashboard(request: Request) -> Response:
        return RedirectResponse(f"{request.scope.get('root_path', '')}{prefix}/", status_code=307)

    app.add_route(prefix, to_dashboard, methods=["GET", "HEAD"], include_in_schema=False)

    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(asgi: Any) -> AsyncIterator[Any]:
        try:
            async with inner(asgi) as state:
                yield state
        finally:
            dashboard.close()

    app.router.lifespan_context = lifespan
    return dashboard
