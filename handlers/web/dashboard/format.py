"""How the dashboard shows values: times, durations, intervals, sizes and counts (the
templates' filters), the wait before another login, and a dead letter on a run's page.

Standard library only.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

#: a record whose JSON is longer than this is shortened on the run page, the whole of it a click away
RECORD_PREVIEW = 160


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"  # pragma: no cover


def when(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return str(value.strftime("%Y-%m-%d %H:%M:%S")) + " UTC"
    if isinstance(value, str):
        try:
            return when(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return value
    return str(value)


def wait_text(seconds: int) -> str:
    return f"{seconds} s" if seconds < 120 else f"{math.ceil(seconds / 60)} minutes"


def duration(seconds: Any) -> str:
    if seconds is None:
        return "—"
    s = float(seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.2f} s"
    minutes, rest = divmod(int(s), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def interval(seconds: Any) -> str:
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size and s % size == 0:
            return f"{s // size} {unit}"
    return f"{s} s"


def count(value: Any) -> str:
    return "—" if value is None else str(value)


def first_line(value: Any, limit: int = 120) -> str:
    text = str(value or "").strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _origin(origin: Any) -> str:
    """Where a dead letter's record came from, e.g. ``/in/orders.jsonl, line 12, offset 340``."""
    if not isinstance(origin, Mapping) or not origin:
        return "—" if not origin else str(origin)
    parts: list[str] = []
    for key, value in origin.items():
        if isinstance(value, (Mapping, list)):
            value = json.dumps(value, ensure_ascii=False, default=str)
        parts.append(str(value) if key in ("file", "split") else f"{str(key).replace('_', ' ')} {value}")
    return ", ".join(parts)


def letter_view(letter: Mapping[str, Any]) -> dict[str, Any]:
    """What the run page shows of a dead letter: the record as compact JSON (shortened when
    long) and indented JSON (all of it)."""
    record = letter.get("record")
    compact = record if isinstance(record, str) else json.dumps(record, ensure_ascii=False, default=str)
    full = record if isinstance(record, str) else json.dumps(record, ensure_ascii=False, default=str, indent=2)
    return {
        **letter,
        "origin_text": _origin(letter.get("origin")),
        "record_text": compact,
        "record_full": full,
        "record_short": compact[:RECORD_PREVIEW] + "…" if len(compact) > RECORD_PREVIEW else None,
    }
