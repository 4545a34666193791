"""What every format shares: the formats and their file extensions, encodings and byte-order
marks, line counting, the result of one read (:class:`ReadResult`) and the text a dead letter
keeps of bad input.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass

from active_data_flow.record import DeadLetter, Record

__all__ = [
    "DEFAULT_MAX_FIELD_BYTES",
    "EXCERPT",
    "FORMATS",
    "WIDE",
    "ReadResult",
    "count_lines",
    "cuttable",
    "detect_bom",
    "duplicate_names",
    "excerpt",
    "format_from_path",
    "line_text",
    "normalize_encoding",
]


#: Every format a file source reads.
FORMATS = ("csv", "json", "jsonl")

#: The longest CSV field (and JSON line) read by default: large enough for real blobs.
DEFAULT_MAX_FIELD_BYTES = 64 << 20

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}

EXCERPT = 4096  # characters of an over-long input kept in its dead letter

#: Encodings read through a byte-order mark that are not ASCII-compatible: bytes per code unit.
WIDE = {"utf-16-le": 2, "utf-16-be": 2, "utf-32-le": 4, "utf-32-be": 4}
_BOMS = (  # UTF-32 LE first: its mark starts with UTF-16 LE's
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def format_from_path(path: str) -> str | None:
    """The format implied by ``path``'s extension (``.csv``/``.tsv``, ``.json``, ``.jsonl``/``.ndjson``), else None."""
    dot = path.rfind(".")
    if dot < 0 or "/" in path[dot:]:
        return None
    return _EXTENSIONS.get(path[dot:].lower())


def normalize_encoding(encoding: str) -> str:
    """The canonical name of ``encoding`` (``utf-8-sig`` → ``utf-8``: a BOM is skipped anyway).

    Raises ``ValueError`` for an unknown encoding or one that is not ASCII-compatible (a
    UTF-16/32 file is read through its byte-order mark, whatever encoding is configured).
    """
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None
    if name == "utf-8-sig":
        name = "utf-8"
    if "\n\r,\"".encode(name) != b"\n\r,\"":
        raise ValueError(
            f"encoding {encoding!r} is not ASCII-compatible (use UTF-8, Latin-1, cp1252…; "
            "a UTF-16 or UTF-32 file with a byte-order mark is recognised without configuration)"
        )
    return name


def detect_bom(head: bytes) -> tuple[str | None, int]:
    """The encoding a byte-order mark at the start of ``head`` declares and the mark's length; ``(None, 0)`` without one.

    Pass the first 4 bytes of a file: UTF-8, UTF-16 LE/BE and UTF-32 LE/BE marks are recognised.
    """
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name, len(bom)
    return None, 0


def cuttable(encoding: str) -> bool:
    """Whether a file in ``encoding`` can be cut into byte ranges (:func:`aligned_boundaries` reads
    ASCII-compatible bytes; a UTF-16/32 file is read as one split)."""
    return encoding not in WIDE


def count_lines(data: bytes | bytearray, start: int = 0, end: int | None = None) -> int:
    """Line ends (``\\n``, ``\\r\\n``, lone ``\\r``) in ``data[start:end]``; the slice must not end between ``\\r`` and ``\\n``."""
    stop = len(data) if end is None else end
    return data.count(b"\n", start, stop) + data.count(b"\r", start, stop) - data.count(b"\r\n", start, stop)


def duplicate_names(names: Sequence[str]) -> list[str]:
    """The names that occur more than once in ``names``, in order of first occurrence."""
    seen: set[str] = set()
    dups: dict[str, None] = {}
    for name in names:
        if name in seen:
            dups[name] = None
        seen.add(name)
    return list(dups)


@dataclass(slots=True)
class ReadResult:
    """One batch read from a :class:`TextLines`.

    ``offset`` / ``line`` are where the next read starts (absolute byte offset, 1-based line
    number); ``eof`` is true when the input has nothing more. ``lines`` says where each
    record came from: its first line, one per record (a list), or the first record's when the
    records are on consecutive lines (an int); ``offsets`` is the byte offset of each record's
    first line, when asked for.
    """

    records: list[Record]
    dead_letters: list[DeadLetter]
    offset: int
    line: int
    eof: bool
    lines: Sequence[int] | int = 0
    offsets: Sequence[int] | None = None


def excerpt(raw: bytes | bytearray, encoding: str, cut: bool = False) -> str:
    """``raw`` as text for a dead letter, without its line end, at most ``EXCERPT`` characters
    (``…`` marks a cut, also when ``cut`` says ``raw`` is only the start of the input)."""
    text = bytes(raw[: EXCERPT * 4]).decode(encoding, "replace").rstrip("\r\n")
    if cut or len(text) > EXCERPT or len(raw) > EXCERPT * 4:
        text = text[:EXCERPT] + "…"
    return text


def line_text(raw: bytes, encoding: str) -> str:
    return raw.decode(encoding, "replace").rstrip("\r\n")
