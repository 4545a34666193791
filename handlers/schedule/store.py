"""The schedule store interface: records, errors and the operations every backend provides.

Everything here is standard library only. Times are timezone-aware UTC ``datetime`` s.

Life of a scheduled run::

    create_flow ──▶ flow due at once (next_run_at = now)
    claim_due (heartbeat) ──▶ run rows, next_run_at = now + interval (one catch-up, no backfill)
        mode=sync : runs created in_progress with the heartbeat's worker id and a lease
        mode=async: runs created pending ──▶ claim_pending_run (worker) ──▶ in_progress + lease
    renew_lease … finish_run ──▶ success | failed (error + backtrace), flow.last_run_status
    expire_leases ──▶ in_progress past its lease: failed ("lease expired"), retried per policy
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "RUN_STATUSES",
    "FlowRecord",
    "FlowValidationError",
    "HeartbeatRecord",
    "NotFoundError",
    "RetryPolicy",
    "RunOutcome",
    "RunRecord",
    "ScheduleStore",
    "utcnow",
]

RUN_STATUSES = ("pending", "in_progress", "success", "failed", "cancelled")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(value: Any) -> Any:
    return value.isoformat().replace("+00:00", "Z") if isinstance(value, dt.datetime) else value


class FlowValidationError(ValueError):
    """A flow was refused before saving; ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class NotFoundError(LookupError):
    """No flow or run with that name / id."""


@dataclass
class FlowRecord:
    id: int
    name: str
    description: str
    enabled: bool
    configuration: dict[str, Any]  # the flow spec (JSON; JSONB on PostgreSQL)
    run_interval: int  # seconds, > 0
    last_run_at: dt.datetime | None = None
    last_run_status: str | None = None
    next_run_at: dt.datetime | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    def due(self, now: dt.datetime) -> bool:
        return self.enabled and self.next_run_at is not None and self.next_run_at <= now

    def to_dict(self) -> dict[str, Any]:
        return {k: _iso(v) for k, v in asdict(self).items()}


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


@dataclass
class RunOutcome:
    """What a finished run reports back (from the engine's RunSummary)."""

    status: str  # success | failed | cancelled
    records_in: int | None = None
    records_out: int | None = None
    dead_letters: int | None = None
    error_message: str | None = None
    error_backtrace: str | None = None
    engine_run_id: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """A run whose worker died (lease expired) is retried until ``max_attempts`` attempts,
    the next attempt due ``backoff_seconds * 2**(attempt-1)`` later."""

    max_attempts: int = 3
    backoff_seconds: float = 0.0


class ScheduleStore(abc.ABC):
    """Operations of a schedule backend. All methods are safe to call from many processes
    at once; the claim methods never hand the same flow or run to two callers."""

    # -- flows ---------------------------------------------------------------------

    @abc.abstractmethod
    def create_flow(
        self,
        name: str,
        configuration: Mapping[str, Any],
        run_interval: int,
        *,
        description: str = "",
        enabled: bool = True,
    ) -> FlowRecord:
        """Validate (name present and unique, interval a positive integer, the spec valid by
        core.spec.parse_spec) and save; raise FlowValidationError with every problem. A new
        enabled flow is due at once."""

    @abc.abstractmethod
    def update_flow(
        self,
        name: str,
        *,
        configuration: Mapping[str, Any] | None = None,
        run_interval: int | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> FlowRecord:
        """Change a flow (validated like create; applied on its next run)."""

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

    @abc.abstractmethod
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
        LOCKED``): set next_run_at = now + interval (missed intervals give one run),
        last_run_at = now, and create one run each — ``in_progress`` leased to ``worker_id``
        when given (sync mode), else ``pending`` (async mode)."""

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

    @abc.abstractmethod
    def finish_run(self, run_id: int, outcome: RunOutcome) -> RunRecord:
        """Record the end of a run and the flow's last_run_status."""

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

    @abc.abstractmethod
    def log_heartbeat(
        self,
        *,
        client: str | None,
        outcome: str,
        status_code: int,
        flows_due: int = 0,
        flows_triggered: int = 0,
        detail: str | None = None,
    ) -> HeartbeatRecord: ...

    @abc.abstractmethod
    def list_heartbeats(self, *, limit: int = 100) -> list[HeartbeatRecord]: ...

    def close(self) -> None:
        """Release connections."""
