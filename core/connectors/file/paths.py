"""Where the file source's files are: local paths and ``s3://`` URLs.

Listing what a source's globs match (:func:`match_files`), opening a byte range of a file
(:func:`open_path`), the split id of a byte range (:data:`RANGE_MARK`), and the errors of
finding and reading files.
"""

from __future__ import annotations

import contextlib
import glob as _glob
import os
from collections.abc import Sequence
from typing import Any

from active_data_flow.connectors import s3
from active_data_flow.errors import AdfError, ConfigError
from active_data_flow.formats import open_range

#: The split id of a byte range is ``<path>#bytes=<start>-<end>``.
RANGE_MARK = "#bytes="


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


def split_path(split_id: str) -> str:
    """The path of the file a split id names (the id itself, or a byte range's path)."""
    path, mark, _ = split_id.rpartition(RANGE_MARK)
    return path if mark else split_id


def open_path(
    path: str, start: int, end: int | None, buffer_size: int, endpoint_url: str | None, region: str | None
) -> Any:
    """A buffered binary stream over ``[start, end)`` of ``path`` (local or S3), ``tell()`` absolute."""
    if s3.is_s3(path):
        return s3.open_read(
            path, start, end, endpoint_url=endpoint_url, region=region, buffer_size=max(buffer_size, 1 << 20)
        )
    return open_range(open(path, "rb", buffering=0), start, end, buffer_size)


def match_files(patterns: Sequence[str], endpoint_url: str | None, region: str | None) -> list[tuple[str, int]]:
    """``(path, size)`` of every file the patterns match now: pattern by pattern, sorted, without duplicates."""
    out: list[tuple[str, int]] = []
    seen: set[str] = set()
    for pattern in patterns:
        if s3.is_s3(pattern):
            found = s3.list_objects(pattern, endpoint_url=endpoint_url, region=region)
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
