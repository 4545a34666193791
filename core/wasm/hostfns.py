"""The host functions a WebAssembly module may import from the ``adf`` module.

Every function except ``log`` takes the pointer and length of a UTF-8 JSON request in the
guest's memory and returns an ``i64`` packing ``(ptr << 32) | len`` of a UTF-8 JSON response
that the host wrote into guest memory, at an address it got by calling the guest's exported
``alloc(len) -> ptr`` (the guest owns that buffer afterwards; a guest without ``alloc`` traps).
Responses are ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. See docs/WASM_ABI.md.

=================  =====================================================  ===================
function           request                                                permission
=================  =====================================================  ===================
``log``            ``(level: i32, ptr, len)``: plain text, no response     none
``get_context``    ``{"key": "k"}``                                        none
``set_context``    ``{"key": "k", "value": ...}``                          none
``http_request``   ``{"method", "url", "headers", "body"}``                ``http:read`` (GET,
                                                                          HEAD) else
                                                                          ``http:write``
``db_query``       ``{"connection", "sql", "params"}``                     ``db:read`` /
                                                                          ``db:write`` per table
``file_read``      ``{"path"}``                                            ``file:read``
``file_write``     ``{"path", "content" | "content_base64"}``              ``file:write``
=================  =====================================================  ===================

The permission is checked before anything else. A denial answers the guest
``{"ok": false, "error": "permission denied: ...", "denied": "<kind>:<resource>"}``, is kept

One module per family: :mod:`active_data_flow.wasm.host_call` (the per-call state, guest memory access and
the JSON function wrapper they share), :mod:`active_data_flow.wasm.host_basic` (``log``, the context),
:mod:`active_data_flow.wasm.host_http`, :mod:`active_data_flow.wasm.host_db` (with :mod:`active_data_flow.wasm.sql_shape`, the
SQL classification) and :mod:`active_data_flow.wasm.host_files`. Their public names are importable from
here.

Standard library only at import: ``wasmtime`` (for the function types), ``SQLAlchemy`` and
``boto3`` are imported when first needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from active_data_flow.wasm.host_basic import get_context, host_log, set_context
from active_data_flow.wasm.host_call import (
    LOG_LEVELS,
    Handler,
    HostCallState,
    HostContext,
    HostTrap,
    current_state,
    json_function,
    pack,
    unpack,
)
from active_data_flow.wasm.host_call import MAX_LOG_ENTRIES as MAX_LOG_ENTRIES
from active_data_flow.wasm.host_call import MAX_LOG_MESSAGE as MAX_LOG_MESSAGE
from active_data_flow.wasm.host_call import dumps as dumps
from active_data_flow.wasm.host_call import read_guest as read_guest
from active_data_flow.wasm.host_call import set_current_state as set_current_state
from active_data_flow.wasm.host_call import write_response as write_response
from active_data_flow.wasm.host_db import MAX_DB_ROWS as MAX_DB_ROWS
from active_data_flow.wasm.host_db import db_query
from active_data_flow.wasm.host_db import run_sqlalchemy as run_sqlalchemy
from active_data_flow.wasm.host_db import run_sqlite as run_sqlite
from active_data_flow.wasm.host_files import file_read, file_write
from active_data_flow.wasm.host_http import http_request
from active_data_flow.wasm.sql_shape import SqlShape as SqlShape
from active_data_flow.wasm.sql_shape import classify_sql

__all__ = [
    "HOST_FUNCTIONS",
    "HOST_MODULE",
    "LOG_LEVELS",
    "HostCallState",
    "HostContext",
    "HostTrap",
    "classify_sql",
    "current_state",
    "define_host_functions",
    "pack",
    "unpack",
]

#: the import module name of the host functions
HOST_MODULE = "adf"
#: name -> (params, results) in wasm value types
HOST_FUNCTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "log": (("i32", "i32", "i32"), ()),
    "get_context": (("i32", "i32"), ("i64",)),
    "set_context": (("i32", "i32"), ("i64",)),
    "http_request": (("i32", "i32"), ("i64",)),
    "db_query": (("i32", "i32"), ("i64",)),
    "file_read": (("i32", "i32"), ("i64",)),
    "file_write": (("i32", "i32"), ("i64",)),
}

_HANDLERS: dict[str, Handler] = {
    "get_context": get_context,
    "set_context": set_context,
    "http_request": http_request,
    "db_query": db_query,
    "file_read": file_read,
    "file_write": file_write,
}


def host_function_impls() -> dict[str, Callable[..., Any]]:
    """name -> the Python function (taking a wasmtime ``Caller`` first) behind ``adf.<name>``."""
    impls: dict[str, Callable[..., Any]] = {"log": host_log}
    for name, handler in _HANDLERS.items():
        impls[name] = json_function(name, handler)
    return impls


def define_host_functions(linker: Any) -> None:
    """Define every ``adf.*`` function in a ``wasmtime.Linker`` (store-independent, so once per
    linker). The functions find their call through :func:`current_state`."""
    import wasmtime

    types = {"i32": wasmtime.ValType.i32(), "i64": wasmtime.ValType.i64()}
    for name, impl in host_function_impls().items():
        params, results = HOST_FUNCTIONS[name]
        ty = wasmtime.FuncType([types[p] for p in params], [types[r] for r in results])
        linker.define_func(HOST_MODULE, name, ty, impl, access_caller=True)
