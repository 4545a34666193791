"""JSON Lines: :func:`read_jsonl` reads one batch of objects from a
:class:`~active_data_flow.formats.lines.TextLines`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate
from typing import Any

from active_data_flow.codec import codec
from active_data_flow.formats.common import EXCERPT, ReadResult, excerpt, line_text
from active_data_flow.formats.json_format import json_reason, json_type
from active_data_flow.formats.lines import TextLines
from active_data_flow.formats.origins import LineOffsets
from active_data_flow.record import DeadLetter, Record

__all__ = [
    "read_jsonl",
]


def _content_len(raw: bytes) -> int:
    if raw.endswith(b"\r\n"):
        return len(raw) - 2
    return len(raw) - 1 if raw[-1:] in (b"\n", b"\r") else len(raw)


def _jsonl_slow(
    lines: list[bytes], first_line: int, offsets: list[int], path: str, src: TextLines
) -> tuple[list[Record], list[int], list[DeadLetter]]:
    """Line by line, with blank lines skipped and bad ones dead-lettered (only for batches with a problem)."""
    loads = codec().loads
    encoding = src.encoding
    utf8 = encoding == "utf-8"
    records: list[Record] = []
    where: list[int] = []
    dead: list[DeadLetter] = []
    for i, raw in enumerate(lines):
        number = first_line + i
        origin = {"file": path, "line": number, "offset": offsets[i]}
        if not raw.strip():
            continue
        if _content_len(raw) > src.limit:
            reason = f"JSON line longer than max_field_bytes ({src.limit} bytes)"
            dead.append(DeadLetter(excerpt(raw, encoding), reason, "source", "ValueError", origin))
            continue
        bad = src.bad.get(number)
        if bad is not None:
            dead.append(DeadLetter(line_text(raw, encoding), bad, "source", "UnicodeDecodeError", origin))
            continue
        try:
            obj = loads(raw if utf8 else raw.decode(encoding))
        except ValueError as exc:
            reason, etype = json_reason(raw, exc, encoding)
            dead.append(DeadLetter(line_text(raw, encoding), reason, "source", etype, origin))
            continue
        if type(obj) is dict:
            records.append(obj)
            where.append(i)
        else:
            reason = f"JSON line is not an object (got {json_type(obj)})"
            dead.append(DeadLetter(line_text(raw, encoding), reason, "source", "ValueError", origin))
    return records, where, dead


def read_jsonl(src: TextLines, max_records: int, *, path: str, offsets: bool = False) -> ReadResult:
    """Read up to ``max_records`` lines of JSON Lines from ``src``.

    Blank lines are skipped; a line that does not parse, is not an object, does not decode or
    is longer than ``src.limit`` becomes a dead letter. With ``offsets`` the result also has
    each record's byte offset.
    """
    src.trim()
    loads = codec().loads
    utf8 = src.encoding == "utf-8"
    records: list[Any] = []
    dead: list[DeadLetter] = []
    where: list[int] = []
    starts: list[int] | None = [] if offsets else None
    budget = max_records
    wide = src.encoding != src.label  # UTF-16/32: a line's size in the file is not its length here
    while budget > 0:
        first = src.line
        base = src.offset
        lines = src.take(budget)
        if not lines:
            if not src.overlong:
                break
            # a line longer than the limit: never held whole
            data, _ = src.window(EXCERPT * 4)
            reason = f"JSON line longer than max_field_bytes ({src.limit} bytes)"
            origin = {"file": path, "line": first, "offset": base}
            dead.append(DeadLetter(excerpt(data, src.encoding, True), reason, "source", "ValueError", origin))
            src.skip_through(0)
            budget -= 1
            continue
        got: list[Any]
        try:
            got = list(map(loads, lines)) if utf8 else list(map(loads, map(src._decode, lines)))
            ok = set(map(type, got)) == {dict} and not (src.long_lines and max(map(len, lines)) > src.limit)
            if ok and src.bad:
                ok = not any(first <= n < first + len(lines) for n in src.bad)
        except ValueError:
            ok = False
        if ok and not records and not dead:
            # objects on consecutive lines, in one read: the common case, with no list of lines
            # (and their offsets counted only if asked for: an origin is rarely looked up)
            at: Sequence[int] | None = None
            if offsets:
                at = list(accumulate(src.taken_sizes(), initial=base))[:-1] if wide else LineOffsets(base, lines)
            return ReadResult(got, [], src.offset, src.line, src.at_end(), first, at)
        line_offsets = list(accumulate(src.taken_sizes(), initial=base))
        good: list[Any]
        idx: list[int]
        bad: list[DeadLetter]
        if ok:
            good, idx, bad = got, list(range(len(got))), []
        else:
            good, idx, bad = _jsonl_slow(lines, first, line_offsets, path, src)
        records += good
        where += [first + i for i in idx]
        if starts is not None:
            starts += [line_offsets[i] for i in idx]
        dead += bad
        budget -= len(lines)
    return ReadResult(records, dead, src.offset, src.line, src.at_end(), where, starts)
