"""Identifiers and timestamps: request, run, error and lease ids; the UTC time as text.

Standard library only. ``uuid.uuid4().hex`` would do, but importing ``uuid`` imports
``platform`` (and compiles its regular expressions): a few milliseconds of every Lambda cold
start and of every Spin component's snapshot, for ids that are only ever compared as text.
"""

from __future__ import annotations

import datetime as _dt
import os

__all__ = ["new_id", "new_run_id", "utc_now_iso"]


def new_id(length: int = 32) -> str:
    """``length`` random hexadecimal digits (32, the default, is as many as a UUID has)."""
    return os.urandom((length + 1) // 2).hex()[:length]


def utc_now_iso() -> str:
    """Now in UTC, ISO 8601 to the millisecond with a ``Z`` (``2026-01-31T06:00:00.123Z``)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id() -> str:
    """A run id: the UTC time to the second, then 8 random digits (``20260131T060000Z-1a2b3c4d``);
    ids made later sort after earlier ones."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + new_id(8)
