"""The schedule store interface: records, errors and the operations every backend provides.

Everything here is standard library only. Times are timezone-aware UTC ``datetime`` s.

Life of a scheduled run::

    create_flow ──▶ an interval flow is due at once (next_run_at = now); a cron flow at its
                    first cron instant after now
    claim_due (heartbeat) ──▶ run rows, next_run_at = now + interval, or the first cron instant
                              after now (one catch-up, no backfill: ticks missed while nothing
                              called the heartbeat give one run, not one each; a flow whose
                              previous run is still pending/in progress is skipped)
        mode=sync : runs created in_progress with the heartbeat's worker id and a lease
        mode=async: runs created pending ──▶ claim_pending_run (worker) ──▶ in_progress + lease
    start_run, renew_lease … finish_run ──▶ success | partial | failed (error + backtrace), flow.last_run_status
    expire_leases ──▶ in_progress past its lease: failed ("lease expired"), retried per policy

``partial``: the run went through its input and wrote it, but some records were
dead-lettered (below the flow's ``runtime.max_dead_letter_ratio``); it is final, like
``success``, and never retried — the dead letters are replayed after a fix.

Flow and run ids are never reused, not even after the newest rows are deleted: PostgreSQL
takes them from sequences, SQLite from ``AUTOINCREMENT`` (``sqlite_sequence``). The
scheduler still never relies on them alone to name an engine run (see
:func:`active_data_flow.handlers.scheduler.execute_run`), since a schedule database can be re-created.
"""

from __future__ import annotations

import abc
import datetime as dt
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "ACTIVE_RUN_STATUSES",
    "FINAL_RUN_STATUSES",
    "FLOW_NAME_RE",
    "MAX_RUN_INTERVAL",
    "RUN_STATUSES",
    "Claim",
    "DuplicateFlowError",
    "FlowRecord",
    "FlowValidationError",
    "HeartbeatRecord",
    "HeartbeatRetention",
    "NotFoundError",
    "RetryPolicy",
    "RunOutcome",
    "RunRecord",
    "ScheduleStore",
    "as_utc",
    "flow_problems",
    "flow_schedule",
    "next_cron_run",
    "schedule_problems",
    "utcnow",
]

RUN_STATUSES = ("pending", "in_progress", "success", "partial", "failed", "cancelled")
#: A flow with a run in one of these states is busy: the heartbeat skips it (no overlapping runs).
ACTIVE_RUN_STATUSES = ("pending", "in_progress")
#: What :meth:`ScheduleStore.finish_run` accepts.
FINAL_RUN_STATUSES = ("success", "partial", "failed", "cancelled")
#: Flow names (the same rule as a spec's ``name``).
FLOW_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: The largest run interval (a 32-bit integer column): about 68 years.
MAX_RUN_INTERVAL = 2**31 - 1


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """``value`` as an aware UTC datetime (a naive one is taken to be UTC already)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _iso(value: Any) -> Any:
    return value.isoformat().replace("+00:00", "Z") if isinstance(value, dt.datetime) else value


class FlowValidationError(ValueError):
    """A flow was refused before saving; ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class DuplicateFlowError(FlowValidationError):
    """The flow is valid but its name is taken (a conflict rather than a bad request)."""


class NotFoundError(LookupError):
    """No flow or run with that name / id."""


@dataclass
class FlowRecord:
    id: int
    name: str
    description: str
    enabled: bool
    configuration: dict[str, Any]  # the flow spec (JSON; JSONB on PostgreSQL)
    run_interval: int | None  # seconds, > 0; None for a cron flow
    last_run_at: dt.datetime | None = None
    last_run_status: str | None = None
    next_run_at: dt.datetime | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    schedule_cron: str | None = None  # a cron flow's expression (active_data_flow.cron); None: run_interval
    schedule_timezone: str | None = None  # the zone its expression is read in (None: UTC)

    def due(self, now: dt.datetime) -> bool:
        return self.enabled and self.next_run_at is not None and self.next_run_at <= now

    @property
    def schedule(self) -> dict[str, str] | None:
        """``{"cron": …, "timezone": …}`` of a cron flow, None for an interval flow."""
        if self.schedule_cron is None:
            return None
        return {"cron": self.schedule_cron, "timezone": self.schedule_timezone or "UTC"}

    @property
    def next_run(self) -> dt.datetime | None:
        """When the flow is due next, in its schedule's time zone (UTC for an interval flow, or
        when the zone cannot be read here); None while disabled or never scheduled."""
        if not self.enabled or self.next_run_at is None:
            return None
        if self.schedule_cron is None:
            return self.next_run_at
        from active_data_flow.cron import CronError, resolve_timezone

        try:
            return self.next_run_at.astimezone(resolve_timezone(self.schedule_timezone))
        except CronError:
            return self.next_run_at

    def to_dict(self) -> dict[str, Any]:
        out = {k: _iso(v) for k, v in asdict(self).items() if k not in ("schedule_cron", "schedule_timezone")}
        out["schedule"] = self.schedule
        nxt = self.next_run
        out["next_run"] = None if nxt is None else nxt.isoformat()
        return out


@dataclass
class RunRecord:
    id: int
    flow_id: int
    flow_name: str
    status: str  # one of RUN_STATUSES
    trigger: str  # heartbeat | manual | retry | cli | cron …
    attempt: int = 1
    created_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    error_message: str | None = None
    error_backtrace: str | None = None
    records_in: int | None = None
    records_out: int | None = None
    dead_letters: int | None = None
    worker_id: str | None = None
    lease_expires_at: dt.datetime | None = None
    engine_run_id: str | None = None  # the core engine's run id (checkpoints, dead letters)
    not_before: dt.datetime | None = None  # a pending retry waits until then (backoff)

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (None while not finished)."""
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        out = {k: _iso(v) for k, v in asdict(self).items()}
        out["duration"] = self.duration
        return out


@dataclass
class HeartbeatRecord:
    id: int
    ts: dt.datetime
    client: str | None
    outcome: str  # ok | unauthorized | forbidden | refused | error
    status_code: int
    flows_due: int = 0
    flows_triggered: int = 0
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: _iso(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class HeartbeatRetention:
    """How much of the heartbeat log is kept: the newest ``keep`` rows, and none older than
    ``max_age_days``. The log is pruned after every :attr:`every`-th row written (a tenth of
    ``keep``, at most 100), so it holds at most about ``keep + every`` rows whatever the rate
    of requests — a flood of refused heartbeats included."""

    keep: int = 10_000
    max_age_days: float = 30.0

    @property
    def every(self) -> int:
        return max(1, min(100, self.keep // 10))

    def cutoff(self, now: dt.datetime) -> dt.datetime:
        """Rows logged before this are pruned (an age beyond a century counts as a century)."""
        return now - dt.timedelta(days=min(max(float(self.max_age_days), 0.0), 36_500.0))


@dataclass
class RunOutcome:
    """What a finished run reports back (from the engine's RunSummary)."""

    status: str  # one of FINAL_RUN_STATUSES
    records_in: int | None = None
    records_out: int | None = None
    dead_letters: int | None = None
    error_message: str | None = None
    error_backtrace: str | None = None
    engine_run_id: str | None = None


@dataclass
class Claim:
    """What one claim of due flows did: ``runs`` created, and ``flows_due`` — the due flows
    it locked, including those ``skipped`` because a run of theirs is still pending or in
    progress (their next_run_at moves on one interval: no overlapping runs, no pile-up)."""

    runs: list[RunRecord] = field(default_factory=list)
    flows_due: int = 0
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RetryPolicy:
    """A run whose worker died (lease expired) is retried until ``max_attempts`` attempts,
    the next attempt due ``backoff_seconds * 2**(attempt-1)`` later."""

    max_attempts: int = 3
    backoff_seconds: float = 0.0

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait before the attempt after ``failed_attempt``."""
        return float(self.backoff_seconds) * 2.0 ** max(failed_attempt - 1, 0)


def _json_problem(value: Any) -> str | None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"configuration: must be plain JSON data ({exc})"
    return None


def schedule_problems(schedule: Any) -> list[str]:
    """Every problem of a flow's ``schedule`` (``{"cron": "0 6 * * 1-5", "timezone":
    "Europe/Berlin"}``; the zone defaults to UTC), each naming the field."""
    from active_data_flow.cron import CronError, parse_cron

    if not isinstance(schedule, Mapping):
        return [f"schedule: must be a mapping {{cron, timezone}}, got {type(schedule).__name__}"]
    unknown = sorted(str(k) for k in schedule if k not in ("cron", "timezone"))
    problems = [f"schedule: unknown key(s) {', '.join(unknown)} (allowed: cron, timezone)"] if unknown else []
    cron, timezone = schedule.get("cron"), schedule.get("timezone")
    if cron is None:
        return [*problems, "schedule.cron: is required (e.g. '0 6 * * 1-5')"]
    if timezone is not None and not isinstance(timezone, str):
        return [*problems, f"schedule.timezone: must be a string such as 'Europe/Berlin', got {timezone!r}"]
    if isinstance(timezone, str) and len(timezone) > 64:
        return [*problems, "schedule.timezone: must be at most 64 characters"]
    if isinstance(cron, str) and len(cron) > 200:
        return [*problems, "schedule.cron: must be at most 200 characters"]
    try:
        parse_cron(cron, timezone or "UTC")
    except CronError as exc:
        field_ = "schedule.timezone" if str(exc).startswith("timezone:") else "schedule.cron"
        text = str(exc).removeprefix("timezone: ")
        problems.append(f"{field_}: {text}")
    return problems


def flow_schedule(schedule: Mapping[str, Any]) -> tuple[str, str]:
    """The (cron, timezone) columns of a valid ``schedule`` (see :func:`schedule_problems`):
    the expression with its whitespace normalised, the zone as given (default ``UTC``)."""
    return " ".join(str(schedule["cron"]).split()), str(schedule.get("timezone") or "UTC")


def next_cron_run(cron: str, timezone: str | None, after: dt.datetime) -> dt.datetime:
    """The first instant of ``cron`` in ``timezone`` strictly after ``after``, in UTC."""
    from active_data_flow.cron import parse_cron

    return parse_cron(cron, timezone or "UTC").next_after(as_utc(after)).astimezone(dt.UTC)


def _interval_problems(run_interval: Any, schedule: Any, required: bool) -> list[str]:
    if run_interval is not None and schedule is not None:
        return ["run_interval: give either run_interval (seconds) or schedule {cron, timezone}, not both"]
    if schedule is not None:
        return schedule_problems(schedule)
    if run_interval is None:
        if not required:
            return []
        return ["run_interval: is required (seconds, a positive integer) unless a schedule {cron, timezone} is given"]
    if isinstance(run_interval, bool) or not isinstance(run_interval, int):
        return [f"run_interval: must be a positive integer (seconds), got {run_interval!r}"]
    if run_interval <= 0:
        return [f"run_interval: must be a positive integer (seconds), got {run_interval}"]
    if run_interval > MAX_RUN_INTERVAL:
        return [f"run_interval: must be at most {MAX_RUN_INTERVAL} seconds"]
    return []


def flow_problems(
    name: Any = None,
    configuration: Any = None,
    run_interval: Any = None,
    *,
    description: Any = None,
    enabled: Any = None,
    schedule: Any = None,
    check: Iterable[str] = ("name", "configuration", "run_interval"),
) -> list[str]:
    """Every problem of a flow's fields (those named in ``check``, plus ``description`` and
    ``enabled`` when not None); uniqueness of the name is the store's job.

    A flow runs every ``run_interval`` seconds or on a cron ``schedule`` — exactly one of
    them (checked when ``run_interval`` is in ``check``; a given ``schedule`` is always
    checked). The configuration is validated with :func:`active_data_flow.spec.parse_spec`; its
    own ``name`` defaults to the flow's name and must match it when given.
    """
    checks = set(check)
    problems: list[str] = []
    name_ok = isinstance(name, str) and bool(FLOW_NAME_RE.match(name))
    if "name" in checks:
        if name is None or (isinstance(name, str) and not name.strip()):
            problems.append("name: is required")
        elif not isinstance(name, str):
            problems.append(f"name: must be a string, got {type(name).__name__}")
        elif not name_ok:
            problems.append(f"name: {name!r} may contain only letters, digits, '_', '-' and '.' and must start with a letter or digit")
        elif len(name) > 200:
            problems.append("name: must be at most 200 characters")
    if "run_interval" in checks or schedule is not None:
        problems.extend(_interval_problems(run_interval, schedule, required="run_interval" in checks))
    if description is not None and not isinstance(description, str):
        problems.append(f"description: must be a string, got {type(description).__name__}")
    if enabled is not None and not isinstance(enabled, bool):
        problems.append(f"enabled: must be true or false, got {enabled!r}")
    if "configuration" in checks:
        problems.extend(_configuration_problems(name if name_ok else None, configuration))
    return list(dict.fromkeys(problems))


def _configuration_problems(name: str | None, configuration: Any) -> list[str]:
    from active_data_flow.errors import SpecError
    from active_data_flow.spec import parse_spec

    if configuration is None:
        return ["configuration: is required (the flow spec)"]
    if not isinstance(configuration, Mapping):
        return [f"configuration: must be a mapping (the flow spec), got {type(configuration).__name__}"]
    problems: list[str] = []
    json_problem = _json_problem(configuration)
    if json_problem:
        problems.append(json_problem)
    spec = dict(configuration)
    own = spec.get("name")
    if own is None:
        # An invalid flow name is reported once, above; check the rest with a stand-in.
        spec["name"] = name or "flow"
    elif name is not None and own != name:
        problems.append(f"configuration: its name {own!r} does not match the flow name {name!r} (leave it out or make them equal)")
    try:
        parse_spec(spec)
    except SpecError as exc:
        problems.extend(f"configuration: {p}" for p in exc.problems)
    except Exception as exc:  # a step module that fails to import in an unexpected way
        problems.append(f"configuration: {type(exc).__name__}: {exc}")
    return problems


class ScheduleStore(abc.ABC):
    """Operations of a schedule backend. All methods are safe to call from many processes
    at once; the claim methods never hand the same flow or run to two callers."""

    # -- flows ---------------------------------------------------------------------

    @abc.abstractmethod
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
        """Validate (name present and unique, exactly one of an interval — a positive integer —
        or a cron ``schedule`` ``{cron, timezone}`` that parses, the spec valid by
        active_data_flow.spec.parse_spec) and save; raise FlowValidationError with every problem. A new
        enabled interval flow is due at once, a cron flow at its first cron instant."""

    @abc.abstractmethod
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
        """Change a flow (validated like create; applied on its next run). A ``run_interval``
        turns a cron flow into an interval flow, a ``schedule`` an interval flow into a cron
        flow (due at its next cron instant); giving both is refused."""

    @abc.abstractmethod
    def get_flow(self, name: str) -> FlowRecord:
        """Raise NotFoundError when missing."""

    @abc.abstractmethod
    def list_flows(self) -> list[FlowRecord]: ...

    @abc.abstractmethod
    def delete_flow(self, name: str) -> None: ...

    @abc.abstractmethod
    def due_flows(self, now: dt.datetime | None = None) -> list[FlowRecord]:
        """Enabled flows whose next_run_at <= now (read only)."""

    # -- claiming --------------------------------------------------------------------

    def claim_due(
        self,
        now: dt.datetime | None = None,
        *,
        limit: int = 100,
        trigger: str = "heartbeat",
        worker_id: str | None = None,
        lease_seconds: float = 300.0,
    ) -> list[RunRecord]:
        """Claim up to ``limit`` due flows in one transaction (PostgreSQL: ``FOR UPDATE SKIP
        LOCKED``): set next_run_at = now + interval, or a cron flow's first instant after now
        (missed intervals or ticks give one run),
        last_run_at = now, and create one run each — ``in_progress`` leased to ``worker_id``
        when given (sync mode), else ``pending`` (async mode). A due flow that still has a
        pending or in-progress run gets no second one (its next_run_at moves on all the same:
        runs of one flow never overlap and never pile up)."""
        return self.claim(now, limit=limit, trigger=trigger, worker_id=worker_id, lease_seconds=lease_seconds).runs

    @abc.abstractmethod
    def claim(
        self,
        now: dt.datetime | None = None,
        *,
        limit: int = 100,
        trigger: str = "heartbeat",
        worker_id: str | None = None,
        lease_seconds: float = 300.0,
    ) -> Claim:
        """:meth:`claim_due`, also telling how many flows were due and which were skipped
        (see :class:`Claim`)."""

    @abc.abstractmethod
    def create_run(
        self, flow_name: str, *, trigger: str = "manual", worker_id: str | None = None, lease_seconds: float = 300.0
    ) -> RunRecord:
        """A run of one flow now, regardless of its schedule (trigger now)."""

    @abc.abstractmethod
    def claim_pending_run(self, worker_id: str, *, lease_seconds: float = 300.0, now: dt.datetime | None = None) -> RunRecord | None:
        """Take the oldest pending run (SKIP LOCKED): in_progress, leased to ``worker_id``."""

    @abc.abstractmethod
    def renew_lease(self, run_id: int, worker_id: str, *, lease_seconds: float = 300.0) -> bool:
        """Extend the lease; False when the run is no longer this worker's."""

    def renew_leases(self, run_ids: Iterable[int], worker_id: str, *, lease_seconds: float = 300.0) -> set[int]:
        """Extend several leases at once; returns the ids still held by ``worker_id``."""
        return {run_id for run_id in run_ids if self.renew_lease(run_id, worker_id, lease_seconds=lease_seconds)}

    @abc.abstractmethod
    def record_progress(self, run_id: int, worker_id: str, *, records_in: int, records_out: int,
                        dead_letters: int) -> bool:
        """Write the counts so far of a run in progress leased to ``worker_id`` (its
        ``records_in``, ``records_out`` and ``dead_letters`` until :meth:`finish_run` writes
        the final ones); False, and nothing written, when the run is no longer this worker's."""

    @abc.abstractmethod
    def start_run(
        self,
        run_id: int,
        worker_id: str,
        *,
        lease_seconds: float = 300.0,
        now: dt.datetime | None = None,
        engine_run_id: str | None = None,
    ) -> RunRecord | None:
        """Mark the start of execution (started_at = now, lease renewed, and ``engine_run_id``
        when given, so a run that dies can still be found in the state directory) of a run
        leased to ``worker_id``; None when the run is no longer this worker's (its lease
        expired). Doing it twice is harmless."""

    @abc.abstractmethod
    def finish_run(self, run_id: int, outcome: RunOutcome, *, worker_id: str | None = None) -> RunRecord:
        """Record the end of a run and the flow's last_run_status; returns the run as stored.

        Only a run still pending or in progress (and, with ``worker_id``, still leased to that
        worker) is changed: a run failed by an expired lease keeps that verdict. So finishing a
        run twice is harmless — the first outcome stays — and a write retried after a lost
        connection, which may have been committed, needs no special care."""

    @abc.abstractmethod
    def expire_leases(self, policy: RetryPolicy, now: dt.datetime | None = None) -> list[RunRecord]:
        """Mark in_progress runs whose lease expired as failed ("lease expired: worker … stopped
        renewing") and create a pending retry (attempt + 1, trigger "retry") while
        attempt < policy.max_attempts. Returns the runs marked failed."""

    # -- runs and heartbeat log ----------------------------------------------------------

    @abc.abstractmethod
    def get_run(self, run_id: int) -> RunRecord: ...

    @abc.abstractmethod
    def list_runs(
        self, *, flow: str | None = None, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[RunRecord]:
        """Newest first."""

    def log_heartbeat(
        self,
        *,
        client: str | None,
        outcome: str,
        status_code: int,
        flows_due: int = 0,
        flows_triggered: int = 0,
        detail: str | None = None,
        retention: HeartbeatRetention | None = None,
    ) -> HeartbeatRecord:
        """Append a row to the heartbeat log (``detail`` redacted) and keep the log within
        ``retention`` (default :class:`HeartbeatRetention`): every ``retention.every``-th row
        (by id, so all processes writing the log share the count) prunes it. A prune that
        fails is logged and left to the next one: the row is written either way."""
        record = self.insert_heartbeat(
            client=client, outcome=outcome, status_code=status_code, flows_due=flows_due,
            flows_triggered=flows_triggered, detail=detail,
        )
        retention = retention or HeartbeatRetention()
        if record.id % retention.every == 0:
            try:
                self.prune_heartbeats(keep=max(int(retention.keep), 1), before=retention.cutoff(record.ts))
            except Exception as exc:
                from active_data_flow.logs import get_logger, log_event

                log_event(get_logger("schedule"), "heartbeat log not pruned (the next prune retries)",
                          logging.WARNING, error=f"{type(exc).__name__}: {exc}")
        return record

    @abc.abstractmethod
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
        """Append one row to the heartbeat log (``detail`` redacted; use :meth:`log_heartbeat`)."""

    @abc.abstractmethod
    def prune_heartbeats(self, *, keep: int, before: dt.datetime) -> int:
        """Delete the heartbeat log rows beyond the newest ``keep`` (by id) and every row
        logged before ``before``; return how many were deleted."""

    @abc.abstractmethod
    def list_heartbeats(self, *, limit: int = 100) -> list[HeartbeatRecord]: ...

    def close(self) -> None:
        """Release connections."""
