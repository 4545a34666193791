"""Run WebAssembly modules: JSON in, JSON out, inside limits, with the ``adf`` host functions.

:class:`WasmExecutor` compiles modules (through a :class:`~core.wasm.cache.ModuleCache`),
loads them from the module registry or from ``.wasm`` / ``.wat`` files, and calls them with
one JSON document (``call``) or several in a row on one instance (``session``). Two guest
ABIs are detected from the exports (docs/WASM_ABI.md):

* **memory**: ``memory``, ``alloc(len) -> ptr`` (optional ``dealloc(ptr, len)``) and the
  called function ``NAME(ptr, len) -> i64`` returning ``(out_ptr << 32) | out_len``;
* **wasi**: a WASI command (``_start``): the input on stdin, the output on stdout.

Every call runs with fresh limits (:class:`~core.wasm.limits.Limits`): fuel (instructions),
linear memory, wall-clock time (epoch interruption driven by one shared watchdog thread) and
output size. Whatever the guest does — loop forever, grow memory without end, recurse until
the stack is gone, answer gigabytes — the call ends with a :class:`~core.wasm.errors.WasmError`
and the host process, the engine and every other call carry on. Each call is recorded in the
execution log (``execution_log.record(entry)``).

One wasmtime ``Engine`` (fuel + epoch interruption, component model off) and one ``Linker``
(WASI and the ``adf`` functions) serve every executor of the process, so compiled modules are
interchangeable between executors. ``wasmtime`` is imported on first use.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import gc
import hashlib
import itertools
import json
import logging
import math
import os
import re
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

from core.wasm.cache import ModuleCache, engine_key
from core.wasm.errors import (
    ModuleNotFoundInRegistry,
    WasmAbiError,
    WasmError,
    WasmLimitExceeded,
    WasmTrap,
)
from core.wasm.hostfns import (
    HOST_FUNCTIONS,
    HOST_MODULE,
    HostCallState,
    HostContext,
    define_host_functions,
    set_current_state,
    unpack,
)
from core.wasm.limits import Limits
from core.wasm.permissions import PermissionSet

__all__ = [
    "ENGINE_SETTINGS",
    "CallSession",
    "CompiledModule",
    "ExecutionResult",
    "HostContext",
    "MemoryExecutionLog",
    "WasmExecutor",
    "executor_engine_key",
]

log = logging.getLogger("adf.wasm")

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
_PAGE = 65536
_U32 = 0xFFFFFFFF
_EFBIG = 27
_STDERR_TAIL = 4096
_MAX_TRACE_FRAMES = 40

_SIG_MEMORY_FN = (("i32", "i32"), ("i64",))
_SIG_ALLOC = (("i32",), ("i32",))
_SIG_DEALLOC = (("i32", "i32"), ())
_SIG_VOID = ((), ())


_engine_key_cache: list[str] = []


def executor_engine_key() -> str:
    """The AOT cache key of the executors' engine (build a :class:`ModuleCache` with it)."""
    if not _engine_key_cache:
        _engine_key_cache.append(engine_key(ENGINE_SETTINGS))
    return _engine_key_cache[0]


# -- data --------------------------------------------------------------------------------------
@dataclass
class CompiledModule:
    """A validated, compiled module. ``abi``: ``"memory"`` or ``"wasi"``; ``module_id``:
    ``id@version`` when loaded from the registry, else the file name or ``sha256:<12 hex>``;
    ``permissions``: the registry's (empty otherwise)."""

    sha256: str
    abi: str
    exports: tuple[str, ...]
    module: Any  # wasmtime.Module
    module_id: str = ""
    permissions: PermissionSet = field(default_factory=PermissionSet)
    functions: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict, repr=False,
                                                                          compare=False)
    min_memory_bytes: int = field(default=0, repr=False, compare=False)
    uses_wasi: bool = field(default=False, repr=False, compare=False)
    instance_pre: Any = field(default=None, repr=False, compare=False)


@dataclass
class ExecutionResult:
    execution_id: str
    module_id: str
    function: str
    output: Any
    fuel_consumed: int
    peak_memory_bytes: int
    duration_ms: float
    context_updates: dict[str, Any]
    logs: list[dict[str, Any]]
    denials: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class MemoryExecutionLog:
    """The default execution log: the last ``capacity`` entries in memory (newest first on query)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._entries.append(dict(entry))

    def query(self, *, execution_id: str | None = None, module_id: str | None = None,
              limit: int = 100) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with self._lock:
            for entry in reversed(self._entries):
                if execution_id is not None and entry.get("execution_id") != execution_id:
                    continue
                if module_id is not None and entry.get("module_id") != module_id:
                    continue
                out.append(dict(entry))
                if len(out) >= limit:
                    break
        return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


# -- the process-wide engine ------------------------------------------------------------------
TIMEOUT_MESSAGE = "adf: wall-clock timeout"
_IDLE_POLL_S = 0.05
_IDLE_LINGER_S = 1.0


class _Watchdog:
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


class _Runtime:
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
        self.watchdog = _Watchdog(self.engine, callbacks=self.epoch_callback is not None)

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


_runtime_lock = threading.Lock()
_runtime_instance: _Runtime | None = None
_wasi_instances: weakref.WeakSet[_Instance] = weakref.WeakSet()


def _at_exit() -> None:
    """At interpreter exit, while wasmtime-py is still whole:

    * free the stores that capture WASI output and wait (≤ 1 s) until wasmtime has released
      their output callbacks — it does so on a background thread shortly after a store is
      dropped, and a process that exits before then gets a panic on that thread;
    * stop the watchdog and release the engine and linker now rather than during module
      teardown, when wasmtime-py's own functions may already be gone."""
    global _runtime_instance
    for inst in list(_wasi_instances):
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


def _runtime() -> _Runtime:
    global _runtime_instance
    rt = _runtime_instance
    if rt is None:
        with _runtime_lock:
            rt = _runtime_instance
            if rt is None:
                try:
                    rt = _Runtime()
                except ImportError:
                    from core.errors import MissingExtraError

                    raise MissingExtraError("wasmtime", "wasm", "running WebAssembly steps") from None
                _runtime_instance = rt
                atexit.register(_at_exit)
    return rt


# -- the executor ------------------------------------------------------------------------------
class WasmExecutor:
    """Compile, load and call WebAssembly modules. Thread-safe (a :class:`CallSession` is not:
    one thread at a time)."""

    def __init__(self, *, registry: Any = None, cache: ModuleCache | None = None, execution_log: Any = None,
                 default_limits: Limits | None = None) -> None:
        self.registry = registry
        self.cache = cache if cache is not None else ModuleCache(executor_engine_key())
        self.execution_log: Any = execution_log if execution_log is not None else MemoryExecutionLog()
        self.default_limits = default_limits or Limits()

    @property
    def engine(self) -> Any:
        return _runtime().engine

    @property
    def engine_key(self) -> str:
        return executor_engine_key()

    # -- compile / load -------------------------------------------------------------------
    def compile(self, wasm: bytes, *, module_id: str = "") -> CompiledModule:
        """Validate and compile ``wasm`` (binary, or WAT text), through the cache.
        :class:`WasmAbiError` when it is not a valid module or does not follow a guest ABI."""
        rt = _runtime()
        data = bytes(wasm)
        if not data.startswith(b"\0asm"):
            try:
                data = bytes(rt.wasmtime.wat2wasm(data.decode("utf-8")))
            except (UnicodeDecodeError, rt.wasmtime.WasmtimeError) as exc:
                raise WasmAbiError(f"not a WebAssembly module (neither wasm binary nor WAT text): "
                                   f"{_first_line(str(exc))}") from None
        sha = hashlib.sha256(data).hexdigest()
        try:
            module = self.cache.get_or_compile(rt.engine, data, sha)
        except rt.wasmtime.WasmtimeError as exc:
            raise WasmAbiError(f"invalid WebAssembly module {module_id or 'sha256:' + sha[:12]}: {exc}") from None
        return _describe(rt, module, sha, module_id or f"sha256:{sha[:12]}")

    def load(self, ref: str) -> CompiledModule:
        """``"id@version"`` / ``"id"`` from the registry (with its permissions), or a ``.wasm`` /
        ``.wat`` file path."""
        ref = str(ref)
        if ref.endswith((".wasm", ".wat")) or (os.sep in ref and os.path.isfile(ref)):
            with open(ref, "rb") as f:
                data = f.read()
            return self.compile(data, module_id=os.path.basename(ref))
        if self.registry is None:
            raise ModuleNotFoundInRegistry(f"cannot load module {ref!r}: no module registry is configured "
                                           "(and it is not a .wasm/.wat path)")
        data, record = self.registry.fetch(ref)
        compiled = self.compile(data, module_id=f"{record.id}@{record.version}")
        perms = getattr(record, "permissions", None)
        if perms is not None:
            compiled.permissions = perms if isinstance(perms, PermissionSet) else PermissionSet.parse(perms)
        return compiled

    def _resolve(self, module: CompiledModule | str | bytes) -> CompiledModule:
        if isinstance(module, CompiledModule):
            return module
        if isinstance(module, (bytes, bytearray, memoryview)):
            return self.compile(bytes(module))
        if isinstance(module, str):
            return self.load(module)
        raise TypeError(f"expected a CompiledModule, a module reference or wasm bytes, got {type(module).__name__}")

    # -- call -----------------------------------------------------------------------------
    def call(self, module: CompiledModule | str | bytes, payload: Any, *, function: str = "run",
             limits: Limits | None = None, host: HostContext | None = None) -> ExecutionResult:
        """Call ``function`` (memory ABI) or the command (WASI ABI) once with ``payload``
        (JSON-serialisable; ``bytes`` are taken as already-encoded JSON) on a fresh instance.

        A failure raises a :class:`WasmError` (``WasmLimitExceeded``, ``WasmTrap``,
        ``WasmAbiError``...) that also carries the call's ``execution_id``, ``logs``,
        ``denials``, ``context_updates``, ``peak_memory_bytes`` and ``duration_ms``."""
        with self.session(module, function=function, limits=limits, host=host) as session:
            return session.call(payload)

    def session(self, module: CompiledModule | str | bytes, *, function: str = "run",
                limits: Limits | None = None, host: HostContext | None = None) -> CallSession:
        """A :class:`CallSession`: one instance reused for several calls (memory ABI)."""
        compiled = self._resolve(module)
        return CallSession(self, compiled, function=function, limits=limits or self.default_limits,
                           host=_effective_host(compiled, host))

    def _record(self, entry: dict[str, Any]) -> None:
        try:
            self.execution_log.record(entry)
        except Exception:  # the log failing must not fail the call
            log.exception("wasm execution log: cannot record %s", entry.get("execution_id"))


def _effective_host(compiled: CompiledModule, host: HostContext | None) -> HostContext:
    h = host if host is not None else HostContext()
    changes: dict[str, Any] = {}
    if not h.module_id:
        changes["module_id"] = compiled.module_id
    if not h.permissions and compiled.permissions:
        changes["permissions"] = compiled.permissions
    return dataclasses.replace(h, **changes) if changes else h  # shallow: the same context dict


def _describe(rt: _Runtime, module: Any, sha: str, module_id: str) -> CompiledModule:  # noqa: C901
    w = rt.wasmtime
    functions: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    memories: dict[str, Any] = {}
    names: list[str] = []
    for export in module.exports:
        names.append(export.name)
        ty = export.type
        if isinstance(ty, w.FuncType):
            functions[export.name] = (tuple(str(p) for p in ty.params), tuple(str(r) for r in ty.results))
        elif isinstance(ty, w.MemoryType):
            memories[export.name] = ty
    problems: list[str] = []
    uses_wasi = False
    for imp in module.imports:
        if imp.module == WASI_MODULE:
            uses_wasi = True
        elif imp.module == HOST_MODULE:
            if imp.name not in HOST_FUNCTIONS:
                problems.append(f"imports unknown host function {HOST_MODULE}.{imp.name} "
                                f"(host functions: {', '.join(sorted(HOST_FUNCTIONS))})")
        else:
            problems.append(f"imports {imp.module}.{imp.name}, which the host does not provide "
                            f"(only {HOST_MODULE}.* and {WASI_MODULE}.*)")
    if "_start" in functions:
        abi = "wasi"
        if functions["_start"] != _SIG_VOID:
            problems.append("_start must take no parameters and return nothing")
    elif "alloc" in functions and "memory" in memories:
        abi = "memory"
    else:
        abi = ""
        problems.append("exports neither _start (WASI command ABI) nor memory + alloc (memory ABI)")
    for name, sig in (("alloc", _SIG_ALLOC), ("dealloc", _SIG_DEALLOC), ("_initialize", _SIG_VOID)):
        if name in functions and functions[name] != sig:
            problems.append(f"{name} must have the signature {_sig_text(sig)}, not {_sig_text(functions[name])}")
    if problems:
        raise WasmAbiError(f"module {module_id} does not follow the guest ABI: " + "; ".join(problems))
    min_memory = 0
    for ty in memories.values():
        page = int(getattr(ty, "page_size", _PAGE) or _PAGE)
        min_memory = max(min_memory, int(ty.limits.min) * page)
    try:
        pre = rt.linker.instantiate_pre(module)
    except w.WasmtimeError as exc:
        raise WasmAbiError(f"module {module_id} cannot be linked: {_first_line(str(exc))}") from None
    return CompiledModule(sha256=sha, abi=abi, exports=tuple(names), module=module, module_id=module_id,
                          functions=functions, min_memory_bytes=min_memory, uses_wasi=uses_wasi,
                          instance_pre=pre)


def _sig_text(sig: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    params, results = sig
    return f"({', '.join(params)}) -> ({', '.join(results)})"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


_json_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_json_decode = json.JSONDecoder().decode


def _encode(payload: Any) -> bytes:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    return _json_encode(payload).encode("utf-8")


# -- output capture (WASI stdout / stderr) -------------------------------------------------------
class _Capture:
    """Collects a WASI stream up to ``limit`` bytes; beyond it the guest's write fails (EFBIG) and
    ``overflow`` is set. ``tail_only`` keeps just the last bytes (stderr)."""

    def __init__(self, limit: int, *, tail_only: bool = False) -> None:
        self.limit = limit
        self.tail_only = tail_only
        self.chunks: list[bytes] = []
        self.size = 0
        self.overflow = False
        self._lock = threading.Lock()

    def write(self, data: bytes) -> int:
        with self._lock:
            n = len(data)
            if self.tail_only:
                self.chunks.append(data)
                self.size += n
                while self.size - len(self.chunks[0]) >= self.limit and len(self.chunks) > 1:
                    self.size -= len(self.chunks.pop(0))
                return n
            if self.overflow or self.size + n > self.limit:
                self.overflow = True
                return -_EFBIG
            self.chunks.append(data)
            self.size += n
            return n

    def take(self) -> bytes:
        with self._lock:
            data = b"".join(self.chunks)
            self.chunks = []
            self.size = 0
        return data[-self.limit:] if self.tail_only else data


# -- a call session -----------------------------------------------------------------------------
class _Instance:
    """One store + instance of a memory-ABI module.

    :meth:`roundtrip` is the hot path of a batch: with wasmtime-py's ctypes functions called
    directly on raw values (signatures checked at compile time), one call costs a few
    microseconds over the guest's own work; without them it uses the public API."""

    def __init__(self, rt: _Runtime, compiled: CompiledModule, function: str, limits: Limits) -> None:
        self.rt = rt
        self.store, self.token = rt.new_store(limits)
        self.stdout: _Capture | None = None
        self.stderr: _Capture | None = None
        if compiled.uses_wasi:  # a memory-ABI module built for WASI: its prints become log lines
            self.stdout = _Capture(64 << 10, tail_only=True)
            self.stderr = _Capture(64 << 10, tail_only=True)
            wasi = rt.wasmtime.WasiConfig()
            wasi.argv = [compiled.module_id or "module"]
            wasi.stdout_custom = self.stdout.write
            wasi.stderr_custom = self.stderr.write
            self.store.set_wasi(wasi)
            _wasi_instances.add(self)
        self.compiled = compiled
        self.function = function
        self.fast = rt.fast
        self.instance: Any = None
        self.memory: Any = None
        self.alloc: Any = None
        self.run: Any = None
        self.dealloc: Any = None
        self.ctx: Any = None
        self.mref: Any = None
        self.alloc_ref: Any = None
        self.run_ref: Any = None
        self.dealloc_ref: Any = None
        self.raw: Any = None
        self.trap: Any = None
        self.trap_ref: Any = None
        self.fuel_box: Any = None
        self.fuel_ref: Any = None

    def close(self) -> None:
        """Drop the store (and everything in it)."""
        self.rt.stop(self.token)
        self.store = self.instance = self.memory = self.alloc = self.run = self.dealloc = None
        self.ctx = self.mref = self.alloc_ref = self.run_ref = self.dealloc_ref = self.raw = None
        self.trap = self.trap_ref = self.fuel_box = self.fuel_ref = None

    def start(self, limits: Limits) -> None:
        """Fresh fuel and a fresh timeout for the next call."""
        rt = self.rt
        if self.ctx is not None:
            err = rt.c_set_fuel(self.ctx, limits.fuel)
            if err:
                raise rt.wasmtime.WasmtimeError._from_ptr(err)
            rt.c_set_deadline(self.ctx, 1 if rt.epoch_callback is not None else
                              math.ceil(limits.timeout_ms / (TICK_S * 1000)) + 1)
            rt.watchdog.arm(self.token, time.monotonic() + limits.timeout_ms / 1000.0)
        else:
            rt.start(self.store, self.token, limits)

    def fuel_left(self) -> int:
        if self.ctx is not None:
            if self.rt.c_get_fuel(self.ctx, self.fuel_ref):
                return 0
            return int(self.fuel_box.value)
        try:
            return int(self.store.get_fuel())
        except Exception:
            return 0

    def instantiate(self) -> None:
        rt = self.rt
        self.instance = self.compiled.instance_pre.instantiate(self.store)
        exports = self.instance.exports(self.store)
        self.memory = exports["memory"]
        self.alloc = exports["alloc"]
        self.run = exports[self.function]
        self.dealloc = exports["dealloc"] if "dealloc" in self.compiled.functions else None
        if "_initialize" in self.compiled.functions:
            exports["_initialize"](self.store)
        if self.fast:
            ctypes = rt.ctypes
            byref = ctypes.byref
            self.ctx = self.store._context()
            self.raw = (rt.raw_type * 2)()
            self.mref = byref(self.memory._memory)
            self.alloc_ref = byref(self.alloc._func)
            self.run_ref = byref(self.run._func)
            self.dealloc_ref = byref(self.dealloc._func) if self.dealloc is not None else None
            # reused by every call: only written on a trap, after which the instance is dropped
            self.trap = rt.trap_ptr()
            self.trap_ref = byref(self.trap)
            self.fuel_box = ctypes.c_uint64(0)
            self.fuel_ref = byref(self.fuel_box)

    def _raise(self, err: Any) -> None:
        rt = self.rt
        if err:
            error = rt.wasmtime.WasmtimeError._from_ptr(err)
            rt.raise_last()  # an exception a host function raised during the call wins
            raise error
        trap = rt.wasmtime.Trap._from_ptr(self.trap)
        rt.raise_last()
        raise trap

    def roundtrip(self, data: bytes, limits: Limits) -> tuple[bytes, int]:
        """alloc + write input + call + read output (+ dealloc): -> (output bytes, memory size)."""
        if not self.fast:
            return self._roundtrip_public(data, limits)
        rt = self.rt
        call, ctx, raw, trap, trap_ref = rt.c_call, self.ctx, self.raw, self.trap, self.trap_ref
        ctypes = rt.ctypes
        n = len(data)
        raw[0].i32 = _i32(n)
        err = call(ctx, self.alloc_ref, raw, 2, trap_ref)
        if err or trap:
            self._raise(err)
        ptr = raw[0].i32 & _U32
        size = rt.c_memory_size(ctx, self.mref)
        if ptr + n > size or (ptr == 0 and n > 0):
            raise _AllocFailed(ptr, n)
        base = ctypes.addressof(rt.c_memory_data(ctx, self.mref).contents)
        ctypes.memmove(base + ptr, data, n)
        raw[0].i32 = _i32(ptr)
        raw[1].i32 = _i32(n)
        err = call(ctx, self.run_ref, raw, 2, trap_ref)
        if err or trap:
            self._raise(err)
        out_ptr, out_len = unpack(raw[0].i64)
        self._check_output(out_ptr, out_len, limits)
        size = rt.c_memory_size(ctx, self.mref)
        if out_ptr + out_len > size:
            raise self._outside(out_ptr, out_len, size)
        base = ctypes.addressof(rt.c_memory_data(ctx, self.mref).contents)
        out = ctypes.string_at(base + out_ptr, out_len) if out_len else b""
        if self.dealloc_ref is not None:
            for p, m in ((out_ptr, out_len), (ptr, n)):
                raw[0].i32 = _i32(p)
                raw[1].i32 = _i32(m)
                err = call(ctx, self.dealloc_ref, raw, 2, trap_ref)
                if err or trap:
                    self._raise(err)
        return out, size

    def _roundtrip_public(self, data: bytes, limits: Limits) -> tuple[bytes, int]:  # pragma: no cover
        store, n = self.store, len(data)
        ptr = int(self.alloc(store, _i32(n))) & _U32
        size = self.memory.data_len(store)
        if ptr + n > size or (ptr == 0 and n > 0):
            raise _AllocFailed(ptr, n)
        if n:
            self.memory.write(store, data, ptr)
        out_ptr, out_len = unpack(int(self.run(store, _i32(ptr), _i32(n))))
        self._check_output(out_ptr, out_len, limits)
        size = self.memory.data_len(store)
        if out_ptr + out_len > size:
            raise self._outside(out_ptr, out_len, size)
        out = bytes(self.memory.read(store, out_ptr, out_ptr + out_len)) if out_len else b""
        if self.dealloc is not None:
            self.dealloc(store, _i32(out_ptr), _i32(out_len))
            self.dealloc(store, _i32(ptr), _i32(n))
        return out, size

    def _check_output(self, out_ptr: int, out_len: int, limits: Limits) -> None:
        if out_len > limits.max_output_bytes:
            raise WasmLimitExceeded("output", limits.max_output_bytes,
                                    f"output limit exceeded: {self.function} returned {out_len} bytes, more "
                                    f"than max_output_bytes={limits.max_output_bytes}")

    def _outside(self, out_ptr: int, out_len: int, size: int) -> WasmAbiError:
        return WasmAbiError(f"{self.function} returned output [{out_ptr}, {out_ptr + out_len}) outside the "
                            f"module's memory ({size} bytes)")

    def memory_len(self) -> int:
        if self.memory is None:
            return 0
        if self.ctx is not None:
            return int(self.rt.c_memory_size(self.ctx, self.mref))
        return int(self.memory.data_len(self.store))


def _i32(v: int) -> int:
    v &= _U32
    return v - (1 << 32) if v >= 1 << 31 else v


_ID_PREFIX = uuid.uuid4().hex[:20]
_ids = itertools.count(1)
_iso_cache: list[Any] = [-1, ""]


def _new_execution_id() -> str:
    """32 hex digits: 80 random bits per process + a counter (cheaper than uuid4 per call)."""
    return f"{_ID_PREFIX}{next(_ids) & 0xFFFFFFFFFFFF:012x}"


def _now_iso() -> str:
    now = time.time()
    sec = int(now)
    if _iso_cache[0] != sec:
        _iso_cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _iso_cache[0] = sec
    return f"{_iso_cache[1]}.{int((now - sec) * 1000):03d}Z"


class CallSession:
    """Calls of one module on one store + instance (memory ABI): a batch pays instantiation once.

    Every call gets fresh fuel, a fresh timeout and its own execution id, logs and denials;
    the guest's memory persists between calls (its allocator must free what ``dealloc`` is
    given). After a failed call the instance is dropped and the next call starts on a fresh
    one. WASI command modules run ``_start`` once per instance, so each of their calls gets a
    fresh instance. Use from one thread at a time; a context manager (``close()`` on exit)."""

    def __init__(self, executor: WasmExecutor, compiled: CompiledModule, *, function: str, limits: Limits,
                 host: HostContext) -> None:
        self.executor = executor
        self.module = compiled
        self.function = function if compiled.abi == "memory" else "_start"
        self.limits = limits
        self.host = host
        self.calls = 0
        self._inst: _Instance | None = None
        self._closed = False

    def __enter__(self) -> CallSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        if self._inst is not None:
            self._inst.close()
            self._inst = None

    def call(self, payload: Any) -> ExecutionResult:
        """One call with ``payload`` (JSON-serialisable, or ``bytes`` of JSON)."""
        if self._closed:
            raise WasmError("this CallSession is closed")
        data = _encode(payload)
        limits = self.limits
        host = self.host
        module_id = host.module_id
        execution_id = _new_execution_id()
        started_at = _now_iso()
        state = HostCallState(host, module_id, execution_id, limits.max_output_bytes,
                              time.monotonic() + limits.timeout_ms / 1000.0)
        self.calls += 1
        t0 = time.perf_counter()
        previous = set_current_state(state)
        fuel = peak = 0
        try:
            if self.module.abi == "memory":
                raw_out, fuel, peak = self._call_memory(data, state)
            else:
                raw_out, fuel, peak = self._call_wasi(data, state)
            output = _decode_output(raw_out, module_id)
        except BaseException as exc:
            duration_ms = (time.perf_counter() - t0) * 1000.0
            error = exc if isinstance(exc, WasmError) else None
            if error is not None:
                fuel = error.fuel_consumed or fuel
                peak = int(getattr(error, "peak_memory_bytes", 0) or peak)
                for name, value in (("execution_id", execution_id), ("logs", state.logs),
                                    ("denials", state.denials), ("context_updates", state.context_updates),
                                    ("peak_memory_bytes", peak), ("duration_ms", duration_ms)):
                    setattr(error, name, value)
            self.executor._record({
                "execution_id": execution_id, "module_id": module_id, "function": self.function,
                "started_at": started_at, "ok": False, "fuel_consumed": fuel, "peak_memory_bytes": peak,
                "duration_ms": round(duration_ms, 3), "error": str(exc) or type(exc).__name__,
                "error_type": type(exc).__name__,
                "limit": exc.kind if isinstance(exc, WasmLimitExceeded) else None,
                "trace": error.trace if error is not None else None,
            })
            raise
        finally:
            set_current_state(previous)
        duration_ms = (time.perf_counter() - t0) * 1000.0
        if state.dropped_logs:
            state.logs.append({"level": "warning", "message": f"{state.dropped_logs} more log messages dropped",
                               "source": "host"})
        self.executor._record({
            "execution_id": execution_id, "module_id": module_id, "function": self.function,
            "started_at": started_at, "ok": True, "fuel_consumed": fuel, "peak_memory_bytes": peak,
            "duration_ms": round(duration_ms, 3), "error": None, "error_type": None, "limit": None, "trace": None,
        })
        return ExecutionResult(execution_id, module_id, self.function, output, fuel, peak, duration_ms,
                               state.context_updates, state.logs, state.denials)

    def _check_start_memory(self) -> None:
        compiled, limits = self.module, self.limits
        if compiled.min_memory_bytes > limits.memory_bytes:
            raise WasmLimitExceeded("memory", limits.memory_mb,
                                    f"memory limit exceeded: module {self.host.module_id} needs "
                                    f"{compiled.min_memory_bytes >> 10} KiB of memory to start, "
                                    f"more than the limit of {limits.memory_mb} MiB")

    # -- memory ABI ---------------------------------------------------------------------------
    def _call_memory(self, data: bytes, state: HostCallState) -> tuple[bytes, int, int]:
        limits = self.limits
        inst = self._inst
        if inst is None:
            inst = self._new_instance()
        rt = inst.rt
        inst.start(limits)
        try:
            if inst.instance is None:
                inst.instantiate()
                self._inst = inst
            out, size = inst.roundtrip(data, limits)
            fuel = limits.fuel - inst.fuel_left()
        except BaseException as exc:
            rt.stop(inst.token)
            error = _classify(exc, rt, limits, self.host.module_id, fuel=limits.fuel - inst.fuel_left(),
                              memory=inst.memory_len(), stderr=_tail(inst.stderr))
            if inst.stdout is not None:
                _capture_logs(state, inst.stdout, None)
            self._inst = None  # never reuse an instance that failed mid-call
            inst.close()
            inst = None  # the traceback must not keep the store alive
            raise error from None
        rt.stop(inst.token)
        if inst.stdout is not None:
            _capture_logs(state, inst.stdout, inst.stderr)
        return out, fuel, size

    def _new_instance(self) -> _Instance:
        compiled = self.module
        sig = compiled.functions.get(self.function)
        if sig is None:
            callable_ = sorted(n for n, s in compiled.functions.items() if s == _SIG_MEMORY_FN)
            raise WasmAbiError(f"module {self.host.module_id} does not export function {self.function!r}; "
                               f"functions with the memory ABI signature: {', '.join(callable_) or '(none)'}")
        if sig != _SIG_MEMORY_FN:
            raise WasmAbiError(f"{self.function} must have the signature {_sig_text(_SIG_MEMORY_FN)}, "
                               f"not {_sig_text(sig)}")
        self._check_start_memory()
        return _Instance(_runtime(), compiled, self.function, self.limits)

    # -- WASI command ABI -------------------------------------------------------------------
    def _call_wasi(self, data: bytes, state: HostCallState) -> tuple[bytes, int, int]:
        compiled, limits = self.module, self.limits
        self._check_start_memory()
        rt = _runtime()
        w = rt.wasmtime
        stdout = _Capture(limits.max_output_bytes)
        stderr = _Capture(_STDERR_TAIL, tail_only=True)
        wasi = w.WasiConfig()
        wasi.argv = [self.host.module_id or "module"]
        stdin_file = _set_stdin(rt, wasi, data)
        wasi.stdout_custom = stdout.write
        wasi.stderr_custom = stderr.write
        store, token = rt.new_store(limits)
        store.set_wasi(wasi)
        memory: Any = None
        rt.start(store, token, limits)
        try:
            instance = compiled.instance_pre.instantiate(store)
            exports = instance.exports(store)
            memory = exports["memory"] if "memory" in compiled.exports else None
            try:
                exports["_start"](store)
            except w.ExitTrap as exit_:
                if exit_.code != 0:
                    raise _Exit(exit_.code) from None
        except BaseException as exc:
            mem = memory.data_len(store) if memory is not None else 0
            error = _classify(exc, rt, limits, self.host.module_id, fuel=_fuel_used(store, limits), memory=mem,
                              stderr=stderr.take())
            store = wasi = memory = instance = exports = None  # the traceback must not keep the store alive
            raise error from None
        finally:
            rt.stop(token)
            if stdin_file:
                os.unlink(stdin_file)
        err_text = stderr.take()
        if err_text.strip():
            state.add_log(2, err_text.decode("utf-8", errors="replace").rstrip("\n"), source="stderr")
        fuel = _fuel_used(store, limits)
        peak = memory.data_len(store) if memory is not None else 0
        if stdout.overflow:
            overflow = WasmLimitExceeded("output", limits.max_output_bytes,
                                         f"output limit exceeded: module {self.host.module_id} wrote more than "
                                         f"max_output_bytes={limits.max_output_bytes} to stdout", fuel_consumed=fuel)
            setattr(overflow, "peak_memory_bytes", peak)  # noqa: B010
            raise overflow
        return stdout.take(), fuel, peak


def _set_stdin(rt: _Runtime, wasi: Any, data: bytes) -> str | None:
    """Give the command ``data`` on stdin; returns a temporary file to delete, if one was needed."""
    if not data:
        return None  # an empty stdin is the default (and an empty byte vector is not safe to hand over)
    if rt.stdin_bytes:
        ctypes, ffi = rt.ctypes, rt.ffi
        vec = ffi.wasm_byte_vec_t()
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        ffi.wasm_byte_vec_new(ctypes.byref(vec), len(data), buf)
        ffi.wasi_config_set_stdin_bytes(wasi.ptr(), ctypes.byref(vec))  # takes ownership of the copy
        return None
    import tempfile

    fd, path = tempfile.mkstemp(prefix="adf-wasm-stdin-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    wasi.stdin_file = path
    return path


def _capture_logs(state: HostCallState, stdout: _Capture, stderr: _Capture | None) -> None:
    for cap, level, source in ((stdout, 1, "stdout"), (stderr, 2, "stderr")):
        if cap is None:
            continue
        text = cap.take()
        if text.strip():
            state.add_log(level, text.decode("utf-8", errors="replace").rstrip("\n"), source=source)


def _tail(cap: _Capture | None) -> bytes:
    return cap.take() if cap is not None else b""


def _fuel_used(store: Any, limits: Limits) -> int:
    try:
        return max(0, limits.fuel - int(store.get_fuel()))
    except Exception:
        return 0


def _decode_output(raw: bytes, module_id: str) -> Any:
    if not raw.strip():
        raise WasmAbiError(f"module {module_id} produced no output (expected a JSON document)")
    try:
        return _json_decode(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        preview = raw[:80].decode("utf-8", errors="replace")
        raise WasmAbiError(f"module {module_id} output is not UTF-8 JSON ({exc}): {preview!r}") from None


# -- turning whatever happened into a WasmError ---------------------------------------------------
class _AllocFailed(Exception):
    def __init__(self, ptr: int, n: int) -> None:
        self.size = n
        super().__init__(f"alloc({n}) returned {ptr}, which is not a usable buffer in the module's memory")


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _trap_reason(message: str) -> str:
    text = message.strip()
    if "Caused by:" in text:
        text = text.split("Caused by:", 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else message


def _format_trace(trap: Any) -> str | None:
    try:
        frames = trap.frames
    except Exception:
        return None
    if not frames:
        return None
    lines = []
    for i, frame in enumerate(frames[:_MAX_TRACE_FRAMES]):
        name = frame.func_name or f"<wasm function {frame.func_index}>"
        offset = frame.module_offset
        where = f" @ 0x{offset:x}" if 0 <= offset < 1 << 63 else ""
        lines.append(f"#{i} {name}{where}")
    if len(frames) > _MAX_TRACE_FRAMES:
        lines.append(f"... {len(frames) - _MAX_TRACE_FRAMES} more frames")
    return "\n".join(lines)


_BACKTRACE_LINE = re.compile(r"^(\d+):\s+(?:(0x[0-9a-fA-F]+) - )?(?:[^!]*!)?(.+)$")


def _trace_from_text(text: str) -> str | None:
    """The ``wasm backtrace:`` lines of an error message (errors carry no frame objects)."""
    if "wasm backtrace:" not in text:
        return None
    body = text.split("wasm backtrace:", 1)[1].split("Caused by:", 1)[0]
    lines = []
    for raw in body.splitlines():
        m = _BACKTRACE_LINE.match(raw.strip())
        if m:  # "0:     0x8b - <unknown>!<wasm function 1>" -> "#0 <wasm function 1> @ 0x8b"
            lines.append(f"#{m.group(1)} {m.group(3)}" + (f" @ {m.group(2)}" if m.group(2) else ""))
        elif raw.strip():
            lines.append(raw.strip())
    if len(lines) > _MAX_TRACE_FRAMES:
        lines = [*lines[:_MAX_TRACE_FRAMES], f"... {len(lines) - _MAX_TRACE_FRAMES} more frames"]
    return "\n".join(lines) or None


def _near_memory_limit(memory: int, limits: Limits) -> bool:
    """Whether a trap at this memory size is the aftermath of a refused memory.grow: the memory
    is within a quarter of the limit (at least one page) of it, so growing it failed."""
    limit = limits.memory_bytes
    return memory > 0 and memory + max(_PAGE, limit // 4) > limit


def _classify(exc: BaseException, rt: _Runtime, limits: Limits, module_id: str, *, fuel: int, memory: int,
              stderr: bytes) -> BaseException:
    """The :class:`WasmError` for whatever a call raised (``KeyboardInterrupt`` and friends pass),
    with ``fuel_consumed`` and a ``peak_memory_bytes`` attribute."""
    error = _classify_inner(exc, rt, limits, module_id, fuel=fuel, memory=memory, stderr=stderr)
    if isinstance(error, WasmError):
        if not error.fuel_consumed:
            error.fuel_consumed = fuel
        setattr(error, "peak_memory_bytes", memory)  # noqa: B010 - not a declared attribute of WasmError
    return error


def _classify_inner(exc: BaseException, rt: _Runtime, limits: Limits, module_id: str, *, fuel: int, memory: int,  # noqa: C901
                    stderr: bytes) -> BaseException:
    w = rt.wasmtime
    who = f"module {module_id}"
    err_tail = stderr.decode("utf-8", errors="replace").strip()
    oom_text = "memory allocation of" in err_tail or "out of memory" in err_tail.lower()
    if isinstance(exc, WasmError):
        return exc
    if isinstance(exc, (KeyboardInterrupt, SystemExit, MemoryError)):
        return exc
    if isinstance(exc, _Exit):
        msg = f"{who} exited with code {exc.code}"
        if oom_text or (exc.code != 0 and _near_memory_limit(memory, limits) and "alloc" in err_tail.lower()):
            return WasmLimitExceeded("memory", limits.memory_mb, f"memory limit exceeded ({limits.memory_mb} MiB): "
                                     f"{msg}: {err_tail[-500:]}", fuel_consumed=fuel)
        if err_tail:
            msg += f"; stderr: {err_tail[-1000:]}"
        return WasmTrap(msg, fuel_consumed=fuel)
    if isinstance(exc, _AllocFailed):
        if _near_memory_limit(memory, limits) or memory + exc.size > limits.memory_bytes:
            return WasmLimitExceeded("memory", limits.memory_mb, f"memory limit exceeded ({limits.memory_mb} MiB): "
                                     f"{who} could not allocate its input: {exc}", fuel_consumed=fuel)
        return WasmAbiError(f"{who}: {exc}", fuel_consumed=fuel)
    if isinstance(exc, w.Trap):
        code = exc.trap_code
        reason = _trap_reason(exc.message)
        trace = _format_trace(exc)
        if code == w.TrapCode.OUT_OF_FUEL:
            return WasmLimitExceeded("fuel", limits.fuel, f"fuel limit exceeded: {who} used all {limits.fuel} "
                                     "units of fuel", fuel_consumed=limits.fuel, trace=trace)
        if code == w.TrapCode.INTERRUPT:
            return WasmLimitExceeded("timeout", limits.timeout_ms, f"timeout: {who} ran longer than "
                                     f"{limits.timeout_ms} ms", fuel_consumed=fuel, trace=trace)
        if code == w.TrapCode.STACK_OVERFLOW:
            return WasmTrap(f"wasm trap: stack overflow in {who} (call stack exhausted; max_wasm_stack is "
                            f"{MAX_WASM_STACK >> 10} KiB; unbounded recursion?)", fuel_consumed=fuel, trace=trace)
        if oom_text or _near_memory_limit(memory, limits):
            return WasmLimitExceeded("memory", limits.memory_mb, f"memory limit exceeded ({limits.memory_mb} MiB): "
                                     f"{who} trapped ({reason}) after its memory reached {memory >> 10} KiB and "
                                     "could not grow", fuel_consumed=fuel, trace=trace)
        return WasmTrap(f"wasm trap in {who}: {reason}", fuel_consumed=fuel, trace=trace)
    if isinstance(exc, w.ExitTrap):  # proc_exit from a memory-ABI module
        return _classify_inner(_Exit(exc.code), rt, limits, module_id, fuel=fuel, memory=memory, stderr=stderr)
    if isinstance(exc, w.WasmtimeError):
        text = str(exc)
        if TIMEOUT_MESSAGE in text:
            return WasmLimitExceeded("timeout", limits.timeout_ms, f"timeout: {who} ran longer than "
                                     f"{limits.timeout_ms} ms", fuel_consumed=fuel, trace=_trace_from_text(text))
        if "exceeds memory limits" in text or "memory minimum size" in text:
            return WasmLimitExceeded("memory", limits.memory_mb, f"memory limit exceeded ({limits.memory_mb} MiB): "
                                     f"{who}: {_first_line(text)}", fuel_consumed=fuel)
        if "all fuel consumed" in text:
            return WasmLimitExceeded("fuel", limits.fuel, f"fuel limit exceeded: {who}", fuel_consumed=limits.fuel)
        if "interrupt" in text:
            return WasmLimitExceeded("timeout", limits.timeout_ms, f"timeout: {who} ran longer than "
                                     f"{limits.timeout_ms} ms", fuel_consumed=fuel)
        return WasmTrap(f"wasm error in {who}: {_trap_reason(text)}", fuel_consumed=fuel)
    return WasmTrap(f"host error during a call of {who}: {type(exc).__name__}: {exc}", fuel_consumed=fuel)

