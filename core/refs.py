"""``${params.x}``, ``${context.x}`` and ``${record.y}`` references in step options.

* ``${params.name}`` — a parameter the flow declares (the spec's ``params:`` section, a class-form
  flow's ``configuration_attributes``). Parameters are the only values a request may give a flow,
  so they are resolved once, when the spec is parsed (:func:`resolve_params`, called by
  :func:`active_data_flow.spec.parse_spec` with the run's values): every step type sees the typed value, a
  python step's ``options`` included. They are resolved in ``steps`` and ``context`` only — the
  source, the sink, the dead letters and the runtime never take a request's value.
* ``${context.x}`` and ``${record.y}`` — resolved for each call by the steps that support them
  (``http``, ``sql``, ``wasm``: :func:`resolve`).

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

__all__ = ["ReferenceError_", "has_refs", "param_refs", "resolve", "resolve_params"]

_REF = re.compile(r"\$\$\{|\$\{(params|context|record)\.([A-Za-z0-9_.\-]+)\}")
_PARAM_REF = re.compile(r"\$\$\{|\$\{params\.([A-Za-z0-9_.\-]+)\}")


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


def _lookup(scope: str, path: str, scopes: Mapping[str, Mapping[str, Any] | None]) -> Any:
    value: Any = scopes.get(scope)
    if value is None:
        what = "no record" if scope == "record" else "no parameters were resolved"
        raise ReferenceError_(f"${{{scope}.{path}}} is not available here ({what})")
    noun = "parameters" if scope == "params" else scope
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise ReferenceError_(f"${{{scope}.{path}}}: no {part!r} in the {noun}")
    return value


def _substitute(value: Any, pattern: re.Pattern[str], lookup: Any) -> Any:
    """``value`` with every match of ``pattern`` replaced through ``lookup(match)``; a match
    without a reference (``$${``) is handed to ``lookup`` too, which decides what it becomes."""
    if isinstance(value, str):
        if "${" not in value:
            return value
        whole = pattern.fullmatch(value)
        if whole and whole.group(whole.re.groups):
            return lookup(whole, True)
        return pattern.sub(lambda m: lookup(m, False), value)
    if isinstance(value, Mapping):
        return {k: _substitute(v, pattern, lookup) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_substitute(v, pattern, lookup) for v in value]
    return value


def _text(found: Any) -> str:
    return found if isinstance(found, str) else json.dumps(found, default=str)


def resolve(
    value: Any,
    context: Mapping[str, Any],
    record: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> Any:
    """``value`` with every reference replaced (mappings and lists are walked); ``$${`` becomes ``${``."""
    scopes = {"context": context, "record": record, "params": params}

    def lookup(m: re.Match[str], whole: bool) -> Any:
        if not m.group(1):
            return "${"
        found = _lookup(m.group(1), m.group(2), scopes)
        return found if whole else _text(found)

    return _substitute(value, _REF, lookup)


def resolve_params(value: Any, params: Mapping[str, Any]) -> Any:
    """``value`` with its ``${params.x}`` references replaced by the values in ``params``.

    ``${context.x}``, ``${record.y}`` and ``$${`` are left as written (the step resolves them
    per call). Raises :class:`ReferenceError_` naming a parameter that is not in ``params``.
    """
    scopes = {"params": params}

    def lookup(m: re.Match[str], whole: bool) -> Any:
        if not m.group(1):
            return m.group(0)
        found = _lookup("params", m.group(1), scopes)
        return found if whole else _text(found)

    return _substitute(value, _PARAM_REF, lookup)


def param_refs(value: Any) -> list[str]:
    """The ``${params.x}`` references in ``value`` (as written: ``params.x``), in order."""
    if isinstance(value, str):
        return [f"params.{m.group(1)}" for m in _PARAM_REF.finditer(value) if m.group(1)] if "${" in value else []
    if isinstance(value, Mapping):
        return [ref for v in value.values() for ref in param_refs(v)]
    if isinstance(value, list | tuple):
        return [ref for v in value for ref in param_refs(v)]
    return []
