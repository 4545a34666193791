"""The attribute checks the ``rafka`` source and sink share."""

from __future__ import annotations

from typing import Any

from active_data_flow.connectors.rafka.client import TOPIC_RE

__all__ = ["check_positive", "topic_check"]


def topic_check(value: Any) -> str | None:
    """None when ``value`` is a valid topic name, else what is wrong with it."""
    return None if isinstance(value, str) and TOPIC_RE.match(value) else (
        "must be letters, digits, '.', '_' or '-' (no ':'), starting with a letter or digit"
    )


def check_positive(value: Any) -> str | None:
    """None when ``value`` is greater than 0, else what is wrong with it."""
    return None if value > 0 else f"must be greater than 0, got {value}"
