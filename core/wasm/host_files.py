"""The file host functions ``adf.file_read`` and ``adf.file_write``, within ``file:read`` /
``file:write`` permissions.

A relative path is a key in the step's file store (``HostContext.files``); an
``s3://bucket/key`` URL names an object directly.
"""

from __future__ import annotations

import base64
from typing import Any

from active_data_flow.wasm.host_call import HostCallState
from active_data_flow.wasm.storage import Storage, open_storage

__all__ = ["file_read", "file_write"]

_s3_stores: dict[str, Storage] = {}


def _storage_for(state: HostCallState, path: str) -> tuple[Storage, str] | str:
    if path.startswith("s3://"):
        bucket, _, key = path[5:].partition("/")
        if not bucket or not key:
            return f"invalid s3 URL {path!r}"
        store = _s3_stores.get(bucket)
        if store is None:
            store = _s3_stores.setdefault(bucket, open_storage(f"s3://{bucket}"))
        return store, key
    if state.host.files is None:
        return "no file store is configured for this step (files)"
    return state.host.files, path


def _file_path(req: dict[str, Any]) -> str | None:
    path = req.get("path")
    if not isinstance(path, str) or not path.strip():
        return None
    return path


def file_read(state: HostCallState, req: dict[str, Any]) -> dict[str, Any]:
    path = _file_path(req)
    if path is None:
        return {"ok": False, "error": "file_read needs a 'path'"}
    denied = state.check("file_read", "file:read", path)
    if denied is not None:
        return denied
    where = _storage_for(state, path)
    if isinstance(where, str):
        return {"ok": False, "error": where}
    store, key = where
    try:
        data = store.get(key)
    except FileNotFoundError:
        return {"ok": False, "error": f"no such file: {path}", "not_found": True}
    if len(data) > state.max_response_bytes:
        return {"ok": False, "error": f"{path} is {len(data)} bytes, more than the limit of "
                                      f"{state.max_response_bytes} bytes (max_output_bytes)"}
    try:
        return {"ok": True, "content": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"ok": True, "content_base64": base64.b64encode(data).decode("ascii")}


def file_write(state: HostCallState, req: dict[str, Any]) -> dict[str, Any]:
    path = _file_path(req)
    if path is None:
        return {"ok": False, "error": "file_write needs a 'path'"}
    denied = state.check("file_write", "file:write", path)
    if denied is not None:
        return denied
    if req.get("content_base64") is not None:
        data = base64.b64decode(str(req["content_base64"]), validate=True)
    elif isinstance(req.get("content"), str):
        data = req["content"].encode("utf-8")
    else:
        return {"ok": False, "error": "file_write needs 'content' (text) or 'content_base64'"}
    where = _storage_for(state, path)
    if isinstance(where, str):
        return {"ok": False, "error": where}
    store, key = where
    store.put(key, data)
    return {"ok": True, "path": path, "bytes": len(data)}
