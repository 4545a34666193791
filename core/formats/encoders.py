"""Writers: records as JSON Lines (:func:`encode_jsonl`) and as CSV rows (:class:`CsvEncoder`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from active_data_flow.codec import codec
from active_data_flow.record import Record

__all__ = [
    "CsvEncoder",
    "encode_jsonl",
]


def encode_jsonl(records: Iterable[Record]) -> bytes:
    """``records`` as JSON Lines (one ``\\n``-terminated object per record)."""
    return codec().dumps_lines(records)


_PLAIN = frozenset((str, int, float))


class CsvEncoder:
    """Encodes batches of records as CSV rows with fixed ``columns``.

    ``None`` becomes an empty cell, booleans ``true``/``false``, lists and mappings JSON;
    a record with a field that is not a column raises ``ValueError`` (nothing is dropped
    silently — the engine then dead-letters that record).
    """

    def __init__(self, columns: Sequence[str], delimiter: str = ",", quotechar: str = '"') -> None:
        self.columns = list(columns)
        self._colset = frozenset(self.columns)
        self._buf = io.StringIO()
        self._writer = csv.writer(self._buf, delimiter=delimiter, quotechar=quotechar, lineterminator="\r\n")

    def header(self) -> str:
        """The header row (with its line terminator)."""
        return self._encode_rows([self.columns])

    def _encode_rows(self, rows: Iterable[Sequence[Any]]) -> str:
        buf = self._buf
        buf.seek(0)
        buf.truncate()
        self._writer.writerows(rows)
        return buf.getvalue()

    def encode(self, records: Sequence[Record]) -> str:
        """The rows of ``records`` (each with its line terminator)."""
        cols = self.columns
        colset = self._colset
        plain = _PLAIN
        rows = []
        for rec in records:
            if not colset.issuperset(rec):
                unknown = sorted(map(str, set(rec) - colset))
                raise ValueError(f"record has fields that are not CSV columns: {', '.join(unknown)}")
            row = [rec.get(c) for c in cols]
            rows.append([v if type(v) in plain else _cell(v) for v in row])
        return self._encode_rows(rows)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict | list | tuple):
        return codec().dumps(value).decode("utf-8")
    return value
