"""The schedule store on SQLAlchemy Core: SQLite (the embedded default) and PostgreSQL.

SQLAlchemy, Alembic and the driver (psycopg 3 for PostgreSQL) are imported when a store
opens, never at module level (this package must import inside a WebAssembly component);
without them :class:`~core.errors.MissingExtraError` names the extra to install.

Tables (created by the Alembic migrations in ``handlers/schedule/migrations``):

``data_flows``
    ``name`` unique, ``description``, ``enabled``, ``configuration`` (the flow spec: JSONB on
    PostgreSQL, JSON text on SQLite), ``run_interval`` seconds (``CHECK > 0``),
    ``last_run_at``, ``last_run_status``, ``next_run_at``, ``created_at``, ``updated_at``.
``data_flow_runs``
    ``flow_id`` (``ON DELETE CASCADE``), ``status`` (``CHECK`` in :data:`RUN_STATUSES`),
    ``trigger``, ``attempt``, ``created_at``, ``started_at``, ``ended_at``,
    ``error_message``, ``error_backtrace``, record counts, ``worker_id``,
    ``lease_expires_at``, ``engine_run_id``, ``not_before`` (a retry's backoff).
``heartbeat_requests``
    ``ts``, ``client``, ``outcome``, ``status_code``, ``flows_due``, ``flows_triggered``, ``detail``.

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

import datetime as dt
import os
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from core.connectors.sql import begin_immediate, normalise_url
from core.errors import MissingExtraError
from core.redact import redact_text
from handlers.schedule.store import (
    ACTIVE_RUN_STATUSES,
    FINAL_RUN_STATUSES,
    RUN_STATUSES,
    Claim,
    DuplicateFlowError,
    FlowRecord,
    FlowValidationError,
    HeartbeatRecord,
    NotFoundError,
    RetryPolicy,
    RunOutcome,
    RunRecord,
    ScheduleStore,
    as_utc,
    flow_problems,
    utcnow,
)

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection, Engine

__all__ = ["MIGRATIONS_DIR", "SqlScheduleStore", "current_revision", "head_revision", "upgrade"]

#: The Alembic script directory (``env.py`` + ``versions/``).
MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
#: ``pg_advisory_lock`` key held while migrating (a stable 32-bit number).
ADVISORY_LOCK_KEY = zlib.crc32(b"active_data_flow.schedule.migrations")
_SQLITE_BUSY_TIMEOUT = 30
#: A pooled PostgreSQL connection idle this long is pinged before use.
_PING_AFTER_IDLE = 5.0
_WHAT = "the heartbeat schedule store"

_RUN_COLUMNS = tuple(f.name for f in fields(RunRecord) if f.name != "flow_name")
_FLOW_COLUMNS = tuple(f.name for f in fields(FlowRecord))
_TIME_COLUMNS = frozenset(
    {"created_at", "started_at", "ended_at", "lease_expires_at", "not_before", "last_run_at", "next_run_at", "updated_at", "ts"}
)


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
    url = normalise_url(url)
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ValueError(f"invalid database URL {redact_text(url)!r}: {redact_text(str(exc))}") from None
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        database = parsed.database
        kwargs["connect_args"] = {"timeout": _SQLITE_BUSY_TIMEOUT, "check_same_thread": False}
        if not database or database == ":memory:":
            kwargs["poolclass"] = sa.pool.StaticPool  # one shared in-memory database
        elif not database.startswith("file:"):
            os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
    try:
        engine: Engine = sa.create_engine(parsed, **kwargs)
    except ImportError as exc:
        extra = "postgres" if backend == "postgresql" else "web"
        raise MissingExtraError(exc.name or str(exc), extra, f"{_WHAT} ({backend})") from exc
    except sa.exc.ArgumentError as exc:
        raise ValueError(f"invalid database URL {redact_text(url)!r}: {redact_text(str(exc))}") from None
    if backend == "postgresql":
        _ping_idle_connections(sa, engine)
    if backend == "sqlite":

        def _pragmas(dbapi_conn: Any, record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys = ON")  # ON DELETE CASCADE of a flow's runs
            cur.close()

        sa.event.listen(engine, "connect", _pragmas)
        # Every transaction takes the write lock when it begins: concurrent heartbeats queue.
        begin_immediate(sa, engine)
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
class _Tables:
    flows: Table
    runs: Table
    heartbeats: Table


_TABLES: _Tables | None = None
_TABLES_LOCK = threading.Lock()


def _tables() -> _Tables:
    """The runtime view of the tables the migrations create (built once, lazily)."""
    global _TABLES
    with _TABLES_LOCK:
        if _TABLES is None:
            _TABLES = _build_tables()
        return _TABLES


def _build_tables() -> _Tables:
    sa = _import_sqlalchemy()
    from sqlalchemy.dialects import postgresql

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
            return _aware(value)

    def ts(name: str, nullable: bool = True) -> Any:
        return sa.Column(name, UtcDateTime(), nullable=nullable)

    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    md = sa.MetaData()
    # sqlite_autoincrement: the migrations create the tables; this says what they are.
    flows = sa.Table(
        "data_flows", md,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("configuration", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("run_interval", sa.Integer(), nullable=False),
        ts("last_run_at"),
        sa.Column("last_run_status", sa.String(20)),
        ts("next_run_at"),
        ts("created_at", False),
        ts("updated_at", False),
        sqlite_autoincrement=True,
    )
    runs = sa.Table(
        "data_flow_runs", md,
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("flow_id", sa.Integer(), sa.ForeignKey("data_flows.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("trigger", sa.String(40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        ts("created_at", False),
        ts("started_at"),
        ts("ended_at"),
        sa.Column("error_message", sa.Text()),
        sa.Column("error_backtrace", sa.Text()),
        sa.Column("records_in", sa.BigInteger()),
        sa.Column("records_out", sa.BigInteger()),
        sa.Column("dead_letters", sa.BigInteger()),
        sa.Column("worker_id", sa.String(200)),
        ts("lease_expires_at"),
        sa.Column("engine_run_id", sa.String(200)),
        ts("not_before"),
        sqlite_autoincrement=True,
    )
    heartbeats = sa.Table(
        "heartbeat_requests", md,
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        ts("ts", False),
        sa.Column("client", sa.String(200)),
        sa.Column("outcome", sa.String(40), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("flows_due", sa.Integer(), nullable=False),
        sa.Column("flows_triggered", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text()),
    )
    return _Tables(flows=flows, runs=runs, heartbeats=heartbeats)


# --------------------------------------------------------------------------- row conversion


def _aware(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        raise TypeError(f"expected a timestamp, got {value!r}")
    return as_utc(value)


def _run_record(row: Mapping[Any, Any], flow_name: str | None = None) -> RunRecord:
    data: dict[str, Any] = {k: (_aware(row[k]) if k in _TIME_COLUMNS else row[k]) for k in _RUN_COLUMNS}
    return RunRecord(flow_name=flow_name if flow_name is not None else row["flow_name"], **data)


def _flow_record(row: Mapping[Any, Any]) -> FlowRecord:
    data: dict[str, Any] = {k: (_aware(row[k]) if k in _TIME_COLUMNS else row[k]) for k in _FLOW_COLUMNS}
    data["enabled"] = bool(data["enabled"])
    data["configuration"] = dict(data["configuration"] or {})
    return FlowRecord(**data)


def _heartbeat_record(row: Mapping[Any, Any]) -> HeartbeatRecord:
    return HeartbeatRecord(
        id=row["id"], ts=as_utc(row["ts"]), client=row["client"], outcome=row["outcome"],
        status_code=row["status_code"], flows_due=row["flows_due"], flows_triggered=row["flows_triggered"],
        detail=row["detail"],
    )


def _now(now: dt.datetime | None) -> dt.datetime:
    return utcnow() if now is None else as_utc(now)


def _seconds(value: float, what: str) -> dt.timedelta:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return dt.timedelta(seconds=float(value))


def _iso(value: dt.datetime | None) -> str:
    return "?" if value is None else value.isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- PostgreSQL statements
#
# The two hot paths are one statement each (one round trip plus the commit): the claim of due
# flows by heartbeats and the claim of a pending run by workers. The due scan orders by
# next_run_at alone so that it walks ix_data_flows_due (enabled, next_run_at) and stops after
# ``limit`` rows; "busy" is a correlated LIMIT 1 probe of the partial index of active runs
# (an EXISTS here may be planned as a hash of *every* active run, once per claim).

_PG_CLAIM_DUE = """
WITH due AS (
    SELECT f.id, f.name, f.run_interval,
           (SELECT true FROM data_flow_runs r
            WHERE r.flow_id = f.id AND r.status IN ('pending', 'in_progress') LIMIT 1) IS NOT NULL AS busy
    FROM data_flows f
    WHERE f.enabled AND f.next_run_at <= :now
    ORDER BY f.next_run_at
    LIMIT :limit
    FOR UPDATE OF f SKIP LOCKED
), advanced AS (
    UPDATE data_flows f
    SET next_run_at = :now + make_interval(secs => due.run_interval),
        last_run_at = CASE WHEN due.busy THEN f.last_run_at ELSE :now END,
        last_run_status = CASE WHEN due.busy THEN f.last_run_status ELSE :status END
    FROM due
    WHERE f.id = due.id
    RETURNING f.id, due.name, due.busy
), created AS (
    INSERT INTO data_flow_runs (flow_id, status, trigger, attempt, created_at, started_at, worker_id, lease_expires_at)
    SELECT a.id, :status, :trigger, 1, :now, CAST(:started_at AS timestamptz), CAST(:worker_id AS varchar),
           CAST(:lease AS timestamptz)
    FROM advanced a
    WHERE NOT a.busy
    ORDER BY a.id
    RETURNING *
)
SELECT a.name AS flow_name, a.busy, c.*
FROM advanced a LEFT JOIN created c ON c.flow_id = a.id
ORDER BY c.id
"""

_PG_CLAIM_PENDING = """
WITH next_run AS (
    SELECT r.id, r.flow_id
    FROM data_flow_runs r
    WHERE r.status = 'pending' AND (r.not_before IS NULL OR r.not_before <= :now)
      AND NOT EXISTS (SELECT 1 FROM data_flow_runs o WHERE o.flow_id = r.flow_id AND o.status = 'in_progress')
    ORDER BY r.created_at, r.id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), started AS (
    UPDATE data_flow_runs r
    SET status = 'in_progress', worker_id = :worker_id, started_at = :now, lease_expires_at = :lease
    FROM next_run n
    WHERE r.id = n.id AND r.status = 'pending'
    RETURNING r.*
), flow AS (
    UPDATE data_flows f SET last_run_status = 'in_progress'
    FROM started s WHERE f.id = s.flow_id
    RETURNING f.id, f.name
)
SELECT flow.name AS flow_name, s.* FROM started s JOIN flow ON flow.id = s.flow_id
"""


_TEXT: dict[str, Any] = {}


def _text(sql: str) -> Any:
    """``sqlalchemy.text(sql)``, parsed once."""
    clause = _TEXT.get(sql)
    if clause is None:
        clause = _TEXT[sql] = _import_sqlalchemy().text(sql)
    return clause


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


class SqlScheduleStore(ScheduleStore):
    """:class:`~handlers.schedule.store.ScheduleStore` on SQLite or PostgreSQL.

    ``url`` is a SQLAlchemy URL (``sqlite:///path.db``, ``postgresql://user@host/db``; a plain
    ``postgresql://`` uses psycopg 3). With ``auto_migrate`` the tables are upgraded to the
    newest migration when the store opens. Thread-safe; open one per process.
    """

    def __init__(self, url: str, *, auto_migrate: bool = True) -> None:
        self.url = normalise_url(url)
        self._sa = _import_sqlalchemy()
        self._engine = _make_engine(self.url)
        self.dialect: str = self._engine.dialect.name
        self._t = _tables()
        if auto_migrate:
            try:
                _upgrade_engine(self._engine)
            except BaseException:
                self._engine.dispose()
                raise

    def __repr__(self) -> str:
        return f"SqlScheduleStore({redact_text(self.url)!r})"

    def __enter__(self) -> SqlScheduleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._engine.dispose()

    @property
    def engine(self) -> Engine:
        return self._engine

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._engine.begin() as conn:
            yield conn

    @property
    def _postgres(self) -> bool:
        return self.dialect == "postgresql"

    # -- flows ---------------------------------------------------------------------

    def _name_taken(self, conn: Connection, name: str) -> bool:
        flows = self._t.flows
        return conn.execute(self._sa.select(flows.c.id).where(flows.c.name == name)).first() is not None

    def create_flow(
        self,
        name: str,
        configuration: Mapping[str, Any],
        run_interval: int,
        *,
        description: str = "",
        enabled: bool = True,
    ) -> FlowRecord:
        sa, flows = self._sa, self._t.flows
        description = "" if description is None else description
        enabled = True if enabled is None else enabled
        problems = flow_problems(name, configuration, run_interval, description=description, enabled=enabled)
        taken = [f"name: a flow named {name!r} already exists"]
        if isinstance(name, str) and not any(p.startswith("name:") for p in problems):
            with self._engine.connect() as conn:
                if self._name_taken(conn, name):
                    problems.insert(0, taken[0])
        if problems == taken:
            raise DuplicateFlowError(problems)
        if problems:
            raise FlowValidationError(problems)
        now = utcnow()
        values = {
            "name": name, "description": description, "enabled": enabled, "configuration": dict(configuration),
            "run_interval": run_interval, "next_run_at": now, "created_at": now, "updated_at": now,
        }
        try:
            with self._tx() as conn:
                row = conn.execute(sa.insert(flows).values(values).returning(*flows.c)).mappings().one()
        except sa.exc.IntegrityError:
            # Another writer took the name between the check and the insert.
            with self._engine.connect() as conn:
                if self._name_taken(conn, name):
                    raise DuplicateFlowError(taken) from None
            raise
        return _flow_record(row)

    def update_flow(
        self,
        name: str,
        *,
        configuration: Mapping[str, Any] | None = None,
        run_interval: int | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> FlowRecord:
        sa, flows = self._sa, self._t.flows
        check = [k for k, v in (("configuration", configuration), ("run_interval", run_interval)) if v is not None]
        problems = flow_problems(name, configuration, run_interval, description=description, enabled=enabled, check=check)
        now = utcnow()
        with self._tx() as conn:
            row = conn.execute(sa.select(flows).where(flows.c.name == name).with_for_update()).mappings().first()
            if row is None:
                raise NotFoundError(f"no flow named {name!r}")
            if problems:
                raise FlowValidationError(problems)
            values: dict[str, Any] = {"updated_at": now}
            if configuration is not None:
                values["configuration"] = dict(configuration)
            if description is not None:
                values["description"] = description
            if run_interval is not None:
                values["run_interval"] = run_interval
                last = _aware(row["last_run_at"])
                if run_interval != row["run_interval"] and last is not None:
                    values["next_run_at"] = last + dt.timedelta(seconds=run_interval)
            if enabled is not None:
                values["enabled"] = enabled
                if enabled and row["next_run_at"] is None:
                    values["next_run_at"] = now
            updated = conn.execute(
                sa.update(flows).where(flows.c.id == row["id"]).values(values).returning(*flows.c)
            ).mappings().one()
        return _flow_record(updated)

    def get_flow(self, name: str) -> FlowRecord:
        flows = self._t.flows
        with self._engine.connect() as conn:
            row = conn.execute(self._sa.select(flows).where(flows.c.name == name)).mappings().first()
        if row is None:
            raise NotFoundError(f"no flow named {name!r}")
        return _flow_record(row)

    def list_flows(self) -> list[FlowRecord]:
        flows = self._t.flows
        with self._engine.connect() as conn:
            rows = conn.execute(self._sa.select(flows).order_by(flows.c.name)).mappings().all()
        return [_flow_record(r) for r in rows]

    def delete_flow(self, name: str) -> None:
        flows = self._t.flows
        with self._tx() as conn:
            if conn.execute(self._sa.delete(flows).where(flows.c.name == name)).rowcount == 0:
                raise NotFoundError(f"no flow named {name!r}")

    def due_flows(self, now: dt.datetime | None = None) -> list[FlowRecord]:
        flows = self._t.flows
        query = (
            self._sa.select(flows)
            .where(flows.c.enabled, flows.c.next_run_at <= _now(now))
            .order_by(flows.c.next_run_at, flows.c.id)
        )
        with self._engine.connect() as conn:
            return [_flow_record(r) for r in conn.execute(query).mappings().all()]

    # -- claiming --------------------------------------------------------------------

    def claim(
        self,
        now: dt.datetime | None = None,
        *,
        limit: int = 100,
        trigger: str = "heartbeat",
        worker_id: str | None = None,
        lease_seconds: float = 300.0,
    ) -> Claim:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        now = _now(now)
        lease = now + _seconds(lease_seconds, "lease_seconds") if worker_id else None
        status = "in_progress" if worker_id else "pending"
        if self._postgres:
            return self._claim_postgres(now, limit, trigger, worker_id, lease, status)
        return self._claim_generic(now, limit, trigger, worker_id, lease, status)

    def _claim_postgres(
        self, now: dt.datetime, limit: int, trigger: str, worker_id: str | None, lease: dt.datetime | None, status: str
    ) -> Claim:
        params = {
            "now": now, "limit": limit, "status": status, "trigger": trigger, "worker_id": worker_id,
            "lease": lease, "started_at": now if worker_id else None,
        }
        with self._tx() as conn:
            rows = conn.execute(_text(_PG_CLAIM_DUE), params).mappings().all()
        claim = Claim(flows_due=len(rows))
        for row in rows:
            if row["busy"]:
                claim.skipped.append(row["flow_name"])
            else:
                claim.runs.append(_run_record(row))
        return claim

    def _claim_generic(
        self, now: dt.datetime, limit: int, trigger: str, worker_id: str | None, lease: dt.datetime | None, status: str
    ) -> Claim:
        sa, flows, runs = self._sa, self._t.flows, self._t.runs
        busy = (
            sa.exists()
            .where(runs.c.flow_id == flows.c.id, runs.c.status.in_(ACTIVE_RUN_STATUSES))
            .label("busy")
        )
        query = (
            sa.select(flows.c.id, flows.c.name, flows.c.run_interval, busy)
            .where(flows.c.enabled, flows.c.next_run_at <= now)
            .order_by(flows.c.next_run_at)
            .limit(limit)
            .with_for_update(skip_locked=True, of=flows)
        )
        claim = Claim()
        with self._tx() as conn:
            due = conn.execute(query).mappings().all()
            claim.flows_due = len(due)
            if not due:
                return claim
            fresh = [d for d in due if not d["busy"]]
            claim.skipped = [d["name"] for d in due if d["busy"]]
            names = {d["id"]: d["name"] for d in due}
            advance = sa.update(flows).where(flows.c.id == sa.bindparam("fid")).values(
                next_run_at=sa.bindparam("next_at")
            )
            conn.execute(advance, [
                {"fid": d["id"], "next_at": now + dt.timedelta(seconds=d["run_interval"])} for d in due
            ])
            if not fresh:
                return claim
            conn.execute(
                sa.update(flows).where(flows.c.id.in_([d["id"] for d in fresh])).values(
                    last_run_at=now, last_run_status=status
                )
            )
            rows = conn.execute(
                sa.insert(runs).returning(*runs.c, sort_by_parameter_order=True),
                [
                    {
                        "flow_id": d["id"], "status": status, "trigger": trigger, "attempt": 1, "created_at": now,
                        "started_at": now if worker_id else None, "worker_id": worker_id, "lease_expires_at": lease,
                    }
                    for d in fresh
                ],
            ).mappings().all()
        claim.runs = [_run_record(r, names[r["flow_id"]]) for r in rows]
        return claim

    def create_run(
        self, flow_name: str, *, trigger: str = "manual", worker_id: str | None = None, lease_seconds: float = 300.0
    ) -> RunRecord:
        sa, flows, runs = self._sa, self._t.flows, self._t.runs
        now = utcnow()
        status = "in_progress" if worker_id else "pending"
        lease = now + _seconds(lease_seconds, "lease_seconds") if worker_id else None
        with self._tx() as conn:
            flow_id = conn.execute(sa.select(flows.c.id).where(flows.c.name == flow_name)).scalar()
            if flow_id is None:
                raise NotFoundError(f"no flow named {flow_name!r}")
            row = conn.execute(
                sa.insert(runs)
                .values(
                    flow_id=flow_id, status=status, trigger=trigger, attempt=1, created_at=now,
                    started_at=now if worker_id else None, worker_id=worker_id, lease_expires_at=lease,
                )
                .returning(*runs.c)
            ).mappings().one()
            conn.execute(
                sa.update(flows).where(flows.c.id == flow_id).values(last_run_at=now, last_run_status=status)
            )
        return _run_record(row, flow_name)

    def claim_pending_run(
        self, worker_id: str, *, lease_seconds: float = 300.0, now: dt.datetime | None = None
    ) -> RunRecord | None:
        now = _now(now)
        lease = now + _seconds(lease_seconds, "lease_seconds")
        if self._postgres:
            with self._tx() as conn:
                row = conn.execute(
                    _text(_PG_CLAIM_PENDING), {"now": now, "worker_id": worker_id, "lease": lease}
                ).mappings().first()
            return None if row is None else _run_record(row)
        sa, flows, runs = self._sa, self._t.flows, self._t.runs
        other = runs.alias("other")
        running = sa.exists().where(other.c.flow_id == runs.c.flow_id, other.c.status == "in_progress")
        query = (
            sa.select(runs.c.id, runs.c.flow_id, flows.c.name)
            .join(flows, flows.c.id == runs.c.flow_id)
            .where(
                runs.c.status == "pending",
                sa.or_(runs.c.not_before.is_(None), runs.c.not_before <= now),
                ~running,
            )
            .order_by(runs.c.created_at, runs.c.id)
            .limit(1)
            .with_for_update(skip_locked=True, of=runs)
        )
        with self._tx() as conn:
            picked = conn.execute(query).mappings().first()
            if picked is None:
                return None
            row = conn.execute(
                sa.update(runs)
                .where(runs.c.id == picked["id"])
                .values(status="in_progress", worker_id=worker_id, started_at=now, lease_expires_at=lease)
                .returning(*runs.c)
            ).mappings().one()
            conn.execute(sa.update(flows).where(flows.c.id == picked["flow_id"]).values(last_run_status="in_progress"))
        return _run_record(row, picked["name"])

    def renew_lease(self, run_id: int, worker_id: str, *, lease_seconds: float = 300.0) -> bool:
        return run_id in self.renew_leases([run_id], worker_id, lease_seconds=lease_seconds)

    def renew_leases(self, run_ids: Iterable[int], worker_id: str, *, lease_seconds: float = 300.0) -> set[int]:
        ids = sorted(set(run_ids))
        if not ids:
            return set()
        sa, runs = self._sa, self._t.runs
        lease = utcnow() + _seconds(lease_seconds, "lease_seconds")
        with self._tx() as conn:
            rows = conn.execute(
                sa.update(runs)
                .where(runs.c.id.in_(ids), runs.c.worker_id == worker_id, runs.c.status == "in_progress")
                .values(lease_expires_at=lease)
                .returning(runs.c.id)
            ).scalars().all()
        return set(rows)

    def start_run(
        self,
        run_id: int,
        worker_id: str,
        *,
        lease_seconds: float = 300.0,
        now: dt.datetime | None = None,
        engine_run_id: str | None = None,
    ) -> RunRecord | None:
        sa, flows, runs = self._sa, self._t.flows, self._t.runs
        now = _now(now)
        values: dict[str, Any] = {"started_at": now, "lease_expires_at": now + _seconds(lease_seconds, "lease_seconds")}
        if engine_run_id is not None:
            values["engine_run_id"] = engine_run_id
        with self._tx() as conn:
            row = conn.execute(
                sa.update(runs)
                .where(runs.c.id == run_id, runs.c.worker_id == worker_id, runs.c.status == "in_progress")
                .values(values)
                .returning(*runs.c)
            ).mappings().first()
            if row is None:
                return None
            name = conn.execute(sa.select(flows.c.name).where(flows.c.id == row["flow_id"])).scalar_one()
        return _run_record(row, name)

    def finish_run(self, run_id: int, outcome: RunOutcome, *, worker_id: str | None = None) -> RunRecord:
        if outcome.status not in FINAL_RUN_STATUSES:
            raise ValueError(f"a run finishes as one of {', '.join(FINAL_RUN_STATUSES)}, not {outcome.status!r}")
        sa, flows, runs = self._sa, self._t.flows, self._t.runs
        now = utcnow()

        def clean(text: str | None) -> str | None:
            return None if text is None else redact_text(text)

        with self._tx() as conn:
            row = conn.execute(
                sa.select(runs.c.id, runs.c.flow_id, runs.c.status, runs.c.started_at, runs.c.worker_id)
                .where(runs.c.id == run_id)
                .with_for_update()
            ).mappings().first()
            if row is None:
                raise NotFoundError(f"no run with id {run_id}")
            # A run already finished (this very outcome, when a write is retried) or failed by
            # an expired lease (and maybe retried) keeps that verdict.
            if row["status"] in ACTIVE_RUN_STATUSES and worker_id in (None, row["worker_id"]):
                values: dict[str, Any] = {
                    "status": outcome.status, "ended_at": now, "started_at": row["started_at"] or now,
                    "error_message": clean(outcome.error_message), "error_backtrace": clean(outcome.error_backtrace),
                    "records_in": outcome.records_in, "records_out": outcome.records_out,
                    "dead_letters": outcome.dead_letters, "lease_expires_at": None,
                }
                if outcome.engine_run_id is not None:  # else keep the one start_run recorded
                    values["engine_run_id"] = outcome.engine_run_id
                conn.execute(sa.update(runs).where(runs.c.id == run_id).values(values))
                conn.execute(
                    sa.update(flows).where(flows.c.id == row["flow_id"]).values(last_run_status=outcome.status)
                )
        return self.get_run(run_id)

    def expire_leases(self, policy: RetryPolicy, now: dt.datetime | None = None) -> list[RunRecord]:
        sa, flows, runs = self._sa, self._t.flows, self._t.runs
        now = _now(now)
        query = (
            sa.select(runs, flows.c.name.label("flow_name"))
            .join(flows, flows.c.id == runs.c.flow_id)
            .where(runs.c.status == "in_progress", runs.c.lease_expires_at < now)
            .order_by(runs.c.id)
            .with_for_update(skip_locked=True, of=runs)
        )
        expired: list[int] = []
        with self._tx() as conn:
            for row in conn.execute(query).mappings().all():
                attempt = int(row["attempt"])
                message = f"lease expired at {_iso(_aware(row['lease_expires_at']))}: worker {row['worker_id']} stopped renewing"
                retry = attempt < policy.max_attempts
                if retry:
                    delay = policy.delay(attempt)
                    retry_id = conn.execute(
                        sa.insert(runs)
                        .values(
                            flow_id=row["flow_id"], status="pending", trigger="retry", attempt=attempt + 1,
                            created_at=now, not_before=now + dt.timedelta(seconds=delay) if delay > 0 else None,
                        )
                        .returning(runs.c.id)
                    ).scalar_one()
                    message += f"; retried as run {retry_id} (attempt {attempt + 1} of {policy.max_attempts})"
                else:
                    message += f"; not retried ({attempt} of {policy.max_attempts} attempts used)"
                conn.execute(
                    sa.update(runs).where(runs.c.id == row["id"]).values(
                        status="failed", ended_at=now, started_at=row["started_at"] or now, error_message=message,
                        lease_expires_at=None,
                    )
                )
                conn.execute(
                    sa.update(flows).where(flows.c.id == row["flow_id"]).values(
                        last_run_status="pending" if retry else "failed"
                    )
                )
                expired.append(row["id"])
        return [self.get_run(run_id) for run_id in expired]

    # -- runs and heartbeat log ----------------------------------------------------------

    def _runs_query(self) -> Any:
        flows, runs = self._t.flows, self._t.runs
        return self._sa.select(runs, flows.c.name.label("flow_name")).join(flows, flows.c.id == runs.c.flow_id)

    def get_run(self, run_id: int) -> RunRecord:
        runs = self._t.runs
        with self._engine.connect() as conn:
            row = conn.execute(self._runs_query().where(runs.c.id == run_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"no run with id {run_id}")
        return _run_record(row)

    def list_runs(
        self, *, flow: str | None = None, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[RunRecord]:
        flows, runs = self._t.flows, self._t.runs
        if status is not None and status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}; one of {', '.join(RUN_STATUSES)}")
        query = self._runs_query()
        if flow is not None:
            query = query.where(flows.c.name == flow)
        if status is not None:
            query = query.where(runs.c.status == status)
        query = query.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(max(int(limit), 0)).offset(max(int(offset), 0))
        with self._engine.connect() as conn:
            return [_run_record(r) for r in conn.execute(query).mappings().all()]

    def insert_heartbeat(
        self,
        *,
        client: str | None,
        outcome: str,
        status_code: int,
        flows_due: int = 0,
        flows_triggered: int = 0,
        detail: str | None = None,
    ) -> HeartbeatRecord:
        sa, heartbeats = self._sa, self._t.heartbeats
        values = {
            "ts": utcnow(), "client": None if client is None else str(client)[:200], "outcome": outcome,
            "status_code": status_code, "flows_due": flows_due, "flows_triggered": flows_triggered,
            "detail": None if detail is None else redact_text(detail),
        }
        with self._tx() as conn:
            row = conn.execute(sa.insert(heartbeats).values(values).returning(*heartbeats.c)).mappings().one()
        return _heartbeat_record(row)

    def prune_heartbeats(self, *, keep: int, before: dt.datetime) -> int:
        sa, heartbeats = self._sa, self._t.heartbeats
        # the id of the newest row that is one too many (NULL while there are no more than keep)
        boundary = (
            sa.select(heartbeats.c.id).order_by(heartbeats.c.id.desc()).offset(max(int(keep), 0)).limit(1)
        ).scalar_subquery()
        query = sa.delete(heartbeats).where(sa.or_(heartbeats.c.id <= boundary, heartbeats.c.ts < as_utc(before)))
        with self._tx() as conn:
            return int(conn.execute(query).rowcount or 0)

    def list_heartbeats(self, *, limit: int = 100) -> list[HeartbeatRecord]:
        heartbeats = self._t.heartbeats
        query = self._sa.select(heartbeats).order_by(heartbeats.c.ts.desc(), heartbeats.c.id.desc()).limit(max(int(limit), 0))
        with self._engine.connect() as conn:
            return [_heartbeat_record(r) for r in conn.execute(query).mappings().all()]
