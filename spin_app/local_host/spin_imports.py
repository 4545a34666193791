"""The Spin interfaces the local host gives a component, defined on a ``wasmtime`` linker.

==============================  =====================================================
``fermyon:spin/key-value``      :class:`~active_data_flow.spin_app.local_host.state.SpinState`'s JSON file
``fermyon:spin/sqlite``         its SQLite files
``fermyon:spin/redis``          a real Redis server (redis-py)
``fermyon:spin/mqtt``           a real MQTT broker (paho-mqtt; ``mqtt://`` / ``mqtts://``)
``fermyon:spin/variables``      its variables
``wasi:config/store``           the same variables
anything else                   traps when called (:func:`define_stubs`)
==============================  =====================================================

One function per interface; the resources a component opens (stores, connections) live in
one :class:`ResourceTable` per kind (:func:`resource_tables`), emptied after each event.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from active_data_flow.spin_app.local_host.state import SpinState

__all__ = ["ResourceTable", "define_spin_imports", "define_stubs", "resource_tables"]

_KV, _REDIS, _SQLITE, _MQTT = 1, 2, 3, 4  # host resource type ids

#: the imports given by WASI (this package's or wasmtime's) or by :func:`define_spin_imports`
_PROVIDED = (
    "wasi:cli/", "wasi:clocks/", "wasi:filesystem/", "wasi:io/", "wasi:random/", "wasi:sockets/",
    "wasi:http/", "fermyon:spin/key-value@", "fermyon:spin/variables@", "fermyon:spin/redis@",
    "fermyon:spin/sqlite@", "wasi:config/store@", "fermyon:spin/mqtt@",
)


class ResourceTable:
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


def resource_tables() -> dict[int, ResourceTable]:
    """One table per kind of Spin resource: key-value stores, Redis, SQLite and MQTT connections."""
    return {_KV: ResourceTable(), _REDIS: ResourceTable(), _SQLITE: ResourceTable(), _MQTT: ResourceTable()}


def define_spin_imports(wt: Any, linker: Any, state: SpinState, tables: Mapping[int, ResourceTable]) -> None:
    """Define the Spin interfaces of the table above on ``linker``, over ``state``."""
    root = linker.root()
    with root:
        _key_value(wt, root, state, tables[_KV])
        _variables(wt, root, state)
        _redis(wt, root, state, tables[_REDIS])
        _sqlite(wt, root, state, tables[_SQLITE])
        _mqtt(wt, root, state, tables[_MQTT])


def _rep(store: Any, res: Any) -> int:
    return int(res.to_host(store).rep)


def _dropper(table: ResourceTable) -> Callable[[Any, int], None]:
    return lambda store, r: table.drop(r)


def _record(wt: Any, **kw: Any) -> Any:
    r = wt.component.Record()
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def _key_value(wt: Any, root: Any, state: SpinState, table: ResourceTable) -> None:
    """``fermyon:spin/key-value@2.0.0``."""
    Variant, ResourceHost, ResourceType = wt.component.Variant, wt.component.ResourceHost, wt.component.ResourceType
    with root.add_instance("fermyon:spin/key-value@2.0.0") as kv:
        kv.add_resource("store", ResourceType.host(_KV), _dropper(table))

        def kv_open(store: Any, label: str) -> Any:
            if state.kv_labels is not None and label not in state.kv_labels:
                return Variant("no-such-store")
            return ResourceHost.own(table.add(label), _KV)

        kv.add_func("[static]store.open", kv_open)
        kv.add_func("[method]store.get", lambda s, r, k: state.kv_get(table.get(_rep(s, r)), k))
        kv.add_func("[method]store.set", lambda s, r, k, v: state.kv_set(table.get(_rep(s, r)), k, bytes(v)))
        kv.add_func("[method]store.delete", lambda s, r, k: state.kv_delete(table.get(_rep(s, r)), k))
        kv.add_func("[method]store.exists", lambda s, r, k: state.kv_get(table.get(_rep(s, r)), k) is not None)
        kv.add_func("[method]store.get-keys", lambda s, r: state.kv_keys(table.get(_rep(s, r))))


def _variables(wt: Any, root: Any, state: SpinState) -> None:
    """``fermyon:spin/variables@2.0.0`` and ``wasi:config/store`` (both over the same variables)."""
    Variant = wt.component.Variant
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


def _flatten(value: Any, out: list[Any]) -> list[Any]:
    """A Redis reply as the flat list of values ``execute`` answers with."""
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
            _flatten(v, out)
    else:
        out.append(str(value))
    return out


def _redis(wt: Any, root: Any, state: SpinState, table: ResourceTable) -> None:
    """``fermyon:spin/redis@2.0.0``: outbound Redis."""
    Variant, ResourceHost, ResourceType = wt.component.Variant, wt.component.ResourceHost, wt.component.ResourceType
    with root.add_instance("fermyon:spin/redis@2.0.0") as rd:
        rd.add_resource("connection", ResourceType.host(_REDIS), _dropper(table))

        def rd_open(store: Any, address: str) -> Any:
            if not address.startswith(("redis://", "rediss://")):
                return Variant("invalid-address")
            try:
                state.redis(address)
            except Exception as exc:
                return Variant("other", f"{type(exc).__name__}: {exc}")
            return ResourceHost.own(table.add(address), _REDIS)

        def rd_call(fn: Callable[..., Any]) -> Callable[..., Any]:
            def call(store: Any, res: Any, *args: Any) -> Any:
                client = state.redis(table.get(_rep(store, res)))
                try:
                    return fn(client, *args)
                except Exception as exc:
                    return Variant("other", f"{type(exc).__name__}: {exc}")

            return call

        rd.add_func("[static]connection.open", rd_open)
        rd.add_func("[method]connection.publish", rd_call(lambda c, ch, p: (c.publish(ch, bytes(p)), None)[1]))
        rd.add_func("[method]connection.get", lambda s, r, k: state.redis(table.get(_rep(s, r))).get(k))
        rd.add_func("[method]connection.set", rd_call(lambda c, k, v: (c.set(k, bytes(v)), None)[1]))
        rd.add_func("[method]connection.incr", rd_call(lambda c, k: int(c.incr(k))))
        rd.add_func("[method]connection.del", rd_call(lambda c, keys: int(c.delete(*keys)) if keys else 0))
        rd.add_func("[method]connection.sadd", rd_call(lambda c, k, vs: int(c.sadd(k, *vs)) if vs else 0))
        rd.add_func("[method]connection.smembers",
                    rd_call(lambda c, k: sorted(m.decode() if isinstance(m, bytes) else str(m) for m in c.smembers(k))))
        rd.add_func("[method]connection.srem", rd_call(lambda c, k, vs: int(c.srem(k, *vs)) if vs else 0))
        rd.add_func("[method]connection.execute",
                    rd_call(lambda c, cmd, args: _flatten(c.execute_command(cmd, *[a if isinstance(a, bytes) else str(a) for a in args]), [])))


def _sql_value(v: Any) -> Any:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, memoryview):
        return bytes(v)
    return v


def _sqlite(wt: Any, root: Any, state: SpinState, table: ResourceTable) -> None:
    """``fermyon:spin/sqlite@2.0.0``."""
    Variant, ResourceHost, ResourceType = wt.component.Variant, wt.component.ResourceHost, wt.component.ResourceType
    with root.add_instance("fermyon:spin/sqlite@2.0.0") as sq:
        sq.add_resource("connection", ResourceType.host(_SQLITE), _dropper(table))

        def sq_open(store: Any, name: str) -> Any:
            if state.sqlite_databases is not None and name not in state.sqlite_databases:
                return Variant("no-such-database")
            try:
                conn = state.sqlite_connect(name)
            except Exception as exc:
                return Variant("io", str(exc))
            return ResourceHost.own(table.add(conn), _SQLITE)

        def sq_execute(store: Any, res: Any, statement: str, params: list[Any]) -> Any:
            conn = table.get(_rep(store, res))
            try:
                cur = conn.execute(statement, [bytes(p) if isinstance(p, bytes | bytearray) else p for p in params])
                columns = [d[0] for d in cur.description or []]
                rows = [_record(wt, values=[_sql_value(v) for v in row]) for row in cur.fetchall()]
            except Exception as exc:
                return Variant("io", str(exc))
            return _record(wt, columns=columns, rows=rows)

        sq.add_func("[static]connection.open", sq_open)
        sq.add_func("[method]connection.execute", sq_execute)


def _qos(value: Any) -> int:
    """The WIT ``qos`` enum as the host gets it (its case name, or an index) → 0, 1, 2."""
    if isinstance(value, int):
        return value
    return {"at-most-once": 0, "at-least-once": 1, "exactly-once": 2}.get(str(value), 1)


def _mqtt(wt: Any, root: Any, state: SpinState, table: ResourceTable) -> None:
    """``fermyon:spin/mqtt@2.0.0`` (outbound MQTT): a real broker through paho-mqtt."""
    Variant, ResourceHost, ResourceType = wt.component.Variant, wt.component.ResourceHost, wt.component.ResourceType
    with root.add_instance("fermyon:spin/mqtt@2.0.0") as mq:
        mq.add_resource("connection", ResourceType.host(_MQTT), _dropper(table))

        def mq_open(store: Any, address: str, username: str, password: str, keep_alive: int) -> Any:
            if not address.startswith(("mqtt://", "mqtts://")):
                return Variant("invalid-address")
            try:
                state.mqtt(address, username, password, keep_alive)
            except Exception as exc:
                return Variant("connection-failed", f"{type(exc).__name__}: {exc}")
            return ResourceHost.own(table.add((address, username, password, keep_alive)), _MQTT)

        def mq_publish(store: Any, res: Any, topic: str, payload: Any, qos: Any) -> Any:
            try:
                client = state.mqtt(*table.get(_rep(store, res)))
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


def _trap(what: str) -> Callable[..., Any]:
    def fail(*args: Any) -> Any:
        raise RuntimeError(f"{what} is not provided by the local Spin host")

    return fail


def define_stubs(wt: Any, linker: Any, component: Any, engine: Any) -> None:
    """Every other import of ``component`` (LLM, PostgreSQL, MySQL...) fails when called.

    (``Linker.define_unknown_imports_as_traps`` would also shadow the WASI imports the
    linker matches by semver, so the stubs are defined from the component's own types.)
    """
    comp = wt.component
    seen: list[tuple[Any, int]] = []  # (the component's resource type, our host type id)

    def host_type(rty: Any) -> int:
        for other, tid in seen:
            if other == rty:  # a resource `use`d from another interface: the same type
                return tid
        seen.append((rty, 100 + len(seen)))
        return seen[-1][1]

    with linker.root() as root:
        for name, item in component.type.imports(engine).items():
            if name.startswith(_PROVIDED):
                continue
            ty = item.ty
            if not isinstance(ty, comp.ComponentInstanceType):
                continue
            with root.add_instance(name) as inst:
                for export, ext in ty.exports(engine).items():
                    ety = ext.ty
                    if isinstance(ety, comp.ResourceType):
                        inst.add_resource(export, comp.ResourceType.host(host_type(ety)), lambda store, rep: None)
                    elif isinstance(ety, comp.FuncType):
                        inst.add_func(export, _trap(f"{name}#{export}"))
