"""Just enough TOML writing for ``spin.toml`` (:class:`TomlWriter`): comments, ``key = value``,
``[tables]`` and ``[[arrays of tables]]``. Reading is :mod:`tomllib`'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_str(key)


def _toml_key_path(path: str) -> str:
    return ".".join(_toml_key(p) for p in path.split("."))


def _toml_str(value: str) -> str:
    if '"' in value and "'" not in value and not any(ord(c) < 32 or c == "\x7f" for c in value):
        return f"'{value}'"  # a literal string reads better for JSON
    out = []
    for c in value:
        if c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 32 or c == "\x7f":
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        items = [_toml_value(v) for v in value]
        one_line = "[" + ", ".join(items) + "]"
        if len(one_line) <= 88 and not any(isinstance(v, Mapping) for v in value):
            return one_line
        return "[\n" + "".join(f"    {item},\n" for item in items) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


class TomlWriter:
    """Just enough TOML: comments, key = value, [tables] and [[arrays of tables]]."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def comment(self, text: str) -> None:
        self.lines.append(f"# {text}" if text else "#")

    def kv(self, key: str, value: Any) -> None:
        self.lines.append(f"{_toml_key(key)} = {_toml_value(value)}")

    def table(self, path: str) -> None:
        self._gap()
        self.lines.append(f"[{_toml_key_path(path)}]")

    def array_table(self, path: str) -> None:
        self._gap()
        self.lines.append(f"[[{_toml_key_path(path)}]]")

    def _gap(self) -> None:
        if self.lines and self.lines[-1] != "":
            self.lines.append("")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"
