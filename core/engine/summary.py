"""What a run did: its progress while it runs and its summary at the end."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


@dataclass
class Progress:
    """Counts so far; ``bytes_total`` is None when the source cannot tell."""

    records_in: int = 0
    records_out: int = 0
    dead_letters: int = 0
    bytes_done: int = 0
    bytes_total: int | None = None
    splits_done: int = 0
    filtered: int = 0
    fanned_out: int = 0


@dataclass
class RunSummary:
    """What a run did.

    ``status`` is ``success`` (every record written or filtered), ``partial`` (done, with
    dead letters below ``runtime.max_dead_letter_ratio``), ``failed`` or ``stopped`` (an
    unbounded run that was stopped; its checkpoint is kept so the next run continues) — see
    :mod:`active_data_flow.outcome`. The counts add up: ``records_in + fanned_out = records_out +
    filtered + dead_letters + in_flight``.
    """

    flow: str
    run_id: str
    status: str
    records_in: int = 0
    records_out: int = 0
    dead_letters: int = 0
    filtered: int = 0
    #: records steps added (one record in, several out)
    fanned_out: int = 0
    #: records of the batch a failed run was working on (read again when it resumes)
    in_flight: int = 0
    #: the most frequent reasons of this run's dead letters: ``[{"reason": …, "count": …}]``
    dead_letter_reasons: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    duration_s: float = 0.0
    started_at: str = ""
    ended_at: str = ""
    resumed: bool = False
    parallelism: int = 1
    splits: int = 0
    reader_restarts: int = 0
    sink: str = ""
    dead_letter_destination: str | None = None
    error: str | None = None
    error_type: str | None = None
    backtrace: str | None = None
    #: dead letters themselves, for runs that may not write files (``persist=False``)
    dead_letter_sample: list[dict[str, Any]] | None = None
    #: what the run has to say besides its counts (a source's :meth:`SplitEnumerator.warnings`,
    #: a connector's :meth:`RunContext.warn`): ``[{"message": …, …}]``, with ``count`` when the
    #: same warning was reported more than once
    warnings: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: columns sinks added to their tables (``schema_evolution: add_columns``):
    #: ``[{"table": …, "column": …, "type": …}]``
    schema_changes: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The run did what it had to: ``success``, ``partial`` or ``stopped``."""
        return self.status in ("success", "partial", "stopped")

    def to_dict(self) -> dict[str, Any]:
        # scalars but for the sample, whose entries are copied (dataclasses.asdict deep-copies
        # every value: measured a tenth of a small HTTP-triggered run)
        out = {name: getattr(self, name) for name in _SUMMARY_FIELDS}
        out["dead_letter_reasons"] = [dict(r) for r in self.dead_letter_reasons]
        out["warnings"] = [copy.deepcopy(w) for w in self.warnings]
        out["schema_changes"] = [dict(c) for c in self.schema_changes]
        if self.dead_letter_sample is not None:
            out["dead_letter_sample"] = [copy.deepcopy(d) for d in self.dead_letter_sample]
        return out


_SUMMARY_FIELDS = tuple(f.name for f in dataclasses.fields(RunSummary))
