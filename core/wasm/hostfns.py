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
on the call (``ExecutionResult.denials``) and reported to ``HostContext.audit``; calls that
passed a permission check are reported to ``audit`` as ``host_call`` events.

Standard library only at import: ``wasmtime`` (for the function types), ``SQLAlchemy`` and
``boto3`` are imported when first needed.
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import json
import logging
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.wasm.errors import WasmPermissionDenied, WasmTrap
from core.wasm.permissions import PermissionSet
from core.wasm.storage import Storage, open_storage

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

log = logging.getLogger("adf.wasm")

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
#: guest log level -> Python logging level
LOG_LEVELS = {0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR}
_LEVEL_NAMES = {0: "debug", 1: "info", 2: "warning", 3: "error"}

MAX_LOG_ENTRIES = 1000
MAX_LOG_MESSAGE = 8192
MAX_DB_ROWS = 100_000
_U32 = 0xFFFFFFFF


@dataclass
class HostContext:
    """What the host functions of one call (or one :class:`~core.wasm.executor.CallSession`) see.

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


# -- the functions ----------------------------------------------------------------------------
def _state(function: str) -> HostCallState:
    state = current_state()
    if state is None:
        raise HostTrap(f"adf.{function} called outside an executor call")
    return state


def host_log(caller: Any, level: int, ptr: int, length: int) -> None:
    state = _state("log")
    raw = read_guest(caller, ptr, length, "log")
    state.add_log(level, raw.decode("utf-8", errors="replace"))


def _json_function(name: str, handler: Callable[[HostCallState, dict[str, Any]], dict[str, Any]]
                   ) -> Callable[[Any, int, int], int]:
    def function(caller: Any, ptr: int, length: int) -> int:
        state = _state(name)
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


def _get_context(state: HostCallState, req: dict[str, Any]) -> dict[str, Any]:
    key = req.get("key")
    if not isinstance(key, str):
        return {"ok": False, "error": "get_context needs a string 'key'"}
    return {"ok": True, "value": state.host.context.get(key)}


def _set_context(state: HostCallState, req: dict[str, Any]) -> dict[str, Any]:
    key = req.get("key")
    if not isinstance(key, str):
        return {"ok": False, "error": "set_context needs a string 'key'"}
    value = req.get("value")
    state.host.context[key] = value
    state.context_updates[key] = value
    return {"ok": True}


# -- http ---------------------------------------------------------------------------------------
_READ_METHODS = frozenset({"GET", "HEAD"})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answered to the guest (3xx + Location), never followed: a redirect must not
    lead to a URL the permissions do not allow."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def _http_request(state: HostCallState, req: dict[str, Any]) -> dict[str, Any]:
    method = str(req.get("method") or "GET").upper()
    url = req.get("url")
    if not isinstance(url, str) or not url:
        return {"ok": False, "error": "http_request needs a 'url'"}
    kind = "http:read" if method in _READ_METHODS else "http:write"
    denied = state.check("http_request", kind, url)
    if denied is not None:
        return denied
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        return {"ok": False, "error": f"only http and https URLs are supported, not {scheme or 'no scheme'!r}"}
    headers = req.get("headers") or {}
    if not isinstance(headers, dict):
        return {"ok": False, "error": "'headers' must be an object"}
    body: bytes | None = None
    if req.get("body_base64") is not None:
        body = base64.b64decode(str(req["body_base64"]))
    elif req.get("body") is not None:
        raw_body = req["body"]
        body = (raw_body if isinstance(raw_body, str) else json.dumps(raw_body)).encode("utf-8")
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={str(k): str(v) for k, v in headers.items()})
    timeout = state.remaining_s(state.host.http_timeout_s)
    limit = state.max_response_bytes
    try:
        try:
            resp = _opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:  # 4xx/5xx (and unfollowed 3xx) are answers too
            resp = exc
        with resp:
            status = int(resp.status if hasattr(resp, "status") and resp.status else resp.getcode())
            data = resp.read(limit + 1)
            resp_headers: dict[str, str] = {}
            for k, v in resp.headers.items():
                resp_headers[k] = f"{resp_headers[k]}, {v}" if k in resp_headers else v
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"ok": False, "error": f"{type(exc).__name__}: {reason}"}
    if len(data) > limit:
        return {"ok": False, "status": status,
                "error": f"response body exceeds the limit of {limit} bytes (max_output_bytes)"}
    out: dict[str, Any] = {"ok": True, "status": status, "headers": resp_headers}
    try:
        out["body"] = data.decode("utf-8")
    except UnicodeDecodeError:
        out["body_base64"] = base64.b64encode(data).decode("ascii")
    return out


# -- db -------------------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<comment>--[^\n]*|/\*.*?\*/)
      | (?P<str>'(?:[^']|'')*'|[eE]'(?:[^'\\]|\\.|'')*'|\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$)
      | (?P<qid>"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\])
      | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
      | (?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)
      | (?P<param>[?]\d*|[:@$][A-Za-z0-9_]+|%s|%\([A-Za-z0-9_]+\)s)
      | (?P<op>.)""",
    re.S | re.X,
)
_READ_LEADERS = frozenset({"SELECT", "VALUES", "WITH", "EXPLAIN", "SHOW", "TABLE", "DESCRIBE", "DESC"})
#: keywords that make any statement a write, wherever they appear (REPLACE( is a function)
_WRITE_ANYWHERE = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE", "UPSERT", "TRUNCATE", "DROP",
                             "CREATE", "ALTER", "INTO", "GRANT", "REVOKE", "ATTACH", "DETACH", "COPY"})
_FROM_STOP = frozenset({
    "WHERE", "GROUP", "ORDER", "LIMIT", "JOIN", "LEFT", "RIGHT", "INNER", "OUTER", "CROSS", "FULL", "NATURAL",
    "ON", "UNION", "EXCEPT", "INTERSECT", "HAVING", "WINDOW", "OFFSET", "FETCH", "FOR", "RETURNING", "SET",
    "VALUES", "USING", "SELECT", "LATERAL", "STRAIGHT_JOIN", "QUALIFY", "INDEXED", "NOT", "TABLESAMPLE",
})
_OBJECT_KINDS = frozenset({"TABLE", "VIEW", "INDEX", "TRIGGER", "SEQUENCE", "SCHEMA", "DATABASE", "TYPE",
                           "FUNCTION", "PROCEDURE", "MATERIALIZED", "VIRTUAL", "TEMP", "TEMPORARY", "UNIQUE",
                           "UNLOGGED", "OR", "REPLACE", "IF", "NOT", "EXISTS", "ONLY", "GLOBAL", "LOCAL"})


@dataclass
class SqlShape:
    """What :func:`classify_sql` found: the tables read and written, and whether it writes."""

    writes: bool
    read_tables: set[str]
    write_tables: set[str]
    error: str | None = None


def _tokens(sql: str) -> list[tuple[str, str]] | str:
    out: list[tuple[str, str]] = []
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup or "op"
        if kind == "tag":
            kind = "str"
        if kind in ("ws", "comment"):
            continue
        text = m.group(kind) if kind != "str" else m.group(0)
        if kind == "op" and text in ("'", '"', "`", "["):
            return f"unterminated quote {text!r} in SQL"
        if kind == "op" and text == "/" and sql[m.end():m.end() + 1] == "*":
            return "unterminated comment in SQL"
        out.append((kind, text))
    return out


def _ident(tok: tuple[str, str]) -> str:
    kind, text = tok
    if kind == "qid":
        inner = text[1:-1]
        return inner.replace('""', '"') if text[0] == '"' else inner.replace("``", "`")
    return text.lower()


def _name_at(toks: list[tuple[str, str]], i: int, *, target: bool = False) -> tuple[str | None, int]:
    """A possibly qualified name starting at ``toks[i]`` -> (name, index after it). Unless
    ``target`` (a name followed by a column list), a name followed by ``(`` is a function."""
    if i >= len(toks) or toks[i][0] not in ("word", "qid"):
        return None, i
    parts = [_ident(toks[i])]
    i += 1
    while i + 1 < len(toks) and toks[i] == ("op", ".") and toks[i + 1][0] in ("word", "qid"):
        parts.append(_ident(toks[i + 1]))
        i += 2
    if not target and i < len(toks) and toks[i] == ("op", "("):  # a function call (table-valued function), not a table
        return None, i
    return ".".join(parts), i


def classify_sql(sql: str) -> SqlShape:  # noqa: C901
    """Which tables one SQL statement reads and writes, and whether it writes at all.

    A lexical parse (strings, comments and quoted identifiers understood): ``FROM`` / ``JOIN``
    lists are read; ``INSERT INTO`` / ``REPLACE INTO`` / ``UPDATE`` / ``DELETE FROM`` /
    ``MERGE INTO`` / ``TRUNCATE`` / ``CREATE|DROP|ALTER ... TABLE|VIEW|INDEX ... ON`` /
    ``SELECT ... INTO`` targets are written. A statement that does not start with SELECT,
    VALUES, WITH, EXPLAIN, SHOW, TABLE or DESCRIBE (PRAGMA, SET, CALL...), or that contains a
    write keyword anywhere, is a write. Unquoted names are lower-cased; CTE names are not
    tables. More than one statement is refused (``error``)."""
    toks = _tokens(sql)
    if isinstance(toks, str):
        return SqlShape(True, set(), set(), toks)
    while toks and toks[-1] == ("op", ";"):
        toks.pop()
    if not toks:
        return SqlShape(False, set(), set(), "empty SQL statement")
    if ("op", ";") in toks:
        return SqlShape(True, set(), set(), "only one SQL statement per db_query")
    words = [t[1].upper() if t[0] == "word" else "" for t in toks]
    writes = words[0] not in _READ_LEADERS
    for i, w in enumerate(words):
        if w in _WRITE_ANYWHERE and not (w == "REPLACE" and i + 1 < len(toks) and toks[i + 1] == ("op", "(")):
            writes = True
    reads: set[str] = set()
    written: set[str] = set()
    n = len(toks)
    ctes = {_ident(toks[j]) for j in range(1, n)
            if (words[j - 1] in ("WITH", "RECURSIVE") or toks[j - 1] == ("op", ",")) and _cte_ahead(toks, words, j)}
    parens: list[bool] = []  # per open parenthesis: does it hold a subquery (vs. function arguments)?
    i = 0
    while i < n:
        w = words[i]
        if toks[i] == ("op", "("):
            parens.append(i + 1 < n and words[i + 1] in ("SELECT", "WITH", "VALUES"))
            i += 1
            continue
        if toks[i] == ("op", ")"):
            if parens:
                parens.pop()
            i += 1
            continue
        in_function = bool(parens) and not parens[-1]  # EXTRACT(YEAR FROM d), TRIM(x FROM y)...
        if w in ("FROM", "JOIN", "USING") and not in_function \
                and not (w == "USING" and i + 1 < n and toks[i + 1] == ("op", "(")):
            j = i + 1
            while True:
                if j < n and words[j] == "ONLY":
                    j += 1
                name, j = _name_at(toks, j)
                if name is not None:
                    reads.add(name)
                if j < n and words[j] == "AS":  # an alias: [AS] name
                    j += 1
                if j < n and toks[j][0] in ("word", "qid") and words[j] not in _FROM_STOP:
                    j += 1
                if w == "FROM" and j < n and toks[j] == ("op", ","):
                    j += 1
                    continue
                break
            i = max(j, i + 1)
            continue
        if w in ("INTO", "UPDATE", "TRUNCATE") or (w == "DELETE" and i + 1 < n and words[i + 1] == "FROM"):
            if w == "UPDATE" and i > 0 and words[i - 1] in ("FOR", "DO", "KEY", "NO", "ON"):
                i += 1  # SELECT ... FOR UPDATE, ON CONFLICT DO UPDATE, ON UPDATE CASCADE: no target here
                continue
            if in_function:
                i += 1
                continue
            j = i + (2 if w == "DELETE" else 1)
            while j < n and words[j] in ("OR", "ROLLBACK", "ABORT", "FAIL", "IGNORE", "REPLACE", "ONLY", "TABLE",
                                         "LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "QUICK"):
                j += 1
            target, j = _name_at(toks, j, target=True)
            if target is not None:
                written.add(target)
            i = max(j, i + 1)
            continue
        if w in ("CREATE", "DROP", "ALTER"):
            j = i + 1
            kind = ""
            while j < n and words[j] in _OBJECT_KINDS:
                if words[j] in ("TABLE", "VIEW", "INDEX", "TRIGGER", "SEQUENCE"):
                    kind = words[j]
                j += 1
            target, j = _name_at(toks, j, target=True)
            if kind in ("INDEX", "TRIGGER"):
                # CREATE INDEX name ON table / CREATE TRIGGER name ... ON table: the table is written
                k = j
                while k < n and words[k] != "ON":
                    k += 1
                table = _name_at(toks, k + 1, target=True)[0] if k < n else None
                if table is not None:
                    written.add(table)
                elif target is not None and w == "DROP":
                    written.add(target)
            elif target is not None:
                written.add(target)
            i = max(j, i + 1)
            continue
        i += 1
    reads -= ctes
    written -= ctes
    reads -= written
    return SqlShape(writes or bool(written), reads, written)


def _cte_ahead(toks: list[tuple[str, str]], words: list[str], j: int) -> bool:
    """``name [(cols)] AS (`` starts at ``j``."""
    n = len(toks)
    if j >= n or toks[j][0] not in ("word", "qid"):
        return False
    k = j + 1
    if k < n and toks[k] == ("op", "("):
        depth = 0
        while k < n:
            if toks[k] == ("op", "("):
                depth += 1
            elif toks[k] == ("op", ")"):
                depth -= 1
                if depth == 0:
                    break
            k += 1
        k += 1
    return k + 1 < n and words[k] == "AS" and (toks[k + 1] == ("op", "(") or words[k + 1] in ("NOT", "MATERIALIZED"))


def _db_query(state: HostCallState, req: dict[str, Any]) -> dict[str, Any]:
    connection = req.get("connection") or "main"
    sql = req.get("sql")
    if not isinstance(connection, str) or not isinstance(sql, str) or not sql.strip():
        return {"ok": False, "error": "db_query needs 'sql' (and optionally 'connection', default 'main')"}
    params = req.get("params")
    if params is not None and not isinstance(params, (list, dict)):
        return {"ok": False, "error": "'params' must be an array or an object"}
    shape = classify_sql(sql)
    if shape.error:
        return {"ok": False, "error": shape.error}
    perms = state.host.permissions
    # permissions first: every written table needs db:write, every read one db:read (or db:write)
    for table in sorted(shape.write_tables):
        denied = state.check("db_query", "db:write", f"{connection}/{table}")
        if denied is not None:
            return denied
    if shape.writes and not shape.write_tables:
        denied = state.check("db_query", "db:write", f"{connection}/*")
        if denied is not None:
            return denied
    for table in sorted(shape.read_tables):
        resource = f"{connection}/{table}"
        if perms.allows("db:read", resource):
            state.allowed("db_query", "db:read", resource)
        elif perms.allows("db:write", resource):
            state.allowed("db_query", "db:write", resource)
        else:
            return state.denied("db_query", "db:read", resource)
    if not shape.read_tables and not shape.write_tables and not shape.writes:
        if not any(p.kind.startswith("db:") and p.pattern.startswith(connection + "/") for p in perms):
            return state.denied("db_query", "db:read", f"{connection}/*")
        state.allowed("db_query", "db:read", f"{connection}/*")
    url = state.host.databases.get(connection)
    if not url:
        return {"ok": False, "error": f"unknown database connection {connection!r}; "
                                      f"configured: {', '.join(sorted(state.host.databases)) or '(none)'}"}
    read_only = not shape.writes
    if url.startswith("sqlite:///") or url == "sqlite://":
        return run_sqlite(url, sql, params, read_only=read_only, permissions=perms, connection=connection,
                          state=state, timeout_s=state.remaining_s(30.0))
    return run_sqlalchemy(url, sql, params, read_only=read_only)


def _sqlite_path(url: str) -> str:
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
    return path or ":memory:"


def run_sqlite(url: str, sql: str, params: list[Any] | dict[str, Any] | None, *, read_only: bool,
               permissions: PermissionSet | None = None, connection: str = "main",
               state: HostCallState | None = None, timeout_s: float = 30.0) -> dict[str, Any]:
    """Run one statement on a SQLite database with the standard library.

    ``read_only``: ``PRAGMA query_only=ON`` first, so the statement cannot write whatever it
    is. With ``permissions``, SQLite's authorizer checks every table the compiled statement
    actually touches (exact where :func:`classify_sql` is lexical)."""
    conn = sqlite3.connect(_sqlite_path(url), timeout=timeout_s, isolation_level=None,
                           check_same_thread=False)
    refused: list[tuple[str, str]] = []
    try:
        if read_only:
            conn.execute("PRAGMA query_only=ON")
        if permissions is not None:
            conn.set_authorizer(_sqlite_authorizer(permissions, connection, read_only, refused))
        try:
            if not read_only:
                conn.execute("BEGIN")
            cur = conn.execute(sql, params if params is not None else ())
            columns = [d[0] for d in cur.description] if cur.description else []
            rows = cur.fetchmany(MAX_DB_ROWS + 1) if cur.description else []
            rowcount = cur.rowcount
            if not read_only:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if refused and state is not None:
                kind, resource = refused[0]
                return state.denied("db_query", kind, resource)
            if refused:
                kind, resource = refused[0]
                return {"ok": False, "error": f"permission denied: needs {kind} for {resource!r}",
                        "denied": f"{kind}:{resource}"}
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        conn.close()
    if len(rows) > MAX_DB_ROWS:
        return {"ok": False, "error": f"more than {MAX_DB_ROWS} rows; add a LIMIT"}
    return {"ok": True, "columns": columns, "rows": [list(r) for r in rows], "rowcount": rowcount}


def _sqlite_authorizer(perms: PermissionSet, connection: str, read_only: bool,
                       refused: list[tuple[str, str]]) -> Callable[..., int]:
    ok, deny = sqlite3.SQLITE_OK, sqlite3.SQLITE_DENY
    write_actions = {sqlite3.SQLITE_INSERT: 1, sqlite3.SQLITE_UPDATE: 1, sqlite3.SQLITE_DELETE: 1,
                     sqlite3.SQLITE_CREATE_TABLE: 1, sqlite3.SQLITE_CREATE_TEMP_TABLE: 1,
                     sqlite3.SQLITE_DROP_TABLE: 1, sqlite3.SQLITE_DROP_TEMP_TABLE: 1,
                     sqlite3.SQLITE_CREATE_VIEW: 1, sqlite3.SQLITE_CREATE_TEMP_VIEW: 1,
                     sqlite3.SQLITE_DROP_VIEW: 1, sqlite3.SQLITE_DROP_TEMP_VIEW: 1,
                     sqlite3.SQLITE_CREATE_INDEX: 2, sqlite3.SQLITE_CREATE_TEMP_INDEX: 2,
                     sqlite3.SQLITE_DROP_INDEX: 2, sqlite3.SQLITE_DROP_TEMP_INDEX: 2,
                     sqlite3.SQLITE_CREATE_TRIGGER: 2, sqlite3.SQLITE_CREATE_TEMP_TRIGGER: 2,
                     sqlite3.SQLITE_DROP_TRIGGER: 2, sqlite3.SQLITE_DROP_TEMP_TRIGGER: 2,
                     sqlite3.SQLITE_ALTER_TABLE: 2}
    harmless = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_TRANSACTION,
                sqlite3.SQLITE_SAVEPOINT, getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
    internal = ("sqlite_sequence", "sqlite_stat1", "sqlite_stat2", "sqlite_stat3", "sqlite_stat4")

    def authorize(action: int, arg1: str | None, arg2: str | None, dbname: str | None,
                  inner: str | None) -> int:
        if inner is not None:  # inside a view or trigger the statement was permitted to use
            return ok
        if action in harmless:
            return ok
        if action == sqlite3.SQLITE_READ:
            table = (arg1 or "").lower()
            resource = f"{connection}/{table}"
            if perms.allows("db:read", resource) or perms.allows("db:write", resource):
                return ok
            refused.append(("db:read", resource))
            return deny
        if action in write_actions:
            table = ((arg1 if write_actions[action] == 1 else arg2) or "").lower()
            if table in internal:
                return ok
            resource = f"{connection}/{table}"
            if not read_only and perms.allows("db:write", resource):
                return ok
            refused.append(("db:write", resource))
            return deny
        # PRAGMA, ATTACH, DETACH, REINDEX, ANALYZE, virtual tables: never from a module
        refused.append(("db:write", f"{connection}/*"))
        return deny

    return authorize


_engines: dict[str, Any] = {}
_engines_lock = threading.Lock()


def _sqlalchemy_engine(url: str) -> Any:
    found = _engines.get(url)
    if found is not None:
        return found
    with _engines_lock:
        found = _engines.get(url)
        if found is None:
            try:
                import sqlalchemy
            except ImportError:
                from core.errors import MissingExtraError

                raise MissingExtraError("SQLAlchemy", "sql", "db_query on a non-SQLite database") from None
            found = sqlalchemy.create_engine(url, pool_pre_ping=True)
            _engines[url] = found
    return found


def run_sqlalchemy(url: str, sql: str, params: list[Any] | dict[str, Any] | None, *,
                   read_only: bool) -> dict[str, Any]:
    """Run one statement through SQLAlchemy. A read runs in a ``READ ONLY`` transaction (SQLite
    URLs: ``PRAGMA query_only``); a database that refuses one refuses the read. Object
    ``params`` bind ``:name`` placeholders; array ``params`` use the driver's positional style."""
    import sqlalchemy

    engine = _sqlalchemy_engine(url)
    with engine.connect() as conn:
        dialect = engine.dialect.name
        try:
            if read_only:
                if dialect == "sqlite":
                    conn.exec_driver_sql("PRAGMA query_only=ON")
                else:
                    conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        except Exception as exc:
            conn.rollback()
            return {"ok": False, "error": f"cannot open a read-only transaction on {dialect}: {exc}"}
        try:
            if isinstance(params, list):
                result = conn.exec_driver_sql(sql, tuple(params))
            else:
                result = conn.execute(sqlalchemy.text(sql), params or {})
            columns = list(result.keys()) if result.returns_rows else []
            rows = [list(r) for r in result.fetchmany(MAX_DB_ROWS + 1)] if result.returns_rows else []
            rowcount = result.rowcount
            if read_only:
                conn.rollback()
            else:
                conn.commit()
        except Exception as exc:
            conn.rollback()
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        finally:
            if read_only and dialect == "sqlite":
                conn.exec_driver_sql("PRAGMA query_only=OFF")
    if len(rows) > MAX_DB_ROWS:
        return {"ok": False, "error": f"more than {MAX_DB_ROWS} rows; add a LIMIT"}
    return {"ok": True, "columns": columns, "rows": rows, "rowcount": rowcount}


# -- files ------------------------------------------------------------------------------------
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


def _file_read(state: HostCallState, req: dict[str, Any]) -> dict[str, Any]:
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


def _file_write(state: HostCallState, req: dict[str, Any]) -> dict[str, Any]:
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


_HANDLERS: dict[str, Callable[[HostCallState, dict[str, Any]], dict[str, Any]]] = {
    "get_context": _get_context,
    "set_context": _set_context,
    "http_request": _http_request,
    "db_query": _db_query,
    "file_read": _file_read,
    "file_write": _file_write,
}


def host_function_impls() -> dict[str, Callable[..., Any]]:
    """name -> the Python function (taking a wasmtime ``Caller`` first) behind ``adf.<name>``."""
    impls: dict[str, Callable[..., Any]] = {"log": host_log}
    for name, handler in _HANDLERS.items():
        impls[name] = _json_function(name, handler)
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
