"""A run's counts while it runs: :class:`ProgressKeeper` writes them to the schedule store.

The engine reports its counts after every committed batch (its ``on_progress`` callback);
the keeper keeps the latest report and a daemon thread writes it to the run's row every
``interval`` seconds when it changed (:meth:`ScheduleStore.record_progress`), so a
dashboard or the API can show how far a run has got. The callback itself never touches
the database: a slow or unreachable database does not slow the run, and a write that fails
is logged and left to the next interval (the run's outcome is written as before, by
:func:`active_data_flow.handlers.scheduler.record_outcome`, with the final counts).

Standard library only (this runs inside a Spin component, where there are no threads and
the keeper writes nothing).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from active_data_flow.handlers.schedule.store import ScheduleStore
from active_data_flow.logs import get_logger, log_event
from active_data_flow.redact import redact_text

__all__ = ["PROGRESS_SECONDS", "ProgressKeeper"]

#: how often a run's counts so far are written to the schedule store
PROGRESS_SECONDS = 1.0

_log = get_logger("scheduler")


class ProgressKeeper:
    """Writes the counts :meth:`update` last received for run ``run_id`` (leased to
    ``worker_id``) every ``interval`` seconds, while used as a context manager. Stops
    writing once the run is no longer this worker's."""

    def __init__(
        self,
        store: ScheduleStore,
        run_id: int,
        worker_id: str,
        *,
        interval: float = PROGRESS_SECONDS,
        enabled: bool = True,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.worker_id = worker_id
        self.interval = max(float(interval), 0.05)
        self.enabled = enabled
        self.writes = 0
        self._latest: tuple[int, int, int] | None = None
        self._written: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"adf-progress-{run_id}", daemon=True)

    def __enter__(self) -> ProgressKeeper:
        if self.enabled:
            try:
                self._thread.start()
            except RuntimeError:  # no threads (a WebAssembly component): counts come with the outcome
                self.enabled = False
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def update(self, progress: Any) -> None:
        """The engine's progress callback: remember the counts (an
        :class:`active_data_flow.engine.Progress`, or anything with its three counts)."""
        counts = (int(progress.records_in), int(progress.records_out), int(progress.dead_letters))
        with self._lock:
            self._latest = counts

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.flush():
                return

    def flush(self) -> bool:
        """Write the latest counts if they changed; False once the run is no longer ours."""
        with self._lock:
            counts = self._latest
        if counts is None or counts == self._written:
            return True
        records_in, records_out, dead_letters = counts
        try:
            held = self.store.record_progress(
                self.run_id,
                self.worker_id,
                records_in=records_in,
                records_out=records_out,
                dead_letters=dead_letters,
            )
        except Exception as exc:  # the database is away: the next interval tries again
            log_event(
                _log,
                "run progress not recorded",
                logging.WARNING,
                run=self.run_id,
                error=redact_text(f"{type(exc).__name__}: {exc}"),
            )
            return True
        if held:
            self._written = counts
            self.writes += 1
        return held
