"""What one host call sees and how it reaches the guest: the plumbing of every ``adf.*`` function.

:class:`HostContext` is what a call may use (permissions, the run context, databases, files,
the audit callback); :class:`HostCallState` the per-call bookkeeping the functions write into
(logs, context updates, denials), found through :func:`current_state` on the thread that called
into wasm. :func:`read_guest` / :func:`write_response` move a request and its JSON response
across the guest's memory (the response in a buffer from the guest's ``alloc``), and
:func:`json_function` turns a handler ``(state, request) -> response`` into an ``adf.*``
function. The protocol is in docs/WASM_ABI.md.
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from active_data_flow.wasm.errors import WasmPermissionDenied, WasmTrap
from active_data_flow.wasm.permissions import PermissionSet
from active_data_flow.wasm.storage import Storage

__all__ = [
    "LOG_LEVELS",
    "MAX_LOG_ENTRIES",
    "MAX_LOG_MESSAGE",
    "Handler",
    "HostCallState",
    "HostContext",
    "HostTrap",
    "current_state",
    "dumps",
    "json_function",
    "pack",
    "read_guest",
    "require_state",
    "set_current_state",
    "unpack",
    "write_response",
]

log = logging.getLogger("adf.wasm")

#: guest log level -> Python logging level
LOG_LEVELS = {0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR}
_LEVEL_NAMES = {0: "debug", 1: "info", 2: "warning", 3: "error"}

MAX_LOG_ENTRIES = 1000
MAX_LOG_MESSAGE = 8192
_U32 = 0xFFFFFFFF


@dataclass
class HostContext:
    """What the host functions of one call (or one :class:`~active_data_flow.wasm.executor.CallSession`) see.

    ``permissions``: what the module may do (empty: nothing); ``context``: the run context
    behind ``get_context`` / ``set_context`` (updated in place); ``databases``: connection
    name -> URL for ``db_query`` (``sqlite:///path`` runs on the standard library's sqlite3,
    any other URL through SQLAlchemy); ``files``: the storage relative ``file_*`` paths refer
    to; ``audit``: called with a dict for every permission denial and permitted host call."""

    module_id: str = ""
    permissions: PermissionSet = field(default_factory=PermissionSet)
    context: dict[str, Any] = field(default_factory=dict)
    databases: Mapping[str, str] = field(default_factory=dict)
    files: Storage | None = None
    http_timeout_s: float = 10.0
    audit: Callable[[dict[str, Any]], None] | None = None


class HostTrap(WasmTrap):
    """A host function cannot answer (no ``alloc`` export, a pointer outside memory...): the
    guest traps with this message."""


@dataclass
class HostCallState:
    """Per-call bookkeeping the host functions write into (read back into ``ExecutionResult``)."""

    host: HostContext
    module_id: str
    execution_id: str
    max_response_bytes: int = 4 << 20
    deadline: float = 0.0  # time.monotonic() at which the call times out (0: none)
    logs: list[dict[str, Any]] = field(default_factory=list)
    context_updates: dict[str, Any] = field(default_factory=dict)
    denials: list[dict[str, Any]] = field(default_factory=list)
    dropped_logs: int = 0

    def remaining_s(self, cap: float) -> float:
        if not self.deadline:
            return cap
        return max(0.001, min(cap, self.deadline - time.monotonic()))

    # -- reporting -----------------------------------------------------------------------
    def add_log(self, level: int, message: str, source: str = "guest") -> None:
        if len(self.logs) >= MAX_LOG_ENTRIES:
            self.dropped_logs += 1
            return
        if len(message) > MAX_LOG_MESSAGE:
            message = message[:MAX_LOG_MESSAGE] + f"... ({len(message) - MAX_LOG_MESSAGE} more characters)"
        level = level if level in LOG_LEVELS else 1
        entry: dict[str, Any] = {"level": _LEVEL_NAMES[level], "message": message}
        if source != "guest":
            entry["source"] = source
        self.logs.append(entry)
        if log.isEnabledFor(LOG_LEVELS[level]):
            log.log(LOG_LEVELS[level], "wasm %s [%s]: %s", self.module_id, self.execution_id, message,
                    extra={"wasm_module_id": self.module_id, "execution_id": self.execution_id})

    def _audit(self, event: dict[str, Any]) -> None:
        if self.host.audit is None:
            return
        try:
            self.host.audit(event)
        except Exception:  # an audit sink failing must not break the guest
            log.exception("wasm audit callback failed")

    def allowed(self, function: str, kind: str, resource: str) -> None:
        if self.host.audit is not None:
            self._audit({"event": "host_call", "module_id": self.module_id, "execution_id": self.execution_id,
                         "function": function, "permission": kind, "resource": resource, "ts": time.time()})

    def denied(self, function: str, kind: str, resource: str) -> dict[str, Any]:
        entry = {"event": "permission_denied", "module_id": self.module_id, "execution_id": self.execution_id,
                 "permission": kind, "resource": resource, "function": function, "ts": time.time()}
        self.denials.append(entry)
        self._audit(entry)
        log.warning("wasm %s [%s]: permission denied: %s needs %s for %r", self.module_id, self.execution_id,
                    function, kind, resource)
        message = str(WasmPermissionDenied(kind, resource, self.module_id))
        return {"ok": False, "error": message, "denied": f"{kind}:{resource}"}

    def check(self, function: str, kind: str, resource: str) -> dict[str, Any] | None:
        """None when allowed (and audited), else the denial response for the guest."""
        if self.host.permissions.allows(kind, resource):
            self.allowed(function, kind, resource)
            return None
        return self.denied(function, kind, resource)


# -- the current call (host functions run on the thread that called into wasm) ---------------
_local = threading.local()


def current_state() -> HostCallState | None:
    state: HostCallState | None = getattr(_local, "state", None)
    return state


def set_current_state(state: HostCallState | None) -> HostCallState | None:
    """Make ``state`` the one host functions on this thread write into; returns the previous one."""
    previous: HostCallState | None = getattr(_local, "state", None)
    _local.state = state
    return previous


# -- packing ------------------------------------------------------------------------------------
def pack(ptr: int, length: int) -> int:
    """``(ptr << 32) | len`` as a signed i64 (what wasm returns)."""
    value = ((ptr & _U32) << 32) | (length & _U32)
    return value - (1 << 64) if value >= 1 << 63 else value


def unpack(value: int) -> tuple[int, int]:
    """An i64 result -> ``(ptr, len)`` (unsigned 32-bit halves)."""
    value &= 0xFFFFFFFFFFFFFFFF
    return value >> 32, value & _U32


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return int(value) if value.is_finite() and value == value.to_integral_value() else float(value)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=_json_default).encode("utf-8")


# -- guest memory access --------------------------------------------------------------------
def _memory(caller: Any, function: str) -> Any:
    mem = caller.get("memory")
    if mem is None or not hasattr(mem, "data_len"):
        raise HostTrap(f"adf.{function}: the module must export its linear memory as 'memory'")
    return mem


def read_guest(caller: Any, ptr: int, length: int, function: str) -> bytes:
    mem = _memory(caller, function)
    ptr &= _U32
    length &= _U32
    if ptr + length > mem.data_len(caller):
        raise HostTrap(f"adf.{function}: request [{ptr}, {ptr + length}) is outside the module's memory")
    return bytes(mem.read(caller, ptr, ptr + length)) if length else b""


def write_response(caller: Any, response: dict[str, Any], function: str, state: HostCallState) -> int:
    data = dumps(response)
    if len(data) > state.max_response_bytes:
        data = dumps({"ok": False, "error": f"response of {len(data)} bytes exceeds the limit of "
                                           f"{state.max_response_bytes} bytes (max_output_bytes)"})
    alloc = caller.get("alloc")
    if alloc is None:
        raise HostTrap(f"adf.{function} returns its response in guest memory: the module must export "
                       "alloc(len: i32) -> i32")
    ptr = alloc(caller, len(data))
    if not isinstance(ptr, int):
        raise HostTrap(f"adf.{function}: alloc must return an i32 pointer")
    ptr &= _U32
    mem = _memory(caller, function)
    if ptr + len(data) > mem.data_len(caller):
        raise HostTrap(f"adf.{function}: alloc({len(data)}) returned {ptr}, outside the module's memory")
    if data:
        mem.write(caller, data, ptr)
    return pack(ptr, len(data))


def _request(raw: bytes) -> dict[str, Any] | str:
    """The JSON request object, or an error message."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"request is not valid UTF-8 JSON: {exc}"
    if not isinstance(doc, dict):
        return "request must be a JSON object"
    return doc


# -- the JSON functions --------------------------------------------------------------------------
#: what a JSON host function does: ``(state, request object) -> response object``
Handler = Callable[[HostCallState, dict[str, Any]], dict[str, Any]]


def require_state(function: str) -> HostCallState:
    """The state of the current call; a :class:`HostTrap` outside one."""
    state = current_state()
    if state is None:
        raise HostTrap(f"adf.{function} called outside an executor call")
    return state


def json_function(name: str, handler: Handler) -> Callable[[Any, int, int], int]:
    """The ``adf.<name>`` function (``(caller, ptr, len) -> i64``) around ``handler``: a request
    that is not a JSON object, or a handler that raises, is an ``{"ok": false}`` answer."""

    def function(caller: Any, ptr: int, length: int) -> int:
        state = require_state(name)
        req = _request(read_guest(caller, ptr, length, name))
        if isinstance(req, str):
            response: dict[str, Any] = {"ok": False, "error": req}
        else:
            try:
                response = handler(state, req)
            except HostTrap:
                raise
            except Exception as exc:  # every failure is an answer, never a host crash
                log.debug("adf.%s failed", name, exc_info=True)
                response = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return write_response(caller, response, name, state)

    function.__name__ = f"host_{name}"
    return function
