"""The Spin 3 platform calls the connectors use, behind one small seam.

Inside a component these are ``spin_sdk`` calls (imported here, lazily, so this module can
also be imported outside a component, where :func:`use` installs another implementation —
an in-process fake in tests, say). Every function raises :class:`SpinCallError` with a
readable message instead of spin-sdk's ``Err(...)`` wrappers.

=========================  ================================================================
``kv_open(label)``         a key-value store: ``get(key) -> bytes|None``, ``set``, ``delete``,
                           ``exists``, ``get_keys()``
``sqlite_open(name)``      a connection: ``execute(sql, params) -> (columns, rows)``
``redis_open(address)``    a connection: ``publish(channel, bytes)``, ``execute(cmd, args)``
``mqtt_open(address)``     an outbound MQTT connection (``fermyon:spin/mqtt``; also
                           ``username``, ``password``, ``keep_alive``):
                           ``publish(topic, bytes, qos=1)``
``http_send(...)``         ``(status, headers, body)`` of an outbound request
``variable(name)``         a Spin variable or None (all of an event's variables are read with
                           one ``wasi:config/store`` get-all; ``begin_event()`` forgets them)
=========================  ================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["BodyTooLarge", "Platform", "SpinCallError", "platform", "read_to_end", "use"]


class SpinCallError(RuntimeError):
    """A Spin host call failed (the message names the call and the host's error)."""


class BodyTooLarge(ValueError):
    """A body went past the ``limit`` given to :func:`read_to_end` (which stopped reading)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the body is longer than {limit} bytes")
        self.limit = limit


def _describe(exc: BaseException) -> str:
    value = getattr(exc, "value", None)
    if value is None:
        return f"{type(exc).__name__}: {exc}"
    inner = getattr(value, "value", None)
    name = type(value).__name__.split("_", 1)[-1]
    return f"{name}: {inner}" if inner is not None else name


class _KvStore:
    def __init__(self, store: Any, label: str) -> None:
        self._store = store
        self.label = label

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            raise SpinCallError(f"key-value store {self.label!r}: {what} failed ({_describe(exc)})") from None

    def get(self, key: str) -> bytes | None:
        return self._call("get", self._store.get, key)  # type: ignore[no-any-return]

    def set(self, key: str, value: bytes) -> None:
        self._call("set", self._store.set, key, value)

    def delete(self, key: str) -> None:
        self._call("delete", self._store.delete, key)

    def exists(self, key: str) -> bool:
        return bool(self._call("exists", self._store.exists, key))

    def get_keys(self) -> list[str]:
        return list(self._call("get-keys", self._store.get_keys))


class _Sqlite:
    def __init__(self, conn: Any, name: str) -> None:
        self._conn = conn
        self.name = name

    def execute(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
        from spin_sdk.wit.imports import sqlite as s

        values: list[Any] = []
        for p in params:
            if p is None:
                values.append(s.Value_Null())
            elif isinstance(p, bool):
                values.append(s.Value_Integer(int(p)))
            elif isinstance(p, int):
                values.append(s.Value_Integer(p))
            elif isinstance(p, float):
                values.append(s.Value_Real(p))
            elif isinstance(p, bytes | bytearray | memoryview):
                values.append(s.Value_Blob(bytes(p)))
            else:
                values.append(s.Value_Text(str(p)))
        try:
            result = self._conn.execute(sql, values)
        except Exception as exc:
            raise SpinCallError(f"SQLite database {self.name!r}: {_describe(exc)}") from None
        rows = [tuple(getattr(v, "value", None) for v in row.values) for row in result.rows]
        return list(result.columns), rows


class _Redis:
    def __init__(self, conn: Any, address: str) -> None:
        self._conn = conn
        self.address = address

    def publish(self, channel: str, payload: bytes) -> None:
        try:
            self._conn.publish(channel, payload)
        except Exception as exc:
            raise SpinCallError(f"Redis PUBLISH to {channel!r}: {_describe(exc)}") from None

    def execute(self, command: str, args: Sequence[bytes | int | str]) -> list[Any]:
        from spin_sdk.wit.imports import redis as r

        params = [
            r.RedisParameter_Int64(a) if isinstance(a, int) else r.RedisParameter_Binary(a if isinstance(a, bytes) else str(a).encode())
            for a in args
        ]
        try:
            results = self._conn.execute(command, params)
        except Exception as exc:
            raise SpinCallError(f"Redis {command}: {_describe(exc)}") from None
        return [getattr(x, "value", None) for x in results]


class _Mqtt:
    def __init__(self, conn: Any, address: str) -> None:
        self._conn = conn
        self.address = address

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        from spin_sdk.wit.imports.mqtt import Qos

        try:
            self._conn.publish(topic, payload, Qos(qos))
        except Exception as exc:
            raise SpinCallError(f"MQTT publish to {topic!r} at {self.address}: {_describe(exc)}") from None


class Platform:
    """The spin-sdk implementation (the one used inside a component)."""

    def __init__(self) -> None:
        self._variables: dict[str, str] | None = None  # this event's, from one get-all
        self._read = False

    def begin_event(self) -> None:
        """Forget what was read for the previous event (an instance may serve several)."""
        self._variables, self._read = None, False

    def variable(self, name: str) -> str | None:
        # An event reads several variables (flows, routes, configuration layers): one
        # wasi:config get-all gives them all for one host call instead of one call each.
        if not self._read:
            self._variables, self._read = self._all_variables(), True
        if self._variables is not None:
            return self._variables.get(name)
        from spin_sdk import variables  # get-all failed (a provider error): one by one

        try:
            return str(variables.get(name))
        except Exception:
            return None

    @staticmethod
    def _all_variables() -> dict[str, str] | None:
        from spin_sdk.wit.imports import wasi_config_store

        try:
            return {str(k): str(v) for k, v in wasi_config_store.get_all()}
        except Exception:
            return None

    def kv_open(self, label: str = "default") -> _KvStore:
        from spin_sdk import key_value

        try:
            return _KvStore(key_value.open(label), label)
        except Exception as exc:
            raise SpinCallError(
                f"cannot open the key-value store {label!r} ({_describe(exc)}); list it in the component's key_value_stores"
            ) from None

    def sqlite_open(self, name: str = "default") -> _Sqlite:
        from spin_sdk import sqlite

        try:
            return _Sqlite(sqlite.open(name), name)
        except Exception as exc:
            raise SpinCallError(
                f"cannot open the SQLite database {name!r} ({_describe(exc)}); list it in the component's sqlite_databases"
            ) from None

    def redis_open(self, address: str) -> _Redis:
        from spin_sdk import redis

        try:
            return _Redis(redis.open(address), address)
        except Exception as exc:
            raise SpinCallError(
                f"cannot connect to Redis at {address} ({_describe(exc)}); is it in allowed_outbound_hosts?"
            ) from None

    def mqtt_open(self, address: str, username: str = "", password: str = "", keep_alive: int = 30) -> _Mqtt:
        from spin_sdk.wit.imports.mqtt import Connection

        try:
            return _Mqtt(Connection.open(address, username, password, keep_alive), address)
        except Exception as exc:
            raise SpinCallError(
                f"cannot connect to the MQTT broker at {address} ({_describe(exc)}); is it in allowed_outbound_hosts?"
            ) from None

    def http_send(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> tuple[int, dict[str, str], bytes]:
        try:
            return _wasi_http_send(method, url, headers, body)
        except Exception as exc:
            raise SpinCallError(f"HTTP {method} {url}: {_describe(exc)} (is the host in allowed_outbound_hosts?)") from None

_current: Any = Platform()


def _wasi_http_send(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> tuple[int, dict[str, str], bytes]:
    """One outbound request over ``wasi:http/outgoing-handler`` with blocking calls.

    (spin-sdk's ``spin_sdk.http.send`` does the same through an asyncio event loop; asyncio and
    what it imports — sockets, subprocess, concurrent.futures — would be a megabyte or more of
    every component's snapshot for one request that never needs concurrency.)
    """
    from urllib.parse import urlsplit

    from spin_sdk.wit.imports import outgoing_handler
    from spin_sdk.wit.imports import types as t
    from spin_sdk.wit.types import Ok

    methods: dict[str, Callable[[], Any]] = {"GET": t.Method_Get, "HEAD": t.Method_Head, "POST": t.Method_Post, "PUT": t.Method_Put,
               "DELETE": t.Method_Delete, "CONNECT": t.Method_Connect, "OPTIONS": t.Method_Options,
               "TRACE": t.Method_Trace, "PATCH": t.Method_Patch}
    parts = urlsplit(url)
    fields = {k.lower(): str(v) for k, v in headers.items()}
    data = body or b""
    if body is not None and "content-length" not in fields:
        fields["content-length"] = str(len(data))
    request = t.OutgoingRequest(t.Fields.from_list([(k, v.encode("utf-8")) for k, v in fields.items()]))
    m = method.upper()
    request.set_method(methods[m]() if m in methods else t.Method_Other(method))
    scheme = parts.scheme.lower() or "http"
    request.set_scheme(t.Scheme_Http() if scheme == "http" else t.Scheme_Https() if scheme == "https"
                       else t.Scheme_Other(scheme))
    request.set_authority(parts.netloc or (":443" if scheme == "https" else ":80"))
    request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    out_body = request.body()
    future = outgoing_handler.handle(request, None)
    out = out_body.write()
    for i in range(0, len(data), 4096):  # the most one blocking-write-and-flush takes
        out.blocking_write_and_flush(data[i : i + 4096])
    out.__exit__(None, None, None)
    t.OutgoingBody.finish(out_body, None)
    while (answer := future.get()) is None:
        ready = future.subscribe()
        ready.block()
        ready.__exit__(None, None, None)
    future.__exit__(None, None, None)
    if not isinstance(answer, Ok):
        raise answer
    if not isinstance(answer.value, Ok):
        raise answer.value
    response = answer.value.value
    status = response.status()
    got = response.headers()
    out_headers = {name: bytes(value).decode("utf-8", "replace") for name, value in got.entries()}
    got.__exit__(None, None, None)
    in_body = response.consume()
    data = read_to_end(in_body.stream(), out_headers.get("content-length"))
    t.IncomingBody.finish(in_body).__exit__(None, None, None)  # no trailers wanted
    response.__exit__(None, None, None)
    return status, out_headers, data


def read_to_end(stream: Any, content_length: str | None = None, limit: int | None = None) -> bytes:
    """Everything a ``wasi:io`` input stream (a request's or a response's body) still holds;
    the stream is dropped after. With the body's ``content-length`` header given, the reading
    stops there instead of asking once more to learn that the stream is closed. With ``limit``,
    it stops as soon as more than ``limit`` bytes came (never asking for more than one byte past
    it) and raises :class:`BodyTooLarge`: a body without a length cannot fill the memory."""
    from spin_sdk.wit.imports.streams import StreamError_Closed
    from spin_sdk.wit.types import Err

    length = int(content_length) if content_length and content_length.isdigit() else None
    data = bytearray()
    try:
        while length is None or len(data) < length:
            want = 64 * 1024 if limit is None else min(64 * 1024, limit + 1 - len(data))
            try:
                data += stream.blocking_read(want)
            except Err as e:
                if isinstance(e.value, StreamError_Closed):
                    break
                raise
            if limit is not None and len(data) > limit:
                raise BodyTooLarge(limit)
    finally:
        stream.__exit__(None, None, None)
    return bytes(data)


def platform() -> Any:
    """The platform in use (spin-sdk inside a component)."""
    return _current


def use(impl: Any) -> Any:
    """Install another implementation (tests); returns the previous one."""
    global _current
    previous, _current = _current, impl
    return previous
