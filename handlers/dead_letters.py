"""A schedule run's dead letters, for the dashboard and the web API: where they are, reading
them, and replaying them through the flow's current configuration in the schedule store.

The engine's side (the files, the replay itself) is :mod:`active_data_flow.dead_letters`; this module adds
what a heartbeat knows — the run's engine run id and state directory, the flow's stored
configuration — and turns every refusal into a :class:`DeadLetterError` with the HTTP status
that says why.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from active_data_flow.handlers.schedule.store import (
    ACTIVE_RUN_STATUSES,
    NotFoundError,
    RunRecord,
    ScheduleStore,
)
from active_data_flow.handlers.settings import Settings
from active_data_flow.logs import get_logger, log_event

if TYPE_CHECKING:
    from active_data_flow.dead_letters import RunDir

__all__ = [
    "DeadLetterError",
    "describe_replay",
    "letters_of",
    "read_run_dead_letters",
    "replay_run_dead_letters",
    "run_directory",
]

_log = get_logger("dead_letters")


class DeadLetterError(Exception):
    """A schedule run's dead letters cannot be read or replayed now; ``status`` is the HTTP
    status that says why (404 no run directory, 409 not now or not here, 422 the flow's
    configuration is invalid, 503 the sink cannot be reached)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def _plain_name(value: str | None) -> bool:
    return bool(value) and value not in (".", "..") and "/" not in str(value) and "\\" not in str(value)


def run_directory(store: ScheduleStore, run: RunRecord, settings: Settings) -> RunDir | None:
    """The engine's directory of a schedule run (``<state dir>/<flow>/runs/<engine run id>``:
    its summary, its dead letters), or None when the run never started or the directory is
    not there. The state directory is the heartbeat's (``settings.state_dir``), or the one
    the flow's configuration names (:func:`active_data_flow.handlers.scheduler.load_scheduled_flow`)."""
    from active_data_flow.dead_letters import RunDir

    engine_id = run.engine_run_id
    if not engine_id or not _plain_name(engine_id) or not _plain_name(run.flow_name):
        return None

    def at(root: str) -> RunDir | None:
        root = os.path.abspath(root)
        path = os.path.join(root, run.flow_name, "runs", engine_id)
        return RunDir(run.flow_name, engine_id, path, root) if os.path.isdir(path) else None

    found = at(settings.state_dir)
    if found is not None:
        return found
    from active_data_flow.handlers import scheduler

    try:
        loaded = scheduler.load_scheduled_flow(store, run.flow_name, settings, use_store=False)
    except Exception:  # the flow was deleted or its configuration broke: nowhere else to look
        return None
    root = loaded.spec.runtime.get("state_dir")
    return at(str(root)) if root else None


def read_run_dead_letters(
    store: ScheduleStore, run: RunRecord, settings: Settings, *, offset: int = 0, limit: int | None = None
) -> tuple[RunDir, list[dict[str, Any]], int]:
    """A schedule run's directory, its current dead letters (``limit`` of them from the
    ``offset``-th; each with its 1-based ``number``, :func:`active_data_flow.dead_letters.read_letters`) and
    how many it has in all. :class:`DeadLetterError` when the run has no directory (404) or its
    dead letters went to a configured ``dead_letter`` sink (409)."""
    directory = run_directory(store, run, settings)
    if directory is None:
        if not run.engine_run_id:
            raise DeadLetterError(404, f"run #{run.id} of flow {run.flow_name} has not started: it has no dead letters")
        raise DeadLetterError(
            404, f"run #{run.id} of flow {run.flow_name} has no run directory {run.engine_run_id!r} in the state "
                 f"directory {settings.state_dir} (ADF_STATE_DIR): it stopped before the engine started, or the "
                 "state directory was moved",
        )
    letters, total = letters_of(directory, run, offset=offset, limit=limit)
    return directory, letters, total


def letters_of(
    directory: RunDir, run: RunRecord, *, offset: int = 0, limit: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """The current dead letters in a schedule run's directory (a page of them) and how many
    there are (:class:`DeadLetterError` 409 when they went to a configured ``dead_letter`` sink
    or cannot be read)."""
    from active_data_flow.dead_letters import count_letters, read_letters
    from active_data_flow.errors import AdfError

    try:
        return read_letters(directory, offset=offset, limit=limit), count_letters(directory)
    except AdfError as exc:  # they went to a dead_letter sink: unless the run had none at all
        if not directory.summary().get("dead_letters") and not run.dead_letters:
            return [], 0
        raise DeadLetterError(409, str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DeadLetterError(409, f"the dead letters of run #{run.id} cannot be read: {exc}") from None


def replay_run_dead_letters(store: ScheduleStore, run: RunRecord, settings: Settings) -> dict[str, Any]:
    """Replay a finished schedule run's dead letters through its flow's *current*
    configuration in the schedule store (:func:`active_data_flow.dead_letters.replay`) and return the
    outcome: ``{"replayed", "written", "filtered", "fanned_out", "dead_letters" (failed
    again), "kept" (not replayable), "remaining"}``.

    :class:`DeadLetterError` when the run is still going (or, failed, may be being resumed by
    the flow's run in progress) or has no run directory, the flow
    was deleted or its configuration is invalid now, its dead letters went to a ``dead_letter``
    sink, another replay of them is running, or the sink cannot be reached (nothing is
    removed from the dead letters then)."""
    from active_data_flow.dead_letters import replay
    from active_data_flow.errors import AdfError, SinkUnavailableError
    from active_data_flow.handlers import scheduler

    if run.status in ACTIVE_RUN_STATUSES:
        raise DeadLetterError(409, f"run #{run.id} is {run.status.replace('_', ' ')}: replay its dead letters "
                                   "when it has finished")
    if run.status == "failed":
        # a failed run keeps its checkpoint: the flow's next run resumes it, in the same run directory
        going = store.list_runs(flow=run.flow_name, status="in_progress", limit=1)
        if going:
            raise DeadLetterError(409, f"run #{going[0].id} of flow {run.flow_name} is in progress and may be "
                                       f"resuming run #{run.id}, writing to its dead letters: replay them when it "
                                       "has finished")
    directory, letters, _ = read_run_dead_letters(store, run, settings, limit=1)
    if not letters:
        return {"replayed": 0, "written": 0, "filtered": 0, "fanned_out": 0, "dead_letters": 0, "kept": 0,
                "remaining": 0}
    try:
        loaded = scheduler.load_scheduled_flow(store, run.flow_name, settings)
    except NotFoundError:
        raise DeadLetterError(
            409, f"flow {run.flow_name} no longer exists, so there is no current configuration to replay through; "
                 f"`adf dead-letters replay {run.flow_name}/{directory.run_id} SPEC --state-dir "
                 f"{directory.state_root}` replays them through a spec file",
        ) from None
    except AdfError as exc:
        raise DeadLetterError(422, f"the configuration of flow {run.flow_name} is not valid now: {exc}") from None
    try:
        outcome = replay(directory, loaded.spec, store=loaded.store)
    except SinkUnavailableError as exc:
        raise DeadLetterError(503, f"the sink cannot be reached, nothing was removed from the dead letters; "
                                   f"try again later: {exc}") from None
    except AdfError as exc:  # dead letters in a sink, or another replay holds them
        raise DeadLetterError(409, str(exc)) from None
    finally:
        if loaded.store is not None:
            try:
                loaded.store.close()
            except Exception as exc:
                log_event(_log, "closing the flow's state store failed", logging.WARNING,
                          error=f"{type(exc).__name__}: {exc}")
    log_event(_log, "dead letters replayed", run=run.id, flow=run.flow_name, engine_run_id=directory.run_id,
              **outcome)
    return outcome


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def describe_replay(outcome: Mapping[str, Any]) -> str:
    """A replay's outcome in one sentence, e.g. "Replayed 5 dead letters: 5 written, 0 failed
    again, 1 not replayable (malformed input, or a step the flow no longer has); 1 remains." """
    replayed, remaining = int(outcome.get("replayed") or 0), int(outcome.get("remaining") or 0)
    parts = [f"{int(outcome.get('written') or 0):,} written"]
    if outcome.get("filtered"):
        parts.append(f"{int(outcome['filtered']):,} filtered")
    parts.append(f"{int(outcome.get('dead_letters') or 0):,} failed again")
    if outcome.get("kept"):
        parts.append(f"{int(outcome['kept']):,} not replayable (malformed input, or a step the flow no longer has)")
    if not replayed and not outcome.get("kept"):
        return "There were no dead letters to replay."
    left = "none remain" if not remaining else f"{remaining:,} {'remains' if remaining == 1 else 'remain'}"
    return f"Replayed {_plural(replayed, 'dead letter')}: {', '.join(parts)}; {left}."


