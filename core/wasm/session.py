"""The call path: :class:`CallSession` calls one module, once or many times in a row, and
answers an :class:`ExecutionResult`.

A call encodes the payload, installs the per-call host state, runs the module through the
memory ABI (on the session's reused :class:`~active_data_flow.wasm.instance.Instance`) or as a WASI command
(a fresh instance per call), decodes the JSON answer and records the call in the executor's
execution log. ``call`` is the per-record hot path of a batch (see bench/wasm.py).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from active_data_flow.wasm.classify import GuestExit, classify
from active_data_flow.wasm.compiled import SIG_MEMORY_FN, CompiledModule, sig_text
from active_data_flow.wasm.errors import WasmAbiError, WasmError, WasmLimitExceeded
from active_data_flow.wasm.host_call import HostCallState, HostContext, set_current_state
from active_data_flow.wasm.instance import Instance, OutputCapture
from active_data_flow.wasm.limits import Limits
from active_data_flow.wasm.runtime import Runtime, get_runtime

if TYPE_CHECKING:
    from active_data_flow.wasm.executor import WasmExecutor

__all__ = ["CallSession", "ExecutionResult"]

_STDERR_TAIL = 4096


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


_json_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_json_decode = json.JSONDecoder().decode


def _encode(payload: Any) -> bytes:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    return _json_encode(payload).encode("utf-8")


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
        self._inst: Instance | None = None
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
            error = classify(exc, rt, limits, self.host.module_id, fuel=limits.fuel - inst.fuel_left(),
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

    def _new_instance(self) -> Instance:
        compiled = self.module
        sig = compiled.functions.get(self.function)
        if sig is None:
            callable_ = sorted(n for n, s in compiled.functions.items() if s == SIG_MEMORY_FN)
            raise WasmAbiError(f"module {self.host.module_id} does not export function {self.function!r}; "
                               f"functions with the memory ABI signature: {', '.join(callable_) or '(none)'}")
        if sig != SIG_MEMORY_FN:
            raise WasmAbiError(f"{self.function} must have the signature {sig_text(SIG_MEMORY_FN)}, "
                               f"not {sig_text(sig)}")
        self._check_start_memory()
        return Instance(get_runtime(), compiled, self.function, self.limits)

    # -- WASI command ABI -------------------------------------------------------------------
    def _call_wasi(self, data: bytes, state: HostCallState) -> tuple[bytes, int, int]:
        compiled, limits = self.module, self.limits
        self._check_start_memory()
        rt = get_runtime()
        w = rt.wasmtime
        stdout = OutputCapture(limits.max_output_bytes)
        stderr = OutputCapture(_STDERR_TAIL, tail_only=True)
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
                    raise GuestExit(exit_.code) from None
        except BaseException as exc:
            mem = memory.data_len(store) if memory is not None else 0
            error = classify(exc, rt, limits, self.host.module_id, fuel=_fuel_used(store, limits), memory=mem,
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


def _set_stdin(rt: Runtime, wasi: Any, data: bytes) -> str | None:
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


def _capture_logs(state: HostCallState, stdout: OutputCapture, stderr: OutputCapture | None) -> None:
    for cap, level, source in ((stdout, 1, "stdout"), (stderr, 2, "stderr")):
        if cap is None:
            continue
        text = cap.take()
        if text.strip():
            state.add_log(level, text.decode("utf-8", errors="replace").rstrip("\n"), source=source)


def _tail(cap: OutputCapture | None) -> bytes:
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
