"""SQL databases through SQLAlchemy: the ``sql`` sink and the ``sql`` source.

SQLAlchemy (extra ``sql``) and a driver — psycopg for PostgreSQL (extra ``postgres``), the
standard library's sqlite3 for SQLite — are imported when a connector first connects, never
at import time; without them :class:`~active_data_flow.errors.MissingExtraError` names the extra.

URLs are SQLAlchemy URLs: ``sqlite:///out.db`` (relative to the working directory; the
parent directory is created), ``sqlite:////abs/out.db``,
``postgresql+psycopg://user:pass@host:5432/db``. ``postgres://`` and ``postgresql://``
without a driver mean psycopg 3. URLs are secrets: they never appear in messages unredacted.

``sql`` sink
    ``{type: sql, url: …, table: orders, mode: upsert, key: id}``. Each
    :meth:`SqlSink.write_batch` is one transaction. With ``create_table`` (default) a
    missing table is created on the first batch (``CREATE TABLE IF NOT EXISTS``, so
    concurrent reader processes are safe). A field the flow's ``schema`` declares gets the
    column type of its schema type: integer → BIGINT, number → DOUBLE PRECISION, decimal →
    NUMERIC, boolean → BOOLEAN, date → DATE, datetime → TIMESTAMP WITH TIME ZONE on
    PostgreSQL (DATETIME on SQLite, stored in UTC), string → TEXT, json → JSONB on
    PostgreSQL and JSON text elsewhere. Other fields get a type inferred from that batch:
    int → BIGINT, float → DOUBLE PRECISION, bool → BOOLEAN, dict/list → JSONB on PostgreSQL
    and JSON text elsewhere, anything else TEXT. ``key`` becomes the primary key.
    ``mode: upsert`` is ``INSERT … ON CONFLICT (key) DO UPDATE`` on PostgreSQL and SQLite
    (delete-then-insert in the same transaction on other databases, or when the table has
    no unique constraint on the key), and makes the sink idempotent.
    The rows go to the database with the driver's bulk call where there is one: ``executemany``
    of one prepared statement with SQLite's ``sqlite3``; ``COPY`` with psycopg 3 (an upsert
    copies into a temporary staging table, then runs one ``INSERT … SELECT … ON CONFLICT``);
    other drivers, and upserts without a unique key, use SQLAlchemy Core statements (see
    :mod:`active_data_flow.connectors.sql.fast`).
    ``schema_evolution: add_columns`` (default): a field the table lacks becomes a nullable
    column, typed like a created table's (a field null in the whole batch → TEXT), added with
    ``ALTER TABLE … ADD COLUMN`` in the batch's own transaction (a batch that fails adds
    nothing; a column another reader has just added is found on a second look) and listed in
    the run summary's ``schema_changes``; ``freeze`` dead-letters such records instead. A
    value its column's type cannot hold (text that is not a number in a number column, an
    object or list in a number or boolean column) is dead-lettered naming the column, its
    type and the value's type.

``sql`` source
    ``{type: sql, url: …, table: orders | query: "SELECT …", cursor_column: id}``. With a
    numeric cursor the rows between MIN and MAX of the cursor are cut into ranges of
    ``split_size`` cursor values (:class:`SqlRangeSplit`); a split is read in cursor order
    with ``LIMIT`` and its position is the last cursor value read. With ``incremental:
    true`` the run's upper cursor bound is saved in the flow's state store under
    ``sql_cursor/<flow_name>`` when the run succeeds, and the next run reads only rows
    above it.

Example::

    sink = SqlSink(url="sqlite:///out.db", table="orders", mode="upsert", key="id")
    sink.open()
    sink.write_batch([{"id": 1, "total": 9.5, "tags": ["new"]}])
    sink.close()
    rows = list(SqlSource(url="sqlite:///out.db", table="orders", cursor_column="id").each())

The modules: ``engine`` (importing SQLAlchemy, URLs, engine creation: what the sink and the
source share), ``sink`` (:class:`SqlSink`: column types, value conversions, insert and
upsert), ``fast`` (the sink's driver-level write paths) and ``source`` (:class:`SqlRangeSplit`, :class:`SqlSource`, its enumerator and
reader, cursor values). The names in ``__all__``, and :func:`normalise_url` and
:func:`begin_immediate`, are importable from ``active_data_flow.connectors.sql`` itself; each module is
imported when one of its names is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from active_data_flow.connectors.sql.engine import begin_immediate as begin_immediate
    from active_data_flow.connectors.sql.engine import normalise_url as normalise_url
    from active_data_flow.connectors.sql.sink import SqlSink
    from active_data_flow.connectors.sql.source import SqlRangeSplit, SqlSource

__all__ = ["SqlRangeSplit", "SqlSink", "SqlSource"]


def __getattr__(name: str) -> Any:
    # A name's module is imported when the name is first asked for. A Spin component's build
    # imports every package it walks, this one included, and leaves the SQL modules out (they
    # need SQLAlchemy): there, asking for a name fails as a module that is not part of the build.
    if name == "SqlSink":
        from active_data_flow.connectors.sql import sink

        return sink.SqlSink
    if name in ("SqlRangeSplit", "SqlSource"):
        from active_data_flow.connectors.sql import source

        return getattr(source, name)
    if name in ("begin_immediate", "normalise_url"):
        from active_data_flow.connectors.sql import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
