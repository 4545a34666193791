"""The local runner: one enumerator, N readers, checkpoints, dead letters and resume.

How a run goes:

1. The coordinator (the calling process) validates the spec, opens the checkpoint
   directory ``<state_dir>/<flow>/checkpoint`` and either resumes the unfinished run found
   there (same source, same flow) or starts a new one (then ``sink.setup()`` runs once).
2. It creates the source's enumerator and N readers — in this process when
   ``parallelism`` is 1, otherwise one process each. A reader asks for a split, reads
   it in batches; each batch goes through the steps into the sink; when the sink has
   flushed, the dead letters of the batch are written and the reader's checkpoint (its
   unfinished splits with their positions) is appended to its checkpoint log.
3. A reader process that dies is noticed; its unfinished splits go back to the
   enumerator *from its last checkpoint* and a new reader process takes its place (up to
   ``runtime.max_reader_restarts``). If the coordinator itself dies, running the flow
   again resumes from the checkpoint files.

Hence at-least-once: a record is lost only if its batch was never committed, and a batch
that was written but not yet checkpointed is written again — at most one batch per reader;
with an idempotent (upsert) sink that duplicate collapses, so the result is exactly-once.
"""

from active_data_flow.engine.checkpoints import Checkpoints, default_state_root
from active_data_flow.engine.coordinator import SpecChangedError
from active_data_flow.engine.dead_letter_writer import DeadLetterWriter
from active_data_flow.engine.loop import ReaderLoop
from active_data_flow.engine.pipeline import OriginTracker, Pipeline, count_step, setup_destinations
from active_data_flow.engine.replay import ReplayResult, replay_dead_letters
from active_data_flow.engine.run import run_flow
from active_data_flow.engine.summary import Progress, RunSummary

__all__ = [
    "Checkpoints",
    "DeadLetterWriter",
    "OriginTracker",
    "Pipeline",
    "Progress",
    "ReaderLoop",
    "ReplayResult",
    "RunSummary",
    "SpecChangedError",
    "count_step",
    "default_state_root",
    "replay_dead_letters",
    "run_flow",
    "setup_destinations",
]
