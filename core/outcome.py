"""How a run ended: its counts, the accounting they must satisfy, and one verdict for every target.

Every run — local, heartbeat, Lambda, Spin, Flink — ends with one of these statuses:

``success``
    Every record read was written or filtered out; nothing was dead-lettered.
``partial``
    The run went through all of its input, and some records were dead-lettered (refused
    for their content: a schema, a step, a constraint of the sink) — no more than
    ``runtime.max_dead_letter_ratio`` of the records read when the flow sets one. They can be
    replayed after a fix (``adf dead-letters replay``).
``failed``
    The run stopped on an error (its checkpoint is kept, so the next run resumes), or it went
    through its input but every record that was not filtered was rejected, or the share of
    dead letters passed ``runtime.max_dead_letter_ratio``.
``stopped``
    An unbounded run that was asked to stop; its checkpoint is kept and the next run continues.

The counts add up, for every batch, every reader and every run::

    records_in + fanned_out = records_out + filtered + dead_letters + in_flight

``fanned_out`` counts the records steps added (a step that turns one record into three adds
two), ``in_flight`` the records of the batch a failed run was working on when it stopped
(they are read again when the run resumes). A run whose counts do not add up fails with
:class:`AccountingError`, which says by how much.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from active_data_flow.errors import AdfError

__all__ = [
    "AccountingError",
    "BatchCounts",
    "DeadLetterShareError",
    "ReasonTally",
    "describe_dead_letters",
    "judge",
    "verdict",
]

class AccountingError(AdfError):
    """The counts of a batch or a run do not add up (records would be lost or invented)."""


class DeadLetterShareError(AdfError):
    """The run went through its input, but too many of its records were rejected."""


@dataclass
class BatchCounts:
    """What happened to the records of one batch (or, summed, of a reader or a run)."""

    records_in: int = 0
    records_out: int = 0
    filtered: int = 0
    fanned_out: int = 0
    dead_letters: int = 0
    in_flight: int = 0

    def add(self, other: BatchCounts | Mapping[str, int]) -> None:
        get = other.get if isinstance(other, Mapping) else other.__dict__.get
        for name in _COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + int(get(name, 0) or 0))

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in _COUNT_FIELDS}

    def imbalance(self) -> int:
        """``records_in + fanned_out - (records_out + filtered + dead_letters + in_flight)``: 0 when they add up."""
        return self.records_in + self.fanned_out - (self.records_out + self.filtered + self.dead_letters + self.in_flight)

    def settle_in_flight(self) -> None:
        """Count whatever is not accounted for as in flight (a batch cut short by an error)."""
        missing = self.imbalance()
        if missing > 0:
            self.in_flight += missing

    def check(self, what: str) -> None:
        """Raise :class:`AccountingError` unless the counts add up."""
        diff = self.imbalance()
        if diff:
            raise AccountingError(
                f"{what}: the counts do not add up — records in {self.records_in:,} + added by steps "
                f"{self.fanned_out:,} = {self.records_in + self.fanned_out:,}, but out {self.records_out:,} + "
                f"filtered {self.filtered:,} + dead letters {self.dead_letters:,} + in flight {self.in_flight:,} = "
                f"{self.records_out + self.filtered + self.dead_letters + self.in_flight:,} "
                f"({abs(diff):,} record(s) {'unaccounted for' if diff > 0 else 'too many'})"
            )


_COUNT_FIELDS = tuple(f.name for f in fields(BatchCounts))

# Values inside reasons (the offending value, a column number) would make every reason unique;
# they are dropped when reasons are tallied, not in the dead letters themselves.
_QUOTED = re.compile(r"""('[^']*'|"[^"]*")""")
_NUMBER = re.compile(r"\b\d+\b")
_KEEP_QUOTED_AFTER = ("field ", "column ", "step ", "key ", "table ")


def _reason_key(reason: str) -> str:
    text = reason.strip().splitlines()[0] if reason.strip() else "(no reason)"

    def quoted(match: re.Match[str]) -> str:
        before = text[max(0, match.start() - 8) : match.start()].lower()
        return match.group(0) if before.endswith(_KEEP_QUOTED_AFTER) else "…"

    text = _QUOTED.sub(quoted, text)
    text = _NUMBER.sub("N", text)
    return text[:200]


class ReasonTally:
    """Counts dead letters by reason, at most ``limit`` reasons.

    Values inside a reason (the offending value, a line number) are folded away so that one
    cause is one entry: ``field 'n': expected integer, got …``. While every dead letter of an
    entry had the very same reason, that reason is shown as it was (``got 'many'``).
    """

    _VARIED = None  # an entry whose dead letters had different reasons: shown folded

    def __init__(self, limit: int = 200) -> None:
        self.limit = limit
        self.counts: Counter[str] = Counter()
        #: per entry, its one reason as written, or None once several differ
        self.examples: dict[str, str | None] = {}

    def _key(self, key: str) -> str:
        if key not in self.counts and len(self.counts) >= self.limit:
            return "(other reasons)"
        return key

    def _note(self, key: str, example: str | None, n: int) -> None:
        if key not in self.counts:
            self.examples[key] = example
        elif self.examples.get(key) != example:
            self.examples[key] = self._VARIED
        self.counts[key] += n

    def add(self, reason: str, n: int = 1) -> None:
        line = reason.strip().splitlines()[0][:300] if reason.strip() else "(no reason)"
        key = self._key(_reason_key(reason))
        self._note(key, line if key != "(other reasons)" else None, n)

    def take(self) -> dict[str, list[Any]]:
        """The tally so far as ``{entry: [count, reason or None]}`` (for another process's
        :meth:`merge`), and start again."""
        out = {key: [count, self.examples.get(key)] for key, count in self.counts.items()}
        self.counts.clear()
        self.examples.clear()
        return out

    def merge(self, taken: Mapping[str, Any]) -> None:
        """Add a tally :meth:`take` returned (in this process or a reader's)."""
        for key, value in taken.items():
            count, example = (value[0], value[1]) if isinstance(value, list | tuple) else (value, self._VARIED)
            self._note(self._key(key), example, int(count))

    def top(self, n: int = 5) -> list[dict[str, Any]]:
        """The ``n`` most frequent reasons, ``[{"reason": …, "count": …}]``."""
        return [
            {"reason": self.examples.get(key) or key, "count": count} for key, count in self.counts.most_common(n)
        ]


def describe_dead_letters(count: int, reasons: Iterable[Mapping[str, Any]]) -> str:
    """``12 records dead-lettered: 10x field 'amount': …; 2x …`` (one line)."""
    parts = [f"{int(r['count']):,}x {r['reason']}" for r in reasons]
    noun = "record" if count == 1 else "records"
    return f"{count:,} {noun} dead-lettered" + (f": {'; '.join(parts)}" if parts else "")


def verdict(counts: BatchCounts, max_ratio: float | None, reasons: Iterable[Mapping[str, Any]] = ()) -> tuple[str, AdfError | None]:
    """The status of a run that went through all of its input, and the error when it failed.

    ``success`` with no dead letters; ``failed`` when every record that was not filtered was
    rejected, or when dead letters are more than ``max_ratio`` of the records read (None:
    no limit); ``partial`` otherwise.
    """
    dead = counts.dead_letters
    if dead == 0:
        return "success", None
    told = describe_dead_letters(dead, reasons)
    if counts.records_out == 0:
        return "failed", DeadLetterShareError(
            f"every record was rejected ({told}); nothing was written. Fix the cause, then "
            "`adf dead-letters replay` the run"
        )
    share = dead / max(counts.records_in + counts.fanned_out, 1)
    if max_ratio is not None and share > max_ratio:
        return "failed", DeadLetterShareError(
            f"{share:.0%} of the records were rejected, more than runtime.max_dead_letter_ratio={max_ratio:g} "
            f"({told}). Fix the cause, then `adf dead-letters replay` the run"
        )
    return "partial", None


def judge(counts: BatchCounts, max_ratio: float | None, reasons: Iterable[Mapping[str, Any]], where: str
          ) -> tuple[str, AdfError | None]:
    """The status of a run that ended without an error, on every target: its counts must add up
    (:meth:`BatchCounts.check`, else ``failed``), then :func:`verdict` decides."""
    try:
        counts.check(where)
    except AdfError as exc:
        return "failed", exc
    return verdict(counts, max_ratio, reasons)
