"""What an operator of a Flink job reports besides its records: counts and dead letters."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from active_data_flow.context import RunContext
from active_data_flow.engine import (
    DeadLetterWriter,
)
from active_data_flow.flink_job.elements import letter_dict
from active_data_flow.record import DeadLetter
from active_data_flow.registry import registry

__all__ = ['Outbox', 'OutboxFiles', 'worker_dir']


class OutboxFiles:
    """Where a subtask writes its dead letters and its counts (read back by the client)."""

    def __init__(self, run_dir: str, op: str, subtask: int) -> None:
        os.makedirs(run_dir, exist_ok=True)
        self.letters_path = os.path.join(run_dir, f"dead_letters-{op}-{subtask}.jsonl")
        self.counts_path = os.path.join(run_dir, f"counts-{op}-{subtask}.json")
        self._letters: Any = None

    def letter(self, data: Mapping[str, Any]) -> None:
        if self._letters is None:
            self._letters = open(self.letters_path, "a", encoding="utf-8")
        self._letters.write(json.dumps(data, default=str) + "\n")

    def close(self, counts: Mapping[str, int]) -> None:
        if self._letters is not None:
            self._letters.close()
        with open(self.counts_path, "w", encoding="utf-8") as f:
            json.dump(dict(counts), f)


class Outbox:
    """What an operator reports besides its records: counts and dead letters.

    A bounded job *carries* them downstream in the elements (``c``: counts, ``d``: dead letters),
    so the client gets them back through ``execute_and_collect`` — no filesystem is shared
    between the client and the TaskManagers — and the sink operator writes the dead letters to
    the flow's ``dead_letter`` sink when it has one. An unbounded job (whose collect would never
    end) and a detached one write them to files in the worker's run directory instead.
    """

    def __init__(self, flow: Any, run_id: str, run_dir: str, op: str, subtask: int, carry: bool,
                 metrics: Any = None) -> None:
        self.flow_name, self.run_id, self.carry = flow.name, run_id, carry
        self.metrics = metrics  # the operator's Flink metric group: counters adf_<count> (REST, while it runs)
        self._counters: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.pending: dict[str, int] = {}
        self.letters: list[dict[str, Any]] = []
        self.files = None if carry else OutboxFiles(run_dir, op, subtask)
        self.dead: Any = None  # an uncarried job's dead letters go straight to the flow's dead-letter sink
        if not carry and flow.dead_letter and op != "sink":  # (the sink operator's own go there already)
            self.dead = DeadLetterWriter(flow.dead_letter, RunContext(flow_name=flow.name, run_id=run_id,
                                                                      state_dir=run_dir, reader_id=subtask),
                                         None, registry)
            self.dead.open()

    def count(self, key: str, n: int = 1) -> None:
        if n:
            self.counts[key] = self.counts.get(key, 0) + n
            if self.metrics is not None:
                counter = self._counters.get(key)
                if counter is None:
                    counter = self._counters[key] = self.metrics.counter(f"adf_{key}")
                counter.inc(n)
            if self.carry:
                self.pending[key] = self.pending.get(key, 0) + n

    def letter(self, letter: DeadLetter) -> None:
        self.count("dead_letters")
        if self.dead is not None:
            self.dead.write([letter])
        elif self.files is not None:
            self.files.letter(letter_dict(letter, self.flow_name, self.run_id))
        else:
            self.letters.append(letter_dict(letter, self.flow_name, self.run_id))

    def rows(self, rows: list[dict[str, Any]]) -> None:
        """Dead letters already made into rows (the sink's, from its writer)."""
        if self.files is not None:
            for row in rows:
                self.files.letter(row)
        else:
            self.letters.extend(rows)

    def take(self, carried: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What goes downstream with the next element: what came in (``carried``) and what this added."""
        counts = dict((carried or {}).get("c") or {})
        for k, v in self.pending.items():
            counts[k] = counts.get(k, 0) + v
        letters = [*((carried or {}).get("d") or []), *self.letters]
        self.pending, self.letters = {}, []
        return {"c": counts, "d": letters} if (counts or letters) else {}

    def close(self) -> None:
        if self.dead is not None:
            self.dead.close()
        if self.files is not None:
            self.files.close(self.counts)


def worker_dir(run_dir: str | None, flow: str, run_id: str) -> str:
    """The run directory a subtask writes to: the client's on the local mini-cluster, else one
    of the TaskManager host's own (nothing is assumed shared with the client)."""
    if run_dir:
        return run_dir
    import tempfile

    return os.path.join(tempfile.gettempdir(), "adf-flink", flow, run_id)
