"""The schedule tables, declared once: columns, types, defaults, constraints and indexes.

Everything that names a table of the schedule is made from :data:`TABLES`: the ``CREATE
TABLE IF NOT EXISTS`` statements of the store on a bare SQLite connection
(:func:`sqlite_schema`), the SQLAlchemy ``Table`` objects of the store on SQLAlchemy
(:func:`active_data_flow.handlers.schedule.sql.sqlalchemy_tables`) and the column lists of the store's
statements (:mod:`active_data_flow.handlers.schedule.policy`). The Alembic migrations in
``handlers/schedule/migrations`` are the history deployed databases ran; a test checks that
their head gives exactly these tables, on SQLite and on PostgreSQL.

``data_flows``
    ``name`` unique, ``description``, ``enabled``, ``configuration`` (the flow spec: JSONB on
    PostgreSQL, JSON text on SQLite), ``run_interval`` seconds (``CHECK > 0``),
    ``last_run_at``, ``last_run_status``, ``next_run_at``, ``created_at``, ``updated_at``,
    ``schedule_cron`` and ``schedule_timezone`` (a cron flow: exactly one of ``run_interval``
    and ``schedule_cron`` is set, ``CHECK``).
``data_flow_runs``
    ``flow_id`` (``ON DELETE CASCADE``), ``status`` (``CHECK`` in :data:`RUN_STATUSES`),
    ``trigger``, ``attempt``, ``created_at``, ``started_at``, ``ended_at``,
    ``error_message``, ``error_backtrace``, record counts, ``worker_id``,
    ``lease_expires_at``, ``engine_run_id``, ``not_before`` (a retry's backoff).
``heartbeat_requests``
    ``ts``, ``client``, ``outcome``, ``status_code``, ``flows_due``, ``flows_triggered``, ``detail``.

Ids of flows and runs are never reused: PostgreSQL takes them from sequences, SQLite from
``AUTOINCREMENT`` (``sqlite_sequence``). Every timestamp is timezone-aware UTC:
``timestamptz`` on PostgreSQL, a fixed-format UTC text timestamp on SQLite.

Standard library only (this runs inside a Spin component).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from active_data_flow.handlers.schedule.store import ACTIVE_RUN_STATUSES, RUN_STATUSES

__all__ = [
    "FLOWS",
    "HEARTBEATS",
    "KINDS",
    "RUNS",
    "TABLES",
    "TIME_COLUMNS",
    "Check",
    "Column",
    "ForeignKey",
    "Index",
    "Table",
    "Unique",
    "in_list",
    "quote",
    "sqlite_create_indexes",
    "sqlite_create_table",
    "sqlite_schema",
]

#: Column kinds, and what each is on SQLite (PostgreSQL and SQLAlchemy:
#: :func:`active_data_flow.handlers.schedule.sql.sqlalchemy_tables`). ``key``: an integer primary key
#: (``SERIAL`` on PostgreSQL); ``bigkey``: a 64-bit one (``BIGSERIAL``; SQLite's rowid is
#: 64-bit already and needs the type ``INTEGER`` to be it).
KINDS: Mapping[str, str] = {
    "key": "INTEGER",
    "bigkey": "INTEGER",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "string": "VARCHAR",
    "text": "TEXT",
    "boolean": "BOOLEAN",
    "json": "JSON",
    "timestamp": "DATETIME",
}

#: Column names SQL reserves: always quoted.
_RESERVED = frozenset({"trigger"})


def quote(name: str) -> str:
    """``name`` as it appears in a statement (a reserved word in double quotes)."""
    return f'"{name}"' if name in _RESERVED else name


def in_list(values: tuple[str, ...]) -> str:
    """``('a', 'b')`` as the SQL list ``'a', 'b'``."""
    return ", ".join(f"'{v}'" for v in values)


@dataclass(frozen=True)
class Column:
    """One column. ``default`` is a server default: text is a quoted literal (the database
    casts it to the column's type), a bool the boolean literal."""

    name: str
    kind: str
    nullable: bool = True
    length: int | None = None
    default: str | bool | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown column kind {self.kind!r}")


@dataclass(frozen=True)
class Unique:
    name: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Check:
    name: str
    sql: str


@dataclass(frozen=True)
class ForeignKey:
    name: str
    column: str
    table: str
    target: str = "id"
    ondelete: str = "CASCADE"


@dataclass(frozen=True)
class Index:
    """A (non-unique) index; ``where`` makes it partial."""

    name: str
    columns: tuple[str, ...]
    where: str | None = None


@dataclass(frozen=True)
class Table:
    """A table whose primary key is its first column. ``autoincrement``: SQLite takes its
    ids from ``sqlite_sequence``, so an id is never handed out twice."""

    name: str
    columns: tuple[Column, ...]
    autoincrement: bool = False
    uniques: tuple[Unique, ...] = ()
    checks: tuple[Check, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    indexes: tuple[Index, ...] = ()

    @property
    def key(self) -> Column:
        return self.columns[0]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _ts(name: str, nullable: bool = True) -> Column:
    return Column(name, "timestamp", nullable)


FLOWS = Table(
    "data_flows",
    (
        Column("id", "key", False),
        Column("name", "string", False, 200),
        Column("description", "text", False, default=""),
        Column("enabled", "boolean", False, default=True),
        Column("configuration", "json", False),
        Column("run_interval", "integer"),
        _ts("last_run_at"),
        Column("last_run_status", "string", length=20),
        _ts("next_run_at"),
        _ts("created_at", False),
        _ts("updated_at", False),
        Column("schedule_cron", "string", length=200),
        Column("schedule_timezone", "string", length=64),
    ),
    autoincrement=True,
    uniques=(Unique("uq_data_flows_name", ("name",)),),
    checks=(
        Check("ck_data_flows_run_interval_positive", "run_interval > 0"),
        Check("ck_data_flows_one_schedule", "(run_interval IS NULL) <> (schedule_cron IS NULL)"),
    ),
    indexes=(Index("ix_data_flows_due", ("enabled", "next_run_at")),),
)

RUNS = Table(
    "data_flow_runs",
    (
        Column("id", "bigkey", False),
        Column("flow_id", "integer", False),
        Column("status", "string", False, 20),
        Column("trigger", "string", False, 40),
        Column("attempt", "integer", False, default="1"),
        _ts("created_at", False),
        _ts("started_at"),
        _ts("ended_at"),
        Column("error_message", "text"),
        Column("error_backtrace", "text"),
        Column("records_in", "bigint"),
        Column("records_out", "bigint"),
        Column("dead_letters", "bigint"),
        Column("worker_id", "string", length=200),
        _ts("lease_expires_at"),
        Column("engine_run_id", "string", length=200),
        _ts("not_before"),
    ),
    autoincrement=True,
    checks=(
        Check("ck_data_flow_runs_status", f"status IN ({in_list(RUN_STATUSES)})"),
        Check("ck_data_flow_runs_attempt", "attempt >= 1"),
    ),
    foreign_keys=(ForeignKey("fk_data_flow_runs_flow", "flow_id", "data_flows"),),
    indexes=(
        Index("ix_data_flow_runs_status_created", ("status", "created_at")),
        Index("ix_data_flow_runs_flow_created", ("flow_id", "created_at")),
        Index("ix_data_flow_runs_status_lease", ("status", "lease_expires_at")),
        # The heartbeat's "is a run of this flow still going?" check reads only active runs.
        Index("ix_data_flow_runs_active_flow", ("flow_id",), where=f"status IN ({in_list(ACTIVE_RUN_STATUSES)})"),
    ),
)

#: The heartbeat log; a log, its ids are not kept from reuse.
HEARTBEATS = Table(
    "heartbeat_requests",
    (
        Column("id", "bigkey", False),
        _ts("ts", False),
        Column("client", "string", length=200),
        Column("outcome", "string", False, 40),
        Column("status_code", "integer", False),
        Column("flows_due", "integer", False, default="0"),
        Column("flows_triggered", "integer", False, default="0"),
        Column("detail", "text"),
    ),
    indexes=(Index("ix_heartbeat_requests_ts", ("ts",)),),
)

#: Every table, each after those it references.
TABLES = (FLOWS, RUNS, HEARTBEATS)

#: The timestamp columns of every table.
TIME_COLUMNS = frozenset(c.name for t in TABLES for c in t.columns if c.kind == "timestamp")


# --------------------------------------------------------------------------- SQLite statements


def _sqlite_column(table: Table, column: Column) -> str:
    parts = [quote(column.name), KINDS[column.kind] + (f"({column.length})" if column.length else "")]
    if isinstance(column.default, bool):
        parts.append(f"DEFAULT {int(column.default)}")
    elif column.default is not None:
        parts.append("DEFAULT '{}'".format(column.default.replace("'", "''")))
    if not column.nullable:
        parts.append("NOT NULL")
    if column is table.key:
        parts.append("PRIMARY KEY AUTOINCREMENT" if table.autoincrement else "PRIMARY KEY")
    return " ".join(parts)


def sqlite_create_table(table: Table, *, name: str | None = None, renamed: Mapping[str, str] | None = None) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of ``table`` on SQLite, as ``name`` (default its own),
    its foreign keys referring to the tables ``renamed`` maps their names to."""
    renamed = renamed or {}
    parts = [_sqlite_column(table, c) for c in table.columns]
    parts += [f"CONSTRAINT {u.name} UNIQUE ({', '.join(map(quote, u.columns))})" for u in table.uniques]
    parts += [f"CONSTRAINT {c.name} CHECK ({c.sql})" for c in table.checks]
    parts += [
        f"CONSTRAINT {fk.name} FOREIGN KEY({quote(fk.column)}) REFERENCES {renamed.get(fk.table, fk.table)} "
        f"({quote(fk.target)}) ON DELETE {fk.ondelete}"
        for fk in table.foreign_keys
    ]
    return f"CREATE TABLE IF NOT EXISTS {name or table.name} (\n\t" + ",\n\t".join(parts) + "\n)"


def sqlite_create_indexes(table: Table) -> tuple[str, ...]:
    """``CREATE INDEX IF NOT EXISTS`` of each index of ``table`` on SQLite."""
    return tuple(
        f"CREATE INDEX IF NOT EXISTS {ix.name} ON {table.name} ({', '.join(map(quote, ix.columns))})"
        + (f" WHERE {ix.where}" if ix.where else "")
        for ix in table.indexes
    )


def sqlite_schema() -> tuple[str, ...]:
    """Every statement that makes the schedule's tables and indexes on SQLite (each one a
    no-op where the table or index exists)."""
    return tuple(s for t in TABLES for s in (sqlite_create_table(t), *sqlite_create_indexes(t)))
