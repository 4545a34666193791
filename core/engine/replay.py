"""Replaying dead letters through the current flow."""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from active_data_flow.context import RunContext
from active_data_flow.engine.checkpoints import default_state_root
from active_data_flow.engine.dead_letter_writer import DeadLetterWriter
from active_data_flow.engine.pipeline import Pipeline
from active_data_flow.registry import Registry, registry
from active_data_flow.source import (
    Origins,
    ReaderBatch,
    ReaderStatus,
)

if TYPE_CHECKING:
    pass


@dataclass
class ReplayResult:
    """What a replay of dead letters did: ``written`` + ``filtered`` + ``len(dead)`` = ``replayed`` + ``fanned_out``.

    ``dead`` are the dead letters that failed again (with their new reason and their first
    origin), ``kept`` the ones that cannot be replayed (malformed input: fix the input and run
    the flow again; or a step the flow no longer has), unchanged.
    """

    replayed: int = 0
    written: int = 0
    filtered: int = 0
    fanned_out: int = 0
    dead: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    kept: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def replay_dead_letters(
    flow: Any,
    letters: list[dict[str, Any]],
    *,
    run_id: str,
    state_dir: str | None = None,
    store: Any = None,
    reg: Registry | None = None,
) -> ReplayResult:
    """Send dead letters (rows as written to ``dead_letters.jsonl``) through the *current* flow.

    A record a step refused enters the flow again at that step (the record is as it was
    when it reached the step); a record the sink refused goes to the sink. Input that could
    not be parsed (stage ``source``) cannot be replayed: it is kept. Dead letters that fail
    again come back in ``ReplayResult.dead`` with the new reason; the sink is not set up
    again (a file sink in overwrite mode is not truncated: records are appended).
    """
    from active_data_flow.spec import as_spec

    spec = as_spec(flow, reg=reg)
    reg = reg or registry
    root = spec.runtime.get("state_dir") or state_dir or default_state_root()
    run_dir = os.path.join(os.path.abspath(root), spec.name, "runs", run_id)
    run_ctx = RunContext(flow_name=spec.name, run_id=run_id, state_dir=run_dir, resuming=True, store=store)
    pipeline = Pipeline(spec, run_ctx, None, reg)
    pipeline.dead = DeadLetterWriter(None, run_ctx, None, reg, pipeline.sink_retry, keep_all=True)
    steps = pipeline.steps
    names = [step.name for step in steps]
    result = ReplayResult()
    groups: dict[int, list[dict[str, Any]]] = {}
    for letter in letters:
        stage = letter.get("stage")
        start: int | None = None
        if stage == "sink":
            start = len(steps)
        elif stage == "step" and letter.get("step") in names:
            start = names.index(letter["step"])
        if start is None or not isinstance(letter.get("record"), dict):
            result.kept.append(letter)
        else:
            groups.setdefault(start, []).append(letter)
    batch_size = int(spec.runtime.get("batch_size") or 500)
    pipeline.open()
    try:
        for start in sorted(groups):
            pipeline.steps = steps[start:]
            pipeline.routing = any(s.can_route or s.static_next is not None for s in pipeline.steps)
            group = groups[start]
            for i in range(0, len(group), batch_size):
                chunk = group[i : i + batch_size]
                origins = Origins()
                for letter in chunk:
                    origins.add(1, letter.get("origin") or {})
                batch = ReaderBatch([copy.deepcopy(letter["record"]) for letter in chunk], ReaderStatus.MORE_AVAILABLE,
                                    origins=origins)
                counts = pipeline.commit(batch)
                result.replayed += len(chunk)
                result.written += counts.records_out
                result.filtered += counts.filtered
                result.fanned_out += counts.fanned_out
    finally:
        pipeline.steps = steps
        pipeline.close()
    result.dead = list(pipeline.dead.kept or [])
    return result
