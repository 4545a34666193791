"""A local Spin 3 host for the built components, for tests and for machines without ``spin``.

Every trigger runs the component with the PyPI ``wasmtime`` package's component API (the
engine Spin itself uses, set up as Spin sets it up: :mod:`spin_app.engine`) and WASI written
as Python host functions (:mod:`spin_app.wasi_host`: the package's own WASI cannot hand a
component an incoming HTTP request).
``serve --engine node`` serves HTTP with the Node host in ``scripts/spin_host/serve.mjs``
(jco + preview2-shim) instead, which also logs each instance's memory size. All of them
provide the same Spin imports over the same files, so they can share a state directory:

==============================  =====================================================
``fermyon:spin/key-value``      ``<state>/key_value.json`` (``{label: {key: base64}}``)
``fermyon:spin/sqlite``         ``<state>/sqlite_db.db`` (``default``), ``<state>/<name>.db``
``fermyon:spin/redis``          a real Redis server (redis-py)
``fermyon:spin/mqtt``           a real MQTT broker (paho-mqtt; ``mqtt://`` / ``mqtts://``)
``fermyon:spin/variables``      ``variables=`` / ``--var``, ``SPIN_VARIABLE_<NAME>`` env
``wasi:config/store``           the same variables
``wasi:http/outgoing-handler``  real outbound requests (wasmtime's WASI HTTP; urllib for HTTP)
anything else                   traps when called
==============================  =====================================================

Like Spin, every event gets a fresh instance of the component. By default a finished
instance's pool slot is reset on a thread of its own after the answer went out
(``deferred_reset``); ``deferred_reset=False`` (``--spin-like``) drops it where it ran,
before the next event is taken, as Spin drops an instance at the end of its event.

Command line::

    python -m spin_app.host serve build/spin/http.wasm --port 3000 [--var name=value ...] [--engine node]
    python -m spin_app.host cron  build/spin/cron.wasm [--every 10] [--count N]
    python -m spin_app.host redis build/spin/redis.wasm --channel orders-in [--address redis://127.0.0.1:6379]
    python -m spin_app.host mqtt  build/spin/mqtt.wasm --topic 'sensors/#' [--address mqtt://127.0.0.1:1883]
    python -m spin_app.host message build/spin/mqtt.wasm --topic sensors/a --payload '{"records": []}'

``wasmtime``, ``redis`` and ``paho-mqtt`` are imported lazily (``scripts/spin-setup`` installs them).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spin_app.engine import EngineSettings, engine_for, reaper

__all__ = ["ComponentHost", "GuestError", "HttpHost", "SpinState", "main"]

ROOT = Path(__file__).resolve().parent.parent
SERVE_JS = ROOT / "scripts" / "spin_host" / "serve.mjs"

_KV, _REDIS, _SQLITE, _MQTT = 1, 2, 3, 4  # host resource type ids


class GuestError(RuntimeError):
    """The component returned an error (``err`` of its export) or trapped."""

    def __init__(self, message: str, *, trapped: bool = False, stdout: str = "") -> None:
        super().__init__(message)
        self.trapped = trapped
        self.stdout = stdout


def default_cache_dir() -> str:
    """Where compiled components are kept (by content hash and wasmtime version), shared by
    every host on the machine: ``ADF_WASMTIME_CACHE``, else ``$XDG_CACHE_HOME/adf/wasmtime``."""
    explicit = os.environ.get("ADF_WASMTIME_CACHE")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "adf", "wasmtime")


def _import_wasmtime() -> Any:
    try:
        import wasmtime
        import wasmtime.component
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError("the local Spin host needs the 'wasmtime' package: run scripts/spin-setup") from exc
    return wasmtime


# --------------------------------------------------------------------------- host state


def load_variables(variables: Mapping[str, str] | None = None, vars_file: str | None = None,
                   env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Spin variables: ``SPIN_VARIABLE_<NAME>`` environment, then a JSON file, then ``variables``."""
    env = os.environ if env is None else env
    out = {k[len("SPIN_VARIABLE_"):].lower(): v for k, v in env.items() if k.startswith("SPIN_VARIABLE_")}
    if vars_file and os.path.exists(vars_file):
        with open(vars_file, encoding="utf-8") as f:
            out.update({str(k): str(v) for k, v in json.load(f).items()})
    out.update({str(k): str(v) for k, v in (variables or {}).items()})
    return out


@dataclass
class SpinState:
    """What the Spin imports work on: files under ``state_dir``, variables, Redis."""

    state_dir: str = ".spin"
    variables: dict[str, str] = field(default_factory=dict)
    kv_labels: Sequence[str] | None = None  # None: any label
    sqlite_databases: Sequence[str] | None = None

    def __post_init__(self) -> None:
        self.state_dir = os.path.abspath(self.state_dir)
        os.makedirs(self.state_dir, exist_ok=True)
        self._lock = threading.RLock()
        self._redis: dict[str, Any] = {}
        self._mqtt: dict[tuple[str, str, str], Any] = {}
        self._kv_cache: tuple[tuple[int, int, int], dict[str, dict[str, str]]] | None = None

    # -- key-value (same JSON file as the Node host) ----------------------------------

    @property
    def kv_file(self) -> str:
        return os.path.join(self.state_dir, "key_value.json")

    def _kv_read(self) -> dict[str, dict[str, str]]:
        """The file's contents, parsed again only when the file changed (another host may write it)."""
        try:
            st = os.stat(self.kv_file)
        except FileNotFoundError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._kv_cache
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            with open(self.kv_file, encoding="utf-8") as f:
                data = json.loads(f.read() or "{}")
        except FileNotFoundError:
            return {}
        self._kv_cache = (stamp, data)
        return data  # type: ignore[no-any-return]

    def kv_load(self) -> dict[str, dict[str, str]]:
        """A copy of the store's contents (``{label: {key: base64}}``) to change and save."""
        return {label: dict(keys) for label, keys in self._kv_read().items()}

    def kv_save(self, data: Mapping[str, Any]) -> None:
        tmp = f"{self.kv_file}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, self.kv_file)

    def kv_get(self, label: str, key: str) -> bytes | None:
        value = self._kv_read().get(label, {}).get(key)
        return None if value is None else base64.b64decode(value)

    def kv_set(self, label: str, key: str, value: bytes) -> None:
        with self._lock:
            data = self.kv_load()
            data.setdefault(label, {})[key] = base64.b64encode(bytes(value)).decode()
            self.kv_save(data)

    def kv_delete(self, label: str, key: str) -> None:
        with self._lock:
            data = self.kv_load()
            if data.get(label, {}).pop(key, None) is not None:
                self.kv_save(data)

    def kv_keys(self, label: str) -> list[str]:
        return list(self._kv_read().get(label, {}))

    # -- sqlite ---------------------------------------------------------------------

    def sqlite_path(self, name: str) -> str:
        return os.path.join(self.state_dir, "sqlite_db.db" if name == "default" else f"{name}.db")

    def sqlite_connect(self, name: str) -> sqlite3.Connection:
        conn = sqlite3.connect(self.sqlite_path(name), timeout=30, isolation_level=None, check_same_thread=False)
        return conn

    # -- redis ----------------------------------------------------------------------

    def redis(self, address: str) -> Any:
        with self._lock:
            client = self._redis.get(address)
            if client is None:
                import redis

                client = redis.Redis.from_url(address, socket_connect_timeout=5)
                client.ping()
                self._redis[address] = client
            return client

    # -- outbound MQTT ---------------------------------------------------------------

    def mqtt(self, address: str, username: str = "", password: str = "", keep_alive: int = 30) -> Any:
        """A connected paho-mqtt client for ``mqtt://host[:port]`` (``mqtts://``: TLS), one per
        address and credentials, kept for the host's life (Spin keeps its connections too)."""
        from urllib.parse import urlsplit

        key = (address, username, password)
        with self._lock:
            client = self._mqtt.get(key)
            if client is not None:
                return client
            import paho.mqtt.client as paho
            from paho.mqtt.enums import CallbackAPIVersion

            parts = urlsplit(address)
            if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
                raise ValueError(f"not an mqtt:// address: {address!r}")
            client = paho.Client(CallbackAPIVersion.VERSION2,
                                 client_id=f"adf-spin-out-{os.getpid()}-{len(self._mqtt)}-{os.urandom(3).hex()}")
            if username or password:
                client.username_pw_set(username, password)
            if parts.scheme == "mqtts":
                client.tls_set()
            connected = threading.Event()
            outcome: list[Any] = []

            def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
                outcome.append(reason)
                connected.set()

            client.on_connect = on_connect
            client.connect(parts.hostname, parts.port or (8883 if parts.scheme == "mqtts" else 1883),
                           keepalive=max(int(keep_alive), 1) if keep_alive else 60)
            client.loop_start()
            if not connected.wait(10) or getattr(outcome[0], "is_failure", False):
                client.loop_stop()
                raise ConnectionError(f"the broker at {address} refused the connection: {outcome[:1] or 'no answer'}")
            self._mqtt[key] = client
            return client

    def close(self) -> None:
        for client in self._redis.values():
            with contextlib.suppress(Exception):
                client.close()
        self._redis.clear()
        for client in self._mqtt.values():
            with contextlib.suppress(Exception):
                client.disconnect()
                client.loop_stop()
        self._mqtt.clear()


# --------------------------------------------------------------------------- the wasmtime host


class _Table:
    """Host resources by rep (an int handed to the guest)."""

    def __init__(self) -> None:
        self.items: dict[int, Any] = {}
        self.next = 1

    def add(self, item: Any) -> int:
        rep = self.next
        self.next += 1
        self.items[rep] = item
        return rep

    def get(self, rep: int) -> Any:
        return self.items[rep]

    def drop(self, rep: int) -> None:
        item = self.items.pop(rep, None)
        close = getattr(item, "close", None)
        if close is not None and not isinstance(item, str):
            with contextlib.suppress(Exception):
                close()


class ComponentHost:
    """Runs a component with wasmtime: HTTP requests, cron, Redis and MQTT events.

    WASI is :mod:`spin_app.wasi_host` (in Python: the only way to hand a component an incoming
    HTTP request); ``python_wasi=False`` uses wasmtime's own instead, for the other triggers.
    The engine is set up as Spin sets up its own (:mod:`spin_app.engine`: the pooling
    allocator, ``SPIN_WASMTIME_*`` variables); with Python's WASI, a finished instance is
    dropped (its pool slot reset) on the :data:`~spin_app.engine.reaper`'s thread. (Stores
    with wasmtime's own WASI are dropped where they ran: dropped on another thread, its
    tokio-based streams made the process abort at exit now and then.)

    The compiled component is cached in ``cache_dir`` (default :func:`default_cache_dir`, by
    content hash), so only the first host on a machine pays for compiling it.
    """

    def __init__(
        self,
        wasm: str | os.PathLike[str],
        *,
        state: SpinState | None = None,
        env: Mapping[str, str] | None = None,
        dirs: Mapping[str, str] | None = None,
        cache_dir: str | None = None,
        echo_stdout: bool = False,
        memory_limit: int | None = None,
        python_wasi: bool = True,
        on_line: Callable[[str], None] | None = None,
        engine_settings: EngineSettings | None = None,
        deferred_reset: bool = True,
    ) -> None:
        wt = _import_wasmtime()
        #: True: a finished instance is dropped (its pool slot reset) on the reaper's thread,
        #: after the answer; False: where it ran, before the next event (as in Spin)
        self.deferred_reset = deferred_reset
        self.on_line = on_line
        self._wt = wt
        self.wasm = str(wasm)
        self.state = state or SpinState()
        self.env = dict(env or {})
        self.dirs = dict(dirs or {})
        self.echo_stdout = echo_stdout
        self._http_handlers: list[str] | None = None
        self.memory_limit = memory_limit
        self.stdout_lines: list[str] = []
        self.engine, self.engine_settings = engine_for(wt, engine_settings or EngineSettings.from_env())
        self.component = self._load(cache_dir or default_cache_dir())
        self.linker = wt.component.Linker(self.engine)
        self.python_wasi = python_wasi
        self.wasi: Any = None
        if python_wasi:  # WASI in Python host functions: the host can hand the component HTTP requests
            from spin_app.wasi_host import PythonWasi

            self.wasi = PythonWasi(wt, self.engine, self.component)
            self.wasi.define(self.linker)
        else:
            self.linker.add_wasip2()
            self.linker.add_wasi_http()
        self._tables = {_KV: _Table(), _REDIS: _Table(), _SQLITE: _Table(), _MQTT: _Table()}
        self._define_spin_imports()
        self._define_stubs()

    def _load(self, cache_dir: str) -> Any:
        wt = self._wt
        data = Path(self.wasm).read_bytes()
        version = getattr(wt, "__version__", "") or _wasmtime_version()
        # compiled code depends on how the engine lays memories out (pooled or not, their size)
        settings = self.engine_settings
        engine_key = f"pooling={settings.pooling},max_memory={settings.max_memory_size}"
        key = hashlib.sha256(data + version.encode() + engine_key.encode()).hexdigest()[:24]
        cached = os.path.join(cache_dir, f"{key}.cwasm")
        if os.path.exists(cached):
            with contextlib.suppress(Exception):
                return wt.component.Component.deserialize_file(self.engine, cached)
        component = wt.component.Component(self.engine, data)
        with contextlib.suppress(OSError):
            os.makedirs(cache_dir, exist_ok=True)
            tmp = f"{cached}.{os.getpid()}.tmp"
            Path(tmp).write_bytes(bytes(component.serialize()))
            os.replace(tmp, cached)
        return component

    # -- the Spin imports ----------------------------------------------------------------

    def _define_spin_imports(self) -> None:  # noqa: C901
        wt = self._wt
        Variant, ResourceHost, ResourceType = wt.component.Variant, wt.component.ResourceHost, wt.component.ResourceType
        state = self.state
        tables = self._tables
        root = self.linker.root()

        def rep(store: Any, res: Any) -> int:
            return int(res.to_host(store).rep)

        def drop(kind: int) -> Callable[[Any, int], None]:
            return lambda store, r: tables[kind].drop(r)

        def record(**kw: Any) -> Any:
            r = wt.component.Record()
            for k, v in kw.items():
                setattr(r, k, v)
            return r

        with root:
            # fermyon:spin/key-value@2.0.0
            with root.add_instance("fermyon:spin/key-value@2.0.0") as kv:
                kv.add_resource("store", ResourceType.host(_KV), drop(_KV))

                def kv_open(store: Any, label: str) -> Any:
                    if state.kv_labels is not None and label not in state.kv_labels:
                        return Variant("no-such-store")
                    return ResourceHost.own(tables[_KV].add(label), _KV)

                kv.add_func("[static]store.open", kv_open)
                kv.add_func("[method]store.get", lambda s, r, k: state.kv_get(tables[_KV].get(rep(s, r)), k))
                kv.add_func("[method]store.set", lambda s, r, k, v: state.kv_set(tables[_KV].get(rep(s, r)), k, bytes(v)))
                kv.add_func("[method]store.delete", lambda s, r, k: state.kv_delete(tables[_KV].get(rep(s, r)), k))
                kv.add_func("[method]store.exists",
                            lambda s, r, k: state.kv_get(tables[_KV].get(rep(s, r)), k) is not None)
                kv.add_func("[method]store.get-keys", lambda s, r: state.kv_keys(tables[_KV].get(rep(s, r))))

            # fermyon:spin/variables@2.0.0
            with root.add_instance("fermyon:spin/variables@2.0.0") as var:

                def var_get(store: Any, name: str) -> Any:
                    if not name or not all(c.islower() or c.isdigit() or c == "_" for c in name):
                        return Variant("invalid-name", f"invalid variable name {name!r}")
                    if name not in state.variables:
                        return Variant("undefined", f"no variable for {name!r}")
                    return state.variables[name]

                var.add_func("get", var_get)

            with root.add_instance("wasi:config/store@0.2.0-draft-2024-09-27") as cfg:
                cfg.add_func("get", lambda s, key: state.variables.get(key))
                cfg.add_func("get-all", lambda s: [(k, v) for k, v in state.variables.items()])

            # fermyon:spin/redis@2.0.0
            with root.add_instance("fermyon:spin/redis@2.0.0") as rd:
                rd.add_resource("connection", ResourceType.host(_REDIS), drop(_REDIS))

                def rd_open(store: Any, address: str) -> Any:
                    if not address.startswith(("redis://", "rediss://")):
                        return Variant("invalid-address")
                    try:
                        state.redis(address)
                    except Exception as exc:
                        return Variant("other", f"{type(exc).__name__}: {exc}")
                    return ResourceHost.own(tables[_REDIS].add(address), _REDIS)

                def rd_call(fn: Callable[..., Any]) -> Callable[..., Any]:
                    def call(store: Any, res: Any, *args: Any) -> Any:
                        client = state.redis(tables[_REDIS].get(rep(store, res)))
                        try:
                            return fn(client, *args)
                        except Exception as exc:
                            return Variant("other", f"{type(exc).__name__}: {exc}")

                    return call

                def flatten(value: Any, out: list[Any]) -> list[Any]:
                    if value is None:
                        out.append(None)
                    elif isinstance(value, bool):
                        out.append(int(value))
                    elif isinstance(value, int):
                        out.append(value)
                    elif isinstance(value, bytes):
                        out.append(value)
                    elif isinstance(value, str):
                        out.append(value)
                    elif isinstance(value, list | tuple):
                        for v in value:
                            flatten(v, out)
                    else:
                        out.append(str(value))
                    return out

                rd.add_func("[static]connection.open", rd_open)
                rd.add_func("[method]connection.publish", rd_call(lambda c, ch, p: (c.publish(ch, bytes(p)), None)[1]))
                rd.add_func("[method]connection.get", lambda s, r, k: state.redis(tables[_REDIS].get(rep(s, r))).get(k))
                rd.add_func("[method]connection.set", rd_call(lambda c, k, v: (c.set(k, bytes(v)), None)[1]))
                rd.add_func("[method]connection.incr", rd_call(lambda c, k: int(c.incr(k))))
                rd.add_func("[method]connection.del", rd_call(lambda c, keys: int(c.delete(*keys)) if keys else 0))
                rd.add_func("[method]connection.sadd", rd_call(lambda c, k, vs: int(c.sadd(k, *vs)) if vs else 0))
                rd.add_func("[method]connection.smembers",
                            rd_call(lambda c, k: sorted(m.decode() if isinstance(m, bytes) else str(m) for m in c.smembers(k))))
                rd.add_func("[method]connection.srem", rd_call(lambda c, k, vs: int(c.srem(k, *vs)) if vs else 0))
                rd.add_func("[method]connection.execute",
                            rd_call(lambda c, cmd, args: flatten(c.execute_command(cmd, *[a if isinstance(a, bytes) else str(a) for a in args]), [])))

            # fermyon:spin/sqlite@2.0.0
            with root.add_instance("fermyon:spin/sqlite@2.0.0") as sq:
                sq.add_resource("connection", ResourceType.host(_SQLITE), drop(_SQLITE))

                def sq_open(store: Any, name: str) -> Any:
                    if state.sqlite_databases is not None and name not in state.sqlite_databases:
                        return Variant("no-such-database")
                    try:
                        conn = state.sqlite_connect(name)
                    except Exception as exc:
                        return Variant("io", str(exc))
                    return ResourceHost.own(tables[_SQLITE].add(conn), _SQLITE)

                def sq_execute(store: Any, res: Any, statement: str, params: list[Any]) -> Any:
                    conn = tables[_SQLITE].get(rep(store, res))
                    try:
                        cur = conn.execute(statement, [bytes(p) if isinstance(p, bytes | bytearray) else p for p in params])
                        columns = [d[0] for d in cur.description or []]
                        rows = [record(values=[_sql_value(v) for v in row]) for row in cur.fetchall()]
                    except Exception as exc:
                        return Variant("io", str(exc))
                    return record(columns=columns, rows=rows)

                sq.add_func("[static]connection.open", sq_open)
                sq.add_func("[method]connection.execute", sq_execute)

            # fermyon:spin/mqtt@2.0.0 (outbound MQTT): a real broker through paho-mqtt
            with root.add_instance("fermyon:spin/mqtt@2.0.0") as mq:
                mq.add_resource("connection", ResourceType.host(_MQTT), drop(_MQTT))

                def mq_open(store: Any, address: str, username: str, password: str, keep_alive: int) -> Any:
                    if not address.startswith(("mqtt://", "mqtts://")):
                        return Variant("invalid-address")
                    try:
                        state.mqtt(address, username, password, keep_alive)
                    except Exception as exc:
                        return Variant("connection-failed", f"{type(exc).__name__}: {exc}")
                    return ResourceHost.own(tables[_MQTT].add((address, username, password, keep_alive)), _MQTT)

                def mq_publish(store: Any, res: Any, topic: str, payload: Any, qos: Any) -> Any:
                    try:
                        client = state.mqtt(*tables[_MQTT].get(rep(store, res)))
                        info = client.publish(topic, bytes(payload), qos=_qos(qos))
                        if info.rc != 0:
                            return Variant("other", f"publish failed (paho rc {info.rc})")
                        if _qos(qos) > 0:
                            info.wait_for_publish(10)  # the broker acknowledged it
                            if not info.is_published():
                                return Variant("other", "the broker did not acknowledge the message in 10 s")
                    except Exception as exc:
                        return Variant("other", f"{type(exc).__name__}: {exc}")
                    return None

                mq.add_func("[static]connection.open", mq_open)
                mq.add_func("[method]connection.publish", mq_publish)

    _PROVIDED = (
        "wasi:cli/", "wasi:clocks/", "wasi:filesystem/", "wasi:io/", "wasi:random/", "wasi:sockets/",
        "wasi:http/", "fermyon:spin/key-value@", "fermyon:spin/variables@", "fermyon:spin/redis@",
        "fermyon:spin/sqlite@", "wasi:config/store@", "fermyon:spin/mqtt@",
    )

    def _define_stubs(self) -> None:
        """Every other import (LLM, PostgreSQL, MySQL...) fails when called.

        (``Linker.define_unknown_imports_as_traps`` would also shadow the WASI imports the
        linker matches by semver, so the stubs are defined from the component's own types.)
        """
        wt = self._wt
        comp = wt.component
        seen: list[tuple[Any, int]] = []  # (the component's resource type, our host type id)

        def host_type(rty: Any) -> int:
            for other, tid in seen:
                if other == rty:  # a resource `use`d from another interface: the same type
                    return tid
            seen.append((rty, 100 + len(seen)))
            return seen[-1][1]

        with self.linker.root() as root:
            for name, item in self.component.type.imports(self.engine).items():
                if name.startswith(self._PROVIDED):
                    continue
                ty = item.ty
                if not isinstance(ty, comp.ComponentInstanceType):
                    continue
                with root.add_instance(name) as inst:
                    for export, ext in ty.exports(self.engine).items():
                        ety = ext.ty
                        if isinstance(ety, comp.ResourceType):
                            inst.add_resource(export, comp.ResourceType.host(host_type(ety)), lambda store, rep: None)
                        elif isinstance(ety, comp.FuncType):
                            inst.add_func(export, _trap(f"{name}#{export}"))

    # -- running ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def instance(self) -> Iterator[tuple[Any, Any]]:
        """A fresh store and instance (one per event, as in Spin)."""
        wt = self._wt
        store = wt.Store(self.engine)
        if self.memory_limit:
            store.set_limits(memory_size=self.memory_limit)
        lines = self.stdout_lines
        pending = [""]

        def out(data: bytes) -> None:
            text = bytes(data).decode("utf-8", "replace")
            *done, pending[0] = (pending[0] + text).split("\n")
            lines.extend(line for line in done if line)
            if self.on_line is not None:
                for line in done:
                    if line:
                        self.on_line(line)
            if self.echo_stdout:
                sys.stdout.write(text)
                sys.stdout.flush()

        if self.wasi is not None:
            from spin_app.wasi_host import WasiState

            self.wasi.current = WasiState(env=self.env, stdout=out, stderr=out, preopens=self.dirs)
        else:
            wasi = wt.WasiConfig()
            wasi.env = list(self.env.items())
            wasi.argv = ["spin-component"]
            wasi.stdout_custom = out
            wasi.stderr_custom = out
            for host_dir, guest_dir in self.dirs.items():
                wasi.preopen_dir(host_dir, guest_dir, False)
            store.set_wasi(wasi)
            store.set_wasi_http()
        try:
            instance = self.linker.instantiate(store, self.component)
            yield store, instance
        finally:
            if self.wasi is not None:
                self.wasi.current = None
            for table in self._tables.values():
                for r in list(table.items):
                    table.drop(r)
            # dropping the store resets its pool slot: after the answer, on the reaper's thread
            # (deferred_reset), else here, before the next event (as Spin drops an instance)
            deferred = self.wasi is not None and self.deferred_reset
            reaper.drop(store, self.engine_settings.spare_slots if deferred else 0)

    def _export(self, store: Any, instance: Any, names: Sequence[str]) -> Any:
        """The first of ``names`` (``func`` or ``interface#func``) the instance exports."""
        for name in names:
            if "#" in name:
                iface, fname = name.split("#", 1)
                idx = instance.get_export_index(store, iface)
                fidx = instance.get_export_index(store, fname, idx) if idx is not None else None
                func = instance.get_func(store, fidx) if fidx is not None else None
            else:
                func = instance.get_func(store, name)
            if func is not None:
                return func
        raise GuestError(f"{self.wasm} exports none of {', '.join(names)}")

    def _run(self, store: Any, func: Any, args: Sequence[Any], start: int) -> Any:
        """Call an export; a trap (or a host function's trap) becomes a :class:`GuestError`."""
        from spin_app.wasi_host import WasiTrap

        try:
            result = func(store, *args)
            func.post_return(store)
        except (self._wt.WasmtimeError, WasiTrap) as exc:
            raise GuestError(f"the component trapped: {exc}", trapped=True,
                             stdout="\n".join(self.stdout_lines[start:])) from exc
        return result

    def _call(self, names: Sequence[str], *args: Any) -> None:
        start = len(self.stdout_lines)
        with self.instance() as (store, instance):
            result = self._run(store, self._export(store, instance, names), args, start)
        if result is not None:
            payload = getattr(result, "payload", result)
            tag = getattr(result, "tag", None)
            message = payload if isinstance(payload, str) else (tag or str(payload))
            raise GuestError(str(message), stdout="\n".join(self.stdout_lines[start:]))

    def http(self, request: Any, on_response: Callable[[Any], None]) -> None:
        """Hand ``request`` (a :class:`spin_app.wasi_host.IncomingRequest`) to the component's
        ``wasi:http/incoming-handler#handle`` in a fresh instance. ``on_response`` gets
        ``Ok(OutgoingResponse)`` (or ``Err(error-code)``) when the component sets its answer;
        call its ``attach(write, finish)`` to receive the body. Needs ``python_wasi=True``."""
        if self.wasi is None:
            raise RuntimeError("serving HTTP needs ComponentHost(python_wasi=True)")
        from spin_app.wasi_host import ResponseOutparam

        wt = self._wt
        ids = self.wasi.resource_ids
        start = len(self.stdout_lines)
        handlers = self._http_handlers
        if handlers is None:  # the component's exports are the same for every request
            handlers = self._http_handlers = [
                f"{name}#handle" for name in self.component.type.exports(self.engine)
                if name.startswith("wasi:http/incoming-handler@")] or ["wasi:http/incoming-handler#handle"]
        with self.instance() as (store, instance):
            state = self.wasi.current
            func = self._export(store, instance, handlers)
            req = wt.component.ResourceHost.own(state.add(request), ids[("wasi:http/types", "incoming-request")])
            out = wt.component.ResourceHost.own(state.add(ResponseOutparam(on_response)),
                                                ids[("wasi:http/types", "response-outparam")])
            self._run(store, func, (req, out), start)

    def cron(self, timestamp: int | None = None) -> None:
        """Deliver a cron tick (``handle-cron-event``)."""
        ts = int(time.time()) if timestamp is None else int(timestamp)
        meta = self._wt.component.Record()
        meta.timestamp = ts
        self._call(["handle-cron-event"], meta)

    def mqtt(self, payload: bytes, topic: str) -> None:
        """Deliver an MQTT message (``handle-message(payload, {topic})``)."""
        meta = self._wt.component.Record()
        meta.topic = topic
        self._call(["handle-message"], bytes(payload), meta)

    def redis(self, payload: bytes) -> None:
        """Deliver a Redis message (``fermyon:spin/inbound-redis#handle-message``)."""
        self._call(["fermyon:spin/inbound-redis#handle-message", "fermyon:spin/inbound-redis@2.0.0#handle-message"],
                   bytes(payload))

    def close(self) -> None:
        reaper.wait()
        self.state.close()


def _trap(what: str) -> Callable[..., Any]:
    def fail(*args: Any) -> Any:
        raise RuntimeError(f"{what} is not provided by the local Spin host")

    return fail


def _qos(value: Any) -> int:
    """The WIT ``qos`` enum as the host gets it (its case name, or an index) → 0, 1, 2."""
    if isinstance(value, int):
        return value
    return {"at-most-once": 0, "at-least-once": 1, "exactly-once": 2}.get(str(value), 1)


def _sql_value(v: Any) -> Any:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, memoryview):
        return bytes(v)
    return v


def _wasmtime_version() -> str:
    try:
        from importlib.metadata import version

        return version("wasmtime")
    except Exception:
        return "?"


# --------------------------------------------------------------------------- the HTTP host (Node)


class WasmtimeHttpServer:
    """Serves an HTTP component with wasmtime (:class:`ComponentHost` with ``python_wasi``):
    every request gets a fresh instance, as in Spin; requests are handled one at a time.

    Each request is logged as one JSON line (``logger: spin.host``: request id, method,
    path, status, duration; ``memory_bytes`` is null — the wasmtime package cannot read a
    component's memory; the Node engine reports it). A trap before the component answered
    gives a 500 with ``{error, error_id}``; after the headers went out, the connection is
    closed mid-body.
    """

    def __init__(
        self,
        wasm: str | os.PathLike[str],
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        state_dir: str = ".spin",
        variables: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        dirs: Mapping[str, str] | None = None,
        memory_limit: int | None = None,
        emit: Callable[[str], None] | None = None,
        engine_settings: EngineSettings | None = None,
        deferred_reset: bool = True,
    ) -> None:
        self.component = ComponentHost(
            wasm, state=SpinState(state_dir, load_variables(variables)), env=env,
            dirs={os.path.abspath(h): g for h, g in (dirs or {}).items()}, memory_limit=memory_limit,
            python_wasi=True, on_line=emit, engine_settings=engine_settings, deferred_reset=deferred_reset,
        )
        self.emit = emit or (lambda line: None)
        self.bind = (host, port)
        self.url = ""
        self._server: Any = None
        from concurrent.futures import ThreadPoolExecutor

        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spin-wasmtime")

    def start(self) -> WasmtimeHttpServer:
        import http.server

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # the headers and the body go out as separate writes: with Nagle's algorithm on, a
            # kept-alive connection waits for the client's delayed ACK (~40 ms) between them
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                # one long-lived thread runs every instance: wasmtime sets itself up per thread
                # (~6 ms measured), and requests are handled one at a time anyway
                outer._worker.submit(outer.handle, self).result()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _any

        self._server = http.server.ThreadingHTTPServer(self.bind, Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        threading.Thread(target=self._server.serve_forever, name="spin-wasmtime-http", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._worker.shutdown(wait=True)
        self.component.close()

    def handle(self, h: Any) -> None:
        """One request: read it, run the component, stream its answer, log a line."""
        from spin_app.wasi_host import Err, IncomingRequest

        started = time.perf_counter()
        request_id = h.headers.get("x-request-id") or os.urandom(8).hex()
        body = _read_request_body(h)
        headers = [(k.lower(), v.encode("latin-1")) for k, v in h.headers.items()]
        request = IncomingRequest(h.command, h.path, headers, body, authority=h.headers.get("host"))
        sent: dict[str, Any] = {}

        def on_response(result: Any) -> None:
            if isinstance(result, Err):
                sent["status"] = _send_error(h, 500, f"the component answered with an error: {result.value}")
                return
            response = result.value
            names = {k for k, _ in response.headers.entries}
            given = response.headers.get("x-request-id")
            if given:
                sent["request_id"] = given[0].decode("latin-1")
            chunked = "content-length" not in names and h.command != "HEAD"
            h.send_response(response.status)
            for k, v in response.headers.entries:
                h.send_header(k, v.decode("latin-1"))
            if chunked:
                h.send_header("transfer-encoding", "chunked")
            h.end_headers()
            sent["status"] = response.status

            def write(data: bytes) -> None:
                if h.command == "HEAD":
                    return
                h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                h.wfile.flush()

            def finish() -> None:
                if chunked:
                    h.wfile.write(b"0\r\n\r\n")
                h.wfile.flush()
                sent["finished"] = True

            response.attach(write, finish)

        error = None
        try:
            self.component.http(request, on_response)
            if "status" not in sent:
                error = "the component returned without an answer"
        except GuestError as exc:
            error = str(exc)
        except OSError as exc:  # the client went away
            error = f"{type(exc).__name__}: {exc}"
        if error is not None and "status" not in sent:
            sent["status"] = _send_error(h, 500, error)
        elif error is not None or (sent.get("status") and "finished" not in sent and h.command != "HEAD"):
            h.close_connection = True
        self.component.stdout_lines.clear()  # emitted as they came; a server must not keep them
        self.emit(json.dumps({
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "level": "error" if error else "info",
            "logger": "spin.host", "msg": "request", "request_id": sent.get("request_id", request_id), "method": h.command,
            "path": h.path, "status": sent.get("status"), "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "memory_bytes": None, "instance": "fresh", "engine": "wasmtime", **({"error": error} if error else {}),
        }))


def _read_request_body(h: Any) -> bytes:
    if "chunked" in (h.headers.get("transfer-encoding") or "").lower():
        data = bytearray()
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(data)
            data += h.rfile.read(size)
            h.rfile.readline()
    length = int(h.headers.get("content-length") or 0)
    return h.rfile.read(length) if length else b""


def _send_error(h: Any, status: int, message: str) -> int:
    """The host's own error answer, in the handlers' one error shape."""
    from core.ids import new_id
    from handlers.http import error_response

    response = error_response(status, message, error_id=new_id(12))
    payload = response.encoded()
    h.send_response(status)
    for k, v in response.headers.items():
        h.send_header(k, v)
    h.send_header("content-length", str(len(payload)))
    h.end_headers()
    h.wfile.write(payload)
    h.wfile.flush()
    return status


class HttpHost:
    """Serve an HTTP component locally: start, wait until it listens, stop.

    ``engine="wasmtime"`` (the default) runs it in this process with wasmtime — the engine
    Spin uses — and WASI in Python (:mod:`spin_app.wasi_host`), a fresh instance per request;
    ``engine="node"`` runs ``scripts/spin_host/serve.mjs`` (jco + preview2-shim) as a
    subprocess, which also reports each instance's memory size and can reuse one instance.

    ::

        with HttpHost("build/spin/http.wasm", state_dir=tmp, variables={"x": "1"}) as host:
            urllib.request.urlopen(host.url + "/flows/orders")
    """

    def __init__(
        self,
        wasm: str | os.PathLike[str],
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        state_dir: str = ".spin",
        variables: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        dirs: Mapping[str, str] | None = None,
        reuse_instance: bool = False,
        node: str | None = None,
        log: str | None = None,
        engine: str = "wasmtime",
        memory_limit: int | None = None,
        engine_settings: EngineSettings | None = None,
        deferred_reset: bool = True,
    ) -> None:
        if engine not in ("wasmtime", "node"):
            raise ValueError(f"engine must be 'wasmtime' or 'node', got {engine!r}")
        if engine == "wasmtime" and reuse_instance:
            raise ValueError("reuse_instance is a Node-engine option (the wasmtime engine starts each request afresh)")
        self.engine = engine
        self.memory_limit = memory_limit
        self.engine_settings = engine_settings
        self.deferred_reset = deferred_reset
        self._wasmtime: WasmtimeHttpServer | None = None
        self.wasm = os.path.abspath(wasm)  # node runs from the project root
        self.port = port
        self.host = host
        self.state_dir = state_dir
        self.variables = dict(variables or {})
        self.env = dict(env or {})
        self.dirs = dict(dirs or {})
        self.reuse_instance = reuse_instance
        self.node = node or shutil.which("node") or "node"
        self.log = log
        self.url = ""
        self.ready_ms: float | None = None
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def command(self) -> list[str]:
        cmd = [self.node, str(SERVE_JS), self.wasm, "--port", str(self.port), "--host", self.host,
               "--state-dir", os.path.abspath(self.state_dir)]
        for k, v in self.variables.items():
            cmd += ["--var", f"{k}={v}"]
        for k, v in self.env.items():
            cmd += ["--env", f"{k}={v}"]
        for h, g in self.dirs.items():
            cmd += ["--dir", f"{os.path.abspath(h)}:{g}"]
        if self.reuse_instance:
            cmd.append("--reuse-instance")
        return cmd

    def start(self, timeout: float = 120.0) -> HttpHost:
        if self.engine == "wasmtime":
            return self._start_wasmtime()
        if not (ROOT / "node_modules" / "@bytecodealliance" / "jco").is_dir():
            raise RuntimeError("the Node packages of the Spin host are missing: run scripts/spin-setup (npm ci)")
        self.proc = subprocess.Popen(
            self.command(), cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            sink = open(self.log, "a", encoding="utf-8") if self.log else None
            try:
                for line in self.proc.stdout:
                    self.output.append(line.rstrip("\n"))
                    if sink:
                        sink.write(line)
                        sink.flush()
                    if not ready.is_set() and line.startswith('{"event":"listening"'):
                        info = json.loads(line)
                        self.url = info["url"]
                        self.ready_ms = info.get("ready_ms")
                        ready.set()
            finally:
                if sink:
                    sink.close()

        threading.Thread(target=pump, name="spin-http-host", daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Spin HTTP host did not start:\n" + "\n".join(self.output[-40:]))
        return self

    def _start_wasmtime(self) -> HttpHost:
        t0 = time.perf_counter()
        sink = open(self.log, "a", encoding="utf-8") if self.log else None
        self._log_sink = sink

        def emit(line: str) -> None:
            self.output.append(line)
            if sink is not None:
                sink.write(line + "\n")
                sink.flush()

        server = WasmtimeHttpServer(
            self.wasm, port=self.port, host=self.host, state_dir=self.state_dir, variables=self.variables,
            env=self.env, dirs=self.dirs, memory_limit=self.memory_limit, emit=emit,
            engine_settings=self.engine_settings, deferred_reset=self.deferred_reset,
        )
        server.start()
        self._wasmtime = server
        self.url = server.url
        self.ready_ms = round((time.perf_counter() - t0) * 1000, 1)
        settings = server.component.engine_settings
        emit(json.dumps({"event": "listening", "url": self.url, "component": self.wasm, "ready_ms": self.ready_ms,
                         "engine": "wasmtime", "pooling": settings.pooling, "keep_resident": settings.keep_resident,
                         "deferred_reset": self.deferred_reset}))
        return self

    def stop(self) -> None:
        if self._wasmtime is not None:
            self._wasmtime.stop()
            self._wasmtime = None
            log_sink = getattr(self, "_log_sink", None)
            if log_sink is not None:
                log_sink.close()
                self._log_sink = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> HttpHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- command line


def _pairs(items: Sequence[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected NAME=VALUE, got {item!r}")
        out[key] = value
    return out


def _component_host(args: argparse.Namespace) -> ComponentHost:
    state = SpinState(args.state_dir, load_variables(_pairs(args.var), args.vars_file))
    dirs = {}
    for d in args.dir or []:
        host_dir, _, guest = d.partition(":")
        dirs[os.path.abspath(host_dir)] = guest or "/"
    return ComponentHost(args.component, state=state, env=_pairs(args.env), dirs=dirs, echo_stdout=True,
                         deferred_reset=not args.spin_like)


def _report(kind: str, fn: Callable[[], None]) -> bool:
    t0 = time.perf_counter()
    try:
        fn()
    except GuestError as exc:
        print(json.dumps({"event": kind, "ok": False, "error": str(exc), "ms": round((time.perf_counter() - t0) * 1000, 2)}), flush=True)
        return False
    print(json.dumps({"event": kind, "ok": True, "ms": round((time.perf_counter() - t0) * 1000, 2)}), flush=True)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spin_app.host", description="Run built Spin components locally.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("component", help="the built .wasm")
        p.add_argument("--state-dir", default=".spin", help="key-value and SQLite files (default .spin)")
        p.add_argument("--var", action="append", help="a Spin variable NAME=VALUE (repeatable)")
        p.add_argument("--vars-file", help="Spin variables from a JSON object")
        p.add_argument("--env", action="append", help="an environment variable of the component NAME=VALUE")
        p.add_argument("--dir", action="append", help="mount HOST[:GUEST] (like the manifest's files)")
        p.add_argument("--spin-like", action="store_true",
                       help="drop each finished instance before the next event, as Spin does (default: after the "
                            "answer, on a thread of its own)")

    p = sub.add_parser("serve", help="serve an HTTP component (wasmtime, or Node: jco + preview2-shim)")
    common(p)
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--engine", choices=("wasmtime", "node"), default="wasmtime",
                   help="wasmtime (default: Spin's engine, in this process) or node (jco; logs memory sizes)")
    p.add_argument("--reuse-instance", action="store_true", help="one instance for all requests (not Spin's semantics)")
    p = sub.add_parser("cron", help="deliver cron ticks to a cron component")
    common(p)
    p.add_argument("--every", type=float, default=None, help="seconds between ticks (default: one tick)")
    p.add_argument("--count", type=int, default=None, help="stop after N ticks")
    p = sub.add_parser("redis", help="subscribe to a Redis channel and deliver its messages")
    common(p)
    p.add_argument("--channel", required=True)
    p.add_argument("--address", default="redis://127.0.0.1:6379")
    p.add_argument("--count", type=int, default=None, help="stop after N messages")
    p = sub.add_parser("mqtt", help="subscribe to an MQTT topic and deliver its messages")
    common(p)
    p.add_argument("--topic", required=True)
    p.add_argument("--address", default="mqtt://127.0.0.1:1883")
    p.add_argument("--qos", type=int, default=1)
    p.add_argument("--count", type=int, default=None, help="stop after N messages")
    p = sub.add_parser("message", help="deliver one message to a Redis or MQTT component")
    common(p)
    p.add_argument("--topic", help="MQTT topic (MQTT components)")
    p.add_argument("--payload", required=True, help="the message (text; @FILE reads a file)")
    args = parser.parse_args(argv)
    try:
        EngineSettings.from_env()
    except ValueError as exc:  # a SPIN_WASMTIME_* variable that Spin would refuse too
        print(f"spin_app.host: {exc}", file=sys.stderr)
        return 2

    if args.command == "serve":
        http = HttpHost(
            args.component, port=args.port, host=args.host, state_dir=args.state_dir,
            variables=load_variables(_pairs(args.var), args.vars_file), env=_pairs(args.env),
            dirs={os.path.abspath(d.partition(":")[0]): d.partition(":")[2] or "/" for d in args.dir or []},
            reuse_instance=args.reuse_instance, engine=args.engine, deferred_reset=not args.spin_like,
        )
        if args.engine == "node":
            return subprocess.call(http.command(), cwd=str(ROOT))
        return _serve_wasmtime_http(http)

    host = _component_host(args)
    try:
        if args.command == "cron":
            n = 0
            while True:
                _report("cron", lambda: host.cron())
                n += 1
                if args.every is None or (args.count is not None and n >= args.count):
                    return 0
                time.sleep(args.every)
        if args.command == "message":
            payload = Path(args.payload[1:]).read_bytes() if args.payload.startswith("@") else args.payload.encode()
            ok = _report("message", (lambda: host.mqtt(payload, args.topic)) if args.topic else (lambda: host.redis(payload)))
            return 0 if ok else 1
        if args.command == "redis":
            return _serve_redis(host, args.address, args.channel, args.count)
        if args.command == "mqtt":
            return _serve_mqtt(host, args.address, args.topic, args.qos, args.count)
    finally:
        host.close()
    return 2


def _serve_wasmtime_http(http: HttpHost) -> int:
    http.output = _Echo()
    http.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        http.stop()
    return 0


class _Echo(list):  # type: ignore[type-arg]
    """The host's output list, printed as it grows (``serve`` on the command line)."""

    def append(self, line: str) -> None:
        print(line, flush=True)


def _serve_redis(host: ComponentHost, address: str, channel: str, count: int | None) -> int:
    import redis

    pubsub = redis.Redis.from_url(address).pubsub()
    pubsub.subscribe(channel)
    print(json.dumps({"event": "subscribed", "channel": channel, "address": address}), flush=True)
    n = 0
    for message in pubsub.listen():  # type: ignore[no-untyped-call]
        if message.get("type") != "message":
            continue
        data = message["data"]
        body = data if isinstance(data, bytes) else str(data).encode()

        def deliver(body: bytes = body) -> Any:
            return host.redis(body)

        _report("redis", deliver)
        n += 1
        if count is not None and n >= count:
            break
    pubsub.close()
    return 0


def _serve_mqtt(host: ComponentHost, address: str, topic: str, qos: int, count: int | None) -> int:
    bridge = MqttBridge(host, address, topic, qos=qos)
    bridge.start()
    print(json.dumps({"event": "subscribed", "topic": topic, "address": address}), flush=True)
    try:
        while count is None or bridge.delivered < count:
            time.sleep(0.1)
    finally:
        bridge.stop()
    return 0


class MqttBridge:
    """Subscribes to a real MQTT broker (paho-mqtt) and delivers each message to the component,
    as the spin-trigger-mqtt plugin does. Messages are delivered one at a time, in order."""

    def __init__(self, host: ComponentHost, address: str, topic: str, *, qos: int = 1,
                 on_result: Callable[[str, bytes, GuestError | None], None] | None = None) -> None:
        import queue as _queue

        self.host = host
        self.address = address
        self.topic = topic
        self.qos = qos
        self.delivered = 0
        self.on_result = on_result
        self._queue: _queue.Queue[tuple[str, bytes] | None] = _queue.Queue()
        self._subscribed = threading.Event()
        self._client: Any = None
        self._worker: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> MqttBridge:
        from urllib.parse import urlparse

        import paho.mqtt.client as mqtt

        url = urlparse(self.address if "://" in self.address else f"mqtt://{self.address}")
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
                             client_id=f"adf-spin-host-{os.getpid()}-{id(self)}")
        if url.username:
            client.username_pw_set(url.username, url.password)

        def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
            c.subscribe(self.topic, qos=self.qos)

        def on_subscribe(c: Any, userdata: Any, mid: Any, reasons: Any, props: Any = None) -> None:
            self._subscribed.set()

        def on_message(c: Any, userdata: Any, msg: Any) -> None:
            self._queue.put((msg.topic, bytes(msg.payload)))

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.connect(url.hostname or "127.0.0.1", url.port or 1883, keepalive=30)
        client.loop_start()
        self._client = client
        self._worker = threading.Thread(target=self._deliver, name="spin-mqtt-bridge", daemon=True)
        self._worker.start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise RuntimeError(f"could not subscribe to {self.topic!r} on {self.address}")
        return self

    def _deliver(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            topic, payload = item
            error: GuestError | None = None
            try:
                self.host.mqtt(payload, topic)
            except GuestError as exc:
                error = exc
            self.delivered += 1
            print(json.dumps({"event": "mqtt", "topic": topic, "ok": error is None,
                              **({"error": str(error)} if error else {})}), flush=True)
            if self.on_result is not None:
                self.on_result(topic, payload, error)

    def stop(self) -> None:
        if self._client is not None:
            self._client.loop_stop()
            with contextlib.suppress(Exception):
                self._client.disconnect()
            self._client = None
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout=30)
            self._worker = None


if __name__ == "__main__":
    sys.exit(main())
