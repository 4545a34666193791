"""Step functions that hold a run until the test lets it go on (``flowlib.gates:NAME``)."""

from __future__ import annotations

import os
import time
from typing import Any


def wait_at_gate(record: dict[str, Any], gate: str = "", timeout: float = 120.0) -> dict[str, Any]:
    """Hold a record whose ``gate`` field is truthy until the file ``gate`` exists (so the
    batches before it are committed and the run is seen in progress); fail after ``timeout``
    seconds so that a test which never opens the gate does not hang."""
    if record.get("gate") and gate:
        deadline = time.monotonic() + timeout
        while not os.path.exists(gate):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gate {gate} was not opened within {timeout} s")
            time.sleep(0.02)
    return record
