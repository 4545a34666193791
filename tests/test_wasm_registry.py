"""The WebAssembly module registry: uploads, versions, signatures, integrity, logs, the `adf wasm`
command line; SQLite + a local directory, and PostgreSQL + moto's S3 server."""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
import wasmtime
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from moto_endpoint import moto_endpoint

from active_data_flow.wasm.errors import ModuleIntegrityError, ModuleNotFoundInRegistry, SignatureError
from active_data_flow.wasm.registry import ModuleExistsError, ModuleRegistry, parse_ref, version_key
from active_data_flow.wasm.storage import LocalStorage, S3Storage

ROOT = Path(__file__).resolve().parent.parent
ADF = [sys.executable, "-m", "active_data_flow.cli"]
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"

# The guest memory ABI: memory, alloc(len) -> ptr, run(ptr, len) -> (out_ptr << 32) | out_len.
_ALLOC = """
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (func (export "alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (local.get $p) (local.get $n)))
    (if (i32.gt_u (global.get $next) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (drop (memory.grow
          (i32.add (i32.const 1)
            (i32.div_u (i32.sub (global.get $next) (i32.mul (memory.size) (i32.const 65536)))
                       (i32.const 65536)))))))
    (local.get $p))
"""
ECHO_WAT = f"""(module {_ALLOC}
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len)))))
"""
LOOP_WAT = f"""(module {_ALLOC}
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (loop $forever (br $forever))
    (unreachable)))
"""


def wasm(wat: str) -> bytes:
    return bytes(wasmtime.wat2wasm(wat))


def variant(n: int) -> bytes:
    """A distinct valid module per ``n``."""
    return wasm(f'(module (func (export "run") (result i32) (i32.const {n})))')


ECHO = wasm(ECHO_WAT)


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[ModuleRegistry]:
    registry = ModuleRegistry(f"sqlite:///{tmp_path / 'wasm.db'}", LocalStorage(tmp_path / "store"))
    yield registry
    registry.close()


def stored(registry: ModuleRegistry) -> list[str]:
    return registry.storage.list()


# --------------------------------------------------------------------------- modules


def test_upload_get_list_and_versions_in_semantic_version_order(reg: ModuleRegistry) -> None:
    for i, version in enumerate(["1.9.0", "1.10.0", "1.10.0-rc.1", "1.2.3", "0.1.0"]):
        rec = reg.upload("pricing", version, variant(i), permissions=["http:read:https://api.example.com/*"],
                         description=f"v{version}")
        assert rec.ref == f"pricing@{version}" and not rec.signed and rec.author is None
        assert rec.storage_key == f"modules/pricing/{version}/{rec.sha256}.wasm"
    reg.upload("alpha", "2.0.0", ECHO)
    assert [r.version for r in reg.versions("pricing")] == ["0.1.0", "1.2.3", "1.9.0", "1.10.0-rc.1", "1.10.0"]
    assert reg.get("pricing").version == "1.10.0"
    assert reg.get("pricing@latest").version == "1.10.0"
    got = reg.get("pricing@1.9.0")
    assert got.description == "v1.9.0" and got.size == len(variant(0))
    assert got.permissions.to_list() == ["http:read:https://api.example.com/*"]
    assert got.to_dict()["permissions"] == ["http:read:https://api.example.com/*"]
    json.dumps(got.to_dict())
    assert [(r.id, r.version) for r in reg.list()] == [("alpha", "2.0.0"), ("pricing", "1.10.0")]
    data, rec = reg.fetch("alpha@2.0.0")
    assert data == ECHO and rec.sha256 == reg.get("alpha").sha256
    with pytest.raises(ModuleNotFoundInRegistry, match=re.escape("versions: 0.1.0")):
        reg.get("pricing@9.9.9")
    with pytest.raises(ModuleNotFoundInRegistry):
        reg.fetch("nothing")


def test_version_order_and_refs() -> None:
    ordered = ["0.9.9", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta.2", "1.0.0-beta.11",
               "1.0.0-rc.1", "1.0.0", "1.9.0", "1.10.0", "10.0.0"]
    assert sorted(reversed(ordered), key=version_key) == ordered
    assert parse_ref("a@1.0.0") == ("a", "1.0.0")
    assert parse_ref("a") == ("a", None) and parse_ref("a@latest") == ("a", None)


def test_delete_one_version_or_every_version(reg: ModuleRegistry) -> None:
    for i, v in enumerate(["1.0.0", "1.1.0", "2.0.0"]):
        reg.upload("m", v, variant(i))
    reg.upload("other", "1.0.0", ECHO)
    reg.delete("m@1.1.0")
    assert [r.version for r in reg.versions("m")] == ["1.0.0", "2.0.0"]
    assert not any("/1.1.0/" in k for k in stored(reg))
    reg.delete("m")
    assert reg.versions("m") == [] and [r.id for r in reg.list()] == ["other"]
    assert stored(reg) == [reg.get("other").storage_key]
    with pytest.raises(ModuleNotFoundInRegistry):
        reg.delete("m")
    with pytest.raises(ModuleNotFoundInRegistry):
        reg.delete("other@3.0.0")


def test_set_permissions_validates_everything_before_saving(reg: ModuleRegistry) -> None:
    reg.upload("m", "1.0.0", ECHO, permissions=["db:read:main/orders*"])
    rec = reg.set_permissions("m@1.0.0", ["http:read:https://a/*", "file:write:out/"])
    assert rec.permissions.to_list() == ["file:write:out/", "http:read:https://a/*"]
    assert reg.get("m@1.0.0").permissions == rec.permissions
    with pytest.raises(ValueError) as info:
        reg.set_permissions("m@1.0.0", ["http:read:https://ok/*", "nope", "db:read:no-slash", "file:read:../x"])
    message = str(info.value)
    assert "'nope'" in message and "no-slash" in message and "'..'" in message
    assert reg.get("m@1.0.0").permissions == rec.permissions  # nothing saved
    changes = reg.audit_log(module_id="m", event="permissions_changed")
    assert changes[0]["added"] == ["file:write:out/", "http:read:https://a/*"]
    assert changes[0]["removed"] == ["db:read:main/orders*"]


@pytest.mark.parametrize(
    ("module_id", "version", "data", "permissions", "expected"),
    [
        ("good", "1.0.0", b"\0asm\x01\0\0\0\x01garbage", [], "invalid WebAssembly module"),
        ("good", "1.0.0", b"(module)", [], "not a WebAssembly binary"),
        ("good", "1.0.0", b"", [], "empty"),
        ("Bad_Id", "1.0.0", ECHO, [], "module id 'Bad_Id'"),
        ("-lead", "1.0.0", ECHO, [], "module id '-lead'"),
        ("a/b", "1.0.0", ECHO, [], "module id 'a/b'"),
        ("good", "1.0", ECHO, [], "version '1.0'"),
        ("good", "v1.0.0", ECHO, [], "version 'v1.0.0'"),
        ("good", "1.0.0", ECHO, ["http:read:https://x/*", "http:exec:x", "db:write:nodb"], "http:exec"),
    ],
)
def test_invalid_uploads_are_refused_and_store_nothing(reg: ModuleRegistry, module_id: str, version: str,
                                                       data: bytes, permissions: list[str], expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        reg.upload(module_id, version, data, permissions=permissions)
    assert reg.list() == [] and stored(reg) == []


def test_bad_permissions_are_all_listed(reg: ModuleRegistry) -> None:
    with pytest.raises(ValueError) as info:
        reg.upload("good", "1.0.0", ECHO, permissions=["http:exec:x", "db:write:nodb"])
    assert "http:exec" in str(info.value) and "nodb" in str(info.value)


def test_a_duplicate_version_is_refused_and_keeps_the_original(reg: ModuleRegistry) -> None:
    first = reg.upload("m", "1.0.0", ECHO)
    with pytest.raises(ModuleExistsError, match="already registered"):
        reg.upload("m", "1.0.0", variant(1))
    assert reg.fetch("m@1.0.0")[0] == ECHO
    assert stored(reg) == [first.storage_key]


def test_a_failed_insert_removes_the_binary(reg: ModuleRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two uploads of one id@version race: the loser's insert fails and its binary is removed."""
    winner = reg.upload("m", "1.0.0", ECHO)

    def never_found(self: ModuleRegistry, ref: str) -> Any:
        raise ModuleNotFoundInRegistry(ref)

    monkeypatch.setattr(ModuleRegistry, "_row", never_found)  # the loser did not see the winner
    with pytest.raises(ModuleExistsError):
        reg.upload("m", "1.0.0", variant(7))
    monkeypatch.undo()
    assert stored(reg) == [winner.storage_key]
    assert reg.fetch("m@1.0.0")[0] == ECHO


def test_registry_location_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADF_STATE_DIR", str(tmp_path / "state"))
    for name in ("ADF_WASM_DB_URL", "ADF_WASM_STORAGE", "ADF_WASM_S3_ENDPOINT", "ADF_WASM_REQUIRE_SIGNATURE"):
        monkeypatch.delenv(name, raising=False)
    with ModuleRegistry.from_env() as default:
        default.upload("m", "1.0.0", ECHO)
        assert default.db_url == f"sqlite:///{tmp_path / 'state' / 'wasm.db'}"
        assert (tmp_path / "state" / "wasm.db").is_file()
        assert (tmp_path / "state" / "wasm-modules" / default.get("m").storage_key).is_file()
        assert default.require_signature is False
    monkeypatch.setenv("ADF_WASM_DB_URL", f"sqlite:///{tmp_path / 'other.db'}")
    monkeypatch.setenv("ADF_WASM_STORAGE", str(tmp_path / "bins"))
    monkeypatch.setenv("ADF_WASM_REQUIRE_SIGNATURE", "true")
    with ModuleRegistry.from_env() as configured:
        assert configured.list() == [] and configured.require_signature is True
        assert configured.storage.url == "file://" + str(tmp_path / "bins")
    with pytest.raises(ValueError, match="table_prefix"):
        ModuleRegistry(f"sqlite:///{tmp_path / 'x.db'}", str(tmp_path / "s"), table_prefix="x; drop")


# --------------------------------------------------------------------------- signatures


@pytest.fixture
def signer() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_a_good_signature_is_accepted_and_rechecked_at_fetch(reg: ModuleRegistry, signer: Ed25519PrivateKey) -> None:
    reg.add_author_key("alice", public_pem(signer))
    reg.add_author_key("alice", public_pem(signer))  # idempotent
    rec = reg.upload("signed", "1.0.0", ECHO, signature=signer.sign(ECHO), author="alice")
    assert rec.signed and rec.author == "alice" and reg.get("signed").signed
    # base64 signatures and raw public keys work too
    reg.add_author_key("bob", public_raw(signer))
    assert reg.upload("signed", "1.1.0", ECHO, signature=base64.b64encode(signer.sign(ECHO)), author="bob").signed
    assert reg.authors() == ["alice", "bob"]
    assert reg.fetch("signed@1.0.0")[0] == ECHO
    assert reg.security_alerts() == []


def test_a_rotated_key_keeps_old_signatures_valid(reg: ModuleRegistry, signer: Ed25519PrivateKey) -> None:
    reg.add_author_key("alice", public_pem(signer))
    reg.upload("m", "1.0.0", ECHO, signature=signer.sign(ECHO), author="alice")
    new = Ed25519PrivateKey.generate()
    reg.add_author_key("alice", public_pem(new))
    reg.upload("m", "1.1.0", variant(1), signature=new.sign(variant(1)), author="alice")
    assert reg.fetch("m@1.0.0")[0] == ECHO and reg.fetch("m@1.1.0")[0] == variant(1)
    assert len([k for k in reg.author_keys() if k["author"] == "alice"]) == 2


def test_bad_signatures_and_unknown_authors_are_refused_with_an_alert(reg: ModuleRegistry,
                                                                     signer: Ed25519PrivateKey) -> None:
    reg.add_author_key("alice", public_pem(signer))
    other = Ed25519PrivateKey.generate()
    with pytest.raises(SignatureError, match="does not verify"):
        reg.upload("m", "1.0.0", ECHO, signature=other.sign(ECHO), author="alice")
    with pytest.raises(SignatureError, match="does not verify"):
        reg.upload("m", "1.0.0", ECHO, signature=signer.sign(ECHO + b"x"), author="alice")
    with pytest.raises(SignatureError, match="unknown author 'mallory'"):
        reg.upload("m", "1.0.0", ECHO, signature=signer.sign(ECHO), author="mallory")
    with pytest.raises(SignatureError, match="needs the author"):
        reg.upload("m", "1.0.0", ECHO, signature=signer.sign(ECHO))
    with pytest.raises(SignatureError, match="64 bytes"):
        reg.upload("m", "1.0.0", ECHO, signature=b"short", author="alice")
    assert reg.list() == [] and stored(reg) == []
    alerts = reg.security_alerts(module_id="m")
    assert len(alerts) == 5 and {a["kind"] for a in alerts} == {"bad_signature"}
    assert "mallory" in alerts[2]["message"]  # newest first
    with pytest.raises(ValueError, match="private key"):
        reg.add_author_key("alice", signer.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    with pytest.raises(ValueError, match="Ed25519"):
        reg.add_author_key("alice", b"not a key")


def test_require_signature_refuses_unsigned_uploads(tmp_path: Path, signer: Ed25519PrivateKey) -> None:
    with ModuleRegistry(f"sqlite:///{tmp_path / 'w.db'}", str(tmp_path / "s"), require_signature=True) as strict:
        with pytest.raises(SignatureError, match="requires signed modules"):
            strict.upload("m", "1.0.0", ECHO)
        assert strict.list() == [] and strict.storage.list() == []
        assert [a["kind"] for a in strict.security_alerts()] == ["unsigned_upload"]
        strict.add_author_key("alice", public_pem(signer))
        assert strict.upload("m", "1.0.0", ECHO, signature=signer.sign(ECHO), author="alice").signed


def test_a_tampered_signature_is_refused_at_fetch(tmp_path: Path, reg: ModuleRegistry,
                                                  signer: Ed25519PrivateKey) -> None:
    reg.add_author_key("alice", public_pem(signer))
    reg.upload("m", "1.0.0", ECHO, signature=signer.sign(ECHO), author="alice")
    forged = base64.b64encode(Ed25519PrivateKey.generate().sign(ECHO)).decode()
    with sqlite3.connect(tmp_path / "wasm.db") as db:
        db.execute("UPDATE wasm_modules SET signature = ?", (forged,))
    with pytest.raises(SignatureError, match=re.escape("fetch of m@1.0.0 refused")):
        reg.fetch("m@1.0.0")
    assert reg.security_alerts()[0]["kind"] == "bad_signature"


# --------------------------------------------------------------------------- integrity


def test_tampered_bytes_are_refused_with_a_security_alert(reg: ModuleRegistry) -> None:
    rec = reg.upload("m", "1.0.0", ECHO)
    reg.storage.put(rec.storage_key, variant(666))  # someone overwrote the binary in storage
    with pytest.raises(ModuleIntegrityError, match="integrity check"):
        reg.fetch("m@1.0.0")
    alert = reg.security_alerts(module_id="m")[0]
    assert alert["kind"] == "integrity_mismatch" and alert["version"] == "1.0.0"
    assert alert["detail"]["expected"] == rec.sha256
    reg.storage.delete(rec.storage_key)
    with pytest.raises(ModuleIntegrityError, match="missing"):
        reg.fetch("m")
    assert reg.security_alerts()[0]["kind"] == "missing_binary"
    assert reg.security_alerts(module_id="other") == []


# --------------------------------------------------------------------------- logs


def entry(execution_id: str, module_id: str, ok: bool, fuel: int, ms: float, started: str, **more: Any) -> dict[str, Any]:
    return {"execution_id": execution_id, "module_id": module_id, "function": "run", "started_at": started, "ok": ok,
            "fuel_consumed": fuel, "peak_memory_bytes": 65536, "duration_ms": ms,
            "error": None if ok else "fuel limit exceeded (100)", "error_type": None if ok else "WasmLimitExceeded",
            "limit": None if ok else "fuel", "trace": None, **more}


def test_execution_log_query_and_stats(reg: ModuleRegistry) -> None:
    reg.record(entry("e1", "pricing@1.0.0", True, 100, 2.0, "2025-01-01T00:00:01Z"))
    reg.record(entry("e2", "pricing@1.0.0", False, 300, 4.0, "2025-01-01T00:00:02+00:00", records=3))
    reg.record(entry("e3", "other@1.0.0", True, 10, 1.0, "2025-01-01T00:00:03.5Z"))
    assert [e["execution_id"] for e in reg.query()] == ["e3", "e2", "e1"]
    (e2,) = reg.query(execution_id="e2")
    assert e2["ok"] is False and e2["limit"] == "fuel" and e2["error_type"] == "WasmLimitExceeded"
    assert e2["records"] == 3 and e2["started_at"] == "2025-01-01T00:00:02.000Z"
    assert [e["execution_id"] for e in reg.query(module_id="pricing@1.0.0")] == ["e2", "e1"]
    assert len(reg.query(limit=1)) == 1
    stats = reg.stats("pricing@1.0.0")
    assert stats["executions"] == 2 and stats["failures"] == 1
    assert stats["avg_fuel"] == 200 and stats["max_fuel"] == 300 and stats["avg_duration_ms"] == 3.0
    assert stats["last_run"] == "2025-01-01T00:00:02.000Z"
    assert reg.stats("none")["executions"] == 0 and reg.stats("none")["last_run"] is None
    # a bare id matches every version's executions (logged as "id" or "id@version"), and only those
    reg.record(entry("e4", "pricing@1.1.0", True, 50, 1.0, "2025-01-01T00:00:04Z"))
    reg.record(entry("e5", "pricing", True, 50, 1.0, "2025-01-01T00:00:05Z"))
    reg.record(entry("e6", "pricingx@1.0.0", True, 50, 1.0, "2025-01-01T00:00:06Z"))
    reg.record(entry("e7", "a-c@1.0.0", True, 50, 1.0, "2025-01-01T00:00:07Z"))
    assert [e["execution_id"] for e in reg.query(module_id="pricing")] == ["e5", "e4", "e2", "e1"]
    assert reg.stats("pricing")["executions"] == 4 and reg.stats("pricing@1.1.0")["executions"] == 1
    assert reg.query(module_id="a_c") == []  # '_' is not a wildcard


def test_audit_log(reg: ModuleRegistry) -> None:
    reg.audit({"event": "host_call", "module_id": "m", "execution_id": "e1", "permission": "http:read",
               "resource": "https://api.example.com/x", "function": "http_get", "ts": 1_700_000_000.0})
    reg.audit({"event": "permission_denied", "module_id": "m", "execution_id": "e1", "permission": "http:write",
               "resource": "https://bob:hunter2@evil.example/x", "function": "http_post", "ts": "2025-01-01T00:00:00Z"})
    reg.audit({"event": "permission_denied", "module_id": "n", "permission": "db:read", "resource": "main/t"})
    log = reg.audit_log(module_id="m")
    assert [e["event"] for e in log] == ["permission_denied", "host_call"]
    assert log[0]["resource"] == "https://bob:***@evil.example/x" and log[0]["function"] == "http_post"
    assert log[1]["ts"] == "2023-11-14T22:13:20.000Z"
    assert [e["module_id"] for e in reg.audit_log(event="permission_denied")] == ["n", "m"]
    assert len(reg.audit_log(limit=1)) == 1


# --------------------------------------------------------------------------- PostgreSQL + S3


@pytest.fixture
def pg_prefix() -> Iterator[str]:
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    yield prefix
    engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            for name in sa.inspect(conn).get_table_names():
                if name.startswith(prefix):
                    conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}"'))
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_round_trip_on_postgresql_and_s3(pg_prefix: str, signer: Ed25519PrivateKey) -> None:
    with moto_endpoint() as (endpoint, _):
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="wasm-registry")
        storage = S3Storage("s3://wasm-registry/modules-store", endpoint_url=endpoint)
        with ModuleRegistry(PG_URL, storage, table_prefix=pg_prefix) as reg:
            rec = reg.upload("echo", "1.0.0", ECHO, permissions=["http:read:https://x/*"])
            reg.upload("echo", "1.10.0", variant(2))
            reg.add_author_key("alice", public_pem(signer))
            reg.upload("signed", "0.1.0", variant(3), signature=signer.sign(variant(3)), author="alice")
            key = f"modules-store/{rec.storage_key}"
            assert s3.get_object(Bucket="wasm-registry", Key=key)["Body"].read() == ECHO
            data, got = reg.fetch("echo@1.0.0")
            assert data == ECHO and got == rec
            assert reg.fetch("signed")[0] == variant(3)
            assert [(r.id, r.version) for r in reg.list()] == [("echo", "1.10.0"), ("signed", "0.1.0")]
            with pytest.raises(ModuleExistsError):
                reg.upload("echo", "1.0.0", variant(9))
            reg.record(entry("e1", "echo@1.0.0", True, 10, 1.0, "2025-01-01T00:00:01Z"))
            reg.record(entry("e2", "echo@1.0.0", False, 30, 3.0, "2025-01-01T00:00:02Z"))
            stats = reg.stats("echo@1.0.0")
            assert (stats["executions"], stats["failures"], stats["avg_fuel"], stats["max_fuel"]) == (2, 1, 20.0, 30)
            reg.audit({"event": "permission_denied", "module_id": "echo", "permission": "http:write", "resource": "x"})
            assert reg.audit_log(module_id="echo")[0]["permission"] == "http:write"
            # someone overwrites the object in the bucket
            s3.put_object(Bucket="wasm-registry", Key=key, Body=variant(99))
            with pytest.raises(ModuleIntegrityError):
                reg.fetch("echo@1.0.0")
            assert reg.security_alerts(module_id="echo")[0]["kind"] == "integrity_mismatch"
            reg.delete("echo")
            assert [r.id for r in reg.list()] == ["signed"]
            assert not [o for o in s3.list_objects_v2(Bucket="wasm-registry").get("Contents", [])
                        if "/echo/" in o["Key"]]
        # a second registry on the same tables sees the same modules
        with ModuleRegistry(PG_URL, storage, table_prefix=pg_prefix) as again:
            assert again.get("signed").signed and again.authors() == ["alice"]


# --------------------------------------------------------------------------- the command line


def adf(*args: str, cwd: Path = ROOT, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.run([*ADF, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          input=stdin if stdin is not None else "")


def last_json(stdout: str) -> Any:
    return json.loads(stdout.strip().splitlines()[-1])


def adf_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("adf: ")]


@pytest.fixture
def where(tmp_path: Path) -> list[str]:
    return ["--db", f"sqlite:///{tmp_path / 'cli.db'}", "--storage", str(tmp_path / "cli-store")]


def test_cli_upload_list_show_permissions_delete(tmp_path: Path, where: list[str]) -> None:
    module = tmp_path / "echo.wasm"
    module.write_bytes(ECHO)
    res = adf("wasm", *where, "upload", str(module), "--id", "echo", "--version", "1.0.0",
              "--allow", "http:read:https://api.example.com/*", "--allow", "db:read:main/orders",
              "--description", "echoes its input")
    assert res.returncode == 0, res.stderr
    assert "uploaded echo@1.0.0" in res.stdout and "http:read:https://api.example.com/*" in res.stdout
    # location options after the sub-command work too
    res = adf("wasm", "upload", str(module), "--id", "echo", "--version", "1.2.0", "--json", *where)
    assert res.returncode == 0, res.stderr
    assert last_json(res.stdout)["ref"] == "echo@1.2.0" and last_json(res.stdout)["permissions"] == []

    res = adf("wasm", *where, "upload", str(module), "--id", "echo", "--version", "1.0.0")
    assert res.returncode == 2 and "already registered" in adf_lines(res.stderr)[0]
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\0asm\x01\0\0\0\x05junk")
    res = adf("wasm", *where, "upload", str(bad), "--id", "bad", "--version", "1.0.0", "--allow", "nope:x")
    assert res.returncode == 2 and len(adf_lines(res.stderr)) == 1 and "nope:x" in res.stderr
    res = adf("wasm", *where, "upload", str(bad), "--id", "bad", "--version", "1.0.0", "--json")
    assert res.returncode == 2 and "invalid WebAssembly module" in last_json(res.stdout)["error"]

    res = adf("wasm", *where, "list", "--json")
    assert [(m["id"], m["version"]) for m in last_json(res.stdout)["modules"]] == [("echo", "1.2.0")]
    res = adf("wasm", *where, "list")
    assert res.returncode == 0 and "echo" in res.stdout and "1.2.0" in res.stdout

    res = adf("wasm", *where, "show", "echo@1.0.0", "--json")
    shown = last_json(res.stdout)
    assert shown["module"]["description"] == "echoes its input" and shown["versions"] == ["1.0.0", "1.2.0"]
    assert shown["stats"]["executions"] == 0 and shown["executions"] == []
    res = adf("wasm", *where, "show", "echo@1.0.0")
    assert "db:read:main/orders" in res.stdout and "executions: none yet" in res.stdout
    res = adf("wasm", *where, "versions", "echo")
    assert res.returncode == 0 and "1.2.0  (latest)" in res.stdout

    res = adf("wasm", *where, "permissions", "echo@1.0.0", "--add", "file:read:reports/", "http:write:https://h/*",
              "--remove", "db:read:main/orders")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["permissions", "of", "echo@1.0.0:", "file:read:reports/",
                                  "http:read:https://api.example.com/*", "http:write:https://h/*"]
    res = adf("wasm", *where, "permissions", "echo@1.0.0", "--add", "http:fly:x", "--json")
    assert res.returncode == 2 and "http:fly" in last_json(res.stdout)["error"]
    res = adf("wasm", *where, "permissions", "echo@1.0.0", "--set", "db:write:main/audit", "--json")
    assert last_json(res.stdout) == {"ref": "echo@1.0.0", "permissions": ["db:write:main/audit"]}
    res = adf("wasm", *where, "permissions", "echo@1.0.0", "--set")
    assert res.returncode == 0 and "(none)" in res.stdout

    res = adf("wasm", *where, "delete", "echo@1.0.0")  # stdin is not a terminal
    assert res.returncode == 2 and "--yes" in adf_lines(res.stderr)[0]
    res = adf("wasm", *where, "delete", "echo@1.0.0", "--yes")
    assert res.returncode == 0 and "deleted echo@1.0.0" in res.stdout
    res = adf("wasm", *where, "versions", "echo", "--json")
    assert [v["version"] for v in last_json(res.stdout)["versions"]] == ["1.2.0"]
    res = adf("wasm", *where, "delete", "echo", "--yes")
    assert res.returncode == 0
    res = adf("wasm", *where, "show", "echo")
    assert res.returncode == 2 and "no module 'echo'" in adf_lines(res.stderr)[0]
    assert list((tmp_path / "cli-store").rglob("*.wasm")) == []


def test_cli_signing_keys_alerts_and_logs(tmp_path: Path, where: list[str], signer: Ed25519PrivateKey) -> None:
    module = tmp_path / "m.wasm"
    module.write_bytes(ECHO)
    (tmp_path / "alice.pub.pem").write_bytes(public_pem(signer))
    (tmp_path / "m.wasm.sig").write_bytes(signer.sign(ECHO))
    (tmp_path / "bad.sig").write_bytes(Ed25519PrivateKey.generate().sign(ECHO))
    res = adf("wasm", *where, "keys", "add", "alice", str(tmp_path / "alice.pub.pem"))
    assert res.returncode == 0 and "alice" in res.stdout, res.stderr
    res = adf("wasm", *where, "keys", "list", "--json")
    assert [k["author"] for k in last_json(res.stdout)["keys"]] == ["alice"]
    res = adf("wasm", *where, "upload", str(module), "--id", "m", "--version", "1.0.0",
              "--signature", str(tmp_path / "m.wasm.sig"), "--author", "alice", "--json")
    assert res.returncode == 0 and last_json(res.stdout)["signed"] is True, res.stderr
    res = adf("wasm", *where, "upload", str(module), "--id", "m", "--version", "1.1.0",
              "--signature", str(tmp_path / "bad.sig"), "--author", "alice")
    assert res.returncode == 1 and "does not verify" in adf_lines(res.stderr)[0]
    res = adf("wasm", *where, "alerts", "--json")
    alerts = last_json(res.stdout)["alerts"]
    assert [(a["kind"], a["module_id"], a["version"]) for a in alerts] == [("bad_signature", "m", "1.1.0")]
    assert "bad_signature" in adf("wasm", *where, "alerts").stdout

    with ModuleRegistry(where[1], where[3]) as reg:
        reg.record(entry("exec-1", "m", False, 1234, 5.0, "2025-01-01T00:00:00Z"))
        reg.audit({"event": "permission_denied", "module_id": "m", "execution_id": "exec-1",
                   "permission": "http:read", "resource": "https://x"})
    res = adf("wasm", *where, "executions", "--id", "exec-1", "--json")
    (run,) = last_json(res.stdout)["executions"]
    assert run["fuel_consumed"] == 1234 and run["limit"] == "fuel"
    res = adf("wasm", *where, "executions", "--module", "m")
    assert "exec-1" in res.stdout and "fuel limit" in res.stdout
    res = adf("wasm", *where, "audit", "--module", "m", "--json")
    assert last_json(res.stdout)["events"][0]["event"] == "permission_denied"
    res = adf("wasm", *where, "show", "m")
    assert "1 failed" in res.stdout and "exec-1" in res.stdout


# --------------------------------------------------------------------------- adf wasm test (needs the executor)


def test_cli_test_runs_the_echo_module(tmp_path: Path, where: list[str]) -> None:
    module = tmp_path / "echo.wasm"
    module.write_bytes(ECHO)
    payload = {"greeting": "hello", "n": [1, 2, 3]}
    (tmp_path / "in.json").write_text(json.dumps(payload))
    res = adf("wasm", "test", str(module), "--input", str(tmp_path / "in.json"), "--json")
    assert res.returncode == 0, res.stderr
    out = last_json(res.stdout)
    assert out["ok"] is True and out["output"] == payload and out["error"] is None and out["limit"] is None
    assert isinstance(out["fuel_consumed"], int) and out["fuel_consumed"] > 0
    res = adf("wasm", "test", str(module), "--input", "-", stdin=json.dumps(payload))
    assert res.returncode == 0, res.stderr
    assert '"greeting": "hello"' in res.stdout and "fuel consumed" in res.stdout

    # a registry module: the run goes to the execution log
    assert adf("wasm", *where, "upload", str(module), "--id", "echo", "--version", "1.0.0").returncode == 0
    res = adf("wasm", *where, "test", "echo@1.0.0", "--input", str(tmp_path / "in.json"), "--json")
    assert res.returncode == 0, res.stderr
    assert last_json(res.stdout)["output"] == payload
    res = adf("wasm", *where, "executions", "--module", "echo", "--json")
    runs = last_json(res.stdout)["executions"]
    assert len(runs) == 1 and runs[0]["ok"] is True


def test_cli_test_reports_the_fuel_limit_of_an_infinite_loop(tmp_path: Path) -> None:
    module = tmp_path / "loop.wasm"
    module.write_bytes(wasm(LOOP_WAT))
    (tmp_path / "in.json").write_text("{}")
    res = adf("wasm", "test", str(module), "--input", str(tmp_path / "in.json"), "--fuel", "100000", "--json")
    assert res.returncode == 1
    out = last_json(res.stdout)
    assert out["ok"] is False and out["limit"] == "fuel" and out["output"] is None and out["error"]
    assert out["fuel_consumed"] > 0
    res = adf("wasm", "test", str(module), "--input", str(tmp_path / "in.json"), "--fuel", "100000")
    assert res.returncode == 1
    (line,) = adf_lines(res.stderr)
    assert "fuel" in line and "fuel consumed" in line


def test_cli_test_refuses_bad_input(tmp_path: Path) -> None:
    module = tmp_path / "echo.wasm"
    module.write_bytes(ECHO)
    (tmp_path / "in.json").write_text("{not json")
    res = adf("wasm", "test", str(module), "--input", str(tmp_path / "in.json"), "--json")
    assert res.returncode == 2 and "not JSON" in last_json(res.stdout)["error"]
    res = adf("wasm", "test", str(module), "--input", "-", "--fuel", "0", stdin="{}")
    assert res.returncode == 2 and "fuel" in adf_lines(res.stderr)[0]
    res = adf("wasm", "test", str(tmp_path / "missing.wasm"), "--json")
    assert res.returncode == 2 and last_json(res.stdout)["ok"] is False
