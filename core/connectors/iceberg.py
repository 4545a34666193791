"""Apache Iceberg tables through pyiceberg: the ``iceberg`` sink and the ``iceberg`` source.

pyiceberg and pyarrow (extra ``iceberg``) are imported when a connector first touches a
catalog, never at import time; without them :class:`~core.errors.MissingExtraError` names
the extra. See ``docs/ICEBERG.md`` for the user guide.

Catalog
    ``catalog`` holds pyiceberg catalog properties (``name``, ``type``, ``uri``,
    ``warehouse``, ``s3.endpoint``…), given to ``pyiceberg.catalog.load_catalog``. Unless
    it names another catalog (``type``, ``uri``, ``py-catalog-impl``, or a ``name`` that
    ``.pyiceberg.yaml`` / ``PYICEBERG_CATALOG__…`` configure), the catalog is pyiceberg's
    SQL catalog on SQLite: ``uri: sqlite:///<warehouse>/catalog.db`` with the warehouse a
    local directory (``warehouse``, default ``<state root>/iceberg``) — or, for a warehouse
    on S3 (``warehouse: s3://bucket/prefix``), ``<state root>/iceberg/catalog.db`` locally.
    S3 settings come from ``endpoint_url`` / ``region`` / ``access_key_id`` /
    ``secret_access_key`` / ``session_token`` (the last three are secrets), else from
    ``AWS_ENDPOINT_URL`` / ``AWS_REGION`` and the AWS SDK's usual credential chain.

``iceberg`` sink
    ``{type: iceberg, table: db.orders, mode: append | upsert, key: [id]}``. A missing
    table is created on the first batch (``create: true``, the default) with a schema
    inferred from that batch (``types`` overrides it per field, ``partition_by`` partitions
    it). ``append`` makes one Iceberg commit per engine batch; ``upsert`` replaces the rows
    whose ``key`` matches (``Table.upsert`` when the installed pyiceberg has it, else
    delete-by-key and append in one transaction) and makes the sink idempotent. A commit
    that loses a race with another writer is retried against the refreshed table.

``iceberg`` source
    ``{type: iceberg, table: db.orders, snapshot_id: …, filter: "amount > 10", columns: [...]}``
    reads one snapshot (the current one when the run enumerates, fixed for the whole run)
    with one :class:`IcebergSplit` per data file; a split's position is the number of rows
    of that file already emitted. Positional delete files and the row filter are applied
    by pyiceberg's reader.

Example::

    sink = IcebergSink(table="db.orders", warehouse="/tmp/wh", mode="upsert", key="id")
    sink.write_batch([{"id": 1, "total": 9.5}])
    rows = list(IcebergSource(table="db.orders", warehouse="/tmp/wh").each())
"""

from __future__ import annotations

import abc
import base64
import datetime
import decimal
import importlib
import importlib.util
import inspect
import os
import re
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.attributes import Attribute, checked_init, column_names
from core.codec import codec
from core.errors import ConfigError, MissingExtraError, RecordValidationError
from core.logs import get_logger
from core.record import Record
from core.redact import redact_text
from core.retry import RetriesExhausted, RetryPolicy, retry_call
from core.sink import Sink
from core.source import (
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

__all__ = [
    "IcebergSink",
    "IcebergSource",
    "IcebergSplit",
    "catalog_properties",
    "parse_partition",
    "parse_type",
]

_log = get_logger("connectors.iceberg")

#: A commit that lost a race with another writer is retried this many times.
#: concurrent writers of one table: each lost commit race is retried on the new snapshot
_COMMIT_RETRY = RetryPolicy(window_s=float("inf"), first_delay_s=0.05, max_delay_s=2.0, jitter=0.5, max_attempts=9)
#: Name given to the default catalog (and to a ``catalog`` mapping without ``name``).
_DEFAULT_CATALOG = "adf"


# --------------------------------------------------------------------------- imports


def _import_pyarrow(what: str) -> Any:
    try:
        import pyarrow
    except ImportError as exc:
        raise MissingExtraError("pyarrow", "iceberg", what) from exc
    return pyarrow


def _import_pyiceberg(what: str) -> Any:
    """pyiceberg (and pyarrow, which every read and write needs)."""
    try:
        import pyiceberg
        import pyiceberg.catalog
    except ImportError as exc:
        raise MissingExtraError("pyiceberg", "iceberg", what) from exc
    _import_pyarrow(what)
    return pyiceberg


# --------------------------------------------------------------------------- configuration


def _check_table(value: Any) -> str | None:
    parts = str(value).split(".")
    if len(parts) < 2 or not all(p.strip() for p in parts):
        return f"must be namespace.table (e.g. db.orders), got {value!r}"
    return None




def _as_names(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _check_catalog(value: Any) -> str | None:
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            return f"property names must be non-empty strings, got {key!r}"
        if item is not None and not isinstance(item, str | int | float | bool):
            return f"property {key!r} must be a string, number or boolean, got {type(item).__name__}"
    return None


_TYPE_ALIASES = {
    "string": "string",
    "str": "string",
    "text": "string",
    "json": "string",
    "long": "long",
    "bigint": "long",
    "int64": "long",
    "integer": "long",
    "int": "int",
    "int32": "int",
    "double": "double",
    "float64": "double",
    "number": "double",
    "float": "float",
    "float32": "float",
    "boolean": "boolean",
    "bool": "boolean",
    "date": "date",
    "time": "time",
    "timestamp": "timestamp",
    "datetime": "timestamp",
    "timestamptz": "timestamptz",
    "binary": "binary",
    "bytes": "binary",
}
_DECIMAL_RE = re.compile(r"^decimal\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)$", re.IGNORECASE)


def parse_type(name: str) -> tuple[Any, ...]:
    """A column type name of ``types`` as a tuple: ``("long",)``, ``("decimal", 10, 2)``.

    Raises ``ValueError`` naming the accepted types.
    """
    text = str(name).strip()
    m = _DECIMAL_RE.match(text)
    if m:
        precision, scale = int(m.group(1)), int(m.group(2))
        if not 1 <= precision <= 38 or scale > precision:
            raise ValueError(f"decimal({precision}, {scale}): precision must be 1..38 and scale at most the precision")
        return ("decimal", precision, scale)
    canonical = _TYPE_ALIASES.get(text.lower())
    if canonical is None:
        raise ValueError(
            f"unknown column type {name!r} (types: {', '.join(sorted(set(_TYPE_ALIASES.values())))}, decimal(p, s))"
        )
    return (canonical,)


def _check_types(value: Any) -> str | None:
    for field_name, type_name in value.items():
        if not isinstance(type_name, str):
            return f"field {field_name!r}: the type must be a string, got {type_name!r}"
        try:
            parse_type(type_name)
        except ValueError as exc:
            return f"field {field_name!r}: {exc}"
    return None


_PARTITION_RE = re.compile(r"^\s*([A-Za-z]+)\s*\(\s*(?:(\d+)\s*,\s*)?([^(),]+?)\s*\)\s*$")
_TRANSFORMS = ("year", "month", "day", "hour", "bucket", "truncate", "identity")


def parse_partition(entry: str) -> tuple[str, str]:
    """``"country"`` → ``("identity", "country")``, ``"day(ts)"`` → ``("day", "ts")``,
    ``"bucket(16, id)"`` → ``("bucket[16]", "id")`` (pyiceberg's transform names).

    Raises ``ValueError`` for anything else.
    """
    text = str(entry).strip()
    m = _PARTITION_RE.match(text)
    if m is None:
        if not text or any(c in text for c in "(),"):
            raise ValueError(
                f"bad partition {entry!r}: give a column, transform(column) or bucket(N, column)/truncate(W, column)"
            )
        return ("identity", text)
    transform, width, column = m.group(1).lower(), m.group(2), m.group(3)
    if transform not in _TRANSFORMS:
        raise ValueError(f"bad partition {entry!r}: unknown transform {transform!r} ({', '.join(_TRANSFORMS)})")
    if transform in ("bucket", "truncate"):
        if width is None or int(width) < 1:
            raise ValueError(f"bad partition {entry!r}: {transform} needs a positive width, e.g. {transform}(16, {column})")
        return (f"{transform}[{int(width)}]", column)
    if width is not None:
        raise ValueError(f"bad partition {entry!r}: {transform} takes only a column")
    return (transform, column)


def _check_partition(value: Any) -> str | None:
    for entry in [value] if isinstance(value, str) else value:
        if not isinstance(entry, str):
            return f"every entry must be a string, got {entry!r}"
        try:
            parse_partition(entry)
        except ValueError as exc:
            return str(exc)
    return None


def _prop(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _is_remote(location: str) -> bool:
    scheme, sep, _ = location.partition("://")
    return bool(sep) and scheme.lower() != "file"


def _local_dir(location: str) -> str:
    path = location[len("file://") :] if location.startswith("file://") else location
    return os.path.abspath(os.path.expanduser(path))


def _state_root() -> str:
    from core.engine import default_state_root

    return default_state_root()


def catalog_properties(config: Mapping[str, Any], *, configured: bool = False) -> tuple[str, dict[str, str]]:
    """The catalog name and the properties handed to ``load_catalog`` (see the module doc).

    ``configured`` says that pyiceberg's own configuration (``.pyiceberg.yaml``,
    ``PYICEBERG_CATALOG__<NAME>__…``) defines a catalog of that name: then no default
    catalog type or URI is added. Creates the local warehouse / catalog directory.
    """
    props = {str(k): _prop(v) for k, v in dict(config.get("catalog") or {}).items() if v is not None}
    name = props.pop("name", "") or _DEFAULT_CATALOG
    if not configured and not ({"type", "uri", "py-catalog-impl"} & props.keys()):
        props["type"] = "sql"
    is_sql = props.get("type", "").lower() == "sql"
    warehouse = props.get("warehouse") or config.get("warehouse")
    if not warehouse and is_sql:
        warehouse = os.path.join(_state_root(), "iceberg")
    if warehouse and (is_sql or "warehouse" not in props):
        if not _is_remote(warehouse):
            local = _local_dir(warehouse)
            os.makedirs(local, exist_ok=True)
            warehouse = "file://" + local
        props["warehouse"] = warehouse
    if is_sql and "uri" not in props:
        db_dir = (
            os.path.join(_state_root(), "iceberg")
            if not warehouse or _is_remote(warehouse)
            else _local_dir(warehouse)
        )
        os.makedirs(db_dir, exist_ok=True)
        props["uri"] = "sqlite:///" + os.path.join(db_dir, "catalog.db")
    s3_wanted = bool(warehouse and warehouse.startswith(("s3://", "s3a://"))) or any(
        config.get(k) for k in ("endpoint_url", "region", "access_key_id", "secret_access_key", "session_token")
    )
    if s3_wanted:
        endpoint = (
            config.get("endpoint_url")
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        if endpoint:
            props.setdefault("s3.endpoint", str(endpoint))
        region = config.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not region and props.get("s3.endpoint"):
            region = "us-east-1"  # an S3-compatible store: never ask AWS where the bucket lives
        if region and "s3.region" not in props and "client.region" not in props:
            props["s3.region"] = str(region)
        for attr, key in (
            ("access_key_id", "s3.access-key-id"),
            ("secret_access_key", "s3.secret-access-key"),
            ("session_token", "s3.session-token"),
        ):
            if config.get(attr):
                props.setdefault(key, str(config[attr]))
    return name, props


_CATALOG_ATTRIBUTES = (
    Attribute(
        "catalog",
        dict,
        default={},
        check=_check_catalog,
        help="pyiceberg catalog properties (name, type, uri, warehouse, s3.*); default: a SQLite SQL catalog",
    ),
    Attribute("table", str, required=True, check=_check_table, help="namespace.table, e.g. db.orders"),
    Attribute(
        "warehouse",
        str,
        help="local directory or s3://bucket/prefix for the default catalog; default <state root>/iceberg",
    ),
    Attribute("endpoint_url", str, help="S3-compatible endpoint (MinIO); default AWS_ENDPOINT_URL"),
    Attribute("region", str, help="S3 region; default AWS_REGION / AWS_DEFAULT_REGION"),
    Attribute("access_key_id", str, secret=True, help="S3 access key; default: the AWS credential chain"),
    Attribute("secret_access_key", str, secret=True, help="S3 secret key; default: the AWS credential chain"),
    Attribute("session_token", str, secret=True, help="S3 session token; default: the AWS credential chain"),
)


class _CatalogUser:
    """What the sink and the source share: the catalog, the table identifier, messages."""

    config: dict[str, Any]
    _catalog: Any

    @property
    @abc.abstractmethod
    def where(self) -> str:
        """How messages name the connector (``sink 'iceberg'``…); the sink and the source say."""

    @property
    def identifier(self) -> str:
        return str(self.config["table"])

    def catalog_properties(self) -> tuple[str, dict[str, str]]:
        """Catalog name and properties (may contain secrets: never log them unredacted)."""
        name = (self.config.get("catalog") or {}).get("name") or _DEFAULT_CATALOG
        return catalog_properties(self.config, configured=_configured_elsewhere(str(name)))

    def load_catalog(self) -> Any:
        """The pyiceberg catalog (created once per object)."""
        if self._catalog is None:
            _import_pyiceberg(self.where)
            from pyiceberg.catalog import load_catalog

            name, props = self.catalog_properties()
            try:
                self._catalog = load_catalog(name, **props)
            except ValueError as exc:
                raise ConfigError(self.where, [f"'catalog': {redact_text(str(exc))}"]) from None
        return self._catalog

    def release_catalog(self) -> None:
        """Drop the catalog and close its database connections (it is loaded again when needed)."""
        catalog, self._catalog = self._catalog, None
        engine = getattr(catalog, "engine", None)  # the SQL catalog's SQLAlchemy engine
        if engine is not None:
            try:
                engine.dispose()
            except Exception:  # pragma: no cover - best effort
                pass

    def load_table(self) -> Any:
        """The table, or None when it does not exist."""
        from pyiceberg.exceptions import NoSuchTableError

        try:
            return self.load_catalog().load_table(self.identifier)
        except NoSuchTableError:
            return None

    def _describe_location(self) -> str:
        catalog = dict(self.config.get("catalog") or {})
        if catalog.get("uri"):
            return redact_text(str(catalog["uri"]))
        if catalog.get("name") and not catalog.get("warehouse"):
            return f"catalog {catalog['name']}"
        return str(catalog.get("warehouse") or self.config.get("warehouse") or "<state root>/iceberg")


def _configured_elsewhere(name: str) -> bool:
    """Whether pyiceberg's configuration (file or environment) defines the catalog ``name``."""
    try:
        from pyiceberg.utils.config import Config
    except ImportError:
        return False
    try:
        return Config().get_catalog_config(name) is not None
    except Exception:  # a broken .pyiceberg.yaml: load_catalog reports it
        return False


# --------------------------------------------------------------------------- values: records -> Arrow


def _json_text(value: Any) -> str:
    return codec().dumps(value).decode("utf-8")


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list | tuple):
        return _json_text(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float | decimal.Decimal):
        if not value.is_finite() if isinstance(value, decimal.Decimal) else not value.is_integer():
            raise ValueError(f"expected an integer, got {value}")
        if int(value) != value:
            raise ValueError(f"expected an integer, got a fraction {value}")
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise TypeError(f"expected an integer, got {type(value).__name__}")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("expected a number, got a boolean")
    if isinstance(value, int | float | decimal.Decimal | str):
        return float(value)
    raise TypeError(f"expected a number, got {type(value).__name__}")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise TypeError(f"expected a boolean, got {value!r:.40}")


def _to_decimal(value: Any) -> decimal.Decimal:
    if isinstance(value, bool):
        raise TypeError("expected a decimal, got a boolean")
    if isinstance(value, decimal.Decimal):
        return value
    if isinstance(value, int | float | str):
        try:
            return decimal.Decimal(str(value).strip())
        except decimal.InvalidOperation:
            raise ValueError(f"expected a decimal, got {value!r:.40}") from None
    raise TypeError(f"expected a decimal, got {type(value).__name__}")


def _to_date(value: Any) -> datetime.date:
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        text = value.strip()
        return datetime.date.fromisoformat(text[:10]) if len(text) > 10 else datetime.date.fromisoformat(text)
    raise TypeError(f"expected a date, got {type(value).__name__}")


def _to_timestamp(aware: bool) -> Callable[[Any], datetime.datetime]:
    def convert(value: Any) -> datetime.datetime:
        if isinstance(value, datetime.datetime):
            stamp = value
        elif isinstance(value, datetime.date):
            stamp = datetime.datetime(value.year, value.month, value.day)
        elif isinstance(value, str):
            stamp = datetime.datetime.fromisoformat(value.strip())
        else:
            raise TypeError(f"expected a timestamp, got {type(value).__name__}")
        if aware:
            return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=datetime.UTC)
        if stamp.tzinfo is not None:  # a naive column holds UTC wall time
            return stamp.astimezone(datetime.UTC).replace(tzinfo=None)
        return stamp

    return convert


def _to_time(value: Any) -> datetime.time:
    if isinstance(value, datetime.time):
        return value
    if isinstance(value, str):
        return datetime.time.fromisoformat(value.strip())
    raise TypeError(f"expected a time, got {type(value).__name__}")


def _to_binary(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise ValueError("expected bytes or a base64 string") from None
    raise TypeError(f"expected bytes, got {type(value).__name__}")


def _to_uuid_bytes(value: Any) -> bytes:
    if isinstance(value, uuid.UUID):
        return value.bytes
    if isinstance(value, bytes | bytearray) and len(value) == 16:
        return bytes(value)
    if isinstance(value, str):
        return uuid.UUID(value.strip()).bytes
    raise TypeError(f"expected a UUID, got {type(value).__name__}")


def _writer(pa: Any, dtype: Any) -> Callable[[Any], Any] | None:  # noqa: C901
    """How a record value becomes a value pyarrow accepts for ``dtype`` (None: as it is)."""
    t = pa.types
    if isinstance(dtype, pa.ExtensionType):
        if getattr(dtype, "extension_name", "") == "arrow.uuid":
            return _to_uuid_bytes
        dtype = dtype.storage_type
    if t.is_string(dtype) or t.is_large_string(dtype):
        return _to_text
    if t.is_boolean(dtype):
        return _to_bool
    if t.is_integer(dtype):
        return _to_int
    if t.is_floating(dtype):
        return _to_float
    if t.is_decimal(dtype):
        return _to_decimal
    if t.is_date(dtype):
        return _to_date
    if t.is_timestamp(dtype):
        return _to_timestamp(bool(dtype.tz))
    if t.is_time(dtype):
        return _to_time
    if t.is_binary(dtype) or t.is_large_binary(dtype):
        return _to_binary
    if t.is_fixed_size_binary(dtype):
        return _to_uuid_bytes if dtype.byte_width == 16 else _to_binary
    if t.is_list(dtype) or t.is_large_list(dtype) or t.is_fixed_size_list(dtype):
        item = _writer(pa, dtype.value_type)

        def convert_list(value: Any) -> Any:
            if not isinstance(value, list | tuple):
                raise TypeError(f"expected a list, got {type(value).__name__}")
            return [v if v is None or item is None else item(v) for v in value]

        return convert_list
    if t.is_map(dtype):
        key_conv, item_conv = _writer(pa, dtype.key_type), _writer(pa, dtype.item_type)

        def convert_map(value: Any) -> Any:
            pairs = value.items() if isinstance(value, Mapping) else value
            return [
                (
                    k if key_conv is None else key_conv(k),
                    v if v is None or item_conv is None else item_conv(v),
                )
                for k, v in pairs
            ]

        return convert_map
    if t.is_struct(dtype):
        fields = [(dtype.field(i).name, _writer(pa, dtype.field(i).type)) for i in range(dtype.num_fields)]

        def convert_struct(value: Any) -> Any:
            if not isinstance(value, Mapping):
                raise TypeError(f"expected a mapping, got {type(value).__name__}")
            unknown = [k for k in value if k not in {n for n, _ in fields}]
            if unknown:
                raise ValueError(f"unknown struct field(s) {', '.join(map(repr, unknown))}")
            return {n: v if (v := value.get(n)) is None or conv is None else conv(v) for n, conv in fields}

        return convert_struct
    return None


def _infer_spec(values: Sequence[Any]) -> tuple[Any, ...]:
    """The column type of a field from its values in a batch (see the sink docs)."""
    kinds: set[str] = set()
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool):
            kinds.add("boolean")
        elif isinstance(value, int):
            kinds.add("long")
        elif isinstance(value, float):
            kinds.add("double")
        elif isinstance(value, datetime.datetime):
            kinds.add("timestamptz" if value.tzinfo is not None else "timestamp")
        elif isinstance(value, datetime.date):
            kinds.add("date")
        elif isinstance(value, datetime.time):
            kinds.add("time")
        elif isinstance(value, bytes | bytearray):
            kinds.add("binary")
        else:
            kinds.add("string")  # str, Decimal, UUID, dict/list (JSON text)
    if len(kinds) == 1:
        return (kinds.pop(),)
    if kinds == {"long", "double"}:
        return ("double",)
    return ("string",)


def _arrow_type(pa: Any, spec: tuple[Any, ...]) -> Any:
    kind = spec[0]
    simple = {
        "string": pa.string(),
        "long": pa.int64(),
        "int": pa.int32(),
        "double": pa.float64(),
        "float": pa.float32(),
        "boolean": pa.bool_(),
        "date": pa.date32(),
        "time": pa.time64("us"),
        "timestamp": pa.timestamp("us"),
        "timestamptz": pa.timestamp("us", tz="UTC"),
        "binary": pa.binary(),
    }
    if kind == "decimal":
        return pa.decimal128(int(spec[1]), int(spec[2]))
    return simple[kind]


# --------------------------------------------------------------------------- values: Arrow -> records


def _iso(value: Any) -> Any:
    return value.isoformat()


def _b64(value: Any) -> str:
    return base64.b64encode(bytes(value)).decode("ascii")


def _reader(pa: Any, dtype: Any) -> Callable[[Any], Any] | None:
    """How a value from ``to_pylist`` becomes JSON-friendly Python (None: as it is)."""
    t = pa.types
    if isinstance(dtype, pa.ExtensionType):
        if getattr(dtype, "extension_name", "") == "arrow.uuid":
            return lambda v: str(v) if isinstance(v, uuid.UUID) else str(uuid.UUID(bytes=bytes(v)))
        dtype = dtype.storage_type
    if t.is_dictionary(dtype):
        return _reader(pa, dtype.value_type)
    if t.is_decimal(dtype):
        return str  # exact digits, like the sql source
    if t.is_timestamp(dtype) or t.is_date(dtype) or t.is_time(dtype):
        return _iso
    if t.is_duration(dtype):
        return lambda v: v.total_seconds() if isinstance(v, datetime.timedelta) else v
    if t.is_binary(dtype) or t.is_large_binary(dtype) or t.is_fixed_size_binary(dtype):
        return _b64
    if t.is_list(dtype) or t.is_large_list(dtype) or t.is_fixed_size_list(dtype):
        item = _reader(pa, dtype.value_type)
        if item is None:
            return None
        return lambda v: [x if x is None else item(x) for x in v]
    if t.is_map(dtype):
        key_conv, item_conv = _reader(pa, dtype.key_type), _reader(pa, dtype.item_type)

        def convert_map(value: Any) -> Any:
            out: dict[str, Any] = {}
            for k, v in value:
                key = k if key_conv is None else key_conv(k)
                out[key if isinstance(key, str) else str(key)] = (
                    v if v is None or item_conv is None else item_conv(v)
                )
            return out

        return convert_map
    if t.is_struct(dtype):
        fields = [(dtype.field(i).name, _reader(pa, dtype.field(i).type)) for i in range(dtype.num_fields)]
        if all(conv is None for _, conv in fields):
            return None
        return lambda v: {n: x if (x := v.get(n)) is None or conv is None else conv(x) for n, conv in fields}
    return None


def _batch_records(pa: Any, batch: Any) -> list[Record]:
    """An Arrow record batch as JSON-friendly dicts."""
    rows: list[Record] = batch.to_pylist()
    converters = [
        (field.name, conv) for field in batch.schema if (conv := _reader(pa, field.type)) is not None
    ]
    if converters:
        for row in rows:
            for name, conv in converters:
                value = row.get(name)
                if value is not None:
                    row[name] = conv(value)
    return rows


# --------------------------------------------------------------------------- sink


def _accepts(func: Callable[..., Any], parameter: str) -> bool:
    try:
        return parameter in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


class IcebergSink(_CatalogUser, Sink):
    """Writes records to an Iceberg table; see the module docstring and ``docs/ICEBERG.md``.

    Contract:

    * :meth:`write_batch` is one Iceberg commit (one snapshot) for the whole batch; when it
      returns the batch is committed (:meth:`flush` has nothing left to do). A commit
      conflict with another writer is retried (up to 8 times) against the refreshed table;
    * the table is created on the first batch when missing and ``create`` is true: fields
      in first-seen order, types inferred from that batch (int → long, float → double,
      bool → boolean, datetime → timestamp/timestamptz, date, time, bytes → binary,
      everything else — str, Decimal, UUID, dict/list as JSON text — string; a field null
      in the whole first batch is string) unless ``types`` names the type;
    * a record field the table lacks raises :class:`~core.errors.RecordValidationError`
      naming it and listing the table's columns; a value that cannot be stored in its
      column raises it naming the field (ISO strings are accepted for timestamp, date and
      time columns, digit strings for numbers and decimals, base64 for binary);
    * ``append`` may write a batch twice when a run resumes after a crash between the
      commit and the checkpoint (at-least-once); ``upsert`` is idempotent (exactly-once
      effect): a key value must not be null and a batch holding a key twice keeps the last
      record.
    """

    type_name = "iceberg"
    attributes = (
        *_CATALOG_ATTRIBUTES,
        Attribute("mode", str, default="append", choices=("append", "upsert"), help="append, or upsert by key"),
        Attribute("key", (str, list), check=column_names, help="key field(s); required for upsert"),
        Attribute("create", bool, default=True, help="create the table on the first batch when missing"),
        Attribute(
            "partition_by",
            (str, list),
            check=_check_partition,
            help="partitioning of a created table: column, day(ts), bucket(16, id)…",
        ),
        Attribute(
            "types",
            dict,
            check=_check_types,
            help="column types of a created table by field (long, double, timestamptz, decimal(10,2)…)",
        ),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        checked_init(self, config, kwargs, self._cross_check)
        self.mode: str = self.config["mode"]
        self.key: list[str] = _as_names(self.config["key"])
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
        _import_pyiceberg(self.where)
        from pyiceberg.exceptions import CommitFailedException

        current = [self._table if self._table is not None else self._load_or_create(records)]

        def attempt() -> None:
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
        pa = _import_pyarrow(self.where)
        names = list(dict.fromkeys([*self.key, *(k for r in records for k in r)]))
        fields = []
        for name in names:
            spec = self.types.get(name) or _infer_spec([r.get(name) for r in records])
            fields.append(pa.field(name, _arrow_type(pa, spec), nullable=True))
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
        pa = _import_pyarrow(self.where)
        schema = table.schema().as_arrow()
        columns = list(schema.names)
        known = set(columns)
        extra = list(dict.fromkeys(k for r in records for k in r if k not in known))
        if extra:
            raise RecordValidationError(
                extra[0],
                f"table {self.identifier} has no such column; fields not in the table: {', '.join(extra)}; "
                f"its columns: {', '.join(columns)} (evolve the table or drop the fields in a step)",
            )
        if self.mode == "upsert":
            records = self._last_per_key(records)
        arrays = []
        for field in schema:
            convert = _writer(pa, field.type)
            values: list[Any] = []
            for record in records:
                value = record.get(field.name)
                if value is not None and convert is not None:
                    try:
                        value = convert(value)
                    except (TypeError, ValueError, ArithmeticError) as exc:
                        raise RecordValidationError(
                            field.name, f"{exc} (value {value!r:.60}; column type {field.type})"
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
            ident = _json_text(values)
            by_key.pop(ident, None)
            by_key[ident] = record
        return list(by_key.values())


# --------------------------------------------------------------------------- source


@dataclass(init=False)
class IcebergSplit(Split):
    """One data file of one snapshot: ``split_id`` and ``path`` are the file's location.

    ``position`` is the number of rows of the file already emitted (after deletes and the
    row filter), so a resumed reader skips that many; ``record_count`` and ``file_size``
    come from the manifest (progress), ``delete_files`` counts the delete files that apply.
    """

    path: str = ""
    snapshot_id: int | None = None
    record_count: int = 0
    file_size: int = 0
    delete_files: int = 0

    def __init__(
        self,
        split_id: str,
        position: Any = None,
        path: str = "",
        snapshot_id: int | None = None,
        record_count: int = 0,
        file_size: int = 0,
        delete_files: int = 0,
    ) -> None:
        self.split_id = split_id
        self.position = position
        self.path = path or split_id
        self.snapshot_id = snapshot_id
        self.record_count = record_count
        self.file_size = file_size
        self.delete_files = delete_files

    @property
    def emitted(self) -> int:
        return int(self.position or 0)

    def remaining_bytes(self) -> int:
        if self.record_count <= 0:
            return self.file_size if not self.emitted else 0
        left = max(0, self.record_count - self.emitted)
        return self.file_size * left // self.record_count


class _IcebergEnumerator(StaticSplitEnumerator):
    """Plans the splits once (one per data file of the run's snapshot)."""

    def __init__(
        self, context: SplitEnumeratorContext, checkpoint: Mapping[str, Any] | None, source: IcebergSource
    ) -> None:
        super().__init__(context, checkpoint)
        self._source = source

    def discover_splits(self) -> list[Split]:
        try:
            return list(self._source.plan_splits())
        finally:
            self._source.release_catalog()  # reader processes open their own

    split_class = IcebergSplit


@dataclass
class _Plan:
    """A planned scan of one snapshot: pyiceberg's scan and its tasks by data file path."""

    scan: Any
    tasks: dict[str, Any]


class _IcebergReader(SplitReader):
    """Reads :class:`IcebergSplit` s, streaming the Arrow batches of one data file at a time."""

    def __init__(self, context: SourceReaderContext, source: IcebergSource) -> None:
        super().__init__(context)
        self._source = source
        self._plans: dict[int | None, _Plan] = {}
        self._batches: Iterator[Any] | None = None
        self._leftover: Any = None
        self._pa: Any = None

    def _plan(self, snapshot_id: int | None) -> _Plan:
        plan = self._plans.get(snapshot_id)
        if plan is None:
            scan = self._source.scan(snapshot_id)
            plan = _Plan(scan, {task.file.file_path: task for task in scan.plan_files()})
            self._plans[snapshot_id] = plan
        return plan

    def open_split(self, split: Split) -> None:
        assert isinstance(split, IcebergSplit), f"not an IcebergSplit: {split!r}"
        self._pa = _import_pyarrow(self._source.where)
        plan = self._plan(split.snapshot_id)
        task = plan.tasks.get(split.path)
        if task is None:
            raise ConfigError(
                self._source.where,
                [
                    f"data file {split.path} is not part of snapshot {split.snapshot_id} of {self._source.identifier} "
                    "any more (was the snapshot expired?); start a new run without resuming"
                ],
            )
        self._batches = _record_batches(plan.scan, task)
        self._leftover = None
        skip = split.emitted
        while skip > 0:
            batch = next(self._batches, None)
            if batch is None:
                break
            if batch.num_rows <= skip:
                skip -= batch.num_rows
                continue
            self._leftover = batch.slice(skip)
            skip = 0

    def close_split(self, split: Split) -> None:
        batches, self._batches = self._batches, None
        self._leftover = None
        close = getattr(batches, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        super().close()
        self._plans.clear()
        self._source.release_catalog()

    def _next_batch(self) -> Any:
        while self._leftover is None or self._leftover.num_rows == 0:
            assert self._batches is not None
            batch = next(self._batches, None)
            if batch is None:
                return None
            self._leftover = batch
        return self._leftover

    def read_split(self, split: Split, max_records: int) -> tuple[ReaderBatch, bool]:
        assert isinstance(split, IcebergSplit)
        records: list[Record] = []
        while len(records) < max_records:
            batch = self._next_batch()
            if batch is None:
                break
            take = min(max_records - len(records), batch.num_rows)
            records.extend(_batch_records(self._pa, batch.slice(0, take)))
            self._leftover = batch.slice(take) if take < batch.num_rows else None
        done = self._next_batch() is None  # looks ahead, so a finished file ends with its last rows
        before = split.remaining_bytes()
        split.position = split.emitted + len(records)
        after = 0 if done else split.remaining_bytes()
        return ReaderBatch(records, ReaderStatus.MORE_AVAILABLE, input_bytes=max(0, before - after)), done


def _record_batches(scan: Any, task: Any) -> Iterator[Any]:
    """The Arrow batches of one scan task with its deletes and the scan's row filter applied.

    Streams the file batch by batch where pyiceberg allows it (its public
    ``ArrowScan.to_record_batches`` materialises a whole file first).
    """
    from pyiceberg.io import pyarrow as pyiceberg_arrow

    arrow_scan = pyiceberg_arrow.ArrowScan(
        scan.table_metadata, scan.io, scan.projection(), scan.row_filter, scan.case_sensitive
    )
    stream = getattr(arrow_scan, "_record_batches_from_scan_tasks_and_deletes", None)
    read_deletes = getattr(pyiceberg_arrow, "_read_all_delete_files", None)
    if stream is not None and read_deletes is not None:
        try:
            return iter(stream([task], read_deletes(scan.io, [task])))
        except TypeError:  # another signature in this pyiceberg version
            pass
    return iter(arrow_scan.to_record_batches([task]))


class IcebergSource(_CatalogUser, Source):
    """Reads one snapshot of an Iceberg table; see the module docstring and ``docs/ICEBERG.md``.

    Contract:

    * the snapshot is ``snapshot_id``, else the table's current snapshot when the run plans
      its splits; every split carries it, so a resumed run reads the same snapshot (commits
      made meanwhile wait for the next run); a table without snapshots has no splits;
    * one split per data file, sorted by path; rows of a file come in file order, after
      positional delete files and the row ``filter`` are applied; ``columns`` projects;
    * values are JSON-friendly like the sql source's: Decimal → exact digit string,
      timestamp/date/time → ISO string, binary → base64, UUID → string, map → dict,
      struct → dict, list → list;
    * equality delete files are not supported by pyiceberg: planning such a snapshot fails.
    """

    type_name = "iceberg"
    attributes = (
        *_CATALOG_ATTRIBUTES,
        Attribute("snapshot_id", int, help="read this snapshot; default: the current one at the start of the run"),
        Attribute("filter", str, help="row filter, e.g. \"amount > 10 and country = 'FR'\""),
        Attribute("columns", list, check=column_names, help="read only these columns"),
        Attribute("case_sensitive", bool, default=True, help="match column names in filter/columns case-sensitively"),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        checked_init(self, config, kwargs, lambda values: [])
        self.columns: list[str] | None = _as_names(self.config["columns"]) or None
        self._catalog: Any = None

    @property
    def where(self) -> str:
        return f"source 'iceberg' (table {self.config['table']!r})"

    def describe(self) -> str:
        return f"iceberg table {self.identifier} ({self._describe_location()})"

    def _table(self) -> Any:
        table = self.load_table()
        if table is None:
            raise ConfigError(self.where, [f"'table': {self.identifier} does not exist"])
        return table

    def scan(self, snapshot_id: int | None) -> Any:
        """pyiceberg's scan of ``snapshot_id`` with the configured filter and columns (checked)."""
        _import_pyiceberg(self.where)
        from pyiceberg.expressions import AlwaysTrue
        from pyiceberg.expressions.parser import parse

        table = self._table()
        problems: list[str] = []
        row_filter: Any = AlwaysTrue()
        if self.config["filter"]:
            try:
                row_filter = parse(self.config["filter"])
            except Exception as exc:
                problems.append(f"'filter': cannot parse {self.config['filter']!r}: {exc}")
        if snapshot_id is not None and table.snapshot_by_id(snapshot_id) is None:
            known = ", ".join(str(s.snapshot_id) for s in table.snapshots()) or "none"
            problems.append(f"'snapshot_id': table {self.identifier} has no snapshot {snapshot_id} (snapshots: {known})")
        if problems:
            raise ConfigError(self.where, problems)
        scan = table.scan(
            row_filter=row_filter,
            selected_fields=tuple(self.columns) if self.columns else ("*",),
            case_sensitive=bool(self.config["case_sensitive"]),
            snapshot_id=snapshot_id,
        )
        columns = [f.name for f in table.schema().fields]
        if self.columns:
            missing = [c for c in self.columns if c not in columns] if self.config["case_sensitive"] else [
                c for c in self.columns if c.lower() not in {n.lower() for n in columns}
            ]
            if missing:
                raise ConfigError(
                    self.where,
                    [f"'columns': {c!r} is not a column of {self.identifier} (its columns: {', '.join(columns)})"
                     for c in missing],
                )
        try:
            scan.projection()
            from pyiceberg.expressions.visitors import bind

            bind(table.schema(), row_filter, case_sensitive=bool(self.config["case_sensitive"]))
        except ValueError as exc:
            raise ConfigError(self.where, [f"'filter': {exc} (columns: {', '.join(columns)})"]) from None
        return scan

    def plan_splits(self) -> list[IcebergSplit]:
        """One split per data file of the snapshot read by this run (none for an empty table)."""
        _import_pyiceberg(self.where)
        table = self._table()
        snapshot_id = self.config["snapshot_id"]
        if snapshot_id is None:
            current = table.current_snapshot()
            if current is None:
                return []
            snapshot_id = int(current.snapshot_id)
        splits = [
            IcebergSplit(
                task.file.file_path,
                snapshot_id=snapshot_id,
                record_count=int(task.file.record_count),
                file_size=int(task.file.file_size_in_bytes),
                delete_files=len(task.delete_files),
            )
            for task in self.scan(snapshot_id).plan_files()
        ]
        splits.sort(key=lambda s: s.split_id)
        return splits

    # -- Source factory methods

    def create_enumerator(
        self, context: SplitEnumeratorContext, checkpoint: Mapping[str, Any] | None = None
    ) -> SplitEnumerator:
        return _IcebergEnumerator(context, checkpoint, self)

    def create_reader(self, context: SourceReaderContext) -> SourceReader:
        return _IcebergReader(context, self)

    split_class = IcebergSplit

    def total_work(self, splits: Sequence[Split]) -> int | None:
        return sum(s.remaining_bytes() for s in splits if isinstance(s, IcebergSplit))
