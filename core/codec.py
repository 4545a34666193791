"""JSON encoding and decoding for the hot path.

Uses orjson when it is installed (``pip install 'active-data-flow[fast]'``) and the
standard ``json`` module otherwise (inside a Spin component, for instance). The choice
is made on first use, never at import time, so ``core`` imports only the standard library.
Set ``ADF_CODEC=json`` to force the standard library.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Codec", "codec"]


def _default(obj: Any) -> Any:
    # Values JSON has no type for (dates, decimals, sets) are written as strings / lists.
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    if isinstance(obj, bytes | bytearray):
        return obj.decode("utf-8", "replace")
    return str(obj)


class Codec:
    """``loads`` takes ``bytes`` or ``str``; ``dumps`` returns ``bytes`` without a newline;
    ``dumps_lines`` returns a sequence of objects as JSON Lines, each ``dumps(obj) + b"\n"``."""

    name: str
    loads: Callable[[bytes | str], Any]
    dumps: Callable[[Any], bytes]
    dumps_lines: Callable[[Iterable[Any]], bytes]

    def __init__(self, prefer_fast: bool = True) -> None:
        fast: Any = None
        if prefer_fast and os.environ.get("ADF_CODEC", "").lower() != "json":
            try:
                import orjson

                fast = orjson
            except ImportError:
                fast = None
        if fast is not None:
            opts = fast.OPT_NON_STR_KEYS
            orjson_dumps = fast.dumps

            def dumps(obj: Any) -> bytes:
                out: bytes = orjson_dumps(obj, default=_default, option=opts)
                return out

            line_opts = opts | fast.OPT_APPEND_NEWLINE

            def dumps_lines(objs: Iterable[Any]) -> bytes:
                # each line encoded with its newline, then one copy into the result
                return b"".join([orjson_dumps(obj, default=_default, option=line_opts) for obj in objs])

            self.name = "orjson"
            self.loads = fast.loads
            self.dumps = dumps
            self.dumps_lines = dumps_lines
        else:
            encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_default)
            encode = encoder.encode

            def std_dumps(obj: Any) -> bytes:
                return encode(obj).encode("utf-8")

            def std_dumps_lines(objs: Iterable[Any]) -> bytes:
                # the text of every line joined, then encoded once
                lines = list(map(encode, objs))
                if not lines:
                    return b""
                lines.append("")
                return "\n".join(lines).encode("utf-8")

            self.name = "json"
            self.loads = json.loads
            self.dumps = std_dumps
            self.dumps_lines = std_dumps_lines


_codec: Codec | None = None


def codec() -> Codec:
    """The process-wide codec (created on first call)."""
    global _codec
    if _codec is None:
        _codec = Codec()
    return _codec
