"""The component host: runs a built component with wasmtime, a fresh instance per event.

:class:`ComponentHost` loads (and caches) the compiled component, defines its imports — WASI
(:mod:`active_data_flow.spin_app.local_host.wasi`, or wasmtime's own), the Spin interfaces
(:mod:`active_data_flow.spin_app.local_host.spin_imports`) and traps for the rest — and delivers events to its
exports: HTTP requests, cron ticks, Redis and MQTT messages.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from active_data_flow.spin_app.engine import EngineSettings, engine_for, reaper
from active_data_flow.spin_app.local_host.spin_imports import (
    define_spin_imports,
    define_stubs,
    resource_tables,
)
from active_data_flow.spin_app.local_host.state import SpinState
from active_data_flow.spin_app.local_host.wasi.http_types import ResponseOutparam
from active_data_flow.spin_app.local_host.wasi.python_wasi import PythonWasi
from active_data_flow.spin_app.local_host.wasi.state import WasiState
from active_data_flow.spin_app.local_host.wasi.values import WasiTrap

__all__ = ["ComponentHost", "GuestError", "default_cache_dir"]


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


def _wasmtime_version() -> str:
    try:
        from importlib.metadata import version

        return version("wasmtime")
    except Exception:
        return "?"


class ComponentHost:
    """Runs a component with wasmtime: HTTP requests, cron, Redis and MQTT events.

    WASI is :mod:`active_data_flow.spin_app.local_host.wasi` (in Python: the only way to hand a component an
    incoming HTTP request); ``python_wasi=False`` uses wasmtime's own instead, for the other
    triggers.
    The engine is set up as Spin sets up its own (:mod:`active_data_flow.spin_app.engine`: the pooling
    allocator, ``SPIN_WASMTIME_*`` variables); with Python's WASI, a finished instance is
    dropped (its pool slot reset) on the :data:`~active_data_flow.spin_app.engine.reaper`'s thread. (Stores
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
            self.wasi = PythonWasi(wt, self.engine, self.component)
            self.wasi.define(self.linker)
        else:
            self.linker.add_wasip2()
            self.linker.add_wasi_http()
        self._tables = resource_tables()
        define_spin_imports(wt, self.linker, self.state, self._tables)
        define_stubs(wt, self.linker, self.component, self.engine)

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
        """Hand ``request`` (a :class:`~active_data_flow.spin_app.local_host.wasi.http_types.IncomingRequest`) to
        the component's ``wasi:http/incoming-handler#handle`` in a fresh instance. ``on_response`` gets
        ``Ok(OutgoingResponse)`` (or ``Err(error-code)``) when the component sets its answer;
        call its ``attach(write, finish)`` to receive the body. Needs ``python_wasi=True``."""
        if self.wasi is None:
            raise RuntimeError("serving HTTP needs ComponentHost(python_wasi=True)")
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
