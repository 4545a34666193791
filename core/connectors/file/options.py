"""The attribute checks of the file connectors (the ``sftp`` connectors use them too).

Sizes (``67108864``, ``"64MB"``), CSV delimiters and quote characters, encodings, the CSV
options no single attribute can check, and source paths.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from active_data_flow.formats import duplicate_names, normalize_encoding

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: int | str) -> int:
    """Bytes from ``1048576``, ``"1048576"``, ``"64MB"``, ``"64M"``, ``"1.5GiB"`` (K/M/G/T are powers of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"must be a positive number of bytes, got {value}")
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"expected a size like 67108864 or '64MB', got {value!r}")
    n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise ValueError(f"must be a positive number of bytes, got {value!r}")
    return n


def check_size(value: Any) -> str | None:
    """A size like ``67108864`` or ``"64MB"`` (see :func:`parse_size`)."""
    try:
        parse_size(value)
    except ValueError as exc:
        return str(exc)
    return None


def ascii_character(value: Any) -> str | None:
    """One ASCII character other than a line end (the CSV delimiter and quote character of a source)."""
    if not isinstance(value, str) or len(value) != 1:
        return f"must be one character, got {value!r}"
    if not value.isascii() or value in "\r\n":
        return f"must be an ASCII character other than a line end, got {value!r}"
    return None


def check_encoding(value: Any) -> str | None:
    try:
        normalize_encoding(value)
    except ValueError as exc:
        return str(exc)
    return None


def check_csv_config(config: Mapping[str, Any]) -> list[str]:
    """Problems with a source's CSV options that no single attribute can see."""
    problems: list[str] = []
    columns = config.get("columns")
    if columns is not None:
        if not all(isinstance(c, str) for c in columns):
            problems.append("'columns': every column name must be a string")
        elif duplicate_names(columns):
            names = ", ".join(repr(n) for n in duplicate_names(columns))
            problems.append(f"'columns': {names} named more than once (a record keeps one value per name)")
    if config.get("delimiter") is not None and config.get("delimiter") == config.get("quotechar"):
        problems.append("'delimiter' and 'quotechar' must differ")
    return problems


def check_paths(value: Any) -> str | None:
    """A path or a non-empty list of them, none of them blank."""
    if isinstance(value, str):
        return None if value.strip() else "must not be empty"
    if not value or not all(isinstance(v, str) and v.strip() for v in value):
        return "must be a path or a non-empty list of paths"
    return None
