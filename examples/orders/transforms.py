"""Steps of the example flow: a plain function taking a record and returning it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

VAT = {"DE": Decimal("0.19"), "FR": Decimal("0.20"), "NL": Decimal("0.21"), "US": Decimal("0")}


def enrich(record: dict[str, Any], default_vat: float = 0.2) -> dict[str, Any]:
    """Add net, VAT and gross totals; an unknown country uses ``default_vat``."""
    net = Decimal(record["unit_price"]) * record["quantity"]
    rate = VAT.get(record["country"], Decimal(str(default_vat)))
    record["net"] = float(net.quantize(Decimal("0.01")))
    record["vat"] = float((net * rate).quantize(Decimal("0.01")))
    record["gross"] = round(record["net"] + record["vat"], 2)
    return record
