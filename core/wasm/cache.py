"""Compiled-module cache: an in-memory LRU and an ahead-of-time (AOT) directory on disk.

Compiling a module (Cranelift) costs milliseconds to seconds; a compiled ``wasmtime.Module``
is reusable by every store of the engine it was compiled for. :class:`ModuleCache` keeps the
``capacity`` most recently used ones, keyed by the SHA-256 of the wasm bytes. On a miss it
looks in ``aot_dir`` for ``<sha256>-<engine_key>.cwasm`` (a module serialised by an earlier
process) and deserialises it — a warm load, no compilation — else compiles the bytes and
writes that file (atomically: a temporary file renamed into place).

``engine_key`` names everything a serialised module depends on: the wasmtime version, the
platform and the engine settings (fuel, epoch interruption, stack size...). Change any of
them and the key changes, so stale files are never loaded (they are simply not looked at).

The ``.cwasm`` file is exactly what ``wasmtime.Module.serialize`` produced. Next to it,
``<name>.cwasm.crc32`` holds its size and CRC-32; a file that does not match (truncated,
bit-flipped, overwritten by hand, or missing its checksum) is ignored and replaced by a fresh
compilation. The file is read into memory and deserialised from there rather than with
``Module.deserialize_file``: that one memory-maps the file, and a process whose mapped file is
truncated in place dies of SIGBUS (ours are replaced by rename, never rewritten, but an
operator or another tool may not be so careful). That costs ~3 ms per MB of compiled code
instead of ~0.5 ms (bench/wasm.py). The checksum guards against corruption, not against an
attacker: deserialising trusts the native code inside, so ``aot_dir`` must be writable only
by the service's own user.

``wasmtime`` itself is never imported here: the engine and modules are handed in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sys
import tempfile
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["ModuleCache", "engine_key", "wasmtime_version"]

log = logging.getLogger("adf.wasm")

_CHECKSUM_SUFFIX = ".crc32"


def wasmtime_version() -> str:
    """The installed wasmtime-py version (read from the package metadata, without importing it)."""
    try:
        from importlib import metadata

        return metadata.version("wasmtime")
    except Exception:  # not installed, or metadata unavailable (e.g. python -S)
        return "unknown"


def engine_key(settings: Mapping[str, Any] | None = None, *, version: str | None = None) -> str:
    """A short hash of the wasmtime version, the platform and the engine ``settings``.

    Two engines with the same key can load each other's serialised modules."""
    doc = {
        "wasmtime": version if version is not None else wasmtime_version(),
        "machine": platform.machine(),
        "platform": sys.platform,
        "settings": dict(settings or {}),
    }
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class ModuleCache:
    """An LRU of compiled modules keyed by SHA-256, backed by an optional AOT directory.

    ``aot_dir=None`` reads ``ADF_WASM_CACHE_DIR`` (unset or empty: no disk cache); pass ``""``
    to disable the disk cache whatever the environment says. Thread-safe.

    Counters: ``hits`` (found in memory), ``misses`` (not in memory), ``aot_hits`` (a miss
    served from the AOT directory), ``compiles`` (a miss compiled from the bytes),
    ``evictions`` (dropped by the LRU).
    """

    def __init__(self, engine_key: str, capacity: int = 64, aot_dir: str | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if not engine_key or "/" in engine_key or os.sep in engine_key:
            raise ValueError(f"invalid engine_key {engine_key!r}")
        self.engine_key = engine_key
        self.capacity = capacity
        if aot_dir is None:
            aot_dir = os.environ.get("ADF_WASM_CACHE_DIR") or None
        self.aot_dir: str | None = os.path.abspath(aot_dir) if aot_dir else None
        self._items: OrderedDict[str, tuple[Any, Any]] = OrderedDict()  # sha256 -> (engine, module)
        self._lock = threading.Lock()
        self._compile_locks: dict[str, threading.Lock] = {}
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.aot_hits = 0
        self.compiles = 0

    # -- the in-memory LRU ---------------------------------------------------------------
    def get(self, sha256: str, engine: Any = None) -> Any | None:
        """The cached module for ``sha256`` (counts a hit or a miss), or None.

        With ``engine`` given, a module compiled for another engine is a miss."""
        with self._lock:
            entry = self._items.get(sha256)
            if entry is None or (engine is not None and entry[0] is not engine):
                self.misses += 1
                return None
            self._items.move_to_end(sha256)
            self.hits += 1
            return entry[1]

    def put(self, sha256: str, module: Any, engine: Any = None) -> None:
        """Remember ``module`` (most recently used), evicting the least recently used beyond capacity."""
        with self._lock:
            self._items[sha256] = (engine, module)
            self._items.move_to_end(sha256)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
                self.evictions += 1

    def discard(self, sha256: str) -> None:
        with self._lock:
            self._items.pop(sha256, None)

    def clear(self) -> None:
        """Forget every module in memory (the AOT files stay)."""
        with self._lock:
            self._items.clear()

    def __contains__(self, sha256: object) -> bool:
        with self._lock:
            return sha256 in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"size": len(self._items), "capacity": self.capacity, "hits": self.hits,
                    "misses": self.misses, "evictions": self.evictions, "aot_hits": self.aot_hits,
                    "compiles": self.compiles}

    # -- compile or load -----------------------------------------------------------------
    def aot_path(self, sha256: str) -> str | None:
        """Where the serialised module for ``sha256`` lives (None without an AOT directory)."""
        if not self.aot_dir:
            return None
        return os.path.join(self.aot_dir, f"{sha256}-{self.engine_key}.cwasm")

    def get_or_compile(self, engine: Any, wasm: bytes, sha256: str | None = None, *,
                       compile_fn: Callable[[Any, bytes], Any] | None = None) -> Any:
        """The compiled module for ``wasm``: from memory, else the AOT directory, else compiled
        (``compile_fn(engine, wasm)``, default ``wasmtime.Module(engine, wasm)``) and saved.

        Compilation errors propagate (nothing is cached)."""
        sha = sha256 or hashlib.sha256(wasm).hexdigest()
        found = self.get(sha, engine)
        if found is not None:
            return found
        with self._lock:
            key_lock = self._compile_locks.setdefault(sha, threading.Lock())
        with key_lock:  # one compilation per module even when threads miss together
            with self._lock:
                entry = self._items.get(sha)
                if entry is not None and entry[0] is engine:
                    self._items.move_to_end(sha)
                    return entry[1]
            module = self._load_aot(engine, sha)
            if module is None:
                module = (compile_fn or _compile)(engine, wasm)
                with self._lock:
                    self.compiles += 1
                self._save_aot(module, sha)
            else:
                with self._lock:
                    self.aot_hits += 1
            self.put(sha, module, engine)
        with self._lock:
            self._compile_locks.pop(sha, None)
        return module

    def _load_aot(self, engine: Any, sha256: str) -> Any | None:
        path = self.aot_path(sha256)
        if path is None or not os.path.exists(path):
            return None
        try:
            data = _verified_read(path)
            if data is None:
                log.warning("wasm AOT cache: %s is corrupt or has no checksum; recompiling", path)
                return None
            import wasmtime

            return wasmtime.Module.deserialize(engine, data)
        except Exception as exc:  # unreadable, incompatible or damaged despite the checksum
            log.warning("wasm AOT cache: cannot load %s (%s); recompiling", path, exc)
            return None

    def _save_aot(self, module: Any, sha256: str) -> None:
        path = self.aot_path(sha256)
        if path is None:
            return
        try:
            body = bytes(module.serialize())
            directory = os.path.dirname(path)
            os.makedirs(directory, exist_ok=True)
            # the module first, then its checksum: a reader in between sees a mismatch and recompiles
            _atomic_write(path, body)
            _atomic_write(path + _CHECKSUM_SUFFIX, f"{zlib.crc32(body):08x} {len(body)}\n".encode("ascii"))
        except Exception as exc:  # a read-only or full disk must not fail the call
            log.warning("wasm AOT cache: cannot write %s: %s", path, exc)


def _verified_read(path: str) -> bytes | None:
    """The file's bytes when they match the size and CRC-32 of its ``.crc32`` companion, else None."""
    try:
        with open(path + _CHECKSUM_SUFFIX, "rb") as f:
            crc_text, size_text = f.read(64).decode("ascii").split()
        expected_crc, expected_size = int(crc_text, 16), int(size_text)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    with open(path, "rb") as f:
        data = f.read(expected_size + 1)
    if len(data) != expected_size or not data or zlib.crc32(data) != expected_crc:
        return None
    return data


def _atomic_write(path: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _compile(engine: Any, wasm: bytes) -> Any:
    import wasmtime

    return wasmtime.Module(engine, wasm)
