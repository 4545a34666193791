"""Spin-native connectors: what a flow reads and writes inside a component (no sockets).

Registered with :data:`active_data_flow.registry.registry` by :func:`register` (the components call it
at start-up; ``adf spin validate`` knows the same names):

``kv`` (source and sink)
    The Spin key-value store. Source: ``{type: kv, prefix: "orders/", store: default}`` —
    every key starting with ``prefix``, its value parsed as JSON (a list gives several
    records), in key order. Sink: ``{type: kv, key_field: id, prefix: "orders/"}`` — each
    record stored as JSON under ``prefix + record[key_field]`` (idempotent: upsert by key),
    or, without ``key_field``, the batch appended to the JSON list under ``key``.
``spin_sqlite`` (source and sink)
    Spin SQLite. Source: ``{type: spin_sqlite, query: "SELECT ...", params: [...]}`` or
    ``table: name``. Sink: ``{type: spin_sqlite, table: t, mode: insert|upsert, key: id}``;
    the table is created from the first batch's fields when missing (``create: true``).
``spin_redis`` (sink)
    Outbound Redis: ``{type: spin_redis, channel: c}`` publishes each record as JSON, or
    ``{type: spin_redis, stream: s}`` appends it (``XADD s * data <json>``; ``maxlen``
    trims). ``address`` defaults to the ``adf_redis_address`` variable.
``spin_http`` (source and sink)
    Outbound HTTP. Source: ``{type: spin_http, url: ..., records_path: "data.items"}`` —
    GET (or ``method``) the URL, records are the JSON list there (or ``{"records": [...]}``).
    Sink: ``{type: spin_http, url: ...}`` — POST ``{"records": [...]}`` per batch
    (``batch: false`` posts each record); a non-2xx answer is an error (retried, then
    dead-lettered).

The state store ``spin-kv://[label][/prefix]`` (:class:`SpinKvStateStore`) keeps core's
JSON values with expiry times in the key-value store.

Standard library only at module level; the Spin calls go through :mod:`active_data_flow.spin_app.platform`.
"""

from __future__ import annotations

import abc
import json
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from active_data_flow.attributes import Attribute
from active_data_flow.connectors.memory import MemoryEnumerator, MemoryReader, MemorySplit
from active_data_flow.errors import ConfigError
from active_data_flow.record import Record
from active_data_flow.sink import Sink
from active_data_flow.source import (
    Source,
    SourceReader,
    SourceReaderContext,
    SplitEnumerator,
    SplitEnumeratorContext,
)
from active_data_flow.spin_app.platform import SpinCallError, platform
from active_data_flow.state import StateStore

__all__ = [
    "KvSink",
    "KvSource",
    "SpinHttpSink",
    "SpinHttpSource",
    "SpinKvStateStore",
    "SpinRedisSink",
    "SpinSqliteExec",
    "SpinSqliteSink",
    "SpinSqliteSource",
    "register",
]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _ident(value: Any) -> str | None:
    return None if _IDENT.match(str(value)) else f"must be a plain SQL identifier, got {value!r}"


def _dumps(record: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(record), default=str, separators=(",", ":")).encode("utf-8")


def _redis_address(configured: str | None) -> str:
    address = configured or platform().variable("adf_redis_address")
    if not address:
        raise ConfigError("spin_redis", ["address: not given and the adf_redis_address variable is not set"])
    return address


class _FetchedSource(Source):
    """A bounded source whose records are fetched once when the reader starts (one split)."""

    @abc.abstractmethod
    def fetch(self) -> list[dict[str, Any]]:
        """The records of the one split (read once, when the reader starts)."""

    def create_enumerator(self, context: SplitEnumeratorContext, checkpoint: Mapping[str, Any] | None = None) -> SplitEnumerator:
        return MemoryEnumerator(context, checkpoint, 1)

    def create_reader(self, context: SourceReaderContext) -> SourceReader:
        return MemoryReader(context, self.fetch())

    split_class = MemorySplit


# --------------------------------------------------------------------------- key-value


class KvSource(_FetchedSource):
    """Records stored as JSON in the Spin key-value store."""

    type_name = "kv"
    attributes = (
        Attribute("store", str, default="default", help="the key-value store label"),
        Attribute("prefix", str, default="", help="read the keys that start with this"),
        Attribute("key", str, default=None, help="read this one key (a JSON list or object)"),
        Attribute("key_field", str, default=None, help="add each record's key under this field"),
    )

    def fetch(self) -> list[dict[str, Any]]:
        store = platform().kv_open(self.option("store"))
        key = self.option("key")
        keys = [key] if key else sorted(k for k in store.get_keys() if k.startswith(self.option("prefix")))
        out: list[dict[str, Any]] = []
        for k in keys:
            raw = store.get(k)
            if raw is None:
                continue
            value = json.loads(raw)
            for item in value if isinstance(value, list) else [value]:
                record = dict(item) if isinstance(item, Mapping) else {"value": item}
                if self.option("key_field"):
                    record[self.option("key_field")] = k
                out.append(record)
        return out

    def describe(self) -> str:
        return f"kv {self.option('store')}:{self.option('key') or self.option('prefix') + '*'}"


class KvSink(Sink):
    """Records stored as JSON in the Spin key-value store."""

    type_name = "kv"
    idempotent = True
    attributes = (
        Attribute("store", str, default="default", help="the key-value store label"),
        Attribute("prefix", str, default="", help="prepended to every key"),
        Attribute("key_field", str, default=None, help="store each record under prefix + this field"),
        Attribute("key", str, default=None, help="without key_field: append the records to the JSON list here"),
    )

    def open(self) -> None:
        self._store = platform().kv_open(self.option("store"))

    def setup(self) -> None:
        if not self.option("key_field") and not self.option("key"):
            raise ConfigError("kv sink", ["give key_field (one key per record) or key (one JSON list)"])
        if self.option("key") and not self.run_context.resuming:
            platform().kv_open(self.option("store")).set(self.option("prefix") + self.option("key"), b"[]")

    def write_batch(self, records: Sequence[Record]) -> None:
        store = getattr(self, "_store", None) or platform().kv_open(self.option("store"))
        field = self.option("key_field")
        prefix = self.option("prefix")
        if field:
            for record in records:
                if record.get(field) is None:
                    raise ValueError(f"the record has no {field!r} (the kv sink's key_field)")
                store.set(f"{prefix}{record[field]}", _dumps(record))
            return
        key = prefix + self.option("key")
        raw = store.get(key)
        current = json.loads(raw) if raw else []
        current.extend(dict(r) for r in records)
        store.set(key, json.dumps(current, default=str, separators=(",", ":")).encode())

    def describe(self) -> str:
        return f"kv {self.option('store')}:{self.option('prefix')}{self.option('key') or '<' + str(self.option('key_field')) + '>'}"


# --------------------------------------------------------------------------- SQLite


class SpinSqliteSource(_FetchedSource):
    """Rows of the component's SQLite database."""

    type_name = "spin_sqlite"
    attributes = (
        Attribute("database", str, default="default", help="the SQLite database label"),
        Attribute("query", str, default=None, help="a SELECT statement"),
        Attribute("params", list, default=[], help="its parameters"),
        Attribute("table", str, default=None, check=_ident, help="or: every row of this table"),
    )

    def fetch(self) -> list[dict[str, Any]]:
        query = self.option("query") or (f"SELECT * FROM {self.option('table')}" if self.option("table") else None)
        if not query:
            raise ConfigError("spin_sqlite source", ["give query or table"])
        columns, rows = platform().sqlite_open(self.option("database")).execute(query, self.option("params"))
        return [dict(zip(columns, row, strict=False)) for row in rows]

    def describe(self) -> str:
        return f"spin_sqlite {self.option('database')}:{self.option('table') or 'query'}"


class SpinSqliteSink(Sink):
    """Rows written to the component's SQLite database (``insert`` or ``upsert`` by ``key``)."""

    type_name = "spin_sqlite"
    attributes = (
        Attribute("database", str, default="default", help="the SQLite database label"),
        Attribute("table", str, required=True, check=_ident),
        Attribute("mode", str, default="insert", choices=("insert", "upsert", "replace")),
        Attribute("key", (str, list), default=None, help="the key column(s) of upsert"),
        Attribute("create", bool, default=True, help="create the table from the first batch when missing"),
        Attribute("truncate", bool, default=False, help="delete every row when the run starts"),
    )

    @property
    def idempotent(self) -> bool:  # type: ignore[override]
        return self.option("mode") in ("upsert", "replace")

    def _keys(self) -> list[str]:
        key = self.option("key")
        return [] if key is None else [key] if isinstance(key, str) else list(key)

    def setup(self) -> None:
        if self.option("mode") == "upsert" and not self._keys():
            raise ConfigError("spin_sqlite sink", ["mode upsert needs key"])
        if self.option("truncate") and not self.run_context.resuming:
            db = platform().sqlite_open(self.option("database"))
            if self._exists(db):
                db.execute(f"DELETE FROM {self.option('table')}")

    def _exists(self, db: Any) -> bool:
        _, rows = db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name=?", [self.option("table")])
        return bool(rows)

    def write_batch(self, records: Sequence[Record]) -> None:
        if not records:
            return
        db = platform().sqlite_open(self.option("database"))
        table = self.option("table")
        columns: list[str] = []
        for record in records:
            for k in record:
                if k not in columns:
                    columns.append(k)
        bad = [c for c in columns if not _IDENT.match(c)]
        if bad:
            raise ValueError(f"field names that are not SQL identifiers: {bad}")
        if self.option("create") and not self._exists(db):
            keys = self._keys()
            defs = ", ".join(f'"{c}"' for c in columns)
            pk = f", PRIMARY KEY ({', '.join(keys)})" if keys else ""
            db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({defs}{pk})")
        names = ", ".join(f'"{c}"' for c in columns)
        marks = ", ".join("?" for _ in columns)
        verb = "INSERT OR REPLACE" if self.option("mode") == "replace" else "INSERT"
        sql = f"{verb} INTO {table} ({names}) VALUES ({marks})"
        if self.option("mode") == "upsert":
            keys = self._keys()
            updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c not in keys) or f'"{keys[0]}" = excluded."{keys[0]}"'
            sql += f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
        db.execute("BEGIN")
        try:
            for record in records:
                db.execute(sql, [_sql_param(record.get(c)) for c in columns])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def describe(self) -> str:
        return f"spin_sqlite {self.option('database')}:{self.option('table')}"


def _sql_param(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return value


class SpinSqliteExec:
    """``execute(sql, params) -> list of row tuples`` over Spin SQLite, the connection
    :class:`active_data_flow.handlers.schedule.sqlite_exec.ExecScheduleStore` runs on inside a component."""

    def __init__(self, database: str = "default") -> None:
        self._db = platform().sqlite_open(database)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._db.execute(sql, list(params))[1]
        return rows


# --------------------------------------------------------------------------- outbound Redis


class SpinRedisSink(Sink):
    """Publishes records to a Redis channel or appends them to a stream (outbound Redis)."""

    type_name = "spin_redis"
    attributes = (
        Attribute("address", str, default=None, secret=True, help="redis://host:port (default: adf_redis_address)"),
        Attribute("channel", str, default=None, help="PUBLISH each record as JSON here"),
        Attribute("stream", str, default=None, help="or XADD each record (field 'data') to this stream"),
        Attribute("maxlen", int, default=None, help="trim the stream to about this length"),
    )

    def setup(self) -> None:
        if bool(self.option("channel")) == bool(self.option("stream")):
            raise ConfigError("spin_redis sink", ["give exactly one of channel and stream"])

    def write_batch(self, records: Sequence[Record]) -> None:
        conn = platform().redis_open(_redis_address(self.option("address")))
        if self.option("channel"):
            for record in records:
                conn.publish(self.option("channel"), _dumps(record))
            return
        for record in records:
            args: list[bytes | int | str] = [self.option("stream")]
            if self.option("maxlen"):
                args += ["MAXLEN", "~", int(self.option("maxlen"))]
            args += ["*", "data", _dumps(record)]
            conn.execute("XADD", args)

    def describe(self) -> str:
        return f"spin_redis {'channel ' + self.option('channel') if self.option('channel') else 'stream ' + str(self.option('stream'))}"


# --------------------------------------------------------------------------- outbound HTTP


def _dig(value: Any, path: str | None) -> Any:
    for part in (path or "").split("."):
        if part:
            value = value[int(part)] if isinstance(value, list) else value[part]
    return value


class SpinHttpSource(_FetchedSource):
    """Records fetched with an outbound HTTP request (a JSON list, or ``{"records": [...]}``)."""

    type_name = "spin_http"
    attributes = (
        Attribute("url", str, required=True),
        Attribute("method", str, default="GET"),
        Attribute("headers", dict, default={}, secret=True),
        Attribute("body", object, default=None, help="a JSON body to send"),
        Attribute("records_path", str, default=None, help="dotted path of the record list in the answer"),
    )

    def fetch(self) -> list[dict[str, Any]]:
        body = None if self.option("body") is None else json.dumps(self.option("body")).encode()
        headers = {"accept": "application/json", **({"content-type": "application/json"} if body else {}), **self.option("headers")}
        status, _, raw = platform().http_send(self.option("method").upper(), self.option("url"), headers, body)
        if not 200 <= status < 300:
            raise SpinCallError(f"HTTP {self.option('method')} {self.option('url')} answered {status}: {raw[:200]!r}")
        data = _dig(json.loads(raw or b"null"), self.option("records_path"))
        if isinstance(data, Mapping) and "records" in data and not self.option("records_path"):
            data = data["records"]
        items = data if isinstance(data, list) else [data]
        return [dict(i) if isinstance(i, Mapping) else {"value": i} for i in items]

    def describe(self) -> str:
        return f"spin_http {self.option('method')} {self.option('url')}"


class SpinHttpSink(Sink):
    """Records posted with outbound HTTP (``{"records": [...]}`` per batch, or one per request)."""

    type_name = "spin_http"
    attributes = (
        Attribute("url", str, required=True),
        Attribute("method", str, default="POST"),
        Attribute("headers", dict, default={}, secret=True),
        Attribute("batch", bool, default=True, help="one request per batch (else one per record)"),
    )

    def _send(self, payload: Any) -> None:
        headers = {"content-type": "application/json", **self.option("headers")}
        body = json.dumps(payload, default=str).encode()
        status, _, raw = platform().http_send(self.option("method").upper(), self.option("url"), headers, body)
        if not 200 <= status < 300:
            raise SpinCallError(f"HTTP {self.option('method')} {self.option('url')} answered {status}: {raw[:200]!r}")

    def write_batch(self, records: Sequence[Record]) -> None:
        if self.option("batch"):
            self._send({"records": [dict(r) for r in records]})
        else:
            for record in records:
                self._send(dict(record))

    def describe(self) -> str:
        return f"spin_http {self.option('method')} {self.option('url')}"


# --------------------------------------------------------------------------- state store


class SpinKvStateStore(StateStore):
    """core's state store on the Spin key-value store, expiry implemented on top.

    Each key is stored under ``prefix + key`` as ``{"v": value, "x": expires_at}`` (wall-clock
    seconds, or null). An expired entry reads as absent and is deleted when seen. The URL
    form is ``spin-kv://[label][/prefix]`` (default label ``default``, prefix ``adf/``).
    """

    def __init__(self, label: str = "default", prefix: str = "adf/", clock: Any = time.time) -> None:
        self.label = label
        self.prefix = prefix
        self._clock = clock
        self._lock = threading.Lock()
        self._store: Any = None

    @classmethod
    def from_url(cls, url: str) -> SpinKvStateStore:
        rest = url.split("://", 1)[1] if "://" in url else ""
        label, _, prefix = rest.partition("/")
        return cls(label or "default", (prefix.rstrip("/") + "/") if prefix else "adf/")

    def open(self) -> SpinKvStateStore:
        """Open the store now (:class:`SpinCallError` when the component may not use it)."""
        self._kv()
        return self

    def _kv(self) -> Any:
        if self._store is None:
            self._store = platform().kv_open(self.label)
        return self._store

    def _read(self, key: str) -> tuple[bool, Any]:
        raw = self._kv().get(self.prefix + key)
        if raw is None:
            return False, None
        try:
            entry = json.loads(raw)
        except ValueError:
            return False, None
        expires = entry.get("x") if isinstance(entry, dict) else None
        if expires is not None and expires <= self._clock():
            self._kv().delete(self.prefix + key)
            return False, None
        return True, entry.get("v") if isinstance(entry, dict) else entry

    def get(self, key: str, default: Any = None) -> Any:
        _check(key)
        found, value = self._read(key)
        return value if found else default

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        _check(key)
        if ttl is not None and not ttl > 0:
            raise ValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
        try:
            data = json.dumps({"v": value, "x": None if ttl is None else self._clock() + ttl},
                              allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"the value for state key {key!r} is not JSON-serialisable: {exc}") from exc
        self._kv().set(self.prefix + key, data.encode("utf-8"))

    def delete(self, key: str) -> bool:
        _check(key)
        found, _ = self._read(key)
        self._kv().delete(self.prefix + key)
        return found

    def keys(self, prefix: str = "") -> list[str]:
        full = self.prefix + prefix
        n = len(self.prefix)
        return sorted(k[n:] for k in self._kv().get_keys() if k.startswith(full) and self._read(k[n:])[0])

    def close(self) -> None:
        self._store = None

    def __repr__(self) -> str:
        return f"SpinKvStateStore({self.label!r}, prefix={self.prefix!r})"


def _check(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise TypeError(f"state keys are non-empty strings, got {key!r}")


_registered = False


def register() -> None:
    """Register the Spin-native connectors and the ``spin-kv`` state store (idempotent)."""
    global _registered
    if _registered:
        return
    from active_data_flow.registry import registry
    from active_data_flow.state import register_state_store

    for kind, cls in (
        ("source", KvSource), ("sink", KvSink),
        ("source", SpinSqliteSource), ("sink", SpinSqliteSink),
        ("sink", SpinRedisSink),
        ("source", SpinHttpSource), ("sink", SpinHttpSink),
    ):
        registry.register(kind, cls.type_name, cls, origin="active_data_flow.spin_app.connectors")
    register_state_store("spin-kv", SpinKvStateStore.from_url)
    _registered = True
