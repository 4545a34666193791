"""What the ``sql`` sink and source share: importing SQLAlchemy, database URLs and engines.

:func:`create_engine` makes the engine of a connector (PostgreSQL connections give up and
notice a dead peer in seconds; SQLite waits for another process's lock and begins every
transaction with ``BEGIN IMMEDIATE``); :func:`normalise_url` gives driver-less PostgreSQL
URLs the psycopg 3 driver.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from active_data_flow.codec import codec
from active_data_flow.errors import ConfigError, MissingExtraError
from active_data_flow.redact import redact_text

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

#: SQLite waits this long for a lock held by another process before failing.
_SQLITE_BUSY_TIMEOUT = 30
#: libpq settings of every PostgreSQL connection unless the URL sets them: give up a connect
#: after 10 s, notice a dead peer within about a minute (TCP keepalives).
_PG_CONNECT_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
}


def import_sqlalchemy(what: str) -> Any:
    """The ``sqlalchemy`` module; without it a :class:`MissingExtraError` naming the extra for ``what``."""
    try:
        import sqlalchemy
    except ImportError as exc:
        raise MissingExtraError("SQLAlchemy", "sql", what) from exc
    return sqlalchemy


def json_text(value: Any) -> str:
    """``value`` as JSON text (the project's codec)."""
    return codec().dumps(value).decode("utf-8")


def as_names(value: Any) -> list[str]:
    """A column name or a list of them as a list of names (``None`` is none)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def normalise_url(url: str) -> str:
    """``postgres://`` and driver-less ``postgresql://`` mean psycopg 3 (the ``postgres`` extra)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    return url


def _backend(url: str) -> str:
    return url.partition("://")[0].partition("+")[0].lower()


def create_engine(url: str, what: str) -> Engine:
    """A SQLAlchemy engine for ``url``; missing packages and bad URLs get clear errors."""
    sa = import_sqlalchemy(what)
    url = normalise_url(url)
    backend = _backend(url)
    kwargs: dict[str, Any] = {"json_serializer": json_text}
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(what, [f"'url': {redact_text(str(exc))}"]) from None
    if backend == "postgresql":
        # A server that takes the connection but never answers, or a connection that goes
        # silent, must end an attempt in seconds — not libpq's minutes — so the retry window
        # means what it says. The URL's own values win.
        given = set(parsed.query)
        kwargs["connect_args"] = {k: v for k, v in _PG_CONNECT_DEFAULTS.items() if k not in given}
    if backend == "sqlite":
        # Several reader processes write one file: wait for the lock instead of failing.
        kwargs["connect_args"] = {"timeout": _SQLITE_BUSY_TIMEOUT}
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            parent = os.path.dirname(os.path.abspath(database))
            os.makedirs(parent, exist_ok=True)
    try:
        engine: Engine = sa.create_engine(parsed, **kwargs)
    except ImportError as exc:
        package = exc.name or str(exc)
        extra = "postgres" if backend == "postgresql" else "sql"
        raise MissingExtraError(package, extra, f"{what} ({backend})") from exc
    except sa.exc.ArgumentError as exc:
        raise ConfigError(what, [f"'url': {redact_text(str(exc))}"]) from None
    if backend == "sqlite":
        begin_immediate(sa, engine)
    return engine


def preload(url: str, what: str) -> None:
    """Import SQLAlchemy, the dialect of ``url`` and its driver, without connecting.

    Called in the coordinator before reader processes are forked: they start with these
    modules imported instead of each importing them again. A missing package or a bad URL is
    left for :func:`create_engine` to report.
    """
    sa = import_sqlalchemy(what)
    try:
        sa.engine.make_url(normalise_url(url)).get_dialect().import_dbapi()
    except (ImportError, sa.exc.ArgumentError, sa.exc.NoSuchModuleError):
        return


def begin_immediate(sa: Any, engine: Engine) -> None:
    """Make every SQLite transaction take the write lock when it begins.

    With SQLite's default deferred transactions, two processes that both read and then
    write can each hold a read lock and wait for the other: SQLite answers "database is
    locked" at once instead of waiting. ``BEGIN IMMEDIATE`` waits (busy timeout) instead.
    """

    def _no_implicit_begin(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None

    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    sa.event.listen(engine, "connect", _no_implicit_begin)
    sa.event.listen(engine, "begin", _begin)
