"""Turning whatever a call raised into a :class:`~active_data_flow.wasm.errors.WasmError`.

:func:`classify` names the limit that was hit (fuel, memory, timeout), the trap (with the
guest's stack trace when wasmtime gives one), the exit code of a WASI command or the host
error, and attaches the fuel consumed and the memory reached. :class:`AllocFailed` and
:class:`GuestExit` are what the call path raises for the two failures wasmtime does not report
itself.
"""

from __future__ import annotations

import re
from typing import Any

from active_data_flow.wasm.errors import WasmAbiError, WasmError, WasmLimitExceeded, WasmTrap
from active_data_flow.wasm.limits import Limits
from active_data_flow.wasm.runtime import MAX_WASM_STACK, TIMEOUT_MESSAGE, WASM_PAGE, Runtime

__all__ = ["AllocFailed", "GuestExit", "classify", "first_line"]

_MAX_TRACE_FRAMES = 40


class AllocFailed(Exception):
    """The guest's ``alloc`` gave no usable buffer for the input (``size``: the bytes asked for)."""

    def __init__(self, ptr: int, n: int) -> None:
        self.size = n
        super().__init__(f"alloc({n}) returned {ptr}, which is not a usable buffer in the module's memory")


class GuestExit(Exception):
    """A WASI command ended with a non-zero exit ``code``."""

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
    return memory > 0 and memory + max(WASM_PAGE, limit // 4) > limit


def classify(exc: BaseException, rt: Runtime, limits: Limits, module_id: str, *, fuel: int, memory: int,
             stderr: bytes) -> BaseException:
    """The :class:`WasmError` for whatever a call raised (``KeyboardInterrupt`` and friends pass),
    with ``fuel_consumed`` and a ``peak_memory_bytes`` attribute."""
    error = _classify_inner(exc, rt, limits, module_id, fuel=fuel, memory=memory, stderr=stderr)
    if isinstance(error, WasmError):
        if not error.fuel_consumed:
            error.fuel_consumed = fuel
        setattr(error, "peak_memory_bytes", memory)  # noqa: B010 - not a declared attribute of WasmError
    return error


def _classify_inner(exc: BaseException, rt: Runtime, limits: Limits, module_id: str, *, fuel: int, memory: int,
                    stderr: bytes) -> BaseException:
    w = rt.wasmtime
    who = f"module {module_id}"
    err_tail = stderr.decode("utf-8", errors="replace").strip()
    oom_text = "memory allocation of" in err_tail or "out of memory" in err_tail.lower()
    if isinstance(exc, WasmError):
        return exc
    if isinstance(exc, (KeyboardInterrupt, SystemExit, MemoryError)):
        return exc
    if isinstance(exc, GuestExit):
        return _exited(exc.code, limits, who, fuel=fuel, memory=memory, err_tail=err_tail, oom_text=oom_text)
    if isinstance(exc, AllocFailed):
        return _alloc_failed(exc, limits, who, fuel=fuel, memory=memory)
    if isinstance(exc, w.Trap):
        return _trapped(exc, w, limits, who, fuel=fuel, memory=memory, oom_text=oom_text)
    if isinstance(exc, w.ExitTrap):  # proc_exit from a memory-ABI module
        return _exited(exc.code, limits, who, fuel=fuel, memory=memory, err_tail=err_tail, oom_text=oom_text)
    if isinstance(exc, w.WasmtimeError):
        return _wasmtime_error(str(exc), limits, who, fuel=fuel)
    return WasmTrap(f"host error during a call of {who}: {type(exc).__name__}: {exc}", fuel_consumed=fuel)


def _exited(code: int, limits: Limits, who: str, *, fuel: int, memory: int, err_tail: str,
            oom_text: bool) -> WasmError:
    """A WASI command (or a memory-ABI module calling ``proc_exit``) exited with ``code``."""
    msg = f"{who} exited with code {code}"
    if oom_text or (code != 0 and _near_memory_limit(memory, limits) and "alloc" in err_tail.lower()):
        return WasmLimitExceeded("memory", limits.memory_mb, f"memory limit exceeded ({limits.memory_mb} MiB): "
                                 f"{msg}: {err_tail[-500:]}", fuel_consumed=fuel)
    if err_tail:
        msg += f"; stderr: {err_tail[-1000:]}"
    return WasmTrap(msg, fuel_consumed=fuel)


def _alloc_failed(exc: AllocFailed, limits: Limits, who: str, *, fuel: int, memory: int) -> WasmError:
    if _near_memory_limit(memory, limits) or memory + exc.size > limits.memory_bytes:
        return WasmLimitExceeded("memory", limits.memory_mb, f"memory limit exceeded ({limits.memory_mb} MiB): "
                                 f"{who} could not allocate its input: {exc}", fuel_consumed=fuel)
    return WasmAbiError(f"{who}: {exc}", fuel_consumed=fuel)


def _trapped(exc: Any, w: Any, limits: Limits, who: str, *, fuel: int, memory: int, oom_text: bool) -> WasmError:
    """A ``wasmtime.Trap``: a limit (fuel, timeout, memory that could not grow) or the guest's own trap."""
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


def _wasmtime_error(text: str, limits: Limits, who: str, *, fuel: int) -> WasmError:
    """A ``wasmtime.WasmtimeError`` (the epoch callback's timeout, a refused memory, ...), by its text."""
    if TIMEOUT_MESSAGE in text:
        return WasmLimitExceeded("timeout", limits.timeout_ms, f"timeout: {who} ran longer than "
                                 f"{limits.timeout_ms} ms", fuel_consumed=fuel, trace=_trace_from_text(text))
    if "exceeds memory limits" in text or "memory minimum size" in text:
        return WasmLimitExceeded("memory", limits.memory_mb, f"memory limit exceeded ({limits.memory_mb} MiB): "
                                 f"{who}: {first_line(text)}", fuel_consumed=fuel)
    if "all fuel consumed" in text:
        return WasmLimitExceeded("fuel", limits.fuel, f"fuel limit exceeded: {who}", fuel_consumed=limits.fuel)
    if "interrupt" in text:
        return WasmLimitExceeded("timeout", limits.timeout_ms, f"timeout: {who} ran longer than "
                                 f"{limits.timeout_ms} ms", fuel_consumed=fuel)
    return WasmTrap(f"wasm error in {who}: {_trap_reason(text)}", fuel_consumed=fuel)


def first_line(text: str) -> str:
    """The first non-blank line of an error message."""
    return text.strip().splitlines()[0] if text.strip() else text
