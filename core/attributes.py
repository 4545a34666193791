"""Declared configuration attributes of connectors, steps and flows.

A component lists what it accepts as :class:`Attribute` values in its ``attributes``
class variable; :func:`validate_config` checks a mapping against them and reports every
problem at once (unknown keys, missing required keys, wrong types, bad choices).

Example::

    class MySink(Sink):
        attributes = (
            Attribute("url", str, required=True, secret=True, help="database URL"),
            Attribute("batch_size", int, default=500),
        )
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from active_data_flow.errors import ConfigError

__all__ = [
    "MISSING",
    "Attribute",
    "Configurable",
    "at_least_one",
    "column_names",
    "describe_attributes",
    "not_negative",
    "one_character",
    "validate_config",
]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()

_TYPE_NAMES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "list",
    dict: "mapping",
    object: "any",
}


@dataclass(frozen=True)
class Attribute:
    """One configuration key a component accepts.

    ``type`` is a Python type (``str``, ``int``, ``float``, ``bool``, ``list``, ``dict`` or
    ``object`` for anything) or a tuple of them. Ints are accepted where floats are asked
    for; strings from environment variables or ``--set`` are coerced when unambiguous.
    A ``secret`` attribute is redacted in logs, run records and ``adf config explain``.
    """

    name: str
    type: Any = str
    required: bool = False
    default: Any = MISSING
    secret: bool = False
    help: str = ""
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = field(default=None, compare=False)

    def type_name(self) -> str:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        return " or ".join(_TYPE_NAMES.get(t, getattr(t, "__name__", str(t))) for t in types)

    def coerce(self, value: Any) -> Any:
        """Return ``value`` as this attribute's type, or raise ``ValueError`` saying why."""
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        if object in types:
            return value
        for t in types:
            if t is bool:
                if isinstance(value, bool):
                    return value
                if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                    return value.lower() in ("true", "1", "yes")
                continue
            if t in (int, float) and isinstance(value, bool):
                continue
            if t is float and isinstance(value, int | float):
                return float(value)
            if isinstance(value, t):
                return value
            if isinstance(value, str) and t in (int, float):
                try:
                    return t(value)
                except ValueError:
                    continue
            if t is list and isinstance(value, tuple):
                return list(value)
        raise ValueError(f"expected {self.type_name()}, got {type(value).__name__} {value!r:.60}")


def validate_config(
    attributes: Sequence[Attribute],
    config: Mapping[str, Any] | None,
    where: str,
    *,
    allow_extra: Iterable[str] = ("type",),
) -> dict[str, Any]:
    """Check ``config`` against ``attributes``; return it with defaults filled in.

    Raises :class:`ConfigError` listing *every* problem found.
    """
    config = dict(config or {})
    known = {a.name: a for a in attributes}
    extra_ok = set(allow_extra)
    problems: list[str] = []
    out: dict[str, Any] = {}
    for key in config:
        if key not in known and key not in extra_ok:
            hint = ", ".join(sorted(known)) or "(none)"
            problems.append(f"unknown key {key!r} (accepted keys: {hint})")
    for attr in attributes:
        if attr.name not in config or config[attr.name] is None:
            if attr.required:
                problems.append(f"{attr.name!r} is required ({attr.type_name()}{': ' + attr.help if attr.help else ''})")
            elif attr.default is not MISSING:
                d = attr.default
                out[attr.name] = list(d) if isinstance(d, list) else dict(d) if isinstance(d, dict) else d
            else:
                out[attr.name] = None
            continue
        try:
            value = attr.coerce(config[attr.name])
        except ValueError as exc:
            problems.append(f"{attr.name!r}: {exc}")
            continue
        if attr.choices is not None and value not in attr.choices:
            problems.append(f"{attr.name!r}: {value!r} is not one of {', '.join(map(repr, attr.choices))}")
            continue
        if attr.check is not None:
            reason = attr.check(value)
            if reason:
                problems.append(f"{attr.name!r}: {reason}")
                continue
        out[attr.name] = value
    for key in extra_ok:
        if key in config:
            out[key] = config[key]
    if problems:
        raise ConfigError(where, problems)
    return out


def describe_attributes(attributes: Sequence[Attribute]) -> list[dict[str, Any]]:
    """A JSON-friendly description of declared attributes (for ``adf connectors``)."""
    rows = []
    for a in attributes:
        row: dict[str, Any] = {"name": a.name, "type": a.type_name(), "required": a.required}
        if a.default is not MISSING:
            row["default"] = a.default
        if a.secret:
            row["secret"] = True
        if a.choices:
            row["choices"] = list(a.choices)
        if a.help:
            row["help"] = a.help
        rows.append(row)
    return rows


class Configurable:
    """Base of components configured by a mapping checked against ``attributes``.

    Subclasses extend ``attributes`` (a tuple of :class:`Attribute`); the validated values
    are in ``self.config`` and readable as ``self.option(name)``.
    """

    attributes: tuple[Attribute, ...] = ()
    #: the registered type name (``file``, ``sql``…), set by the registry or the subclass
    type_name: str = ""

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        merged = dict(config or {})
        merged.update(kwargs)
        where = f"{self._kind()} {self.type_name or type(self).__name__!r}"
        self.config: dict[str, Any] = validate_config(self.attributes, merged, where)

    @classmethod
    def _kind(cls) -> str:
        return "component"

    def option(self, name: str) -> Any:
        return self.config.get(name)

    @classmethod
    def secret_keys(cls) -> set[str]:
        return {a.name for a in cls.attributes if a.secret}


# Checks several connectors' attributes share (``Attribute(check=...)``).


def at_least_one(value: Any) -> str | None:
    return None if value >= 1 else f"must be at least 1, got {value}"


def not_negative(value: Any) -> str | None:
    return None if value >= 0 else f"must not be negative, got {value}"


def one_character(value: Any) -> str | None:
    return None if isinstance(value, str) and len(value) == 1 else f"must be one character, got {value!r}"


def column_names(value: Any) -> str | None:
    """A column name or a non-empty list of distinct column names."""
    names = [value] if isinstance(value, str) else value
    if not names:
        return "must name at least one column"
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        return f"column names must be non-empty strings, got {bad[0]!r}"
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        return f"column {dupes[0]!r} is listed twice"
    return None


def checked_init(
    obj: Configurable,
    config: Mapping[str, Any] | None,
    kwargs: Mapping[str, Any],
    cross_check: Callable[[Mapping[str, Any]], list[str]],
) -> None:
    """Validate like :class:`Configurable` plus ``cross_check`` (the problems that involve
    several attributes); report every problem at once as one :class:`ConfigError`."""
    problems: list[str] = []
    try:
        Configurable.__init__(obj, config, **kwargs)
        values: Mapping[str, Any] = obj.config
    except ConfigError as exc:
        problems.extend(exc.problems)
        values = {**dict(config or {}), **kwargs}
    problems.extend(cross_check(values))
    if problems:
        raise ConfigError(f"{obj._kind()} {obj.type_name!r}", problems)
