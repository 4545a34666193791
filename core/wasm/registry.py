"""The module registry: versioned WebAssembly modules, their permissions, signatures, and the
execution, audit and security logs.

Binaries live in a :class:`~active_data_flow.wasm.storage.Storage` (a local directory or S3) under
``modules/<id>/<version>/<sha256>.wasm``; metadata lives in a SQL database through SQLAlchemy
Core (SQLite by default, PostgreSQL for a shared registry). Tables, created when missing and
named with an optional ``table_prefix``:

``wasm_modules``          one row per ``id@version``: SHA-256, size, permissions (JSON text),
                          author, Ed25519 signature (base64), description, storage key
``wasm_author_keys``      Ed25519 public keys of the authors allowed to sign (several per author)
``wasm_executions``       one row per call the executor ran (:meth:`ModuleRegistry.record`)
``wasm_security_alerts``  refused signatures, tampered or missing binaries
``wasm_audit``            host-call audit events (permission denials, ...) and permission changes

Every module is validated before anything is stored: id ``[a-z0-9][a-z0-9_.-]*``, a
semantic version, no duplicate ``id@version``, bytes wasmtime accepts, valid permissions and,
when given (or required), a signature that verifies against the author's registered key.
:meth:`ModuleRegistry.fetch` re-checks the SHA-256 (and the signature of a signed module) each
time and refuses the module, with a security alert, when they do not match.

Configuration (constructor arguments win): ``ADF_WASM_DB_URL`` (default
``sqlite:///<state root>/wasm.db``), ``ADF_WASM_STORAGE`` (default
``<state root>/wasm-modules``), ``ADF_WASM_S3_ENDPOINT`` (an S3-compatible endpoint),
``ADF_WASM_REQUIRE_SIGNATURE`` (refuse unsigned uploads). The state root is
``$ADF_STATE_DIR`` or ``./.adf``.

Standard library only at import: SQLAlchemy, wasmtime and cryptography are imported when a
registry opens, validates a module or checks a signature (``pip install 'active-data-flow[wasm]'``).

The parts, one module each: :mod:`active_data_flow.wasm.registry_store` (records, tables, the database
engine), :mod:`active_data_flow.wasm.registry_checks` (what an upload and a signature must pass) and
:mod:`active_data_flow.wasm.registry_logs` (the execution, audit and security logs); their public names
used elsewhere are importable from here.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from active_data_flow.ids import utc_now_iso
from active_data_flow.logs import get_logger, log_event
from active_data_flow.redact import redact_text
from active_data_flow.wasm.errors import ModuleIntegrityError, ModuleNotFoundInRegistry, SignatureError
from active_data_flow.wasm.permissions import PermissionSet
from active_data_flow.wasm.registry_checks import (
    ed25519_module,
    key_fingerprint,
    parse_signature,
    public_key_bytes,
    signature_verifies,
    upload_problems,
    validate_wasm,
)
from active_data_flow.wasm.registry_logs import RegistryLogs
from active_data_flow.wasm.registry_store import MODULE_ID_MAX as MODULE_ID_MAX
from active_data_flow.wasm.registry_store import MODULE_ID_RE as MODULE_ID_RE
from active_data_flow.wasm.registry_store import VERSION_MAX as VERSION_MAX
from active_data_flow.wasm.registry_store import VERSION_RE as VERSION_RE
from active_data_flow.wasm.registry_store import (
    ModuleRecord,
    build_tables,
    json_text,
    make_engine,
    parse_ref,
    sqlalchemy_module,
    version_key,
)
from active_data_flow.wasm.storage import Storage, open_storage

__all__ = [
    "ALERT_KINDS",
    "ModuleExistsError",
    "ModuleRecord",
    "ModuleRegistry",
    "parse_ref",
    "parse_signature",
    "public_key_bytes",
    "version_key",
]

_log = get_logger("wasm.registry")
_PREFIX_RE = re.compile(r"[A-Za-z0-9_]*")
_TRUE = frozenset({"1", "true", "yes", "on"})

#: what :meth:`ModuleRegistry.security_alerts` may report
ALERT_KINDS = ("bad_signature", "unsigned_upload", "integrity_mismatch", "missing_binary")


class ModuleExistsError(ValueError):
    """``id@version`` is already registered (versions are immutable: upload a new version)."""


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


class ModuleRegistry(RegistryLogs):
    """Upload, verify, list and fetch WebAssembly modules; keep the execution, audit and
    security logs. Thread-safe (one SQLAlchemy engine, one storage)."""

    def __init__(
        self,
        db_url: str | None = None,
        storage: Storage | str | None = None,
        *,
        endpoint_url: str | None = None,
        engine_validate: bool = True,
        require_signature: bool | None = None,
        table_prefix: str = "",
    ) -> None:
        from active_data_flow.engine import default_state_root

        if not _PREFIX_RE.fullmatch(table_prefix):
            raise ValueError(f"table_prefix {table_prefix!r}: only letters, digits and '_'")
        root = default_state_root()
        self.db_url = db_url or os.environ.get("ADF_WASM_DB_URL") or f"sqlite:///{os.path.join(root, 'wasm.db')}"
        endpoint = endpoint_url or os.environ.get("ADF_WASM_S3_ENDPOINT") or None
        if isinstance(storage, Storage):
            self.storage = storage
        else:
            location = storage or os.environ.get("ADF_WASM_STORAGE") or os.path.join(root, "wasm-modules")
            self.storage = open_storage(location, endpoint_url=endpoint)
        self.engine_validate = engine_validate
        self.require_signature = (_env_flag("ADF_WASM_REQUIRE_SIGNATURE") if require_signature is None
                                  else bool(require_signature))
        self.table_prefix = table_prefix
        self._engine = make_engine(self.db_url)
        self._t = build_tables(table_prefix)
        self._create_tables()

    @classmethod
    def from_env(cls) -> ModuleRegistry:
        """A registry configured from ``ADF_WASM_*`` (and the defaults)."""
        return cls()

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> ModuleRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ModuleRegistry(db={redact_text(self.db_url)!r}, storage={self.storage.url!r})"

    def _create_tables(self) -> None:
        sa = sqlalchemy_module()
        try:
            self._t.metadata.create_all(self._engine, checkfirst=True)
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.OperationalError):
            # another process created them at the same moment: check again
            self._t.metadata.create_all(self._engine, checkfirst=True)

    # ----------------------------------------------------------------- rows -> records

    @staticmethod
    def _record(row: Mapping[str, Any]) -> ModuleRecord:
        return ModuleRecord(
            id=row["module_id"],
            version=row["version"],
            sha256=row["sha256"],
            size=int(row["size"]),
            permissions=PermissionSet(json.loads(row["permissions"] or "[]")),
            author=row["author"],
            signed=row["signature"] is not None,
            description=row["description"] or "",
            created_at=row["created_at"],
            storage_key=row["storage_key"],
        )

    def _rows(self, module_id: str | None = None) -> builtins.list[dict[str, Any]]:
        sa = sqlalchemy_module()
        t = self._t.modules
        stmt = sa.select(t)
        if module_id is not None:
            stmt = stmt.where(t.c.module_id == module_id)
        with self._engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(stmt).mappings()]
        return sorted(rows, key=lambda r: (r["module_id"], version_key(r["version"])))

    def _row(self, ref: str) -> dict[str, Any]:
        module_id, version = parse_ref(ref)
        rows = self._rows(module_id)
        if version is None:
            if rows:
                return rows[-1]
            raise ModuleNotFoundInRegistry(f"no module {module_id!r} in the registry")
        for row in rows:
            if row["version"] == version:
                return row
        known = ", ".join(r["version"] for r in rows)
        hint = f" (versions: {known})" if known else ""
        raise ModuleNotFoundInRegistry(f"no module {module_id}@{version} in the registry{hint}")

    # ----------------------------------------------------------------- modules

    def upload(
        self,
        module_id: str,
        version: str,
        wasm: bytes,
        *,
        permissions: Iterable[str] = (),
        signature: bytes | None = None,
        author: str | None = None,
        description: str = "",
    ) -> ModuleRecord:
        """Validate, store and register ``module_id@version``. Nothing is stored unless every
        check passes: ``ValueError`` (bad id, version, bytes or permissions), ``ModuleExistsError``
        (duplicate), ``SignatureError`` (unknown author, bad or missing signature)."""
        wasm = bytes(wasm)
        ref = f"{module_id}@{version}"
        problems, perms = upload_problems(module_id, version, author, permissions, wasm)
        if problems:
            raise ValueError(f"cannot upload {ref}: " + "; ".join(problems))
        try:
            existing = self._row(ref)
        except ModuleNotFoundInRegistry:
            existing = None
        if existing is not None:
            raise ModuleExistsError(f"{ref} is already registered (sha256 {existing['sha256'][:12]}…); "
                                    "versions are immutable: upload a new version")
        if self.engine_validate:
            try:
                validate_wasm(wasm)
            except ValueError as exc:
                raise ValueError(f"cannot upload {ref}: {exc}") from None
        sig_text = self._upload_signature(module_id, version, wasm, signature, author)

        sha = hashlib.sha256(wasm).hexdigest()
        now = utc_now_iso()
        record = ModuleRecord(id=module_id, version=version, sha256=sha, size=len(wasm), permissions=perms,
                              author=author, signed=sig_text is not None, description=description or "",
                              created_at=now, storage_key=f"modules/{module_id}/{version}/{sha}.wasm")
        self.storage.put(record.storage_key, wasm)
        self._insert(record, sig_text, now)
        log_event(_log, "wasm module uploaded", ref=ref, sha256=sha, size=len(wasm), signed=record.signed,
                  permissions=perms.to_list())
        return record

    def _upload_signature(self, module_id: str, version: str, wasm: bytes, signature: bytes | None,
                          author: str | None) -> str | None:
        """The base64 signature to store once it verified (None: unsigned, if this registry allows
        it); a refusal raises :class:`SignatureError` with a security alert."""
        ref = f"{module_id}@{version}"
        if signature is not None:
            try:
                sig = parse_signature(signature)
            except SignatureError as exc:
                self._alert("bad_signature", module_id, version, f"upload of {ref} refused: {exc}", author=author)
                raise SignatureError(f"upload of {ref} refused: {exc}") from None
            if author is None:
                message = f"upload of {ref} refused: a signature needs the author whose key signed it"
                self._alert("bad_signature", module_id, version, message)
                raise SignatureError(message)
            self._verify(author, wasm, sig, module_id, version, when="upload")
            return base64.b64encode(sig).decode()
        if self.require_signature:
            message = f"upload of {ref} refused: this registry requires signed modules (ADF_WASM_REQUIRE_SIGNATURE)"
            self._alert("unsigned_upload", module_id, version, message, author=author)
            raise SignatureError(message)
        return None

    def _insert(self, record: ModuleRecord, sig_text: str | None, now: str) -> None:
        """Register a stored binary; when that fails, remove the binary (unless a concurrent upload of
        the very same bytes won) and raise (``ModuleExistsError`` for a duplicate)."""
        sa = sqlalchemy_module()
        ref = record.ref
        try:
            with self._engine.begin() as conn:
                conn.execute(self._t.modules.insert().values(
                    module_id=record.id, version=record.version, sha256=record.sha256, size=record.size,
                    permissions=json_text(record.permissions.to_list()), author=record.author, signature=sig_text,
                    description=record.description, created_at=now, updated_at=now,
                    storage_key=record.storage_key))
        except Exception as exc:
            duplicate = isinstance(exc, sa.exc.IntegrityError)
            winner = None
            if duplicate:
                try:
                    winner = self._row(ref)
                except Exception:
                    winner = None
            # a concurrent upload of the very same bytes owns the binary now: keep it
            if winner is None or winner["sha256"] != record.sha256:
                try:
                    self.storage.delete(record.storage_key)
                except Exception as cleanup:
                    log_event(_log, "could not remove the binary of a failed upload", 30, ref=ref,
                              key=record.storage_key, error=str(cleanup))
            if duplicate:
                raise ModuleExistsError(f"{ref} is already registered; versions are immutable: "
                                        "upload a new version") from None
            raise

    def get(self, ref: str) -> ModuleRecord:
        """``id@version``; ``id`` or ``id@latest`` is the newest version (semantic-version order)."""
        return self._record(self._row(ref))

    def list(self) -> builtins.list[ModuleRecord]:
        """The newest version of each module, by id."""
        newest: dict[str, dict[str, Any]] = {}
        for row in self._rows():
            newest[row["module_id"]] = row  # rows are in (id, version) order: the last one wins
        return [self._record(newest[k]) for k in sorted(newest)]

    def versions(self, module_id: str) -> builtins.list[ModuleRecord]:
        """Every version of ``module_id``, oldest first (semantic-version order)."""
        return [self._record(r) for r in self._rows(module_id)]

    def fetch(self, ref: str) -> tuple[bytes, ModuleRecord]:
        """The bytes and record of ``ref``, after checking the SHA-256 (and the signature of a
        signed module). A mismatch writes a security alert and raises
        :class:`ModuleIntegrityError` (:class:`SignatureError` for a signature): never run it."""
        row = self._row(ref)
        record = self._record(row)
        try:
            data = self.storage.get(record.storage_key)
        except FileNotFoundError:
            message = f"module {record.ref} is registered but its binary is missing from {self.storage.url}; refusing it"
            self._alert("missing_binary", record.id, record.version, message, storage_key=record.storage_key)
            raise ModuleIntegrityError(message) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != record.sha256 or len(data) != record.size:
            message = (f"module {record.ref} failed its integrity check: the stored bytes have SHA-256 {actual} "
                       f"({len(data)} bytes), the registry expects {record.sha256} ({record.size} bytes); "
                       "refusing to run it")
            self._alert("integrity_mismatch", record.id, record.version, message, expected=record.sha256,
                        actual=actual, storage_key=record.storage_key)
            raise ModuleIntegrityError(message)
        if row["signature"] is not None:
            sig = base64.b64decode(row["signature"])
            self._verify(record.author or "", data, sig, record.id, record.version, when="fetch")
        return data, record

    def delete(self, ref: str) -> None:
        """Remove ``id@version`` (``id@latest``: the newest) or, for a bare ``id``, every version:
        metadata first, then the binaries. The execution and audit logs are kept."""
        sa = sqlalchemy_module()
        module_id, version = parse_ref(ref)
        if version is None and "@" not in str(ref):
            rows = self._rows(module_id)
            if not rows:
                raise ModuleNotFoundInRegistry(f"no module {module_id!r} in the registry")
        else:
            rows = [self._row(ref)]
        t = self._t.modules
        with self._engine.begin() as conn:
            for row in rows:
                conn.execute(sa.delete(t).where(t.c.module_id == row["module_id"], t.c.version == row["version"]))
        for row in rows:
            try:
                self.storage.delete(row["storage_key"])
            except Exception as exc:  # the metadata is gone: an orphan binary is harmless
                log_event(_log, "could not delete a module binary", 30, key=row["storage_key"], error=str(exc))
        log_event(_log, "wasm module deleted", refs=[f"{r['module_id']}@{r['version']}" for r in rows])

    def set_permissions(self, ref: str, permissions: Iterable[str]) -> ModuleRecord:
        """Replace the permissions of ``ref``; validated first (``ValueError`` listing every bad
        entry, nothing saved). The change is written to the audit log."""
        items = [permissions] if isinstance(permissions, str) else list(permissions)
        try:
            perms = PermissionSet.parse(items)
        except ValueError as exc:
            raise ValueError(f"invalid permissions: {exc}") from None
        sa = sqlalchemy_module()
        record = self.get(ref)
        t = self._t.modules
        with self._engine.begin() as conn:
            conn.execute(sa.update(t).where(t.c.module_id == record.id, t.c.version == record.version)
                         .values(permissions=json_text(perms.to_list()), updated_at=utc_now_iso()))
        before, after = set(record.permissions.to_list()), set(perms.to_list())
        if before != after:
            self.audit({"event": "permissions_changed", "module_id": record.id, "resource": record.ref,
                        "added": sorted(after - before), "removed": sorted(before - after)})
        return replace(record, permissions=perms)

    # ----------------------------------------------------------------- author keys and signatures

    def add_author_key(self, author: str, public_key: bytes) -> None:
        """Register an Ed25519 public key (raw 32 bytes, base64, PEM or DER) for ``author``.
        An author may have several keys (rotation): a signature verifies against any of them."""
        if not isinstance(author, str) or not author.strip() or author != author.strip() or len(author) > 200:
            raise ValueError(f"author {author!r} must be a non-empty name without surrounding spaces")
        raw = public_key_bytes(public_key)
        ed25519_module().Ed25519PublicKey.from_public_bytes(raw)  # a valid curve point
        sa = sqlalchemy_module()
        t = self._t.keys
        fingerprint = key_fingerprint(raw)
        with self._engine.begin() as conn:
            found = conn.execute(sa.select(t.c.author).where(t.c.author == author, t.c.fingerprint == fingerprint))
            if found.first() is None:
                conn.execute(t.insert().values(author=author, fingerprint=fingerprint,
                                               public_key=base64.b64encode(raw).decode(), added_at=utc_now_iso()))
        log_event(_log, "wasm author key registered", author=author, fingerprint=fingerprint[:16])

    def authors(self) -> builtins.list[str]:
        sa = sqlalchemy_module()
        t = self._t.keys
        with self._engine.connect() as conn:
            return sorted({r[0] for r in conn.execute(sa.select(t.c.author))})

    def author_keys(self) -> builtins.list[dict[str, Any]]:
        """``{author, fingerprint (SHA-256 of the raw key), public_key (base64), added_at}`` per key."""
        sa = sqlalchemy_module()
        t = self._t.keys
        with self._engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(sa.select(t).order_by(t.c.author, t.c.added_at)).mappings()]
        return rows

    def _keys_of(self, author: str) -> builtins.list[bytes]:
        sa = sqlalchemy_module()
        t = self._t.keys
        with self._engine.connect() as conn:
            return [base64.b64decode(r[0]) for r in conn.execute(sa.select(t.c.public_key).where(t.c.author == author))]

    def _verify(self, author: str, wasm: bytes, signature: bytes, module_id: str, version: str, *, when: str) -> None:
        ref = f"{module_id}@{version}"
        keys = self._keys_of(author) if author else []
        if not keys:
            message = (f"{when} of {ref} refused: unknown author {author!r} (register the public key with "
                       "`adf wasm keys add`)")
            self._alert("bad_signature", module_id, version, message, author=author, phase=when)
            raise SignatureError(message)
        if signature_verifies(keys, signature, wasm):
            return
        message = f"{when} of {ref} refused: the signature does not verify against the key(s) of author {author!r}"
        self._alert("bad_signature", module_id, version, message, author=author, phase=when)
        raise SignatureError(message)
