"""What travels between the operators of a Flink job: batches of records with their origins, counts and dead letters."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from active_data_flow.ids import utc_now_iso
from active_data_flow.record import DeadLetter
from active_data_flow.source import (
    Origins,
)

__all__ = ['StageTracker', 'letter_dict', 'origin_at', 'origins_of', 'pack', 'split_marks', 'unpack']


def letter_dict(letter: DeadLetter, flow: str, run_id: str) -> dict[str, Any]:
    data = letter.to_dict() if hasattr(letter, "to_dict") else dict(vars(letter))
    data.setdefault("flow", flow)
    data.setdefault("run_id", run_id)
    data.setdefault("ts", utc_now_iso())
    return data


def pack(records: list[Any], origins: Origins | None, positions: list[int] | None,
          carried: Mapping[str, Any] | None = None) -> str:
    """One element between the operators: the batch's records, the origins of the batch the read
    operator made (``o``), and — once a step dropped or added records — each record's position
    in that batch (``p``; -1: a record a step made anew). A bounded job's element also carries
    the counts (``c``) and dead letters (``d``) of the operators it went through (:class:`Outbox`)."""
    data: dict[str, Any] = {"r": records, "o": None if origins is None else origins.to_list(), "p": positions}
    if carried:
        data.update(carried)
    return json.dumps(data, default=str)


def unpack(value: str) -> tuple[list[Any], Origins | None, list[int] | None, dict[str, Any]]:
    data = json.loads(value)
    carried = {k: data[k] for k in ("c", "d", "k", "e") if k in data}
    return data["r"], None if data["o"] is None else Origins.from_list(data["o"]), data["p"], carried


def split_marks(carried: Mapping[str, Any]) -> dict[str, Any]:
    """What an element says about its split besides counts: ``k``, the bounded split it comes
    from; ``e``, the split's end (the sink then commits the split's part: :class:`Parts`)."""
    return {key: carried[key] for key in ("k", "e") if key in carried}


def origin_at(origins: Origins | None, positions: list[int] | None, index: int) -> dict[str, Any]:
    """The origin of record ``index`` of an element (as the local runner's :class:`~active_data_flow.engine.OriginTracker` says it)."""
    if origins is None or index < 0:
        return {}
    return origins.locate(index if positions is None else positions[index])


def origins_of(origins: Origins | None, positions: list[int] | None, count: int) -> Origins | None:
    """The origins of an element's ``count`` records, for a :class:`~active_data_flow.source.ReaderBatch`."""
    if origins is None or positions is None:
        return origins
    out = Origins()
    for i in range(count):
        out.add(1, origin_at(origins, positions, i))
    return out


class StageTracker:
    """Where the records of one step's input and output sit in the element's batch: the local
    runner's :class:`~active_data_flow.engine.OriginTracker` over one step."""

    def __init__(self, tracker: Any, records: list[Any]) -> None:
        self.tracker, self.records = tracker, records
        self.failed: list[DeadLetter] = []
        self._ids: dict[int, int] | None = None

    def index_of(self, record: Any) -> int:
        """The position of ``record`` (one of the step's input records) in its input; -1: none."""
        if self._ids is None:
            self._ids = {id(r): i for i, r in enumerate(self.records)}
        return self._ids.get(id(record), -1)

    def positions_after(self, out: list[Any], before: list[int] | None) -> list[int] | None:
        """The positions of the step's output records in the element's batch (None: the same as before)."""
        self.tracker.step_done(out, self.failed)
        local = self.tracker._positions(1)
        if local is None:
            return before
        return [p if p < 0 or before is None else before[p] for p in local]
