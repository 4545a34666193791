"""One store + instance of a memory-ABI module, reused by the calls of a session, and the
capture of a module's WASI output.

:meth:`Instance.roundtrip` is the hot path of a batch (see bench/wasm.py): alloc, write the
input, call, read the output, dealloc — with wasmtime-py's ctypes functions called directly on
raw values when the runtime has them. :class:`OutputCapture` collects a WASI stream up to a
limit.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from active_data_flow.wasm.classify import AllocFailed
from active_data_flow.wasm.compiled import CompiledModule
from active_data_flow.wasm.errors import WasmAbiError, WasmLimitExceeded
from active_data_flow.wasm.host_call import unpack
from active_data_flow.wasm.limits import Limits
from active_data_flow.wasm.runtime import TICK_S, Runtime, wasi_instances

__all__ = ["Instance", "OutputCapture"]

_U32 = 0xFFFFFFFF
_EFBIG = 27


# -- output capture (WASI stdout / stderr) -------------------------------------------------------
class OutputCapture:
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


# -- a memory-ABI instance ----------------------------------------------------------------------
class Instance:
    """One store + instance of a memory-ABI module.

    :meth:`roundtrip` is the hot path of a batch: with wasmtime-py's ctypes functions called
    directly on raw values (signatures checked at compile time), one call costs a few
    microseconds over the guest's own work; without them it uses the public API."""

    def __init__(self, rt: Runtime, compiled: CompiledModule, function: str, limits: Limits) -> None:
        self.rt = rt
        self.store, self.token = rt.new_store(limits)
        self.stdout: OutputCapture | None = None
        self.stderr: OutputCapture | None = None
        if compiled.uses_wasi:  # a memory-ABI module built for WASI: its prints become log lines
            self.stdout = OutputCapture(64 << 10, tail_only=True)
            self.stderr = OutputCapture(64 << 10, tail_only=True)
            wasi = rt.wasmtime.WasiConfig()
            wasi.argv = [compiled.module_id or "module"]
            wasi.stdout_custom = self.stdout.write
            wasi.stderr_custom = self.stderr.write
            self.store.set_wasi(wasi)
            wasi_instances.add(self)
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
            raise AllocFailed(ptr, n)
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
            raise AllocFailed(ptr, n)
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
