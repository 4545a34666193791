"""``wasi:filesystem``, read-only: the preopened directories (the manifest's ``files``
mounts), their files and listings. Mounted files are read-only, as in Spin; a path that
would leave its directory is ``not-permitted``."""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from typing import Any, BinaryIO

from active_data_flow.spin_app.local_host.wasi.state import Handles, HostFunctions
from active_data_flow.spin_app.local_host.wasi.streams import InputStream
from active_data_flow.spin_app.local_host.wasi.values import Err, Ok, Some

__all__ = ["Descriptor", "DirEntries", "filesystem_functions"]

_FS = "wasi:filesystem/types"
_ERROR_CODES = {errno.ENOENT: "no-entry", errno.EACCES: "access", errno.EPERM: "not-permitted",
                errno.ENOTDIR: "not-directory", errno.EISDIR: "is-directory", errno.EEXIST: "exist",
                errno.ELOOP: "loop", errno.ENAMETOOLONG: "name-too-long"}


class Descriptor:
    def __init__(self, path: str) -> None:
        self.path = path


class DirEntries:
    def __init__(self, entries: list[tuple[str, str]]) -> None:
        self.entries = entries


def _kind(mode: int) -> str:
    if stat_mod.S_ISDIR(mode):
        return "directory"
    if stat_mod.S_ISREG(mode):
        return "regular-file"
    if stat_mod.S_ISLNK(mode):
        return "symbolic-link"
    return "unknown"


def _code(exc: OSError) -> Err:
    return Err(_ERROR_CODES.get(exc.errno or 0, "io"))


def _ts(seconds: float) -> dict[str, int]:
    ns = int(seconds * 1e9)
    return {"seconds": ns // 1_000_000_000, "nanoseconds": ns % 1_000_000_000}


def _stat_of(path: str, follow: bool = True) -> Any:
    try:
        sr = os.stat(path) if follow else os.lstat(path)
    except OSError as exc:
        return _code(exc)
    return Ok({"type": _kind(sr.st_mode), "link-count": sr.st_nlink, "size": sr.st_size,
               "data-access-timestamp": Some(_ts(sr.st_atime)),
               "data-modification-timestamp": Some(_ts(sr.st_mtime)),
               "status-change-timestamp": Some(_ts(sr.st_ctime))})


def _metadata_hash(path: str) -> Any:
    try:
        sr = os.stat(path)
    except OSError as exc:
        return _code(exc)
    return Ok({"lower": sr.st_ino & (2**64 - 1), "upper": sr.st_dev & (2**64 - 1)})


def _inside(d: Descriptor, path: str) -> str | None:
    """``path`` under the descriptor's directory, or None if it would leave it."""
    if os.path.isabs(path):
        return None
    full = os.path.normpath(os.path.join(d.path, path))
    root = os.path.realpath(d.path)
    real = os.path.realpath(full)
    return full if real == root or real.startswith(root + os.sep) else None


def _open_target(d: Descriptor, path: str, open_flags: Any, flags: Any) -> Any:
    """``open-at``'s answer: the path to open (``Ok``), or the error code."""
    target = _inside(d, path)
    if target is None:
        return Err("not-permitted")
    if open_flags & {"create", "truncate", "exclusive"} or "write" in flags:
        return Err("read-only")  # mounted files are read-only, as in Spin
    if not os.path.exists(target):
        return Err("no-entry")
    if "directory" in open_flags and not os.path.isdir(target):
        return Err("not-directory")
    return Ok(target)


def _reader(fh: BinaryIO) -> Any:
    """``read(n)`` of an open file, which closes it at the end."""

    def reader(n: int) -> bytes:
        chunk = fh.read(n)
        if not chunk:
            fh.close()
        return chunk

    return reader


def _read(path: str, length: int, offset: int) -> Any:
    try:
        with open(path, "rb") as fh:
            fh.seek(int(offset))
            data = fh.read(int(length))
    except OSError as exc:
        return _code(exc)
    return Ok((data, len(data) < int(length)))


def _entries(path: str) -> Any:
    """The directory's entries (``Ok([(type, name)])``, sorted by name), or the error code."""
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        return _code(exc)
    entries = []
    for n in names:
        try:
            entries.append((_kind(os.lstat(os.path.join(path, n)).st_mode), n))
        except OSError:
            continue
    return Ok(entries)


def filesystem_functions(f: HostFunctions, handles: Handles) -> None:
    """Add ``wasi:filesystem/types`` and ``wasi:filesystem/preopens`` to ``f``."""
    o, own, st = handles.obj, handles.own, handles.state
    _reading(f, handles)
    _looking_up(f, handles)
    m = f"{_FS}#[method]descriptor."
    f[m + "get-type"] = lambda s, r: Ok(_kind(os.stat(o(s, r).path).st_mode))
    f[m + "get-flags"] = lambda s, r: Ok({"read"})
    f[m + "is-same-object"] = lambda s, a, b: os.path.realpath(o(s, a).path) == os.path.realpath(o(s, b).path)
    f[m + "advise"] = lambda s, r, *a: Ok(None)
    f[m + "sync"] = lambda s, r: Ok(None)
    f[m + "sync-data"] = lambda s, r: Ok(None)
    f[f"{_FS}#filesystem-error-code"] = lambda s, r: None
    f["wasi:filesystem/preopens#get-directories"] = lambda s: [
        (own("wasi:filesystem/preopens", "descriptor", Descriptor(host)), guest)
        for host, guest in st().preopens.items()
    ]


def _reading(f: HostFunctions, handles: Handles) -> None:
    """A file's contents (a stream, or a range) and a directory's entries."""
    o, own = handles.obj, handles.own

    def read_via_stream(s: Any, r: Any, offset: int) -> Any:
        d = o(s, r)
        try:
            fh = open(d.path, "rb")
        except OSError as exc:
            return _code(exc)
        fh.seek(int(offset))
        return Ok(own(_FS, "input-stream", InputStream(reader=_reader(fh))))

    def read_directory(s: Any, r: Any) -> Any:
        got = _entries(o(s, r).path)
        return Ok(own(_FS, "directory-entry-stream", DirEntries(got.value))) if isinstance(got, Ok) else got

    def next_entry(s: Any, r: Any) -> Any:
        it = o(s, r)
        if not it.entries:
            return Ok(None)
        t, n = it.entries.pop(0)
        return Ok(Some({"type": t, "name": n}))

    m = f"{_FS}#[method]descriptor."
    f[m + "read-via-stream"] = read_via_stream
    f[m + "read"] = lambda s, r, length, offset: _read(o(s, r).path, length, offset)
    f[m + "read-directory"] = read_directory
    f[f"{_FS}#[method]directory-entry-stream.read-directory-entry"] = next_entry


def _looking_up(f: HostFunctions, handles: Handles) -> None:
    """Paths under a descriptor: open, stat, metadata hash."""
    o, own = handles.obj, handles.own

    def open_at(s: Any, r: Any, path_flags: Any, path: str, open_flags: Any, flags: Any) -> Any:
        got = _open_target(o(s, r), path, open_flags, flags)
        return Ok(own(_FS, "descriptor", Descriptor(got.value))) if isinstance(got, Ok) else got

    def stat_at(s: Any, r: Any, path_flags: Any, path: str) -> Any:
        target = _inside(o(s, r), path)
        return Err("not-permitted") if target is None else _stat_of(target, "symlink-follow" in path_flags)

    def hash_at(s: Any, r: Any, path_flags: Any, path: str) -> Any:
        target = _inside(o(s, r), path)
        return Err("not-permitted") if target is None else _metadata_hash(target)

    m = f"{_FS}#[method]descriptor."
    f[m + "stat"] = lambda s, r: _stat_of(o(s, r).path)
    f[m + "stat-at"] = stat_at
    f[m + "open-at"] = open_at
    f[m + "metadata-hash"] = lambda s, r: _metadata_hash(o(s, r).path)
    f[m + "metadata-hash-at"] = hash_at
