"""Transport-neutral scheduling: what every trigger of the heartbeat runtime calls.

The HTTP heartbeat (:mod:`active_data_flow.handlers.http`), ``adf heartbeat`` from cron, and later Lambda's
EventBridge schedule and Spin's cron trigger all call :func:`tick`; ``adf worker`` runs a
:class:`Worker`; "trigger now" (API, CLI) calls :func:`trigger_run`. They share one path
from a claimed run to the engine, :func:`execute_run`; a host that resolves and runs flows
its own way (:func:`active_data_flow.handlers.invoke.cron.host_executor`) gives it its :data:`FlowRunner`.

A tick::

    expire_leases  ─▶ runs whose worker stopped renewing: failed, retried per the policy
    claim          ─▶ due flows locked (SKIP LOCKED), next_run_at moved on, one run each
    mode=sync      ─▶ each run executed here, one after another (a failure never stops the rest),
                      then pending runs (retries, "trigger now" without waiting) within the claim limit
    mode=async     ─▶ runs left pending for ``adf worker`` processes

While runs execute (and while claimed runs wait their turn), a background thread renews
their leases at once and then every ``lease_seconds / 3``;
a process that dies stops renewing, and the next tick or worker poll finds the expired
lease, marks the run failed ("lease expired at …: worker … stopped renewing") and creates
the retry, which resumes from the flow's checkpoint (nothing lost).

The writes a run makes to the schedule — its start, its lease renewals and above all its
outcome — outlive a dropped database connection (a restarted PostgreSQL, a terminated
backend): they are retried while the database cannot be reached (:func:`durable_write`,
at most ``lease_seconds``). They are safe to repeat: a finished run keeps its first
outcome, and a run whose lease was taken over is never overwritten. An outcome that still
cannot be written is logged in full and the run left to its lease, as for a worker that
died — never replaced by a made-up failure.

Standard library only at module level (this runs inside a Spin component).

Example::

    result = tick(store, settings, mode="async")     # HeartbeatResult
    result.to_dict()   # {"flows_due": 3, "flows_triggered": 3, "run_ids": [7, 8, 9], "timestamp": "…Z"}
    Worker(store, settings).run_forever()            # until SIGTERM / SIGINT
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from active_data_flow import telemetry
from active_data_flow.handlers.schedule.leases import LeaseKeeper, durable_write
from active_data_flow.handlers.schedule.progress import ProgressKeeper
from active_data_flow.handlers.schedule.store import (
    FlowRecord,
    RetryPolicy,
    RunOutcome,
    RunRecord,
    ScheduleStore,
    as_utc,
    utcnow,
)
from active_data_flow.handlers.settings import Settings
from active_data_flow.ids import new_id
from active_data_flow.logs import get_logger, log_event
from active_data_flow.redact import redact_text
from active_data_flow.retry import RetriesExhausted

if TYPE_CHECKING:
    from active_data_flow.loader import LoadedFlow

__all__ = [
    "MODES",
    "Executor",
    "FlowRunner",
    "HeartbeatResult",
    "StopEvent",
    "Worker",
    "default_worker_id",
    "durable_write",
    "engine_run_id",
    "execute_run",
    "load_scheduled_flow",
    "outcome_from_exception",
    "outcome_from_summary",
    "record_outcome",
    "retry_policy",
    "run_on_runtime",
    "scheduled_spec",
    "tick",
    "trigger_run",
]

MODES = ("sync", "async")
#: The schedule status of each engine status (anything else: ``failed``). A stopped
#: unbounded run did what it had to; its checkpoint carries on at the next run.
OUTCOME_STATUS = {"success": "success", "partial": "partial", "stopped": "success"}
#: How many dead-letter reasons a partial run's message names.
_REASONS_SHOWN = 3

_log = get_logger("scheduler")

#: Runs one claimed run to its end: ``executor(store, run, settings, worker_id=...)``.
Executor = Callable[..., RunRecord]
#: Runs a scheduled flow the way a host does: ``runner(flow, run_id, settings)`` — the flow
#: as the store holds it now (:func:`scheduled_spec` is its spec), the engine run id to run
#: under, the heartbeat's settings — and returns the engine's
#: :class:`~active_data_flow.engine.RunSummary`; it may raise (the run is then recorded failed).
#: A runner of :func:`execute_run` with ``threads`` is also given ``on_progress=`` (the engine's
#: progress callback, which writes the run's counts so far to the store).
FlowRunner = Callable[..., Any]


class StopEvent(Protocol):
    """``threading.Event`` or ``multiprocessing.Event``."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...


def _iso(value: dt.datetime) -> str:
    return as_utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def default_worker_id(role: str | None = None) -> str:
    """``<hostname>:<pid>``, with ``/<role>-<random>`` for a heartbeat or a manual run."""
    hostname = getattr(socket, "gethostname", None)  # absent on WASI (inside a Spin component)
    base = f"{hostname() if hostname else 'wasm'}:{os.getpid()}"
    return f"{base}/{role}-{new_id(8)}" if role else base


def retry_policy(settings: Settings) -> RetryPolicy:
    """The retry policy of runs whose worker died (ADF_MAX_ATTEMPTS, ADF_RETRY_BACKOFF_SECONDS)."""
    return RetryPolicy(max_attempts=settings.max_attempts, backoff_seconds=settings.retry_backoff_seconds)


def engine_run_id(run: RunRecord) -> str:
    """The engine run id a schedule run asks for: ``run-<id>-<random>``.

    The schedule's ids are never reused, but a schedule database can be deleted and made
    again while the state directory stays: the random part keeps a new run from naming an
    old run's directory (its summary, its dead letters)."""
    return f"run-{run.id}-{new_id(8)}"


@dataclass
class HeartbeatResult:
    """What one tick did. ``flows_due``: due flows it found (including those skipped because
    their previous run is still going); ``flows_triggered``: runs it created."""

    flows_due: int
    flows_triggered: int
    run_ids: list[int]
    timestamp: str
    mode: str = "sync"
    #: the runs created (sync mode: as they finished, then the pending runs it also ran)
    runs: list[RunRecord] = field(default_factory=list)
    #: runs this tick found with an expired lease and marked failed
    expired_run_ids: list[int] = field(default_factory=list)
    #: sync mode: pending runs (retries, "trigger now" without waiting) this tick also ran
    pending_run_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The heartbeat response body."""
        return {
            "flows_due": self.flows_due,
            "flows_triggered": self.flows_triggered,
            "run_ids": list(self.run_ids),
            "timestamp": self.timestamp,
        }


# --------------------------------------------------------------------------- one run


def outcome_from_exception(exc: BaseException) -> RunOutcome:
    """The record of a run that raised instead of finishing (an invalid spec, a missing flow)."""
    return RunOutcome(
        status="failed",
        error_message=redact_text(f"{type(exc).__name__}: {exc}"),
        error_backtrace=redact_text("".join(traceback.format_exception(exc))),
    )


def _dead_letter_line(summary: Any) -> str:
    """The dead-letter count and its top reasons on one line (:func:`active_data_flow.outcome.describe_dead_letters`)."""
    from active_data_flow.outcome import describe_dead_letters

    reasons = list(getattr(summary, "dead_letter_reasons", None) or [])
    line = describe_dead_letters(int(summary.dead_letters or 0), reasons[:_REASONS_SHOWN])
    return line + ("; …" if len(reasons) > _REASONS_SHOWN else "")


def outcome_from_summary(summary: Any) -> RunOutcome:
    """The schedule's record of an engine run (a :class:`active_data_flow.engine.RunSummary`):
    ``success`` and ``stopped`` are a success, ``partial`` is partial — its message names
    the top dead-letter reasons — and anything else failed, with the error and backtrace."""
    status = OUTCOME_STATUS.get(summary.status, "failed")
    outcome = RunOutcome(
        status=status, records_in=summary.records_in, records_out=summary.records_out,
        dead_letters=summary.dead_letters, engine_run_id=summary.run_id,
    )
    if status == "partial":
        outcome.error_message = redact_text(_dead_letter_line(summary))
    elif status == "failed":
        message = summary.error or "the flow failed"
        if summary.error_type and not message.startswith(summary.error_type):
            message = f"{summary.error_type}: {message}"
        outcome.error_message = redact_text(message)
        outcome.error_backtrace = redact_text(summary.backtrace) if summary.backtrace else None
    return outcome


def scheduled_spec(flow: FlowRecord) -> dict[str, Any]:
    """The spec of a scheduled flow as the schedule store holds it: its configuration, named
    after the flow unless the configuration names itself."""
    spec = dict(flow.configuration)
    spec.setdefault("name", flow.name)
    return spec


def _load(flow: FlowRecord, settings: Settings, *, use_store: bool) -> LoadedFlow:
    from active_data_flow.loader import load_flow

    state_layer = ("default", {"runtime": {"state_dir": settings.state_dir}}, "heartbeat settings (ADF_STATE_DIR)")
    return load_flow(scheduled_spec(flow), extra=[state_layer], use_store=use_store)


def load_scheduled_flow(
    store: ScheduleStore, flow_name: str, settings: Settings, *, use_store: bool = True
) -> LoadedFlow:
    """The flow ``flow_name`` as the schedule store holds it now, resolved through every
    configuration layer (:func:`active_data_flow.loader.load_flow`) and validated: what a run of it
    executes, and what its dead letters are replayed through.

    Its ``runtime.state_dir`` is the heartbeat's state directory (``settings.state_dir``)
    unless the flow's own configuration names another one: checkpoints, run directories,
    dead letters and the key-value store live there. The flow's state store is opened unless
    ``use_store`` is false; closing it is the caller's part. Raises
    :class:`~active_data_flow.handlers.schedule.store.NotFoundError` for an unknown flow and
    :class:`active_data_flow.errors.SpecError` for a configuration that is no longer valid.

    Example::

        loaded = load_scheduled_flow(store, "orders", settings)
        try:
            summary = active_data_flow.runtime.run(loaded.spec, state_dir=settings.state_dir, store=loaded.store)
        finally:
            if loaded.store is not None:
                loaded.store.close()
    """
    return _load(store.get_flow(flow_name), settings, use_store=use_store)


def run_on_runtime(flow: FlowRecord, run_id: str, settings: Settings, *, on_progress: Any = None) -> Any:
    """The heartbeat's :data:`FlowRunner`: the flow resolved through every configuration
    layer as :func:`load_scheduled_flow` does, run on its runtime (:func:`active_data_flow.runtime.run`)
    with its state store, which is closed afterwards; ``on_progress`` is the engine's
    progress callback."""
    from active_data_flow.runtime import run as run_on

    loaded = _load(flow, settings, use_store=True)
    try:
        return run_on(loaded.spec, state_dir=settings.state_dir, run_id=run_id, store=loaded.store,
                      on_progress=on_progress)
    finally:
        if loaded.store is not None:
            try:
                loaded.store.close()
            except Exception as exc:
                log_event(_log, "closing the flow's state store failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}")


def execute_run(
    store: ScheduleStore,
    run: RunRecord,
    settings: Settings,
    *,
    worker_id: str,
    runner: FlowRunner = run_on_runtime,
    threads: bool = True,
) -> RunRecord:
    """Execute a run leased to ``worker_id`` and record how it ended: the one path from a
    claimed run to a flow run, whatever the host.

    The run starts with its lease (engine run id :func:`engine_run_id`, recorded when the
    run starts — the engine may instead resume the flow's unfinished checkpoint under its
    own id). The flow's configuration is read from the store now (an update is applied on
    the next run) and handed to ``runner`` — the host's layers and the host's way of running
    a flow; by default :func:`run_on_runtime`, the heartbeat's. With ``threads`` the lease
    is renewed in the background while the flow runs and its counts so far are written to
    its row every second (:class:`~active_data_flow.handlers.schedule.progress.ProgressKeeper`);
    without (a host that has no threads, such as a WebAssembly component) the run must end
    within its lease and its counts come with its outcome. A failure — a
    failed summary, or an exception while loading — is recorded as ``failed`` with its
    error and backtrace (secrets redacted); it is never raised. The outcome is written by
    :func:`record_outcome`. Returns the finished run (or the run as it stands when its lease
    was lost before it started, or when its outcome could not be written).
    """
    run_id = engine_run_id(run)
    started = durable_write(
        lambda: store.start_run(run.id, worker_id, lease_seconds=settings.lease_seconds, engine_run_id=run_id),
        what=f"starting run {run.id}", window_s=settings.lease_seconds,
    )
    if started is None:
        log_event(_log, "run not started: its lease is no longer ours", logging.WARNING, run=run.id, worker_id=worker_id)
        return store.get_run(run.id)
    log_event(_log, "run started", run=run.id, flow=run.flow_name, attempt=run.attempt, worker_id=worker_id,
              engine_run_id=run_id)
    progress = ProgressKeeper(store, run.id, worker_id, enabled=threads)
    # with threads, the runner also gets the engine's progress callback: the counts so far
    # are written to the run's row while it runs
    extra: dict[str, Any] = {"on_progress": progress.update} if threads else {}
    with LeaseKeeper(store, worker_id, settings.lease_seconds, [run.id] if threads else []), progress:
        try:
            summary = runner(store.get_flow(run.flow_name), run_id, settings, **extra)
        except Exception as exc:  # an invalid spec, a missing flow, a runtime that raised
            outcome = outcome_from_exception(exc)
            telemetry.record_run_not_started(run.flow_name)
        else:
            outcome = outcome_from_summary(summary)
    return record_outcome(store, started, outcome, settings, worker_id=worker_id)


def record_outcome(
    store: ScheduleStore, run: RunRecord, outcome: RunOutcome, settings: Settings, *, worker_id: str | None = None
) -> RunRecord:
    """Write how ``run`` ended, through a dropped connection (:func:`durable_write`, at most
    ``settings.lease_seconds``); returns the run as recorded.

    Safe to repeat: the store keeps a finished run's first outcome and, with ``worker_id``,
    changes a run only while it is leased to that worker. When the database stays away for
    the whole window the outcome is logged at CRITICAL level with the run's counts — the
    record of what the run did — and the run is returned as it stands, still in progress:
    as for a worker that died, its lease runs out and it is failed ("lease expired") and
    retried. It is never recorded ``failed`` in place of the outcome it had.
    """
    try:
        finished = durable_write(
            lambda: store.finish_run(run.id, outcome, worker_id=worker_id),
            what=f"recording the outcome of run {run.id}", window_s=settings.lease_seconds,
        )
    except RetriesExhausted as exc:
        log_event(
            _log, "run outcome not recorded: the schedule database stayed unreachable; the run is left to its lease",
            logging.CRITICAL, run=run.id, flow=run.flow_name, status=outcome.status, records_in=outcome.records_in,
            records_out=outcome.records_out, dead_letters=outcome.dead_letters, engine_run_id=outcome.engine_run_id,
            worker_id=worker_id, outcome_error=outcome.error_message, error=redact_text(str(exc)),
        )
        return run
    if finished.status != outcome.status:
        log_event(_log, "run outcome not applied: the run was already finished or its lease taken over",
                  logging.WARNING, run=run.id, flow=run.flow_name, status=outcome.status, recorded=finished.status)
    level = logging.INFO if finished.status == "success" else logging.WARNING if finished.status == "partial" else logging.ERROR
    log_event(
        _log, "run finished", level, run=run.id, flow=run.flow_name, status=finished.status,
        duration_s=finished.duration, records_in=finished.records_in, records_out=finished.records_out,
        dead_letters=finished.dead_letters, error=finished.error_message,
    )
    return finished


def _record_crash(store: ScheduleStore, run: RunRecord, exc: BaseException) -> RunRecord:
    """An executor raised instead of recording the run: record it failed here."""
    log_event(_log, "executor raised", logging.ERROR, run=run.id, error=redact_text(f"{type(exc).__name__}: {exc}"))
    try:
        return store.finish_run(run.id, outcome_from_exception(exc))
    except Exception as again:
        log_event(_log, "could not record the failed run; its lease will expire", logging.ERROR, run=run.id,
                  error=redact_text(f"{type(again).__name__}: {again}"))
        return run


# --------------------------------------------------------------------------- triggers


def _due_times(store: ScheduleStore, now: dt.datetime) -> dict[str, dt.datetime] | None:
    """When each due flow became due (its ``next_run_at`` before the claim moves it on), for
    the claim latency — only when something measures it (:func:`active_data_flow.telemetry.observing`)."""
    if not telemetry.observing():
        return None
    try:
        return {f.name: as_utc(f.next_run_at) for f in store.due_flows(now) if f.next_run_at is not None}
    except Exception as exc:  # a measurement never stops a heartbeat
        log_event(_log, "due times not read; claim latency not measured", logging.WARNING,
                  error=redact_text(f"{type(exc).__name__}: {exc}"))
        return None


def _measure_claims(runs: list[RunRecord], claimed_at: dt.datetime, due_at: dict[str, dt.datetime] | None = None) -> None:
    """Report each claimed run's latency: from its flow's due time (``due_at``), or for a pending
    run (a retry, a queued "run now") from when it could first be claimed."""
    if not runs or not telemetry.observing():
        return
    for run in runs:
        if due_at is not None:
            since = due_at.get(run.flow_name)
        else:
            since = max((as_utc(t) for t in (run.created_at, run.not_before) if t is not None), default=None)
        if since is not None:
            telemetry.record_claims(run.trigger, [(as_utc(claimed_at) - since).total_seconds()])


def tick(
    store: ScheduleStore,
    settings: Settings,
    *,
    trigger: str = "heartbeat",
    mode: str | None = None,
    now: dt.datetime | None = None,
    executor: Executor | None = None,
) -> HeartbeatResult:
    """One heartbeat: expire dead workers' leases, claim due flows (at most
    ``settings.claim_limit``), then run them here (``sync``, the default from
    ``settings.heartbeat_mode``) or leave them pending for workers (``async``). In sync
    mode the heartbeat is the worker, so it then also runs pending runs (retries, runs
    triggered without waiting) up to the rest of the claim limit.

    ``now`` (default: the clock) is the time the schedule is judged at; ``executor``
    (default :func:`execute_run`) runs each claimed run in sync mode.
    """
    mode = mode or settings.heartbeat_mode
    if mode not in MODES:
        raise ValueError(f"mode must be 'sync' or 'async', got {mode!r}")
    fixed = now is not None
    now = utcnow() if now is None else as_utc(now)

    def claim_time() -> dt.datetime:
        # a claim's leases count from this: the clock as each claim is made (a sync tick's
        # runs may take minutes before it claims pending ones), unless the caller fixed `now`
        return now if fixed else utcnow()

    expired = store.expire_leases(retry_policy(settings), now)
    worker_id = default_worker_id(trigger) if mode == "sync" else None
    due_at = _due_times(store, now)
    claimed_at = claim_time()
    claim = store.claim(
        claimed_at, limit=settings.claim_limit, trigger=trigger, worker_id=worker_id,
        lease_seconds=settings.lease_seconds,
    )
    if due_at is not None:
        _measure_claims(claim.runs, claimed_at, due_at)
    result = HeartbeatResult(
        flows_due=claim.flows_due,
        flows_triggered=len(claim.runs),
        run_ids=[r.id for r in claim.runs],
        timestamp=_iso(now),
        mode=mode,
        runs=list(claim.runs),
        expired_run_ids=[r.id for r in expired],
    )
    log_event(_log, "heartbeat tick", trigger=trigger, mode=mode, flows_due=claim.flows_due,
              flows_triggered=len(claim.runs), skipped_busy=claim.skipped, expired=result.expired_run_ids)
    if mode == "sync":
        assert worker_id is not None
        execute = executor or execute_run
        finished: list[RunRecord] = []

        def run_one(run: RunRecord) -> None:
            try:
                finished.append(execute(store, run, settings, worker_id=worker_id))
            except Exception as exc:
                finished.append(_record_crash(store, run, exc))

        # Runs waiting their turn keep their leases, or another heartbeat would retry them.
        with LeaseKeeper(store, worker_id, settings.lease_seconds, result.run_ids) as keeper:
            for run in claim.runs:
                keeper.discard(run.id)  # execute_run renews its own run's lease
                run_one(run)
        # With no workers around, the heartbeat is the worker: it also runs pending runs
        # (retries of runs whose process died, "trigger now" without waiting), within the
        # same claim limit. A flow with a pending run is skipped by the claim until then.
        budget = settings.claim_limit - len(claim.runs)
        while budget > 0:
            claimed_at = claim_time()
            pending = store.claim_pending_run(worker_id, lease_seconds=settings.lease_seconds, now=claimed_at)
            if pending is None:
                break
            _measure_claims([pending], claimed_at)
            budget -= 1
            result.pending_run_ids.append(pending.id)
            run_one(pending)
        result.runs = finished
    return result


def trigger_run(
    store: ScheduleStore, settings: Settings, flow_name: str, *, trigger: str = "manual", wait: bool = True
) -> RunRecord:
    """Run a flow now, whatever its schedule. ``wait=True``: execute it in this process and
    return the finished run; ``wait=False``: leave it pending for a worker.
    Raises :class:`~active_data_flow.handlers.schedule.store.NotFoundError` for an unknown flow."""
    if not wait:
        return store.create_run(flow_name, trigger=trigger)
    worker_id = default_worker_id(trigger)
    run = store.create_run(flow_name, trigger=trigger, worker_id=worker_id, lease_seconds=settings.lease_seconds)
    return execute_run(store, run, settings, worker_id=worker_id)


# --------------------------------------------------------------------------- workers


class Worker:
    """Executes pending runs (async mode): expire dead leases, claim the oldest pending run
    (SKIP LOCKED), run it, repeat. Any number of workers may run at once, on any machines
    sharing the schedule database."""

    def __init__(
        self,
        store: ScheduleStore,
        settings: Settings,
        *,
        worker_id: str | None = None,
        poll_seconds: float = 1.0,
        executor: Executor | None = None,
    ) -> None:
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be positive, got {poll_seconds!r}")
        self.store = store
        self.settings = settings
        self.worker_id = worker_id or default_worker_id()
        self.poll_seconds = poll_seconds
        self.policy = retry_policy(settings)
        self.executed = 0
        self._execute = executor or execute_run

    def run_once(self) -> RunRecord | None:
        """Execute one pending run; None when there was none to take."""
        self.store.expire_leases(self.policy)
        run = self.store.claim_pending_run(self.worker_id, lease_seconds=self.settings.lease_seconds)
        if run is None:
            return None
        _measure_claims([run], utcnow())
        try:
            finished = self._execute(self.store, run, self.settings, worker_id=self.worker_id)
        except Exception as exc:
            finished = _record_crash(self.store, run, exc)
        self.executed += 1
        return finished

    def run_forever(self, stop_event: StopEvent | None = None) -> int:
        """Work until ``stop_event`` is set, or SIGTERM / SIGINT (when called in the main
        thread): the run in hand is finished first; a second signal stops at once (the run's
        lease then expires and it is retried). Returns how many runs this call executed."""
        stop: StopEvent = stop_event if stop_event is not None else threading.Event()
        restore = self._install_signal_handlers(stop)
        before = self.executed
        log_event(_log, "worker started", worker_id=self.worker_id, poll_seconds=self.poll_seconds)
        try:
            while not stop.is_set():
                try:
                    record = self.run_once()
                except Exception as exc:  # the database is unreachable: wait and try again
                    log_event(_log, "worker poll failed", logging.ERROR, worker_id=self.worker_id,
                              error=redact_text(f"{type(exc).__name__}: {exc}"))
                    record = None
                if record is None:
                    stop.wait(self.poll_seconds)
        finally:
            restore()
        log_event(_log, "worker stopped", worker_id=self.worker_id, runs=self.executed - before)
        return self.executed - before

    def _install_signal_handlers(self, stop: StopEvent) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous: dict[int, Any] = {}

        def handler(signum: int, frame: Any) -> None:
            if stop.is_set():  # second signal: stop now
                for sig, old in previous.items():
                    signal.signal(sig, old)
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt
                raise SystemExit(128 + signum)
            log_event(_log, "stopping after the current run", worker_id=self.worker_id, signal=signal.Signals(signum).name)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore
