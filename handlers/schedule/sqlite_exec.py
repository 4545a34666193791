"""The schedule store on a bare SQLite ``execute`` — for hosts without SQLAlchemy.

:class:`ExecScheduleStore` needs only an object with ``execute(sql, params) -> rows``
(a list of tuples). The same class runs

* natively on the standard library's :mod:`sqlite3` (:class:`Sqlite3Exec`), and
* inside a Spin component on Spin SQLite (``spin_app.connectors.SpinSqliteExec``), where a
  cron tick runs the due flows (:func:`handlers.scheduler.tick`).

Semantics are those of :class:`handlers.schedule.sql.SqlScheduleStore` on SQLite: the same
tables (``data_flows``, ``data_flow_runs``, ``heartbeat_requests``, created here with
``CREATE TABLE IF NOT EXISTS`` — there is no Alembic inside a component), the same
validation (:func:`handlers.schedule.store.flow_problems`), the same claim rules (one
catch-up run, busy flows skipped and moved on, leases, retries), every write transaction
started with ``BEGIN IMMEDIATE``. Timestamps are stored as fixed-format UTC text
(``YYYY-MM-DD HH:MM:SS.ffffff``), which sorts and compares as time, exactly as
SQLAlchemy stores them on SQLite.

Ids are never reused: the tables are ``AUTOINCREMENT``. A file made before the run status
``partial`` existed, or by the SQLAlchemy store's first migration (no ``AUTOINCREMENT``),
is rebuilt when the store opens — the same rebuild as that store's migration ``0002``,
every row and id kept (see :func:`upgrade_schema`).

Standard library only (this runs inside a Spin component).

Example::

    store = ExecScheduleStore(Sqlite3Exec(".adf/schedule.db"))
    store.create_flow("orders", spec, run_interval=300)
    claim = store.claim(limit=10)
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

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

__all__ = ["SCHEMA", "ExecConnection", "ExecScheduleStore", "Sqlite3Exec", "upgrade_schema"]


class ExecConnection(Protocol):
    """What the store needs: run one statement, get its rows (an empty list when none)."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Sequence[Sequence[Any]]: ...


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


_FLOWS_TABLE = """CREATE TABLE IF NOT EXISTS {table} (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name VARCHAR(200) NOT NULL UNIQUE,
        description TEXT NOT NULL,
        enabled BOOLEAN NOT NULL,
        configuration JSON NOT NULL,
        run_interval INTEGER NOT NULL CHECK (run_interval > 0),
        last_run_at DATETIME,
        last_run_status VARCHAR(20),
        next_run_at DATETIME,
        created_at DATETIME NOT NULL,
        updated_at DATETIME NOT NULL
    )"""
_RUNS_TABLE = """CREATE TABLE IF NOT EXISTS {table} (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        flow_id INTEGER NOT NULL REFERENCES {flows} (id) ON DELETE CASCADE,
        status VARCHAR(20) NOT NULL CHECK (status IN ({statuses})),
        "trigger" VARCHAR(40) NOT NULL,
        attempt INTEGER NOT NULL,
        created_at DATETIME NOT NULL,
        started_at DATETIME,
        ended_at DATETIME,
        error_message TEXT,
        error_backtrace TEXT,
        records_in BIGINT,
        records_out BIGINT,
        dead_letters BIGINT,
        worker_id VARCHAR(200),
        lease_expires_at DATETIME,
        engine_run_id VARCHAR(200),
        not_before DATETIME
    )"""
_STATUS_LIST = ", ".join(f"'{s}'" for s in RUN_STATUSES)
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_data_flows_due ON data_flows (enabled, next_run_at)",
    "CREATE INDEX IF NOT EXISTS ix_data_flow_runs_flow ON data_flow_runs (flow_id, status)",
    "CREATE INDEX IF NOT EXISTS ix_data_flow_runs_status ON data_flow_runs (status, created_at)",
)

SCHEMA = (
    _FLOWS_TABLE.format(table="data_flows"),
    _RUNS_TABLE.format(table="data_flow_runs", flows="data_flows", statuses=_STATUS_LIST),
    *_INDEXES,
    """CREATE TABLE IF NOT EXISTS heartbeat_requests (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts DATETIME NOT NULL,
        client VARCHAR(200),
        outcome VARCHAR(40) NOT NULL,
        status_code INTEGER NOT NULL,
        flows_due INTEGER NOT NULL,
        flows_triggered INTEGER NOT NULL,
        detail TEXT
    )""",
)

_FLOW_COLS = ("id", "name", "description", "enabled", "configuration", "run_interval", "last_run_at",
              "last_run_status", "next_run_at", "created_at", "updated_at")
_RUN_COLS = ("id", "flow_id", "status", "trigger", "attempt", "created_at", "started_at", "ended_at",
             "error_message", "error_backtrace", "records_in", "records_out", "dead_letters", "worker_id",
             "lease_expires_at", "engine_run_id", "not_before")
_HB_COLS = ("id", "ts", "client", "outcome", "status_code", "flows_due", "flows_triggered", "detail")
_TIME = frozenset({"created_at", "started_at", "ended_at", "lease_expires_at", "not_before", "last_run_at",
                   "next_run_at", "updated_at", "ts"})

_FLOW_SELECT = "SELECT " + ", ".join(f"f.{c}" for c in _FLOW_COLS) + " FROM data_flows f"
_RUN_SELECT = ("SELECT " + ", ".join(f'r."{c}"' for c in _RUN_COLS) + ", f.name FROM data_flow_runs r "
               "JOIN data_flows f ON f.id = r.flow_id")


def _ts(value: dt.datetime | None) -> str | None:
    """An aware datetime as the stored text (naive UTC, microseconds)."""
    if value is None:
        return None
    return as_utc(value).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _aware(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return as_utc(value)
    return as_utc(dt.datetime.fromisoformat(str(value)))


def _row(cols: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    return {c: (_aware(v) if c in _TIME else v) for c, v in zip(cols, row, strict=False)}


def _flow(row: Sequence[Any]) -> FlowRecord:
    data = _row(_FLOW_COLS, row)
    data["enabled"] = bool(data["enabled"])
    conf = data["configuration"]
    data["configuration"] = dict(json.loads(conf) if isinstance(conf, str | bytes) else conf or {})
    return FlowRecord(**data)


def _run(row: Sequence[Any]) -> RunRecord:
    data = _row(_RUN_COLS, row[: len(_RUN_COLS)])
    return RunRecord(flow_name=row[len(_RUN_COLS)], **data)


def _seconds(value: float, what: str) -> dt.timedelta:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return dt.timedelta(seconds=float(value))


def _now(now: dt.datetime | None) -> dt.datetime:
    return utcnow() if now is None else as_utc(now)


def _iso(value: dt.datetime | None) -> str:
    return "?" if value is None else value.isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- schema upgrades

#: A rebuilt table is created under this name, filled, then renamed over the old one.
_NEW_FLOWS, _NEW_RUNS = "_adf_new_data_flows", "_adf_new_data_flow_runs"


def _outdated(flows_sql: str, runs_sql: str) -> bool:
    """Whether the tables lack AUTOINCREMENT (ids reused) or a run status."""
    autoincrement = all("AUTOINCREMENT" in sql.upper() for sql in (flows_sql, runs_sql))
    return not autoincrement or any(f"'{status}'" not in runs_sql for status in RUN_STATUSES)


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
        q(_FLOWS_TABLE.format(table=_NEW_FLOWS))
        q(_RUNS_TABLE.format(table=_NEW_RUNS, flows=_NEW_FLOWS, statuses=_STATUS_LIST))
        counters = [(str(name), int(seq)) for name, seq in
                    q("SELECT name, seq FROM sqlite_sequence WHERE name IN ('data_flows', 'data_flow_runs')")]
        flow_cols = ", ".join(_FLOW_COLS)
        run_cols = ", ".join(f'"{c}"' for c in _RUN_COLS)
        q(f"INSERT INTO {_NEW_FLOWS} ({flow_cols}) SELECT {flow_cols} FROM data_flows")
        # Runs of a deleted flow (a file once written without foreign keys) are unreachable: left behind.
        q(f"INSERT INTO {_NEW_RUNS} ({run_cols}) SELECT {run_cols} FROM data_flow_runs "
          "WHERE flow_id IN (SELECT id FROM data_flows)")
        q("DROP TABLE data_flow_runs")
        q("DROP TABLE data_flows")
        q(f"ALTER TABLE {_NEW_FLOWS} RENAME TO data_flows")
        q(f"ALTER TABLE {_NEW_RUNS} RENAME TO data_flow_runs")
        for table, seq in counters:
            q("UPDATE sqlite_sequence SET seq = ? WHERE name = ? AND seq < ?", [seq, table, seq])
            q("INSERT INTO sqlite_sequence (name, seq) SELECT ?, ? "
              "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?)", [table, seq, table])
    for statement in SCHEMA:
        q(statement)
    return rebuild


class ExecScheduleStore(ScheduleStore):
    """:class:`~handlers.schedule.store.ScheduleStore` over an :class:`ExecConnection`.

    Creates its tables on open, or upgrades older ones (:func:`upgrade_schema`;
    ``create_tables=False`` to skip). One connection, guarded by a lock: share the store
    between threads, open one per process.
    """

    def __init__(self, conn: ExecConnection, *, create_tables: bool = True) -> None:
        self.conn = conn
        self._lock = threading.RLock()
        self._depth = 0
        self.conn.execute("PRAGMA foreign_keys = ON")
        if create_tables:
            with self._tx():
                upgrade_schema(self.conn)

    def __repr__(self) -> str:
        return f"ExecScheduleStore({self.conn!r})"

    def close(self) -> None:
        close = getattr(self.conn, "close", None)
        if close is not None:
            close()

    # -- plumbing ------------------------------------------------------------------------

    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return list(self.conn.execute(sql, list(params)))

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """One write transaction (``BEGIN IMMEDIATE``); nested calls join the outer one."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self.conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self.conn.execute("COMMIT")

    def _insert(self, sql: str, params: Sequence[Any]) -> int:
        self._q(sql, params)
        return int(self._q("SELECT last_insert_rowid()")[0][0])

    def _flow_row(self, name: str) -> FlowRecord | None:
        rows = self._q(_FLOW_SELECT + " WHERE f.name = ?", [name])
        return _flow(rows[0]) if rows else None

    # -- flows ---------------------------------------------------------------------------

    def create_flow(
        self,
        name: str,
        configuration: Mapping[str, Any],
        run_interval: int,
        *,
        description: str = "",
        enabled: bool = True,
    ) -> FlowRecord:
        description = "" if description is None else description
        enabled = True if enabled is None else enabled
        problems = flow_problems(name, configuration, run_interval, description=description, enabled=enabled)
        taken = [f"name: a flow named {name!r} already exists"]
        with self._tx():
            if isinstance(name, str) and not any(p.startswith("name:") for p in problems) and self._flow_row(name):
                problems.insert(0, taken[0])
            if problems == taken:
                raise DuplicateFlowError(problems)
            if problems:
                raise FlowValidationError(problems)
            now = _ts(utcnow())
            self._q(
                "INSERT INTO data_flows (name, description, enabled, configuration, run_interval, next_run_at, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [name, description, int(enabled), json.dumps(dict(configuration)), run_interval, now, now, now],
            )
            flow = self._flow_row(name)
        assert flow is not None
        return flow

    def update_flow(
        self,
        name: str,
        *,
        configuration: Mapping[str, Any] | None = None,
        run_interval: int | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> FlowRecord:
        check = [k for k, v in (("configuration", configuration), ("run_interval", run_interval)) if v is not None]
        problems = flow_problems(name, configuration, run_interval, description=description, enabled=enabled, check=check)
        now = utcnow()
        with self._tx():
            flow = self._flow_row(name)
            if flow is None:
                raise NotFoundError(f"no flow named {name!r}")
            if problems:
                raise FlowValidationError(problems)
            values: dict[str, Any] = {"updated_at": _ts(now)}
            if configuration is not None:
                values["configuration"] = json.dumps(dict(configuration))
            if description is not None:
                values["description"] = description
            if run_interval is not None:
                values["run_interval"] = run_interval
                if run_interval != flow.run_interval and flow.last_run_at is not None:
                    values["next_run_at"] = _ts(flow.last_run_at + dt.timedelta(seconds=run_interval))
            if enabled is not None:
                values["enabled"] = int(enabled)
                if enabled and flow.next_run_at is None:
                    values["next_run_at"] = _ts(now)
            sets = ", ".join(f"{k} = ?" for k in values)
            self._q(f"UPDATE data_flows SET {sets} WHERE id = ?", [*values.values(), flow.id])
            updated = self._flow_row(name)
        assert updated is not None
        return updated

    def get_flow(self, name: str) -> FlowRecord:
        with self._lock:
            flow = self._flow_row(name)
        if flow is None:
            raise NotFoundError(f"no flow named {name!r}")
        return flow

    def list_flows(self) -> list[FlowRecord]:
        with self._lock:
            return [_flow(r) for r in self._q(_FLOW_SELECT + " ORDER BY f.name")]

    def delete_flow(self, name: str) -> None:
        with self._tx():
            flow = self._flow_row(name)
            if flow is None:
                raise NotFoundError(f"no flow named {name!r}")
            self._q("DELETE FROM data_flow_runs WHERE flow_id = ?", [flow.id])  # also without foreign_keys
            self._q("DELETE FROM data_flows WHERE id = ?", [flow.id])

    def due_flows(self, now: dt.datetime | None = None) -> list[FlowRecord]:
        with self._lock:
            rows = self._q(_FLOW_SELECT + " WHERE f.enabled AND f.next_run_at <= ? ORDER BY f.next_run_at, f.id",
                           [_ts(_now(now))])
        return [_flow(r) for r in rows]

    # -- claiming --------------------------------------------------------------------------

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
        claim = Claim()
        with self._tx():
            due = self._q(
                "SELECT f.id, f.name, f.run_interval, EXISTS (SELECT 1 FROM data_flow_runs r WHERE r.flow_id = f.id "
                "AND r.status IN ('pending', 'in_progress')) FROM data_flows f "
                "WHERE f.enabled AND f.next_run_at <= ? ORDER BY f.next_run_at LIMIT ?",
                [_ts(now), limit],
            )
            claim.flows_due = len(due)
            run_ids: list[int] = []
            for fid, name, interval, busy in due:
                self._q("UPDATE data_flows SET next_run_at = ? WHERE id = ?",
                        [_ts(now + dt.timedelta(seconds=int(interval))), fid])
                if busy:
                    claim.skipped.append(name)
                    continue
                self._q("UPDATE data_flows SET last_run_at = ?, last_run_status = ? WHERE id = ?", [_ts(now), status, fid])
                run_ids.append(self._insert(
                    'INSERT INTO data_flow_runs (flow_id, status, "trigger", attempt, created_at, started_at, worker_id, '
                    "lease_expires_at) VALUES (?, ?, ?, 1, ?, ?, ?, ?)",
                    [fid, status, trigger, _ts(now), _ts(now) if worker_id else None, worker_id, _ts(lease)],
                ))
            claim.runs = [self._get_run(i) for i in run_ids]
        return claim

    def create_run(
        self, flow_name: str, *, trigger: str = "manual", worker_id: str | None = None, lease_seconds: float = 300.0
    ) -> RunRecord:
        now = utcnow()
        status = "in_progress" if worker_id else "pending"
        lease = now + _seconds(lease_seconds, "lease_seconds") if worker_id else None
        with self._tx():
            flow = self._flow_row(flow_name)
            if flow is None:
                raise NotFoundError(f"no flow named {flow_name!r}")
            run_id = self._insert(
                'INSERT INTO data_flow_runs (flow_id, status, "trigger", attempt, created_at, started_at, worker_id, '
                "lease_expires_at) VALUES (?, ?, ?, 1, ?, ?, ?, ?)",
                [flow.id, status, trigger, _ts(now), _ts(now) if worker_id else None, worker_id, _ts(lease)],
            )
            self._q("UPDATE data_flows SET last_run_at = ?, last_run_status = ? WHERE id = ?", [_ts(now), status, flow.id])
            return self._get_run(run_id)

    def claim_pending_run(
        self, worker_id: str, *, lease_seconds: float = 300.0, now: dt.datetime | None = None
    ) -> RunRecord | None:
        now = _now(now)
        lease = now + _seconds(lease_seconds, "lease_seconds")
        with self._tx():
            picked = self._q(
                "SELECT r.id, r.flow_id FROM data_flow_runs r WHERE r.status = 'pending' "
                "AND (r.not_before IS NULL OR r.not_before <= ?) AND NOT EXISTS (SELECT 1 FROM data_flow_runs o "
                "WHERE o.flow_id = r.flow_id AND o.status = 'in_progress') ORDER BY r.created_at, r.id LIMIT 1",
                [_ts(now)],
            )
            if not picked:
                return None
            run_id, flow_id = picked[0]
            self._q("UPDATE data_flow_runs SET status = 'in_progress', worker_id = ?, started_at = ?, "
                    "lease_expires_at = ? WHERE id = ?", [worker_id, _ts(now), _ts(lease), run_id])
            self._q("UPDATE data_flows SET last_run_status = 'in_progress' WHERE id = ?", [flow_id])
            return self._get_run(int(run_id))

    def renew_lease(self, run_id: int, worker_id: str, *, lease_seconds: float = 300.0) -> bool:
        return run_id in self.renew_leases([run_id], worker_id, lease_seconds=lease_seconds)

    def renew_leases(self, run_ids: Iterable[int], worker_id: str, *, lease_seconds: float = 300.0) -> set[int]:
        ids = sorted(set(run_ids))
        if not ids:
            return set()
        lease = utcnow() + _seconds(lease_seconds, "lease_seconds")
        marks = ", ".join("?" for _ in ids)
        where = f"id IN ({marks}) AND worker_id = ? AND status = 'in_progress'"
        with self._tx():
            held = {int(r[0]) for r in self._q(f"SELECT id FROM data_flow_runs WHERE {where}", [*ids, worker_id])}
            if held:
                self._q(f"UPDATE data_flow_runs SET lease_expires_at = ? WHERE {where}", [_ts(lease), *ids, worker_id])
        return held

    def start_run(
        self,
        run_id: int,
        worker_id: str,
        *,
        lease_seconds: float = 300.0,
        now: dt.datetime | None = None,
        engine_run_id: str | None = None,
    ) -> RunRecord | None:
        now = _now(now)
        lease = now + _seconds(lease_seconds, "lease_seconds")
        with self._tx():
            mine = self._q("SELECT id FROM data_flow_runs WHERE id = ? AND worker_id = ? AND status = 'in_progress'",
                           [run_id, worker_id])
            if not mine:
                return None
            self._q("UPDATE data_flow_runs SET started_at = ?, lease_expires_at = ?, "
                    "engine_run_id = COALESCE(?, engine_run_id) WHERE id = ?",
                    [_ts(now), _ts(lease), engine_run_id, run_id])
            return self._get_run(run_id)

    def finish_run(self, run_id: int, outcome: RunOutcome, *, worker_id: str | None = None) -> RunRecord:
        if outcome.status not in FINAL_RUN_STATUSES:
            raise ValueError(f"a run finishes as one of {', '.join(FINAL_RUN_STATUSES)}, not {outcome.status!r}")
        now = utcnow()

        def clean(text: str | None) -> str | None:
            return None if text is None else redact_text(text)

        with self._tx():
            rows = self._q("SELECT id, flow_id, status, started_at, worker_id FROM data_flow_runs WHERE id = ?",
                           [run_id])
            if not rows:
                raise NotFoundError(f"no run with id {run_id}")
            _, flow_id, status, started_at, holder = rows[0]
            # A run already finished (this very outcome, when a write is retried) or failed by
            # an expired lease (and maybe retried) keeps that verdict.
            if status in ACTIVE_RUN_STATUSES and worker_id in (None, holder):
                self._q(
                    "UPDATE data_flow_runs SET status = ?, ended_at = ?, started_at = ?, error_message = ?, "
                    "error_backtrace = ?, records_in = ?, records_out = ?, dead_letters = ?, "
                    "engine_run_id = COALESCE(?, engine_run_id), lease_expires_at = NULL WHERE id = ?",
                    [outcome.status, _ts(now), started_at or _ts(now), clean(outcome.error_message),
                     clean(outcome.error_backtrace), outcome.records_in, outcome.records_out, outcome.dead_letters,
                     outcome.engine_run_id, run_id],
                )
                self._q("UPDATE data_flows SET last_run_status = ? WHERE id = ?", [outcome.status, flow_id])
            return self._get_run(run_id)

    def expire_leases(self, policy: RetryPolicy, now: dt.datetime | None = None) -> list[RunRecord]:
        now = _now(now)
        expired: list[int] = []
        with self._tx():
            rows = self._q(
                "SELECT r.id, r.flow_id, r.attempt, r.lease_expires_at, r.worker_id, r.started_at FROM data_flow_runs r "
                "WHERE r.status = 'in_progress' AND r.lease_expires_at < ? ORDER BY r.id",
                [_ts(now)],
            )
            for run_id, flow_id, attempt, lease_at, worker, started_at in rows:
                attempt = int(attempt)
                message = f"lease expired at {_iso(_aware(lease_at))}: worker {worker} stopped renewing"
                retry = attempt < policy.max_attempts
                if retry:
                    delay = policy.delay(attempt)
                    retry_id = self._insert(
                        'INSERT INTO data_flow_runs (flow_id, status, "trigger", attempt, created_at, not_before) '
                        "VALUES (?, 'pending', 'retry', ?, ?, ?)",
                        [flow_id, attempt + 1, _ts(now), _ts(now + dt.timedelta(seconds=delay)) if delay > 0 else None],
                    )
                    message += f"; retried as run {retry_id} (attempt {attempt + 1} of {policy.max_attempts})"
                else:
                    message += f"; not retried ({attempt} of {policy.max_attempts} attempts used)"
                self._q(
                    "UPDATE data_flow_runs SET status = 'failed', ended_at = ?, started_at = ?, error_message = ?, "
                    "lease_expires_at = NULL WHERE id = ?",
                    [_ts(now), started_at or _ts(now), message, run_id],
                )
                self._q("UPDATE data_flows SET last_run_status = ? WHERE id = ?", ["pending" if retry else "failed", flow_id])
                expired.append(int(run_id))
            return [self._get_run(i) for i in expired]

    # -- runs and heartbeat log ---------------------------------------------------------------

    def _get_run(self, run_id: int) -> RunRecord:
        rows = self._q(_RUN_SELECT + " WHERE r.id = ?", [run_id])
        if not rows:
            raise NotFoundError(f"no run with id {run_id}")
        return _run(rows[0])

    def get_run(self, run_id: int) -> RunRecord:
        with self._lock:
            return self._get_run(run_id)

    def list_runs(
        self, *, flow: str | None = None, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[RunRecord]:
        if status is not None and status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}; one of {', '.join(RUN_STATUSES)}")
        where, params = [], []
        if flow is not None:
            where.append("f.name = ?")
            params.append(flow)
        if status is not None:
            where.append("r.status = ?")
            params.append(status)
        sql = _RUN_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY r.created_at DESC, r.id DESC LIMIT ? OFFSET ?"
        with self._lock:
            rows = self._q(sql, [*params, max(int(limit), 0), max(int(offset), 0)])
        return [_run(r) for r in rows]

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
        values = [_ts(utcnow()), None if client is None else str(client)[:200], outcome, status_code, flows_due,
                  flows_triggered, None if detail is None else redact_text(detail)]
        with self._tx():
            hb_id = self._insert(
                "INSERT INTO heartbeat_requests (ts, client, outcome, status_code, flows_due, flows_triggered, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            row = self._q("SELECT " + ", ".join(_HB_COLS) + " FROM heartbeat_requests WHERE id = ?", [hb_id])[0]
        return _heartbeat(row)

    def prune_heartbeats(self, *, keep: int, before: dt.datetime) -> int:
        with self._tx():
            self._q(
                "DELETE FROM heartbeat_requests WHERE id <= (SELECT id FROM heartbeat_requests ORDER BY id DESC "
                "LIMIT 1 OFFSET ?) OR ts < ?",
                [max(int(keep), 0), _ts(as_utc(before))],
            )
            return int(self._q("SELECT changes()")[0][0])

    def list_heartbeats(self, *, limit: int = 100) -> list[HeartbeatRecord]:
        with self._lock:
            rows = self._q("SELECT " + ", ".join(_HB_COLS) + " FROM heartbeat_requests ORDER BY ts DESC, id DESC LIMIT ?",
                           [max(int(limit), 0)])
        return [_heartbeat(r) for r in rows]


def _heartbeat(row: Sequence[Any]) -> HeartbeatRecord:
    data = _row(_HB_COLS, row)
    assert data["ts"] is not None
    return HeartbeatRecord(**data)
