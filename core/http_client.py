"""The one HTTP client of the connectors and steps: headers, auth, timeout and retries.

A request answered 408, 429 or 5xx, or failed by the network, is retried with exponential
backoff (``Retry-After`` — seconds or an HTTP date — replaces the computed wait, capped at
``max_backoff``); the final answer is returned whatever its status (the caller says what it
means), and only a network that kept failing raises (:class:`HttpNetworkError`). Credentials
are not sent again after a redirect. Standard library only.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from active_data_flow.errors import AdfError
from active_data_flow.logs import get_logger, log_event
from active_data_flow.redact import redact_text
from active_data_flow.retry import RetriesExhausted, RetryPolicy, retry_after_seconds, retry_call

__all__ = ["NETWORK_ERRORS", "HttpClient", "HttpNetworkError", "HttpResponse", "RetryableAnswer", "is_retryable_status"]

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

    def send(
        self, method: str, url: str, data: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> HttpResponse:
        """The final answer after retrying 408/429/5xx and network errors; raises only when the network failed."""
        shown = redact_text(url)
        attempts = [0]

        def attempt() -> HttpResponse:
            attempts[0] += 1
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


#: what a request raises when the network, not the server, failed
NETWORK_ERRORS = (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException)


class RetryableAnswer(Exception):
    """A 408/429/5xx answer, worth another attempt (``Retry-After`` honoured)."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(f"the server answered {response.status}")
        self.response = response


class HttpNetworkError(AdfError):
    """The server could not be reached after every retry."""
