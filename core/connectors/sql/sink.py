"""The ``sql`` sink: records as rows of a table, inserted or upserted by key.

A missing table is created with column types from the flow's schema and the first batch; each
column gets its value conversion when the table is first loaded; each
:meth:`SqlSink.write_batch` is one transaction.

Which path writes a batch is decided when the table is loaded:

* SQLite through the standard library's ``sqlite3``, in insert mode or upserting into a table
  with a primary key or unique constraint on the key: the driver's ``executemany``
  (``INSERT … ON CONFLICT (key) DO UPDATE`` to upsert);
* PostgreSQL through psycopg 3, same conditions: ``COPY`` into the table (insert), or ``COPY``
  into a temporary staging table and one ``INSERT … SELECT … ON CONFLICT (key) DO UPDATE``
  (upsert) — see :mod:`active_data_flow.connectors.sql.fast`;
* everything else (other databases or drivers such as MySQL or psycopg2, an upsert into a
  table without a unique key — delete then insert): SQLAlchemy Core statements.

SQLAlchemy creates and reflects the table and owns the connections and transactions on
every path; the rows, the errors and the retries are the same whichever path is taken.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from active_data_flow.attributes import Attribute, at_least_one, checked_init, column_names
from active_data_flow.connectors.sql.engine import (
    as_names,
    create_engine,
    import_sqlalchemy,
    json_text,
    preload,
)
from active_data_flow.connectors.sql.fast import (
    ColumnPlan,
    FastWriter,
    NoStagingTable,
    batch_rows,
    fast_writer,
    plan_column,
)
from active_data_flow.errors import ConfigError, RecordValidationError
from active_data_flow.logs import get_logger
from active_data_flow.record import Record
from active_data_flow.redact import redact_text
from active_data_flow.sink import Sink

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.sql.schema import Table

_log = get_logger("connectors.sql")


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
    from active_data_flow.record import Schema

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
        return json_text(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    return value


def _other_value(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json_text(value)
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


#: value types number columns, and boolean columns, take as they are
_NUMBER_PLAIN: frozenset[type] = frozenset({int, float, bool, type(None)})
_BOOLEAN_PLAIN: frozenset[type] = frozenset({int, bool, type(None)})


def _fits_integer(value: Any) -> bool:
    if isinstance(value, int | float | decimal.Decimal):
        return True
    if isinstance(value, str):
        try:
            int(value.strip())
        except ValueError:
            return False
        return True
    return False


def _fits_number(value: Any) -> bool:
    if isinstance(value, int | float | decimal.Decimal):
        return True
    if isinstance(value, str):
        try:
            float(value.strip())
        except ValueError:
            return False
        return True
    return False


def _fits_boolean(value: Any) -> bool:
    return not isinstance(value, dict | list | float)


def _value_check(sa: Any, ctype: Any) -> tuple[Callable[[Any], bool], frozenset[type]] | None:
    """Whether a value fits a column of type ``ctype``, and the value types that always do
    (None: the database or the sink's conversion decides)."""
    if isinstance(ctype, sa.Boolean):
        return _fits_boolean, _BOOLEAN_PLAIN
    if isinstance(ctype, sa.Integer):
        return _fits_integer, _NUMBER_PLAIN
    if isinstance(ctype, sa.Float):
        return _fits_number, _NUMBER_PLAIN
    return None


def _duplicate_column(exc: BaseException) -> bool:
    """The error of adding a column another writer has just added (SQLite, or PostgreSQL without IF NOT EXISTS)."""
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None) == "42701" or "duplicate column" in str(orig).lower()


class SqlSink(Sink):
    """Writes records as rows of a table; see the package docstring for the configuration.

    Contract:

    * :meth:`open` creates the SQLAlchemy engine (one per process), :meth:`close` disposes it;
      :meth:`write_batch` opens it itself when called without :meth:`open`;
    * each :meth:`write_batch` is one transaction, so after it returns the rows are committed
      (:meth:`flush` has nothing left to do);
    * the columns written are ``columns`` when configured (other fields are ignored), else
      every field of the batch; a field the table lacks becomes a new nullable column
      (``schema_evolution: add_columns``, the default: ``ALTER TABLE … ADD COLUMN`` in the
      batch's own transaction, the type inferred from the batch's values, the change reported
      with :meth:`RunContext.schema_change`) or, with ``freeze``, raises
      :class:`~active_data_flow.errors.RecordValidationError` naming it before anything is written;
      a value that cannot be stored in its column's type (text into a number column, an object
      into a boolean one) raises it naming the column, its type and the value's type;
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
        Attribute(
            "schema_evolution", str, default="add_columns", choices=("add_columns", "freeze"),
            help="add_columns: a field the table lacks becomes a new nullable column; freeze: its record is dead-lettered",
        ),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        checked_init(self, config, kwargs, self._cross_check)
        self.mode: str = self.config["mode"]
        self.key: list[str] = as_names(self.config["key"])
        self.columns: list[str] | None = as_names(self.config["columns"]) or None
        self.idempotent = self.mode == "upsert"
        self._engine: Engine | None = None
        self._table: Table | None = None
        self._converters: dict[str, Callable[[Any], Any]] = {}
        self._plans: dict[str, ColumnPlan] = {}
        self._fast: FastWriter | None = None
        self._on_conflict = False
        self._evolve = self.config["schema_evolution"] == "add_columns"
        #: per column whose type refuses some values: the check of a value (see _type_check)
        self._checks: dict[str, tuple[Callable[[Any], bool], frozenset[type], str]] = {}

    @staticmethod
    def _cross_check(values: Mapping[str, Any]) -> list[str]:
        problems: list[str] = []
        key = values.get("key")
        if values.get("mode") == "upsert" and not key:
            problems.append("'key': mode 'upsert' needs the key column(s) that identify a row")
        columns = values.get("columns")
        if isinstance(columns, list) and isinstance(key, str | list):
            missing = [k for k in as_names(key) if k not in columns]
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
        """Check once, in the coordinator, that the table exists or may be created; import
        SQLAlchemy and the driver there, so that reader processes forked later have them."""
        preload(self.config["url"], self._where)
        if self.config["create_table"]:
            return
        engine = create_engine(self.config["url"], self._where)
        try:
            sa = import_sqlalchemy(self._where)
            if not sa.inspect(engine).has_table(self.config["table"], schema=self.config["schema"]):
                raise ConfigError(
                    self._where,
                    [f"'table': {self._qualified_name()} does not exist and 'create_table' is false"],
                )
        finally:
            engine.dispose()

    def open(self) -> None:
        if self._engine is None:
            self._engine = create_engine(self.config["url"], self._where)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        self._engine = None
        self._table = None
        self._fast = None

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
        sa = import_sqlalchemy(self._where)
        table = self._table if self._table is not None else self._load_table(records)
        for attempt in (1, 2):
            added = self._new_columns(sa, records, table)
            try:
                self._write(sa, records, added)
                break
            except Exception as exc:
                if not added:
                    raise
                self._table = None  # the columns were not added: forget them
                if attempt == 2 or not _duplicate_column(exc):
                    raise
                # another reader added the same column first: look at the table again, write once more
                table = self._load_table(records)
        for column, type_text in added:
            self.run_context.schema_change(self._qualified_name(), column.name, type_text)
            _log.info("added column %s %s to table %s", column.name, type_text, self._qualified_name())

    def _write(self, sa: Any, records: Sequence[Record], added: list[tuple[Any, str]]) -> None:
        """Write the batch in one transaction, adding the ``added`` columns first in it."""
        assert self._engine is not None and self._table is not None
        table = self._table
        names = self._column_names(records, table)
        self._type_check(records, names)
        ddl = [self._add_column_sql(column, type_text) for column, type_text in added]
        if self._fast is not None and self._write_fast(sa, records, names, ddl):
            return
        rows = self._rows(records, names)
        if self.mode == "upsert":
            rows = self._last_per_key(rows)
        size = int(self.config["batch_size"])
        try:
            with self._engine.begin() as conn:
                for statement in ddl:
                    conn.exec_driver_sql(statement)
                if self.mode == "upsert":
                    self._upsert(sa, conn, table, names, rows, size)
                else:
                    for start in range(0, len(rows), size):
                        conn.execute(table.insert(), rows[start : start + size])
        except sa.exc.DBAPIError:
            self._table = None  # the table may have changed: look at it again on the retry
            raise

    def _write_fast(self, sa: Any, records: Sequence[Record], names: list[str], ddl: list[str]) -> bool:
        """Write the batch through the fast writer; False when it cannot and SQLAlchemy must."""
        assert self._fast is not None and self._engine is not None
        rows = batch_rows(records, [self._plans[n] for n in names], self.key, self.mode == "upsert", json_text)
        try:
            self._fast.write(self._engine, names, rows, ddl)
        except NoStagingTable as exc:
            _log.warning("%s: no temporary staging table (%s); upserting through SQLAlchemy", self._where, exc)
            self._fast = None
            return False
        except sa.exc.DBAPIError:
            self._table = None  # the table may have changed: look at it again on the retry
            raise
        return True

    def _load_table(self, records: Sequence[Record]) -> Table:
        assert self._engine is not None
        sa = import_sqlalchemy(self._where)
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
        """Choose per-column value conversions, how upserts are done and the write path."""
        assert self._engine is not None
        dialect = self._engine.dialect
        converters: dict[str, Callable[[Any], Any]] = {}
        plans: dict[str, ColumnPlan] = {}
        checks: dict[str, tuple[Callable[[Any], bool], frozenset[type], str]] = {}
        for column in table.columns:
            kind, convert = self._conversion(sa, column.type, dialect.name)
            converters[column.name] = convert
            check = _value_check(sa, column.type)
            if check is not None:
                checks[column.name] = (*check, str(column.type.compile(dialect=dialect)))
            processor = column.type.dialect_impl(dialect).bind_processor(dialect)
            plans[column.name] = plan_column(
                column.name, kind, convert, processor, dialect.name, isinstance(column.type, sa.Integer)
            )
        self._converters = converters
        self._plans = plans
        self._checks = checks
        missing = [k for k in (self.columns or []) + self.key if k not in converters]
        if missing:
            raise ConfigError(
                self._where,
                [
                    f"column {m!r} is not in table {self._qualified_name()} (its columns: {', '.join(converters)})"
                    for m in dict.fromkeys(missing)
                ],
            )
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
        self._fast = fast_writer(table, dialect, self.key, self.mode, self._on_conflict)

    @staticmethod
    def _conversion(sa: Any, ctype: Any, dialect: str) -> tuple[str, Callable[[Any], Any]]:
        """The kind of a column type and the conversion of its values (before the type's own)."""
        if isinstance(ctype, sa.JSON):
            ctype.none_as_null = True  # Python None must be SQL NULL, not the JSON literal null.
            return "json", _keep
        if isinstance(ctype, sa.String):
            return "text", _text_value
        if isinstance(ctype, sa.DateTime):
            # SQLite's DATETIME keeps no offset: store UTC
            return "datetime", _temporal_value(_utc_naive if dialect == "sqlite" else datetime.datetime.fromisoformat)
        if isinstance(ctype, sa.Numeric) and not isinstance(ctype, sa.Float):
            return "decimal", _decimal_value
        if isinstance(ctype, sa.Date):
            return "date", _temporal_value(datetime.date.fromisoformat)
        if isinstance(ctype, sa.Time):
            return "time", _temporal_value(datetime.time.fromisoformat)
        return "other", _other_value

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
        names = list(records[0])
        if len(set().union(*records)) != len(names):  # the records' fields differ: first seen, first
            names = list(dict.fromkeys(k for r in records for k in r))
        for name in names:
            if name not in self._converters:
                raise RecordValidationError(
                    name,
                    f"table {self._qualified_name()} has no such column (its columns: "
                    f"{', '.join(self._converters)}) and schema_evolution is 'freeze'; add the column, "
                    "drop the field in a step or set schema_evolution: add_columns",
                )
        return names

    # -- schema evolution

    def _new_columns(self, sa: Any, records: Sequence[Record], table: Table) -> list[tuple[Any, str]]:
        """The columns to add for the batch's fields the table lacks (none with ``columns`` or
        ``freeze``), each with its type as the database writes it; added to ``table`` here, so the
        batch's rows are planned with them (the sink forgets the table when the write fails)."""
        if not self._evolve or self.columns is not None:
            return []
        known = self._converters
        first = records[0]
        fields: Any = first if len(set().union(*records)) == len(first) else dict.fromkeys(k for r in records for k in r)
        missing = [n for n in fields if n not in known]
        if not missing:
            return []
        assert self._engine is not None
        dialect = self._engine.dialect
        declared = _schema_types(self.run_context.extras.get("schema"))
        added = []
        for name in missing:
            ctype = (_declared_type(sa, declared[name], dialect.name, False) if name in declared
                     else _infer_type(sa, (r.get(name) for r in records), dialect.name, False))
            column = sa.Column(name, ctype, nullable=True)
            table.append_column(column)
            added.append((column, str(ctype.compile(dialect=dialect))))
        self._prepare_table(sa, table)
        return added

    def _add_column_sql(self, column: Any, type_text: str) -> str:
        assert self._engine is not None
        dialect = self._engine.dialect
        preparer = dialect.identifier_preparer
        # PostgreSQL waits for another writer's ALTER of the same column, then skips it
        exists = " IF NOT EXISTS" if dialect.name == "postgresql" else ""
        assert self._table is not None
        return (f"ALTER TABLE {preparer.format_table(self._table)} ADD COLUMN{exists} "
                f"{preparer.quote(column.name)} {type_text}")

    def _type_check(self, records: Sequence[Record], names: list[str]) -> None:
        """Refuse a value its column's type cannot hold, naming the column and both types (the
        engine then dead-letters just the records that hold one)."""
        checks = self._checks
        for name in names:
            found = checks.get(name)
            if found is None:
                continue
            fits, plain, column_type = found
            values = [record.get(name) for record in records]
            if set(map(type, values)) <= plain:
                continue
            for value in values:
                if value is not None and not fits(value):
                    raise RecordValidationError(
                        name,
                        f"a {type(value).__name__} value ({value!r:.40}) cannot be stored in column {name!r} of "
                        f"type {column_type} (table {self._qualified_name()})",
                    )

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
        try:
            for row in rows:
                by_key[tuple(row[k] for k in self.key)] = row
        except TypeError:  # an unhashable key value (a dict or a list): compare JSON text
            by_key = {tuple(json_text(row[k]) for k in self.key): row for row in rows}
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

