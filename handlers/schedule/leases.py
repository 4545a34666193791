"""Leases kept while runs go on, and writes to the schedule that outlive a dropped connection.

:class:`LeaseKeeper` renews the leases of the runs a process holds, in a daemon thread, so
that a run taking longer than its lease is not taken for the run of a worker that died;
:func:`durable_write` retries a write of a run — its start, a lease renewal, its outcome —
while the database cannot be reached. Both serve :mod:`active_data_flow.handlers.scheduler`.

Standard library only (this runs inside a Spin component).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from active_data_flow.handlers.schedule.store import ScheduleStore
from active_data_flow.logs import get_logger, log_event
from active_data_flow.redact import redact_text
from active_data_flow.retry import RetryPolicy as Backoff
from active_data_flow.retry import is_unavailable, retry_call

__all__ = ["LeaseKeeper", "durable_write"]

T = TypeVar("T")

_log = get_logger("scheduler")


def durable_write(
    call: Callable[[], T], *, what: str, window_s: float, sleep: Callable[[float], None] = time.sleep
) -> T:
    """``call()`` — a write to the schedule store — retried while the database cannot be
    reached (:func:`active_data_flow.retry.is_unavailable`: a dropped or refused connection, a server
    shutting down, a locked SQLite file) for at most ``window_s`` seconds. A dropped pooled
    connection is replaced on the next try, so one lost connection costs one quick retry.
    Raises :class:`active_data_flow.retry.RetriesExhausted` when the window runs out, any other error at once.
    ``call`` must be safe to repeat: a write whose commit was lost with its connection may
    have been applied."""
    policy = Backoff(window_s=max(window_s, 0.0), first_delay_s=0.1, max_delay_s=max(min(window_s / 4.0, 5.0), 0.1))
    return retry_call(call, policy=policy, retryable=is_unavailable, what=what, sleep=sleep)


class _Stopped(Exception):
    """The lease keeper was stopped while it waited to retry."""


class LeaseKeeper:
    """Renews the leases of ``run_ids`` every ``lease_seconds / 3`` in a daemon thread; a
    renewal that meets a dropped connection is retried until the next one is due."""

    def __init__(self, store: ScheduleStore, worker_id: str, lease_seconds: float, run_ids: Iterable[int]) -> None:
        self.store = store
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.lost: set[int] = set()
        self._ids = set(run_ids)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"adf-lease-{worker_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        if self._ids:
            try:
                self._thread.start()
            except RuntimeError:  # no threads (a WebAssembly component): runs finish within one lease
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def discard(self, run_id: int) -> None:
        with self._lock:
            self._ids.discard(run_id)

    def _loop(self) -> None:
        interval = max(self.lease_seconds / 3.0, 0.05)
        # The first renewal comes at once: a claimed run's lease counts from its claim, and a
        # slow claim (a busy database) may have used most of it before this thread starts.
        while True:
            with self._lock:
                ids = set(self._ids)
            if ids:
                self._renew(ids)
            if self._stop.wait(interval):
                return

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopped

    def _renew(self, ids: set[int]) -> None:
        try:
            held = durable_write(
                lambda: self.store.renew_leases(ids, self.worker_id, lease_seconds=self.lease_seconds),
                what="renewing leases", window_s=self.lease_seconds / 3.0, sleep=self._sleep,
            )
        except _Stopped:
            return
        except Exception as exc:  # the database is still away: try again at the next interval
            log_event(_log, "lease renewal failed", logging.WARNING, worker_id=self.worker_id,
                      error=redact_text(f"{type(exc).__name__}: {exc}"))
            return
        lost = ids - held
        if lost:
            with self._lock:
                self._ids -= lost
            self.lost |= lost
            log_event(_log, "lease lost: the run was expired and handed to another attempt", logging.WARNING,
                      worker_id=self.worker_id, run_ids=sorted(lost))
