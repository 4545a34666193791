"""Alembic environment of the schedule tables (run by :func:`active_data_flow.handlers.schedule.sql.upgrade`).

The caller passes an open SQLAlchemy connection, already inside a transaction, as
``config.attributes["connection"]``: the whole upgrade is one transaction (SQLite: one
``BEGIN IMMEDIATE`` write transaction; PostgreSQL: transactional DDL under an advisory
lock), so processes that open the store at the same time upgrade it once. Without a
connection (the ``alembic`` command line), ``sqlalchemy.url`` of the config is used.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine


def _run(connection: Any) -> None:
    context.configure(connection=connection, target_metadata=None, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: pass a connection in config.attributes or set sqlalchemy.url")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    url = context.config.get_main_option("sqlalchemy.url")
    context.configure(url=url, literal_binds=True, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
