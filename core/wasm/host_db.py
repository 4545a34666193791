"""The ``adf.db_query`` host function: one SQL statement on a configured connection, within
``db:read`` / ``db:write`` permissions per table.

The statement is classified first (:func:`~active_data_flow.wasm.sql_shape.classify_sql`) and every table
it reads or writes is checked. ``sqlite:///`` URLs run on the standard library's sqlite3 (with
SQLite's authorizer checking every table the compiled statement touches, and ``PRAGMA
query_only`` for reads); any other URL runs through SQLAlchemy, reads in a ``READ ONLY``
transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from active_data_flow.wasm.host_call import HostCallState
from active_data_flow.wasm.permissions import PermissionSet
from active_data_flow.wasm.sql_shape import classify_sql

__all__ = ["MAX_DB_ROWS", "db_query", "run_sqlalchemy", "run_sqlite"]

MAX_DB_ROWS = 100_000


def db_query(state: HostCallState, req: dict[str, Any]) -> dict[str, Any]:
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
                from active_data_flow.errors import MissingExtraError

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
