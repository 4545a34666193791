"""Powertools idempotency for the SQS and S3 handlers, on when ``ADF_IDEMPOTENCY_TABLE`` is set.

The table (SAM: ``AWS::DynamoDB::Table`` with partition key ``id`` (S), TTL attribute
``expiration``) keeps one item per processed event key; a redelivered event with the same
key returns the stored result instead of running the flow again. A run that raises (a failed
flow) leaves no record, so a redelivery runs it again. ``ADF_IDEMPOTENCY_TTL_SECONDS``
(default 3600) is how long a key is remembered. Unset table: idempotency is off (every
delivery runs). The DynamoDB client honours ``AWS_ENDPOINT_URL`` (moto in tests).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["once"]

_layers: dict[str, Any] = {}
_lock = threading.Lock()


def _layer(table: str) -> Any:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    with _lock:
        layer = _layers.get(table)
        if layer is None:
            layer = _layers[table] = DynamoDBPersistenceLayer(table_name=table)
        return layer


def once(
    run: Callable[[dict[str, Any]], dict[str, Any]], key: dict[str, Any], context: Any = None
) -> dict[str, Any]:
    """``run(key)`` at most once per ``key`` (a JSON object, hashed whole) while the key is
    remembered; the result must be JSON-serialisable (it is returned again to duplicates)."""
    table = os.environ.get("ADF_IDEMPOTENCY_TABLE")
    if not table:
        return run(key)
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function

    config = IdempotencyConfig(expires_after_seconds=int(os.environ.get("ADF_IDEMPOTENCY_TTL_SECONDS") or 3600))
    if context is not None:
        config.register_lambda_context(context)

    @idempotent_function(  # type: ignore[untyped-decorator]
        data_keyword_argument="data", persistence_store=_layer(table), config=config
    )
    def guarded(data: dict[str, Any]) -> dict[str, Any]:
        return run(data)

    result: dict[str, Any] = guarded(data=key)
    return result
