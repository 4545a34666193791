"""The ``sql`` sink's fast paths: a batch written with the driver's own bulk calls.

SQLAlchemy stays in charge of everything but the writing itself: it creates and reflects the
table, owns the connection pool and the transaction (:meth:`Engine.begin`), and its column
types say how each value is converted. Which path a batch takes is decided once per table
(:func:`fast_writer`):

* **SQLite** (the standard library's ``sqlite3``): ``executemany`` of one prepared
  ``INSERT`` with tuples — ``INSERT … ON CONFLICT (key) DO UPDATE`` (``DO NOTHING`` when every
  column is key) in upsert mode;
* **PostgreSQL with psycopg 3**: ``COPY … FROM STDIN`` straight into the table in insert mode;
  in upsert mode ``COPY`` into a temporary staging table (created once per connection,
  ``LIKE`` the target, ``ON COMMIT DELETE ROWS``) and one
  ``INSERT INTO target … SELECT … FROM staging ON CONFLICT (key) DO UPDATE``;
* anything else — another database or driver (MySQL, psycopg2, …), or an upsert into a table
  without a primary key or unique constraint on the key — gets no fast writer and the sink
  writes through SQLAlchemy Core, as before. So does a PostgreSQL upsert whose role may not
  create temporary tables (:class:`NoStagingTable`, noticed on the first batch).

A value goes to the driver as SQLAlchemy would have sent it: the sink's conversion of its
column, then the column type's own bind processor; per column, the value types that both
leave unchanged are decided once and passed through without a call. On PostgreSQL, where
SQLAlchemy sends text-column and integer-column values with a server-side cast, the same
result is produced on the client (``true``, ``1e+15``; a float rounded half to even into an
integer column) because ``COPY`` does not cast.

A driver error leaves :meth:`FastWriter.write` in the shape SQLAlchemy gives it — a
:class:`sqlalchemy.exc.DBAPIError` subclass whose ``orig`` is the driver's exception, with a
lost connection invalidated — so the engine tells an outage from a refused record exactly
as it does for the SQLAlchemy path.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from active_data_flow.errors import RecordValidationError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.sql.schema import Table

__all__ = ["ColumnPlan", "FastWriter", "NoStagingTable", "batch_rows", "fast_writer", "pg_float_text", "plan_column"]

#: Every value type passes through unchanged.
_ANY: frozenset[type] | None = None
_TEXT_PLAIN = frozenset({str, int, float, bool})
_OTHER_PLAIN = frozenset({str, int, float, bool})


class NoStagingTable(Exception):
    """The database refused the temporary staging table (no TEMPORARY privilege): nothing was
    written, and the batch must go through SQLAlchemy."""


@dataclass(frozen=True)
class ColumnPlan:
    """How one column's values go to the driver: a non-null value whose type is not in ``plain``
    (``None``: every type is) becomes ``convert(value)``; then every value, nulls included,
    goes through ``processor`` when there is one (the column type's, as SQLAlchemy does)."""

    name: str
    convert: Callable[[Any], Any]
    plain: frozenset[type] | None
    processor: Callable[[Any], Any] | None = None


def pg_float_text(value: float) -> str:
    """``value`` as PostgreSQL's ``float8`` output writes it (shortest exact digits; exponent
    form below 1e-4 and from 1e15; ``Infinity``, ``NaN``, ``-0``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    sign, digits, exponent = decimal.Decimal(_shortest(value)).as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits)).rstrip("0") or "0"
    lead = "-" if sign else ""
    if text == "0":
        return lead + "0"
    point = len(digits) + exponent  # digits before the decimal point
    sci = point - 1
    if sci < -4 or sci >= 15:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{lead}{mantissa}e{'-' if sci < 0 else '+'}{abs(sci):02d}"
    if point <= 0:
        return f"{lead}0.{'0' * -point}{text}"
    if point >= len(text):
        return lead + text + "0" * (point - len(text))
    return f"{lead}{text[:point]}.{text[point:]}"


def _shortest(value: float) -> str:
    """The shortest decimal that reads back as ``value`` and lies strictly between it and the
    midpoints to its neighbours (PostgreSQL's Ryu output; Python's ``repr`` may end on a midpoint)."""
    text = repr(value)
    exact = decimal.Decimal(value)
    with decimal.localcontext(prec=1200):  # exact: a double has at most 767 significant digits
        midpoints = {(exact + decimal.Decimal(math.nextafter(value, side))) / 2 for side in (-math.inf, math.inf)}
    if decimal.Decimal(text) not in midpoints:
        return text
    digits = len(decimal.Decimal(text).as_tuple().digits)
    for precision in range(digits, 18):
        text = f"{value:.{precision}e}"  # the closest decimal of precision + 1 digits
        if float(text) == value and decimal.Decimal(text) not in midpoints:
            return text
    return repr(value)


def _pg_text(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def to_text(value: Any) -> Any:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return pg_float_text(value)
        return convert(value)

    return to_text


def _pg_integer(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def to_integer(value: Any) -> Any:
        if isinstance(value, float) and not math.isnan(value) and not math.isinf(value):
            return round(value)  # PostgreSQL's float8 -> bigint cast rounds half to even
        if isinstance(value, decimal.Decimal) and value.is_finite():
            return int(value.quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP))
        return convert(value)

    return to_integer


def plan_column(
    name: str, kind: str, convert: Callable[[Any], Any], processor: Callable[[Any], Any] | None,
    dialect: str, integer: bool,
) -> ColumnPlan:
    """The :class:`ColumnPlan` of a column: the sink's conversion ``convert`` of its ``kind``
    (``json``, ``text``, ``datetime``, ``date``, ``time``, ``decimal`` or ``other``), then the
    column type's bind ``processor`` (None: none), on the backend ``dialect``; ``integer``: the
    column holds whole numbers."""
    if processor is not None:
        plan = plan_column(name, kind, convert, None, dialect, integer)
        return ColumnPlan(name, plan.convert, plan.plain, processor)
    if kind == "json":
        return ColumnPlan(name, convert, _ANY)
    if kind == "text":
        if dialect == "postgresql":
            return ColumnPlan(name, _pg_text(convert), frozenset({str, int}))
        return ColumnPlan(name, convert, _TEXT_PLAIN)
    if kind == "datetime":
        return ColumnPlan(name, convert, frozenset({datetime.datetime}))
    if kind == "date":
        return ColumnPlan(name, convert, frozenset({datetime.date}))
    if kind == "time":
        return ColumnPlan(name, convert, frozenset({datetime.time}))
    if kind == "decimal":
        return ColumnPlan(name, convert, frozenset({int, decimal.Decimal}))
    if dialect == "postgresql" and integer:
        return ColumnPlan(name, _pg_integer(convert), frozenset({int, str}))
    return ColumnPlan(name, convert, _OTHER_PLAIN)


def _converted(values: tuple[Any, ...], plan: ColumnPlan) -> tuple[Any, ...] | list[Any]:
    plain = plan.plain
    out: tuple[Any, ...] | list[Any] = values
    if plain is not None:
        odd = set(map(type, values)) - plain
        odd.discard(type(None))
        if odd:
            convert = plan.convert
            out = [v if v is None or type(v) in plain else convert(v) for v in values]
    if plan.processor is not None:
        out = list(map(plan.processor, out))
    return out


def batch_rows(
    records: Sequence[Mapping[str, Any]], plans: Sequence[ColumnPlan], key: Sequence[str], upsert: bool,
    key_text: Callable[[Any], str],
) -> list[tuple[Any, ...]]:
    """The rows of ``records`` as tuples in the order of ``plans``, every value converted.

    A field missing from a record is NULL. With ``upsert`` a null ``key`` value raises
    :class:`RecordValidationError`, and a batch holding a key twice keeps the later record
    (keys compared as they are when hashable, else as ``key_text`` of each value).
    """
    names = [p.name for p in plans]
    get = itemgetter(*names)
    try:
        rows: list[Any] = [(get(r),) for r in records] if len(names) == 1 else list(map(get, records))
    except KeyError:
        rows = [tuple(r.get(n) for n in names) for r in records]
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    changed = False
    for i, plan in enumerate(plans):
        values = _converted(columns[i], plan)
        if values is not columns[i]:
            columns[i] = tuple(values)
            changed = True
    if changed:
        rows = list(zip(*columns, strict=True))
    if not upsert:
        return rows
    where = [names.index(k) for k in key]
    for k, i in zip(key, where, strict=True):
        if None in columns[i]:
            raise RecordValidationError(k, "the upsert key is missing or null")
    return _last_per_key(rows, [columns[i] for i in where], key_text)


def _last_per_key(
    rows: list[tuple[Any, ...]], key_columns: list[tuple[Any, ...]], key_text: Callable[[Any], str]
) -> list[tuple[Any, ...]]:
    # ON CONFLICT cannot update one row twice in a statement: the later record wins, as it
    # would have if the records had been written one by one.
    idents: Any = key_columns[0] if len(key_columns) == 1 else zip(*key_columns, strict=True)
    try:
        last = dict(zip(idents, rows, strict=True))
    except TypeError:  # an unhashable key value (a dict or a list): compare JSON text
        texts = [tuple(key_text(v) for v in ident) for ident in zip(*key_columns, strict=True)]
        last = dict(zip(texts, rows, strict=True))
    return rows if len(last) == len(rows) else list(last.values())


@contextmanager
def _driver_errors(conn: Connection, statement: str) -> Iterator[None]:
    """Raise a driver error as SQLAlchemy does: wrapped in its ``DBAPIError`` subclass, with the
    connection invalidated when the error means it is gone."""
    dialect = conn.dialect
    base = dialect.loaded_dbapi.Error
    try:
        yield
    except base as exc:
        from sqlalchemy import exc as sa_exc

        invalidated = bool(dialect.is_disconnect(exc, conn.connection.dbapi_connection, None))
        if invalidated:
            conn.invalidate(exc)
        raise sa_exc.DBAPIError.instance(
            statement, None, exc, base, connection_invalidated=invalidated, dialect=dialect
        ) from exc


class FastWriter:
    """Writes converted rows of one table, one transaction per :meth:`write`."""

    def __init__(self, dialect: str, target: str, quote: Callable[[str], str], key: Sequence[str], upsert: bool,
                 shape: str) -> None:
        self.dialect = dialect
        self.target = target
        self.quote = quote
        self.key = list(key)
        self.upsert = upsert
        #: the staging table's name follows the target's name and columns: a changed table gets a new one
        self.stage = "adf_stage_" + hashlib.sha1(f"{target}\0{shape}".encode()).hexdigest()[:16]

    def _conflict(self, names: Sequence[str], excluded: str) -> str:
        keys = ", ".join(self.quote(k) for k in self.key)
        updates = [f"{self.quote(n)} = {excluded}.{self.quote(n)}" for n in names if n not in self.key]
        if not updates:
            return f" ON CONFLICT ({keys}) DO NOTHING"
        return f" ON CONFLICT ({keys}) DO UPDATE SET {', '.join(updates)}"

    def write(self, engine: Engine, names: Sequence[str], rows: list[tuple[Any, ...]], ddl: Sequence[str] = ()) -> None:
        """Write ``rows`` (values in the order of ``names``) in one transaction, committed on return;
        the statements ``ddl`` (columns added to the table) run first in the same transaction."""
        created: set[str] | None = None
        with engine.begin() as conn:
            driver: Any = conn.connection.driver_connection
            for statement in ddl:
                with _driver_errors(conn, statement):
                    driver.execute(statement)
            columns = ", ".join(self.quote(n) for n in names)
            if self.dialect == "sqlite":
                marks = ", ".join("?" * len(names))
                sql = f"INSERT INTO {self.target} ({columns}) VALUES ({marks})"
                if self.upsert:
                    sql += self._conflict(names, "excluded")
                with _driver_errors(conn, sql):
                    driver.executemany(sql, rows)
            elif not self.upsert:
                self._copy(conn, driver, f"COPY {self.target} ({columns}) FROM STDIN", rows)
            else:
                created = self._staging(conn, driver)
                self._copy(conn, driver, f"COPY {self.stage} ({columns}) FROM STDIN", rows)
                sql = (f"INSERT INTO {self.target} ({columns}) SELECT {columns} FROM {self.stage}"
                       + self._conflict(names, "EXCLUDED"))
                with _driver_errors(conn, sql):
                    driver.execute(sql)
        if created is not None:
            created.add(self.stage)  # committed: the connection keeps it (a rollback would have dropped it)

    @staticmethod
    def _copy(conn: Connection, driver: Any, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with _driver_errors(conn, sql), driver.cursor() as cur, cur.copy(sql) as copy:
            write = copy.write_row
            for row in rows:
                write(row)

    def _staging(self, conn: Connection, driver: Any) -> set[str] | None:
        """Create the connection's temporary staging table of the target unless it has it (its
        rows go at every commit); the set to note it in once committed, or None."""
        made: set[str] = conn.info.setdefault("adf_staging", set())  # cleared when the connection is lost
        if self.stage in made:
            return None
        sql = (f"CREATE TEMPORARY TABLE IF NOT EXISTS {self.stage} (LIKE {self.target} INCLUDING DEFAULTS) "
               "ON COMMIT DELETE ROWS")
        try:
            with _driver_errors(conn, sql):
                driver.execute(sql)
        except Exception as exc:
            if getattr(getattr(exc, "orig", None), "sqlstate", None) == "42501":  # insufficient privilege
                raise NoStagingTable(str(exc)) from exc
            raise
        return made


def fast_writer(table: Table, dialect: Any, key: Sequence[str], mode: str, on_conflict: bool) -> FastWriter | None:
    """The fast writer of ``table`` on ``dialect`` (see the module docstring), or None when
    the batch must go through SQLAlchemy."""
    upsert = mode == "upsert"
    if upsert and not on_conflict:
        return None
    if (dialect.name, dialect.driver) not in (("sqlite", "pysqlite"), ("postgresql", "psycopg")):
        return None
    preparer = dialect.identifier_preparer
    shape = ",".join(f"{c.name} {c.type!r}" for c in table.columns)
    return FastWriter(dialect.name, preparer.format_table(table), preparer.quote, key, upsert, shape)
