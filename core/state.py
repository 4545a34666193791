"""The state store: small JSON values under string keys, with optional expiry.

The engine keeps checkpoints, flow configuration (``config/<flow>``) and bookkeeping in a
:class:`StateStore`. Three implementations come built in:

* :class:`MemoryStateStore` - one process, gone when it ends (tests, one-shot runs);
* :class:`SqliteStateStore` - the embedded default, a SQLite file several processes share;
* :class:`RedisStateStore` - a Redis server (needs the ``redis`` extra, imported lazily).

:func:`open_state_store` opens one from a URL; :func:`register_state_store` adds a URL
scheme (a Spin key-value store, say) from another module or package.

Values round-trip through JSON: tuples come back as lists and mapping keys as strings. A
value that JSON cannot represent raises ``TypeError`` naming the key.
"""

from __future__ import annotations

import abc
import json
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from active_data_flow.errors import ConfigError, MissingExtraError
from active_data_flow.redact import redact_text

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "MemoryStateStore",
    "RedisStateStore",
    "SqliteStateStore",
    "StateStore",
    "StateStoreFactory",
    "default_state_dir",
    "open_state_store",
    "register_state_store",
    "registered_state_store_schemes",
]


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise TypeError(f"state keys are non-empty strings, got {key!r}")


def _check_ttl(ttl: float | None) -> None:
    if ttl is not None and not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")


def _encode(key: str, value: Any) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the value for state key {key!r} is not JSON-serialisable: {exc}") from exc


class StateStore(abc.ABC):
    """A key-value store of JSON values with optional time-to-live.

    Keys are non-empty strings; ``/`` is the conventional separator (``config/orders``,
    ``checkpoint/orders/reader-0``). An expired key behaves exactly like an absent one.
    Implementations are safe to use from several threads. Use as a context manager to
    close it on exit.
    """

    @abc.abstractmethod
    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key`` (a fresh copy), or ``default`` when absent or expired."""

    @abc.abstractmethod
    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing any value there.

        ``ttl`` is a positive number of seconds after which the key expires; ``None`` keeps it
        until deleted (and clears an earlier ttl). Raises ``TypeError`` naming the key when
        ``value`` is not JSON-serialisable (NaN and infinities included), ``ValueError``
        for a ttl that is not positive.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove ``key``; ``True`` when it existed (and had not expired)."""

    @abc.abstractmethod
    def keys(self, prefix: str = "") -> list[str]:
        """The sorted keys that start with ``prefix`` and have not expired."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; calling it twice is harmless."""

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class MemoryStateStore(StateStore):
    """A state store in this process's memory (lost when the process ends)."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[str, float | None]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str, now: float) -> str | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        text, expires = entry
        if expires is not None and expires <= now:
            del self._data[key]
            return None
        return text

    def get(self, key: str, default: Any = None) -> Any:
        _check_key(key)
        with self._lock:
            text = self._live(key, time.monotonic())
        return default if text is None else json.loads(text)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        _check_key(key)
        _check_ttl(ttl)
        text = _encode(key, value)
        with self._lock:
            self._data[key] = (text, None if ttl is None else time.monotonic() + ttl)

    def delete(self, key: str) -> bool:
        _check_key(key)
        with self._lock:
            existed = self._live(key, time.monotonic()) is not None
            self._data.pop(key, None)
        return existed

    def keys(self, prefix: str = "") -> list[str]:
        with self._lock:
            now = time.monotonic()
            return sorted(
                k for k in list(self._data) if k.startswith(prefix) and self._live(k, now) is not None
            )

    def close(self) -> None:
        """Nothing to release; the data stays readable."""

    def __repr__(self) -> str:
        return "MemoryStateStore()"


class SqliteStateStore(StateStore):
    """A state store in a SQLite file that several processes can share.

    Table ``adf_state(key TEXT PRIMARY KEY, value TEXT, expires_at REAL NULL)``; the file is
    in WAL mode with a busy timeout (``timeout`` seconds, default 30) so concurrent writers
    wait instead of failing. Expiry uses wall-clock time (``time.time()``), so it holds
    across processes; expired rows are purged lazily. The parent directory is created.
    ``path`` may be ``":memory:"`` (private to this instance).
    """

    _TABLE = "adf_state"

    def __init__(self, path: str, *, timeout: float = 30.0) -> None:
        self.path = path
        if path != ":memory:":
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, exist_ok=True)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = self._connect()

    def _connect(self) -> sqlite3.Connection:
        # imported here: some Python builds (WASI) ship without the _sqlite3 extension
        import sqlite3

        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        if self.path != ":memory:":
            self._use_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self._TABLE} "
            "(key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL, expires_at REAL NULL)"
        )
        self._pid = os.getpid()
        return conn

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Put the file in WAL mode (once: the mode is kept in the file).

        Switching needs the file to itself, and SQLite answers "database is locked" at once,
        without its busy timeout, when another connection is switching it too: processes
        and threads opening a new state file together (heartbeats, a worker's first runs).
        So the switch is retried until the timeout.
        """
        import sqlite3

        deadline = time.monotonic() + self.timeout
        pause = 0.005
        while True:
            try:
                if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"the state store {self.path!r} is closed")
        if self._pid != os.getpid() and self.path != ":memory:":
            # A forked reader process: a SQLite connection must not cross fork(); open its own.
            self._conn = self._connect()
        return self._conn

    def get(self, key: str, default: Any = None) -> Any:
        _check_key(key)
        now = time.time()
        with self._lock:
            db = self._db()
            row = db.execute(f"SELECT value, expires_at FROM {self._TABLE} WHERE key = ?", (key,)).fetchone()
            if row is None:
                return default
            if row[1] is not None and row[1] <= now:
                db.execute(f"DELETE FROM {self._TABLE} WHERE key = ? AND expires_at <= ?", (key, now))
                return default
        return json.loads(row[0])

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        _check_key(key)
        _check_ttl(ttl)
        text = _encode(key, value)
        expires = None if ttl is None else time.time() + ttl
        with self._lock:
            self._db().execute(
                f"INSERT INTO {self._TABLE} (key, value, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                (key, text, expires),
            )

    def delete(self, key: str) -> bool:
        _check_key(key)
        now = time.time()
        with self._lock:
            cur = self._db().execute(
                f"DELETE FROM {self._TABLE} WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
                (key, now),
            )
            existed = cur.rowcount > 0
            if not existed:
                self._db().execute(f"DELETE FROM {self._TABLE} WHERE key = ?", (key,))
        return existed

    def keys(self, prefix: str = "") -> list[str]:
        now = time.time()
        with self._lock:
            db = self._db()
            db.execute(f"DELETE FROM {self._TABLE} WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
            rows = db.execute(
                f"SELECT key FROM {self._TABLE} WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
            ).fetchall()
        return sorted(r[0] for r in rows)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        return f"SqliteStateStore({self.path!r})"


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisStateStore(StateStore):
    """A state store on a Redis server; every key is stored as ``prefix + key``.

    ``url`` is a redis-py URL (``redis://[:password@]host:6379/0``, ``rediss://...``). The
    ttl becomes ``SET ... PX`` (millisecond precision, at least 1 ms); :meth:`keys` scans
    with ``SCAN MATCH`` and strips the prefix. Needs the ``redis`` extra, imported when the
    store is created: without it :class:`MissingExtraError` is raised.
    """

    def __init__(self, url: str, prefix: str = "adf:") -> None:
        try:
            import redis
        except ImportError as exc:
            raise MissingExtraError("redis", "redis", "the Redis state store") from exc
        self.url = url
        self.prefix = prefix
        self._client: Any = redis.Redis.from_url(url)

    def get(self, key: str, default: Any = None) -> Any:
        _check_key(key)
        raw = self._client.get(self.prefix + key)
        if raw is None:
            return default
        return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        _check_key(key)
        _check_ttl(ttl)
        text = _encode(key, value)
        px = None if ttl is None else max(1, round(ttl * 1000))
        self._client.set(self.prefix + key, text.encode("utf-8"), px=px)

    def delete(self, key: str) -> bool:
        _check_key(key)
        return bool(self._client.delete(self.prefix + key))

    def keys(self, prefix: str = "") -> list[str]:
        pattern = _glob_escape(self.prefix + prefix) + "*"
        n = len(self.prefix)
        found: set[str] = set()
        for raw in self._client.scan_iter(match=pattern, count=500):
            name = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
            found.add(name[n:])
        return sorted(found)

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisStateStore({redact_text(self.url)!r}, prefix={self.prefix!r})"


#: Builds a store from the full URL (``"memory://"``, ``"sqlite:///x.db"``...).
StateStoreFactory = Callable[[str], StateStore]

_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def _sqlite_path(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db``; ``sqlite://`` -> ``:memory:``."""
    rest = url.split("://", 1)[1].split("?", 1)[0]
    if rest in ("", "/", "/:memory:"):
        return ":memory:"
    if not rest.startswith("/"):
        raise ConfigError(
            "state store URL",
            [
                f"{url!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db (three or four slashes)"
            ],
        )
    return unquote(rest[1:])


_FACTORIES: dict[str, StateStoreFactory] = {
    "memory": lambda url: MemoryStateStore(),
    "sqlite": lambda url: SqliteStateStore(_sqlite_path(url)),
    "redis": RedisStateStore,
    "rediss": RedisStateStore,
}
_FACTORIES_LOCK = threading.Lock()


def register_state_store(scheme: str, factory: StateStoreFactory) -> None:
    """Make :func:`open_state_store` open ``scheme://...`` URLs with ``factory(url)``.

    ``scheme`` is matched case-insensitively; registering a scheme again replaces the
    factory (so a package can override a built-in one).
    """
    if not scheme or not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
        raise ValueError(f"invalid URL scheme {scheme!r}")
    with _FACTORIES_LOCK:
        _FACTORIES[scheme.lower()] = factory


def registered_state_store_schemes() -> list[str]:
    """The URL schemes :func:`open_state_store` understands, sorted."""
    with _FACTORIES_LOCK:
        return sorted(_FACTORIES)


def default_state_dir() -> str:
    """The absolute state directory: ``$ADF_STATE_DIR`` when set and non-empty, else ``./.adf``.

    The directory is not created here (the SQLite store creates it when it opens).
    """
    return os.path.abspath(os.environ.get("ADF_STATE_DIR") or ".adf")


def open_state_store(url: str | None, *, state_dir: str | None = None) -> StateStore:
    """Open the state store a URL names.

    * ``None`` or ``""`` -> :class:`SqliteStateStore` on ``state.db`` in ``state_dir``
      (default :func:`default_state_dir`);
    * ``memory://`` -> :class:`MemoryStateStore`;
    * ``sqlite:///relative.db`` (relative to the working directory), ``sqlite:////abs/path.db``
      or a plain path ending in ``.db``/``.sqlite``/``.sqlite3`` -> :class:`SqliteStateStore`;
    * ``redis://...`` / ``rediss://...`` -> :class:`RedisStateStore`;
    * any scheme added with :func:`register_state_store`.

    Raises :class:`ConfigError` listing the supported forms for anything else.
    """
    if not url:
        return SqliteStateStore(os.path.join(state_dir or default_state_dir(), "state.db"))
    if "://" in url:
        scheme = url.split("://", 1)[0].lower()
        with _FACTORIES_LOCK:
            factory = _FACTORIES.get(scheme)
        if factory is not None:
            return factory(url)
    elif url.lower().endswith(_SUFFIXES):
        return SqliteStateStore(url)
    schemes = ", ".join(f"{s}://" for s in registered_state_store_schemes())
    raise ConfigError(
        "state store URL",
        [
            f"unsupported state store {redact_text(url)!r}; supported: {schemes} "
            "(sqlite:///relative.db, sqlite:////absolute.db, redis://host:6379/0) "
            "or a file path ending in .db"
        ],
    )
