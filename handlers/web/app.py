"""Build and serve the heartbeat web app.

``create_app`` returns the FastAPI (ASGI) app: ``POST {heartbeat_path}``, the management API
under ``/api``, the dashboard under ``/ui``, ``/healthz`` and ``/openapi.json``. ``serve`` runs it with uvicorn, logging
JSON lines. Only the standard library is imported at module level; FastAPI, pydantic and
uvicorn load inside the functions.

Example::

    from handlers.settings import load_settings
    from handlers.web.app import serve
    serve(load_settings(), host="127.0.0.1", port=8000)      # what `adf serve` does

    app = create_app(load_settings())                        # any ASGI server:
    # uvicorn --factory handlers.web.app:create_app --no-proxy-headers
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from handlers.schedule.store import ScheduleStore
from handlers.settings import Settings, load_settings

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

__all__ = ["LOG_CONFIG", "create_app", "make_server", "serve"]

#: uvicorn's loggers as JSON lines on stderr, like the ``adf`` loggers (core.logs).
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "core.logs.JsonFormatter"}},
    "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "loggers": {
        "uvicorn": {"handlers": ["json"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["json"], "level": "INFO", "propagate": False},
    },
}


def create_app(settings: Settings | None = None, store: ScheduleStore | None = None) -> FastAPI:
    """The ASGI app. ``settings`` default to :func:`load_settings`; ``store`` defaults to a
    :class:`~handlers.schedule.sql.SqlScheduleStore` on ``settings.database_url`` (closed
    when the app shuts down; a store passed in is the caller's to close)."""
    from handlers.web.api import build_app

    settings = settings or load_settings()
    owns_store = store is None
    if store is None:
        from handlers.schedule.sql import SqlScheduleStore

        store = SqlScheduleStore(settings.database_url)
    app = build_app(settings, store, owns_store=owns_store)
    from handlers.web.dashboard import mount_dashboard

    mount_dashboard(app, settings, store)  # the HTML dashboard under /ui (handlers.web.dashboard)
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
    (``X-Forwarded-For`` is judged by ``ADF_TRUSTED_PROXIES`` in handlers.security, not by
    uvicorn) and JSON logs. ``config`` adds uvicorn.Config options."""
    import uvicorn

    from core.logs import configure

    configure()
    options: dict[str, Any] = {"proxy_headers": False, "log_config": LOG_CONFIG, "server_header": False, **config}
    return uvicorn.Server(uvicorn.Config(create_app(settings, store), host=host, port=port, **options))


def serve(settings: Settings | None = None, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the web app until interrupted (``adf serve``)."""
    import logging

    from core.logs import get_logger, log_event
    from core.redact import redact_text

    settings = settings or load_settings()
    server = make_server(settings, host, port)
    log = get_logger("web")
    log_event(log, "serving", host=host, port=port, heartbeat_path=settings.heartbeat_path,
              mode=settings.heartbeat_mode, database=redact_text(settings.database_url), settings=settings.source)
    if not settings.heartbeat_token:
        if settings.heartbeat_open:
            log_event(log, "the heartbeat is OPEN: anyone who can reach it may trigger flows "
                      "(ADF_HEARTBEAT_OPEN=true; set ADF_HEARTBEAT_TOKEN outside local use)", logging.WARNING)
        else:
            log_event(log, "the heartbeat refuses every request until ADF_HEARTBEAT_TOKEN is set "
                      "(or ADF_HEARTBEAT_OPEN=true for local use)", logging.WARNING)
    if not settings.api_token:
        log_event(log, "management API (/api) answers only 127.0.0.1 and ::1; set ADF_API_TOKEN to use it remotely")
    server.run()
