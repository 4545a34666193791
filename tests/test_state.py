"""State stores: memory, SQLite and Redis (the real server on 127.0.0.1:6379) behave alike."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from active_data_flow.errors import ConfigError
from active_data_flow.state import (
    MemoryStateStore,
    RedisStateStore,
    SqliteStateStore,
    StateStore,
    default_state_dir,
    open_state_store,
    register_state_store,
    registered_state_store_schemes,
)

REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[1]


def _redis_store() -> Iterator[StateStore]:
    prefix = f"adf-test-{uuid.uuid4().hex}:"
    store = RedisStateStore(REDIS_URL, prefix=prefix)
    try:
        yield store
    finally:
        client = store._client
        for key in list(client.scan_iter(match=prefix + "*")):
            client.delete(key)
        store.close()


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "memory":
        with MemoryStateStore() as s:
            yield s
    elif request.param == "sqlite":
        with SqliteStateStore(str(tmp_path / "sub" / "state.db")) as s:
            yield s
    else:
        yield from _redis_store()


def test_get_set_delete(store: StateStore) -> None:
    assert store.get("a") is None
    assert store.get("a", 5) == 5
    value = {"n": 1, "f": 1.5, "s": "é", "l": [1, None, True], "t": (1, 2), "d": {"x": {}}}
    store.set("a", value)
    assert store.get("a") == {"n": 1, "f": 1.5, "s": "é", "l": [1, None, True], "t": [1, 2], "d": {"x": {}}}
    store.set("a", 2)
    assert store.get("a") == 2
    store.set("none", None)
    assert store.get("none", "dflt") is None
    assert store.delete("a") is True
    assert store.delete("a") is False
    assert store.get("a") is None


def test_get_returns_a_copy(store: StateStore) -> None:
    store.set("k", {"items": [1]})
    got = store.get("k")
    got["items"].append(2)
    assert store.get("k") == {"items": [1]}


def test_keys_sorted_with_prefix(store: StateStore) -> None:
    for k in ("config/b", "config/a", "checkpoint/x", "configx", "a*[?]"):
        store.set(k, 1)
    assert store.keys() == sorted(["config/b", "config/a", "checkpoint/x", "configx", "a*[?]"])
    assert store.keys("config/") == ["config/a", "config/b"]
    assert store.keys("config") == ["config/a", "config/b", "configx"]
    assert store.keys("a*") == ["a*[?]"]
    assert store.keys("nothing") == []


def test_ttl_expiry(store: StateStore) -> None:
    store.set("short", "x", ttl=0.3)
    store.set("long", "y", ttl=60)
    store.set("forever", "z")
    store.set("cleared", "w", ttl=0.3)
    store.set("cleared", "w")  # no ttl: clears the earlier one
    assert store.get("short") == "x"
    assert store.keys() == ["cleared", "forever", "long", "short"]
    time.sleep(0.6)
    assert store.get("short") is None
    assert store.get("short", "gone") == "gone"
    assert store.keys() == ["cleared", "forever", "long"]
    assert store.delete("short") is False
    assert store.get("long") == "y"
    assert store.get("cleared") == "w"


def test_bad_ttl(store: StateStore) -> None:
    with pytest.raises(ValueError, match="ttl"):
        store.set("k", 1, ttl=0)


def test_non_json_value_is_type_error(store: StateStore) -> None:
    with pytest.raises(TypeError, match="'bad'"):
        store.set("bad", {"when": object()})
    with pytest.raises(TypeError, match="'nan'"):
        store.set("nan", float("nan"))
    assert store.get("bad") is None
    assert store.keys() == []


def test_bad_key(store: StateStore) -> None:
    with pytest.raises(TypeError):
        store.set("", 1)


def test_two_sqlite_stores_share_a_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    with SqliteStateStore(path) as one, SqliteStateStore(path) as two:
        one.set("k", {"v": 1})
        assert two.get("k") == {"v": 1}
        two.set("k", {"v": 2}, ttl=30)
        assert one.get("k") == {"v": 2}
        assert two.delete("k") is True
        assert one.get("k") is None
        assert one.delete("k") is False


def test_sqlite_shared_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    with SqliteStateStore(path) as store:
        store.set("from-parent", 1)
        code = (
            "import sys; from active_data_flow.state import SqliteStateStore\n"
            "s = SqliteStateStore(sys.argv[1])\n"
            "assert s.get('from-parent') == 1\n"
            "s.set('from-child', [1, 2]); s.close()\n"
        )
        subprocess.run([sys.executable, "-c", code, path], check=True, cwd=ROOT, timeout=60)
        assert store.get("from-child") == [1, 2]


def test_many_threads_opening_a_new_sqlite_file_at_once_all_succeed(tmp_path: Path) -> None:
    # Switching a new file to WAL needs it to itself; SQLite refuses the others at once
    # ("database is locked", no busy timeout): 2-7 failures in 100 rounds of 16 threads.
    import threading

    failures: list[str] = []
    for round_ in range(100):
        path = str(tmp_path / f"new-{round_}.db")
        start = threading.Barrier(16)
        opened: list[SqliteStateStore] = []

        def open_and_write(i: int, path: str = path, start: threading.Barrier = start,
                           opened: list[SqliteStateStore] = opened) -> None:
            start.wait()
            try:
                store = SqliteStateStore(path)
                opened.append(store)
                store.set(f"k{i}", i)
                assert store.get(f"k{i}") == i
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=open_and_write, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for store in opened:
            store.close()
    assert failures == []


def test_sqlite_closed_store_says_so(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path / "s.db"))
    store.close()
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.get("k")


def test_open_memory_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_state_store("memory://") as s:
        assert isinstance(s, MemoryStateStore)
    with open_state_store(None, state_dir=str(tmp_path / "st")) as s:
        assert isinstance(s, SqliteStateStore)
        assert s.path == str(tmp_path / "st" / "state.db")
        s.set("k", 1)
    assert (tmp_path / "st" / "state.db").exists()
    monkeypatch.setenv("ADF_STATE_DIR", str(tmp_path / "envdir"))
    assert default_state_dir() == str(tmp_path / "envdir")
    with open_state_store(None) as s:
        assert isinstance(s, SqliteStateStore)
        assert s.path == str(tmp_path / "envdir" / "state.db")
    monkeypatch.delenv("ADF_STATE_DIR")
    monkeypatch.chdir(tmp_path)
    assert default_state_dir() == str(tmp_path / ".adf")


def test_open_sqlite_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_state_store("sqlite:///rel/a.db") as s:
        assert isinstance(s, SqliteStateStore)
        s.set("k", "rel")
    assert (tmp_path / "rel" / "a.db").exists()
    absolute = tmp_path / "abs" / "b.db"
    with open_state_store(f"sqlite:///{absolute}") as s:  # sqlite: + // + /abs/path
        assert isinstance(s, SqliteStateStore)
        assert s.path == str(absolute)
        s.set("k", "abs")
    with open_state_store(str(absolute)) as s:
        assert s.get("k") == "abs"
    with open_state_store("plain.db") as s:
        assert isinstance(s, SqliteStateStore)
    assert (tmp_path / "plain.db").exists()
    with open_state_store("sqlite://") as s:
        assert isinstance(s, SqliteStateStore) and s.path == ":memory:"


@pytest.mark.redis
def test_open_redis_url() -> None:
    with open_state_store(REDIS_URL) as s:
        assert isinstance(s, RedisStateStore)
        assert s.prefix == "adf:"
        key = f"test-open-{uuid.uuid4().hex}"
        s.set(key, 1, ttl=5)
        assert s.get(key) == 1
        assert s.delete(key) is True


def test_open_bad_scheme() -> None:
    with pytest.raises(ConfigError) as info:
        open_state_store("mongodb://user:secretpw@host/db")
    msg = str(info.value)
    for scheme in ("memory://", "sqlite://", "redis://", "rediss://"):
        assert scheme in msg
    assert "secretpw" not in msg
    with pytest.raises(ConfigError, match="supported"):
        open_state_store("state.json")


def test_register_state_store() -> None:
    opened: list[str] = []

    def factory(url: str) -> StateStore:
        opened.append(url)
        return MemoryStateStore()

    register_state_store("Spin-KV", factory)
    assert "spin-kv" in registered_state_store_schemes()
    with open_state_store("spin-kv://default") as s:
        assert isinstance(s, MemoryStateStore)
    assert opened == ["spin-kv://default"]
    with pytest.raises(ValueError):
        register_state_store("bad scheme", factory)


def test_redis_store_missing_extra_message() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "from active_data_flow.errors import MissingExtraError\n"
        "from active_data_flow.state import open_state_store\n"
        "try:\n"
        "    open_state_store('redis://127.0.0.1:6379/0')\n"
        "except MissingExtraError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    assert "active-data-flow[redis]" in out and "Redis state store" in out


def test_core_state_imports_only_stdlib() -> None:
    code = (
        "import sys\n"
        "import active_data_flow.state, active_data_flow.config, active_data_flow.redact\n"
        "bad = [m for m in ('redis', 'yaml', 'pydantic', 'sqlalchemy', 'sqlite3') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def _child_writes(store: Any, key: str) -> None:
    store.set(key, {"from": "child"})


def test_a_sqlite_store_inherited_by_a_forked_process_opens_its_own_connection(tmp_path: Path) -> None:
    import multiprocessing

    from active_data_flow.state import SqliteStateStore

    store = SqliteStateStore(str(tmp_path / "s.db"))
    store.set("parent", 1)
    proc = multiprocessing.get_context("fork").Process(target=_child_writes, args=(store, "child"))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    assert store.get("child") == {"from": "child"} and store.get("parent") == 1
    store.close()
