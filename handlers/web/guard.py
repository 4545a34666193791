"""The guard in front of every route of the heartbeat web app.

:class:`RequestGuard` decides who may call from the request line and headers alone — before a
byte of the body is read — and caps the body at ``ADF_MAX_BODY_BYTES``, so an unauthenticated or
oversized upload costs the server nothing but the bandwidth. ``active_data_flow.handlers.web.api.build_app``
installs it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from active_data_flow.handlers.security import (
    FailureThrottle,
    authorize_api,
    authorize_heartbeat,
)
from active_data_flow.handlers.settings import Settings
from active_data_flow.logs import get_logger, log_event

__all__ = ["RequestGuard"]

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]

_log = get_logger("web")


class _BodyTooLarge(Exception):
    """Raised by the guarded ``receive`` when the streamed body passes the limit."""


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


async def _send_json(send: _Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode("utf-8")
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode("ascii"))]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


class RequestGuard:
    """ASGI middleware in front of every route: the access rule and the body limit, decided
    before the body is read.

    In order, for each HTTP request:

    1. a NUL character in the path or the query string → 400 (no route can use one, and
       PostgreSQL cannot store one);
    2. ``/api/…`` and ``/invoke/…``: :func:`active_data_flow.handlers.security.authorize_api` on the headers —
       401 / 403 / 503 at once, without reading the body. A *wrong* bearer token is counted in
       ``throttle`` for the client address; once the address has too many, further wrong
       tokens get 429 with ``Retry-After`` (a correct token always passes);
    3. the heartbeat path: a request the heartbeat will refuse goes on to it (it reads no body
       and records every refusal in the heartbeat log); an allowed one is held to the limit;
    4. every route except the dashboard (``exempt``: it has its own form and upload limits
       and its own login): a ``Content-Length`` above ``settings.max_body_bytes`` → 413 before
       anything is read; a body streamed without a length (chunked) is counted as it is read
       and refused with 413 the moment it passes the limit — never buffered beyond it.
    """

    def __init__(self, app: _App, settings: Settings, throttle: FailureThrottle,
                 *, protected: tuple[str, ...] = ("/api", "/invoke"), exempt: tuple[str, ...] = ("/ui",)) -> None:
        self.app = app
        self.settings = settings
        self.throttle = throttle
        self.protected = protected
        self.exempt = exempt

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        query = bytes(scope.get("query_string", b""))
        if "\x00" in path or b"%00" in query or b"\x00" in query:
            await _send_json(send, 400, {"error": "the URL contains a NUL character (%00), which no route accepts"})
            return
        if any(_under(path, prefix) for prefix in self.exempt):
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for raw_key, raw_value in scope.get("headers", []):
            key, value = raw_key.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        client = scope.get("client")
        peer = str(client[0]) if client else None
        if any(_under(path, prefix) for prefix in self.protected):
            decision = authorize_api(self.settings, peer, headers)
            if not decision.allowed:
                await self._refuse(send, decision.status, decision.outcome, decision.message, decision.client, path)
                return
        elif path == self.settings.heartbeat_path and scope.get("method") == "POST":
            if not authorize_heartbeat(self.settings, peer, headers).allowed:
                await self.app(scope, receive, send)  # refused and recorded there, the body unread
                return
        await self._limited(scope, receive, send, headers.get("content-length"))

    async def _refuse(self, send: _Send, status: int, outcome: str, message: str, client: str | None,
                      path: str) -> None:
        extra: dict[str, str] = {}
        if status == 401:
            extra["www-authenticate"] = "Bearer"
        if outcome == "bad_token":
            address = client or "unknown"
            wait = self.throttle.retry_after(address)
            self.throttle.failed(address)
            if wait is not None:
                log_event(_log, "API token refused: too many failed tokens from this address", logging.WARNING,
                          client=address, path=path, retry_after=wait)
                await _send_json(send, 429, {"error": f"too many failed tokens from {address}; try again in "
                                                      f"{wait} s", "retry_after": wait}, {"retry-after": str(wait)})
                return
            log_event(_log, "API token refused", logging.WARNING, client=address, path=path)
        await _send_json(send, status, {"error": message}, extra)

    async def _limited(self, scope: _Scope, receive: _Receive, send: _Send, declared: str | None) -> None:
        limit = self.settings.max_body_bytes
        too_large = {"error": f"the request body is larger than ADF_MAX_BODY_BYTES ({limit} bytes)"}
        if declared is not None:
            if not declared.strip().isdigit():
                await _send_json(send, 400, {"error": f"invalid Content-Length {declared!r}"})
                return
            if int(declared) > limit:
                await _send_json(send, 413, too_large)
                return
        received = 0
        exceeded = False
        started = False
        replaced = False

        async def limited_receive() -> _Message:
            nonlocal received, exceeded
            if exceeded:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: _Message) -> None:
            nonlocal started, replaced
            if replaced:
                return
            if message["type"] == "http.response.start" and exceeded and not started:
                # the route turned the interrupted read into an error of its own (a 400 "cannot
                # parse"…): the caller is owed the real reason
                replaced = True
                await _send_json(send, 413, too_large)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            if started:
                raise
            if not replaced:
                await _send_json(send, 413, too_large)
