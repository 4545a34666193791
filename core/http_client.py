"""The one HTTP client of the connectors and steps: headers, auth, timeout and retries.

A request answered 408, 429 or 5xx, or failed by the network, is retried with exponential
backoff (``Retry-After`` — seconds or an HTTP date — replaces the computed wait, capped at
``max_backoff``); the final answer is returned whatever its status (the caller says what it
means), and only a network that kept failing raises (:class:`HttpNetworkError`). Credentials
are not sent again after a redirect. Standard library only.

Given a :class:`ConnectionPool`, a client keeps HTTP/1.1 connections alive per scheme, host
and port and reuses them across requests and threads (one request per connection at a time).
A kept-alive connection the server has closed is replaced before use; if the server turns out
to have closed it while the request was being sent, the request goes again on a new
connection once — without counting as an attempt — when nothing can have reached the server
(sending failed) or the method is idempotent. A ``POST``/``PATCH`` whose answer never came is
a network error like any other: the retry policy decides. Redirects are followed as
:mod:`urllib.request` follows them; a request that an environment proxy applies to goes
through :mod:`urllib.request` without pooling.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from active_data_flow.errors import AdfError
from active_data_flow.logs import get_logger, log_event
from active_data_flow.redact import redact_text
from active_data_flow.retry import RetriesExhausted, RetryPolicy, retry_after_seconds, retry_call

__all__ = ["NETWORK_ERRORS", "ConnectionPool", "HttpClient", "HttpNetworkError", "HttpResponse", "RetryableAnswer", "is_retryable_status"]

_log = get_logger("connectors.http")


@dataclass
class HttpResponse:
    status: int
    headers: Any
    body: bytes
    url: str
    attempts: int

    def header(self, name: str) -> str | None:
        value = self.headers.get(name) if self.headers is not None else None
        return str(value) if value is not None else None


def is_retryable_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


@dataclass
class HttpClient:
    """Sends requests with the configured headers, auth, timeout and retries."""

    what: str
    headers: dict[str, str]
    auth: tuple[str, str] | None
    timeout: float
    retries: int
    backoff: float
    max_backoff: float
    sleep: Callable[[float], None] = field(default=time.sleep)
    #: kept-alive connections to reuse (None: a new connection per request, through urllib)
    pool: ConnectionPool | None = None

    def send(
        self, method: str, url: str, data: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> HttpResponse:
        """The final answer after retrying 408/429/5xx and network errors; raises only when the network failed."""
        shown = redact_text(url)
        attempts = [0]

        pooled = self.pool is not None and self.pool.handles(url)

        def attempt() -> HttpResponse:
            attempts[0] += 1
            if pooled:
                return self._pooled_attempt(method, url, data, headers, attempts[0])
            req = urllib.request.Request(url, data=data, method=method)
            for key, value in {**self.headers, **(headers or {})}.items():
                req.add_header(key, value)
            if self.auth is not None:
                req.add_unredirected_header(*self.auth)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return HttpResponse(resp.status, resp.headers, resp.read(), resp.geturl(), attempts[0])
            except urllib.error.HTTPError as err:
                with contextlib.closing(err):
                    body = err.read() if err.fp is not None else b""
                result = HttpResponse(err.code, err.headers, body, url, attempts[0])
                if is_retryable_status(result.status):
                    raise RetryableAnswer(result) from None
                return result

        def log(exc: BaseException, attempt: int, wait: float) -> None:
            if isinstance(exc, RetryableAnswer):
                log_event(_log, "request answered a retryable status; retrying", logging.WARNING, what=self.what,
                          url=shown, status=exc.response.status, attempt=attempt, wait_s=round(wait, 3))
            else:
                log_event(_log, "request failed; retrying", logging.WARNING, what=self.what, url=shown,
                          error=redact_text(str(getattr(exc, "reason", None) or exc)), attempt=attempt,
                          wait_s=round(wait, 3))

        policy = RetryPolicy(window_s=float("inf"), first_delay_s=self.backoff, max_delay_s=self.max_backoff,
                             max_attempts=self.retries + 1)
        try:
            return retry_call(
                attempt, policy=policy, what=self.what, on_retry=log, sleep=self.sleep,
                retryable=lambda exc: isinstance(exc, (RetryableAnswer, *NETWORK_ERRORS)),
                wait_hint=lambda exc: (retry_after_seconds(exc.response.header("Retry-After"))
                                       if isinstance(exc, RetryableAnswer) else None),
            )
        except RetriesExhausted as exc:
            if isinstance(exc.last, RetryableAnswer):
                return exc.last.response  # the final answer: the caller says what it means
            reason = getattr(exc.last, "reason", None) or exc.last
            raise HttpNetworkError(f"{self.what}: {method} {shown} failed after {exc.attempts} attempt(s): {reason}") from None
        except NETWORK_ERRORS as exc:  # pragma: no cover - every network error is retryable
            raise HttpNetworkError(f"{self.what}: {method} {shown} failed: {exc}") from None

    def _pooled_attempt(
        self, method: str, url: str, data: bytes | None, headers: Mapping[str, str] | None, attempt: int
    ) -> HttpResponse:
        """One attempt over the pool, following redirects the way urllib does; raises
        :class:`RetryableAnswer` for a 408/429/5xx answer."""
        assert self.pool is not None
        sent = {"User-agent": _URLLIB_AGENT, **{k.capitalize(): v for k, v in {**self.headers, **(headers or {})}.items()}}
        if self.auth is not None:
            sent[self.auth[0].capitalize()] = self.auth[1]  # the first hop only, as urllib's unredirected header
        for hop in range(_MAX_REDIRECTS + 1):
            status, answer_headers, body = self.pool.request(method, url, data, sent)
            location = answer_headers.get("Location") or answer_headers.get("URI")
            target = urllib.parse.urljoin(url, location) if location else None
            if (target is None or hop == _MAX_REDIRECTS or not _follows(status, method)
                    or not target.startswith(("http://", "https://"))):
                break  # the answer to give (past the last hop: the redirect itself, as urllib's error)
            # as urllib: the next hop is a GET (HEAD stays HEAD) without body, content headers or credentials
            method = "HEAD" if method == "HEAD" else "GET"
            url, data = target, None
            sent = {k: v for k, v in sent.items() if k not in ("Content-length", "Content-type")}
            if self.auth is not None:
                sent.pop(self.auth[0].capitalize(), None)
        result = HttpResponse(status, answer_headers, body, url, attempt)
        if is_retryable_status(status):
            raise RetryableAnswer(result)
        return result


_URLLIB_AGENT = f"Python-urllib/{sys.version_info[0]}.{sys.version_info[1]}"
_MAX_REDIRECTS = 10  # urllib.request.HTTPRedirectHandler.max_redirections
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})


def _follows(status: int, method: str) -> bool:
    """Whether urllib follows a ``status`` answer to ``method`` (its ``redirect_request`` rule)."""
    return (status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD")) or (
        status in (301, 302, 303) and method == "POST")


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """True when an idle connection can no longer carry a request: closed, or readable (the
    server's end of stream, or bytes nobody asked for)."""
    import select  # only pooled requests need it; the module must also load where select may be missing (Spin)

    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class _NoDelayHTTPConnection(http.client.HTTPConnection):
    """Sends each request at once (no Nagle delay), as urllib3 and curl do on kept-alive connections."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _NoDelayHTTPSConnection(http.client.HTTPSConnection):
    """:class:`_NoDelayHTTPConnection` over TLS."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class ConnectionPool:
    """Kept-alive HTTP/1.1 connections per (scheme, host, port), safe to share between threads.

    Each request takes an idle connection of its origin (or opens one) and gives it back when
    the answer has been read, so ``n`` requests in flight use at most ``n`` connections; at
    most ``max_idle`` idle connections per origin are kept. :meth:`close` closes them all (a
    connection in use is closed when its request ends). ``opened`` counts the connections
    opened so far.
    """

    def __init__(self, timeout: float, max_idle: int = 64) -> None:
        self.timeout = timeout
        self.max_idle = max_idle
        self.opened = 0
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._proxies = urllib.request.getproxies()

    def handles(self, url: str) -> bool:
        """Whether requests to ``url`` go through the pool (http/https without an environment proxy)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return False
        return parts.scheme not in self._proxies or bool(urllib.request.proxy_bypass(parts.hostname or ""))

    def request(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """Send one request and read its whole answer: ``(status, headers, body)``.

        A kept-alive connection found broken is replaced once, transparently, when the request
        cannot have reached the server or its method is idempotent; every other failure raises
        (one of :data:`NETWORK_ERRORS`).
        """
        parts = urllib.parse.urlsplit(url)
        secure = parts.scheme == "https"
        key = (parts.scheme, parts.hostname or "", parts.port or (443 if secure else 80))
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        for retry_on_new in (True, False):
            conn, reused = self._take(key, fresh=not retry_on_new)
            try:
                conn.request(method, target, body=body, headers=dict(headers))
            except (ConnectionError, http.client.HTTPException, OSError):
                conn.close()
                if reused and retry_on_new:
                    continue  # the server had closed it: nothing of the request was processed
                raise
            try:
                resp = conn.getresponse()
            except (ConnectionError, http.client.RemoteDisconnected):
                conn.close()
                if reused and retry_on_new and method.upper() in _IDEMPOTENT:
                    continue  # closed by the server before any answer: safe to send again
                raise
            except BaseException:
                conn.close()
                raise
            try:
                payload = resp.read()
            except BaseException:
                conn.close()
                raise
            self._give_back(key, conn, keep=not resp.will_close)
            return resp.status, resp.headers, payload
        raise AssertionError("unreachable")  # pragma: no cover

    def _take(self, key: tuple[str, str, int], *, fresh: bool) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(key, [])
            while idle and not fresh:
                conn = idle.pop()
                if not _dropped(conn):
                    return conn, True
                conn.close()
            self.opened += 1
        scheme, host, port = key
        cls = _NoDelayHTTPSConnection if scheme == "https" else _NoDelayHTTPConnection
        return cls(host, port, timeout=self.timeout), False

    def _give_back(self, key: tuple[str, str, int], conn: http.client.HTTPConnection, *, keep: bool) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if keep and not self._closed and len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection and keep none from now on (a connection in use is
        closed when its request ends; a request after this opens a connection of its own)."""
        with self._lock:
            self._closed = True
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()


#: what a request raises when the network, not the server, failed
NETWORK_ERRORS = (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException)


class RetryableAnswer(Exception):
    """A 408/429/5xx answer, worth another attempt (``Retry-After`` honoured)."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(f"the server answered {response.status}")
        self.response = response


class HttpNetworkError(AdfError):
    """The server could not be reached after every retry."""
