"""The entry point: :func:`run_flow`."""

from __future__ import annotations

import logging
import signal
import time
from typing import TYPE_CHECKING, Any

from active_data_flow.engine.coordinator import Coordinator, ProgressCallback, SpecChangedError
from active_data_flow.engine.inline import run_inline
from active_data_flow.engine.processes import ProcessReaders
from active_data_flow.engine.summary import RunSummary
from active_data_flow.errors import AdfError
from active_data_flow.logs import get_logger, log_event, run_id_var
from active_data_flow.registry import Registry, registry

if TYPE_CHECKING:
    pass

_log = get_logger("engine")


def run_flow(
    flow: Any,
    *,
    state_dir: str | None = None,
    resume: bool = True,
    on_progress: ProgressCallback | None = None,
    run_id: str | None = None,
    store: Any = None,
    reg: Registry | None = None,
    persist: bool = True,
    on_spec_change: str = "refuse",
) -> RunSummary:
    """Run a flow to the end (or until stopped) and return its summary.

    ``flow`` is a :class:`~active_data_flow.spec.FlowSpec`, a spec mapping, or a
    :class:`~active_data_flow.flow.DataFlow` subclass or instance. With ``persist=False`` the run writes
    no files (no checkpoints, no run record, one reader in this process, dead letters returned
    in ``summary.dead_letter_sample`` unless the spec names a dead-letter sink) — for hosts
    without a writable filesystem such as a Spin component. Never raises for a failing flow:
    the summary has ``status="failed"`` with the error and its backtrace, and the
    checkpoint is kept so the next run resumes. An invalid spec raises ``SpecError``.

    A checkpoint resumes only the same flow (source, steps, schema and sink). When the flow
    changed since its checkpoint was made, ``on_spec_change`` decides: ``"refuse"`` raises
    :class:`SpecChangedError` naming what changed; ``"fresh"`` discards the checkpoint and
    starts over (a request-driven run, whose records are its source); ``"resume"`` resumes
    anyway unless the source changed.
    """
    if on_spec_change not in ("refuse", "fresh", "resume"):
        raise ValueError(f"on_spec_change must be 'refuse', 'fresh' or 'resume', not {on_spec_change!r}")
    from active_data_flow.spec import as_spec

    spec = as_spec(flow, reg=reg)
    reg = reg or registry
    t0 = time.monotonic()
    run = Coordinator(
        spec, state_root=state_dir, reg=reg, resume=resume, on_progress=on_progress, run_id=run_id, store=store,
        persist=persist, on_spec_change=on_spec_change,
    )
    status: str = "success"
    error: BaseException | None = None
    old_handler = None
    token = None
    run.telemetry.begin()
    try:
        run.prepare()
        run.telemetry.set_attributes({"adf.run_id": run.run_id})
        token = run_id_var.set(run.run_id)
        log_event(_log, "run started", flow=spec.name, parallelism=run.parallelism, resumed=run.resumed)
        if run.unbounded:
            old_handler = _install_stop_handler(run)
        if run.parallelism == 1:
            run.ended_by_input = run_inline(run)
        else:
            run.ended_by_input = ProcessReaders(run).serve()
        if run.ended_by_input:
            run.source.on_run_success()
            if run.use_checkpoints:
                run.checkpoints.clear()
        else:
            status = "stopped"
    except KeyboardInterrupt as exc:
        status, error = "failed", AdfError("interrupted; run the flow again to resume from its checkpoint")
        error.__cause__ = exc
    except SpecChangedError as exc:
        run.telemetry.end(error=exc)
        raise  # not a run: the caller chooses how to go on (--fresh, the old spec, --resume-anyway)
    except Exception as exc:
        status, error = "failed", exc
    finally:
        run.checkpoints.close()
        run.unlock()
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    try:
        summary = run.finish(status, error, t0)
    except BaseException as exc:
        run.telemetry.end(error=exc)
        raise
    run.telemetry.end(summary)
    log_event(
        _log, "run finished", logging.INFO if summary.ok else logging.ERROR,
        **{k: v for k, v in summary.to_dict().items() if k != "backtrace"},
    )
    if token is not None:
        run_id_var.reset(token)
    return summary


def _install_stop_handler(run: Coordinator) -> Any:
    def stop(signum: int, frame: Any) -> None:
        run.stopping = True

    try:
        return signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread
        return None
