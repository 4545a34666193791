"""What differs between the databases the schedule runs on, and nothing else: SQLite and
PostgreSQL.

The store's policy (:mod:`active_data_flow.handlers.schedule.policy`) is written once, in SQL both
databases read, with ``?`` placeholders; a :class:`Dialect` supplies the rest:

* how a write transaction begins (SQLite: ``BEGIN IMMEDIATE``, so writers queue up instead
  of racing) and how selected rows are locked (PostgreSQL: ``FOR UPDATE``, ``FOR UPDATE …
  SKIP LOCKED``; SQLite's one writer needs no row locks);
* how a timestamp, a boolean and a JSON value are passed and read back (SQLite: UTC text
  in a fixed format that sorts and compares as time, integers, JSON text; PostgreSQL:
  ``timestamptz``, ``boolean``, ``jsonb``);
* the id of a new row and the number of deleted rows (``last_insert_rowid()`` and
  ``changes()``, or ``RETURNING``);
* PostgreSQL's two hot paths as one statement each (one round trip plus the commit): the
  claim of due flows by heartbeats and the claim of a pending run by workers, built on
  ``SELECT … FOR UPDATE SKIP LOCKED``;
* what a unique-constraint violation looks like.

Standard library only (this runs inside a Spin component).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from active_data_flow.handlers.schedule.store import ACTIVE_RUN_STATUSES, as_utc
from active_data_flow.handlers.schedule.tables import RUNS, in_list, quote

if TYPE_CHECKING:
    from active_data_flow.handlers.schedule.port import ExecConnection

__all__ = ["DIALECTS", "POSTGRESQL", "SQLITE", "Dialect", "PostgresDialect", "SqliteDialect", "dialect_named"]

Row = Sequence[Any]

#: ``SQLSTATE`` of a unique-constraint violation.
_UNIQUE_VIOLATION = "23505"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the driver's error a wrapper carries (``orig``), and their causes."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        todo += [current.__cause__, current.__context__, orig if isinstance(orig, BaseException) else None]


class Dialect:
    """The base: what both databases share. Subclasses set the class attributes."""

    name = "sql"
    #: the statement that opens a write transaction
    begin = "BEGIN"
    #: appended to a SELECT inside a write transaction: its rows stay locked until the end
    for_update = ""
    #: the placeholder of a JSON value, passed as its text
    json_param = "?"

    def skip_locked(self, alias: str) -> str:
        """Appended to a SELECT: lock the rows of ``alias`` it returns, skipping rows another
        transaction holds (so concurrent claims take disjoint rows)."""
        return ""

    def bind_time(self, value: dt.datetime | None) -> Any:
        """An aware datetime as a statement parameter."""
        return None if value is None else as_utc(value)

    def read_time(self, value: Any) -> dt.datetime | None:
        """A stored timestamp as an aware UTC datetime."""
        if value is None:
            return None
        if isinstance(value, dt.datetime):
            return as_utc(value)
        return as_utc(dt.datetime.fromisoformat(str(value)))

    def bind_bool(self, value: bool) -> Any:
        return bool(value)

    def insert(self, port: ExecConnection, sql: str, params: Sequence[Any]) -> int:
        """Run the ``INSERT`` ``sql`` (inside a transaction); the new row's ``id``."""
        return int(port.execute(sql + " RETURNING id", params)[0][0])

    def delete(self, port: ExecConnection, sql: str, params: Sequence[Any]) -> int:
        """Run the ``DELETE`` ``sql`` (inside a transaction); how many rows it deleted."""
        return int(port.execute(f"WITH gone AS ({sql} RETURNING 1) SELECT count(*) FROM gone", params)[0][0])

    def is_unique_violation(self, exc: BaseException) -> bool:
        """Whether ``exc`` (the driver's, or a wrapper of it) is a unique-constraint violation."""
        return any(getattr(e, "sqlstate", None) == _UNIQUE_VIOLATION for e in _causes(exc))

    def claim_due(
        self, port: ExecConnection, *, now: dt.datetime, limit: int, status: str, trigger: str,
        worker_id: str | None, lease: dt.datetime | None,
    ) -> list[Row] | None:
        """The claim of due flows as one statement: one row per due flow, the created run's
        columns (:data:`~active_data_flow.handlers.schedule.tables.RUNS`; NULL for a busy flow), then the
        flow's name, whether it was busy, its id, ``schedule_cron`` and ``schedule_timezone``.
        Interval flows are moved on; a cron flow's ``next_run_at`` is left to the store (its
        row stays locked until the transaction ends). None: the store runs its statements one
        by one."""
        return None

    def claim_pending(
        self, port: ExecConnection, *, now: dt.datetime, worker_id: str, lease: dt.datetime
    ) -> list[Row] | None:
        """The claim of the oldest pending run as one statement: no row, or the run's columns
        then its flow's name. None: the store runs its statements one by one."""
        return None


class SqliteDialect(Dialect):
    """SQLite: one writer at a time, so every write transaction takes the write lock when it
    begins (other writers wait, busy timeout) and no row is locked on its own. Timestamps
    are naive UTC text with microseconds — the way SQLAlchemy stores them on SQLite."""

    name = "sqlite"
    begin = "BEGIN IMMEDIATE"

    def bind_time(self, value: dt.datetime | None) -> Any:
        if value is None:
            return None
        return as_utc(value).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")

    def bind_bool(self, value: bool) -> Any:
        return int(bool(value))

    def insert(self, port: ExecConnection, sql: str, params: Sequence[Any]) -> int:
        port.execute(sql, params)
        return int(port.execute("SELECT last_insert_rowid()", ())[0][0])

    def delete(self, port: ExecConnection, sql: str, params: Sequence[Any]) -> int:
        port.execute(sql, params)
        return int(port.execute("SELECT changes()", ())[0][0])

    def is_unique_violation(self, exc: BaseException) -> bool:
        return any("UNIQUE constraint failed" in str(e) for e in _causes(exc))


_RUN_COLUMNS = RUNS.column_names
_ACTIVE = in_list(ACTIVE_RUN_STATUSES)


def _columns(alias: str) -> str:
    return ", ".join(f"{alias}.{quote(c)}" for c in _RUN_COLUMNS)


# The due scan orders by next_run_at alone so that it walks ix_data_flows_due (enabled,
# next_run_at) and stops after ``limit`` rows; "busy" is a correlated LIMIT 1 probe of the
# partial index of active runs (an EXISTS here may be planned as a hash of *every* active
# run, once per claim). Parameters: now, limit, now, now, status, status, trigger, now,
# started_at, worker_id, lease.
_PG_CLAIM_DUE = f"""
WITH due AS (
    SELECT f.id, f.name, f.run_interval, f.schedule_cron, f.schedule_timezone,
           (SELECT true FROM data_flow_runs r
            WHERE r.flow_id = f.id AND r.status IN ({_ACTIVE}) LIMIT 1) IS NOT NULL AS busy
    FROM data_flows f
    WHERE f.enabled AND f.next_run_at <= ?
    ORDER BY f.next_run_at
    LIMIT ?
    FOR UPDATE OF f SKIP LOCKED
), advanced AS (
    UPDATE data_flows f
    SET next_run_at = CASE WHEN due.run_interval IS NULL THEN f.next_run_at
                           ELSE ? + make_interval(secs => due.run_interval) END,
        last_run_at = CASE WHEN due.busy THEN f.last_run_at ELSE ? END,
        last_run_status = CASE WHEN due.busy THEN f.last_run_status ELSE ? END
    FROM due
    WHERE f.id = due.id
    RETURNING f.id, due.name, due.busy, due.schedule_cron, due.schedule_timezone
), created AS (
    INSERT INTO data_flow_runs
        (flow_id, status, "trigger", attempt, created_at, started_at, worker_id, lease_expires_at)
    SELECT a.id, ?, ?, 1, ?, CAST(? AS timestamptz), CAST(? AS varchar), CAST(? AS timestamptz)
    FROM advanced a
    WHERE NOT a.busy
    ORDER BY a.id
    RETURNING *
)
SELECT {_columns("c")}, a.name AS flow_name, a.busy, a.id AS flow_ref, a.schedule_cron, a.schedule_timezone
FROM advanced a LEFT JOIN created c ON c.flow_id = a.id
ORDER BY c.id
"""

# Parameters: now, worker_id, now, lease.
_PG_CLAIM_PENDING = f"""
WITH next_run AS (
    SELECT r.id, r.flow_id
    FROM data_flow_runs r
    WHERE r.status = 'pending' AND (r.not_before IS NULL OR r.not_before <= ?)
      AND NOT EXISTS (SELECT 1 FROM data_flow_runs o WHERE o.flow_id = r.flow_id AND o.status = 'in_progress')
    ORDER BY r.created_at, r.id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), started AS (
    UPDATE data_flow_runs r
    SET status = 'in_progress', worker_id = ?, started_at = ?, lease_expires_at = ?
    FROM next_run n
    WHERE r.id = n.id AND r.status = 'pending'
    RETURNING r.*
), flow AS (
    UPDATE data_flows f SET last_run_status = 'in_progress'
    FROM started s WHERE f.id = s.flow_id
    RETURNING f.id, f.name
)
SELECT {_columns("s")}, flow.name AS flow_name FROM started s JOIN flow ON flow.id = s.flow_id
"""


class PostgresDialect(Dialect):
    """PostgreSQL: concurrent writers, rows locked where a transaction reads what it then
    changes, ``SKIP LOCKED`` where claims must take disjoint rows; ``timestamptz`` and
    ``jsonb``; ids by ``RETURNING``."""

    name = "postgresql"
    for_update = " FOR UPDATE"
    json_param = "CAST(? AS jsonb)"

    def skip_locked(self, alias: str) -> str:
        return f" FOR UPDATE OF {alias} SKIP LOCKED"

    def claim_due(
        self, port: ExecConnection, *, now: dt.datetime, limit: int, status: str, trigger: str,
        worker_id: str | None, lease: dt.datetime | None,
    ) -> list[Row] | None:
        started_at = now if worker_id else None
        params = [now, limit, now, now, status, status, trigger, now, started_at, worker_id, lease]
        return list(port.execute(_PG_CLAIM_DUE, params))

    def claim_pending(
        self, port: ExecConnection, *, now: dt.datetime, worker_id: str, lease: dt.datetime
    ) -> list[Row] | None:
        return list(port.execute(_PG_CLAIM_PENDING, [now, worker_id, now, lease]))


SQLITE = SqliteDialect()
POSTGRESQL = PostgresDialect()
#: The dialects by name.
DIALECTS = {d.name: d for d in (SQLITE, POSTGRESQL)}


def dialect_named(name: str) -> Dialect:
    """The dialect of the database SQLAlchemy calls ``name``."""
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(f"the schedule store runs on {' or '.join(DIALECTS)}, not {name}") from None
