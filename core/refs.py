"""``${context.x}`` and ``${record.y}`` references in step options, resolved before a call.

A string that is exactly one reference takes the referenced value with its type
(``"${record.qty}"`` → ``3``); a reference inside a longer string is formatted into it
(``"https://api/x/${record.id}"``). Dotted paths reach into nested mappings and lists
(``${context.customer.tier}``, ``${record.items.0.sku}``). ``$${`` is a literal ``${``. An
unknown name is an error naming it, so a typo fails the record instead of sending "None".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["ReferenceError_", "has_refs", "resolve"]

_REF = re.compile(r"\$\$\{|\$\{(context|record)\.([A-Za-z0-9_.\-]+)\}")


class ReferenceError_(KeyError):
    """A reference to a name that is not there (``str()`` says which)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unresolved reference"


def has_refs(value: Any) -> bool:
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, Mapping):
        return any(has_refs(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_refs(v) for v in value)
    return False


def _lookup(scope: str, path: str, context: Mapping[str, Any], record: Mapping[str, Any] | None) -> Any:
    if scope == "record" and record is None:
        raise ReferenceError_(f"${{record.{path}}} is not available here (no record)")
    value: Any = context if scope == "context" else record
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise ReferenceError_(f"${{{scope}.{path}}}: no {part!r} in the {scope}")
    return value


def resolve(value: Any, context: Mapping[str, Any], record: Mapping[str, Any] | None = None) -> Any:
    """``value`` with every reference replaced (mappings and lists are walked)."""
    if isinstance(value, str):
        if "${" not in value:
            return value
        whole = _REF.fullmatch(value)
        if whole and whole.group(1):
            return _lookup(whole.group(1), whole.group(2), context, record)

        def sub(m: re.Match[str]) -> str:
            if not m.group(1):
                return "${"
            found = _lookup(m.group(1), m.group(2), context, record)
            return found if isinstance(found, str) else json.dumps(found, default=str)

        return _REF.sub(sub, value)
    if isinstance(value, Mapping):
        return {k: resolve(v, context, record) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [resolve(v, context, record) for v in value]
    return value
