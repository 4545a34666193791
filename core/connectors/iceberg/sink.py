"""The ``iceberg`` sink: one Iceberg commit per batch, append or upsert by key.

A missing table is created on the first batch (types inferred from it, ``types`` and
``partition_by`` applied); ``upsert`` uses ``Table.upsert`` when the installed pyiceberg has
it, else delete-by-key and append in one transaction. A commit that loses a race with another
writer is retried against the refreshed table.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from active_data_flow.attributes import Attribute, checked_init, column_names
from active_data_flow.connectors.iceberg.catalog import (
    CATALOG_ATTRIBUTES,
    CatalogUser,
    import_pyarrow,
    import_pyiceberg,
)
from active_data_flow.connectors.iceberg.schema import (
    arrow_type,
    as_names,
    check_partition,
    check_types,
    infer_spec,
    parse_partition,
    parse_type,
)
from active_data_flow.connectors.iceberg.values import json_text, value_writer
from active_data_flow.errors import ConfigError, RecordValidationError
from active_data_flow.logs import get_logger
from active_data_flow.record import Record
from active_data_flow.retry import RetriesExhausted, RetryPolicy, retry_call
from active_data_flow.sink import Sink

__all__ = ["IcebergSink"]

_log = get_logger("connectors.iceberg")

#: A commit that lost a race with another writer is retried this many times.
#: concurrent writers of one table: each lost commit race is retried on the new snapshot
_COMMIT_RETRY = RetryPolicy(window_s=float("inf"), first_delay_s=0.05, max_delay_s=2.0, jitter=0.5, max_attempts=9)


def _accepts(func: Callable[..., Any], parameter: str) -> bool:
    try:
        return parameter in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def _namespace_exists(catalog: Any, namespace: str) -> bool:
    from pyiceberg.exceptions import NoSuchNamespaceError

    try:
        catalog.load_namespace_properties(namespace)
    except NoSuchNamespaceError:
        return False
    return True


class IcebergSink(CatalogUser, Sink):
    """Writes records to an Iceberg table; see the package docstring and ``docs/ICEBERG.md``.

    Contract:

    * :meth:`write_batch` is one Iceberg commit (one snapshot) for the whole batch; when it
      returns the batch is committed (:meth:`flush` has nothing left to do). A commit
      conflict with another writer is retried (up to 8 times) against the refreshed table;
    * the table is created on the first batch when missing and ``create`` is true: fields
      in first-seen order, types inferred from that batch (int → long, float → double,
      bool → boolean, datetime → timestamp/timestamptz, date, time, bytes → binary,
      everything else — str, Decimal, UUID, dict/list as JSON text — string; a field null
      in the whole first batch is string) unless ``types`` names the type;
    * a record field the table lacks becomes a new optional column (``schema_evolution:
      add_columns``, the default: one ``update_schema`` commit before the batch's, its type
      inferred from the batch like a new table's or taken from ``types``, the change reported
      with :meth:`RunContext.schema_change`); with ``freeze`` it raises
      :class:`~active_data_flow.errors.RecordValidationError` naming it and listing the table's
      columns; a value that cannot be stored in its column raises it naming the field, the
      column's type and the value's type (ISO strings are accepted for timestamp, date and
      time columns, digit strings for numbers and decimals, base64 for binary);
    * ``append`` may write a batch twice when a run resumes after a crash between the
      commit and the checkpoint (at-least-once); ``upsert`` is idempotent (exactly-once
      effect): a key value must not be null and a batch holding a key twice keeps the last
      record.
    """

    type_name = "iceberg"
    attributes = (
        *CATALOG_ATTRIBUTES,
        Attribute("mode", str, default="append", choices=("append", "upsert"), help="append, or upsert by key"),
        Attribute("key", (str, list), check=column_names, help="key field(s); required for upsert"),
        Attribute("create", bool, default=True, help="create the table on the first batch when missing"),
        Attribute(
            "partition_by",
            (str, list),
            check=check_partition,
            help="partitioning of a created table: column, day(ts), bucket(16, id)…",
        ),
        Attribute(
            "types",
            dict,
            check=check_types,
            help="column types of a created table by field (long, double, timestamptz, decimal(10,2)…)",
        ),
        Attribute(
            "schema_evolution", str, default="add_columns", choices=("add_columns", "freeze"),
            help="add_columns: a field the table lacks becomes a new optional column; freeze: its record is dead-lettered",
        ),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        checked_init(self, config, kwargs, self._cross_check)
        self.mode: str = self.config["mode"]
        self.key: list[str] = as_names(self.config["key"])
        raw_parts = self.config["partition_by"]
        self.partition_by: list[tuple[str, str]] = [
            parse_partition(p) for p in ([raw_parts] if isinstance(raw_parts, str) else raw_parts or [])
        ]
        self.types: dict[str, tuple[Any, ...]] = {
            str(k): parse_type(v) for k, v in (self.config["types"] or {}).items()
        }
        self.idempotent = self.mode == "upsert"
        self._catalog: Any = None
        self._table: Any = None
        #: False forces the delete-then-append upsert even when pyiceberg has Table.upsert.
        self._native_upsert = True

    @staticmethod
    def _cross_check(values: Mapping[str, Any]) -> list[str]:
        problems: list[str] = []
        if values.get("mode") == "upsert" and not values.get("key"):
            problems.append("'key': mode 'upsert' needs the key field(s) that identify a row")
        if values.get("mode") == "append" and values.get("key"):
            problems.append("'key' applies to mode 'upsert' only")
        return problems

    @property
    def where(self) -> str:
        return f"sink 'iceberg' (table {self.config['table']!r})"

    def describe(self) -> str:
        return f"iceberg table {self.identifier} ({self._describe_location()})"

    # -- life cycle

    def setup(self) -> None:
        """Check once, in the coordinator, that the catalog answers and the table fits the config."""
        try:
            table = self.load_table()
            if table is None:
                if not self.config["create"]:
                    raise ConfigError(
                        self.where, [f"'table': {self.identifier} does not exist and 'create' is false"]
                    )
                self._check_transforms()
                return
            self._check_key_columns(table)
        finally:
            self.release_catalog()  # reader processes open their own

    def open(self) -> None:
        self.load_catalog()

    def close(self) -> None:
        self._table = None
        self.release_catalog()

    def _check_key_columns(self, table: Any) -> None:
        columns = [f.name for f in table.schema().fields]
        missing = [k for k in self.key if k not in columns]
        if missing:
            raise ConfigError(
                self.where,
                [
                    f"'key': column {k!r} is not in table {self.identifier} (its columns: {', '.join(columns)})"
                    for k in missing
                ],
            )

    def _check_transforms(self) -> None:
        needs_core = [
            f"{t.replace('[', '(').replace(']', '')}, {c})" if "[" in t else f"{t}({c})"
            for t, c in self.partition_by
            if t != "identity"
        ]
        if needs_core and importlib.util.find_spec("pyiceberg_core") is None:
            raise ConfigError(
                self.where,
                [
                    f"'partition_by': {', '.join(needs_core)} needs the Python package 'pyiceberg-core' to write "
                    "(pip install 'pyiceberg[pyiceberg-core]'); identity partitions (a bare column) need nothing more"
                ],
            )

    # -- writing

    def write_batch(self, records: Sequence[Record]) -> None:
        if not records:
            return
        import_pyiceberg(self.where)
        from pyiceberg.exceptions import CommitFailedException

        current = [self._table if self._table is not None else self._load_or_create(records)]

        def attempt() -> None:
            if self.config["schema_evolution"] == "add_columns":
                current[0] = self._add_columns(current[0], records)
            self._commit(current[0], self.to_arrow(current[0], records))

        def lost_race(exc: BaseException, attempt: int, wait: float) -> None:
            _log.info("commit to %s lost a race (%s); retrying", self.identifier, exc)
            current[0] = current[0].refresh()  # another writer committed: build on its snapshot

        try:
            retry_call(attempt, policy=_COMMIT_RETRY, what=f"commit to {self.identifier}", on_retry=lost_race,
                       retryable=lambda exc: isinstance(exc, CommitFailedException))
        except RetriesExhausted as exc:
            self._table = None
            raise exc.last from None
        except Exception:
            self._table = None  # the table may have changed: load it again on the engine's retry
            raise
        self._table = current[0]

    def _add_columns(self, table: Any, records: Sequence[Record]) -> Any:
        """``table`` with optional columns added for the fields of ``records`` it lacks (one schema
        commit; another writer that added them first makes it a no-op after the refresh)."""
        known = set(table.schema().as_arrow().names)
        missing = [k for k in dict.fromkeys(k for r in records for k in r) if k not in known]
        if not missing:
            return table
        pa = import_pyarrow(self.where)
        fields = [
            pa.field(name, arrow_type(pa, self.types.get(name) or infer_spec([r.get(name) for r in records])), nullable=True)
            for name in missing
        ]
        with table.update_schema() as update:
            update.union_by_name(pa.schema(fields))
        table = table.refresh()
        schema = table.schema()
        for name in missing:
            type_text = str(schema.find_field(name).field_type)
            self.run_context.schema_change(self.identifier, name, type_text)
            _log.info("added column %s %s to Iceberg table %s", name, type_text, self.identifier)
        return table

    def _snapshot_properties(self) -> dict[str, str]:
        ctx = self.run_context
        return {"adf.flow": ctx.flow_name, "adf.run-id": ctx.run_id, "adf.reader": str(ctx.reader_id)}

    def _commit(self, table: Any, data: Any) -> None:
        props = self._snapshot_properties()
        if self.mode == "append":
            table.append(data, snapshot_properties=props)
        elif self._native_upsert and hasattr(table, "upsert"):
            extra = {"snapshot_properties": props} if _accepts(table.upsert, "snapshot_properties") else {}
            table.upsert(data, join_cols=list(self.key), **extra)
        else:
            self._delete_then_append(table, data, props)

    def _delete_then_append(self, table: Any, data: Any, props: dict[str, str]) -> None:
        ex: Any = importlib.import_module("pyiceberg.expressions")  # typed loosely across versions
        columns = [data.column(k).to_pylist() for k in self.key]
        keys = list(zip(*columns, strict=True))
        if len(self.key) == 1:
            condition: Any = ex.In(self.key[0], {k[0] for k in keys})
        else:
            terms = [
                ex.And(*[ex.EqualTo(name, value) for name, value in zip(self.key, k, strict=True)])
                for k in set(keys)
            ]
            condition = terms[0] if len(terms) == 1 else ex.Or(*terms)
        with table.transaction() as txn, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Delete operation did not match any records")
            txn.delete(condition, snapshot_properties=props)
            txn.append(data, snapshot_properties=props)

    def _load_or_create(self, records: Sequence[Record]) -> Any:
        table = self.load_table()
        if table is not None:
            self._check_key_columns(table)
            return table
        if not self.config["create"]:
            raise ConfigError(self.where, [f"'table': {self.identifier} does not exist and 'create' is false"])
        return self._create(records)

    def inferred_schema(self, records: Sequence[Record]) -> Any:
        """The Arrow schema a new table gets from ``records`` (and ``types``, ``key``)."""
        pa = import_pyarrow(self.where)
        names = list(dict.fromkeys([*self.key, *(k for r in records for k in r)]))
        fields = []
        for name in names:
            spec = self.types.get(name) or infer_spec([r.get(name) for r in records])
            fields.append(pa.field(name, arrow_type(pa, spec), nullable=True))
        return pa.schema(fields)

    def _create(self, records: Sequence[Record]) -> Any:
        from pyiceberg.exceptions import NamespaceAlreadyExistsError, TableAlreadyExistsError

        self._check_transforms()
        catalog = self.load_catalog()
        namespace = self.identifier.rsplit(".", 1)[0]
        try:
            catalog.create_namespace(namespace)
        except NamespaceAlreadyExistsError:
            pass
        except Exception:
            # Another reader process created it at the same moment: the SQL catalog reports
            # that as a unique violation of its own table rather than NamespaceAlreadyExistsError.
            if not _namespace_exists(catalog, namespace):
                raise
        schema = self.inferred_schema(records)
        unknown = [c for _, c in self.partition_by if c not in schema.names]
        if unknown:
            raise ConfigError(
                self.where,
                [
                    f"'partition_by': column {c!r} is not among the fields of the first batch ({', '.join(schema.names)})"
                    for c in unknown
                ],
            )
        try:
            if self.partition_by:
                txn = catalog.create_table_transaction(self.identifier, schema)
                with txn.update_spec() as spec:
                    for transform, column in self.partition_by:
                        if transform == "identity":
                            spec.add_identity(column)
                        else:
                            spec.add_field(column, transform)
                txn.commit_transaction()
            else:
                catalog.create_table(self.identifier, schema)
        except TableAlreadyExistsError:
            pass  # another reader process created it first
        table = catalog.load_table(self.identifier)
        _log.info("created Iceberg table %s with columns %s", self.identifier, ", ".join(schema.names))
        return table

    def to_arrow(self, table: Any, records: Sequence[Record]) -> Any:
        """``records`` as an Arrow table with ``table``'s schema (raises RecordValidationError)."""
        pa = import_pyarrow(self.where)
        schema = table.schema().as_arrow()
        columns = list(schema.names)
        known = set(columns)
        extra = list(dict.fromkeys(k for r in records for k in r if k not in known))
        if extra:
            raise RecordValidationError(
                extra[0],
                f"table {self.identifier} has no such column; fields not in the table: {', '.join(extra)}; "
                f"its columns: {', '.join(columns)} and schema_evolution is 'freeze' (evolve the table, drop the "
                "fields in a step or set schema_evolution: add_columns)",
            )
        if self.mode == "upsert":
            records = self._last_per_key(records)
        arrays = []
        for field in schema:
            convert = value_writer(pa, field.type)
            values: list[Any] = []
            for record in records:
                value = record.get(field.name)
                if value is not None and convert is not None:
                    try:
                        value = convert(value)
                    except (TypeError, ValueError, ArithmeticError) as exc:
                        raise RecordValidationError(
                            field.name,
                            f"a {type(value).__name__} value ({value!r:.60}) cannot be stored in column "
                            f"{field.name!r} of type {field.type}: {exc}",
                        ) from None
                values.append(value)
            if not field.nullable and any(v is None for v in values):
                raise RecordValidationError(field.name, f"table {self.identifier} requires it, but it is missing or null")
            try:
                arrays.append(pa.array(values, type=field.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError,
                    OverflowError) as exc:
                raise RecordValidationError(field.name, f"cannot be stored as {field.type}: {exc}") from None
        return pa.Table.from_arrays(arrays, schema=schema)

    def _last_per_key(self, records: Sequence[Record]) -> list[Record]:
        by_key: dict[str, Record] = {}
        for record in records:
            values = [record.get(k) for k in self.key]
            for k, v in zip(self.key, values, strict=True):
                if v is None:
                    raise RecordValidationError(k, "the upsert key is missing or null")
            ident = json_text(values)
            by_key.pop(ident, None)
            by_key[ident] = record
        return list(by_key.values())
