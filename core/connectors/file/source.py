"""The ``file`` source: CSV, JSON array and JSON Lines files, local or on S3, cut into splits.

:class:`FileSource` reads its configuration, finds its files and cuts each into splits (byte
ranges whose boundaries are record starts, with ``split_bytes``, or cut automatically when a run
has more readers than files: :meth:`FileSource.plan_splits`); its reader is
:class:`~active_data_flow.connectors.file.reader.FileSourceReader`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from active_data_flow.attributes import Attribute
from active_data_flow.connectors import s3
from active_data_flow.connectors.file.options import (
    ascii_character,
    check_csv_config,
    check_encoding,
    check_paths,
    check_size,
    parse_size,
)
from active_data_flow.connectors.file.paths import RANGE_MARK, FileReadError, match_files, open_path
from active_data_flow.connectors.file.reader import FileSourceReader
from active_data_flow.connectors.file.splits import FileSplit, FileSplitEnumerator
from active_data_flow.errors import AdfError, ConfigError
from active_data_flow.formats import (
    DEFAULT_MAX_FIELD_BYTES,
    FORMATS,
    CsvOptions,
    aligned_boundaries,
    cuttable,
    detect_bom,
    format_from_path,
    normalize_encoding,
)
from active_data_flow.source import (
    Boundedness,
    Source,
    SourceReader,
    SourceReaderContext,
    Split,
    SplitEnumerator,
    SplitEnumeratorContext,
)

#: the smallest byte range the automatic cut makes (the ``min_split_bytes`` default): below it the
#: cost of a range (opening it, a CSV header read, the enumerator's boundary search) is no longer
#: small against reading it; measured in docs/BENCHMARKS.md ("One file, two readers")
AUTO_SPLIT_MIN_BYTES = 16 << 20
#: the automatic cut aims at about this many ranges per reader: readers take ranges as they finish,
#: so they end within about one range of each other
AUTO_SPLIT_RANGES_PER_READER = 4



class FileSource(Source):
    """Reads CSV, JSON array and JSON Lines files, local or on S3 (see the package doc)."""

    type_name = "file"
    attributes = (
        Attribute("path", (str, list), required=True, check=check_paths,
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
        Attribute("auto_split", bool, default=True,
                  help="with more readers than files, cut CSV/JSONL files into byte ranges (without split_bytes)"),
        Attribute("min_split_bytes", (int, str), default=AUTO_SPLIT_MIN_BYTES, check=check_size,
                  help="smallest byte range the automatic cut makes (e.g. '16MB')"),
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
        self.auto_split: bool = bool(self.config["auto_split"])
        self.min_split_bytes: int = parse_size(self.config["min_split_bytes"])
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
        return open_path(path, start, end, buffer_size, self.endpoint_url, self.region)

    def list_files(self) -> list[tuple[str, int]]:
        """``(path, size)`` of every file the patterns match now: pattern by pattern, sorted, without duplicates."""
        return match_files(self.paths, self.endpoint_url, self.region)

    def plan_splits(
        self, files: Sequence[tuple[str, int]], parallelism: int
    ) -> tuple[list[FileSplit], list[dict[str, Any]]]:
        """The splits of ``files`` (``(path, size)``) for a run of ``parallelism`` readers, and why
        the run has fewer splits than readers when it has.

        With ``split_bytes`` every file is cut by it. Without it, when ``auto_split`` is on and
        there are fewer files than readers, the CSV and JSON Lines files are cut into byte ranges
        of equal size: about :data:`AUTO_SPLIT_RANGES_PER_READER` per reader over all of them,
        none smaller than ``min_split_bytes`` (a file is cut in ``n`` only when it holds ``n``
        such ranges). The boundaries are the ones ``split_bytes`` makes (record starts), so
        every record is read once, whatever the cut. The second value is empty when there are
        at least as many splits as readers; otherwise it names each file left as one split:
        ``{"file", "size", "reason"}`` (the reason says what would let it be cut).
        """
        auto = self._auto_range_bytes(files, parallelism)
        splits: list[FileSplit] = []
        whole: list[tuple[str, int]] = []
        for path, size in files:
            cut = self.splits_of(path, size, auto(size) if auto is not None else None)
            splits.extend(cut)
            if len(cut) == 1:
                whole.append((path, size))
        if parallelism <= 1 or len(splits) >= parallelism or not splits:
            return splits, []
        return splits, [{"file": path, "size": size, "reason": self._why_whole(path, size)} for path, size in whole]

    def _auto_range_bytes(
        self, files: Sequence[tuple[str, int]], parallelism: int
    ) -> Callable[[int], int | None] | None:
        """``size -> range bytes or None`` for the automatic cut, or None when it does not apply."""
        if self.split_bytes is not None or not self.auto_split or parallelism <= 1 or len(files) >= parallelism:
            return None
        total = sum(size for path, size in files if self.format_of(path) != "json")
        target = max(self.min_split_bytes, math.ceil(total / (parallelism * AUTO_SPLIT_RANGES_PER_READER)))
        smallest = self.min_split_bytes

        def range_bytes(size: int) -> int | None:
            ranges = min(max(1, round(size / target)), size // smallest)
            return math.ceil(size / ranges) if ranges >= 2 else None

        return range_bytes

    def _why_whole(self, path: str, size: int) -> str:
        """Why ``path`` is read as one split, and what would let it be cut."""
        fmt = self.format_of(path)
        if fmt == "json":
            return "a JSON array file is parsed whole as one split; as JSON Lines (one record per line) it can be cut"
        try:
            wide = not cuttable(self.encoding_of(path))
        except Exception:  # only the reason is at stake here: reading will report the error
            wide = False
        if wide:
            return "a UTF-16/32 file (byte-order mark) is read as one split; re-encoded as UTF-8 it can be cut"
        if self.split_bytes is not None:
            if size <= self.split_bytes:
                return f"it is not bigger than split_bytes ({self.split_bytes}); a smaller split_bytes cuts it"
            return "its records are longer than split_bytes, so no record starts inside it to cut at"
        if not self.auto_split:
            return "auto_split is false; remove it, or set split_bytes, to cut the file into byte ranges"
        if size < 2 * self.min_split_bytes:
            return (
                f"it is smaller than two ranges of min_split_bytes ({self.min_split_bytes} bytes); "
                "a smaller min_split_bytes (or split_bytes) cuts it"
            )
        return "its records are too long to find a second record start to cut at"

    def splits_of(self, path: str, size: int, split_bytes: int | None = None) -> list[FileSplit]:
        """The splits of one file: one, or byte ranges of about ``split_bytes`` (default: the
        source's ``split_bytes``) when the file is bigger, each starting at a record start.

        A JSON array file and a UTF-16/32 file (byte-order mark) are always one split.
        """
        fmt = self.format_of(path)
        split_bytes = split_bytes if split_bytes is not None else self.split_bytes
        if split_bytes is None or fmt == "json" or size <= split_bytes:
            return [FileSplit(path, None, path, 0, None, 1, fmt, size)]
        try:
            if not cuttable(self.encoding_of(path)):
                return [FileSplit(path, None, path, 0, None, 1, fmt, size)]
            if fmt == "jsonl":
                starts = self._jsonl_boundaries(path, size, split_bytes)
            else:
                options = self.csv_options(path)
                stream = self.open_stream(path, 0, size, buffer_size=1 << 16)
                try:
                    starts = aligned_boundaries(
                        stream, size, split_bytes, quotechar=options.quotechar,
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
            splits.append(FileSplit(f"{path}{RANGE_MARK}{start}-{end}", None, path, start, end, line, fmt, size))
        return splits

    def encoding_of(self, path: str) -> str:
        """The encoding ``path`` is read in: its byte-order mark's, else the configured one (one short read)."""
        stream = self.open_stream(path, 0, 4, buffer_size=16)
        try:
            head = stream.read(4)
        finally:
            stream.close()
        return detect_bom(head)[0] or self.encoding

    def _jsonl_boundaries(self, path: str, size: int, split_bytes: int) -> list[tuple[int, int]]:
        """Split starts of a JSON Lines file without reading it whole.

        A JSON line cannot contain a raw newline, so the first line start at or after each
        target offset is a safe boundary: one short read per boundary. The line number of
        a boundary is left unknown (0) and counted only if a dead letter needs it.
        """
        starts = [(0, 1)]
        target = split_bytes
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
            target = start + split_bytes
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
