"""What the module registry checks before it stores or runs a module: the id, version, author
and permissions of an upload, the bytes (wasmtime must accept them), Ed25519 public keys and
signatures.

``wasmtime`` and ``cryptography`` are imported when a module is validated or a key or
signature is checked.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from typing import Any

from active_data_flow.errors import MissingExtraError
from active_data_flow.wasm.errors import SignatureError
from active_data_flow.wasm.permissions import PermissionSet
from active_data_flow.wasm.registry_store import MODULE_ID_MAX, MODULE_ID_RE, VERSION_MAX, VERSION_RE

__all__ = [
    "ed25519_module",
    "key_fingerprint",
    "parse_signature",
    "public_key_bytes",
    "signature_verifies",
    "upload_problems",
    "validate_wasm",
]


def upload_problems(module_id: str, version: str, author: str | None, permissions: Iterable[str],
                    wasm: bytes) -> tuple[list[str], PermissionSet]:
    """Everything wrong with an upload's id, version, author, permissions and bytes (empty: nothing),
    and the parsed permissions."""
    problems: list[str] = []
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
    return problems, perms


def ed25519_module() -> Any:
    """``cryptography``'s ``ed25519`` module, or ``MissingExtraError`` naming the ``wasm`` extra."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise MissingExtraError("cryptography", "wasm", "signed wasm modules") from exc
    return ed25519


def validate_wasm(wasm: bytes) -> None:
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
    ed25519 = ed25519_module()
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


def key_fingerprint(raw_key: bytes) -> str:
    """The SHA-256 (hex) of a raw public key: how the registry tells an author's keys apart."""
    return hashlib.sha256(raw_key).hexdigest()



def signature_verifies(keys: Iterable[bytes], signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` over ``data`` verifies against one of the raw Ed25519 public ``keys``."""
    from cryptography.exceptions import InvalidSignature

    ed25519 = ed25519_module()
    for raw in keys:
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(raw).verify(signature, data)
            return True
        except InvalidSignature:
            continue
    return False
