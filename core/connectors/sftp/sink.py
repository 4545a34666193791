"""The ``sftp`` sink: JSON Lines or CSV written to a temporary remote file, renamed into place on close."""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import re
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any, cast

from active_data_flow.attributes import Attribute, one_character
from active_data_flow.connectors.file.options import check_encoding
from active_data_flow.connectors.sftp.session import CONNECTION_ATTRIBUTES, SftpConnection, SftpError, SftpRaw
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
from active_data_flow.logs import get_logger, log_event
from active_data_flow.record import Record
from active_data_flow.sink import Sink

_log = get_logger("connectors.sftp")


_PLACEHOLDERS = ("run_id", "flow", "reader_id")


def _check_template(value: Any) -> str | None:
    try:
        str(value).format(**{k: "x" for k in _PLACEHOLDERS})
    except (KeyError, IndexError, ValueError) as exc:
        return f"{value!r}: bad placeholder {exc} (known: {', '.join('{' + p + '}' for p in _PLACEHOLDERS)})"
    if str(value).endswith("/"):
        return f"{value!r} must name a file"
    return None


class SftpSink(Sink):
    """Writes JSON Lines or CSV to a remote file, atomically (see the package doc)."""

    type_name = "sftp"
    attributes = (
        *CONNECTION_ATTRIBUTES,
        Attribute("path", str, required=True, check=_check_template,
                  help="remote file; may use {run_id}, {flow}, {reader_id}"),
        Attribute("format", str, choices=("jsonl", "csv"), help="default: from the extension (.jsonl/.ndjson, .csv/.tsv)"),
        Attribute("columns", list, help="CSV columns (default: the first record's fields)"),
        Attribute("header", bool, default=True, help="write a CSV header row"),
        Attribute("delimiter", str, check=one_character, help="CSV delimiter; default ',' (tab for .tsv)"),
        Attribute("quotechar", str, default='"', check=one_character, help="CSV quote character"),
        Attribute("encoding", str, default="utf-8", check=check_encoding, help="CSV text encoding (JSON Lines is UTF-8)"),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.template: str = self.config["path"]
        fmt = self.config["format"] or format_from_path(self.template)
        if fmt not in ("jsonl", "csv"):
            raise ConfigError(
                f"sink {self.type_name!r}",
                [f"cannot tell the format of {self.template!r} from its extension; set 'format' to jsonl or csv"],
            )
        self.format: str = fmt
        self.delimiter: str = self.config["delimiter"] or ("\t" if self.template.lower().endswith(".tsv") else ",")
        self.encoding = normalize_encoding(self.config["encoding"])
        self.connection = SftpConnection(self.config, f"sink {self.type_name!r}")
        self._file: Any = None
        self._encoder: CsvEncoder | None = None
        self._empty = True
        self._target: str | None = None
        self._temp: str | None = None

    # -- names -------------------------------------------------------------------

    def target_path(self) -> str:
        """The final remote path of this reader's file."""
        ctx = self.run_context
        path = self.template.format(run_id=ctx.run_id, flow=ctx.flow_name, reader_id=ctx.reader_id)
        if ctx.parallelism > 1 and "{reader_id}" not in self.template:
            folder, base = posixpath.split(path)
            stem, ext = posixpath.splitext(base)
            path = posixpath.join(folder, f"{stem}.part-{ctx.reader_id}{ext}")
        return path

    def temp_path(self) -> str:
        """Where records go until :meth:`close` renames the file into place (same directory)."""
        folder, base = posixpath.split(self.target_path())
        return posixpath.join(folder, f".{base}.{self.run_context.run_id}.tmp")

    def _marker(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", self.target_path())
        return os.path.join(self.run_context.state_dir, "sftp-sink", safe + ".renamed")

    def describe(self) -> str:
        return f"sftp {self.connection.address}{'' if self.template.startswith('/') else ':'}{self.template} ({self.format})"

    # -- life cycle --------------------------------------------------------------

    def _exists(self, sftp: Any, path: str) -> bool:
        try:
            sftp.stat(path)
        except OSError:
            return False
        return True

    def _makedirs(self, sftp: Any, folder: str) -> None:
        if not folder or folder in ("/", "."):
            return
        if self._exists(sftp, folder):
            return
        self._makedirs(sftp, posixpath.dirname(folder.rstrip("/")))
        with contextlib.suppress(OSError):  # created meanwhile by another reader
            sftp.mkdir(folder)
        if not self._exists(sftp, folder):
            raise SftpError(f"sink 'sftp': cannot create directory {folder!r} on {self.connection.address}")

    def open(self) -> None:
        if self._file is not None:
            return
        sftp = self.connection.open()
        target, temp = self.target_path(), self.temp_path()
        self._makedirs(sftp, posixpath.dirname(target))
        mode = "wb"
        if self.run_context.resuming:
            if self._exists(sftp, temp):
                mode = "ab"
            elif os.path.exists(self._marker()) and self._exists(sftp, target):
                # an earlier attempt of this run renamed its file already: continue it
                self._rename(sftp, target, temp)
                mode = "ab"
        try:
            handle = sftp.open(temp, mode, bufsize=0)
        except OSError as exc:
            raise SftpError(f"sink 'sftp': cannot write {temp!r} on {self.connection.address}: {exc}") from None
        self._file, self._target, self._temp = handle, target, temp
        self._empty = mode == "wb" or int(handle.stat().st_size or 0) == 0
        if self.format == "csv" and not self._empty and self.config["header"] and not self.config["columns"]:
            columns = self._existing_header(sftp, temp)
            if columns:
                self._encoder = self._new_encoder(columns)
        if self.format == "csv" and self._encoder is None and self.config["columns"]:
            self._encoder = self._new_encoder(self.config["columns"])
            if self._empty and self.config["header"]:
                self._write(self._encoder.header().encode(self.encoding))

    def _existing_header(self, sftp: Any, path: str) -> list[str]:
        handle = sftp.open(path, "rb")
        size = int(handle.stat().st_size or 0)
        stream = open_range(cast("IO[bytes]", SftpRaw(handle, size)), 0, None, 1 << 16)
        try:
            skip_bom(stream)
            options = CsvOptions(self.delimiter, self.config["quotechar"], True, None, self.encoding)
            names, _ = read_csv_header(stream, options)
        finally:
            stream.close()
        return names

    def _new_encoder(self, columns: Sequence[Any]) -> CsvEncoder:
        return CsvEncoder([str(c) for c in columns], self.delimiter, self.config["quotechar"])

    def _write(self, data: bytes | bytearray) -> None:
        if data:
            self._file.write(bytes(data))
            self._empty = False

    def write_batch(self, records: Sequence[Record]) -> None:
        if not records:
            return
        if self._file is None:
            self.open()
        if self.format == "jsonl":
            self._write(encode_jsonl(records))
            return
        if self._encoder is None:
            encoder = self._new_encoder(list(records[0]))
            text = encoder.encode(records)  # may raise for a record with other fields: nothing written
            if self._empty and self.config["header"]:
                text = encoder.header() + text
            self._write(text.encode(self.encoding))
            self._encoder = encoder
            return
        self._write(self._encoder.encode(records).encode(self.encoding))

    def flush(self) -> None:
        # Writes are unbuffered and each one waits for the server's answer: once write_batch
        # returned, the bytes are in the server's file.
        if self._file is not None:
            self._file.flush()

    def _rename(self, sftp: Any, old: str, new: str) -> None:
        try:
            sftp.posix_rename(old, new)
            return
        except OSError as exc:
            log_event(_log, "posix-rename unavailable; falling back to remove + rename", logging.WARNING, error=str(exc))
        if self._exists(sftp, new):
            sftp.remove(new)
        sftp.rename(old, new)

    def close(self) -> None:
        handle, self._file = self._file, None
        if handle is None:
            self.connection.close()
            return
        try:
            handle.close()
            if sys.exc_info()[1] is not None:
                # closed while an error propagates (the run failed): the file is incomplete, keep it
                # under its temporary name for the resumed run instead of publishing it.
                log_event(_log, "run failed; keeping the temporary file", logging.WARNING, path=self._temp)
                return
            sftp = self.connection.open()
            assert self._temp is not None and self._target is not None
            self._rename(sftp, self._temp, self._target)
            if os.path.isdir(self.run_context.state_dir):
                marker = self._marker()
                os.makedirs(os.path.dirname(marker), exist_ok=True)
                with open(marker, "w", encoding="utf-8") as f:
                    f.write(self._target + "\n")
            log_event(_log, "sftp file written", path=self._target)
        finally:
            self.connection.close()
