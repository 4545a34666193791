"""SQL databases through SQLAlchemy: the ``sql`` sink and the ``sql`` source.

SQLAlchemy (extra ``sql``) and a driver — psycopg for PostgreSQL (extra ``postgres``), the
standard library's sqlite3 for SQLite — are imported when a connector first connects, never
at import time; without them :class:`~core.errors.MissingExtraError` names the extra.

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
"""

from __future__ import annotations

import base64
import datetime
import decimal
import math
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.attributes import Attribute, at_least_one, checked_init, column_names
from core.codec import codec
from core.errors import ConfigError, MissingExtraError, RecordValidationError
from core.logs import get_logger
from core.record import Record
from core.redact import redact_text
from core.sink import Sink
from core.source import (
    Origins,
    ReaderBatch,
    ReaderStatus,
    Source,
    SourceReader,
    SourceReaderContext,
    Split,
    SplitEnumerator,
    SplitEnumeratorContext,
    SplitReader,
    StaticSplitEnumerator,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.sql.schema import Table

__all__ = ["SqlRangeSplit", "SqlSink", "SqlSource"]

_log = get_logger("connectors.sql")

#: A numeric cursor range is never cut into more splits than this (sparse ids, tiny split_size).
_MAX_SPLITS = 10_000
#: SQLite waits this long for a lock held by another process before failing.
_SQLITE_BUSY_TIMEOUT = 30
#: libpq settings of every PostgreSQL connection unless the URL sets them: give up a connect
#: after 10 s, notice a dead peer within about a minute (TCP keepalives).
_PG_CONNECT_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
}


# --------------------------------------------------------------------------- shared helpers


def _import_sqlalchemy(what: str) -> Any:
    try:
        import sqlalchemy
    except ImportError as exc:
        raise MissingExtraError("SQLAlchemy", "sql", what) from exc
    return sqlalchemy


def _json_text(value: Any) -> str:
    return codec().dumps(value).decode("utf-8")


def normalise_url(url: str) -> str:
    """``postgres://`` and driver-less ``postgresql://`` mean psycopg 3 (the ``postgres`` extra)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    return url


def _backend(url: str) -> str:
    return url.partition("://")[0].partition("+")[0].lower()


def _create_engine(url: str, what: str) -> Engine:
    """A SQLAlchemy engine for ``url``; missing packages and bad URLs get clear errors."""
    sa = _import_sqlalchemy(what)
    url = normalise_url(url)
    backend = _backend(url)
    kwargs: dict[str, Any] = {"json_serializer": _json_text}
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(what, [f"'url': {redact_text(str(exc))}"]) from None
    if backend == "postgresql":
        # A server that takes the connection but never answers, or a connection that goes
        # silent, must end an attempt in seconds — not libpq's minutes — so the retry window
        # means what it says. The URL's own values win.
        given = set(parsed.query)
        kwargs["connect_args"] = {k: v for k, v in _PG_CONNECT_DEFAULTS.items() if k not in given}
    if backend == "sqlite":
        # Several reader processes write one file: wait for the lock instead of failing.
        kwargs["connect_args"] = {"timeout": _SQLITE_BUSY_TIMEOUT}
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            parent = os.path.dirname(os.path.abspath(database))
            os.makedirs(parent, exist_ok=True)
    try:
        engine: Engine = sa.create_engine(parsed, **kwargs)
    except ImportError as exc:
        package = exc.name or str(exc)
        extra = "postgres" if backend == "postgresql" else "sql"
        raise MissingExtraError(package, extra, f"{what} ({backend})") from exc
    except sa.exc.ArgumentError as exc:
        raise ConfigError(what, [f"'url': {redact_text(str(exc))}"]) from None
    if backend == "sqlite":
        begin_immediate(sa, engine)
    return engine


def begin_immediate(sa: Any, engine: Engine) -> None:
    """Make every SQLite transaction take the write lock when it begins.

    With SQLite's default deferred transactions, two processes that both read and then
    write can each hold a read lock and wait for the other: SQLite answers "database is
    locked" at once instead of waiting. ``BEGIN IMMEDIATE`` waits (busy timeout) instead.
    """

    def _no_implicit_begin(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None

    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    sa.event.listen(engine, "connect", _no_implicit_begin)
    sa.event.listen(engine, "begin", _begin)






def _as_names(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | decimal.Decimal) and not isinstance(value, bool)


# Cursor values travel in splits, checkpoints and the state store, so they must be JSON:
# types JSON lacks are tagged and turned back into the same Python type before binding
# (so a PostgreSQL timestamp is compared with a timestamp, not with a string).
_CURSOR_TAGS: dict[str, Callable[[str], Any]] = {
    "$datetime": datetime.datetime.fromisoformat,
    "$date": datetime.date.fromisoformat,
    "$time": datetime.time.fromisoformat,
    "$decimal": decimal.Decimal,
    "$uuid": uuid.UUID,
}


def _encode_cursor(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, datetime.date):
        return {"$date": value.isoformat()}
    if isinstance(value, datetime.time):
        return {"$time": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    return str(value)


def _decode_cursor(value: Any) -> Any:
    if isinstance(value, Mapping) and len(value) == 1:
        (tag, text), *_ = value.items()
        parse = _CURSOR_TAGS.get(tag)
        if parse is not None:
            return parse(text)
    return value


def _friendly(value: Any) -> Any:
    """A database value as JSON-friendly Python (the convention of :mod:`core.record`)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)  # exact digits, like a schema's "decimal" field
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): _friendly(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_friendly(v) for v in value]
    return str(value)


# --------------------------------------------------------------------------- sink


def _infer_type(sa: Any, values: Iterable[Any], dialect: str, is_key: bool) -> Any:
    kinds = set()
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool):
            kinds.add("bool")
        elif isinstance(value, int):
            kinds.add("int")
        elif isinstance(value, float):
            kinds.add("float")
        elif isinstance(value, dict | list):
            kinds.add("json")
        else:
            kinds.add("text")
    if kinds == {"bool"}:
        return sa.Boolean()
    if kinds == {"int"}:
        return sa.BigInteger()
    if kinds and kinds <= {"int", "float"}:
        return sa.Double()
    if kinds == {"json"} and not is_key:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return JSONB(none_as_null=True)
        return sa.Text()
    if is_key and dialect not in ("postgresql", "sqlite"):
        return sa.String(255)  # MySQL and others cannot index an unbounded TEXT key
    return sa.Text()


def _schema_types(spec: Any) -> dict[str, str]:
    """``{field: schema type}`` of the flow's ``schema`` (empty without one)."""
    if spec is None:
        return {}
    from core.record import Schema

    return {f.name: f.type for f in Schema.from_spec(spec).fields}


def _declared_type(sa: Any, type_name: str, dialect: str, is_key: bool) -> Any:
    """The column type for a field the flow's schema declares as ``type_name``."""
    if type_name == "integer":
        return sa.BigInteger()
    if type_name == "number":
        return sa.Double()
    if type_name == "decimal":
        return sa.Numeric()
    if type_name == "boolean":
        return sa.Boolean()
    if type_name == "date":
        return sa.Date()
    if type_name == "datetime":
        return sa.DateTime(timezone=True)
    if type_name == "json" and not is_key:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return JSONB(none_as_null=True)
        return sa.Text()
    if is_key and dialect not in ("postgresql", "sqlite"):
        return sa.String(255)
    return sa.Text()


def _text_value(value: Any) -> Any:
    if isinstance(value, dict | list):
        return _json_text(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    return value


def _other_value(value: Any) -> Any:
    if isinstance(value, dict | list):
        return _json_text(value)
    return value


def _temporal_value(parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, str):
            try:
                return parse(value)
            except ValueError:
                return value  # the database reports the bad value
        return value

    return convert


def _keep(value: Any) -> Any:
    return value


def _utc_naive(text: str) -> datetime.datetime:
    value = datetime.datetime.fromisoformat(text)
    if value.tzinfo is not None:
        value = value.astimezone(datetime.UTC).replace(tzinfo=None)
    return value


def _decimal_value(value: Any) -> Any:
    """Exact digits stay exact: a decimal string becomes a ``Decimal`` (not a float) for NUMERIC."""
    if isinstance(value, str):
        try:
            return decimal.Decimal(value.strip())
        except decimal.InvalidOperation:
            return value  # the database reports the bad value
    if isinstance(value, float):
        return decimal.Decimal(repr(value))
    return value


class SqlSink(Sink):
    """Writes records as rows of a table; see the module docstring for the configuration.

    Contract:

    * :meth:`open` creates the SQLAlchemy engine (one per process), :meth:`close` disposes it;
      :meth:`write_batch` opens it itself when called without :meth:`open`;
    * each :meth:`write_batch` is one transaction, so after it returns the rows are committed
      (:meth:`flush` has nothing left to do);
    * the columns written are ``columns`` when configured (other fields are ignored), else
      every field of the batch; a field the table lacks raises
      :class:`~core.errors.RecordValidationError` naming it before anything is written;
      a column missing from a record is written as NULL; dict/list values are JSON text
      in text columns;
    * in upsert mode a key value must not be null, a batch holding a key twice keeps the
      last record, and ``idempotent`` is true.
    """

    type_name = "sql"
    attributes = (
        Attribute(
            "url", str, required=True, secret=True, help="SQLAlchemy database URL, e.g. sqlite:///out.db"
        ),
        Attribute("table", str, required=True, help="the table to write"),
        Attribute(
            "mode", str, default="insert", choices=("insert", "upsert"), help="insert, or upsert by key"
        ),
        Attribute("key", (str, list), check=column_names, help="key column(s); required for upsert"),
        Attribute("batch_size", int, default=1000, check=at_least_one, help="rows per INSERT statement"),
        Attribute(
            "create_table", bool, default=True, help="create the table on the first batch when missing"
        ),
        Attribute("schema", str, help="database schema of the table"),
        Attribute("columns", list, check=column_names, help="write only these columns"),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        checked_init(self, config, kwargs, self._cross_check)
        self.mode: str = self.config["mode"]
        self.key: list[str] = _as_names(self.config["key"])
        self.columns: list[str] | None = _as_names(self.config["columns"]) or None
        self.idempotent = self.mode == "upsert"
        self._engine: Engine | None = None
        self._table: Table | None = None
        self._converters: dict[str, Callable[[Any], Any]] = {}
        self._on_conflict = False

    @staticmethod
    def _cross_check(values: Mapping[str, Any]) -> list[str]:
        problems: list[str] = []
        key = values.get("key")
        if values.get("mode") == "upsert" and not key:
            problems.append("'key': mode 'upsert' needs the key column(s) that identify a row")
        columns = values.get("columns")
        if isinstance(columns, list) and isinstance(key, str | list):
            missing = [k for k in _as_names(key) if k not in columns]
            if missing:
                problems.append(
                    f"'key': key column(s) {', '.join(map(repr, missing))} must be among 'columns'"
                )
        return problems

    # -- life cycle

    @property
    def _where(self) -> str:
        return f"sink 'sql' (table {self.config['table']!r})"

    def setup(self) -> None:
        """Check once, in the coordinator, that the table exists or may be created."""
        if self.config["create_table"]:
            return
        engine = _create_engine(self.config["url"], self._where)
        try:
            sa = _import_sqlalchemy(self._where)
            if not sa.inspect(engine).has_table(self.config["table"], schema=self.config["schema"]):
                raise ConfigError(
                    self._where,
                    [f"'table': {self._qualified_name()} does not exist and 'create_table' is false"],
                )
        finally:
            engine.dispose()

    def open(self) -> None:
        if self._engine is None:
            self._engine = _create_engine(self.config["url"], self._where)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        self._engine = None
        self._table = None

    def describe(self) -> str:
        return f"{redact_text(self.config['url'])} table {self._qualified_name()}"

    def _qualified_name(self) -> str:
        schema = self.config["schema"]
        return f"{schema}.{self.config['table']}" if schema else str(self.config["table"])

    # -- writing

    def write_batch(self, records: Sequence[Record]) -> None:
        if not records:
            return
        self.open()
        assert self._engine is not None
        sa = _import_sqlalchemy(self._where)
        table = self._table if self._table is not None else self._load_table(records)
        names = self._column_names(records, table)
        rows = self._rows(records, names)
        if self.mode == "upsert":
            rows = self._last_per_key(rows)
        size = int(self.config["batch_size"])
        try:
            with self._engine.begin() as conn:
                if self.mode == "upsert":
                    self._upsert(sa, conn, table, names, rows, size)
                else:
                    for start in range(0, len(rows), size):
                        conn.execute(table.insert(), rows[start : start + size])
        except sa.exc.DBAPIError:
            self._table = None  # the table may have changed: look at it again on the retry
            raise

    def _load_table(self, records: Sequence[Record]) -> Table:
        assert self._engine is not None
        sa = _import_sqlalchemy(self._where)
        name, schema = self.config["table"], self.config["schema"]
        try:
            table: Table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=self._engine)
        except sa.exc.NoSuchTableError:
            if not self.config["create_table"]:
                raise ConfigError(
                    self._where,
                    [f"'table': {self._qualified_name()} does not exist and 'create_table' is false"],
                ) from None
            self._create_table(sa, records)
            table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=self._engine)
        self._prepare_table(sa, table)
        self._table = table
        return table

    def _create_table(self, sa: Any, records: Sequence[Record]) -> None:
        assert self._engine is not None
        dialect = self._engine.dialect.name
        names = list(self.columns or dict.fromkeys(k for r in records for k in r))
        declared = _schema_types(self.run_context.extras.get("schema"))
        if not self.columns:  # declared fields no record of this batch has yet are columns too
            names.extend(n for n in declared if n not in names)
        for k in self.key:
            if k not in names:
                names.insert(0, k)
        columns = [
            sa.Column(
                n,
                _declared_type(sa, declared[n], dialect, n in self.key) if n in declared
                else _infer_type(sa, (r.get(n) for r in records), dialect, n in self.key),
                primary_key=n in self.key,
                nullable=n not in self.key,
            )
            for n in names
        ]
        table = sa.Table(self.config["table"], sa.MetaData(), *columns, schema=self.config["schema"])
        from sqlalchemy.schema import CreateTable

        try:
            with self._engine.begin() as conn:
                conn.execute(CreateTable(table, if_not_exists=True))
        except sa.exc.DBAPIError:
            # Another reader process created it at the same moment (PostgreSQL can report
            # that as a unique violation in its catalog even with IF NOT EXISTS).
            if not sa.inspect(self._engine).has_table(self.config["table"], schema=self.config["schema"]):
                raise
        _log.info("created table %s with columns %s", self._qualified_name(), ", ".join(names))

    def _prepare_table(self, sa: Any, table: Table) -> None:
        """Choose per-column value conversions and how upserts are done."""
        converters: dict[str, Callable[[Any], Any]] = {}
        for column in table.columns:
            ctype = column.type
            if isinstance(ctype, sa.JSON):
                # Python None must be SQL NULL, not the JSON literal null.
                ctype.none_as_null = True
                converters[column.name] = _keep
            elif isinstance(ctype, sa.String):
                converters[column.name] = _text_value
            elif isinstance(ctype, sa.DateTime):
                parse = datetime.datetime.fromisoformat
                if self._engine is not None and self._engine.dialect.name == "sqlite":
                    parse = _utc_naive  # SQLite's DATETIME keeps no offset: store UTC
                converters[column.name] = _temporal_value(parse)
            elif isinstance(ctype, sa.Numeric) and not isinstance(ctype, sa.Float):
                converters[column.name] = _decimal_value
            elif isinstance(ctype, sa.Date):
                converters[column.name] = _temporal_value(datetime.date.fromisoformat)
            elif isinstance(ctype, sa.Time):
                converters[column.name] = _temporal_value(datetime.time.fromisoformat)
            else:
                converters[column.name] = _other_value
        self._converters = converters
        missing = [k for k in (self.columns or []) + self.key if k not in converters]
        if missing:
            raise ConfigError(
                self._where,
                [
                    f"column {m!r} is not in table {self._qualified_name()} (its columns: {', '.join(converters)})"
                    for m in dict.fromkeys(missing)
                ],
            )
        assert self._engine is not None
        self._on_conflict = False
        if self.mode == "upsert":
            unique = self._has_unique_key(sa, table)
            self._on_conflict = unique and self._engine.dialect.name in ("postgresql", "sqlite")
            if not unique:
                _log.warning(
                    "table %s has no primary key or unique constraint on %s: upsert deletes then inserts",
                    self._qualified_name(),
                    ", ".join(self.key),
                )

    def _has_unique_key(self, sa: Any, table: Table) -> bool:
        wanted = set(self.key)
        if {c.name for c in table.primary_key.columns} == wanted:
            return True
        for constraint in table.constraints:
            if isinstance(constraint, sa.UniqueConstraint) and {c.name for c in constraint.columns} == wanted:
                return True
        return any(index.unique and {c.name for c in index.columns} == wanted for index in table.indexes)

    def _column_names(self, records: Sequence[Record], table: Table) -> list[str]:
        if self.columns is not None:
            return list(self.columns)
        names = list(dict.fromkeys(k for r in records for k in r))
        for name in names:
            if name not in self._converters:
                raise RecordValidationError(
                    name,
                    f"table {self._qualified_name()} has no such column (its columns: "
                    f"{', '.join(self._converters)}); add the column or drop the field in a step",
                )
        return names

    def _rows(self, records: Sequence[Record], names: list[str]) -> list[dict[str, Any]]:
        convert = [(n, self._converters[n]) for n in names]
        rows = []
        for record in records:
            rows.append({n: None if (v := record.get(n)) is None else conv(v) for n, conv in convert})
        if self.mode == "upsert":
            for row in rows:
                for k in self.key:
                    if row.get(k) is None:
                        raise RecordValidationError(k, "the upsert key is missing or null")
        return rows

    def _last_per_key(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # ON CONFLICT cannot update one row twice in a statement: the later record wins,
        # as it would have if the records had been written one by one.
        by_key: dict[Any, dict[str, Any]] = {}
        for row in rows:
            ident = tuple(_json_text(row[k]) for k in self.key)
            by_key.pop(ident, None)
            by_key[ident] = row
        return list(by_key.values())

    def _upsert(
        self, sa: Any, conn: Connection, table: Table, names: list[str], rows: list[dict[str, Any]], size: int
    ) -> None:
        if self._on_conflict:
            from sqlalchemy.dialects import postgresql, sqlite

            dialect_insert: Any = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            ins = dialect_insert(table)
            updates = {n: ins.excluded[n] for n in names if n not in self.key}
            stmt = (
                ins.on_conflict_do_update(index_elements=self.key, set_=updates)
                if updates
                else ins.on_conflict_do_nothing(index_elements=self.key)
            )
            for start in range(0, len(rows), size):
                conn.execute(stmt, rows[start : start + size])
            return
        binds = {k: f"adf_key_{i}" for i, k in enumerate(self.key)}
        delete = table.delete().where(sa.and_(*[table.c[k] == sa.bindparam(b) for k, b in binds.items()]))
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            conn.execute(delete, [{b: row[k] for k, b in binds.items()} for row in chunk])
            conn.execute(table.insert(), chunk)


# --------------------------------------------------------------------------- source


@dataclass(init=False)
class SqlRangeSplit(Split):
    """The rows with ``lo < cursor <= hi`` (a ``None`` bound is open), in cursor order.

    ``position`` is the last cursor value read (reading resumes with ``cursor > position``).
    Bounds and position are JSON: datetimes, dates, decimals and UUIDs are tagged
    (``{"$datetime": "2024-01-31T12:00:00"}``). A split of a source without a cursor column
    has no bounds and its position is the number of rows already read.
    """

    lo: Any = None
    hi: Any = None

    def __init__(self, split_id: str, lo: Any = None, hi: Any = None, position: Any = None) -> None:
        self.split_id = split_id
        self.lo = lo
        self.hi = hi
        self.position = position


def _ranges(lo: Any, hi: Any, width: int) -> list[tuple[Any, Any]]:
    """Cut ``[lo, hi]`` into ``(start, end]`` ranges of ``width`` cursor values (first start None)."""
    if isinstance(lo, int) and isinstance(hi, int):
        count = (hi - lo) // width + 1
        if count > _MAX_SPLITS:
            width = -(-(hi - lo + 1) // _MAX_SPLITS)
            count = (hi - lo) // width + 1
        ends: list[Any] = [lo + (i + 1) * width - 1 for i in range(count)]
    else:
        if isinstance(lo, decimal.Decimal) != isinstance(hi, decimal.Decimal):
            lo, hi = float(lo), float(hi)
        span = hi - lo
        count = max(1, math.ceil(span / width))
        step: Any = width
        if count > _MAX_SPLITS:
            count = _MAX_SPLITS
            step = span / _MAX_SPLITS
        ends = [lo + (i + 1) * step for i in range(count)]
    ends[-1] = hi
    starts: list[Any] = [None, *ends[:-1]]
    return list(zip(starts, ends, strict=True))


class _SqlEnumerator(StaticSplitEnumerator):
    """Plans the splits once; remembers the run's upper cursor bound (in its snapshot too)."""

    def __init__(
        self, context: SplitEnumeratorContext, checkpoint: Mapping[str, Any] | None, source: SqlSource
    ) -> None:
        super().__init__(context, checkpoint)
        self._source = source
        self.upper: Any = checkpoint.get("upper") if checkpoint is not None else None

    def discover_splits(self) -> list[Split]:
        splits, self.upper = self._source.plan_splits()
        return list(splits)

    split_class = SqlRangeSplit

    def snapshot_state(self) -> dict[str, Any]:
        state = super().snapshot_state()
        state["upper"] = self.upper
        return state


class _CursorValues(Sequence[Any]):
    """The cursor values of a batch's rows, made JSON-friendly only when a dead letter asks."""

    def __init__(self, rows: Sequence[Any], column: str) -> None:
        self._rows, self._column = rows, column

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: Any) -> Any:
        return _friendly(self._rows[index][self._column])


class _SqlReader(SplitReader):
    def __init__(self, context: SourceReaderContext, source: SqlSource) -> None:
        super().__init__(context)
        self._source = source
        self._engine: Engine | None = None
        self._conn: Connection | None = None
        self._result: Any = None

    def _db(self) -> Engine:
        if self._engine is None:
            self._engine = _create_engine(self._source.config["url"], self._source.where)
        return self._engine

    def open_split(self, split: Split) -> None:
        if self._source.cursor is not None:
            return
        # Without a cursor column the split is one streamed query; a resumed split skips
        # the rows already read (best effort: without ORDER BY the order is the database's).
        self._conn = self._db().connect()
        stmt = self._source.select_statement()
        self._result = self._conn.execution_options(stream_results=True).execute(stmt).mappings()
        skip = int(split.position or 0)
        while skip > 0:
            got = len(self._result.fetchmany(min(skip, 10_000)))
            if not got:
                break
            skip -= got

    def close_split(self, split: Split) -> None:
        if self._result is not None:
            self._result.close()
            self._result = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def read_split(self, split: Split, max_records: int) -> tuple[ReaderBatch, bool]:
        assert isinstance(split, SqlRangeSplit)
        source = self._source
        if source.cursor is None:
            first = int(split.position or 0)
            rows = list(self._result.fetchmany(max_records))
            split.position = first + len(rows)
            records = [source.to_record(row) for row in rows]
            origins = Origins()  # the row's position in the query's result
            origins.add(len(records), {"split": split.split_id}, "row", first)
            return ReaderBatch(records, ReaderStatus.MORE_AVAILABLE, origins=origins), len(rows) < max_records
        cursor = source.cursor
        with self._db().connect() as conn:
            lower = split.position if split.position is not None else split.lo
            rows = list(conn.execute(source.range_statement(lower, split.hi, max_records)).mappings())
            done = len(rows) < max_records
            if not done:
                # The cursor may repeat (updated_at): take every row of the last value now,
                # because the next read starts strictly after it.
                last = rows[-1][cursor]
                ties = list(conn.execute(source.equal_statement(last)).mappings())
                rows = [r for r in rows if r[cursor] != last] + ties
        if rows:
            split.position = _encode_cursor(rows[-1][cursor])
        records = [source.to_record(row) for row in rows]
        origins = Origins()  # each row's cursor value
        origins.add(len(records), {"split": split.split_id}, cursor, _CursorValues(rows, cursor))
        return ReaderBatch(records, ReaderStatus.MORE_AVAILABLE, origins=origins), done

    def close(self) -> None:
        super().close()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class SqlSource(Source):
    """Reads a table or a query; see the module docstring for the configuration.

    Contract:

    * with ``cursor_column`` rows whose cursor is NULL are never read; reads are bounded by
      the cursor's MAX when the run planned its splits, so rows added later wait for the
      next run (and in incremental mode are read by it);
    * values are JSON-friendly: Decimal → exact digit string, datetime/date/time → ISO
      string, bytes → base64, timedelta → seconds; JSON columns stay dicts/lists;
    * ``incremental`` needs ``cursor_column``; :meth:`on_run_success` saves the run's upper
      bound under ``sql_cursor/<flow_name>`` in ``run_context.store`` (or the embedded
      default store when the run has none). A row committed late with a cursor below the
      saved bound (a long transaction) is not read by later runs.
    """

    type_name = "sql"
    attributes = (
        Attribute(
            "url", str, required=True, secret=True, help="SQLAlchemy database URL, e.g. sqlite:///in.db"
        ),
        Attribute("table", str, help="the table to read (or give 'query')"),
        Attribute("query", str, help="a SELECT to read (or give 'table')"),
        Attribute("schema", str, help="database schema of the table"),
        Attribute(
            "cursor_column",
            str,
            help="an increasing column (id, updated_at) for splits and incremental reads",
        ),
        Attribute("split_size", int, default=10000, check=at_least_one, help="cursor values per split"),
        Attribute(
            "incremental", bool, default=False, help="read only rows newer than the last successful run"
        ),
        Attribute("columns", list, check=column_names, help="read only these columns"),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        checked_init(self, config, kwargs, self._cross_check)
        self.cursor: str | None = self.config["cursor_column"]
        self.columns: list[str] | None = _as_names(self.config["columns"]) or None
        self._enumerator: _SqlEnumerator | None = None

    @staticmethod
    def _cross_check(values: Mapping[str, Any]) -> list[str]:
        problems: list[str] = []
        has_table, has_query = bool(values.get("table")), bool(values.get("query"))
        if has_table and has_query:
            problems.append("give either 'table' or 'query', not both")
        elif not has_table and not has_query:
            problems.append("'table' or 'query' is required (the rows to read)")
        if has_query and values.get("schema"):
            problems.append("'schema' applies to 'table' only; qualify the names inside 'query'")
        if values.get("incremental") in (True, "true", "yes", "1") and not values.get("cursor_column"):
            problems.append("'incremental' needs 'cursor_column' (the column whose last value is remembered)")
        return problems

    @property
    def where(self) -> str:
        return f"source 'sql' ({self.config['table'] or 'query'})"

    # -- SQL building (SQLAlchemy Core; identifiers are quoted by the dialect)

    def _source_clause(self, sa: Any) -> Any:
        if self.config["table"]:
            return sa.table(self.config["table"], schema=self.config["schema"])
        query = str(self.config["query"]).strip().rstrip(";").strip()
        return sa.text(f"({query}) AS adf_src")

    def select_statement(self) -> Any:
        """``SELECT columns FROM table-or-query`` (the cursor column added when needed)."""
        sa = _import_sqlalchemy(self.where)
        if self.columns is None:
            items: list[Any] = [sa.literal_column("*")]
        else:
            names = list(self.columns)
            if self.cursor is not None and self.cursor not in names:
                names.append(self.cursor)
            items = [sa.column(n) for n in names]
        return sa.select(*items).select_from(self._source_clause(sa))

    def range_statement(self, lower: Any, upper: Any, limit: int) -> Any:
        """Rows with ``lower < cursor <= upper`` (encoded bounds, None = open), cursor order, ``limit``."""
        sa = _import_sqlalchemy(self.where)
        col = sa.column(str(self.cursor))
        stmt = self.select_statement().where(col.is_not(None))
        if lower is not None:
            stmt = stmt.where(col > sa.bindparam("adf_lo", _decode_cursor(lower)))
        if upper is not None:
            stmt = stmt.where(col <= sa.bindparam("adf_hi", _decode_cursor(upper)))
        return stmt.order_by(col).limit(limit)

    def equal_statement(self, value: Any) -> Any:
        sa = _import_sqlalchemy(self.where)
        col = sa.column(str(self.cursor))
        return self.select_statement().where(col == sa.bindparam("adf_eq", value))

    def to_record(self, row: Mapping[str, Any]) -> Record:
        record = {str(k): _friendly(v) for k, v in row.items()}
        if self.columns is not None and self.cursor is not None and self.cursor not in self.columns:
            record.pop(self.cursor, None)
        return record

    # -- planning

    def _state_key(self) -> str:
        return f"sql_cursor/{self.run_context.flow_name}"

    def _with_store(self, use: Callable[[Any], Any]) -> Any:
        store = self.run_context.store
        if store is not None:
            return use(store)
        from core.state import open_state_store

        with open_state_store(None) as own:
            return use(own)

    def saved_cursor(self) -> Any:
        """The upper bound saved by the last successful incremental run (encoded), or None."""
        if not self.config["incremental"]:
            return None
        return self._with_store(lambda store: store.get(self._state_key()))

    def plan_splits(self) -> tuple[list[SqlRangeSplit], Any]:
        """The splits of this run and its upper cursor bound (encoded; None when nothing to read)."""
        if self.cursor is None:
            return [SqlRangeSplit("sql-0")], None
        saved = self.saved_cursor()
        sa = _import_sqlalchemy(self.where)
        col = sa.column(self.cursor)
        stmt = sa.select(sa.func.min(col), sa.func.max(col)).select_from(self._source_clause(sa))
        if saved is not None:
            stmt = stmt.where(col > sa.bindparam("adf_saved", _decode_cursor(saved)))
        engine = _create_engine(self.config["url"], self.where)
        try:
            with engine.connect() as conn:
                low, high = conn.execute(stmt).one()
        finally:
            engine.dispose()
        if high is None:
            return [], None
        if _is_number(low) and _is_number(high):
            bounds = _ranges(low, high, int(self.config["split_size"]))
        else:
            bounds = [(None, high)]
        splits = [
            SqlRangeSplit(
                f"sql-{i}",
                lo=_encode_cursor(start) if start is not None else saved,
                hi=_encode_cursor(end),
            )
            for i, (start, end) in enumerate(bounds)
        ]
        return splits, _encode_cursor(high)

    # -- Source factory methods

    def create_enumerator(
        self, context: SplitEnumeratorContext, checkpoint: Mapping[str, Any] | None = None
    ) -> SplitEnumerator:
        self._enumerator = _SqlEnumerator(context, checkpoint, self)
        return self._enumerator

    def create_reader(self, context: SourceReaderContext) -> SourceReader:
        return _SqlReader(context, self)

    split_class = SqlRangeSplit

    def on_run_success(self) -> None:
        """Save the run's upper cursor bound (incremental mode; a run that read nothing keeps the old one)."""
        if not self.config["incremental"] or self._enumerator is None or self._enumerator.upper is None:
            return
        upper = self._enumerator.upper
        self._with_store(lambda store: store.set(self._state_key(), upper))

    def describe(self) -> str:
        what = f"table {self.config['table']}" if self.config["table"] else "query"
        return f"{redact_text(self.config['url'])} {what}"
