"""WasmExecutor on real wasmtime: both guest ABIs, every limit, the host functions and their
permissions, the execution log, the compiled-module cache and call sessions.

The guest modules are WAT sources under tests/wasm_modules/, compiled here with
``wasmtime.wat2wasm``. After every hostile module the same executor must run a normal call.
"""

from __future__ import annotations

import base64
import http.server
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from package_tree import package_parent

from active_data_flow.wasm.cache import ModuleCache, engine_key
from active_data_flow.wasm.errors import WasmAbiError, WasmError, WasmLimitExceeded, WasmTrap
from active_data_flow.wasm.executor import (
    ENGINE_SETTINGS,
    CallSession,
    CompiledModule,
    ExecutionResult,
    HostContext,
    MemoryExecutionLog,
    WasmExecutor,
    executor_engine_key,
)
from active_data_flow.wasm.hostfns import classify_sql, run_sqlalchemy, run_sqlite
from active_data_flow.wasm.limits import Limits
from active_data_flow.wasm.permissions import PermissionSet
from active_data_flow.wasm.storage import LocalStorage

ROOT = Path(__file__).resolve().parent.parent
MODULES = Path(__file__).resolve().parent / "wasm_modules"


def wasm(name: str) -> bytes:
    return bytes(wasmtime.wat2wasm((MODULES / name).read_text()))


@pytest.fixture(scope="module")
def ex() -> WasmExecutor:
    return WasmExecutor()


@pytest.fixture(scope="module")
def transform(ex: WasmExecutor) -> CompiledModule:
    return ex.compile(wasm("transform.wat"), module_id="transform")


@pytest.fixture(scope="module")
def hostile(ex: WasmExecutor) -> CompiledModule:
    return ex.compile(wasm("hostile.wat"), module_id="hostile")


@pytest.fixture(scope="module")
def hostcalls(ex: WasmExecutor) -> CompiledModule:
    return ex.compile(wasm("hostcalls.wat"), module_id="hostcalls")


def assert_healthy(ex: WasmExecutor, transform: CompiledModule) -> None:
    """A normal call right after a failure works."""
    result = ex.call(transform, {"still": "fine"})
    assert result.output == {"marker": "adf-wasm", "echo": {"still": "fine"}}


# -- the two ABIs -------------------------------------------------------------------------------
def test_memory_abi_transforms_json(ex: WasmExecutor, transform: CompiledModule) -> None:
    assert transform.abi == "memory"
    assert {"memory", "alloc", "dealloc", "run", "upper"} <= set(transform.exports)
    assert transform.module_id == "transform"
    assert len(transform.sha256) == 64

    result = ex.call(transform, {"records": [{"name": "ada"}], "n": 1})
    assert isinstance(result, ExecutionResult)
    assert result.output == {"marker": "adf-wasm", "echo": {"records": [{"name": "ada"}], "n": 1}}
    assert result.function == "run"
    assert result.module_id == "transform"
    assert len(result.execution_id) == 32
    assert result.fuel_consumed > 0
    assert result.peak_memory_bytes >= 65536
    assert result.duration_ms > 0
    assert result.logs == [] and result.denials == [] and result.context_updates == {}

    upper = ex.call(transform, {"name": "ada", "tags": ["x\n", "a\\b"], "ok": True}, function="upper")
    assert upper.output == {"NAME": "ADA", "TAGS": ["X\n", "A\\B"], "OK": True}  # escapes kept
    assert ex.call(transform, [1, "two", None], function="echo").output == [1, "two", None]


def test_wasi_command_echoes_stdin(ex: WasmExecutor) -> None:
    module = ex.compile(wasm("wasi_echo.wat"), module_id="wasi_echo")
    assert module.abi == "wasi"
    doc = {"records": [{"id": i, "text": "é" * 10} for i in range(200)], "context": {"run": 1}}
    result = ex.call(module, doc)
    assert result.output == doc
    assert result.function == "_start"
    assert result.fuel_consumed > 0 and result.peak_memory_bytes == 2 * 65536


def test_wasi_nonzero_exit_is_a_trap_with_stderr(ex: WasmExecutor, transform: CompiledModule) -> None:
    module = ex.compile(wasm("wasi_fail.wat"), module_id="wasi_fail")
    with pytest.raises(WasmTrap) as info:
        ex.call(module, {})
    assert "exited with code 3" in str(info.value)
    assert "boom: the input was rejected" in str(info.value)
    assert_healthy(ex, transform)


def test_invalid_modules_are_refused(ex: WasmExecutor) -> None:
    with pytest.raises(WasmAbiError):
        ex.compile(b"\0asm\x01\0\0\0garbage")
    with pytest.raises(WasmAbiError):
        ex.compile(b"definitely not wasm")
    no_abi = bytes(wasmtime.wat2wasm('(module (func (export "f")))'))
    with pytest.raises(WasmAbiError, match="neither _start"):
        ex.compile(no_abi)
    foreign = bytes(wasmtime.wat2wasm('(module (import "env" "evil" (func)) (memory (export "memory") 1)'
                                      ' (func (export "alloc") (param i32) (result i32) i32.const 0))'))
    with pytest.raises(WasmAbiError, match=r"env\.evil"):
        ex.compile(foreign)


def test_unknown_function_is_an_abi_error(ex: WasmExecutor, transform: CompiledModule) -> None:
    with pytest.raises(WasmAbiError, match="does not export function 'nope'"):
        ex.call(transform, {}, function="nope")
    with pytest.raises(WasmAbiError, match="signature"):
        ex.call(transform, {}, function="alloc")


def test_load_from_file_and_bytes(ex: WasmExecutor, tmp_path: Path) -> None:
    path = tmp_path / "echo.wasm"
    path.write_bytes(wasm("transform.wat"))
    module = ex.load(str(path))
    assert module.module_id == "echo.wasm"
    assert ex.call(str(path), {"a": 1}, function="echo").output == {"a": 1}
    assert ex.load(str(MODULES / "transform.wat")).module_id == "transform.wat"
    raw = ex.call(wasm("transform.wat"), {"b": 2}, function="echo")
    assert raw.output == {"b": 2} and raw.module_id.startswith("sha256:")


# -- limits: each hostile module fails with the right kind, and the executor stays healthy ------
@pytest.mark.parametrize(
    ("function", "limits", "kind"),
    [
        ("spin", Limits(fuel=5_000_000), "fuel"),
        ("spin", Limits(fuel=10**15, timeout_ms=100), "timeout"),
        ("bomb", Limits(memory_mb=4), "memory"),
        ("huge", Limits(max_output_bytes=1 << 20), "output"),
    ],
)
def test_hostile_module_hits_its_limit(ex: WasmExecutor, hostile: CompiledModule, transform: CompiledModule,
                                       function: str, limits: Limits, kind: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(WasmLimitExceeded) as info:
        ex.call(hostile, {}, function=function, limits=limits)
    elapsed = time.monotonic() - t0
    err = info.value
    assert err.kind == kind
    assert err.limit == {"fuel": limits.fuel, "timeout": limits.timeout_ms, "memory": limits.memory_mb,
                         "output": limits.max_output_bytes}[kind]
    assert elapsed < 5
    if kind == "fuel":
        assert err.fuel_consumed == limits.fuel
        assert err.trace and "#0" in err.trace
    if kind == "timeout":
        assert 0.09 <= elapsed < 2
        assert err.trace and err.trace.startswith("#0 ")
    if kind == "memory":
        assert err.peak_memory_bytes == 4 << 20
    entry = ex.execution_log.query(execution_id=err.execution_id)[0]
    assert entry["ok"] is False and entry["limit"] == kind and entry["error_type"] == "WasmLimitExceeded"
    assert_healthy(ex, transform)


def test_deep_recursion_is_a_stack_overflow_trap(ex: WasmExecutor, hostile: CompiledModule,
                                                transform: CompiledModule) -> None:
    with pytest.raises(WasmTrap) as info:
        ex.call(hostile, {}, function="recurse")
    assert not isinstance(info.value, WasmLimitExceeded)
    assert "stack overflow" in str(info.value)
    assert info.value.trace and "down" in info.value.trace
    assert_healthy(ex, transform)


def test_trap_keeps_the_wasm_backtrace(ex: WasmExecutor, hostile: CompiledModule, transform: CompiledModule) -> None:
    with pytest.raises(WasmTrap) as info:
        ex.call(hostile, {}, function="crash")
    assert "unreachable" in str(info.value)
    assert info.value.trace is not None and info.value.trace.startswith("#0")
    with pytest.raises(WasmAbiError, match="not UTF-8 JSON"):
        ex.call(hostile, {}, function="garbage")
    assert_healthy(ex, transform)


def test_initial_memory_over_the_limit(ex: WasmExecutor, transform: CompiledModule) -> None:
    module = ex.compile(wasm("big_memory.wat"))
    with pytest.raises(WasmLimitExceeded) as info:
        ex.call(module, {}, limits=Limits(memory_mb=4))
    assert info.value.kind == "memory"
    assert ex.call(module, {"fits": True}, limits=Limits(memory_mb=16)).output == {"fits": True}
    assert_healthy(ex, transform)


def test_wasi_output_flood_hits_the_output_limit(ex: WasmExecutor, transform: CompiledModule) -> None:
    module = ex.compile(wasm("wasi_flood.wat"))
    with pytest.raises(WasmLimitExceeded) as info:
        ex.call(module, {}, limits=Limits(max_output_bytes=1 << 20))
    assert info.value.kind == "output"
    assert_healthy(ex, transform)


def test_concurrent_calls_with_different_timeouts(ex: WasmExecutor, hostile: CompiledModule,
                                                  transform: CompiledModule) -> None:
    outcomes: dict[str, Any] = {}

    def spin(name: str, timeout_ms: int) -> None:
        t0 = time.monotonic()
        try:
            ex.call(hostile, {}, function="spin", limits=Limits(fuel=10**15, timeout_ms=timeout_ms))
        except WasmLimitExceeded as exc:
            outcomes[name] = (exc.kind, time.monotonic() - t0)

    def normal() -> None:
        outcomes["normal"] = [ex.call(transform, {"i": i}).output["echo"]["i"] for i in range(50)]

    threads = [threading.Thread(target=spin, args=("short", 100)), threading.Thread(target=spin, args=("long", 400)),
               threading.Thread(target=normal)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert outcomes["short"][0] == "timeout" and outcomes["long"][0] == "timeout"
    assert 0.09 <= outcomes["short"][1] < 0.39
    assert 0.39 <= outcomes["long"][1] < 2
    assert outcomes["normal"] == list(range(50))


# -- fuel, memory, execution log ------------------------------------------------------------------
def test_fuel_grows_with_work(ex: WasmExecutor, transform: CompiledModule) -> None:
    small = ex.call(transform, {"s": "x" * 10}, function="upper")
    big = ex.call(transform, {"s": "x" * 10_000}, function="upper")
    assert 0 < small.fuel_consumed < big.fuel_consumed
    assert big.fuel_consumed > 10_000 * 5  # several instructions per byte
    assert big.peak_memory_bytes >= small.peak_memory_bytes >= 65536


def test_execution_log_records_success_and_failure(transform: CompiledModule, hostile: CompiledModule) -> None:
    records: list[dict[str, Any]] = []

    class ListLog:
        def record(self, entry: dict[str, Any]) -> None:
            records.append(entry)

    custom = WasmExecutor(execution_log=ListLog())
    custom.call(transform, {"a": 1})
    assert len(records) == 1 and records[0]["ok"] is True

    ex = WasmExecutor()
    assert isinstance(ex.execution_log, MemoryExecutionLog)
    ok = ex.call(transform, {"a": 1})
    with pytest.raises(WasmLimitExceeded) as info:
        ex.call(hostile, {}, function="spin", limits=Limits(fuel=1000))
    failed_id = info.value.execution_id

    [entry] = ex.execution_log.query(execution_id=ok.execution_id)
    assert entry["ok"] is True and entry["module_id"] == "transform" and entry["function"] == "run"
    assert entry["fuel_consumed"] == ok.fuel_consumed and entry["peak_memory_bytes"] == ok.peak_memory_bytes
    assert entry["error"] is None and entry["limit"] is None and entry["started_at"].endswith("Z")
    assert set(entry) == {"execution_id", "module_id", "function", "started_at", "ok", "fuel_consumed",
                          "peak_memory_bytes", "duration_ms", "error", "error_type", "limit", "trace"}
    [bad] = ex.execution_log.query(execution_id=failed_id)
    assert bad["ok"] is False and bad["limit"] == "fuel" and bad["error_type"] == "WasmLimitExceeded"
    assert bad["fuel_consumed"] == 1000 and "fuel" in bad["error"] and bad["trace"]
    assert [e["execution_id"] for e in ex.execution_log.query(module_id="hostile")] == [failed_id]
    assert len(ex.execution_log.query(limit=1)) == 1


# -- host functions --------------------------------------------------------------------------------
def test_log_and_context(ex: WasmExecutor, hostcalls: CompiledModule, caplog: pytest.LogCaptureFixture) -> None:
    host = HostContext(context={"greeting": "hi"})
    with caplog.at_level(logging.INFO, logger="adf.wasm"):
        result = ex.call(hostcalls, {"msg": "hello"}, function="log", host=host)
    assert result.output == {"msg": "hello"}
    assert result.logs == [{"level": "info", "message": '{"msg":"hello"}'},
                           {"level": "error", "message": '{"msg":"hello"}'}]
    logged = [r for r in caplog.records if r.name == "adf.wasm" and "hello" in r.getMessage()]
    assert [r.levelno for r in logged] == [logging.INFO, logging.ERROR]
    assert logged[0].execution_id == result.execution_id
    assert logged[0].wasm_module_id == "hostcalls"

    got = ex.call(hostcalls, {"key": "greeting"}, function="get_context", host=host)
    assert got.output == {"ok": True, "value": "hi"}
    assert ex.call(hostcalls, {"key": "absent"}, function="get_context", host=host).output == {"ok": True,
                                                                                               "value": None}
    put = ex.call(hostcalls, {"key": "seen", "value": [1, 2]}, function="set_context", host=host)
    assert put.output == {"ok": True}
    assert put.context_updates == {"seen": [1, 2]}
    assert host.context == {"greeting": "hi", "seen": [1, 2]}


def test_wasi_module_uses_host_functions(ex: WasmExecutor, transform: CompiledModule) -> None:
    module = ex.compile(wasm("wasi_host.wat"))
    result = ex.call(module, {}, host=HostContext(context={"greeting": "hello"}))
    assert result.output == {"ok": True, "value": "hello"}
    assert result.logs == [{"level": "info", "message": "hello from wasi"}]

    noalloc = ex.compile(wasm("wasi_noalloc.wat"))
    with pytest.raises(WasmTrap, match="must export alloc"):
        ex.call(noalloc, {})
    assert_healthy(ex, transform)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/ok":
            self._send(200, b"hello", {"X-Test": "yes"})
        elif self.path == "/redirect":
            self._send(302, b"", {"Location": "/ok"})
        else:
            self._send(404, b"nothing here")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._send(201, b"got " + body)


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _audited(permissions: list[str], **kw: Any) -> tuple[HostContext, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    return HostContext(permissions=PermissionSet(permissions), audit=events.append, **kw), events


def test_http_request_needs_permission(ex: WasmExecutor, hostcalls: CompiledModule, http_base: str) -> None:
    url = f"{http_base}/ok"
    host, events = _audited([])
    denied = ex.call(hostcalls, {"method": "GET", "url": url}, function="http_request", host=host)
    assert denied.output["ok"] is False
    assert denied.output["error"].startswith("permission denied")
    assert denied.output["denied"] == f"http:read:{url}"
    [denial] = denied.denials
    assert denial["event"] == "permission_denied" and denial["permission"] == "http:read"
    assert denial["resource"] == url and denial["function"] == "http_request"
    assert denial["execution_id"] == denied.execution_id and denial["module_id"] == "hostcalls"
    assert isinstance(denial["ts"], float)
    assert events == [denial]

    host, events = _audited([f"http:read:{http_base}/*"])
    ok = ex.call(hostcalls, {"method": "GET", "url": url}, function="http_request", host=host)
    assert ok.output["ok"] is True and ok.output["status"] == 200 and ok.output["body"] == "hello"
    assert ok.output["headers"]["X-Test"] == "yes"
    assert ok.denials == []
    assert [e["event"] for e in events] == ["host_call"] and events[0]["permission"] == "http:read"

    missing = ex.call(hostcalls, {"url": f"{http_base}/missing"}, function="http_request", host=host)
    assert missing.output["ok"] is True and missing.output["status"] == 404
    redirect = ex.call(hostcalls, {"url": f"{http_base}/redirect"}, function="http_request", host=host)
    assert redirect.output["status"] == 302 and redirect.output["headers"]["Location"] == "/ok"

    post = {"method": "POST", "url": f"{http_base}/echo", "body": "data"}
    refused = ex.call(hostcalls, post, function="http_request", host=host)
    assert refused.output["ok"] is False and refused.output["denied"] == f"http:write:{http_base}/echo"
    host, _ = _audited([f"http:write:{http_base}/*"])
    posted = ex.call(hostcalls, post, function="http_request", host=host)
    assert posted.output == {"ok": True, "status": 201, "headers": posted.output["headers"], "body": "got data"}

    host, _ = _audited(["http:read:*"])
    local_file = ex.call(hostcalls, {"url": "file:///etc/passwd"}, function="http_request", host=host)
    assert local_file.output["ok"] is False and "only http and https" in local_file.output["error"]
    unreachable = ex.call(hostcalls, {"url": "http://127.0.0.1:1/"}, function="http_request", host=host)
    assert unreachable.output["ok"] is False and unreachable.output["error"]


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, qty INTEGER);
        INSERT INTO orders (item, qty) VALUES ('apple', 3), ('pear', 5);
        CREATE TABLE secrets (id INTEGER PRIMARY KEY, value TEXT);
        INSERT INTO secrets (value) VALUES ('hunter2');
    """)
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def test_db_query_permissions_and_read_only(ex: WasmExecutor, hostcalls: CompiledModule, sqlite_db: str) -> None:
    databases = {"main": sqlite_db}
    select = {"connection": "main", "sql": "SELECT item, qty FROM orders WHERE qty > ? ORDER BY id", "params": [1]}

    host, events = _audited([], databases=databases)
    denied = ex.call(hostcalls, select, function="db_query", host=host)
    assert denied.output["ok"] is False and denied.output["denied"] == "db:read:main/orders"
    assert events[0]["event"] == "permission_denied"

    host, events = _audited(["db:read:main/orders"], databases=databases)
    rows = ex.call(hostcalls, select, function="db_query", host=host)
    assert rows.output == {"ok": True, "columns": ["item", "qty"], "rows": [["apple", 3], ["pear", 5]],
                           "rowcount": -1}
    assert events[0]["event"] == "host_call" and events[0]["resource"] == "main/orders"

    named = {"sql": "SELECT count(*) AS n FROM orders WHERE item = :item", "params": {"item": "pear"}}
    assert ex.call(hostcalls, named, function="db_query", host=host).output["rows"] == [[1]]

    other = ex.call(hostcalls, {"sql": "SELECT value FROM secrets"}, function="db_query", host=host)
    assert other.output["ok"] is False and other.output["denied"] == "db:read:main/secrets"

    insert = {"sql": "INSERT INTO orders (item, qty) VALUES (?, ?)", "params": ["plum", 1]}
    refused = ex.call(hostcalls, insert, function="db_query", host=host)
    assert refused.output["ok"] is False and refused.output["denied"] == "db:write:main/orders"
    assert refused.denials[0]["permission"] == "db:write"

    host, _ = _audited(["db:write:main/orders"], databases=databases)
    written = ex.call(hostcalls, insert, function="db_query", host=host)
    assert written.output["ok"] is True and written.output["rowcount"] == 1
    conn = sqlite3.connect(sqlite_db[len("sqlite:///"):])
    assert conn.execute("SELECT count(*) FROM orders").fetchone() == (3,)
    conn.close()

    two = ex.call(hostcalls, {"sql": "SELECT 1 FROM orders; DROP TABLE orders"}, function="db_query", host=host)
    assert two.output["ok"] is False and "one SQL statement" in two.output["error"]
    unknown = ex.call(hostcalls, {"connection": "nope", "sql": "SELECT 1 FROM orders"}, function="db_query",
                      host=HostContext(permissions=PermissionSet(["db:read:nope/*"]), databases=databases))
    assert unknown.output["ok"] is False and "unknown database connection" in unknown.output["error"]


def test_db_read_only_transaction_and_authorizer_catch_what_the_parser_misses(sqlite_db: str) -> None:
    # a read-only statement cannot write, whatever it is
    result = run_sqlite(sqlite_db, "INSERT INTO orders (item, qty) VALUES ('x', 1)", None, read_only=True)
    assert result["ok"] is False and "readonly" in result["error"].replace(" ", "").lower()
    # SQLite's authorizer checks the tables the compiled statement really touches
    only_orders = PermissionSet(["db:read:main/orders"])
    sneaky = run_sqlite(sqlite_db, "SELECT value FROM secrets", None, read_only=True, permissions=only_orders)
    assert sneaky["ok"] is False and sneaky["denied"] == "db:read:main/secrets"
    write = run_sqlite(sqlite_db, "DELETE FROM orders", None, read_only=False, permissions=only_orders)
    assert write["ok"] is False and write["denied"] == "db:write:main/orders"
    fine = run_sqlite(sqlite_db, "SELECT count(*) FROM orders", None, read_only=True, permissions=only_orders)
    assert fine["ok"] is True and fine["rows"] == [[2]]


def test_db_query_through_sqlalchemy(ex: WasmExecutor, hostcalls: CompiledModule, sqlite_db: str) -> None:
    url = sqlite_db.replace("sqlite:///", "sqlite+pysqlite:///")  # not the stdlib path: SQLAlchemy runs it
    read = run_sqlalchemy(url, "SELECT item FROM orders WHERE qty > :q ORDER BY id", {"q": 4}, read_only=True)
    assert read == {"ok": True, "columns": ["item"], "rows": [["pear"]], "rowcount": -1}
    positional = run_sqlalchemy(url, "SELECT count(*) FROM orders WHERE qty > ?", [0], read_only=True)
    assert positional["rows"] == [[2]]
    sneaky = run_sqlalchemy(url, "DELETE FROM orders", None, read_only=True)
    assert sneaky["ok"] is False and "readonly" in sneaky["error"].replace(" ", "").lower()
    host = HostContext(permissions=PermissionSet(["db:write:main/orders"]), databases={"main": url})
    done = ex.call(hostcalls, {"sql": "UPDATE orders SET qty = qty + 1 WHERE item = :item",
                               "params": {"item": "apple"}}, function="db_query", host=host)
    assert done.output["ok"] is True and done.output["rowcount"] == 1
    after = run_sqlalchemy(url, "SELECT qty FROM orders WHERE item = 'apple'", None, read_only=True)
    assert after["rows"] == [[4]]  # the write was committed; the read-only connection state did not leak


def test_classify_sql() -> None:
    shape = classify_sql("SELECT o.id FROM orders o JOIN \"Items\" i ON i.oid = o.id "
                         "WHERE o.id IN (SELECT id FROM vip) AND extract(year FROM o.ts) = 2024")
    assert not shape.writes and shape.read_tables == {"orders", "Items", "vip"} and not shape.write_tables
    shape = classify_sql("INSERT INTO audit_log (msg) SELECT msg FROM staging")
    assert shape.writes and shape.write_tables == {"audit_log"} and shape.read_tables == {"staging"}
    shape = classify_sql("WITH recent AS (SELECT * FROM orders) SELECT * FROM recent")
    assert shape.read_tables == {"orders"} and not shape.writes
    assert classify_sql("UPDATE orders SET qty = 0 WHERE id = ?").write_tables == {"orders"}
    assert classify_sql("DELETE FROM orders").write_tables == {"orders"}
    assert classify_sql("CREATE INDEX ix ON orders (qty)").write_tables == {"orders"}
    assert classify_sql("PRAGMA writable_schema = 1").writes
    assert classify_sql("SELECT * FROM orders FOR UPDATE").writes
    assert not classify_sql("SELECT replace(item, 'a', 'b') FROM orders").writes
    assert classify_sql("SELECT ';' FROM orders").error is None
    assert classify_sql("SELECT 1; SELECT 2").error
    assert classify_sql("SELECT 'open").error


def test_file_read_and_write(ex: WasmExecutor, hostcalls: CompiledModule, tmp_path: Path) -> None:
    files = LocalStorage(tmp_path / "files")
    files.put("secret.txt", b"top secret")
    files.put("reports/bin.dat", b"\xff\x00\xfe")

    host, events = _audited(["file:write:reports/", "file:read:reports/"], files=files)
    wrote = ex.call(hostcalls, {"path": "reports/a.csv", "content": "a,b\n1,2\n"}, function="file_write", host=host)
    assert wrote.output == {"ok": True, "path": "reports/a.csv", "bytes": 8}
    assert files.get("reports/a.csv") == b"a,b\n1,2\n"
    read = ex.call(hostcalls, {"path": "reports/a.csv"}, function="file_read", host=host)
    assert read.output == {"ok": True, "content": "a,b\n1,2\n"}
    binary = ex.call(hostcalls, {"path": "reports/bin.dat"}, function="file_read", host=host)
    assert binary.output == {"ok": True, "content_base64": base64.b64encode(b"\xff\x00\xfe").decode()}
    b64 = {"path": "reports/b.bin", "content_base64": base64.b64encode(b"\x01\x02").decode()}
    assert ex.call(hostcalls, b64, function="file_write", host=host).output["bytes"] == 2
    assert [e["event"] for e in events] == ["host_call"] * 4

    secret = ex.call(hostcalls, {"path": "secret.txt"}, function="file_read", host=host)
    assert secret.output["ok"] is False and secret.output["denied"] == "file:read:secret.txt"
    escape = ex.call(hostcalls, {"path": "reports/../secret.txt"}, function="file_read", host=host)
    assert escape.output["ok"] is False and "denied" in escape.output
    outside = ex.call(hostcalls, {"path": "elsewhere/x.txt", "content": "x"}, function="file_write", host=host)
    assert outside.output["denied"] == "file:write:elsewhere/x.txt"
    assert not files.exists("elsewhere/x.txt")
    assert [e["event"] for e in events][-3:] == ["permission_denied"] * 3

    read_only, _ = _audited(["file:read:reports/"], files=files)
    no_write = ex.call(hostcalls, {"path": "reports/c.txt", "content": "x"}, function="file_write", host=read_only)
    assert no_write.output["denied"] == "file:write:reports/c.txt"


@dataclass
class _Record:
    id: str
    version: str
    permissions: PermissionSet


class _FakeRegistry:
    def __init__(self, data: bytes, permissions: list[str]) -> None:
        self.data = data
        self.permissions = PermissionSet(permissions)
        self.fetched: list[str] = []

    def fetch(self, ref: str) -> tuple[bytes, _Record]:
        self.fetched.append(ref)
        return self.data, _Record("hostcalls", "1.0.0", self.permissions)


def test_registry_modules_bring_their_permissions(http_base: str) -> None:
    registry = _FakeRegistry(wasm("hostcalls.wat"), [f"http:read:{http_base}/*"])
    ex = WasmExecutor(registry=registry)
    module = ex.load("hostcalls@1.0.0")
    assert module.module_id == "hostcalls@1.0.0" and module.permissions == registry.permissions
    result = ex.call("hostcalls@1.0.0", {"url": f"{http_base}/ok"}, function="http_request")
    assert result.output["status"] == 200 and result.module_id == "hostcalls@1.0.0"
    # explicit permissions win over the registered ones
    narrowed = ex.call(module, {"url": f"{http_base}/ok"}, function="http_request",
                       host=HostContext(permissions=PermissionSet(["http:read:https://other.example/*"])))
    assert narrowed.output["ok"] is False
    assert registry.fetched == ["hostcalls@1.0.0", "hostcalls@1.0.0"]
    with pytest.raises(WasmError):
        WasmExecutor().load("hostcalls@1.0.0")


# -- cache ----------------------------------------------------------------------------------------
def test_cache_hits_misses_and_evictions() -> None:
    cache = ModuleCache(executor_engine_key(), capacity=2, aot_dir="")
    ex = WasmExecutor(cache=cache)
    a, b, c = wasm("transform.wat"), wasm("hostile.wat"), wasm("hostcalls.wat")
    ex.compile(a)
    ex.compile(b)
    assert (cache.hits, cache.misses, cache.compiles, cache.evictions) == (0, 2, 2, 0)
    ex.compile(a)
    assert (cache.hits, cache.misses) == (1, 2)
    ex.compile(c)  # evicts b, the least recently used
    assert (cache.misses, cache.evictions, len(cache)) == (3, 1, 2)
    ex.compile(b)
    assert (cache.hits, cache.misses, cache.compiles, cache.evictions) == (1, 4, 4, 2)
    assert cache.stats() == {"size": 2, "capacity": 2, "hits": 1, "misses": 4, "evictions": 2, "aot_hits": 0,
                             "compiles": 4}
    assert ex.call(ex.compile(a), {"x": 1}, function="echo").output == {"x": 1}


def test_aot_cache_warm_load_and_corrupt_file(tmp_path: Path) -> None:
    key = executor_engine_key()
    data = wasm("transform.wat")
    first = ModuleCache(key, aot_dir=str(tmp_path))
    module = WasmExecutor(cache=first).compile(data)
    assert (first.compiles, first.aot_hits) == (1, 0)
    path = tmp_path / f"{module.sha256}-{key}.cwasm"
    assert path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".crc32"]

    second = ModuleCache(key, aot_dir=str(tmp_path))
    warm = WasmExecutor(cache=second)
    assert warm.call(warm.compile(data), {"warm": True}, function="echo").output == {"warm": True}
    assert (second.aot_hits, second.compiles, second.misses) == (1, 0, 1)

    path.write_bytes(b"this is not a compiled module" * 10)
    third = ModuleCache(key, aot_dir=str(tmp_path))
    recovered = WasmExecutor(cache=third)
    assert recovered.call(recovered.compile(data), [1], function="echo").output == [1]
    assert (third.aot_hits, third.compiles) == (0, 1)
    fourth = ModuleCache(key, aot_dir=str(tmp_path))
    WasmExecutor(cache=fourth).compile(data)
    assert (fourth.aot_hits, fourth.compiles) == (1, 0)  # the corrupt file was replaced

    body = bytearray(path.read_bytes())  # one flipped byte: the checksum catches it
    body[len(body) // 2] ^= 0xFF
    path.write_bytes(bytes(body))
    fifth = ModuleCache(key, aot_dir=str(tmp_path))
    WasmExecutor(cache=fifth).compile(data)
    assert (fifth.aot_hits, fifth.compiles) == (0, 1)
    Path(str(path) + ".crc32").unlink()  # no checksum: not trusted either
    sixth = ModuleCache(key, aot_dir=str(tmp_path))
    WasmExecutor(cache=sixth).compile(data)
    assert (sixth.aot_hits, sixth.compiles) == (0, 1)


def test_aot_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADF_WASM_CACHE_DIR", str(tmp_path))
    assert ModuleCache("k1").aot_dir == str(tmp_path)
    assert ModuleCache("k1", aot_dir="").aot_dir is None
    monkeypatch.delenv("ADF_WASM_CACHE_DIR")
    assert ModuleCache("k1").aot_dir is None


def test_engine_key_changes_with_version_and_config() -> None:
    base = engine_key(ENGINE_SETTINGS, version="50.0.1")
    assert base == engine_key(dict(ENGINE_SETTINGS), version="50.0.1")
    assert base != engine_key(ENGINE_SETTINGS, version="51.0.0")
    assert base != engine_key({**ENGINE_SETTINGS, "max_wasm_stack": 1 << 20}, version="50.0.1")
    assert base != engine_key({**ENGINE_SETTINGS, "consume_fuel": False}, version="50.0.1")
    assert executor_engine_key() == engine_key(ENGINE_SETTINGS)
    assert len(base) == 16


# -- sessions --------------------------------------------------------------------------------------
def test_session_reuses_one_instance_with_fresh_fuel_per_call(ex: WasmExecutor, transform: CompiledModule) -> None:
    payload = {"text": "abc" * 200}
    one = ex.call(transform, payload, function="upper")
    limits = Limits(fuel=one.fuel_consumed * 3 // 2)  # room for one call, not for two
    with ex.session(transform, function="upper", limits=limits) as session:
        assert isinstance(session, CallSession)
        results = [session.call(payload) for _ in range(5)]
    assert all(r.output == {"TEXT": "ABC" * 200} for r in results)
    # the first call also pays for instantiation; afterwards every call costs the same fresh fuel
    assert len({r.fuel_consumed for r in results[1:]}) == 1
    assert all(r.fuel_consumed <= limits.fuel for r in results)
    assert len({r.execution_id for r in results}) == 5

    with ex.session(transform, function="count", limits=Limits(memory_mb=1)) as counter:
        assert [counter.call({}).output["n"] for _ in range(3)] == [1, 2, 3]
        with pytest.raises(WasmLimitExceeded) as info:
            counter.call("x" * (2 << 20))  # the guest cannot allocate a 2 MiB input under a 1 MiB limit
        assert info.value.kind == "memory"
        assert counter.call({}).output["n"] == 1  # ... and the next call runs on a fresh instance
    with pytest.raises(WasmError, match="closed"):
        counter.call({})
    assert ex.call(transform, {}, function="count").output == {"n": 1}  # call() = a fresh instance


def test_session_over_a_wasi_module(ex: WasmExecutor) -> None:
    module = ex.compile(wasm("wasi_echo.wat"))
    with ex.session(module) as session:
        assert [session.call({"i": i}).output for i in range(3)] == [{"i": 0}, {"i": 1}, {"i": 2}]


# -- the standard library only at import ---------------------------------------------------------
def test_modules_import_with_the_standard_library_only() -> None:
    code = (f"import sys; sys.path[:0] = [{str(package_parent())!r}]; import active_data_flow.wasm.executor, active_data_flow.wasm.hostfns, active_data_flow.wasm.cache; "
            "bad = [m for m in ('wasmtime', 'sqlalchemy', 'boto3', 'cryptography') if m in sys.modules]; "
            "assert not bad, bad; print('ok')")
    out = subprocess.run([sys.executable, "-S", "-E", "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_result_is_json_serialisable(ex: WasmExecutor, transform: CompiledModule) -> None:
    result = ex.call(transform, {"a": 1})
    assert json.loads(json.dumps(result.to_dict()))["output"]["echo"] == {"a": 1}
