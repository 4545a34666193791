"""Pure-Python steps of the Spin example flows.

Standard library only, and no sockets, files or threads: componentize-py bundles this module
into the Spin components, and the same flows run unchanged on every other target.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

REQUIRED = ("id", "customer", "quantity", "unit_price")


def accept(record: dict[str, Any], currency: str = "EUR") -> dict[str, Any]:
    """Check an incoming order and price it: ``total = quantity * unit_price`` (2 decimals).

    A record without an id, customer, quantity or unit price, or with one that is not a
    number, raises ``ValueError``: the engine dead-letters it with that reason.
    """
    missing = [name for name in REQUIRED if record.get(name) in (None, "")]
    if missing:
        raise ValueError(f"order is missing {', '.join(missing)}")
    try:
        quantity = int(record["quantity"])
        unit_price = Decimal(str(record["unit_price"]))
    except (TypeError, ValueError, InvalidOperation) as exc:
        raise ValueError(f"order {record['id']}: quantity and unit_price must be numbers ({exc})") from exc
    record["quantity"] = quantity
    record["unit_price"] = float(unit_price)
    record["total"] = float((unit_price * quantity).quantize(Decimal("0.01")))
    record["currency"] = currency
    return record
