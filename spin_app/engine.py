"""The wasmtime engine of the local Spin host, configured the way Spin configures its own.

Spin 3 runs every component on a wasmtime engine with the *pooling instance allocator*:
linear memories, tables and instances live in slots reserved once, and a slot is reset
and reused when an instance is dropped, instead of being mapped afresh per instance. Spin
reads a few environment variables to tune it; the local host reads the same ones, so what
a user measures here with a setting is what ``spin up`` does with it:

============================================  =====================================  ==========
variable                                      meaning                                here
============================================  =====================================  ==========
``SPIN_WASMTIME_POOLING``                     ``1`` pooling, ``0`` on-demand         ``1``
``SPIN_WASMTIME_INSTANCE_COUNT``              instances alive at once (per engine)   16
``SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT`` bytes of each memory reset in place    32 MiB
``SPIN_WASMTIME_TABLE_KEEP_RESIDENT``         bytes of each table reset in place     512 KiB
============================================  =====================================  ==========

(One engine per process and settings, shared by its hosts: :func:`engine_for`.)

*Keep-resident* is the setting that matters for a Python component. A fresh instance starts
from the component's memory image (~28 MB of linear memory, most of it the interpreter heap
componentize-py snapshotted at build time). Memory beyond the keep-resident size is handed
back to the kernel when the instance ends, so the next instance faults every page it touches
in again — about a thousand copy-on-write faults for a small request, several milliseconds
on a virtual machine. Memory within it is reset in place (a copy of that part) and stays
mapped: no faults, at the price of the copy. Spin's own default is 2 MiB, less than any
Python component's heap; the local host keeps 32 MiB, which covers the whole image of a
componentize-py component, and resets a finished instance's slot on a thread of its own
after the answer went out (:class:`Reaper`), as Spin drops instances in a task of their own.
``adf spin up`` gives ``spin`` the same size unless the variable is set; ``bench/spin.py``
prints the latency with the host's settings, with Spin's default and on demand.

When the pooling allocator cannot reserve its address space (some kernels allow 39-bit
address spaces only), the engine falls back to on-demand allocation, as Spin does.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["EngineSettings", "Reaper", "engine_for", "reaper"]

MiB = 1 << 20
GiB = 1 << 30

# Per instance of a componentize-py component: 4 linear memories, 16 core instances, a
# handful of tables (measured). The totals below leave room for bigger compositions.
_MEMORIES_PER_INSTANCE = 8
_CORE_INSTANCES_PER_INSTANCE = 32
_TABLES_PER_INSTANCE = 16


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a whole number") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r}: must not be negative")
    return value


@dataclass(frozen=True)
class EngineSettings:
    """How the host's wasmtime engine allocates instances (see the module doc)."""

    pooling: bool = True
    instances: int = 16
    keep_resident: int = 32 * MiB
    table_keep_resident: int = 512 * 1024
    max_memory_size: int = 4 * GiB

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EngineSettings:
        """The settings from Spin's environment variables; raises ``ValueError`` for a bad one."""
        env = os.environ if env is None else env
        pooling = env.get("SPIN_WASMTIME_POOLING", "1")
        if pooling not in ("0", "1"):
            raise ValueError(f"SPIN_WASMTIME_POOLING={pooling!r}: only 1 or 0 are supported")
        default = cls()
        return cls(
            pooling=pooling == "1",
            instances=max(1, _env_int(env, "SPIN_WASMTIME_INSTANCE_COUNT", default.instances)),
            keep_resident=_env_int(env, "SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT", default.keep_resident),
            table_keep_resident=_env_int(env, "SPIN_WASMTIME_TABLE_KEEP_RESIDENT", default.table_keep_resident),
        )

    @property
    def spare_slots(self) -> int:
        """How many finished instances may wait for the :class:`Reaper`: one, so that events
        one after another alternate between two warm slots (every slot keeps up to the
        keep-resident size resident); none without a pool (dropping an on-demand store only
        unmaps it, which costs nothing worth moving) or with a pool of one."""
        return min(1, self.instances - 1) if self.pooling else 0


def _pooling_config(wt: Any, settings: EngineSettings) -> Any:
    from wasmtime import _ffi as ffi

    n = settings.instances
    p = ffi.wasmtime_pooling_allocation_config_new()
    try:
        ffi.wasmtime_pooling_allocation_config_total_component_instances_set(p, n)
        ffi.wasmtime_pooling_allocation_config_total_core_instances_set(p, n * _CORE_INSTANCES_PER_INSTANCE)
        ffi.wasmtime_pooling_allocation_config_total_memories_set(p, n * _MEMORIES_PER_INSTANCE)
        ffi.wasmtime_pooling_allocation_config_total_tables_set(p, n * _TABLES_PER_INSTANCE)
        ffi.wasmtime_pooling_allocation_config_total_stacks_set(p, n)
        # Spin's per-component limits
        ffi.wasmtime_pooling_allocation_config_max_core_instances_per_component_set(p, 200)
        ffi.wasmtime_pooling_allocation_config_max_memories_per_component_set(p, 32)
        ffi.wasmtime_pooling_allocation_config_max_tables_per_component_set(p, 64)
        ffi.wasmtime_pooling_allocation_config_table_elements_set(p, 100_000)
        ffi.wasmtime_pooling_allocation_config_max_component_instance_size_set(p, 10 * MiB)
        ffi.wasmtime_pooling_allocation_config_max_core_instance_size_set(p, 10 * MiB)
        ffi.wasmtime_pooling_allocation_config_max_memory_size_set(p, settings.max_memory_size)
        ffi.wasmtime_pooling_allocation_config_linear_memory_keep_resident_set(p, settings.keep_resident)
        ffi.wasmtime_pooling_allocation_config_table_keep_resident_set(p, settings.table_keep_resident)
        config = wt.Config()
        config.wasm_component_model = True
        ffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), p)
    finally:
        ffi.wasmtime_pooling_allocation_config_delete(p)
    return config


def _new_engine(wt: Any, config: Any) -> Any:
    engine = wt.Engine(config)
    if not engine.ptr():  # the C API answers a config it cannot honour with no engine at all
        engine._Managed__ptr = None  # nothing to delete (deleting NULL would crash)
        raise RuntimeError("wasmtime could not create an engine with these settings")
    return engine


_ENGINES: dict[EngineSettings, tuple[Any, EngineSettings]] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(wt: Any, settings: EngineSettings) -> tuple[Any, EngineSettings]:
    """One engine per process and settings, shared by the hosts that use them; returns the
    engine and the settings in effect (``pooling=False`` when the pool could not be made)."""
    with _ENGINES_LOCK:
        found = _ENGINES.get(settings)
        if found is not None:
            return found
        made: tuple[Any, EngineSettings] | None = None
        if settings.pooling:
            try:
                engine = _new_engine(wt, _pooling_config(wt, settings))
                store = wt.Store(engine)  # one memory from the pool proves it usable
                wt.Memory(store, wt.MemoryType(wt.Limits(1, None)))
                store.close()
                made = (engine, settings)
            except Exception:  # no room for the pool's reservation: on-demand, as Spin falls back
                made = None
        if made is None:
            config = wt.Config()
            config.wasm_component_model = True
            made = (wt.Engine(config), EngineSettings(pooling=False, instances=settings.instances,
                                                       keep_resident=0, table_keep_resident=0))
        _ENGINES[settings] = made
        return made


class Reaper:
    """Drops finished instances (their stores) on a thread of its own.

    With the pooling allocator, dropping a store resets its memory slot (a copy of up to
    the keep-resident size); doing that after the answer went out keeps it off the next
    request's path. :meth:`drop` queues a store only while fewer than ``limit`` wait (the
    caller passes what its pool can spare); otherwise the caller drops it itself, so a pool
    never runs out of slots because of stores waiting here.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None

    def drop(self, store: Any, limit: int) -> None:
        with self._lock:
            if self._pending >= limit:
                queued = False
            else:
                self._pending += 1
                queued = True
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="spin-instance-reaper", daemon=True)
                    self._thread.start()
        if queued:
            self._queue.put(store)
        else:
            store.close()

    def wait(self, timeout: float | None = 30.0) -> bool:
        """Wait until every queued store is dropped; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._pending == 0, timeout)

    def _run(self) -> None:
        while True:
            store = self._queue.get()
            try:
                store.close()  # a C call: the GIL is released while the slot is reset
            except Exception:  # pragma: no cover - a store that cannot be dropped is leaked, not fatal
                pass
            finally:
                with self._lock:
                    self._pending -= 1
                    self._lock.notify_all()


#: the process's reaper, shared by every host
reaper = Reaper()
