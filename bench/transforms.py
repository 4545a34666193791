"""The map step both sides of bench/engine.py run: the same work per record."""

from __future__ import annotations

from typing import Any


def enrich(record: dict[str, Any]) -> dict[str, Any]:
    record["total"] = round(record["price"] * record["quantity"], 2)
    record["customer_upper"] = record["customer"].upper()
    return record
