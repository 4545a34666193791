"""The schedule store, written once: :class:`PortScheduleStore` over an execution port.

Every rule of the schedule lives here — validation of flows, due flows, claims (one
catch-up run, busy flows skipped and moved on), pending runs, leases and their renewal and
expiry with the retry policy, starts and outcomes, the heartbeat log and its pruning — as
SQL both SQLite and PostgreSQL read. What differs between them is the port's
:class:`~active_data_flow.handlers.schedule.dialects.Dialect`; how statements reach the database is the
port's (:mod:`active_data_flow.handlers.schedule.port`). The stores of the other modules are this one on a
port of their own: :class:`active_data_flow.handlers.schedule.sqlite_exec.ExecScheduleStore` (sqlite3, Spin
SQLite) and :class:`active_data_flow.handlers.schedule.sql.SqlScheduleStore` (SQLAlchemy).

Concurrency: every change is one write transaction of the port. On SQLite it begins with
``BEGIN IMMEDIATE``, so writers queue up (busy timeout) instead of racing; on PostgreSQL the
rows a transaction reads and then changes are locked, and claims skip locked rows, so any
number of heartbeats and workers claim disjoint flows and runs.

Standard library only (this runs inside a Spin component).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self

from active_data_flow.handlers.schedule.port import SchedulePort
from active_data_flow.handlers.schedule.store import (
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
    flow_schedule,
    next_cron_run,
    utcnow,
)
from active_data_flow.handlers.schedule.tables import FLOWS, HEARTBEATS, RUNS, TIME_COLUMNS, in_list, quote
from active_data_flow.redact import redact_text

__all__ = ["PortScheduleStore"]

Row = Sequence[Any]

_FLOW_SELECT = "SELECT " + ", ".join(f"f.{quote(c)}" for c in FLOWS.column_names) + " FROM data_flows f"
_RUN_SELECT = (
    "SELECT " + ", ".join(f"r.{quote(c)}" for c in RUNS.column_names)
    + ", f.name FROM data_flow_runs r JOIN data_flows f ON f.id = r.flow_id"
)
_HEARTBEAT_SELECT = "SELECT " + ", ".join(map(quote, HEARTBEATS.column_names)) + " FROM heartbeat_requests"
_NEW_RUN = (
    'INSERT INTO data_flow_runs (flow_id, status, "trigger", attempt, created_at, started_at, worker_id, '
    "lease_expires_at) VALUES (?, ?, ?, 1, ?, ?, ?, ?)"
)
_ACTIVE = in_list(ACTIVE_RUN_STATUSES)


def _seconds(value: float, what: str) -> dt.timedelta:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return dt.timedelta(seconds=float(value))


def _now(now: dt.datetime | None) -> dt.datetime:
    return utcnow() if now is None else as_utc(now)


def _iso(value: dt.datetime | None) -> str:
    return "?" if value is None else value.isoformat(timespec="seconds").replace("+00:00", "Z")


def _clean(text: str | None) -> str | None:
    return None if text is None else redact_text(text)


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


#: A cron flow whose schedule cannot be evaluated here (its time zone unknown to this host)
#: is tried again this much later, so it never blocks the heartbeat.
_UNREADABLE_SCHEDULE_RETRY = dt.timedelta(hours=1)


def _next_due(now: dt.datetime, interval: int | None, cron: str | None, timezone: str | None) -> dt.datetime:
    """When a flow claimed at ``now`` is due again: one interval on, or its first cron instant
    after ``now`` (ticks missed while no heartbeat came are not made up one by one)."""
    if cron is None:
        return now + dt.timedelta(seconds=int(interval or 0))
    from active_data_flow.cron import CronError

    try:
        return next_cron_run(cron, timezone, now)
    except CronError as exc:
        from active_data_flow.logs import get_logger, log_event

        log_event(get_logger("schedule"), "cron schedule not readable here; tried again in an hour",
                  logging.WARNING, cron=cron, timezone=timezone, error=str(exc))
        return now + _UNREADABLE_SCHEDULE_RETRY


class PortScheduleStore(ScheduleStore):
    """:class:`~active_data_flow.handlers.schedule.store.ScheduleStore` over a
    :class:`~active_data_flow.handlers.schedule.port.SchedulePort`. Thread-safe as far as its port is."""

    def __init__(self, port: SchedulePort) -> None:
        self.port = port

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.port!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.port.close()

    @property
    def dialect(self) -> str:
        """The name of the database: ``sqlite`` or ``postgresql``."""
        return self.port.dialect.name

    # -- rows ------------------------------------------------------------------------

    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(self.port.execute(sql, params))

    def _time(self, value: dt.datetime | None) -> Any:
        return self.port.dialect.bind_time(value)

    def _values(self, columns: Sequence[str], row: Row) -> dict[str, Any]:
        read = self.port.dialect.read_time
        return {c: (read(v) if c in TIME_COLUMNS else v) for c, v in zip(columns, row, strict=False)}

    def _flow(self, row: Row) -> FlowRecord:
        data = self._values(FLOWS.column_names, row)
        data["enabled"] = bool(data["enabled"])
        conf = data["configuration"]
        data["configuration"] = dict(json.loads(conf) if isinstance(conf, str | bytes) else conf or {})
        return FlowRecord(**data)

    def _run(self, row: Row) -> RunRecord:
        """A run from its columns (:data:`~active_data_flow.handlers.schedule.tables.RUNS`) and its flow's name."""
        count = len(RUNS.column_names)
        return RunRecord(flow_name=row[count], **self._values(RUNS.column_names, row[:count]))

    def _heartbeat(self, row: Row) -> HeartbeatRecord:
        return HeartbeatRecord(**self._values(HEARTBEATS.column_names, row))

    def _flow_row(self, name: str, *, lock: bool = False) -> FlowRecord | None:
        lock_sql = self.port.dialect.for_update if lock else ""
        rows = self._q(_FLOW_SELECT + " WHERE f.name = ?" + lock_sql, [name])
        return self._flow(rows[0]) if rows else None

    def _runs(self, run_ids: Sequence[int]) -> list[RunRecord]:
        if not run_ids:
            return []
        rows = self._q(_RUN_SELECT + f" WHERE r.id IN ({_marks(run_ids)}) ORDER BY r.id", list(run_ids))
        return [self._run(r) for r in rows]

    def _insert(self, sql: str, params: Sequence[Any]) -> int:
        return self.port.dialect.insert(self.port, sql, params)

    # -- flows ---------------------------------------------------------------------

    def create_flow(
        self,
        name: str,
        configuration: Mapping[str, Any],
        run_interval: int | None = None,
        *,
        description: str = "",
        enabled: bool = True,
        schedule: Mapping[str, Any] | None = None,
    ) -> FlowRecord:
        d = self.port.dialect
        description = "" if description is None else description
        enabled = True if enabled is None else enabled
        problems = flow_problems(name, configuration, run_interval, description=description, enabled=enabled,
                                 schedule=schedule)
        taken = f"name: a flow named {name!r} already exists"
        named = isinstance(name, str) and not any(p.startswith("name:") for p in problems)
        try:
            with self.port.transaction():
                if named and self._flow_row(name) is not None:
                    problems.insert(0, taken)
                if problems == [taken]:
                    raise DuplicateFlowError(problems)
                if problems:
                    raise FlowValidationError(problems)
                clock = utcnow()
                cron, timezone = flow_schedule(schedule) if schedule is not None else (None, None)
                # an interval flow is due at once, a cron flow at its first instant
                first = clock if cron is None else next_cron_run(cron, timezone, clock)
                now = self._time(clock)
                self._q(
                    "INSERT INTO data_flows (name, description, enabled, configuration, run_interval, next_run_at, "
                    f"created_at, updated_at, schedule_cron, schedule_timezone) VALUES (?, ?, ?, {d.json_param}, "
                    "?, ?, ?, ?, ?, ?)",
                    [name, description, d.bind_bool(enabled), json.dumps(dict(configuration)), run_interval,
                     self._time(first), now, now, cron, timezone],
                )
                flow = self._flow_row(name)
        except Exception as exc:
            # Another writer took the name between the check and the insert (PostgreSQL).
            if named and d.is_unique_violation(exc) and self._flow_row(name) is not None:
                raise DuplicateFlowError([taken]) from None
            raise
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
        schedule: Mapping[str, Any] | None = None,
    ) -> FlowRecord:
        d = self.port.dialect
        check = [k for k, v in (("configuration", configuration), ("run_interval", run_interval)) if v is not None]
        problems = flow_problems(name, configuration, run_interval, description=description, enabled=enabled,
                                 schedule=schedule, check=check)
        now = utcnow()
        with self.port.transaction():
            flow = self._flow_row(name, lock=True)
            if flow is None:
                raise NotFoundError(f"no flow named {name!r}")
            if problems:
                raise FlowValidationError(problems)
            sets: list[tuple[str, str, Any]] = [("updated_at", "?", self._time(now))]
            if configuration is not None:
                sets.append(("configuration", d.json_param, json.dumps(dict(configuration))))
            if description is not None:
                sets.append(("description", "?", description))
            if run_interval is not None:
                sets += [("run_interval", "?", run_interval), ("schedule_cron", "?", None),
                         ("schedule_timezone", "?", None)]
                if run_interval != flow.run_interval and flow.last_run_at is not None:  # counts from the last run
                    sets.append(("next_run_at", "?", self._time(flow.last_run_at + dt.timedelta(seconds=run_interval))))
            if schedule is not None:
                cron, timezone = flow_schedule(schedule)
                sets += [("run_interval", "?", None), ("schedule_cron", "?", cron), ("schedule_timezone", "?", timezone)]
                if (cron, timezone) != (flow.schedule_cron, flow.schedule_timezone):  # its next instant from now
                    sets.append(("next_run_at", "?", self._time(next_cron_run(cron, timezone, now))))
            if enabled is not None:
                sets.append(("enabled", "?", d.bind_bool(enabled)))
                if enabled and flow.next_run_at is None:
                    sets.append(("next_run_at", "?", self._time(now)))
            assignments = ", ".join(f"{column} = {mark}" for column, mark, _ in sets)
            self._q(f"UPDATE data_flows SET {assignments} WHERE id = ?", [*(v for _, _, v in sets), flow.id])
            updated = self._flow_row(name)
        assert updated is not None
        return updated

    def get_flow(self, name: str) -> FlowRecord:
        flow = self._flow_row(name)
        if flow is None:
            raise NotFoundError(f"no flow named {name!r}")
        return flow

    def list_flows(self) -> list[FlowRecord]:
        return [self._flow(r) for r in self._q(_FLOW_SELECT + " ORDER BY f.name")]

    def delete_flow(self, name: str) -> None:
        with self.port.transaction():
            flow = self._flow_row(name)
            if flow is None:
                raise NotFoundError(f"no flow named {name!r}")
            self._q("DELETE FROM data_flow_runs WHERE flow_id = ?", [flow.id])  # also without foreign keys
            self._q("DELETE FROM data_flows WHERE id = ?", [flow.id])

    def due_flows(self, now: dt.datetime | None = None) -> list[FlowRecord]:
        rows = self._q(_FLOW_SELECT + " WHERE f.enabled AND f.next_run_at <= ? ORDER BY f.next_run_at, f.id",
                       [self._time(_now(now))])
        return [self._flow(r) for r in rows]

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
        d = self.port.dialect
        with self.port.transaction():
            rows = d.claim_due(self.port, now=d.bind_time(now), limit=limit, status=status, trigger=trigger,
                               worker_id=worker_id, lease=d.bind_time(lease))
            if rows is None:
                return self._claim_one_by_one(now, limit, trigger, worker_id, lease, status)
            # The statement moved interval flows on; cron flows (still locked) move on here.
            for *_, flow_id, cron, timezone in rows:
                if cron is not None:
                    self._q("UPDATE data_flows SET next_run_at = ? WHERE id = ?",
                            [self._time(_next_due(now, None, cron, timezone)), flow_id])
        claim = Claim(flows_due=len(rows))
        for row in rows:
            row = row[:-3]  # less the flow's id and schedule
            if row[-1]:
                claim.skipped.append(row[-2])
            else:
                claim.runs.append(self._run(row[:-1]))
        return claim

    def _claim_one_by_one(
        self, now: dt.datetime, limit: int, trigger: str, worker_id: str | None, lease: dt.datetime | None, status: str
    ) -> Claim:
        """The claim of :meth:`claim`, statement by statement (inside its transaction)."""
        due = self._q(
            f"SELECT f.id, f.name, f.run_interval, f.schedule_cron, f.schedule_timezone, EXISTS (SELECT 1 "
            f"FROM data_flow_runs r WHERE r.flow_id = f.id "
            f"AND r.status IN ({_ACTIVE})) FROM data_flows f WHERE f.enabled AND f.next_run_at <= ? "
            "ORDER BY f.next_run_at LIMIT ?" + self.port.dialect.skip_locked("f"),
            [self._time(now), limit],
        )
        claim = Claim(flows_due=len(due))
        run_ids: list[int] = []
        for flow_id, name, interval, cron, timezone, busy in due:
            # one interval (or cron tick) past now: a flow that missed ten runs runs once, not ten times
            self._q("UPDATE data_flows SET next_run_at = ? WHERE id = ?",
                    [self._time(_next_due(now, interval, cron, timezone)), flow_id])
            if busy:  # its previous run is still pending or going: no second one
                claim.skipped.append(name)
                continue
            self._q("UPDATE data_flows SET last_run_at = ?, last_run_status = ? WHERE id = ?",
                    [self._time(now), status, flow_id])
            run_ids.append(self._insert(
                _NEW_RUN, [flow_id, status, trigger, self._time(now), self._time(now if worker_id else None), worker_id,
                           self._time(lease)],
            ))
        claim.runs = self._runs(run_ids)
        return claim

    def create_run(
        self, flow_name: str, *, trigger: str = "manual", worker_id: str | None = None, lease_seconds: float = 300.0
    ) -> RunRecord:
        now = utcnow()
        status = "in_progress" if worker_id else "pending"
        lease = now + _seconds(lease_seconds, "lease_seconds") if worker_id else None
        with self.port.transaction():
            flow = self._flow_row(flow_name)
            if flow is None:
                raise NotFoundError(f"no flow named {flow_name!r}")
            run_id = self._insert(
                _NEW_RUN, [flow.id, status, trigger, self._time(now), self._time(now if worker_id else None), worker_id,
                           self._time(lease)],
            )
            self._q("UPDATE data_flows SET last_run_at = ?, last_run_status = ? WHERE id = ?",
                    [self._time(now), status, flow.id])
            return self._runs([run_id])[0]

    def claim_pending_run(
        self, worker_id: str, *, lease_seconds: float = 300.0, now: dt.datetime | None = None
    ) -> RunRecord | None:
        now = _now(now)
        lease = now + _seconds(lease_seconds, "lease_seconds")
        d = self.port.dialect
        with self.port.transaction():
            rows = d.claim_pending(self.port, now=d.bind_time(now), worker_id=worker_id, lease=d.bind_time(lease))
            if rows is not None:
                return self._run(rows[0]) if rows else None
            # the oldest pending run past its backoff whose flow has no run going
            picked = self._q(
                "SELECT r.id, r.flow_id FROM data_flow_runs r WHERE r.status = 'pending' "
                "AND (r.not_before IS NULL OR r.not_before <= ?) AND NOT EXISTS (SELECT 1 FROM data_flow_runs o "
                "WHERE o.flow_id = r.flow_id AND o.status = 'in_progress') ORDER BY r.created_at, r.id LIMIT 1"
                + d.skip_locked("r"),
                [self._time(now)],
            )
            if not picked:
                return None
            run_id, flow_id = picked[0]
            self._q("UPDATE data_flow_runs SET status = 'in_progress', worker_id = ?, started_at = ?, "
                    "lease_expires_at = ? WHERE id = ?", [worker_id, self._time(now), self._time(lease), run_id])
            self._q("UPDATE data_flows SET last_run_status = 'in_progress' WHERE id = ?", [flow_id])
            return self._runs([int(run_id)])[0]

    def renew_lease(self, run_id: int, worker_id: str, *, lease_seconds: float = 300.0) -> bool:
        return run_id in self.renew_leases([run_id], worker_id, lease_seconds=lease_seconds)

    def renew_leases(self, run_ids: Iterable[int], worker_id: str, *, lease_seconds: float = 300.0) -> set[int]:
        ids = sorted(set(run_ids))
        if not ids:
            return set()
        lease = utcnow() + _seconds(lease_seconds, "lease_seconds")
        where = f"id IN ({_marks(ids)}) AND worker_id = ? AND status = 'in_progress'"
        with self.port.transaction():
            rows = self._q(f"SELECT id FROM data_flow_runs WHERE {where}" + self.port.dialect.for_update, [*ids, worker_id])
            held = {int(r[0]) for r in rows}
            if held:
                self._q(f"UPDATE data_flow_runs SET lease_expires_at = ? WHERE {where}",
                        [self._time(lease), *ids, worker_id])
        return held

    def record_progress(self, run_id: int, worker_id: str, *, records_in: int, records_out: int,
                        dead_letters: int) -> bool:
        counts = [int(records_in), int(records_out), int(dead_letters)]
        with self.port.transaction():
            mine = self._q("SELECT id FROM data_flow_runs WHERE id = ? AND worker_id = ? AND status = 'in_progress'"
                           + self.port.dialect.for_update, [run_id, worker_id])
            if not mine:
                return False
            self._q("UPDATE data_flow_runs SET records_in = ?, records_out = ?, dead_letters = ? WHERE id = ?",
                    [*counts, run_id])
        return True

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
        sets, params = "started_at = ?, lease_expires_at = ?", [self._time(now), self._time(lease)]
        if engine_run_id is not None:  # else keep the one recorded before
            sets, params = sets + ", engine_run_id = ?", [*params, engine_run_id]
        with self.port.transaction():
            mine = self._q("SELECT id FROM data_flow_runs WHERE id = ? AND worker_id = ? AND status = 'in_progress'"
                           + self.port.dialect.for_update, [run_id, worker_id])
            if not mine:
                return None
            self._q(f"UPDATE data_flow_runs SET {sets} WHERE id = ?", [*params, run_id])
            return self._runs([run_id])[0]

    def finish_run(self, run_id: int, outcome: RunOutcome, *, worker_id: str | None = None) -> RunRecord:
        if outcome.status not in FINAL_RUN_STATUSES:
            raise ValueError(f"a run finishes as one of {', '.join(FINAL_RUN_STATUSES)}, not {outcome.status!r}")
        now = self._time(utcnow())
        with self.port.transaction():
            rows = self._q("SELECT flow_id, status, worker_id FROM data_flow_runs WHERE id = ?"
                           + self.port.dialect.for_update, [run_id])
            if not rows:
                raise NotFoundError(f"no run with id {run_id}")
            flow_id, status, holder = rows[0]
            # A run already finished (this very outcome, when a write is retried) or failed by
            # an expired lease (and maybe retried) keeps that verdict.
            if status in ACTIVE_RUN_STATUSES and worker_id in (None, holder):
                sets = ("status = ?, ended_at = ?, started_at = COALESCE(started_at, ?), error_message = ?, "
                        "error_backtrace = ?, records_in = ?, records_out = ?, dead_letters = ?, "
                        "lease_expires_at = NULL")
                params = [outcome.status, now, now, _clean(outcome.error_message), _clean(outcome.error_backtrace),
                          outcome.records_in, outcome.records_out, outcome.dead_letters]
                if outcome.engine_run_id is not None:  # else keep the one start_run recorded
                    sets, params = sets + ", engine_run_id = ?", [*params, outcome.engine_run_id]
                self._q(f"UPDATE data_flow_runs SET {sets} WHERE id = ?", [*params, run_id])
                self._q("UPDATE data_flows SET last_run_status = ? WHERE id = ?", [outcome.status, flow_id])
            return self._runs([run_id])[0]

    def expire_leases(self, policy: RetryPolicy, now: dt.datetime | None = None) -> list[RunRecord]:
        now = _now(now)
        expired: list[int] = []
        with self.port.transaction():
            rows = self._q(
                "SELECT r.id, r.flow_id, r.attempt, r.lease_expires_at, r.worker_id FROM data_flow_runs r "
                "WHERE r.status = 'in_progress' AND r.lease_expires_at < ? ORDER BY r.id"
                + self.port.dialect.skip_locked("r"),
                [self._time(now)],
            )
            for run_id, flow_id, attempt, lease_at, worker in rows:
                expired.append(int(run_id))
                self._expire(int(run_id), flow_id, int(attempt), lease_at, worker, policy, now)
            return self._runs(expired)

    def _expire(
        self, run_id: int, flow_id: int, attempt: int, lease_at: Any, worker: str | None, policy: RetryPolicy,
        now: dt.datetime,
    ) -> None:
        """Fail one run whose lease expired, and create its retry while attempts are left."""
        message = f"lease expired at {_iso(self.port.dialect.read_time(lease_at))}: worker {worker} stopped renewing"
        retry = attempt < policy.max_attempts
        if retry:
            delay = policy.delay(attempt)
            retry_id = self._insert(
                'INSERT INTO data_flow_runs (flow_id, status, "trigger", attempt, created_at, not_before) '
                "VALUES (?, 'pending', 'retry', ?, ?, ?)",
                [flow_id, attempt + 1, self._time(now),
                 self._time(now + dt.timedelta(seconds=delay)) if delay > 0 else None],
            )
            message += f"; retried as run {retry_id} (attempt {attempt + 1} of {policy.max_attempts})"
        else:
            message += f"; not retried ({attempt} of {policy.max_attempts} attempts used)"
        self._q(
            "UPDATE data_flow_runs SET status = 'failed', ended_at = ?, started_at = COALESCE(started_at, ?), "
            "error_message = ?, lease_expires_at = NULL WHERE id = ?",
            [self._time(now), self._time(now), message, run_id],
        )
        self._q("UPDATE data_flows SET last_run_status = ? WHERE id = ?", ["pending" if retry else "failed", flow_id])

    # -- runs and heartbeat log ----------------------------------------------------------

    def get_run(self, run_id: int) -> RunRecord:
        runs = self._runs([run_id])
        if not runs:
            raise NotFoundError(f"no run with id {run_id}")
        return runs[0]

    def list_runs(
        self, *, flow: str | None = None, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[RunRecord]:
        if status is not None and status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}; one of {', '.join(RUN_STATUSES)}")
        where: list[str] = []
        params: list[Any] = []
        if flow is not None:
            where.append("f.name = ?")
            params.append(flow)
        if status is not None:
            where.append("r.status = ?")
            params.append(status)
        sql = _RUN_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY r.created_at DESC, r.id DESC LIMIT ? OFFSET ?"
        return [self._run(r) for r in self._q(sql, [*params, max(int(limit), 0), max(int(offset), 0)])]

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
        values = [self._time(utcnow()), None if client is None else str(client)[:200], outcome, status_code, flows_due,
                  flows_triggered, _clean(detail)]
        with self.port.transaction():
            heartbeat_id = self._insert(
                "INSERT INTO heartbeat_requests (ts, client, outcome, status_code, flows_due, flows_triggered, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            return self._heartbeat(self._q(_HEARTBEAT_SELECT + " WHERE id = ?", [heartbeat_id])[0])

    def prune_heartbeats(self, *, keep: int, before: dt.datetime) -> int:
        # the id of the newest row that is one too many (NULL while there are no more than keep)
        with self.port.transaction():
            return self.port.dialect.delete(
                self.port,
                "DELETE FROM heartbeat_requests WHERE id <= (SELECT id FROM heartbeat_requests ORDER BY id DESC "
                "LIMIT 1 OFFSET ?) OR ts < ?",
                [max(int(keep), 0), self._time(as_utc(before))],
            )

    def list_heartbeats(self, *, limit: int = 100) -> list[HeartbeatRecord]:
        rows = self._q(_HEARTBEAT_SELECT + " ORDER BY ts DESC, id DESC LIMIT ?", [max(int(limit), 0)])
        return [self._heartbeat(r) for r in rows]
