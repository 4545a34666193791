"""What the Spin imports of the local host work on (:class:`SpinState`), and its variables.

Key-value stores are one JSON file (``<state>/key_value.json``, ``{label: {key: base64}}``,
the same file as the Node host's), SQLite databases are files under the state directory,
Redis and MQTT are real servers (redis-py, paho-mqtt: imported when first used).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SpinState", "load_variables"]


def load_variables(variables: Mapping[str, str] | None = None, vars_file: str | None = None,
                   env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Spin variables: ``SPIN_VARIABLE_<NAME>`` environment, then a JSON file, then ``variables``."""
    env = os.environ if env is None else env
    out = {k[len("SPIN_VARIABLE_"):].lower(): v for k, v in env.items() if k.startswith("SPIN_VARIABLE_")}
    if vars_file and os.path.exists(vars_file):
        with open(vars_file, encoding="utf-8") as f:
            out.update({str(k): str(v) for k, v in json.load(f).items()})
    out.update({str(k): str(v) for k, v in (variables or {}).items()})
    return out


@dataclass
class SpinState:
    """What the Spin imports work on: files under ``state_dir``, variables, Redis."""

    state_dir: str = ".spin"
    variables: dict[str, str] = field(default_factory=dict)
    kv_labels: Sequence[str] | None = None  # None: any label
    sqlite_databases: Sequence[str] | None = None

    def __post_init__(self) -> None:
        self.state_dir = os.path.abspath(self.state_dir)
        os.makedirs(self.state_dir, exist_ok=True)
        self._lock = threading.RLock()
        self._redis: dict[str, Any] = {}
        self._mqtt: dict[tuple[str, str, str], Any] = {}
        self._kv_cache: tuple[tuple[int, int, int], dict[str, dict[str, str]]] | None = None

    # -- key-value (same JSON file as the Node host) ----------------------------------

    @property
    def kv_file(self) -> str:
        return os.path.join(self.state_dir, "key_value.json")

    def _kv_read(self) -> dict[str, dict[str, str]]:
        """The file's contents, parsed again only when the file changed (another host may write it)."""
        try:
            st = os.stat(self.kv_file)
        except FileNotFoundError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._kv_cache
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            with open(self.kv_file, encoding="utf-8") as f:
                data = json.loads(f.read() or "{}")
        except FileNotFoundError:
            return {}
        self._kv_cache = (stamp, data)
        return data  # type: ignore[no-any-return]

    def kv_load(self) -> dict[str, dict[str, str]]:
        """A copy of the store's contents (``{label: {key: base64}}``) to change and save."""
        return {label: dict(keys) for label, keys in self._kv_read().items()}

    def kv_save(self, data: Mapping[str, Any]) -> None:
        tmp = f"{self.kv_file}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, self.kv_file)

    def kv_get(self, label: str, key: str) -> bytes | None:
        value = self._kv_read().get(label, {}).get(key)
        return None if value is None else base64.b64decode(value)

    def kv_set(self, label: str, key: str, value: bytes) -> None:
        with self._lock:
            data = self.kv_load()
            data.setdefault(label, {})[key] = base64.b64encode(bytes(value)).decode()
            self.kv_save(data)

    def kv_delete(self, label: str, key: str) -> None:
        with self._lock:
            data = self.kv_load()
            if data.get(label, {}).pop(key, None) is not None:
                self.kv_save(data)

    def kv_keys(self, label: str) -> list[str]:
        return list(self._kv_read().get(label, {}))

    # -- sqlite ---------------------------------------------------------------------

    def sqlite_path(self, name: str) -> str:
        return os.path.join(self.state_dir, "sqlite_db.db" if name == "default" else f"{name}.db")

    def sqlite_connect(self, name: str) -> sqlite3.Connection:
        conn = sqlite3.connect(self.sqlite_path(name), timeout=30, isolation_level=None, check_same_thread=False)
        return conn

    # -- redis ----------------------------------------------------------------------

    def redis(self, address: str) -> Any:
        with self._lock:
            client = self._redis.get(address)
            if client is None:
                import redis

                client = redis.Redis.from_url(address, socket_connect_timeout=5)
                client.ping()
                self._redis[address] = client
            return client

    # -- outbound MQTT ---------------------------------------------------------------

    def mqtt(self, address: str, username: str = "", password: str = "", keep_alive: int = 30) -> Any:
        """A connected paho-mqtt client for ``mqtt://host[:port]`` (``mqtts://``: TLS), one per
        address and credentials, kept for the host's life (Spin keeps its connections too)."""
        from urllib.parse import urlsplit

        key = (address, username, password)
        with self._lock:
            client = self._mqtt.get(key)
            if client is not None:
                return client
            import paho.mqtt.client as paho
            from paho.mqtt.enums import CallbackAPIVersion

            parts = urlsplit(address)
            if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
                raise ValueError(f"not an mqtt:// address: {address!r}")
            client = paho.Client(CallbackAPIVersion.VERSION2,
                                 client_id=f"adf-spin-out-{os.getpid()}-{len(self._mqtt)}-{os.urandom(3).hex()}")
            if username or password:
                client.username_pw_set(username, password)
            if parts.scheme == "mqtts":
                client.tls_set()
            connected = threading.Event()
            outcome: list[Any] = []

            def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
                outcome.append(reason)
                connected.set()

            client.on_connect = on_connect
            client.connect(parts.hostname, parts.port or (8883 if parts.scheme == "mqtts" else 1883),
                           keepalive=max(int(keep_alive), 1) if keep_alive else 60)
            client.loop_start()
            if not connected.wait(10) or getattr(outcome[0], "is_failure", False):
                client.loop_stop()
                raise ConnectionError(f"the broker at {address} refused the connection: {outcome[:1] or 'no answer'}")
            self._mqtt[key] = client
            return client

    def close(self) -> None:
        for client in self._redis.values():
            with contextlib.suppress(Exception):
                client.close()
        self._redis.clear()
        for client in self._mqtt.values():
            with contextlib.suppress(Exception):
                client.disconnect()
                client.loop_stop()
        self._mqtt.clear()
