"""Sinks that misbehave on purpose, writing JSON lines so the tests can read what landed."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from active_data_flow.attributes import Attribute
from active_data_flow.sink import Sink


class _JsonlSink(Sink):
    attributes = (Attribute("path", str, required=True), Attribute("fail_first", int, default=0))

    def open(self) -> None:
        self._f = open(self.option("path"), "a", encoding="utf-8")
        self._failures_left = self.option("fail_first")

    def _append(self, records: Sequence[dict[str, Any]]) -> None:
        self._f.write("".join(json.dumps(r) + "\n" for r in records))

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class FlakySink(_JsonlSink):
    """Fails its first ``fail_first`` batch writes (a database restarting), then works."""

    type_name = "flaky"

    def write_batch(self, records: Sequence[dict[str, Any]]) -> None:
        if self._failures_left > 0:
            self._failures_left -= 1
            raise ConnectionError("database is restarting")
        self._append(records)


class PickySink(_JsonlSink):
    """Refuses records whose ``n`` is a multiple of 10 (a constraint violation), atomically per batch."""

    type_name = "picky"

    def write_batch(self, records: Sequence[dict[str, Any]]) -> None:
        for r in records:
            if r["n"] % 10 == 0:
                raise ValueError(f"check constraint violated by n={r['n']}")
        self._append(records)


def pid_of(path: str) -> int:
    return os.getpid()
