"""Step functions of the run-integrity tests (``flowlib.integrity:NAME``)."""

from __future__ import annotations

import os
from typing import Any


def die_at(record: dict[str, Any], n: int = 0) -> dict[str, Any]:
    """Kill the whole process (no clean-up, like a crash) when it meets record ``n``."""
    if record.get("n") == n:
        os._exit(3)
    return record


def reject_when(record: dict[str, Any], field: str = "bad", env: str = "") -> dict[str, Any]:
    """Refuse a record whose ``field`` is truthy — unless ``env`` names an environment variable set to 1
    (the "fix" a replay is run after)."""
    if record.get(field) and not (env and os.environ.get(env) == "1"):
        raise ValueError(f"record {record.get('n')} is marked {field}")
    return record


def triple(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One record in, three out."""
    return [dict(record, copy=i) for i in range(3)]


def drop_odd(record: dict[str, Any]) -> dict[str, Any] | None:
    return None if record["n"] % 2 else record


def new_dict(record: dict[str, Any]) -> dict[str, Any]:
    """A new record object per record (the engine cannot follow it by identity)."""
    return {**record, "seen": True}
