"""JSON array files (:func:`read_json_array`, :func:`split_json_elements`) and the words of a
JSON dead letter shared with JSON Lines (:func:`json_reason`, :func:`json_type`).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Sequence
from typing import Any

from active_data_flow.codec import codec
from active_data_flow.formats.common import detect_bom
from active_data_flow.record import DeadLetter, Record

__all__ = [
    "json_reason",
    "json_type",
    "read_json_array",
    "split_json_elements",
]


def json_reason(raw: bytes | str, exc: Exception, encoding: str) -> tuple[str, str]:
    """A reason independent of the codec in use (the stdlib's words), and the error type."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode(encoding)
        except UnicodeDecodeError as uexc:
            return f"invalid {encoding} text: {uexc.reason} at column {uexc.start + 1}", "UnicodeDecodeError"
    try:
        json.loads(raw)
    except json.JSONDecodeError as jexc:
        msg = jexc.msg.removesuffix(" at")  # "Invalid control character at"
        if jexc.lineno > 1:
            return f"invalid JSON: {msg} at line {jexc.lineno} column {jexc.colno}", "JSONDecodeError"
        return f"invalid JSON: {msg} at column {jexc.colno}", "JSONDecodeError"
    except ValueError as vexc:
        return f"invalid JSON: {vexc}", type(vexc).__name__
    return f"invalid JSON: {exc}", type(exc).__name__


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def read_json_array(data: bytes, *, path: str, encoding: str = "utf-8") -> tuple[list[Any], list[DeadLetter]]:
    """Parse a whole JSON file (bytes) that must be one array of objects.

    Returns the array's elements, or no elements and one dead letter for a file that does
    not parse or is not an array. Elements are not checked here, so that indexes stay stable
    for resuming: :func:`split_json_elements` turns a slice of them into records and dead letters.
    A byte-order mark decides the encoding.
    """
    bom, skip = detect_bom(data[:4])
    if bom is not None:
        data = data[skip:]
        encoding = bom
    utf8 = codecs.lookup(encoding).name == "utf-8"
    try:
        value = codec().loads(data if utf8 else data.decode(encoding))
    except ValueError as exc:
        text = data.decode(encoding, "replace")
        reason, etype = json_reason(data if utf8 else text, exc, encoding)
        line = _error_line(text)
        return [], [DeadLetter(text, reason, "source", etype, {"file": path, "line": line})]
    if not isinstance(value, list):
        return [], [
            DeadLetter(
                value,
                f"JSON file is not an array (got {json_type(value)})",
                "source",
                "ValueError",
                {"file": path, "line": 1},
            )
        ]
    return value, []


def _error_line(text: str) -> int:
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return exc.lineno
    except ValueError:
        return 1
    return 1


def split_json_elements(
    elements: Sequence[Any], start: int, stop: int, *, path: str
) -> tuple[list[Record], list[DeadLetter]]:
    """Elements ``[start, stop)`` of a parsed JSON array: objects as records, others as dead letters."""
    chunk = elements[start:stop]
    if set(map(type, chunk)) <= {dict}:
        return list(chunk), []
    records: list[Record] = []
    dead: list[DeadLetter] = []
    for i, value in enumerate(chunk, start):
        if type(value) is dict:
            records.append(value)
        else:
            dead.append(
                DeadLetter(
                    value,
                    f"JSON array element {i} is not an object (got {json_type(value)})",
                    "source",
                    "ValueError",
                    {"file": path, "index": i},
                )
            )
    return records, dead
