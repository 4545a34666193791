"""``stdout`` sink: records as JSON Lines (default) or CSV on standard output.

``{type: stdout}`` or ``{type: stdout, format: csv, columns: [id, name]}``. Each batch is
one write of the whole encoded batch followed by a flush of ``sys.stdout`` in
:meth:`StdoutSink.flush`. The CSV header is written once per process, before the first
batch (columns from ``columns`` or the first record's fields); with several reader
processes each writes its own header, so use ``parallelism: 1`` for CSV on stdout.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from active_data_flow.attributes import Attribute, one_character
from active_data_flow.formats import CsvEncoder, encode_jsonl
from active_data_flow.record import Record
from active_data_flow.sink import Sink

__all__ = ["StdoutSink"]




class StdoutSink(Sink):
    """Writes records to ``sys.stdout`` as JSON Lines or CSV."""

    type_name = "stdout"
    attributes = (
        Attribute("format", str, default="jsonl", choices=("jsonl", "csv")),
        Attribute("columns", list, help="CSV columns (default: the first record's fields)"),
        Attribute("header", bool, default=True, help="write a CSV header row"),
        Attribute("delimiter", str, default=",", check=one_character, help="CSV delimiter"),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._encoder: CsvEncoder | None = None

    def describe(self) -> str:
        return f"stdout ({self.config['format']})"

    def _write(self, data: bytes | bytearray) -> None:
        out = sys.stdout
        buffer = getattr(out, "buffer", None)
        if buffer is not None:
            out.flush()  # keep order with text already written through sys.stdout
            buffer.write(data)
        else:
            out.write(bytes(data).decode("utf-8"))

    def write_batch(self, records: Sequence[Record]) -> None:
        if not records:
            return
        if self.config["format"] == "jsonl":
            self._write(encode_jsonl(records))
            return
        encoder = self._encoder
        header = ""
        if encoder is None:
            encoder = CsvEncoder(
                [str(c) for c in (self.config["columns"] or list(records[0]))], self.config["delimiter"]
            )
            if self.config["header"]:
                header = encoder.header()
        text = encoder.encode(records)
        self._encoder = encoder
        self._write((header + text).encode("utf-8"))

    def flush(self) -> None:
        out = sys.stdout
        buffer = getattr(out, "buffer", None)
        if buffer is not None:
            buffer.flush()
        out.flush()
