"""The schedule's tables are declared once (handlers/schedule/tables.py): the head of the
Alembic migrations, the SQLAlchemy tables made from the declaration, and the tables the
store on a bare SQLite connection creates are the same tables — columns, types, defaults,
keys, constraints, indexes — on SQLite and on PostgreSQL."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flowlib.scheduling import pg_database

from active_data_flow.handlers.schedule.sql import sqlalchemy_tables, upgrade
from active_data_flow.handlers.schedule.sqlite_exec import ExecScheduleStore, Sqlite3Exec
from active_data_flow.handlers.schedule.tables import TABLES


def _text(sql: Any) -> str:
    """SQL text with its spacing and outer parentheses normalised."""
    text = re.sub(r"\s+", " ", str(sql)).strip()
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    return text


def _index_where(index: dict[str, Any]) -> str | None:
    options = index.get("dialect_options") or {}
    where = options.get("postgresql_where") or options.get("sqlite_where")
    return None if where is None else _text(where)


def _schema(url: str) -> dict[str, Any]:
    """Every table of the declaration as the database describes it."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        inspector = sa.inspect(engine)
        out: dict[str, Any] = {}
        for table in TABLES:
            name = table.name
            out[name] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], None if c.get("default") is None else _text(c["default"]))
                    for c in inspector.get_columns(name)
                ],
                "primary key": inspector.get_pk_constraint(name)["constrained_columns"],
                "foreign keys": sorted(
                    (fk["name"], tuple(fk["constrained_columns"]), fk["referred_table"], tuple(fk["referred_columns"]),
                     (fk.get("options") or {}).get("ondelete"))
                    for fk in inspector.get_foreign_keys(name)
                ),
                "unique": sorted((u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(name)),
                "checks": sorted((c["name"], _text(c["sqltext"])) for c in inspector.get_check_constraints(name)),
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]), _index_where(i))
                    for i in inspector.get_indexes(name)
                ),
            }
        return out
    finally:
        engine.dispose()


def _sqlite_objects(path: Path) -> dict[str, Any]:
    """What the SQLite file says beyond reflection: which tables take their ids from
    ``sqlite_sequence`` (AUTOINCREMENT), and each index's statement."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
    finally:
        conn.close()
    names = {t.name for t in TABLES}
    return {
        "autoincrement": sorted(n for kind, n, sql in rows if kind == "table" and n in names and "AUTOINCREMENT" in sql),
        "indexes": sorted(_text(sql).replace(" IF NOT EXISTS", "") for kind, _, sql in rows if kind == "index"),
    }


def _create_all(url: str) -> None:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        sqlalchemy_tables().metadata.create_all(engine)
    finally:
        engine.dispose()


@pytest.fixture
def two_pg_databases() -> Iterator[tuple[str, str]]:
    with pg_database("adf_schema") as migrated, pg_database("adf_schema") as declared:
        yield migrated, declared


def test_the_declared_tables_are_the_head_of_the_migrations_on_sqlite(tmp_path: Path) -> None:
    migrated, declared, created = tmp_path / "migrated.db", tmp_path / "declared.db", tmp_path / "created.db"
    upgrade(f"sqlite:///{migrated}")
    _create_all(f"sqlite:///{declared}")
    ExecScheduleStore(Sqlite3Exec(str(created))).close()

    head = _schema(f"sqlite:///{migrated}")
    assert set(head) == {"data_flows", "data_flow_runs", "heartbeat_requests"}
    assert _schema(f"sqlite:///{declared}") == head
    assert _schema(f"sqlite:///{created}") == head
    objects = _sqlite_objects(migrated)
    assert objects["autoincrement"] == ["data_flow_runs", "data_flows"]
    assert _sqlite_objects(declared) == objects
    assert _sqlite_objects(created) == objects


@pytest.mark.postgres
def test_the_declared_tables_are_the_head_of_the_migrations_on_postgresql(two_pg_databases: tuple[str, str]) -> None:
    migrated, declared = two_pg_databases
    upgrade(migrated)
    _create_all(declared)
    head = _schema(migrated)
    assert head["data_flows"]["columns"][4][:2] == ("configuration", "JSONB")
    assert _schema(declared) == head
