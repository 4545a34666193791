"""One reader in the coordinator's own process (``parallelism`` 1, and every run that may not write files)."""

from __future__ import annotations

import time

from active_data_flow.engine.coordinator import Coordinator, pending_splits
from active_data_flow.engine.loop import ReaderLoop
from active_data_flow.engine.pipeline import Pipeline
from active_data_flow.outcome import BatchCounts
from active_data_flow.source import InlineContexts, ReaderBatch, SourceReader

__all__ = ["run_inline"]


def run_inline(run: Coordinator) -> bool:
    """Run the enumerator and one reader here until the input ends (True) or the run is stopped."""
    ctx = InlineContexts(run.record_assignment)
    enumerator = run.enumerator = run.restore_enumerator(ctx)
    ctx.enumerator = enumerator
    pipeline = run.pipeline = Pipeline(run.spec, run.run_ctx, run.run_dir if run.persist else None, run.reg)
    run.dead_kept = pipeline.dead.kept
    run.setup_sinks(pipeline.sink)
    run.dead_letter_destination = pipeline.dead.destination
    run.progress.bytes_total = run.source.total_work(pending_splits(enumerator))
    reader = run.source.create_reader(ctx)
    ctx.reader = reader
    deadline = run.deadline()
    discovery_every = float(run.runtime.get("discovery_interval_s", 5.0))
    idle_sleep = float(run.runtime.get("idle_sleep_s", 0.2))
    next_discovery = time.monotonic() + discovery_every

    def checkpoint(reader: SourceReader, batch: ReaderBatch) -> None:
        if run.use_checkpoints:
            run.checkpoints.save_reader(0, [s.to_dict() for s in reader.snapshot_state()], batch.finished_splits)

    def committed(batch: ReaderBatch, counts: BatchCounts | None) -> None:
        run.forget(0, batch.finished_splits)
        run.report(counts, batch.input_bytes, len(batch.finished_splits), pipeline.dead.take_reasons())

    def should_stop() -> bool:
        return run.stopping or (deadline is not None and time.monotonic() >= deadline)

    def on_idle() -> None:
        nonlocal next_discovery
        if time.monotonic() >= next_discovery:
            enumerator.discover()
            next_discovery = time.monotonic() + discovery_every
            if not reader.snapshot_state():
                enumerator.handle_split_request(0)
        time.sleep(idle_sleep)

    loop = ReaderLoop(reader, run.batch_size, checkpoint=checkpoint, committed=committed)
    pipeline.open()
    try:
        reader.start()
        return loop.run(pipeline.commit, should_stop=should_stop, on_idle=on_idle) is True
    finally:
        reader.close()
        enumerator.close()
        pipeline.close()
