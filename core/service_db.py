"""The SQLAlchemy engine of a database the project keeps its own tables in.

The heartbeat's schedule store and the WebAssembly module registry both keep their tables in a
database named by URL (SQLite or PostgreSQL). :func:`service_engine` makes its engine the same
way for both: ``postgres://`` and driver-less ``postgresql://`` mean psycopg 3, an invalid URL
is a :class:`ValueError` naming it (secrets redacted), a missing driver a
:class:`~active_data_flow.errors.MissingExtraError` naming the extra to install, a SQLite file's directory
is created, writers wait up to 30 s for SQLite's lock, and an in-memory SQLite database is one
shared connection. Each store then adds what is its own (how its transactions begin, pings).
SQLAlchemy is imported when an engine is made.
"""

from __future__ import annotations

import os
from typing import Any

from active_data_flow.errors import MissingExtraError
from active_data_flow.redact import redact_text

__all__ = ["SQLITE_BUSY_TIMEOUT", "service_engine"]

#: seconds a SQLite writer waits for the lock before "database is locked"
SQLITE_BUSY_TIMEOUT = 30


def service_engine(url: str, *, what: str, extra: str) -> Any:
    """A SQLAlchemy engine for ``url``; ``what`` names the store in errors and ``extra`` is the
    extra that brings SQLAlchemy for it (a PostgreSQL URL asks for ``postgres``)."""
    from active_data_flow.connectors.sql import normalise_url

    try:
        import sqlalchemy as sa
    except ImportError as exc:
        raise MissingExtraError("SQLAlchemy", extra, what) from exc
    url = normalise_url(url)
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ValueError(f"invalid database URL {redact_text(url)!r}: {redact_text(str(exc))}") from None
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT, "check_same_thread": False}
        database = parsed.database
        if not database or database == ":memory:":
            kwargs["poolclass"] = sa.pool.StaticPool  # one shared in-memory database
        elif not database.startswith("file:"):
            os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
    try:
        return sa.create_engine(parsed, **kwargs)
    except ImportError as exc:
        raise MissingExtraError(exc.name or str(exc), "postgres" if backend == "postgresql" else extra,
                                f"{what} ({backend})") from exc
    except sa.exc.ArgumentError as exc:
        raise ValueError(f"invalid database URL {redact_text(url)!r}: {redact_text(str(exc))}") from None
