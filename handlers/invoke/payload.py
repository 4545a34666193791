"""Trigger payloads: the records and parameters a message or an event may carry.

Standard library only at module level (this runs inside a Spin component).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from active_data_flow.handlers.invoke.errors import BadRequest

__all__ = ["PAYLOAD_KEYS", "TriggerPayload", "parse_trigger_payload"]


#: the keys a trigger payload may carry (see :mod:`active_data_flow.handlers.invoke.params`)
PAYLOAD_KEYS = ("records", "params")


@dataclass
class TriggerPayload:
    """A parsed trigger payload: ``{"records", "params", "reply_to"}`` or an array of records.

    ``refused`` names the keys the payload carried that a request may not set (``config``,
    ``spec``…): :func:`prepare_flow` refuses the request with them (400), naming the flow's
    declared parameters."""

    records: list[Any] | None = None
    params: dict[str, Any] | None = None
    refused: list[str] = field(default_factory=list)
    reply_to: str | None = None
    #: whether the payload said ``reply_to`` (``null`` or ``""``: do not publish)
    reply_to_given: bool = False


def _refused_key(key: str, value: Any) -> str:
    shown = key if len(key) <= 80 else key[:77] + "..."
    if isinstance(value, Mapping) and value:
        inner = [str(k) for k in value][:8]
        return f"body key {shown!r} ({', '.join(inner)}{', …' if len(value) > 8 else ''})"
    return f"body key {shown!r}"


def parse_trigger_payload(data: bytes | str, *, allowed: Iterable[str] = PAYLOAD_KEYS) -> TriggerPayload:
    """Parse a JSON payload; empty means ``{}``. Raises :class:`BadRequest` saying what is wrong
    with its shape; keys other than ``allowed`` are kept in ``refused`` (see :class:`TriggerPayload`)."""
    keys = tuple(allowed)
    text = data.strip() if isinstance(data, bytes | str) else data
    if not text:
        return TriggerPayload()
    try:
        value = json.loads(text)
    except ValueError as exc:  # UnicodeDecodeError included
        raise BadRequest(f"malformed JSON: {exc}") from None
    if isinstance(value, list):
        return TriggerPayload(records=value)
    if not isinstance(value, dict):
        raise BadRequest(
            f"the payload must be a JSON object {{{', '.join(keys)}}} or an array of records, "
            f"got {type(value).__name__}"
        )
    refused = [_refused_key(str(k), v) for k, v in value.items() if k not in keys]
    records = value.get("records")
    if records is not None and not isinstance(records, list):
        raise BadRequest(f"'records' must be a JSON array, got {type(records).__name__}")
    params = value.get("params")
    if params is not None and not isinstance(params, dict):
        raise BadRequest(f"'params' must be a JSON object of parameter values, got {type(params).__name__}")
    reply_to = value.get("reply_to") if "reply_to" in keys else None
    if reply_to is not None and not isinstance(reply_to, str):
        raise BadRequest(f"'reply_to' must be a channel name (string), got {type(reply_to).__name__}")
    return TriggerPayload(
        records=records, params=params, refused=refused, reply_to=reply_to or None,
        reply_to_given="reply_to" in keys and "reply_to" in value,
    )
