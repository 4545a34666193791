"""The schedule store on a bare SQLite ``execute`` — for hosts without SQLAlchemy.

:class:`ExecScheduleStore` needs only an object with ``execute(sql, params) -> rows``
(a list of tuples). The same class runs

* natively on the standard library's :mod:`sqlite3` (:class:`Sqlite3Exec`), and
* inside a Spin component on Spin SQLite (``active_data_flow.spin_app.connectors.SpinSqliteExec``), where a
  cron tick runs the due flows (:func:`active_data_flow.handlers.scheduler.tick`).

It is the one schedule store (:class:`active_data_flow.handlers.schedule.policy.PortScheduleStore`) on an
:class:`~active_data_flow.handlers.schedule.port.ExecPort` in the SQLite dialect, so its semantics are
those of :class:`active_data_flow.handlers.schedule.sql.SqlScheduleStore`: the same validation, the same
claim rules (one catch-up run, busy flows skipped and moved on, leases, retries), every
write transaction started with ``BEGIN IMMEDIATE``, timestamps stored as fixed-format UTC
text (``YYYY-MM-DD HH:MM:SS.ffffff``) exactly as SQLAlchemy stores them on SQLite. The
tables (:mod:`active_data_flow.handlers.schedule.tables`) are created here with ``CREATE TABLE IF NOT
EXISTS`` — there is no Alembic inside a component.

Ids are never reused: the tables are ``AUTOINCREMENT``. A file made before the run status
``partial`` existed, or by the SQLAlchemy store's first migration (no ``AUTOINCREMENT``),
or before cron schedules (no ``schedule_cron``) is rebuilt when the store opens — the same
rebuild as that store's migrations ``0002`` and ``0003``, every row and id kept (see
:func:`upgrade_schema`).

Standard library only (this runs inside a Spin component).

Example::

    store = ExecScheduleStore(Sqlite3Exec(".adf/schedule.db"))
    store.create_flow("orders", spec, run_interval=300)
    claim = store.claim(limit=10)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from active_data_flow.handlers.schedule.dialects import SQLITE
from active_data_flow.handlers.schedule.policy import PortScheduleStore
from active_data_flow.handlers.schedule.port import ExecConnection, ExecPort
from active_data_flow.handlers.schedule.store import RUN_STATUSES
from active_data_flow.handlers.schedule.tables import FLOWS, RUNS, quote, sqlite_create_table, sqlite_schema

__all__ = ["SCHEMA", "ExecConnection", "ExecScheduleStore", "Sqlite3Exec", "upgrade_schema"]


class Sqlite3Exec:
    """:class:`ExecConnection` on the standard library's ``sqlite3`` (autocommit mode, so
    ``BEGIN IMMEDIATE`` / ``COMMIT`` are the store's own)."""

    def __init__(self, path: str, *, timeout: float = 30.0) -> None:
        import os
        import sqlite3

        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
        self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        self._conn.close()


#: Every statement that makes the tables and their indexes (no-ops where they exist).
SCHEMA = sqlite_schema()

# --------------------------------------------------------------------------- schema upgrades

#: A rebuilt table is created under this name, filled, then renamed over the old one.
_NEW = {FLOWS.name: "_adf_new_data_flows", RUNS.name: "_adf_new_data_flow_runs"}
#: Indexes this store made before its tables were the migrations' (each one the same as one
#: of theirs, so it only cost writes).
_SUPERSEDED_INDEXES = ("ix_data_flow_runs_flow", "ix_data_flow_runs_status")


def _outdated(flows_sql: str, runs_sql: str) -> bool:
    """Whether the tables lack AUTOINCREMENT (ids reused), a run status or the cron schedule
    (``schedule_cron``, and ``run_interval`` nullable: migration ``0003``)."""
    autoincrement = all("AUTOINCREMENT" in sql.upper() for sql in (flows_sql, runs_sql))
    return (not autoincrement or any(f"'{status}'" not in runs_sql for status in RUN_STATUSES)
            or "ck_data_flows_one_schedule" not in flows_sql)


def upgrade_schema(conn: ExecConnection) -> bool:
    """Create the schedule tables, or bring older ones up to date; call it inside a write
    transaction. Returns True when ``data_flows`` and ``data_flow_runs`` were rebuilt.

    A rebuild copies every flow and run, with its id, into tables of the current definition
    and renames them over the old ones; the ``AUTOINCREMENT`` counters keep their values
    (a deleted id above the highest remaining one is not known to a file that never had
    them). The order matters: with foreign keys on, dropping ``data_flows`` deletes its rows
    first and so cascades to every table referencing it. So the new runs table references
    the new flows table, the old runs table is dropped first, and renaming the new flows
    table to ``data_flows`` rewrites the reference (SQLite >= 3.26).
    """

    def q(sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return list(conn.execute(sql, list(params)))

    tables = {
        str(name): str(sql or "")
        for name, sql in q("SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                           "AND name IN ('data_flows', 'data_flow_runs')")
    }
    rebuild = len(tables) == 2 and _outdated(tables["data_flows"], tables["data_flow_runs"])
    if rebuild:
        q(sqlite_create_table(FLOWS, name=_NEW[FLOWS.name]))
        q(sqlite_create_table(RUNS, name=_NEW[RUNS.name], renamed=_NEW))
        counters = [(str(name), int(seq)) for name, seq in
                    q("SELECT name, seq FROM sqlite_sequence WHERE name IN ('data_flows', 'data_flow_runs')")]
        # a file from before the cron schedule lacks its columns: they start out empty
        had = {str(r[1]) for r in q("PRAGMA table_info(data_flows)")}
        flow_cols = ", ".join(quote(c) for c in FLOWS.column_names if c in had)
        run_cols = ", ".join(f'"{c}"' for c in RUNS.column_names)
        q(f"INSERT INTO {_NEW[FLOWS.name]} ({flow_cols}) SELECT {flow_cols} FROM data_flows")
        # Runs of a deleted flow (a file once written without foreign keys) are unreachable: left behind.
        q(f"INSERT INTO {_NEW[RUNS.name]} ({run_cols}) SELECT {run_cols} FROM data_flow_runs "
          "WHERE flow_id IN (SELECT id FROM data_flows)")
        q("DROP TABLE data_flow_runs")
        q("DROP TABLE data_flows")
        q(f"ALTER TABLE {_NEW[FLOWS.name]} RENAME TO data_flows")
        q(f"ALTER TABLE {_NEW[RUNS.name]} RENAME TO data_flow_runs")
        for table, seq in counters:
            q("UPDATE sqlite_sequence SET seq = ? WHERE name = ? AND seq < ?", [seq, table, seq])
            q("INSERT INTO sqlite_sequence (name, seq) SELECT ?, ? "
              "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?)", [table, seq, table])
    for statement in SCHEMA:
        q(statement)
    for index in _SUPERSEDED_INDEXES:
        q(f"DROP INDEX IF EXISTS {index}")
    return rebuild


class ExecScheduleStore(PortScheduleStore):
    """:class:`~active_data_flow.handlers.schedule.store.ScheduleStore` over an :class:`ExecConnection`:
    :class:`~active_data_flow.handlers.schedule.policy.PortScheduleStore` on an
    :class:`~active_data_flow.handlers.schedule.port.ExecPort` (SQLite).

    Creates its tables on open, or upgrades older ones (:func:`upgrade_schema`;
    ``create_tables=False`` to skip). One connection, guarded by a lock: share the store
    between threads, open one per process.
    """

    def __init__(self, conn: ExecConnection, *, create_tables: bool = True) -> None:
        self.conn = conn
        super().__init__(ExecPort(conn, SQLITE))
        self.port.execute("PRAGMA foreign_keys = ON")
        if create_tables:
            with self.port.transaction():
                upgrade_schema(self.port)

    def __repr__(self) -> str:
        return f"ExecScheduleStore({self.conn!r})"
