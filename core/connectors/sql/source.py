"""The ``sql`` source: a table or a query, cut into ranges of an increasing cursor column.

:class:`SqlRangeSplit` is one range of cursor values; cursor values travel in splits, checkpoints
and the state store as tagged JSON; database values become JSON-friendly record values.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from active_data_flow.attributes import Attribute, at_least_one, checked_init, column_names
from active_data_flow.connectors.sql.engine import as_names, create_engine, import_sqlalchemy
from active_data_flow.record import Record
from active_data_flow.redact import redact_text
from active_data_flow.source import (
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

#: A numeric cursor range is never cut into more splits than this (sparse ids, tiny split_size).
_MAX_SPLITS = 10_000


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
    """A database value as JSON-friendly Python (the convention of :mod:`active_data_flow.record`)."""
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
            self._engine = create_engine(self._source.config["url"], self._source.where)
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
    """Reads a table or a query; see the package docstring for the configuration.

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
        self.columns: list[str] | None = as_names(self.config["columns"]) or None
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
        sa = import_sqlalchemy(self.where)
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
        sa = import_sqlalchemy(self.where)
        col = sa.column(str(self.cursor))
        stmt = self.select_statement().where(col.is_not(None))
        if lower is not None:
            stmt = stmt.where(col > sa.bindparam("adf_lo", _decode_cursor(lower)))
        if upper is not None:
            stmt = stmt.where(col <= sa.bindparam("adf_hi", _decode_cursor(upper)))
        return stmt.order_by(col).limit(limit)

    def equal_statement(self, value: Any) -> Any:
        sa = import_sqlalchemy(self.where)
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
        from active_data_flow.state import open_state_store

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
        sa = import_sqlalchemy(self.where)
        col = sa.column(self.cursor)
        stmt = sa.select(sa.func.min(col), sa.func.max(col)).select_from(self._source_clause(sa))
        if saved is not None:
            stmt = stmt.where(col > sa.bindparam("adf_saved", _decode_cursor(saved)))
        engine = create_engine(self.config["url"], self.where)
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
