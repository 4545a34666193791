"""The conformance flow's Python step (bundled beside the spec: Spin components and the
Lambda flows directory carry it, the other targets import it from the spec's directory)."""

from __future__ import annotations

from typing import Any


def enrich(record: dict[str, Any]) -> dict[str, Any]:
    """Price a typed record; the record named ``Boom`` is refused (a step dead letter)."""
    if record["name"] == "Boom":
        raise ValueError(f"refusing record {record['id']}: the name is Boom")
    record["total"] = round(record["price"] * record["qty"], 2)
    record["label"] = f"{record['name'].upper()} @ {record['city'] or '?'}"
    record["note_lines"] = len(record["note"].splitlines()) if record["note"] else 0
    return record
