"""What every dashboard page stands on: :class:`Ctx` (what a page handler gets), the page
errors (:class:`PageNotFound`, :class:`PageUnavailable`), the security headers of every
response (:class:`SecurityHeaders`) and :class:`DashboardBase` — the dashboard's state
(settings, schedule store, WASM module registry, session codec, templates), its cookies and
rendering, and :meth:`DashboardBase.page`, the wrapper that checks the login, reads the form
of a POST and its CSRF token, and runs a page handler.

Standard library only at module level; Starlette and Jinja2 load when first used.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from active_data_flow.handlers.schedule.store import RUN_STATUSES, ScheduleStore
from active_data_flow.handlers.security import AUTH_FAILURES, AUTH_WINDOW, FailureThrottle
from active_data_flow.handlers.settings import Settings
from active_data_flow.handlers.web.dashboard.format import (
    count,
    duration,
    first_line,
    human_size,
    interval,
    when,
)
from active_data_flow.handlers.web.dashboard.forms import FORM_LIMIT, Form, FormError, parse_form, read_body
from active_data_flow.handlers.web.dashboard.sessions import (
    CSRF_FIELD,
    CSRF_HEADER,
    FLASH_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Session,
    SessionCodec,
    session_key,
)
from active_data_flow.logs import get_logger, log_event

if TYPE_CHECKING:
    from jinja2 import Environment
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Receive, Scope, Send
    from starlette.types import Message as AsgiMessage

    from active_data_flow.wasm.registry import ModuleRegistry

_log = get_logger("web.dashboard")

#: failed logins (and wrong API tokens) per client within LOGIN_WINDOW seconds before further
#: failed attempts get 429 (active_data_flow.handlers.security.FailureThrottle)
LOGIN_FAILURES = AUTH_FAILURES
LOGIN_WINDOW = AUTH_WINDOW

_WEB = Path(__file__).resolve().parent.parent
TEMPLATES = _WEB / "templates"
STATIC = _WEB / "static"

_SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; "
     b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
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


class PageNotFound(Exception):
    """A page for something that does not exist (rendered as 404)."""


class PageUnavailable(Exception):
    """A backend the page needs cannot be opened (rendered as 503)."""


class DashboardBase:
    """The dashboard's state and what every page does with it: settings, schedule store, WASM
    registry (opened lazily with ``ModuleRegistry.from_env()`` unless given), session codec,
    templates; sessions, cookies, rendering and the request wrapper. The pages are
    :class:`active_data_flow.handlers.web.dashboard.views.Dashboard`."""

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
                from active_data_flow.wasm.registry import ModuleRegistry

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
        env.filters.update(when=when, duration=duration, size=human_size, interval=interval, count=count,
                           first_line=first_line)
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

    def revoke(self, session: Session) -> None:
        """End a login before its cookie expires (the logout)."""
        with self._lock:
            now = time.time()
            self._revoked = {sid: exp for sid, exp in self._revoked.items() if exp > now}
            self._revoked[session.sid] = float(session.exp or now + self.session_seconds)

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
                        ctx.form = parse_form(request.headers.get("content-type", ""), await read_body(request, limit))
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
        except PageNotFound as exc:
            return self.error_page(ctx, 404, "Not found", str(exc))
        except PageUnavailable as exc:
            return self.error_page(ctx, 503, "Unavailable", str(exc))
