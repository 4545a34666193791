"""The schedule store on SQLAlchemy: SQLite (the embedded default) and PostgreSQL.

:class:`SqlScheduleStore` is the one schedule store
(:class:`active_data_flow.handlers.schedule.policy.PortScheduleStore`) on a :class:`SqlAlchemyPort` — an
engine's connections, in the dialect of its database
(:mod:`active_data_flow.handlers.schedule.dialects`). This module also holds what only SQLAlchemy does: the
engine (busy timeout, foreign keys and ``BEGIN IMMEDIATE`` on SQLite; psycopg 3 and a ping
of connections that sat idle on PostgreSQL), the ``Table`` objects of the tables
(:func:`sqlalchemy_tables`, made from :mod:`active_data_flow.handlers.schedule.tables`) and the Alembic
migrations in ``handlers/schedule/migrations``, which create the tables.

SQLAlchemy, Alembic and the driver (psycopg 3 for PostgreSQL) are imported when a store
opens, never at module level (this package must import inside a WebAssembly component,
though this module is left out of one); without them
:class:`~active_data_flow.errors.MissingExtraError` names the extra to install.

Ids are never reused: PostgreSQL takes them from sequences; on SQLite ``data_flows`` and
``data_flow_runs`` are ``AUTOINCREMENT`` tables (migration ``0002`` rebuilt older files so),
so a run created after the newest one was deleted still gets a new id.

Every timestamp is timezone-aware UTC: ``timestamptz`` on PostgreSQL; on SQLite a UTC text
timestamp (fixed format, so it sorts and compares as time) read back as an aware datetime.

Concurrency: on PostgreSQL the claims are single statements built on ``SELECT … FOR UPDATE
SKIP LOCKED``, so any number of heartbeats and workers claim disjoint flows and runs; on
SQLite every transaction begins with ``BEGIN IMMEDIATE``, so writers queue up (30 s busy
timeout) instead of racing.

Example::

    store = SqlScheduleStore("sqlite:///.adf/adf.db")        # migrates to head on open
    store.create_flow("orders", {"source": {...}, "sink": {...}}, run_interval=300)
    claim = store.claim(limit=10)                              # pending runs for workers
    run = store.claim_pending_run("worker-1", lease_seconds=60)
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from active_data_flow.connectors.sql import normalise_url
from active_data_flow.errors import MissingExtraError
from active_data_flow.handlers.schedule.dialects import SQLITE, Dialect, dialect_named
from active_data_flow.handlers.schedule.policy import PortScheduleStore
from active_data_flow.handlers.schedule.store import as_utc
from active_data_flow.handlers.schedule.tables import FLOWS, HEARTBEATS, RUNS, Column, Table
from active_data_flow.redact import redact_text
from active_data_flow.service_db import service_engine

if TYPE_CHECKING:
    from sqlalchemy import MetaData
    from sqlalchemy import Table as SaTable
    from sqlalchemy.engine import Connection, Engine

__all__ = [
    "MIGRATIONS_DIR",
    "ScheduleTables",
    "SqlAlchemyPort",
    "SqlScheduleStore",
    "current_revision",
    "head_revision",
    "sqlalchemy_tables",
    "upgrade",
]

#: The Alembic script directory (``env.py`` + ``versions/``).
MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
#: ``pg_advisory_lock`` key held while migrating (a stable 32-bit number).
ADVISORY_LOCK_KEY = zlib.crc32(b"active_data_flow.schedule.migrations")
#: A pooled PostgreSQL connection idle this long is pinged before use.
_PING_AFTER_IDLE = 5.0
_WHAT = "the heartbeat schedule store"


# --------------------------------------------------------------------------- lazy imports


def _import_sqlalchemy() -> Any:
    try:
        import sqlalchemy
    except ImportError as exc:
        raise MissingExtraError("SQLAlchemy", "web", _WHAT) from exc
    return sqlalchemy


def _import_alembic() -> Any:
    try:
        import alembic.command
        import alembic.config
        import alembic.runtime.migration
        import alembic.script
    except ImportError as exc:
        raise MissingExtraError("alembic", "web", f"{_WHAT} (migrations)") from exc
    return alembic


def _make_engine(url: str) -> Engine:
    """An engine for ``url`` (``postgresql://`` means psycopg 3); clear errors for missing packages."""
    sa = _import_sqlalchemy()
    engine: Engine = service_engine(url, what=_WHAT, extra="web")
    backend = engine.dialect.name
    if backend == "postgresql":
        _ping_idle_connections(sa, engine)
    if backend == "sqlite":

        def _pragmas(dbapi_conn: Any, record: Any) -> None:
            dbapi_conn.isolation_level = None  # no implicit BEGIN: the store's own, below
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys = ON")  # ON DELETE CASCADE of a flow's runs
            cur.close()

        def _begin(conn: Any) -> None:
            conn.exec_driver_sql(SQLITE.begin)

        sa.event.listen(engine, "connect", _pragmas)
        # Every transaction takes the write lock when it begins: concurrent heartbeats queue.
        sa.event.listen(engine, "begin", _begin)
    return engine


def _ping_idle_connections(sa: Any, engine: Engine, idle_seconds: float = _PING_AFTER_IDLE) -> None:
    """Check a pooled connection that sat idle for ``idle_seconds`` before handing it out.

    ``pool_pre_ping`` would cost a round trip on every checkout (a third of a claim); a
    connection in steady use is known good, while one idle since the last heartbeat may
    have been cut by a server restart. A failed ping makes the pool reconnect.
    """

    def checkin(dbapi_conn: Any, record: Any) -> None:
        record.info["adf_idle_since"] = time.monotonic()

    def checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("adf_idle_since")
        if since is None or time.monotonic() - since < idle_seconds:
            return
        try:
            cur = dbapi_conn.cursor()
            cur.execute("SELECT 1")
            cur.close()
            dbapi_conn.rollback()
        except Exception as exc:
            raise sa.exc.DisconnectionError(f"stale pooled connection: {type(exc).__name__}") from exc

    sa.event.listen(engine, "checkin", checkin)
    sa.event.listen(engine, "checkout", checkout)


# --------------------------------------------------------------------------- table objects


@dataclass
class ScheduleTables:
    """The SQLAlchemy ``Table`` objects of the schedule (:data:`active_data_flow.handlers.schedule.tables.TABLES`)."""

    metadata: MetaData
    flows: SaTable
    runs: SaTable
    heartbeats: SaTable


_TABLES: ScheduleTables | None = None
_TABLES_LOCK = threading.Lock()


def sqlalchemy_tables() -> ScheduleTables:
    """The tables as SQLAlchemy ``Table`` objects (made once, lazily): JSONB and
    ``timestamptz`` on PostgreSQL, JSON text and UTC text timestamps on SQLite; timestamps
    are aware UTC datetimes either way."""
    global _TABLES
    with _TABLES_LOCK:
        if _TABLES is None:
            metadata = _import_sqlalchemy().MetaData()
            flows, runs, heartbeats = (_sa_table(metadata, t) for t in (FLOWS, RUNS, HEARTBEATS))
            _TABLES = ScheduleTables(metadata, flows, runs, heartbeats)
        return _TABLES


_UTC_DATETIME: Any = None


def _utc_datetime() -> Any:
    """The column type of every timestamp (a class, made once)."""
    global _UTC_DATETIME
    if _UTC_DATETIME is None:
        sa = _import_sqlalchemy()

        class UtcDateTime(sa.types.TypeDecorator):  # type: ignore[misc,name-defined]
            """Aware UTC datetimes everywhere; SQLite keeps a naive UTC text timestamp."""

            impl = sa.DateTime(timezone=True)
            cache_ok = True

            def process_bind_param(self, value: Any, dialect: Any) -> Any:
                if value is None:
                    return None
                value = as_utc(value)
                return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

            def process_result_value(self, value: Any, dialect: Any) -> Any:
                return dialect_named(dialect.name).read_time(value)

        _UTC_DATETIME = UtcDateTime
    return _UTC_DATETIME


def _sa_type(column: Column) -> Any:
    sa = _import_sqlalchemy()
    from sqlalchemy.dialects import postgresql

    kinds: dict[str, Any] = {
        "key": sa.Integer,
        "bigkey": lambda: sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        "integer": sa.Integer,
        "bigint": sa.BigInteger,
        "string": lambda: sa.String(column.length),
        "text": sa.Text,
        "boolean": sa.Boolean,
        "json": lambda: sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
        "timestamp": _utc_datetime(),
    }
    return kinds[column.kind]()


def _sa_column(table: Table, column: Column) -> Any:
    sa = _import_sqlalchemy()
    default: Any = column.default
    if isinstance(default, bool):
        default = sa.true() if default else sa.false()
    key = column is table.key
    return sa.Column(
        column.name, _sa_type(column), nullable=column.nullable and not key, server_default=default,
        primary_key=key, autoincrement=True if key else "auto",
    )


def _sa_table(metadata: MetaData, table: Table) -> SaTable:
    sa = _import_sqlalchemy()
    parts: list[Any] = [_sa_column(table, c) for c in table.columns]
    parts += [sa.UniqueConstraint(*u.columns, name=u.name) for u in table.uniques]
    parts += [sa.CheckConstraint(c.sql, name=c.name) for c in table.checks]
    parts += [
        sa.ForeignKeyConstraint([fk.column], [f"{fk.table}.{fk.target}"], name=fk.name, ondelete=fk.ondelete)
        for fk in table.foreign_keys
    ]
    parts += [
        sa.Index(ix.name, *ix.columns, **({"sqlite_where": sa.text(ix.where), "postgresql_where": sa.text(ix.where)}
                                         if ix.where else {}))
        for ix in table.indexes
    ]
    result: SaTable = sa.Table(table.name, metadata, *parts, sqlite_autoincrement=table.autoincrement)
    return result


# --------------------------------------------------------------------------- the port


class SqlAlchemyPort:
    """:class:`~active_data_flow.handlers.schedule.port.SchedulePort` on a SQLAlchemy engine.

    A statement outside a transaction runs on a connection of its own from the pool; a
    transaction (``engine.begin()``: ``BEGIN IMMEDIATE`` on SQLite) holds one connection for
    the thread that began it. ``?`` placeholders become the driver's (``%s`` for psycopg)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect: Dialect = dialect_named(engine.dialect.name)
        style = engine.dialect.paramstyle
        if style not in ("qmark", "format", "pyformat"):
            raise ValueError(f"the schedule store needs a driver taking ? or %s parameters, not {style}")
        self._qmark = style == "qmark"
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"SqlAlchemyPort({redact_text(str(self.engine.url))!r})"

    def _native(self, sql: str, params: Sequence[Any]) -> str:
        if self._qmark or not params:
            return sql
        return sql.replace("%", "%%").replace("?", "%s")

    def _run(self, conn: Connection, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        native = self._native(sql, params)
        result = conn.exec_driver_sql(native, tuple(params)) if params else conn.exec_driver_sql(native)
        return [tuple(row) for row in result.fetchall()] if result.returns_rows else []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return self._run(conn, sql, params)
        with self.engine.connect() as own:
            return self._run(own, sql, params)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with self.engine.begin() as conn:
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    def close(self) -> None:
        self.engine.dispose()


# --------------------------------------------------------------------------- migrations


_HEAD: str | None = None


def _alembic_config(connection: Any = None) -> Any:
    alembic = _import_alembic()
    cfg = alembic.config.Config()
    cfg.set_main_option("script_location", MIGRATIONS_DIR)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest migration's revision id."""
    global _HEAD
    if _HEAD is None:
        alembic = _import_alembic()
        head = alembic.script.ScriptDirectory.from_config(_alembic_config()).get_current_head()
        assert head is not None, "no migrations found"
        _HEAD = str(head)
    return _HEAD


def _current(conn: Connection) -> str | None:
    alembic = _import_alembic()
    rev = alembic.runtime.migration.MigrationContext.configure(conn).get_current_revision()
    return None if rev is None else str(rev)


def _upgrade_engine(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade the database of ``engine`` to ``revision``; returns the revision it is at.

    One transaction: on SQLite it begins with ``BEGIN IMMEDIATE`` (other processes wait), on
    PostgreSQL a session advisory lock is held around it. Either way the second of two
    processes opening a fresh database at once finds it migrated and does nothing.
    """
    sa = _import_sqlalchemy()
    alembic = _import_alembic()
    target = head_revision() if revision == "head" else revision
    with engine.connect() as conn:
        current = _current(conn)
        conn.rollback()
        if current == target:
            return current
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            conn.commit()
        try:
            with conn.begin():
                alembic.command.upgrade(_alembic_config(conn), revision)
            current = _current(conn)
            conn.rollback()
        finally:
            if postgres:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
                conn.commit()
    return current


def upgrade(url: str, revision: str = "head") -> str | None:
    """Run the migrations of the schedule tables on ``url`` up to ``revision`` (idempotent,
    safe from several processes at once); returns the revision the database is at."""
    engine = _make_engine(url)
    try:
        return _upgrade_engine(engine, revision)
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The migration revision of the database at ``url`` (None: never migrated)."""
    engine = _make_engine(url)
    try:
        with engine.connect() as conn:
            return _current(conn)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- the store


class SqlScheduleStore(PortScheduleStore):
    """:class:`~active_data_flow.handlers.schedule.store.ScheduleStore` on SQLite or PostgreSQL:
    :class:`~active_data_flow.handlers.schedule.policy.PortScheduleStore` on a :class:`SqlAlchemyPort`.

    ``url`` is a SQLAlchemy URL (``sqlite:///path.db``, ``postgresql://user@host/db``; a plain
    ``postgresql://`` uses psycopg 3). With ``auto_migrate`` the tables are upgraded to the
    newest migration when the store opens. Thread-safe; open one per process.
    """

    def __init__(self, url: str, *, auto_migrate: bool = True) -> None:
        self.url = normalise_url(url)
        self._sa = _import_sqlalchemy()
        self._engine = _make_engine(self.url)
        try:
            self._t = sqlalchemy_tables()
            super().__init__(SqlAlchemyPort(self._engine))
            if auto_migrate:
                _upgrade_engine(self._engine)
        except BaseException:
            self._engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"SqlScheduleStore({redact_text(self.url)!r})"

    @property
    def engine(self) -> Engine:
        return self._engine
