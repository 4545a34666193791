"""The host functions that need no permission: ``adf.log``, ``adf.get_context``, ``adf.set_context``.

``log`` adds a line to the call's logs; the context functions read and update the run context
(``HostContext.context``), each update also kept on the call (``context_updates``).
"""

from __future__ import annotations

from typing import Any

from active_data_flow.wasm.host_call import HostCallState, read_guest, require_state

__all__ = ["get_context", "host_log", "set_context"]


def host_log(caller: Any, level: int, ptr: int, length: int) -> None:
    state = require_state("log")
    raw = read_guest(caller, ptr, length, "log")
    state.add_log(level, raw.decode("utf-8", errors="replace"))


def get_context(state: HostCallState, req: dict[str, Any]) -> dict[str, Any]:
    key = req.get("key")
    if not isinstance(key, str):
        return {"ok": False, "error": "get_context needs a string 'key'"}
    return {"ok": True, "value": state.host.context.get(key)}


def set_context(state: HostCallState, req: dict[str, Any]) -> dict[str, Any]:
    key = req.get("key")
    if not isinstance(key, str):
        return {"ok": False, "error": "set_context needs a string 'key'"}
    value = req.get("value")
    state.host.context[key] = value
    state.context_updates[key] = value
    return {"ok": True}
