"""Run WebAssembly modules: JSON in, JSON out, inside limits, with the ``adf`` host functions.

:class:`WasmExecutor` compiles modules (through a :class:`~active_data_flow.wasm.cache.ModuleCache`),
loads them from the module registry or from ``.wasm`` / ``.wat`` files, and calls them with
one JSON document (``call``) or several in a row on one instance (``session``). Two guest
ABIs are detected from the exports (docs/WASM_ABI.md):

* **memory**: ``memory``, ``alloc(len) -> ptr`` (optional ``dealloc(ptr, len)``) and the
  called function ``NAME(ptr, len) -> i64`` returning ``(out_ptr << 32) | out_len``;
* **wasi**: a WASI command (``_start``): the input on stdin, the output on stdout.

Every call runs with fresh limits (:class:`~active_data_flow.wasm.limits.Limits`): fuel (instructions),
linear memory, wall-clock time (epoch interruption driven by one shared watchdog thread) and
output size. Whatever the guest does — loop forever, grow memory without end, recurse until
the stack is gone, answer gigabytes — the call ends with a :class:`~active_data_flow.wasm.errors.WasmError`
and the host process, the engine and every other call carry on. Each call is recorded in the
execution log (``execution_log.record(entry)``).

One wasmtime ``Engine`` (fuel + epoch interruption, component model off) and one ``Linker``
(WASI and the ``adf`` functions) serve every executor of the process, so compiled modules are
interchangeable between executors. ``wasmtime`` is imported on first use.

The parts, one module each: :mod:`active_data_flow.wasm.runtime` (the engine, linker and timeout
watchdog), :mod:`active_data_flow.wasm.compiled` (a compiled module and its ABI check),
:mod:`active_data_flow.wasm.session` (the call path), :mod:`active_data_flow.wasm.instance` (the reused memory-ABI
instance and WASI output capture) and :mod:`active_data_flow.wasm.classify` (what went wrong, as a
``WasmError``). Their public names used elsewhere are importable from here.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import os
import threading
from typing import Any

from active_data_flow.wasm.cache import ModuleCache
from active_data_flow.wasm.classify import first_line
from active_data_flow.wasm.compiled import CompiledModule, describe_module
from active_data_flow.wasm.errors import ModuleNotFoundInRegistry, WasmAbiError
from active_data_flow.wasm.hostfns import HostContext
from active_data_flow.wasm.limits import Limits
from active_data_flow.wasm.permissions import PermissionSet
from active_data_flow.wasm.runtime import ENGINE_SETTINGS, executor_engine_key, get_runtime
from active_data_flow.wasm.runtime import MAX_WASM_STACK as MAX_WASM_STACK
from active_data_flow.wasm.runtime import TICK_S as TICK_S
from active_data_flow.wasm.runtime import TIMEOUT_MESSAGE as TIMEOUT_MESSAGE
from active_data_flow.wasm.runtime import WASI_MODULE as WASI_MODULE
from active_data_flow.wasm.session import CallSession, ExecutionResult

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
        return get_runtime().engine

    @property
    def engine_key(self) -> str:
        return executor_engine_key()

    # -- compile / load -------------------------------------------------------------------
    def compile(self, wasm: bytes, *, module_id: str = "") -> CompiledModule:
        """Validate and compile ``wasm`` (binary, or WAT text), through the cache.
        :class:`WasmAbiError` when it is not a valid module or does not follow a guest ABI."""
        rt = get_runtime()
        data = bytes(wasm)
        if not data.startswith(b"\0asm"):
            try:
                data = bytes(rt.wasmtime.wat2wasm(data.decode("utf-8")))
            except (UnicodeDecodeError, rt.wasmtime.WasmtimeError) as exc:
                raise WasmAbiError(f"not a WebAssembly module (neither wasm binary nor WAT text): "
                                   f"{first_line(str(exc))}") from None
        sha = hashlib.sha256(data).hexdigest()
        try:
            module = self.cache.get_or_compile(rt.engine, data, sha)
        except rt.wasmtime.WasmtimeError as exc:
            raise WasmAbiError(f"invalid WebAssembly module {module_id or 'sha256:' + sha[:12]}: {exc}") from None
        return describe_module(rt, module, sha, module_id or f"sha256:{sha[:12]}")

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
