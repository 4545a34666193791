"""The ``file`` sink: JSON Lines or CSV appended to a local file, or buffered and uploaded to S3.

Every batch is one ``os.write`` to a file opened with ``O_APPEND``; the first CSV batch decides
the columns under an exclusive lock, so concurrent reader processes agree on them.
"""

from __future__ import annotations

import contextlib
import glob as _glob
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from active_data_flow.attributes import Attribute, one_character
from active_data_flow.connectors import s3
from active_data_flow.connectors.file.options import check_encoding
from active_data_flow.errors import ConfigError
from active_data_flow.formats import (
    CsvEncoder,
    CsvOptions,
    encode_jsonl,
    format_from_path,
    normalize_encoding,
    open_range,
    read_csv_header,
    skip_bom,
)
from active_data_flow.record import Record
from active_data_flow.sink import Sink


def _sink_format(path: str) -> str | None:
    fmt = format_from_path(path)
    return fmt if fmt in ("csv", "jsonl") else None


class FileSink(Sink):
    """Writes JSON Lines or CSV to a local file or an S3 object (see the package doc)."""

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
