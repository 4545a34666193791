"""Step functions the test flows refer to as ``flowlib.steps:NAME``."""

from __future__ import annotations

import os
import time
from typing import Any

from active_data_flow.step import Routed, Step


def double(record: dict[str, Any]) -> dict[str, Any]:
    record["doubled"] = record["n"] * 2
    return record


def explode_on_sevens(record: dict[str, Any]) -> dict[str, Any]:
    if record["n"] % 7 == 0:
        raise ValueError(f"seven divides {record['n']}")
    return record


def fan_out(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(record, copy=i) for i in range(record["n"] % 3)]


def batch_upper(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for r in records:
        if r.get("name") == "boom":
            raise RuntimeError("boom in batch")
        r["name"] = str(r.get("name", "")).upper()
    return records


def slow(record: dict[str, Any], delay: float = 0.001) -> dict[str, Any]:
    """Slow enough that a test can kill a process mid-run."""
    time.sleep(delay)
    record["pid"] = os.getpid()
    return record


def is_even(record: dict[str, Any]) -> bool:
    return record["n"] % 2 == 0


#: records seen by :func:`tally` (tests count flow runs with it)
TALLY: list[dict[str, Any]] = []


def tally(record: dict[str, Any]) -> dict[str, Any]:
    TALLY.append(dict(record))
    return record


class RouteByField(Step):
    """Test step: routes each record to the step ids in its ``to`` field (a list), or on."""

    type_name = "route_by_field"

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        super().__init__({}, **kwargs)
        self.can_route = True

    def process_batch(self, records: list[Any], on_error: Any) -> list[Any]:
        out: list[Any] = []
        for r in records:
            to = r.get("to")
            out.append(r if to is None else Routed(r, tuple(to)))
        return out


def tag(record: dict[str, Any], label: str) -> dict[str, Any]:
    return {**record, "seen": [*record.get("seen", []), label]}


def die_mid_message(record: dict[str, Any]) -> dict[str, Any]:
    """Once per test (the marker file ADF_TEST_DIE_MARKER): at n == 5, the reader process writes
    the start of a message to the coordinator and is killed before the rest (as by SIGKILL or the
    OOM killer in the middle of a send)."""
    import signal
    import struct
    import sys

    marker = os.environ.get("ADF_TEST_DIE_MARKER")
    if marker and record.get("n") == 5 and not os.path.exists(marker):
        open(marker, "w").close()  # the replacement reader must not die again
        frame = sys._getframe()
        while frame is not None and "outbox" not in frame.f_locals:
            frame = frame.f_back
        assert frame is not None, "not running in a reader process"
        os.write(frame.f_locals["outbox"].fileno(), struct.pack("!i", 4096) + b"cut short")
        os.kill(os.getpid(), signal.SIGKILL)
    return record


def pace(records: list[dict[str, Any]], seconds: float = 0.05) -> list[dict[str, Any]]:
    """Batch step: wait ``seconds`` per batch, so a run lasts long enough for a test to act mid-run."""
    time.sleep(seconds)
    return records
