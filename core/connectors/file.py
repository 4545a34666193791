"""File source and sink: local paths and ``s3://`` URLs, CSV / JSON array / JSON Lines.

One module for both because they share what a file is here — paths and globs, formats,
encodings, CSV options — while the parsing itself lives in :mod:`core.formats`.

``file`` source
    ``{type: file, path: data/orders/*.csv}`` — ``path`` is a glob (``**`` crosses
    directories) or a list of them, local or ``s3://bucket/prefix/*.csv``; files are read
    in sorted order, one split per file. The format comes from ``format`` or each file's
    extension (``.csv``/``.tsv``, ``.json``, ``.jsonl``/``.ndjson``). With ``split_bytes``
    (``67108864`` or ``"64MB"``; K/M/G are powers of 1024) a CSV or JSONL file bigger than
    that becomes several byte-range splits whose boundaries are record starts under the
    readers' own rules (the enumerator scans a CSV file once to find them and their line
    numbers — for S3 that is one extra GET of the object; a JSON Lines file needs only a
    short read per boundary). A JSON array file, and a UTF-16/32 file, is always one split;
    a JSON array file is parsed whole in memory. With ``watch: true`` the source is
    unbounded: each discovery globs again and adds files it has not seen (write files under
    another name and rename them into place; a file is read as it is when discovered). No
    file matching is an error (:class:`NoFilesError`) for a bounded source.

    Malformed input never stops a run and is never dropped: every line is a record, part of
    one, a dead letter with its file, line and byte offset, or blank (skipped) — see
    :mod:`core.formats` and docs/INPUT.md. ``max_field_bytes`` (default 64 MiB) is the
    longest CSV field, quotes included, and the longest JSON line; a longer one, or a quoted
    field never closed, is a dead letter and reading goes on with the next line. Lines end at
    LF, CRLF or a lone CR. ``encoding`` (ASCII-compatible, default ``utf-8``) gives way to a
    byte-order mark: UTF-8, UTF-16 LE/BE and UTF-32 LE/BE files are read in their encoding.
    A CSV header that names a column twice fails the run with
    :class:`~core.errors.SourceDataError` (rename the columns with ``columns``); an empty
    name is kept as the field ``""``. An error while reading a file (it vanished, a network
    failure) is raised as :class:`FileReadError` naming the file and where reading stopped.

    A split's position is ``{"offset": <byte offset>, "line": <1-based line number>}``
    of the next unread line (``{"index": <element>}`` for a JSON array), updated after every
    batch. Each batch says where its records came from (``ReaderBatch.origins``): the file and
    each record's first line — the element index in a JSON array, the byte offset in a JSON
    Lines byte range whose first line number the enumerator did not count.

``file`` sink
    ``{type: file, path: out/orders.jsonl, mode: overwrite}`` — JSON Lines or CSV (from
    ``format`` or the extension). ``mode: overwrite`` truncates the file once per run in
    :meth:`FileSink.setup` (not when the run resumes); ``append`` keeps what is there.

    *Local files and several readers*: every reader process opens the file with
    ``O_APPEND`` and writes each batch with a single ``os.write`` of the whole encoded
    batch, so batches of different readers never interleave (lines of one batch stay
    together, batches of different readers are in arrival order). :meth:`FileSink.flush`
    leaves the data in the OS (it survives a crash of the process); ``fsync: true`` also
    syncs it to disk. A CSV header is written once per file: under an exclusive
    ``flock`` the first batch of a process checks whether the file is empty; if it is
    not, the columns are read from its header row so that every process writes the same
    column order.

    *S3* (``path: s3://bucket/out/orders.jsonl``): S3 objects cannot be appended to, so
    each reader buffers its records in a local file in the run's state directory
    (``<state_dir>/file-sink/``; ``flush`` makes it durable the same way, and a resumed
    run keeps appending to it) and uploads it when the sink closes: as the object
    ``out/orders.jsonl`` when the run has one reader, as ``out/orders.part-<reader_id>.jsonl``
    (one standalone file per reader, each with its CSV header) when it has several.
    ``mode: overwrite`` deletes that object and its ``.part-*`` objects in ``setup``;
    ``mode: append`` starts each buffer from the current object's content.
"""

from __future__ import annotations

import contextlib
import glob as _glob
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.attributes import Attribute, one_character
from core.connectors import s3
from core.errors import AdfError, ConfigError, SourceDataError
from core.formats import (
    DEFAULT_MAX_FIELD_BYTES,
    FORMATS,
    CsvEncoder,
    CsvOptions,
    ReadResult,
    TextLines,
    aligned_boundaries,
    count_lines,
    cuttable,
    detect_bom,
    duplicate_names,
    encode_jsonl,
    format_from_path,
    normalize_encoding,
    open_range,
    read_csv,
    read_csv_header,
    read_json_array,
    read_jsonl,
    skip_bom,
    split_json_elements,
)
from core.record import Record
from core.sink import Sink
from core.source import (
    Boundedness,
    Origins,
    ReaderBatch,
    ReaderStatus,
    Source,
    SourceReader,
    SourceReaderContext,
    Split,
    SplitEnumerator,
    SplitEnumeratorContext,
    SplitReader,
    StaticSplitEnumerator,
)

__all__ = [
    "FileReadError",
    "FileSink",
    "FileSource",
    "FileSourceReader",
    "FileSplit",
    "FileSplitEnumerator",
    "NoFilesError",
    "parse_size",
]

_RANGE_MARK = "#bytes="
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class NoFilesError(ConfigError):
    """A bounded file source found no file: ``patterns`` lists what was searched."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = list(patterns)
        cwd = os.getcwd()
        problems = [
            f"no files match {p!r}" + ("" if s3.is_s3(p) or os.path.isabs(p) else f" (relative to {cwd})")
            for p in self.patterns
        ]
        super().__init__("source 'file'", problems)


class FileReadError(AdfError):
    """A file could not be read (it vanished, permissions, the network): names the file and where
    reading stopped; the error from the storage is chained as ``__cause__``."""

    def __init__(self, path: str, where: str, cause: BaseException) -> None:
        self.path = path
        self.cause = cause
        hint = ""
        if isinstance(cause, OSError):
            hint = "; check that the file exists and is readable, then run the flow again (it resumes from its checkpoint)"
        super().__init__(f"cannot read {path}{where}: {type(cause).__name__}: {cause}{hint}")


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


def _check_paths(value: Any) -> str | None:
    if isinstance(value, str):
        return None if value.strip() else "must not be empty"
    if not value or not all(isinstance(v, str) and v.strip() for v in value):
        return "must be a path or a non-empty list of paths"
    return None


# --------------------------------------------------------------------------- splits


@dataclass
class FileSplit(Split):
    """A whole file (``end=None``) or the byte range ``[start, end)`` of one.

    ``start_line`` is the 1-based line number at ``start``, or 0 when not counted yet (JSON
    Lines ranges: the reader counts it only for a dead letter); ``size`` is the file size seen
    at discovery. ``position`` is None (from ``start``), ``{"offset", "line"}`` (CSV, JSONL)
    or ``{"index"}`` (JSON array).
    """

    path: str = ""
    start: int = 0
    end: int | None = None
    start_line: int = 1
    format: str = "jsonl"
    size: int | None = None

    def remaining_bytes(self) -> int:
        """Bytes not read yet (for progress)."""
        stop = self.end if self.end is not None else (self.size or 0)
        pos = self.position
        done = pos.get("offset", self.start) if isinstance(pos, dict) else self.start
        return max(0, stop - int(done))


def _split_path(split_id: str) -> str:
    path, mark, _ = split_id.rpartition(_RANGE_MARK)
    return path if mark else split_id


class FileSplitEnumerator(StaticSplitEnumerator):
    """Globs the source's paths into :class:`FileSplit` s (byte ranges with ``split_bytes``).

    Bounded: raises :class:`NoFilesError` at start when nothing matches. Unbounded
    (``watch``): every :meth:`discover` globs again and adds files not seen before.
    """

    def __init__(
        self, context: SplitEnumeratorContext, source: FileSource, checkpoint: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(context, checkpoint, unbounded=source.watch)
        self.source = source

    split_class = FileSplit

    def discover_splits(self) -> list[Split]:
        files = self.source.list_files()
        if not files and not self.unbounded:
            raise NoFilesError(self.source.paths)
        seen_paths = {_split_path(s) for s in self._seen}
        splits: list[Split] = []
        for path, size in files:
            if path in seen_paths:
                continue
            splits.extend(self.source.splits_of(path, size))
        return splits


# --------------------------------------------------------------------------- source


class FileSource(Source):
    """Reads CSV, JSON array and JSON Lines files, local or on S3 (see the module doc)."""

    type_name = "file"
    attributes = (
        Attribute("path", (str, list), required=True, check=_check_paths,
                  help="a glob (** crosses directories), an s3:// URL glob, or a list of them"),
        Attribute("format", str, choices=FORMATS, help="csv, json or jsonl; default: from the file extension"),
        Attribute("delimiter", str, check=ascii_character, help="CSV field delimiter; default ',' (tab for .tsv)"),
        Attribute("quotechar", str, default='"', check=ascii_character, help="CSV quote character"),
        Attribute("header", bool, default=True, help="the first CSV row names the fields"),
        Attribute("columns", list, help="CSV field names (required when header is false; renames the header)"),
        Attribute("encoding", str, default="utf-8", check=check_encoding,
                  help="text encoding (ASCII-compatible; a UTF-16/32 byte-order mark overrides it)"),
        Attribute("max_field_bytes", (int, str), default=DEFAULT_MAX_FIELD_BYTES, check=check_size,
                  help="longest CSV field / JSON line read (e.g. '64MB'); longer ones become dead letters"),
        Attribute("split_bytes", (int, str), check=check_size,
                  help="cut CSV/JSONL files bigger than this into byte-range splits (e.g. '64MB')"),
        Attribute("watch", bool, default=False, help="unbounded: keep looking for new files"),
        Attribute("endpoint_url", str, help="S3-compatible endpoint; default: AWS_ENDPOINT_URL or AWS"),
        Attribute("region", str, help="S3 region"),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        raw = self.config["path"]
        self.paths: list[str] = [raw] if isinstance(raw, str) else list(raw)
        self.format: str | None = self.config["format"]
        self.encoding: str = normalize_encoding(self.config["encoding"])
        self.split_bytes: int | None = (
            parse_size(self.config["split_bytes"]) if self.config["split_bytes"] is not None else None
        )
        self.max_field_bytes: int = parse_size(self.config["max_field_bytes"])
        self.watch: bool = bool(self.config["watch"])
        self.endpoint_url: str | None = self.config["endpoint_url"]
        self.region: str | None = self.config["region"]
        columns = self.config["columns"]
        problems: list[str] = check_csv_config(self.config)
        formats = set()
        for pattern in self.paths:
            fmt = self.format or format_from_path(pattern)
            base = pattern.rsplit("/", 1)[-1]
            ext = os.path.splitext(base)[1]
            # "data/*" or "data/*.j*": the files found will tell; "data.txt", "x*.txt": they cannot
            if fmt is None and ((ext and not s3.has_magic(ext)) or not s3.has_magic(base)):
                problems.append(
                    f"cannot tell the format of {pattern!r} from its extension; set 'format' to one of "
                    + ", ".join(FORMATS)
                )
            formats.add(fmt)
        if "csv" in formats and not self.config["header"] and not columns:
            problems.append("'columns' is required when 'header' is false")
        if problems:
            raise ConfigError(f"source {self.type_name!r}", problems)

    # -- configuration helpers ---------------------------------------------------

    @property
    def boundedness(self) -> Boundedness:
        return Boundedness.CONTINUOUS_UNBOUNDED if self.watch else Boundedness.BOUNDED

    def format_of(self, path: str) -> str:
        """The format ``path`` is read as; raises ConfigError for an unknown extension."""
        fmt = self.format or format_from_path(path)
        if fmt is None:
            raise ConfigError(
                f"source {self.type_name!r}",
                [f"cannot tell the format of {path!r} from its extension; set 'format' to one of {', '.join(FORMATS)}"],
            )
        return fmt

    def csv_options(self, path: str) -> CsvOptions:
        """How ``path`` is parsed as CSV (a ``.tsv`` file defaults to tab-separated)."""
        delimiter = self.config["delimiter"] or ("\t" if path.lower().endswith(".tsv") else ",")
        columns = self.config["columns"]
        return CsvOptions(
            delimiter=delimiter,
            quotechar=self.config["quotechar"],
            header=bool(self.config["header"]),
            columns=list(columns) if columns else None,
            encoding=self.encoding,
        )

    def open_stream(self, path: str, start: int = 0, end: int | None = None, buffer_size: int = 1 << 18) -> Any:
        """A buffered binary stream over ``[start, end)`` of ``path`` (local or S3), ``tell()`` absolute."""
        if s3.is_s3(path):
            return s3.open_read(
                path, start, end, endpoint_url=self.endpoint_url, region=self.region, buffer_size=max(buffer_size, 1 << 20)
            )
        return open_range(open(path, "rb", buffering=0), start, end, buffer_size)

    def list_files(self) -> list[tuple[str, int]]:
        """``(path, size)`` of every file the patterns match now: pattern by pattern, sorted, without duplicates."""
        out: list[tuple[str, int]] = []
        seen: set[str] = set()
        for pattern in self.paths:
            if s3.is_s3(pattern):
                found = s3.list_objects(pattern, endpoint_url=self.endpoint_url, region=self.region)
            else:
                expanded = os.path.expanduser(pattern)
                names = _glob.glob(expanded, recursive=True) if s3.has_magic(expanded) else [expanded]
                found = []
                for name in sorted(names):
                    with contextlib.suppress(OSError):
                        if os.path.isfile(name):
                            found.append((name, os.path.getsize(name)))
            for path, size in found:
                if path not in seen:
                    seen.add(path)
                    out.append((path, size))
        return out

    def splits_of(self, path: str, size: int) -> list[FileSplit]:
        """The splits of one file: one, or byte ranges when ``split_bytes`` is set and the file is bigger.

        A UTF-16/32 file (byte-order mark) is always one split.
        """
        fmt = self.format_of(path)
        if self.split_bytes is None or fmt == "json" or size <= self.split_bytes:
            return [FileSplit(path, None, path, 0, None, 1, fmt, size)]
        try:
            if not cuttable(self.encoding_of(path)):
                return [FileSplit(path, None, path, 0, None, 1, fmt, size)]
            if fmt == "jsonl":
                starts = self._jsonl_boundaries(path, size)
            else:
                options = self.csv_options(path)
                stream = self.open_stream(path, 0, size, buffer_size=1 << 16)
                try:
                    starts = aligned_boundaries(
                        stream, size, self.split_bytes, quotechar=options.quotechar,
                        delimiter=options.delimiter, max_field_bytes=self.max_field_bytes,
                    )
                finally:
                    stream.close()
        except AdfError:
            raise
        except Exception as exc:
            raise FileReadError(path, " (looking for split boundaries)", exc) from exc
        if len(starts) == 1:
            return [FileSplit(path, None, path, 0, None, 1, fmt, size)]
        splits = []
        for i, (start, line) in enumerate(starts):
            end = starts[i + 1][0] if i + 1 < len(starts) else size
            splits.append(FileSplit(f"{path}{_RANGE_MARK}{start}-{end}", None, path, start, end, line, fmt, size))
        return splits

    def encoding_of(self, path: str) -> str:
        """The encoding ``path`` is read in: its byte-order mark's, else the configured one (one short read)."""
        stream = self.open_stream(path, 0, 4, buffer_size=16)
        try:
            head = stream.read(4)
        finally:
            stream.close()
        return detect_bom(head)[0] or self.encoding

    def _jsonl_boundaries(self, path: str, size: int) -> list[tuple[int, int]]:
        """Split starts of a JSON Lines file without reading it whole.

        A JSON line cannot contain a raw newline, so the first line start at or after each
        target offset is a safe boundary: one short read per boundary. The line number of
        a boundary is left unknown (0) and counted only if a dead letter needs it.
        """
        assert self.split_bytes is not None
        starts = [(0, 1)]
        target = self.split_bytes
        while target < size:
            stream = self.open_stream(path, target - 1, size, buffer_size=1 << 16)
            try:
                stream.readline()
                start = stream.tell()
            finally:
                stream.close()
            if start >= size:
                break
            if start > starts[-1][0]:
                starts.append((start, 0))
            target = start + self.split_bytes
        return starts

    # -- Source ------------------------------------------------------------------

    def create_enumerator(
        self, context: SplitEnumeratorContext, checkpoint: Mapping[str, Any] | None = None
    ) -> SplitEnumerator:
        return FileSplitEnumerator(context, self, checkpoint)

    def create_reader(self, context: SourceReaderContext) -> SourceReader:
        return FileSourceReader(context, self)

    split_class = FileSplit

    def total_work(self, splits: Sequence[Split]) -> int | None:
        return sum(s.remaining_bytes() for s in splits if isinstance(s, FileSplit))


class FileSourceReader(SplitReader):
    """Reads :class:`FileSplit` s one batch at a time, keeping the file open between polls.

    After every batch ``split.position`` is the offset and line number just after the last
    line returned, so a snapshot resumes exactly there. Each batch says where its records
    came from (:class:`~core.source.Origins`): ``{"file", "line"}`` with the record's first
    line (``{"file", "index"}`` for a JSON array element; ``{"file", "offset"}``, the byte
    offset of the line, in a JSON Lines byte range whose first line number is not counted).
    An error while reading is raised as :class:`FileReadError` or
    :class:`~core.errors.SourceDataError`, naming the file and the line.
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


# --------------------------------------------------------------------------- sink


def _sink_format(path: str) -> str | None:
    fmt = format_from_path(path)
    return fmt if fmt in ("csv", "jsonl") else None


class FileSink(Sink):
    """Writes JSON Lines or CSV to a local file or an S3 object (see the module doc)."""

    type_name = "file"
    attributes = (
        Attribute("path", str, required=True, help="a local path or an s3:// URL"),
        Attribute("format", str, choices=("jsonl", "csv"), help="default: from the extension (.jsonl/.ndjson, .csv/.tsv)"),
        Attribute("mode", str, default="overwrite", choices=("overwrite", "append"),
                  help="overwrite truncates once per run (not on resume); append keeps what is there"),
        Attribute("columns", list, help="CSV columns (default: the header already in the file, else the first record's fields)"),
        Attribute("header", bool, default=True, help="write a CSV header row"),
        Attribute("delimiter", str, check=one_character, help="CSV delimiter; default ',' (tab for .tsv)"),
        Attribute("quotechar", str, default='"', check=one_character, help="CSV quote character"),
        Attribute("encoding", str, default="utf-8", check=check_encoding, help="CSV text encoding (JSON Lines is UTF-8)"),
        Attribute("fsync", bool, default=False, help="fsync after every batch (survives power loss, slower)"),
        Attribute("endpoint_url", str, help="S3-compatible endpoint; default: AWS_ENDPOINT_URL or AWS"),
        Attribute("region", str, help="S3 region"),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.path: str = self.config["path"]
        fmt = self.config["format"] or _sink_format(self.path)
        if fmt is None:
            raise ConfigError(
                f"sink {self.type_name!r}",
                [f"cannot tell the format of {self.path!r} from its extension; set 'format' to jsonl or csv"],
            )
        self.format: str = fmt
        self.is_s3 = s3.is_s3(self.path)
        self.delimiter: str = self.config["delimiter"] or ("\t" if self.path.lower().endswith(".tsv") else ",")
        self.encoding = normalize_encoding(self.config["encoding"])
        self._fd: int | None = None
        self._encoder: CsvEncoder | None = None
        self._buffer: str | None = None

    def describe(self) -> str:
        return f"file {self.path} ({self.format})"

    # -- where bytes go ----------------------------------------------------------

    def object_url(self) -> str:
        """The S3 object this process uploads (depends on the run's parallelism and reader id)."""
        ctx = self.run_context
        if ctx.parallelism <= 1:
            return self.path
        stem, ext = _split_ext(self.path)
        return f"{stem}.part-{ctx.reader_id}{ext}"

    def _buffer_path(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", self.object_url()[5:])
        return os.path.join(self.run_context.state_dir, "file-sink", safe)

    def _s3_kwargs(self) -> dict[str, Any]:
        return {"endpoint_url": self.config["endpoint_url"], "region": self.config["region"]}

    # -- life cycle --------------------------------------------------------------

    def setup(self) -> None:
        if self.run_context.resuming:
            return
        if self.is_s3:
            if self.config["mode"] == "overwrite":
                stem, ext = _split_ext(self.path)
                parts = s3.list_objects(_glob.escape(stem) + ".part-*" + _glob.escape(ext), **self._s3_kwargs())
                s3.delete([self.path] + [url for url, _ in parts], **self._s3_kwargs())
            return
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        if self.config["mode"] == "overwrite":
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                columns = self.config["columns"]
                if self.format == "csv" and self.config["header"] and columns:
                    _write_all(fd, self._new_encoder(columns).header().encode(self.encoding))
            finally:
                os.close(fd)

    def open(self) -> None:
        if self._fd is not None:
            return
        target = self.path
        if self.is_s3:
            target = self._buffer = self._buffer_path()
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if self.config["mode"] == "append" and not os.path.exists(target):
                tmp = target + ".download"
                if s3.download(self.object_url(), tmp, **self._s3_kwargs()):
                    os.replace(tmp, target)
        else:
            parent = os.path.dirname(target)
            if parent:
                os.makedirs(parent, exist_ok=True)
        self._fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write_batch(self, records: Sequence[Record]) -> None:
        if not records:
            return
        if self._fd is None:
            self.open()
        fd = self._fd
        assert fd is not None
        if self.format == "jsonl":
            _write_all(fd, encode_jsonl(records))
        elif self._encoder is not None:
            _write_all(fd, self._encoder.encode(records).encode(self.encoding))
        else:
            self._first_csv_batch(fd, records)

    def _new_encoder(self, columns: Sequence[str]) -> CsvEncoder:
        return CsvEncoder([str(c) for c in columns], self.delimiter, self.config["quotechar"])

    def _first_csv_batch(self, fd: int, records: Sequence[Record]) -> None:
        """Header decision and first batch under an exclusive lock, so concurrent writers agree."""
        with _locked(fd):
            empty = os.fstat(fd).st_size == 0
            columns = self.config["columns"]
            if not columns and not empty and self.config["header"]:
                columns = self._existing_header()
            if not columns:
                columns = list(records[0])
            encoder = self._new_encoder(columns)
            text = encoder.encode(records)
            if empty and self.config["header"]:
                text = encoder.header() + text
            _write_all(fd, text.encode(self.encoding))
            self._encoder = encoder

    def _existing_header(self) -> list[str] | None:
        target = self._buffer or self.path
        options = CsvOptions(self.delimiter, self.config["quotechar"], True, None, self.encoding)
        with open(target, "rb", buffering=0) as raw:
            stream = open_range(raw, 0, None, 1 << 16)
            skip_bom(stream)
            names, _ = read_csv_header(stream, options, path=target)
        return names or None

    def flush(self) -> None:
        if self._fd is not None and self.config["fsync"]:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self.config["fsync"]:
                os.fsync(fd)
        finally:
            os.close(fd)
        if self.is_s3 and self._buffer is not None:
            # The buffer stays in the run's state dir: a resumed run appends to it and uploads it again.
            s3.upload(self._buffer, self.object_url(), **self._s3_kwargs())


def _split_ext(path: str) -> tuple[str, str]:
    slash = path.rfind("/")
    dot = path.rfind(".")
    if dot <= slash + 1:
        return path, ""
    return path[:dot], path[dot:]


def _write_all(fd: int, data: bytes | bytearray) -> None:
    """One ``os.write`` of the whole buffer (a regular file takes it whole; the loop is for the odd short write)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


@contextlib.contextmanager
def _locked(fd: int) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # no flock (Windows, WASI): a single writer there anyway
        yield
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
