"""Values of the ``iceberg`` connectors: record values to Arrow and Arrow values to records.

:func:`value_writer` turns a record value into one pyarrow accepts for a column (ISO strings
for timestamps, dates and times, digit strings for numbers and decimals, base64 for binary);
:func:`batch_records` turns an Arrow record batch into JSON-friendly records (Decimal → digit
string, timestamp/date/time → ISO string, binary → base64, UUID → string, map → dict).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from active_data_flow.codec import codec
from active_data_flow.record import Record

__all__ = ["batch_records", "json_text", "value_writer"]


# --------------------------------------------------------------------------- values: records -> Arrow


def json_text(value: Any) -> str:
    return codec().dumps(value).decode("utf-8")


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list | tuple):
        return json_text(value)
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


def value_writer(pa: Any, dtype: Any) -> Callable[[Any], Any] | None:
    """How a record value becomes a value pyarrow accepts for ``dtype`` (None: as it is)."""
    if isinstance(dtype, pa.ExtensionType):
        if getattr(dtype, "extension_name", "") == "arrow.uuid":
            return _to_uuid_bytes
        dtype = dtype.storage_type
    convert = _scalar_writer(pa.types, dtype)
    return convert if convert is not None else _nested_writer(pa, dtype)


def _scalar_writer(t: Any, dtype: Any) -> Callable[[Any], Any] | None:
    """:func:`value_writer` for a type that holds no other type (None: not such a type)."""
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
    return None


def _nested_writer(pa: Any, dtype: Any) -> Callable[[Any], Any] | None:
    """:func:`value_writer` for a list, a map or a struct (None: another type)."""
    t = pa.types
    if t.is_list(dtype) or t.is_large_list(dtype) or t.is_fixed_size_list(dtype):
        return _list_writer(value_writer(pa, dtype.value_type))
    if t.is_map(dtype):
        return _map_writer(value_writer(pa, dtype.key_type), value_writer(pa, dtype.item_type))
    if t.is_struct(dtype):
        return _struct_writer(
            [(dtype.field(i).name, value_writer(pa, dtype.field(i).type)) for i in range(dtype.num_fields)]
        )
    return None


def _list_writer(item: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    def convert_list(value: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        return [v if v is None or item is None else item(v) for v in value]

    return convert_list


def _map_writer(
    key_conv: Callable[[Any], Any] | None, item_conv: Callable[[Any], Any] | None
) -> Callable[[Any], Any]:
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


def _struct_writer(fields: list[tuple[str, Callable[[Any], Any] | None]]) -> Callable[[Any], Any]:
    def convert_struct(value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a mapping, got {type(value).__name__}")
        unknown = [k for k in value if k not in {n for n, _ in fields}]
        if unknown:
            raise ValueError(f"unknown struct field(s) {', '.join(map(repr, unknown))}")
        return {n: v if (v := value.get(n)) is None or conv is None else conv(v) for n, conv in fields}

    return convert_struct


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


def batch_records(pa: Any, batch: Any) -> list[Record]:
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
