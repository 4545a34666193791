"""The dashboard: server-rendered HTML pages under ``/ui`` for flows, runs, WASM modules and
the heartbeat request log.

:func:`mount_dashboard` mounts it on the app :func:`active_data_flow.handlers.web.app.create_app` builds. It
works on the same schedule store as the management API and on the WASM module registry of
``ModuleRegistry.from_env()`` (``ADF_WASM_*``), opened on first use.

Access: every page needs a login with the token of ``ADF_API_TOKEN`` (the management API's
bearer token; without it the login is disabled). Wrong tokens count per client address in
the same :class:`~active_data_flow.handlers.security.FailureThrottle` as the API's wrong bearer tokens; a
throttled address gets 429 for a wrong token, never for the right one. A login creates a session cookie
(``adf_session``: HttpOnly, SameSite=Lax, Secure over HTTPS) signed with HMAC-SHA256 under a
key derived from the token, so sessions survive a restart and end when the token changes.
Every POST carries the session's CSRF token (hidden ``csrf_token`` field or ``X-CSRF-Token``
header); a missing or wrong one is refused with 403 before anything runs.

A flow's configuration is shown with its secrets masked (:func:`active_data_flow.redact.mask`, the rule
of the management API); a masked value saved back unchanged keeps the stored secret.

A run's page shows the run's current dead letters and replays them through the flow's
current configuration: :func:`read_run_dead_letters` and :func:`replay_run_dead_letters`
(over :mod:`active_data_flow.dead_letters`), which the management API's dead-letter routes call too.

Only the standard library is imported at module level (``handlers`` must import without
third-party packages); Starlette and Jinja2 load in :func:`mount_dashboard`, python-multipart
when the first multipart form arrives.

The modules: :mod:`~active_data_flow.handlers.web.dashboard.sessions` (signed cookies, sessions, CSRF tokens),
:mod:`~active_data_flow.handlers.web.dashboard.forms` (request bodies as forms, the values read from them),
:mod:`~active_data_flow.handlers.web.dashboard.format` (how values are shown),
:mod:`~active_data_flow.handlers.web.dashboard.base` (the request wrapper, rendering, cookies) and
:mod:`~active_data_flow.handlers.web.dashboard.views` (the pages, their routes, :func:`mount_dashboard`).

Example::

    app = create_app(settings)          # mounts the dashboard at /ui
    # browse http://127.0.0.1:8000/ui/ and log in with ADF_API_TOKEN
"""

from __future__ import annotations

from active_data_flow.handlers.web.dashboard.forms import (
    Form,
    FormError,
    UploadedFile,
    parse_configuration,
    parse_form,
)
from active_data_flow.handlers.web.dashboard.sessions import (
    CSRF_FIELD,
    CSRF_HEADER,
    FLASH_COOKIE,
    SESSION_COOKIE,
    SessionCodec,
)
from active_data_flow.handlers.web.dashboard.views import PREFIX, Dashboard, mount_dashboard

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
