"""Retrying what can pass: one policy and one loop for the engine and every connector.

Two questions are answered here, once:

* **Is this failure an outage?** :func:`unavailable_reason` says whether an exception means
  the other side cannot be reached or is not ready — connection refused or reset, a
  timeout, a name that does not resolve, an unknown database, failed authentication, a
  server that answers 5xx/429/408, a database that is shutting down or locked — as opposed
  to a record the other side refuses *for its content* (a constraint, a type). It looks at
  the exception chain by class name and SQLSTATE, so it needs none of the drivers
  (psycopg, SQLAlchemy, redis, botocore) imported.
* **How long to keep trying?** A :class:`RetryPolicy` is exponential backoff with jitter
  inside a time *window*: an outage that passes within the window is ridden out; one that
  does not ends in :class:`RetriesExhausted`, which the caller turns into a failed run
  (never into dead letters: the records were not refused, they were not delivered).

Example::

    policy = RetryPolicy(window_s=30)
    rows = retry_call(lambda: fetch(), policy=policy, retryable=is_unavailable, what="sink 'sql'")
"""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from active_data_flow.errors import AdfError, ConfigError
from active_data_flow.logs import get_logger, log_event

__all__ = [
    "RetriesExhausted",
    "RetryPolicy",
    "is_unavailable",
    "retry_after_seconds",
    "retry_call",
    "unavailable_reason",
]

T = TypeVar("T")
_log = get_logger("retry")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by a time window and optionally by attempts.

    The n-th wait is ``first_delay_s * multiplier**n`` capped at ``max_delay_s``, shortened by
    a random share of up to ``jitter`` (so many clients do not retry in lockstep). Retrying
    stops when the next wait would end past ``window_s`` after the first failure, or after
    ``max_attempts`` attempts in all.
    """

    window_s: float = 60.0
    first_delay_s: float = 0.5
    max_delay_s: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = None

    @classmethod
    def from_config(cls, value: Mapping[str, Any] | None, where: str = "retry policy", **defaults: Any) -> RetryPolicy:
        """A policy from a mapping such as ``runtime.sink_retry`` (unknown keys are refused)."""
        known = {f.name for f in fields(cls)}
        merged = {**defaults, **dict(value or {})}
        unknown = sorted(set(merged) - known)
        problems = [f"unknown key {k!r} (accepted: {', '.join(sorted(known))})" for k in unknown]
        out: dict[str, Any] = {}
        for name, raw in merged.items():
            if name not in known:
                continue
            if name == "max_attempts":
                if raw is not None and (not isinstance(raw, int) or isinstance(raw, bool) or raw < 1):
                    problems.append("'max_attempts' must be a whole number of at least 1")
                out[name] = raw
                continue
            if not isinstance(raw, int | float) or isinstance(raw, bool) or raw < 0:
                problems.append(f"{name!r} must be a number of at least 0, got {raw!r}")
                continue
            out[name] = float(raw)
        if out.get("multiplier", 2.0) < 1:
            problems.append("'multiplier' must be at least 1")
        if not 0 <= out.get("jitter", 0.5) <= 1:
            problems.append("'jitter' must be between 0 and 1")
        if problems:
            raise ConfigError(where, problems)
        return cls(**out)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The waits between attempts, without end (the caller applies the window)."""
        rand = (rng or random).random
        delay = self.first_delay_s
        while True:
            capped = min(delay, self.max_delay_s)
            yield capped * (1.0 - self.jitter * rand())
            delay *= self.multiplier


class RetriesExhausted(AdfError):
    """Every attempt failed with a retryable error; ``last`` is the last one."""

    def __init__(self, what: str, attempts: int, elapsed_s: float, last: BaseException) -> None:
        self.what = what
        self.attempts = attempts
        self.elapsed_s = elapsed_s
        self.last = last
        reason = unavailable_reason(last) or f"{type(last).__name__}: {last}"
        super().__init__(f"{what}: {reason} (still failing after {attempts} attempt(s) over {elapsed_s:.1f} s)")


def retry_call(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    retryable: Callable[[BaseException], bool],
    what: str,
    wait_hint: Callable[[BaseException], float | None] | None = None,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``fn`` until it returns, retrying the exceptions ``retryable`` accepts.

    A non-retryable exception propagates at once. The window counts from the first attempt
    (a slow attempt that fails uses it up as well); when the window or the attempts run out,
    :class:`RetriesExhausted` is raised from the last exception. ``wait_hint`` may
    return the wait the other side asked for (HTTP ``Retry-After``), used instead of the
    backoff but still capped at ``max_delay_s``.
    """
    started = clock()  # the window counts from the first attempt: a slow failing attempt uses it up too
    attempts = 0
    delays = policy.delays()
    while True:
        attempts += 1
        try:
            return fn()
        except Exception as exc:
            if not retryable(exc):
                raise
            now = clock()
            wait = next(delays)
            hinted = wait_hint(exc) if wait_hint is not None else None
            if hinted is not None:
                wait = max(0.0, min(hinted, policy.max_delay_s))
            elapsed = now - started
            if (policy.max_attempts is not None and attempts >= policy.max_attempts) or elapsed + wait > policy.window_s:
                raise RetriesExhausted(what, attempts, elapsed, exc) from exc
            if on_retry is not None:
                on_retry(exc, attempts, wait)
            else:
                log_event(
                    _log, "retrying", logging.WARNING, what=what, attempt=attempts,
                    wait_s=round(wait, 3), error=_short(exc),
                )
            sleep(wait)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` header: delay-seconds or an HTTP date; None when absent/invalid."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    import datetime
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _short(exc: BaseException) -> str:
    from active_data_flow.redact import redact_text

    text = str(exc).strip().splitlines()
    return redact_text(f"{type(exc).__name__}: {text[0] if text else ''}")


# --------------------------------------------------------------------------- classification

#: SQLSTATE classes of a server that cannot be reached or is not ready: connection exception,
#: invalid authorization, invalid catalog name (unknown database), insufficient resources,
#: operator intervention (shutdown, cannot connect now), system error, transaction rollback
#: (serialization failure, deadlock: try again).
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "28", "3D", "53", "57", "58", "40")
#: Driver error classes that mean "not reachable / not ready" whatever their message.
_UNAVAILABLE_CLASS_NAMES = frozenset(
    {
        "ConnectionError",  # builtins, redis, requests
        "TimeoutError",  # builtins, redis
        "ConnectionTimeout",  # psycopg 3: the server took the connection but did not answer within connect_timeout
        "BusyLoadingError",  # redis: loading its data set
        "EndpointConnectionError",  # botocore
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "NoCredentialsError",
        "PartialCredentialsError",
        "ServiceUnavailable",
        "NoBrokersAvailable",
        "SSHException",  # paramiko: the transport failed
        "NoValidConnectionsError",
        "AuthenticationException",
    }
)
#: SQLite's operational errors that are about the file, not a record.
_SQLITE_UNAVAILABLE = (
    "unable to open database",
    "database is locked",
    "disk i/o error",
    "readonly database",
    "database or disk is full",
    "no such table",
    "file is not a database",
)
_NETWORK_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH",
        "ENETDOWN", "EHOSTDOWN", "ENOTCONN", "ESHUTDOWN", "EADDRNOTAVAIL",
    )
    if hasattr(errno, name)
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)  # SQLAlchemy wraps the driver's error here
        todo.extend([orig if isinstance(orig, BaseException) else None, current.__cause__, current.__context__])
        reason = getattr(current, "reason", None)  # urllib.error.URLError wraps the socket error
        if isinstance(reason, BaseException):
            todo.append(reason)


def _status_of(exc: BaseException) -> int | None:
    for name in ("status", "status_code", "code"):
        value = getattr(exc, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    response = getattr(exc, "response", None)  # botocore ClientError
    if isinstance(response, Mapping):
        meta = response.get("ResponseMetadata") or {}
        value = meta.get("HTTPStatusCode") if isinstance(meta, Mapping) else None
        if isinstance(value, int):
            return value
    return None


def unavailable_reason(exc: BaseException) -> str | None:
    """Why ``exc`` means the other side is unreachable or not ready; None when it does not."""
    from active_data_flow.errors import SinkUnavailableError

    for current in _chain(exc):
        name = type(current).__name__
        first = (str(current).strip().splitlines() or [""])[0]
        if isinstance(current, SinkUnavailableError):
            return first or name
        if getattr(current, "connection_invalidated", False):
            return f"the connection was lost ({first})"
        sqlstate = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(sqlstate, str) and len(sqlstate) == 5:
            if sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES:
                return f"{first} (SQLSTATE {sqlstate})"
            continue  # the server answered about this statement: its SQLSTATE says what
        if name == "OperationalError" and type(current).__module__.startswith("sqlite3"):
            lowered = first.lower()
            if any(part in lowered for part in _SQLITE_UNAVAILABLE):
                return first
            continue
        if name in ("OperationalError", "InterfaceError") and not type(current).__module__.startswith("sqlalchemy"):
            # a driver's connection-level error without a SQLSTATE: the connection failed
            return first or name
        status = _status_of(current)
        if status is not None and (status >= 500 or status in (408, 429)):
            detail = first.removeprefix(f"HTTP Error {status}:").strip()  # urllib's wording
            return f"the server answered {status}" + (f": {detail}" if detail and detail != str(status) else "")
        if isinstance(current, OSError):
            if current.errno in _NETWORK_ERRNOS or isinstance(current, ConnectionError | TimeoutError):
                return first or name
            if type(current).__name__ in ("gaierror", "herror"):
                return f"cannot resolve the host name ({first})"
        if any(klass.__name__ in _UNAVAILABLE_CLASS_NAMES for klass in type(current).__mro__):
            return first or name
    return None


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means an outage (see :func:`unavailable_reason`)."""
    return unavailable_reason(exc) is not None
