"""The module registry's SQL side: the metadata of a module version, the tables, the engine.

:class:`ModuleRecord` is one registered ``id@version``; :func:`parse_ref` and
:func:`version_key` read references and order versions. :func:`build_tables` declares the
tables (see :mod:`active_data_flow.wasm.registry`) through SQLAlchemy Core, :func:`make_engine` opens the
database (SQLite writers queue up rather than fail), and the small converters turn log entries
into column values. SQLAlchemy is imported when first needed.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass
from typing import Any

from active_data_flow.errors import MissingExtraError
from active_data_flow.ids import utc_now_iso
from active_data_flow.redact import redact_text
from active_data_flow.service_db import service_engine
from active_data_flow.wasm.permissions import PermissionSet

__all__ = [
    "MODULE_ID_MAX",
    "MODULE_ID_RE",
    "VERSION_MAX",
    "VERSION_RE",
    "ModuleRecord",
    "Tables",
    "as_float",
    "as_int",
    "build_tables",
    "iso_time",
    "json_text",
    "log_text",
    "make_engine",
    "module_filter",
    "parse_ref",
    "sqlalchemy_module",
    "version_key",
]

_WHAT = "the wasm module registry"

#: ``id``: lower-case letters, digits, ``_ . -``; starts with a letter or digit
MODULE_ID_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*")
MODULE_ID_MAX = 128
#: ``MAJOR.MINOR.PATCH`` with an optional ``-pre.release``
VERSION_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?")
VERSION_MAX = 64


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ModuleRecord:
    """One registered ``id@version``."""

    id: str
    version: str
    sha256: str
    size: int
    permissions: PermissionSet
    author: str | None
    signed: bool
    description: str
    created_at: str
    storage_key: str

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "ref": self.ref,
            "sha256": self.sha256,
            "size": self.size,
            "permissions": self.permissions.to_list(),
            "author": self.author,
            "signed": self.signed,
            "description": self.description,
            "created_at": self.created_at,
            "storage_key": self.storage_key,
        }


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``"id@1.2.0"`` → ``("id", "1.2.0")``; ``"id"`` and ``"id@latest"`` → ``("id", None)``."""
    text = str(ref).strip()
    module_id, _, version = text.partition("@")
    if not module_id:
        raise ValueError(f"invalid module reference {ref!r}: expected <id>@<version>, <id>@latest or <id>")
    if version in ("", "latest"):
        return module_id, None
    return module_id, version


def version_key(version: str) -> tuple[Any, ...]:
    """Semantic-version order: ``1.10.0 > 1.9.0``; a pre-release sorts before its release
    (``2.0.0-rc.1 < 2.0.0``), numeric pre-release parts numerically and before alphanumeric ones."""
    m = VERSION_RE.fullmatch(version)
    if m is None:
        return (-1, -1, -1, 0, ((1, 0, version),))
    major, minor, patch = int(m.group(1)), int(m.group(2)), int(m.group(3))
    pre = m.group(4)
    if pre is None:
        return (major, minor, patch, 1, ())
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (major, minor, patch, 0, parts)


def iso_time(value: Any) -> str:
    """A timestamp as UTC ISO text with milliseconds and ``Z`` (so text order is time order)."""
    if value is None or value == "":
        return utc_now_iso()
    when: _dt.datetime | None = None
    if isinstance(value, _dt.datetime):
        when = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        when = _dt.datetime.fromtimestamp(float(value), _dt.UTC)
    elif isinstance(value, str):
        try:
            when = _dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    if when is None:
        return str(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return when.astimezone(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def as_int(value: Any) -> int:
    """An integer column value (0 for what is not a number)."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def as_float(value: Any) -> float:
    """A float column value (0.0 for what is not a number)."""
    try:
        return float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0


def log_text(value: Any) -> str | None:
    """A text column value, JSON for what is not text, secrets redacted."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = json.dumps(value, default=str)
    return redact_text(value)


def json_text(value: Any) -> str:
    """A JSON column value (keys sorted)."""
    return json.dumps(value, default=str, sort_keys=True)


# --------------------------------------------------------------------------- SQLAlchemy


def sqlalchemy_module() -> Any:
    """``sqlalchemy``, or ``MissingExtraError`` naming the ``wasm`` extra."""
    try:
        import sqlalchemy
    except ImportError as exc:
        raise MissingExtraError("SQLAlchemy", "wasm", _WHAT) from exc
    return sqlalchemy



# --------------------------------------------------------------------------- database


def make_engine(url: str) -> Any:
    """A SQLAlchemy engine for the registry database at ``url``."""
    from active_data_flow.connectors.sql import begin_immediate

    engine = service_engine(url, what=_WHAT, extra="wasm")
    if engine.dialect.name == "sqlite":
        begin_immediate(sqlalchemy_module(), engine)  # writers queue up instead of failing with "database is locked"
    return engine


@dataclass
class Tables:
    """The SQLAlchemy ``Table`` objects of one registry (and their ``MetaData``)."""

    modules: Any
    keys: Any
    executions: Any
    alerts: Any
    audit: Any
    metadata: Any


def build_tables(prefix: str) -> Tables:
    """The registry's tables, each name prefixed with ``prefix``."""
    sa = sqlalchemy_module()
    md = sa.MetaData()
    serial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

    def table(name: str, *cols: Any) -> Any:
        return sa.Table(prefix + name, md, *cols)

    modules = table(
        "wasm_modules",
        sa.Column("module_id", sa.String(MODULE_ID_MAX), primary_key=True),
        sa.Column("version", sa.String(VERSION_MAX), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("permissions", sa.Text(), nullable=False),  # JSON list
        sa.Column("author", sa.String(200)),
        sa.Column("signature", sa.Text()),  # base64 Ed25519 signature over the bytes
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("updated_at", sa.String(40), nullable=False),
        sa.Column("storage_key", sa.Text(), nullable=False),
    )
    keys = table(
        "wasm_author_keys",
        sa.Column("author", sa.String(200), primary_key=True),
        sa.Column("fingerprint", sa.String(64), primary_key=True),  # SHA-256 of the raw key
        sa.Column("public_key", sa.Text(), nullable=False),  # base64 of the raw 32 bytes
        sa.Column("added_at", sa.String(40), nullable=False),
    )
    executions = table(
        "wasm_executions",
        sa.Column("id", serial, primary_key=True, autoincrement=True),
        sa.Column("execution_id", sa.String(100), nullable=False, index=True),
        sa.Column("module_id", sa.String(300), nullable=False, index=True),
        sa.Column("function", sa.String(200), nullable=False),
        sa.Column("started_at", sa.String(40), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("fuel_consumed", sa.BigInteger(), nullable=False),
        sa.Column("peak_memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("error_type", sa.String(200)),
        sa.Column("limit_kind", sa.String(20)),
        sa.Column("trace", sa.Text()),
        sa.Column("extra", sa.Text()),  # JSON object of any other keys of the entry
    )
    alerts = table(
        "wasm_security_alerts",
        sa.Column("id", serial, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("module_id", sa.String(300), index=True),
        sa.Column("version", sa.String(VERSION_MAX)),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text()),  # JSON object
    )
    audit = table(
        "wasm_audit",
        sa.Column("id", serial, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.String(40), nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("module_id", sa.String(300), index=True),
        sa.Column("execution_id", sa.String(100)),
        sa.Column("permission", sa.Text()),
        sa.Column("resource", sa.Text()),
        sa.Column("function", sa.String(200)),
        sa.Column("extra", sa.Text()),  # JSON object
    )
    return Tables(modules, keys, executions, alerts, audit, md)


def module_filter(column: Any, module_id: str) -> Any:
    """``id`` matches the rows of every version (``id`` and ``id@…``); ``id@version`` just that one."""
    sa = sqlalchemy_module()
    if "@" in module_id:
        return column == module_id
    return sa.or_(column == module_id, column.startswith(module_id + "@", autoescape=True))
