"""Build and serve the heartbeat web app.

``create_app`` returns the FastAPI (ASGI) app: ``POST {heartbeat_path}``, the management API
under ``/api``, the dashboard under ``/ui``, ``/healthz``, ``/metrics`` (Prometheus,
:mod:`active_data_flow.handlers.web.metrics`) and ``/openapi.json``. ``serve`` runs it with uvicorn, logging
JSON lines. Only the standard library is imported at module level; FastAPI, pydantic and
uvicorn load inside the functions.

:class:`active_data_flow.handlers.web.guard.RequestGuard` stands in front of every route (``build_app`` installs it): it decides
who may call from the request line and headers alone — before a byte of the body is read —
and caps the body at ``ADF_MAX_BODY_BYTES``, so an unauthenticated or oversized upload costs
the server nothing but the bandwidth.

Example::

    from active_data_flow.handlers.settings import load_settings
    from active_data_flow.handlers.web.app import serve
    serve(load_settings(), host="127.0.0.1", port=8000)      # what `adf serve` does

    app = create_app(load_settings())                        # any ASGI server:
    # uvicorn --factory active_data_flow.handlers.web.app:create_app --no-proxy-headers
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from active_data_flow.handlers.schedule.store import ScheduleStore
from active_data_flow.handlers.security import (
    MIN_TOKEN_LENGTH,
    short_tokens,
)
from active_data_flow.handlers.settings import Settings, load_settings
from active_data_flow.logs import get_logger, log_event

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

__all__ = ["LOG_CONFIG", "create_app", "make_server", "serve", "startup_warnings"]


_log = get_logger("web")

#: uvicorn's loggers as JSON lines on stderr, like the ``adf`` loggers (active_data_flow.logs).
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "active_data_flow.logs.JsonFormatter"}},
    "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "loggers": {
        "uvicorn": {"handlers": ["json"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["json"], "level": "INFO", "propagate": False},
    },
}


def startup_warnings(settings: Settings) -> list[str]:
    """What ``adf serve`` warns about when it starts: open or refusing heartbeats, short tokens."""
    warnings: list[str] = []
    if not settings.heartbeat_token:
        if settings.heartbeat_open:
            warnings.append("the heartbeat is OPEN: anyone who can reach it may trigger flows "
                            "(ADF_HEARTBEAT_OPEN=true; set ADF_HEARTBEAT_TOKEN outside local use)")
        else:
            warnings.append("the heartbeat refuses every request until ADF_HEARTBEAT_TOKEN is set "
                            "(or ADF_HEARTBEAT_OPEN=true for local use)")
    for name in short_tokens(settings):
        warnings.append(f"{name} is shorter than {MIN_TOKEN_LENGTH} characters and can be guessed; use a long "
                        "random one, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return warnings


def create_app(settings: Settings | None = None, store: ScheduleStore | None = None) -> FastAPI:
    """The ASGI app. ``settings`` default to :func:`load_settings`; ``store`` defaults to a
    :class:`~active_data_flow.handlers.schedule.sql.SqlScheduleStore` on ``settings.database_url`` (closed
    when the app shuts down; a store passed in is the caller's to close)."""
    from active_data_flow.handlers.web.api import build_app

    settings = settings or load_settings()
    owns_store = store is None
    if store is None:
        from active_data_flow.handlers.schedule.sql import SqlScheduleStore

        store = SqlScheduleStore(settings.database_url)
    app = build_app(settings, store, owns_store=owns_store)
    from active_data_flow.handlers.web.dashboard import mount_dashboard

    # the HTML dashboard under /ui (active_data_flow.handlers.web.dashboard); its login failures and the API's
    # wrong tokens count together per address
    mount_dashboard(app, settings, store, throttle=app.state.auth_throttle)
    from active_data_flow.handlers.web.metrics import mount_metrics

    # GET /metrics (Prometheus), behind the management API's access rule (RequestGuard)
    mount_metrics(app)
    return app


def make_server(
    settings: Settings | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    store: ScheduleStore | None = None,
    **config: Any,
) -> uvicorn.Server:
    """A uvicorn server for the app, configured as ``serve`` runs it: ``proxy_headers=False``
    (``X-Forwarded-For`` is judged by ``ADF_TRUSTED_PROXIES`` in active_data_flow.handlers.security, not by
    uvicorn) and JSON logs. ``config`` adds uvicorn.Config options."""
    import uvicorn

    from active_data_flow.logs import configure

    configure()
    options: dict[str, Any] = {"proxy_headers": False, "log_config": LOG_CONFIG, "server_header": False, **config}
    return uvicorn.Server(uvicorn.Config(create_app(settings, store), host=host, port=port, **options))


def serve(settings: Settings | None = None, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the web app until interrupted (``adf serve``)."""
    from active_data_flow.redact import redact_text

    settings = settings or load_settings()
    server = make_server(settings, host, port)
    log_event(_log, "serving", host=host, port=port, heartbeat_path=settings.heartbeat_path,
              mode=settings.heartbeat_mode, database=redact_text(settings.database_url), settings=settings.source,
              max_body_bytes=settings.max_body_bytes)
    for warning in startup_warnings(settings):
        log_event(_log, warning, logging.WARNING)
    if not settings.api_token:
        log_event(_log, "management API (/api) answers only 127.0.0.1 and ::1; set ADF_API_TOKEN to use it remotely")
    server.run()
