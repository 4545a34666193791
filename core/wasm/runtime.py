"""The process-wide wasmtime runtime of the executors: one engine, one linker, one timeout watchdog.

One wasmtime ``Engine`` (fuel + epoch interruption, component model off) and one ``Linker``
(WASI and the ``adf`` host functions) serve every executor of the process, so compiled modules
are interchangeable between executors. :func:`get_runtime` creates them on first use (importing
``wasmtime`` then) and releases them at interpreter exit. The :class:`Watchdog` thread turns
each call's ``timeout_ms`` into an epoch interruption.
"""

from __future__ import annotations

import atexit
import gc
import math
import threading
import time
import weakref
from typing import Any, Protocol

from active_data_flow.wasm.cache import engine_key
from active_data_flow.wasm.hostfns import define_host_functions
from active_data_flow.wasm.limits import Limits

__all__ = [
    "ENGINE_SETTINGS",
    "MAX_WASM_STACK",
    "TICK_S",
    "TIMEOUT_MESSAGE",
    "WASI_MODULE",
    "WASM_PAGE",
    "Runtime",
    "Watchdog",
    "executor_engine_key",
    "get_runtime",
    "wasi_instances",
]

MAX_WASM_STACK = 512 << 10
#: the engine configuration (part of the AOT cache key)
ENGINE_SETTINGS: dict[str, Any] = {
    "consume_fuel": True,
    "epoch_interruption": True,
    "max_wasm_stack": MAX_WASM_STACK,
    "component_model": False,
}
#: one epoch tick, in seconds (timeouts are counted in ticks)
TICK_S = 0.001
WASI_MODULE = "wasi_snapshot_preview1"
#: the size of a wasm memory page, in bytes
WASM_PAGE = 65536

_engine_key_cache: list[str] = []


def executor_engine_key() -> str:
    """The AOT cache key of the executors' engine (build a :class:`ModuleCache` with it)."""
    if not _engine_key_cache:
        _engine_key_cache.append(engine_key(ENGINE_SETTINGS))
    return _engine_key_cache[0]


# -- the watchdog -------------------------------------------------------------------------------
TIMEOUT_MESSAGE = "adf: wall-clock timeout"
_IDLE_POLL_S = 0.05
_IDLE_LINGER_S = 1.0


class Watchdog:
    """Wall-clock timeouts for every call of the process, on one daemon thread.

    Each running call *arms* its store's token with a monotonic deadline. The thread sleeps
    until the earliest armed deadline and then advances the engine's epoch once. Every store
    has an epoch deadline of one tick and an epoch callback: when the epoch moves, each store
    executing wasm checks its own deadline — past it, the callback fails the call (a timeout);
    otherwise it re-arms one tick and carries on. Calls that finish in time cost a dict entry
    and no wake-up at all, and calls with different timeouts share the thread.

    Without the callback API (other wasmtime-py layouts) it falls back to ticking every
    :data:`TICK_S` while calls are armed, each store's deadline being its timeout in ticks."""

    def __init__(self, engine: Any, *, callbacks: bool) -> None:
        self._engine = engine
        self.callbacks = callbacks
        self._cond = threading.Condition()
        self.deadlines: dict[int, float] = {}  # token -> monotonic deadline, read by the epoch callback
        self._fired: set[int] = set()
        self._next = math.inf
        self._thread: threading.Thread | None = None
        self._stopped = False

    def arm(self, token: int, deadline: float) -> None:
        with self._cond:
            self.deadlines[token] = deadline
            self._fired.discard(token)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="adf-wasm-watchdog", daemon=True)
                self._thread.start()
            if deadline < self._next or not self.callbacks:
                self._cond.notify()

    def disarm(self, token: int) -> None:
        with self._cond:
            self.deadlines.pop(token, None)
            self._fired.discard(token)

    def stop(self) -> None:
        """End the thread (at interpreter exit)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(1.0)

    def _run(self) -> None:
        increment = self._engine.increment_epoch
        cond = self._cond
        last_busy = time.monotonic()
        while not self._stopped:
            if not self.callbacks:  # periodic fallback
                with cond:
                    while not self.deadlines and not self._stopped:
                        cond.wait()
                time.sleep(TICK_S)
                if not self._stopped:
                    increment()
                continue
            with cond:
                while not self._stopped:
                    now = time.monotonic()
                    due = [t for t, d in self.deadlines.items() if d <= now and t not in self._fired]
                    if due:
                        self._fired.update(due)
                        break
                    pending = [d for t, d in self.deadlines.items() if t not in self._fired]
                    if pending:
                        last_busy = now
                        self._next = min(pending)
                        cond.wait(max(0.0, self._next - now))
                    elif now - last_busy < _IDLE_LINGER_S:
                        # between the calls of a batch: look again soon rather than be woken by
                        # every arm() (a call whose deadline is before then still wakes us)
                        self._next = now + _IDLE_POLL_S
                        cond.wait(_IDLE_POLL_S)
                    else:
                        self._next = math.inf
                        cond.wait()
                        last_busy = time.monotonic()
            if not self._stopped:
                increment()  # every running store checks its deadline at its next loop or call


def _on_epoch(ctx: Any, data: Any, delta: Any, kind: Any) -> int:
    """The epoch-deadline callback of every store (``data`` is the store's watchdog token)."""
    try:
        rt = _runtime_instance
        if rt is not None:
            deadline = rt.watchdog.deadlines.get(int(data or 0))
            if deadline is not None and time.monotonic() >= deadline:
                err = rt.ffi.wasmtime_error_new(TIMEOUT_MESSAGE.encode("ascii"))
                return int(rt.ctypes.cast(err, rt.ctypes.c_void_p).value or 0)
        delta[0] = 1
        kind[0] = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE
        return 0
    except Exception:  # pragma: no cover - never let an exception cross into wasmtime
        delta[0] = 1
        kind[0] = 0
        return 0


# -- the process-wide engine ------------------------------------------------------------------
class Runtime:
    """The engine, the linker (WASI + ``adf``), the watchdog and the wasmtime-py internals of the fast
    call path."""

    def __init__(self) -> None:
        import ctypes
        import itertools

        import wasmtime

        self.wasmtime = wasmtime
        self.ctypes = ctypes
        cfg = wasmtime.Config()
        cfg.consume_fuel = True
        cfg.epoch_interruption = True
        cfg.max_wasm_stack = MAX_WASM_STACK
        cfg.wasm_component_model = False
        self.engine = wasmtime.Engine(cfg)
        self.linker = wasmtime.Linker(self.engine)
        self.linker.define_wasi()
        define_host_functions(self.linker)
        self.engine_key = executor_engine_key()
        self._tokens = itertools.count(1)
        # The direct call path (wasmtime_func_call_unchecked on raw values) is ~6x faster than
        # Func.__call__, and the epoch callback makes timeouts free for calls that end in time;
        # both rely on wasmtime-py internals, so fall back to the public API without them.
        self.fast = False
        self.epoch_callback: Any = None
        try:
            from wasmtime import _bindings, _func
            from wasmtime import _ffi as ffi

            self.ffi: Any = ffi
            self.call_unchecked = ffi.wasmtime_func_call_unchecked
            self.memory_data = ffi.wasmtime_memory_data
            self.memory_size = ffi.wasmtime_memory_data_size
            self.raw_type = ffi.wasmtime_val_raw_t
            self.trap_ptr = ctypes.POINTER(ffi.wasm_trap_t)
            self.raise_last = getattr(_func, "maybe_raise_last_exn", lambda: None)
            # the ctypes functions themselves, without the Python wrappers
            self.c_call = _bindings._wasmtime_func_call_unchecked
            self.c_memory_data = _bindings._wasmtime_memory_data
            self.c_memory_size = _bindings._wasmtime_memory_data_size
            self.c_set_fuel = _bindings._wasmtime_context_set_fuel
            self.c_get_fuel = _bindings._wasmtime_context_get_fuel
            self.c_set_deadline = _bindings._wasmtime_context_set_epoch_deadline
            self.fast = True
            setter = _bindings._wasmtime_store_epoch_deadline_callback
            self._set_epoch_callback = setter
            self.epoch_callback = setter.argtypes[1](_on_epoch)
            self._no_finalizer = setter.argtypes[3]()  # a NULL function pointer
        except (ImportError, AttributeError, IndexError, TypeError):  # pragma: no cover
            self.epoch_callback = None
        self.stdin_bytes = self.fast and hasattr(self.ffi, "wasi_config_set_stdin_bytes")
        self.watchdog = Watchdog(self.engine, callbacks=self.epoch_callback is not None)

    def new_store(self, limits: Limits) -> tuple[Any, int]:
        """A store with the memory / table limits and the epoch callback; -> (store, watchdog token)."""
        store = self.wasmtime.Store(self.engine)
        store.set_limits(memory_size=limits.memory_bytes, table_elements=max(10_000, limits.memory_bytes // 64))
        token = next(self._tokens)
        if self.epoch_callback is not None:
            self._set_epoch_callback(store.ptr(), self.epoch_callback, token, self._no_finalizer)
        return store, token

    def start(self, store: Any, token: int, limits: Limits) -> None:
        """Fresh fuel and a fresh timeout for one call."""
        store.set_fuel(limits.fuel)
        if self.epoch_callback is not None:
            store.set_epoch_deadline(1)
        else:
            store.set_epoch_deadline(math.ceil(limits.timeout_ms / (TICK_S * 1000)) + 1)
        self.watchdog.arm(token, time.monotonic() + limits.timeout_ms / 1000.0)

    def stop(self, token: int) -> None:
        self.watchdog.disarm(token)


class _Closable(Protocol):
    def close(self) -> None: ...


_runtime_lock = threading.Lock()
_runtime_instance: Runtime | None = None
#: the instances whose store captures WASI output (closed at exit, before wasmtime-py is torn down)
wasi_instances: weakref.WeakSet[_Closable] = weakref.WeakSet()


def _at_exit() -> None:
    """At interpreter exit, while wasmtime-py is still whole:

    * free the stores that capture WASI output and wait (≤ 1 s) until wasmtime has released
      their output callbacks — it does so on a background thread shortly after a store is
      dropped, and a process that exits before then gets a panic on that thread;
    * stop the watchdog and release the engine and linker now rather than during module
      teardown, when wasmtime-py's own functions may already be gone."""
    global _runtime_instance
    for inst in list(wasi_instances):
        inst.close()
    gc.collect()
    try:
        from wasmtime import _wasi

        handles = _wasi.CUSTOM_OUTPUTS.handles
        deadline = time.monotonic() + 1.0
        while handles and time.monotonic() < deadline:
            time.sleep(0.002)
    except (ImportError, AttributeError):  # pragma: no cover - other wasmtime-py layouts
        pass
    rt, _runtime_instance = _runtime_instance, None
    if rt is not None:
        rt.watchdog.stop()
        for obj in (rt.linker, rt.engine):
            try:
                obj.close()
            except Exception:  # pragma: no cover - best effort at exit
                pass


def get_runtime() -> Runtime:
    """The process's runtime, created on first use (``MissingExtraError`` without wasmtime)."""
    global _runtime_instance
    rt = _runtime_instance
    if rt is None:
        with _runtime_lock:
            rt = _runtime_instance
            if rt is None:
                try:
                    rt = Runtime()
                except ImportError:
                    from active_data_flow.errors import MissingExtraError

                    raise MissingExtraError("wasmtime", "wasm", "running WebAssembly steps") from None
                _runtime_instance = rt
                atexit.register(_at_exit)
    return rt
