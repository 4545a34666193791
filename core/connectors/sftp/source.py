"""The ``sftp`` source: the ``file`` source's splits, parsers and reader over files on an SFTP server."""

from __future__ import annotations

import fnmatch
import posixpath
import re
import stat
from collections.abc import Mapping
from typing import IO, Any, cast

from active_data_flow.attributes import Attribute
from active_data_flow.connectors.file.options import (
    ascii_character,
    check_csv_config,
    check_encoding,
    check_size,
    parse_size,
)
from active_data_flow.connectors.file.reader import FileSourceReader
from active_data_flow.connectors.file.source import FileSource
from active_data_flow.connectors.file.splits import FileSplitEnumerator
from active_data_flow.connectors.sftp.session import CONNECTION_ATTRIBUTES, SftpConnection, SftpError, SftpRaw
from active_data_flow.errors import ConfigError
from active_data_flow.formats import (
    DEFAULT_MAX_FIELD_BYTES,
    FORMATS,
    format_from_path,
    normalize_encoding,
    open_range,
)
from active_data_flow.source import (
    Source,
    SourceReader,
    SourceReaderContext,
    Split,
    SplitEnumerator,
    SplitEnumeratorContext,
)

_MAGIC = re.compile(r"[*?\[]")


class SftpSource(FileSource):
    """CSV / JSON / JSON Lines files on an SFTP server, one split per file (see the package doc)."""

    type_name = "sftp"
    attributes = (  # type: ignore[assignment]  # its own keys, not the file source's
        *CONNECTION_ATTRIBUTES,
        Attribute("path", (str, list), required=True,
                  help="remote path; the file name may hold wildcards (/data/in/*.csv), or a list of them"),
        Attribute("format", str, choices=FORMATS, help="csv, json or jsonl; default: from the file extension"),
        Attribute("delimiter", str, check=ascii_character, help="CSV field delimiter; default ',' (tab for .tsv)"),
        Attribute("quotechar", str, default='"', check=ascii_character, help="CSV quote character"),
        Attribute("header", bool, default=True, help="the first CSV row names the fields"),
        Attribute("columns", list, help="CSV field names (required when header is false; renames the header)"),
        Attribute("encoding", str, default="utf-8", check=check_encoding,
                  help="text encoding (ASCII-compatible; a UTF-16/32 byte-order mark overrides it)"),
        Attribute("max_field_bytes", (int, str), default=DEFAULT_MAX_FIELD_BYTES, check=check_size,
                  help="longest CSV field / JSON line read (e.g. '64MB'); longer ones become dead letters"),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        Source.__init__(self, config, **kwargs)
        raw = self.config["path"]
        self.paths: list[str] = [raw] if isinstance(raw, str) else [str(p) for p in raw]
        self.format: str | None = self.config["format"]
        self.encoding: str = normalize_encoding(self.config["encoding"])
        self.split_bytes: int | None = None
        self.max_field_bytes: int = parse_size(self.config["max_field_bytes"])
        self.watch: bool = False
        self.endpoint_url: str | None = None
        self.region: str | None = None
        self.connection = SftpConnection(self.config, f"source {self.type_name!r}")
        columns = self.config["columns"]
        problems: list[str] = check_csv_config(self.config)
        formats = set()
        for pattern in self.paths:
            folder, base = posixpath.split(pattern)
            if not pattern.strip() or not base:
                problems.append(f"'path': {pattern!r} must name a file or a file-name pattern")
                continue
            if _MAGIC.search(folder):
                problems.append(f"'path': only the file name may hold wildcards, not the directory ({pattern!r})")
            fmt = self.format or format_from_path(pattern)
            ext = posixpath.splitext(base)[1]
            if fmt is None and ((ext and not _MAGIC.search(ext)) or not _MAGIC.search(base)):
                problems.append(
                    f"cannot tell the format of {pattern!r} from its extension; set 'format' to one of {', '.join(FORMATS)}"
                )
            formats.add(fmt)
        if "csv" in formats and not self.config["header"] and not columns:
            problems.append("'columns' is required when 'header' is false")
        if problems:
            raise ConfigError(f"source {self.type_name!r}", problems)

    def describe(self) -> str:
        return f"sftp {self.connection.address} {', '.join(self.paths)}"

    def list_files(self) -> list[tuple[str, int]]:
        """``(remote path, size)`` of every regular file the patterns match: pattern by pattern, sorted."""
        sftp = self.connection.open()
        out: list[tuple[str, int]] = []
        seen: set[str] = set()
        for pattern in self.paths:
            folder, base = posixpath.split(pattern)
            found: list[tuple[str, int]] = []
            if not _MAGIC.search(base):
                try:
                    attrs = sftp.stat(pattern)
                except OSError:
                    attrs = None
                if attrs is not None and stat.S_ISREG(attrs.st_mode or 0):
                    found.append((pattern, int(attrs.st_size or 0)))
            else:
                try:
                    entries = sftp.listdir_attr(folder or ".")
                except OSError as exc:
                    raise SftpError(f"source 'sftp': cannot list {folder or '.'!r} on {self.connection.address}: {exc}") from None
                for entry in entries:
                    name = entry.filename
                    if name.startswith(".") and not base.startswith("."):
                        continue  # like a shell glob: hidden files only by an explicit pattern
                    if fnmatch.fnmatchcase(name, base) and stat.S_ISREG(entry.st_mode or 0):
                        found.append((posixpath.join(folder, name) if folder else name, int(entry.st_size or 0)))
            for path, size in sorted(found):
                if path not in seen:
                    seen.add(path)
                    out.append((path, size))
        return out

    def open_stream(self, path: str, start: int = 0, end: int | None = None, buffer_size: int = 1 << 18) -> Any:
        """A buffered binary stream over ``[start, end)`` of the remote file, ``tell()`` absolute."""
        sftp = self.connection.open()
        try:
            handle = sftp.open(path, "rb")
        except OSError as exc:
            raise SftpError(f"source 'sftp': cannot open {path!r} on {self.connection.address}: {exc}") from None
        size = int(handle.stat().st_size or 0)
        return open_range(cast("IO[bytes]", SftpRaw(handle, size)), start, end, max(buffer_size, 1 << 16))

    def create_enumerator(
        self, context: SplitEnumeratorContext, checkpoint: Mapping[str, Any] | None = None
    ) -> SplitEnumerator:
        return _SftpEnumerator(context, self, checkpoint)

    def create_reader(self, context: SourceReaderContext) -> SourceReader:
        return _SftpReader(context, self)


class _SftpEnumerator(FileSplitEnumerator):
    def discover_splits(self) -> list[Split]:
        source = self.source
        assert isinstance(source, SftpSource)
        try:
            files = source.list_files()
        finally:
            source.connection.close()  # readers connect on their own
        if not files:
            raise ConfigError(
                "source 'sftp'",
                [f"no files match {p!r} on {source.connection.address}" for p in source.paths],
            )
        splits: list[Split] = []
        for path, size in files:
            splits.extend(source.splits_of(path, size))
        return splits


class _SftpReader(FileSourceReader):
    def close(self) -> None:
        try:
            super().close()
        finally:
            source = self.source
            if isinstance(source, SftpSource):
                source.connection.close()
