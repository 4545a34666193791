"""SFTP source and sink over SSH with paramiko (the ``sftp`` extra, imported on first connect).

Connection (both)
    ``{type: sftp, host: files.example.com, port: 22, username: etl, private_key:
    ~/.ssh/id_ed25519}`` — authenticate with ``password`` (secret), ``private_key`` (a key
    file; ``passphrase`` if it is encrypted) or ``private_key_data`` (the key text itself,
    secret); with none of them, the SSH agent and the usual ``~/.ssh/id_*`` keys are tried.
    ``username`` defaults to the local user.

    *Host keys are checked*: the server's key must be in ``known_hosts`` (default
    ``~/.ssh/known_hosts``; entries for another port are written ``[host]:port``, hashed
    entries work). An unknown key or a key that differs from the recorded one is refused
    with :class:`SftpHostKeyError` naming the key's fingerprint. Only an explicit
    ``host_key_checking: false`` accepts any key (a warning is logged).

``sftp`` source
    ``{type: sftp, host: …, path: /data/in/*.csv, format: csv}`` — ``path`` is a remote
    path whose file name may hold wildcards (``*``, ``?``, ``[…]``; not the directory part),
    or a list of them; files are read in sorted order, one split per file, through the same
    parsers as the ``file`` source (CSV options ``delimiter``, ``quotechar``, ``header``,
    ``columns``, ``encoding``, ``max_field_bytes``; ``format`` from the option or each file's
    extension), with the same handling of malformed input, line ends and byte-order marks.
    A file is streamed (pipelined reads of one buffer at a time, never loaded whole, except a
    JSON array file); a split's position is the byte offset and line number of the next
    record, as in the ``file`` source, so a resumed run continues inside the file.

``sftp`` sink
    ``{type: sftp, host: …, path: "/data/out/orders-{run_id}.jsonl", format: jsonl}`` —
    ``path`` may use ``{run_id}``, ``{flow}`` and ``{reader_id}``; with several readers and no
    ``{reader_id}``, each reader writes ``<name>.part-<reader_id><ext>``. Writes are atomic:
    records go to ``.<name>.<run_id>.tmp`` in the same directory (each batch written and
    acknowledged by the server before :meth:`SftpSink.flush` returns), and the sink renames it
    to the final name when it closes — with the ``posix-rename@openssh.com`` extension
    (replaces an existing file atomically) when the server has it, else remove + rename.
    Readers of the directory never see a half-written file: a sink closed while an error
    propagates (a failed run) leaves the temporary file in place. A resumed run appends to
    its temporary file (or reopens the file it already renamed). JSON Lines or CSV (header once
    per file; ``columns`` or the first record's fields).
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import getpass
import hashlib
import io
import logging
import os
import posixpath
import re
import stat
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any, cast

from core.attributes import Attribute, one_character
from core.connectors.file import (
    FileSource,
    FileSourceReader,
    FileSplitEnumerator,
    ascii_character,
    check_csv_config,
    check_encoding,
    check_size,
    parse_size,
)
from core.errors import AdfError, ConfigError, MissingExtraError
from core.formats import (
    DEFAULT_MAX_FIELD_BYTES,
    FORMATS,
    CsvEncoder,
    CsvOptions,
    encode_jsonl,
    format_from_path,
    normalize_encoding,
    open_range,
    read_csv_header,
    skip_bom,
)
from core.logs import get_logger, log_event
from core.record import Record
from core.sink import Sink
from core.source import (
    Source,
    SourceReader,
    SourceReaderContext,
    Split,
    SplitEnumerator,
    SplitEnumeratorContext,
)

__all__ = [
    "SftpAuthError",
    "SftpConnection",
    "SftpError",
    "SftpHostKeyError",
    "SftpSink",
    "SftpSource",
]

_log = get_logger("connectors.sftp")
_MAGIC = re.compile(r"[*?\[]")
_WINDOW = 1 << 20  # bytes requested at once (pipelined 32 KiB reads)
_THREAD_EXIT_S = 10.0  # how long close() waits for paramiko's transport thread


class SftpError(AdfError):
    """Connecting to or talking to the SFTP server failed."""


class SftpHostKeyError(SftpError):
    """The server's host key is unknown or differs from ``known_hosts``: the connection is refused."""


class SftpAuthError(SftpError):
    """The server refused the credentials."""


def _import_paramiko(what: str) -> Any:
    try:
        import paramiko
    except ImportError as exc:
        raise MissingExtraError("paramiko", "sftp", what) from exc
    return paramiko


def _fingerprint(key: Any) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return f"{key.get_name()} SHA256:{base64.b64encode(digest).decode('ascii').rstrip('=')}"






def _check_port(value: Any) -> str | None:
    return None if 0 < value < 65536 else f"must be a TCP port (1-65535), got {value}"


CONNECTION_ATTRIBUTES = (
    Attribute("host", str, required=True, help="the SFTP server"),
    Attribute("port", int, default=22, check=_check_port),
    Attribute("username", str, help="default: the local user name"),
    Attribute("password", str, secret=True, help="password authentication"),
    Attribute("private_key", str, help="path of a private key file"),
    Attribute("private_key_data", str, secret=True, help="the private key itself (PEM/OpenSSH text)"),
    Attribute("passphrase", str, secret=True, help="passphrase of an encrypted private key"),
    Attribute("known_hosts", str, default="~/.ssh/known_hosts", help="known_hosts file the host key must be in"),
    Attribute("host_key_checking", bool, default=True,
              help="refuse unknown or changed host keys (false accepts any key: insecure)"),
    Attribute("timeout_s", float, default=30.0, help="connect / banner / auth timeout"),
)


class _RefuseUnknown:
    """paramiko missing-host-key policy: refuse with a message saying what to do."""

    def __init__(self, where: str, known_hosts: str) -> None:
        self.where = where
        self.known_hosts = known_hosts

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        exists = os.path.exists(self.known_hosts)
        host, _, port = hostname.strip("[").partition("]:")
        scan = f"ssh-keyscan{' -p ' + port if port else ''} {host} >> {self.known_hosts}"
        raise SftpHostKeyError(
            f"{self.where}: host key verification failed for {hostname}: its key {_fingerprint(key)} is not in "
            f"{self.known_hosts}{'' if exists else ' (the file does not exist)'}; refusing to connect. Check the "
            f"fingerprint with the server's administrator, then add it (e.g. `{scan}`), or point 'known_hosts' "
            f"at a file that has it. 'host_key_checking: false' accepts any key (insecure)."
        )


class _AcceptAny:
    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        log_event(_log, "host key checking is off; accepting the server's key", logging.WARNING, host=hostname,
                  key=_fingerprint(key))


def _wait_thread_gone(thread: threading.Thread, timeout: float) -> bool:
    """Wait until ``thread`` has ended, including what runs after its Python code (TLS destructors).

    ``join()`` returns when the thread's Python code is done; C libraries' per-thread clean-up
    (OpenSSL's among them) runs after that. On Linux the thread's ``/proc/self/task`` entry goes
    away only when the thread is fully gone; elsewhere ``join()`` is all there is.
    """
    deadline = time.monotonic() + timeout
    thread.join(timeout)
    if thread.is_alive():
        return False
    task = f"/proc/self/task/{thread.native_id}" if thread.native_id is not None else None
    if task is None or not os.path.isdir("/proc/self/task"):
        return True
    while os.path.exists(task):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.001)
    return True


class SftpConnection:
    """How to reach one server (from the connector's validated config); :meth:`open` connects."""

    def __init__(self, config: Mapping[str, Any], where: str) -> None:
        self.where = where
        self.host: str = config["host"]
        self.port: int = int(config["port"])
        self.username: str = config["username"] or getpass.getuser()
        self.password: str | None = config["password"]
        self.private_key: str | None = config["private_key"]
        self.private_key_data: str | None = config["private_key_data"]
        self.passphrase: str | None = config["passphrase"]
        self.known_hosts: str = os.path.expanduser(config["known_hosts"])
        self.host_key_checking: bool = bool(config["host_key_checking"])
        self.timeout: float = float(config["timeout_s"])
        self.client: Any = None
        self.sftp: Any = None

    @property
    def address(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"

    @property
    def host_entry(self) -> str:
        """The host's name in known_hosts: ``host``, or ``[host]:port`` for another port than 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def _load_key(self, paramiko: Any) -> Any:
        if self.private_key:
            path = os.path.expanduser(self.private_key)
            try:
                return paramiko.PKey.from_path(path, self.passphrase)
            except FileNotFoundError:
                raise ConfigError(self.where, [f"'private_key': no file {path!r}"]) from None
            except (paramiko.SSHException, ValueError, TypeError, OSError) as exc:
                raise SftpAuthError(f"{self.where}: cannot load private_key {path!r}: {type(exc).__name__}: {exc}") from None
        if self.private_key_data:
            errors = []
            for name in ("Ed25519Key", "ECDSAKey", "RSAKey"):
                cls = getattr(paramiko, name, None)
                if cls is None:
                    continue
                try:
                    return cls.from_private_key(io.StringIO(self.private_key_data), password=self.passphrase)
                except (paramiko.SSHException, ValueError, TypeError) as exc:
                    errors.append(f"{name}: {type(exc).__name__}")
            raise SftpAuthError(f"{self.where}: private_key_data is not a private key paramiko can read ({'; '.join(errors)})")
        return None

    def open(self) -> Any:
        """Connect (once) and return the paramiko ``SFTPClient``."""
        if self.sftp is not None:
            return self.sftp
        paramiko = _import_paramiko(self.where)
        pkey = self._load_key(paramiko)
        client = paramiko.SSHClient()
        if self.host_key_checking:
            if os.path.exists(self.known_hosts):
                try:
                    client.load_host_keys(self.known_hosts)
                except (OSError, paramiko.SSHException) as exc:
                    raise SftpHostKeyError(f"{self.where}: cannot read known_hosts {self.known_hosts!r}: {exc}") from None
            client.set_missing_host_key_policy(_RefuseUnknown(self.where, self.known_hosts))
        else:
            client.set_missing_host_key_policy(_AcceptAny())
        has_credentials = bool(self.password or pkey is not None)
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                pkey=pkey,
                allow_agent=not has_credentials,
                look_for_keys=not has_credentials,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
            )
            sftp = client.open_sftp()
        except SftpError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise SftpHostKeyError(
                f"{self.where}: host key verification failed for {self.host_entry}: the server presented "
                f"{_fingerprint(exc.key)} but {self.known_hosts} records {_fingerprint(exc.expected_key)}; refusing to "
                f"connect. The server's key changed or someone is intercepting the connection. If the change is "
                f"expected, remove the old entry (`ssh-keygen -R '{self.host_entry}' -f {self.known_hosts}`) and add "
                f"the new key after checking its fingerprint."
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            how = "password" if self.password else "private key" if pkey is not None else "SSH agent / ~/.ssh keys"
            raise SftpAuthError(f"{self.where}: {self.address} refused the {how}: {exc}") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise SftpError(f"{self.where}: cannot connect to {self.address}: {type(exc).__name__}: {exc}") from None
        self.client, self.sftp = client, sftp
        return sftp

    def close(self) -> None:
        """Close the session and wait for paramiko's transport thread to end.

        paramiko's ``close()`` does not wait for that thread, and on its way out the thread still
        runs OpenSSL's thread clean-up, which takes OpenSSL's process-wide lock. The engine forks
        its reader processes right after the coordinator lists the files: a fork while that lock is
        held leaves it held forever in the child, whose first key exchange then never returns.
        """
        sftp, client = self.sftp, self.client
        self.sftp = self.client = None
        transport = None
        if sftp is not None:
            with contextlib.suppress(Exception):
                sftp.close()
        if client is not None:
            with contextlib.suppress(Exception):
                transport = client.get_transport()
            with contextlib.suppress(Exception):
                client.close()
        if transport is not None and transport is not threading.current_thread():
            if not _wait_thread_gone(transport, _THREAD_EXIT_S):
                log_event(_log, "the SSH transport thread did not end after closing", logging.WARNING,
                          server=self.address, waited_s=_THREAD_EXIT_S)


# --------------------------------------------------------------------------- reading


class _SftpRaw(io.RawIOBase):
    """A seekable raw stream over a remote file: each read asks for one window with pipelined requests."""

    def __init__(self, handle: Any, size: int) -> None:
        super().__init__()
        self._f = handle
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = self._size + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), _WINDOW, self._size - self._pos)
        if want <= 0:
            return 0
        data = b"".join(self._f.readv([(self._pos, want)]))
        got = len(data)
        memoryview(buffer).cast("B")[:got] = data
        self._pos += got
        return got

    def close(self) -> None:
        if not self.closed:
            try:
                self._f.close()
            finally:
                super().close()


class SftpSource(FileSource):
    """CSV / JSON / JSON Lines files on an SFTP server, one split per file (see the module doc)."""

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
        return open_range(cast("IO[bytes]", _SftpRaw(handle, size)), start, end, max(buffer_size, 1 << 16))

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


# --------------------------------------------------------------------------- sink


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
    """Writes JSON Lines or CSV to a remote file, atomically (see the module doc)."""

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
        stream = open_range(cast("IO[bytes]", _SftpRaw(handle, size)), 0, None, 1 << 16)
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
