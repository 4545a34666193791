"""What a module may do through the host functions. None by default.

A permission is ``<kind>:<access>:<pattern>``:

==============  ==========================================  ===================================
kind:access     pattern                                     example
==============  ==========================================  ===================================
``http:read``   URL glob (GET, HEAD)                        ``http:read:https://api.example.com/*``
``http:write``  URL glob (POST, PUT, PATCH, DELETE)         ``http:write:https://hooks.example.com/v1/*``
``db:read``     ``<connection>/<table glob>``               ``db:read:main/orders*``
``db:write``    ``<connection>/<table glob>``               ``db:write:main/audit_log``
``file:read``   storage prefix (``s3://bucket/p/`` or a     ``file:read:reports/``
                relative path under the file store)
``file:write``  storage prefix                              ``file:write:s3://out/exports/``
==============  ==========================================  ===================================

Globs: ``*`` matches any run of characters (``/`` included for URLs and table names), ``?``
one character. A file prefix matches itself and everything under it; ``..`` never matches.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["KINDS", "Permission", "PermissionSet"]

KINDS = ("http:read", "http:write", "db:read", "db:write", "file:read", "file:write")


@dataclass(frozen=True, order=True)
class Permission:
    kind: str  # one of KINDS
    pattern: str

    @classmethod
    def parse(cls, text: str) -> Permission:
        """``"http:read:https://api.example.com/*"`` → Permission; ``ValueError`` naming the problem."""
        text = str(text).strip()
        parts = text.split(":", 2)
        if len(parts) != 3 or not parts[2]:
            raise ValueError(f"permission {text!r} is not <kind>:<access>:<pattern> (kinds: {', '.join(KINDS)})")
        kind = f"{parts[0]}:{parts[1]}"
        if kind not in KINDS:
            raise ValueError(f"permission {text!r}: unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
        pattern = parts[2]
        if kind.startswith("db:") and "/" not in pattern:
            raise ValueError(f"permission {text!r}: a db pattern is <connection>/<table glob>")
        if kind.startswith("file:") and ".." in pattern.split("/"):
            raise ValueError(f"permission {text!r}: '..' is not allowed in a file prefix")
        return cls(kind, pattern)

    def __str__(self) -> str:
        return f"{self.kind}:{self.pattern}"

    def matches(self, resource: str) -> bool:
        if self.kind.startswith("file:"):
            return _under_prefix(resource, self.pattern)
        return _glob(self.pattern).fullmatch(resource) is not None


def _glob(pattern: str) -> re.Pattern[str]:
    # fnmatch semantics, but '*' spans '/' too (URLs, schema.table) and matching is case-sensitive
    return re.compile(fnmatch.translate(pattern))


def _under_prefix(path: str, prefix: str) -> bool:
    if ".." in path.replace("\\", "/").split("/"):
        return False
    if path.startswith("s3://") != prefix.startswith("s3://"):
        return False
    directory = prefix.endswith("/")  # "out/" is a directory; "out/report-" a name prefix
    norm = path if path.startswith("s3://") else posixpath.normpath(path).lstrip("/")
    pre = prefix if prefix.startswith("s3://") else posixpath.normpath(prefix).lstrip("/")
    pre = pre.rstrip("/")
    if pre in ("", "."):
        return True
    if directory:
        return norm == pre or norm.startswith(pre + "/")
    return norm.startswith(pre)


class PermissionSet:
    """An immutable set of permissions; ``allows(kind, resource)`` answers a host call."""

    def __init__(self, permissions: Iterable[Permission | str] = ()) -> None:
        items = [p if isinstance(p, Permission) else Permission.parse(p) for p in permissions]
        self._items = tuple(sorted(set(items)))

    @classmethod
    def parse(cls, items: Iterable[str] | None) -> PermissionSet:
        """All problems at once: ``ValueError`` listing every bad entry."""
        problems, good = [], []
        for item in items or ():
            try:
                good.append(Permission.parse(item))
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))
        return cls(good)

    def allows(self, kind: str, resource: str) -> bool:
        if kind not in KINDS:
            raise ValueError(f"unknown permission kind {kind!r}")
        return any(p.kind == kind and p.matches(resource) for p in self._items)

    def to_list(self) -> list[str]:
        return [str(p) for p in self._items]

    def added(self, more: Iterable[Permission | str]) -> PermissionSet:
        return PermissionSet([*self._items, *more])

    def removed(self, gone: Iterable[Permission | str]) -> PermissionSet:
        drop = {p if isinstance(p, Permission) else Permission.parse(p) for p in gone}
        return PermissionSet([p for p in self._items if p not in drop])

    def __iter__(self) -> Iterator[Permission]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PermissionSet) and self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"PermissionSet({self.to_list()!r})"
