"""The ``file`` source's reader: a split's lines (or JSON array elements), one batch at a time.

:class:`FileSourceReader` keeps the file open between polls, records each split's position after
every batch and says where every record and dead letter came from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from active_data_flow.connectors.file.paths import FileReadError
from active_data_flow.connectors.file.splits import FileSplit
from active_data_flow.errors import AdfError, SourceDataError
from active_data_flow.formats import (
    CsvOptions,
    ReadResult,
    TextLines,
    count_lines,
    detect_bom,
    duplicate_names,
    read_csv,
    read_csv_header,
    read_json_array,
    read_jsonl,
    split_json_elements,
)
from active_data_flow.source import (
    Origins,
    ReaderBatch,
    ReaderStatus,
    SourceReaderContext,
    Split,
    SplitReader,
)

if TYPE_CHECKING:
    from active_data_flow.connectors.file.source import FileSource


class FileSourceReader(SplitReader):
    """Reads :class:`FileSplit` s one batch at a time, keeping the file open between polls.

    After every batch ``split.position`` is the offset and line number just after the last
    line returned, so a snapshot resumes exactly there. Each batch says where its records
    came from (:class:`~active_data_flow.source.Origins`): ``{"file", "line"}`` with the record's first
    line (``{"file", "index"}`` for a JSON array element; ``{"file", "offset"}``, the byte
    offset of the line, in a JSON Lines byte range whose first line number is not counted).
    An error while reading is raised as :class:`FileReadError` or
    :class:`~active_data_flow.errors.SourceDataError`, naming the file and the line.
    """

    def __init__(self, context: SourceReaderContext, source: FileSource) -> None:
        super().__init__(context)
        self.source = source
        self._stream: Any = None
        self._lines: TextLines | None = None
        self._offset = 0
        self._fieldnames: list[str] = []
        self._csv: CsvOptions | None = None
        self._headers: dict[str, tuple[list[str], int]] = {}
        self._encodings: dict[str, str] = {}
        self._elements: list[Any] | None = None
        self._index = 0
        self._pending: list[Any] = []
        self._json_bytes = 0
        self._line_bases: dict[str, int] = {}

    def _encoding(self, path: str) -> str:
        enc = self._encodings.get(path)
        if enc is None:
            enc = self._encodings[path] = self.source.encoding_of(path)
        return enc

    def _header(self, path: str, options: CsvOptions) -> list[str]:
        """The field names of ``path`` (its header row, read once, or ``columns``); the header must name each field once."""
        found = self._headers.get(path)
        if found is None:
            stream = self.source.open_stream(path, 0, None, buffer_size=1 << 16)
            try:
                src = self._text_lines(stream, path, 0, 1)
                found = self._read_header(src, path, options)
            finally:
                stream.close()
        return found[0]

    def _read_header(self, src: TextLines, path: str, options: CsvOptions) -> tuple[list[str], int]:
        before = src.line
        names, used = read_csv_header(src, options, path=path, limit=self.source.max_field_bytes)
        if options.header and not options.columns:
            dups = duplicate_names(names)
            if dups:
                listed = ", ".join(repr(n) for n in dups)
                # its first line: after any blank lines, before the line ends inside its names
                line = before + used - 1 - sum(count_lines(n.encode("utf-8")) for n in names)
                raise SourceDataError(
                    f"{path}: the CSV header on line {line} names {listed} more than once, and a record "
                    "keeps one value per name, so a column would be lost; rename the columns with the source's "
                    "'columns' attribute (it replaces the header row) or fix the header"
                )
        self._headers[path] = (names, used)
        return names, used

    def _text_lines(self, stream: Any, path: str, offset: int, line: int, end: int | None = None) -> TextLines:
        """The lines of ``stream`` from ``offset`` (to ``end``); at offset 0 a byte-order mark is read here and skipped."""
        beyond = None
        if end is not None:

            def beyond(n: int) -> bytes:  # the file after the range, for the reason of a field left open at its end
                more = self.source.open_stream(path, end, end + max(n, 0), buffer_size=1 << 16)
                try:
                    return bytes(more.read())
                finally:
                    more.close()

        if offset == 0:
            bom, skip = detect_bom(stream.peek(4)[:4])
            encoding = bom or self.source.encoding
            self._encodings[path] = encoding
            if skip:
                stream.read(skip)
            offset = skip
        else:
            encoding = self._encoding(path)
        return TextLines(
            stream, offset=offset, line=line, encoding=encoding, limit=self.source.max_field_bytes, beyond=beyond
        )

    def open_split(self, split: Split) -> None:
        assert isinstance(split, FileSplit), f"not a FileSplit: {split!r}"
        pos = split.position if isinstance(split.position, dict) else None
        offset = int(pos["offset"]) if pos and "offset" in pos else split.start
        # start_line 0: the split's first line number is not known yet; count lines relative
        # to the split (1 = its first line) and make them absolute only for dead letters.
        line = int(pos["line"]) if pos and "line" in pos else max(split.start_line, 1)
        try:
            if split.format == "json":
                self._open_json(split, pos)
                return
            stream = self.source.open_stream(split.path, offset, split.end)
        except AdfError:
            raise
        except Exception as exc:
            raise FileReadError(split.path, "", exc) from exc
        try:
            src = self._text_lines(stream, split.path, offset, line, split.end)
            self._offset = src.offset
            if split.format == "csv":
                options = self._csv = self.source.csv_options(split.path)
                if offset == 0:
                    self._fieldnames, _ = self._read_header(src, split.path, options)
                else:
                    self._fieldnames = self._header(split.path, options)
        except BaseException as exc:
            stream.close()
            if isinstance(exc, Exception) and not isinstance(exc, AdfError):
                raise FileReadError(split.path, f" at byte offset {offset}", exc) from exc
            raise
        self._stream = stream
        self._lines = src

    def _open_json(self, split: FileSplit, pos: dict[str, Any] | None) -> None:
        stream = self.source.open_stream(split.path)
        try:
            data = stream.read()
        finally:
            stream.close()
        elements, dead = read_json_array(data, path=split.path, encoding=self.source.encoding)
        self._elements = elements
        self._pending = list(dead)
        self._index = int(pos.get("index", 0)) if pos else 0
        self._json_bytes = len(data)

    def _lines_before(self, split: FileSplit) -> int:
        """Line ends in the file before ``split.start`` (counted once per split, on first need)."""
        key = f"{split.path}@{split.start}"
        count = self._line_bases.get(key)
        if count is None:
            count = 0
            stream = self.source.open_stream(split.path, 0, split.start, buffer_size=1 << 20)
            try:
                carry = b""
                while chunk := stream.read(1 << 20):
                    data = carry + chunk
                    cut = len(data) - 1 if data.endswith(b"\r") else len(data)  # "\r" + "\n" in the next chunk: one end
                    count += count_lines(data, 0, cut)
                    carry = data[cut:]
                count += count_lines(carry)
            finally:
                stream.close()
            self._line_bases[key] = count
        return count

    def close_split(self, split: Split) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.close()
        self._lines = None
        self._elements = None
        self._pending = []

    def read_split(self, split: Split, max_records: int) -> tuple[ReaderBatch, bool]:
        assert isinstance(split, FileSplit)
        if split.format == "json":
            return self._read_json(split, max_records)
        src = self._lines
        assert src is not None
        by_offset = split.format == "jsonl" and split.start_line == 0
        try:
            res: ReadResult
            if split.format == "jsonl":
                res = read_jsonl(src, max_records, path=split.path, offsets=by_offset)
            else:
                assert self._csv is not None
                res = read_csv(src, max_records, path=split.path, fieldnames=self._fieldnames, options=self._csv)
            if res.dead_letters and split.start_line == 0:
                base = self._lines_before(split)
                for letter in res.dead_letters:
                    if isinstance(letter.origin.get("line"), int):
                        letter.origin["line"] += base
        except AdfError:
            raise
        except Exception as exc:
            where = f" near line {src.line}" if split.start_line else ""
            raise FileReadError(split.path, f"{where} (byte offset {src.offset})", exc) from exc
        origins = None
        if res.records:
            origins = Origins()
            if by_offset:
                origins.add(len(res.records), {"file": split.path}, "offset", res.offsets)
            else:
                origins.add(len(res.records), {"file": split.path}, "line", res.lines)
        done_bytes = res.offset - self._offset
        self._offset = res.offset
        split.position = {"offset": res.offset, "line": res.line}
        batch = ReaderBatch(
            res.records, ReaderStatus.MORE_AVAILABLE, res.dead_letters, input_bytes=done_bytes, origins=origins
        )
        return batch, res.eof

    def _read_json(self, split: FileSplit, max_records: int) -> tuple[ReaderBatch, bool]:
        elements = self._elements or []
        start = self._index
        stop = min(start + max_records, len(elements))
        records, dead = split_json_elements(elements, start, stop, path=split.path)
        if self._pending:
            dead[:0] = self._pending
            self._pending = []
        origins = None
        if records:
            origins = Origins()
            index: list[int] | int = start
            if len(records) != stop - start:
                index = [i for i in range(start, stop) if type(elements[i]) is dict]
            origins.add(len(records), {"file": split.path}, "index", index)
        done_bytes, self._json_bytes = self._json_bytes, 0
        self._index = stop
        split.position = {"index": stop}
        batch = ReaderBatch(records, ReaderStatus.MORE_AVAILABLE, dead, input_bytes=done_bytes, origins=origins)
        return batch, stop >= len(elements)
