"""Columns of the ``iceberg`` connectors: their types, partitions and names.

The column type names ``types`` accepts (:func:`parse_type`), the entries of ``partition_by``
(:func:`parse_partition`), the attribute checks built on both, the type a new table's column
gets from a batch (:func:`infer_spec`, :func:`arrow_type`) and lists of column names
(:func:`as_names`).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "arrow_type",
    "as_names",
    "check_partition",
    "check_types",
    "infer_spec",
    "parse_partition",
    "parse_type",
]


def as_names(value: Any) -> list[str]:
    """One column name or a list of them (``key``, ``columns``) as a list; None as none."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


_TYPE_ALIASES = {
    "string": "string",
    "str": "string",
    "text": "string",
    "json": "string",
    "long": "long",
    "bigint": "long",
    "int64": "long",
    "integer": "long",
    "int": "int",
    "int32": "int",
    "double": "double",
    "float64": "double",
    "number": "double",
    "float": "float",
    "float32": "float",
    "boolean": "boolean",
    "bool": "boolean",
    "date": "date",
    "time": "time",
    "timestamp": "timestamp",
    "datetime": "timestamp",
    "timestamptz": "timestamptz",
    "binary": "binary",
    "bytes": "binary",
}
_DECIMAL_RE = re.compile(r"^decimal\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)$", re.IGNORECASE)


def parse_type(name: str) -> tuple[Any, ...]:
    """A column type name of ``types`` as a tuple: ``("long",)``, ``("decimal", 10, 2)``.

    Raises ``ValueError`` naming the accepted types.
    """
    text = str(name).strip()
    m = _DECIMAL_RE.match(text)
    if m:
        precision, scale = int(m.group(1)), int(m.group(2))
        if not 1 <= precision <= 38 or scale > precision:
            raise ValueError(f"decimal({precision}, {scale}): precision must be 1..38 and scale at most the precision")
        return ("decimal", precision, scale)
    canonical = _TYPE_ALIASES.get(text.lower())
    if canonical is None:
        raise ValueError(
            f"unknown column type {name!r} (types: {', '.join(sorted(set(_TYPE_ALIASES.values())))}, decimal(p, s))"
        )
    return (canonical,)


def check_types(value: Any) -> str | None:
    for field_name, type_name in value.items():
        if not isinstance(type_name, str):
            return f"field {field_name!r}: the type must be a string, got {type_name!r}"
        try:
            parse_type(type_name)
        except ValueError as exc:
            return f"field {field_name!r}: {exc}"
    return None


_PARTITION_RE = re.compile(r"^\s*([A-Za-z]+)\s*\(\s*(?:(\d+)\s*,\s*)?([^(),]+?)\s*\)\s*$")
_TRANSFORMS = ("year", "month", "day", "hour", "bucket", "truncate", "identity")


def parse_partition(entry: str) -> tuple[str, str]:
    """``"country"`` → ``("identity", "country")``, ``"day(ts)"`` → ``("day", "ts")``,
    ``"bucket(16, id)"`` → ``("bucket[16]", "id")`` (pyiceberg's transform names).

    Raises ``ValueError`` for anything else.
    """
    text = str(entry).strip()
    m = _PARTITION_RE.match(text)
    if m is None:
        if not text or any(c in text for c in "(),"):
            raise ValueError(
                f"bad partition {entry!r}: give a column, transform(column) or bucket(N, column)/truncate(W, column)"
            )
        return ("identity", text)
    transform, width, column = m.group(1).lower(), m.group(2), m.group(3)
    if transform not in _TRANSFORMS:
        raise ValueError(f"bad partition {entry!r}: unknown transform {transform!r} ({', '.join(_TRANSFORMS)})")
    if transform in ("bucket", "truncate"):
        if width is None or int(width) < 1:
            raise ValueError(f"bad partition {entry!r}: {transform} needs a positive width, e.g. {transform}(16, {column})")
        return (f"{transform}[{int(width)}]", column)
    if width is not None:
        raise ValueError(f"bad partition {entry!r}: {transform} takes only a column")
    return (transform, column)


def check_partition(value: Any) -> str | None:
    for entry in [value] if isinstance(value, str) else value:
        if not isinstance(entry, str):
            return f"every entry must be a string, got {entry!r}"
        try:
            parse_partition(entry)
        except ValueError as exc:
            return str(exc)
    return None


def infer_spec(values: Sequence[Any]) -> tuple[Any, ...]:
    """The column type of a field from its values in a batch (see the sink docs)."""
    kinds: set[str] = set()
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool):
            kinds.add("boolean")
        elif isinstance(value, int):
            kinds.add("long")
        elif isinstance(value, float):
            kinds.add("double")
        elif isinstance(value, datetime.datetime):
            kinds.add("timestamptz" if value.tzinfo is not None else "timestamp")
        elif isinstance(value, datetime.date):
            kinds.add("date")
        elif isinstance(value, datetime.time):
            kinds.add("time")
        elif isinstance(value, bytes | bytearray):
            kinds.add("binary")
        else:
            kinds.add("string")  # str, Decimal, UUID, dict/list (JSON text)
    if len(kinds) == 1:
        return (kinds.pop(),)
    if kinds == {"long", "double"}:
        return ("double",)
    return ("string",)


def arrow_type(pa: Any, spec: tuple[Any, ...]) -> Any:
    kind = spec[0]
    simple = {
        "string": pa.string(),
        "long": pa.int64(),
        "int": pa.int32(),
        "double": pa.float64(),
        "float": pa.float32(),
        "boolean": pa.bool_(),
        "date": pa.date32(),
        "time": pa.time64("us"),
        "timestamp": pa.timestamp("us"),
        "timestamptz": pa.timestamp("us", tz="UTC"),
        "binary": pa.binary(),
    }
    if kind == "decimal":
        return pa.decimal128(int(spec[1]), int(spec[2]))
    return simple[kind]
