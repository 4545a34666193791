"""The module registry: versioned WebAssembly modules, their permissions, signatures, and the
execution, audit and security logs.

Binaries live in a :class:`~core.wasm.storage.Storage` (a local directory or S3) under
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
"""

from __future__ import annotations

import base64
import builtins
import datetime as _dt
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from core.errors import MissingExtraError
from core.ids import utc_now_iso
from core.logs import get_logger, log_event
from core.redact import redact_text
from core.wasm.errors import ModuleIntegrityError, ModuleNotFoundInRegistry, SignatureError
from core.wasm.permissions import PermissionSet
from core.wasm.storage import Storage, open_storage

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
_WHAT = "the wasm module registry"

#: ``id``: lower-case letters, digits, ``_ . -``; starts with a letter or digit
MODULE_ID_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*")
MODULE_ID_MAX = 128
#: ``MAJOR.MINOR.PATCH`` with an optional ``-pre.release``
VERSION_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?")
VERSION_MAX = 64
_PREFIX_RE = re.compile(r"[A-Za-z0-9_]*")
_SQLITE_BUSY_TIMEOUT = 30
_TRUE = frozenset({"1", "true", "yes", "on"})

#: what :meth:`ModuleRegistry.security_alerts` may report
ALERT_KINDS = ("bad_signature", "unsigned_upload", "integrity_mismatch", "missing_binary")


class ModuleExistsError(ValueError):
    """``id@version`` is already registered (versions are immutable: upload a new version)."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ModuleRecord:
    """One registered ``id@version``."""

    id: str
    version: str
    sha256: str
    size: int
    permissions: PermissionSet
    author: str | None
    signed: bool
    description: str
    created_at: str
    storage_key: str

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "ref": self.ref,
            "sha256": self.sha256,
            "size": self.size,
            "permissions": self.permissions.to_list(),
            "author": self.author,
            "signed": self.signed,
            "description": self.description,
            "created_at": self.created_at,
            "storage_key": self.storage_key,
        }


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``"id@1.2.0"`` → ``("id", "1.2.0")``; ``"id"`` and ``"id@latest"`` → ``("id", None)``."""
    text = str(ref).strip()
    module_id, _, version = text.partition("@")
    if not module_id:
        raise ValueError(f"invalid module reference {ref!r}: expected <id>@<version>, <id>@latest or <id>")
    if version in ("", "latest"):
        return module_id, None
    return module_id, version


def version_key(version: str) -> tuple[Any, ...]:
    """Semantic-version order: ``1.10.0 > 1.9.0``; a pre-release sorts before its release
    (``2.0.0-rc.1 < 2.0.0``), numeric pre-release parts numerically and before alphanumeric ones."""
    m = VERSION_RE.fullmatch(version)
    if m is None:
        return (-1, -1, -1, 0, ((1, 0, version),))
    major, minor, patch = int(m.group(1)), int(m.group(2)), int(m.group(3))
    pre = m.group(4)
    if pre is None:
        return (major, minor, patch, 1, ())
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (major, minor, patch, 0, parts)


def _iso(value: Any) -> str:
    """A timestamp as UTC ISO text with milliseconds and ``Z`` (so text order is time order)."""
    if value is None or value == "":
        return utc_now_iso()
    when: _dt.datetime | None = None
    if isinstance(value, _dt.datetime):
        when = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        when = _dt.datetime.fromtimestamp(float(value), _dt.UTC)
    elif isinstance(value, str):
        try:
            when = _dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    if when is None:
        return str(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return when.astimezone(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float:
    try:
        return float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        value = json.dumps(value, default=str)
    return redact_text(value)


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


# --------------------------------------------------------------------------- lazy imports


def _sa() -> Any:
    try:
        import sqlalchemy
    except ImportError as exc:
        raise MissingExtraError("SQLAlchemy", "wasm", _WHAT) from exc
    return sqlalchemy


def _ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise MissingExtraError("cryptography", "wasm", "signed wasm modules") from exc
    return ed25519


def _validate_wasm(wasm: bytes) -> None:
    """``ValueError`` with wasmtime's message when ``wasm`` is not a valid module."""
    try:
        import wasmtime
    except ImportError as exc:
        raise MissingExtraError("wasmtime", "wasm", "validating wasm modules") from exc
    if not wasm.startswith(b"\0asm"):
        raise ValueError("not a WebAssembly binary (no \\0asm header); compile .wat text with wat2wasm first")
    engine = wasmtime.Engine()  # uploads are rare; no engine outlives the call (or the interpreter)
    try:
        wasmtime.Module.validate(engine, wasm)
    except wasmtime.WasmtimeError as exc:
        raise ValueError(f"invalid WebAssembly module: {str(exc).strip()}") from None
    finally:
        engine.close()


def public_key_bytes(data: bytes | str) -> bytes:
    """The raw 32 bytes of an Ed25519 public key given raw, base64, PEM (``openssl pkey -pubout``)
    or DER; ``ValueError`` for anything else (a private key included)."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if len(raw) == 32:
        return raw
    ed25519 = _ed25519()
    from cryptography.hazmat.primitives import serialization

    text = raw.strip()
    if b"PRIVATE KEY" in text:
        raise ValueError("that is a private key: register the public key "
                         "(openssl pkey -in key.pem -pubout -out key.pub.pem)")
    key: Any = None
    if text.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text)
        except ValueError as exc:
            raise ValueError(f"not a PEM public key: {exc}") from None
    else:
        try:
            decoded = base64.b64decode(text, validate=True)
        except ValueError:
            decoded = text
        if len(decoded) == 32:
            return decoded
        try:
            key = serialization.load_der_public_key(decoded)
        except ValueError:
            raise ValueError(f"not an Ed25519 public key (raw 32 bytes, base64, PEM or DER; got {len(raw)} "
                             "bytes)") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError(f"not an Ed25519 public key ({type(key).__name__})")
    out: bytes = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return out


def parse_signature(data: bytes | str) -> bytes:
    """An Ed25519 signature as its raw 64 bytes (given raw, as ``openssl pkeyutl -sign`` writes
    it, or base64); ``SignatureError`` otherwise."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if len(raw) == 64:
        return raw
    try:
        decoded = base64.b64decode(raw.strip(), validate=True)
    except ValueError:
        decoded = b""
    if len(decoded) == 64:
        return decoded
    raise SignatureError(f"an Ed25519 signature is 64 bytes (raw or base64), got {len(raw)} bytes")


def _fingerprint(raw_key: bytes) -> str:
    return hashlib.sha256(raw_key).hexdigest()


# --------------------------------------------------------------------------- database


def _make_engine(url: str) -> Any:
    from core.connectors.sql import begin_immediate, normalise_url

    sa = _sa()
    url = normalise_url(url)
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ValueError(f"invalid database URL {redact_text(url)!r}: {redact_text(str(exc))}") from None
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": _SQLITE_BUSY_TIMEOUT, "check_same_thread": False}
        database = parsed.database
        if not database or database == ":memory:":
            kwargs["poolclass"] = sa.pool.StaticPool
        elif not database.startswith("file:"):
            os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except ImportError as exc:
        extra = "postgres" if backend == "postgresql" else "wasm"
        raise MissingExtraError(exc.name or str(exc), extra, f"{_WHAT} ({backend})") from exc
    except sa.exc.ArgumentError as exc:
        raise ValueError(f"invalid database URL {redact_text(url)!r}: {redact_text(str(exc))}") from None
    if backend == "sqlite":
        begin_immediate(sa, engine)  # writers queue up instead of failing with "database is locked"
    return engine


@dataclass
class _Tables:
    modules: Any
    keys: Any
    executions: Any
    alerts: Any
    audit: Any
    metadata: Any


def _build_tables(prefix: str) -> _Tables:
    sa = _sa()
    md = sa.MetaData()
    serial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

    def table(name: str, *cols: Any) -> Any:
        return sa.Table(prefix + name, md, *cols)

    modules = table(
        "wasm_modules",
        sa.Column("module_id", sa.String(MODULE_ID_MAX), primary_key=True),
        sa.Column("version", sa.String(VERSION_MAX), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("permissions", sa.Text(), nullable=False),  # JSON list
        sa.Column("author", sa.String(200)),
        sa.Column("signature", sa.Text()),  # base64 Ed25519 signature over the bytes
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("updated_at", sa.String(40), nullable=False),
        sa.Column("storage_key", sa.Text(), nullable=False),
    )
    keys = table(
        "wasm_author_keys",
        sa.Column("author", sa.String(200), primary_key=True),
        sa.Column("fingerprint", sa.String(64), primary_key=True),  # SHA-256 of the raw key
        sa.Column("public_key", sa.Text(), nullable=False),  # base64 of the raw 32 bytes
        sa.Column("added_at", sa.String(40), nullable=False),
    )
    executions = table(
        "wasm_executions",
        sa.Column("id", serial, primary_key=True, autoincrement=True),
        sa.Column("execution_id", sa.String(100), nullable=False, index=True),
        sa.Column("module_id", sa.String(300), nullable=False, index=True),
        sa.Column("function", sa.String(200), nullable=False),
        sa.Column("started_at", sa.String(40), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("fuel_consumed", sa.BigInteger(), nullable=False),
        sa.Column("peak_memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("error_type", sa.String(200)),
        sa.Column("limit_kind", sa.String(20)),
        sa.Column("trace", sa.Text()),
        sa.Column("extra", sa.Text()),  # JSON object of any other keys of the entry
    )
    alerts = table(
        "wasm_security_alerts",
        sa.Column("id", serial, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("module_id", sa.String(300), index=True),
        sa.Column("version", sa.String(VERSION_MAX)),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text()),  # JSON object
    )
    audit = table(
        "wasm_audit",
        sa.Column("id", serial, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.String(40), nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("module_id", sa.String(300), index=True),
        sa.Column("execution_id", sa.String(100)),
        sa.Column("permission", sa.Text()),
        sa.Column("resource", sa.Text()),
        sa.Column("function", sa.String(200)),
        sa.Column("extra", sa.Text()),  # JSON object
    )
    return _Tables(modules, keys, executions, alerts, audit, md)


# --------------------------------------------------------------------------- the registry


def _module_filter(column: Any, module_id: str) -> Any:
    """``id`` matches the rows of every version (``id`` and ``id@…``); ``id@version`` just that one."""
    sa = _sa()
    if "@" in module_id:
        return column == module_id
    return sa.or_(column == module_id, column.startswith(module_id + "@", autoescape=True))


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


class ModuleRegistry:
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
        from core.engine import default_state_root

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
        self._engine = _make_engine(self.db_url)
        self._t = _build_tables(table_prefix)
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
        sa = _sa()
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
        sa = _sa()
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

    def upload(  # noqa: C901
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
        problems: builtins.list[str] = []
        if not isinstance(module_id, str) or not MODULE_ID_RE.fullmatch(module_id) or len(module_id) > MODULE_ID_MAX:
            problems.append(f"module id {module_id!r} must match [a-z0-9][a-z0-9_.-]* "
                            f"(at most {MODULE_ID_MAX} characters)")
        if not isinstance(version, str) or not VERSION_RE.fullmatch(version) or len(version) > VERSION_MAX:
            problems.append(f"version {version!r} must be a semantic version MAJOR.MINOR.PATCH[-PRERELEASE], e.g. 1.2.0")
        if author is not None and (not author.strip() or len(author) > 200 or author != author.strip()):
            problems.append(f"author {author!r} must be a non-empty name without surrounding spaces")
        perm_list = [permissions] if isinstance(permissions, str) else list(permissions)
        perms = PermissionSet()
        try:
            perms = PermissionSet.parse(perm_list)
        except ValueError as exc:
            problems.append(f"invalid permissions: {exc}")
        if not wasm:
            problems.append("the module is empty")
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
                _validate_wasm(wasm)
            except ValueError as exc:
                raise ValueError(f"cannot upload {ref}: {exc}") from None

        sig_text: str | None = None
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
            sig_text = base64.b64encode(sig).decode()
        elif self.require_signature:
            message = f"upload of {ref} refused: this registry requires signed modules (ADF_WASM_REQUIRE_SIGNATURE)"
            self._alert("unsigned_upload", module_id, version, message, author=author)
            raise SignatureError(message)

        sha = hashlib.sha256(wasm).hexdigest()
        now = utc_now_iso()
        record = ModuleRecord(id=module_id, version=version, sha256=sha, size=len(wasm), permissions=perms,
                              author=author, signed=sig_text is not None, description=description or "",
                              created_at=now, storage_key=f"modules/{module_id}/{version}/{sha}.wasm")
        self.storage.put(record.storage_key, wasm)
        sa = _sa()
        try:
            with self._engine.begin() as conn:
                conn.execute(self._t.modules.insert().values(
                    module_id=module_id, version=version, sha256=sha, size=len(wasm),
                    permissions=_json(perms.to_list()), author=author, signature=sig_text,
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
            if winner is None or winner["sha256"] != sha:
                try:
                    self.storage.delete(record.storage_key)
                except Exception as cleanup:
                    log_event(_log, "could not remove the binary of a failed upload", 30, ref=ref,
                              key=record.storage_key, error=str(cleanup))
            if duplicate:
                raise ModuleExistsError(f"{ref} is already registered; versions are immutable: "
                                        "upload a new version") from None
            raise
        log_event(_log, "wasm module uploaded", ref=ref, sha256=sha, size=len(wasm), signed=record.signed,
                  permissions=perms.to_list())
        return record

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
        sa = _sa()
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
        sa = _sa()
        record = self.get(ref)
        t = self._t.modules
        with self._engine.begin() as conn:
            conn.execute(sa.update(t).where(t.c.module_id == record.id, t.c.version == record.version)
                         .values(permissions=_json(perms.to_list()), updated_at=utc_now_iso()))
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
        _ed25519().Ed25519PublicKey.from_public_bytes(raw)  # a valid curve point
        sa = _sa()
        t = self._t.keys
        fingerprint = _fingerprint(raw)
        with self._engine.begin() as conn:
            found = conn.execute(sa.select(t.c.author).where(t.c.author == author, t.c.fingerprint == fingerprint))
            if found.first() is None:
                conn.execute(t.insert().values(author=author, fingerprint=fingerprint,
                                               public_key=base64.b64encode(raw).decode(), added_at=utc_now_iso()))
        log_event(_log, "wasm author key registered", author=author, fingerprint=fingerprint[:16])

    def authors(self) -> builtins.list[str]:
        sa = _sa()
        t = self._t.keys
        with self._engine.connect() as conn:
            return sorted({r[0] for r in conn.execute(sa.select(t.c.author))})

    def author_keys(self) -> builtins.list[dict[str, Any]]:
        """``{author, fingerprint (SHA-256 of the raw key), public_key (base64), added_at}`` per key."""
        sa = _sa()
        t = self._t.keys
        with self._engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(sa.select(t).order_by(t.c.author, t.c.added_at)).mappings()]
        return rows

    def _keys_of(self, author: str) -> builtins.list[bytes]:
        sa = _sa()
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
        from cryptography.exceptions import InvalidSignature

        ed25519 = _ed25519()
        for raw in keys:
            try:
                ed25519.Ed25519PublicKey.from_public_bytes(raw).verify(signature, wasm)
                return
            except InvalidSignature:
                continue
        message = f"{when} of {ref} refused: the signature does not verify against the key(s) of author {author!r}"
        self._alert("bad_signature", module_id, version, message, author=author, phase=when)
        raise SignatureError(message)

    # ----------------------------------------------------------------- security alerts

    def _alert(self, kind: str, module_id: str | None, version: str | None, message: str, **detail: Any) -> None:
        log_event(_log, f"wasm security alert: {message}", 40, kind=kind, module_id=module_id, version=version)
        try:
            with self._engine.begin() as conn:
                conn.execute(self._t.alerts.insert().values(
                    ts=utc_now_iso(), kind=kind, module_id=module_id, version=version, message=redact_text(message),
                    detail=_json(detail)))
        except Exception as exc:  # the refusal itself must still happen
            log_event(_log, "could not record a wasm security alert", 40, kind=kind, error=str(exc))

    def security_alerts(self, *, module_id: str | None = None, limit: int | None = None) -> builtins.list[dict[str, Any]]:
        """Newest first: ``{id, ts, kind, module_id, version, message, detail}``."""
        sa = _sa()
        t = self._t.alerts
        stmt = sa.select(t).order_by(t.c.id.desc())
        if module_id is not None:
            mid, version = parse_ref(module_id)
            stmt = stmt.where(t.c.module_id == mid)
            if version is not None:
                stmt = stmt.where(t.c.version == version)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(stmt).mappings()]
        for row in rows:
            row["detail"] = json.loads(row["detail"]) if row["detail"] else {}
        return rows

    # ----------------------------------------------------------------- execution log

    _EXECUTION_KEYS = ("execution_id", "module_id", "function", "started_at", "ok", "fuel_consumed",
                       "peak_memory_bytes", "duration_ms", "error", "error_type", "limit", "trace")

    def record(self, entry: Mapping[str, Any]) -> None:
        """Append one execution (the executor's ``execution_log.record``). Missing keys get
        neutral values; keys beyond the standard ones are kept in ``extra``."""
        extra = {k: v for k, v in entry.items() if k not in self._EXECUTION_KEYS}
        limit = entry.get("limit")
        with self._engine.begin() as conn:
            conn.execute(self._t.executions.insert().values(
                execution_id=str(entry.get("execution_id") or uuid.uuid4().hex),
                module_id=str(entry.get("module_id") or ""),
                function=str(entry.get("function") or "run"),
                started_at=_iso(entry.get("started_at")),
                ok=bool(entry.get("ok")),
                fuel_consumed=_int(entry.get("fuel_consumed")),
                peak_memory_bytes=_int(entry.get("peak_memory_bytes")),
                duration_ms=_float(entry.get("duration_ms")),
                error=_text(entry.get("error")),
                error_type=_text(entry.get("error_type")),
                limit_kind=None if limit is None else str(limit),
                trace=_text(entry.get("trace")),
                extra=_json(extra) if extra else None,
            ))

    def query(self, *, execution_id: str | None = None, module_id: str | None = None,
              limit: int = 100) -> builtins.list[dict[str, Any]]:
        """Executions, newest first, as the entries :meth:`record` received. ``module_id``:
        ``id`` matches every version's executions (logged as ``id`` or ``id@version``),
        ``id@version`` only that version's."""
        sa = _sa()
        t = self._t.executions
        stmt = sa.select(t).order_by(t.c.started_at.desc(), t.c.id.desc()).limit(max(int(limit), 0))
        if execution_id is not None:
            stmt = stmt.where(t.c.execution_id == execution_id)
        if module_id is not None:
            stmt = stmt.where(_module_filter(t.c.module_id, module_id))
        with self._engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(stmt).mappings()]
        out = []
        for row in rows:
            entry: dict[str, Any] = {k: row.get(k) for k in self._EXECUTION_KEYS if k != "limit"}
            entry["ok"] = bool(row["ok"])
            entry["limit"] = row["limit_kind"]
            for k, v in (json.loads(row["extra"]) if row["extra"] else {}).items():
                entry.setdefault(k, v)
            out.append(entry)
        return out

    def stats(self, module_id: str) -> dict[str, Any]:
        """``{module_id, executions, failures, avg_fuel, max_fuel, avg_duration_ms, last_run}``
        (``id``: every version; ``id@version``: that one)."""
        sa = _sa()
        t = self._t.executions
        stmt = sa.select(
            sa.func.count(),
            sa.func.sum(sa.case((t.c.ok == sa.false(), 1), else_=0)),
            sa.func.avg(t.c.fuel_consumed),
            sa.func.max(t.c.fuel_consumed),
            sa.func.avg(t.c.duration_ms),
            sa.func.max(t.c.started_at),
        ).where(_module_filter(t.c.module_id, module_id))
        with self._engine.connect() as conn:
            count, failures, avg_fuel, max_fuel, avg_ms, last = conn.execute(stmt).one()
        return {
            "module_id": module_id,
            "executions": int(count or 0),
            "failures": int(failures or 0),
            "avg_fuel": float(avg_fuel or 0.0),
            "max_fuel": int(max_fuel or 0),
            "avg_duration_ms": float(avg_ms or 0.0),
            "last_run": last,
        }

    # ----------------------------------------------------------------- audit log

    _AUDIT_KEYS = ("event", "module_id", "execution_id", "permission", "resource", "function", "ts")

    def audit(self, event: Mapping[str, Any]) -> None:
        """Append one audit event (``{event: "permission_denied"|"host_call"|..., module_id,
        execution_id, permission, resource, function, ts}``; other keys go to ``extra``)."""
        extra = {k: v for k, v in event.items() if k not in self._AUDIT_KEYS}

        def opt(key: str) -> str | None:
            value = event.get(key)
            return None if value is None else redact_text(str(value))

        with self._engine.begin() as conn:
            conn.execute(self._t.audit.insert().values(
                ts=_iso(event.get("ts")), event=str(event.get("event") or "unknown"), module_id=opt("module_id"),
                execution_id=opt("execution_id"), permission=opt("permission"), resource=opt("resource"),
                function=opt("function"), extra=_json(extra) if extra else None))

    def audit_log(self, *, module_id: str | None = None, event: str | None = None,
                  limit: int = 100) -> builtins.list[dict[str, Any]]:
        """Audit events, newest first."""
        sa = _sa()
        t = self._t.audit
        stmt = sa.select(t).order_by(t.c.id.desc()).limit(max(int(limit), 0))
        if module_id is not None:
            stmt = stmt.where(_module_filter(t.c.module_id, module_id))
        if event is not None:
            stmt = stmt.where(t.c.event == event)
        with self._engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(stmt).mappings()]
        out = []
        for row in rows:
            entry = {k: row[k] for k in self._AUDIT_KEYS}
            entry["id"] = row["id"]
            for k, v in (json.loads(row["extra"]) if row["extra"] else {}).items():
                entry.setdefault(k, v)
            out.append(entry)
        return out
