"""The cache sink: records stored under key_prefix + key, on real Redis and in the embedded store."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from active_data_flow.connectors.cache import CacheSink
from active_data_flow.context import RunContext
from active_data_flow.errors import ConfigError, RecordValidationError
from active_data_flow.state import MemoryStateStore, RedisStateStore, SqliteStateStore

REDIS_URL = "redis://127.0.0.1:6379/0"


def _get(client: redis.Redis, key: str) -> bytes:
    value = client.get(key)
    assert isinstance(value, bytes), f"{key} is missing"
    return value


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"adf-test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.redis
def test_redis_stores_each_record_as_json_under_prefix_and_key_with_a_ttl(redis_prefix: str) -> None:
    sink = CacheSink(key_attribute="id", key_prefix=redis_prefix, ttl=120, url=REDIS_URL)
    assert sink.idempotent is True
    sink.open()
    sink.write_batch([{"id": i, "name": f"n{i}", "tags": ["x"]} for i in range(1, 101)])
    sink.flush()
    sink.close()

    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert len(list(client.scan_iter(match=redis_prefix + "*"))) == 100
        assert json.loads(_get(client, f"{redis_prefix}42")) == {"id": 42, "name": "n42", "tags": ["x"]}
        assert 0 < client.ttl(f"{redis_prefix}1") <= 120
        assert 110_000 < client.pttl(f"{redis_prefix}100") <= 120_000
    finally:
        client.close()
    # Readable through the project's own Redis state store too.
    with RedisStateStore(REDIS_URL, prefix=redis_prefix) as store:
        assert store.get("7") == {"id": 7, "name": "n7", "tags": ["x"]}


@pytest.mark.redis
def test_redis_without_ttl_keeps_keys_and_rewriting_replaces_the_value(redis_prefix: str) -> None:
    sink = CacheSink(key_attribute="sku", key_prefix=redis_prefix, url=REDIS_URL)
    sink.write_batch([{"sku": "A-1", "qty": 1}])
    sink.write_batch([{"sku": "A-1", "qty": 2}])
    sink.close()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert client.ttl(f"{redis_prefix}A-1") == -1
        assert json.loads(_get(client, f"{redis_prefix}A-1")) == {"sku": "A-1", "qty": 2}
        assert len(list(client.scan_iter(match=redis_prefix + "*"))) == 1
    finally:
        client.close()


@pytest.mark.redis
def test_redis_missing_key_attribute_names_it_and_writes_nothing_of_the_batch(redis_prefix: str) -> None:
    sink = CacheSink(key_attribute="id", key_prefix=redis_prefix, url=REDIS_URL)
    with pytest.raises(RecordValidationError) as info:
        sink.write_batch([{"id": 1}, {"name": "no id"}])
    sink.close()
    assert info.value.field == "id" and "'id'" in str(info.value)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert list(client.scan_iter(match=redis_prefix + "*")) == []
    finally:
        client.close()


def test_embedded_store_default_prefix_is_the_flow_name() -> None:
    store = MemoryStateStore()
    sink = CacheSink(key_attribute="id")
    sink.run_context = RunContext(flow_name="orders", store=store)
    sink.open()
    sink.write_batch([{"id": 7, "total": 9.5}, {"id": "x", "total": 1}])
    sink.close()
    assert store.keys() == ["orders:7", "orders:x"]
    assert store.get("orders:7") == {"id": 7, "total": 9.5}
    assert store.get("orders:x") == {"id": "x", "total": 1}  # the flow's store stays open


def test_embedded_store_ttl_expires_keys() -> None:
    store = MemoryStateStore()
    sink = CacheSink(key_attribute="id", key_prefix="", ttl=0.2)
    sink.run_context = RunContext(store=store)
    sink.write_batch([{"id": 1}])
    assert store.get("1") == {"id": 1}
    time.sleep(0.3)
    assert store.get("1") is None


@pytest.mark.parametrize(
    ("record", "reason"),
    [({"name": "a"}, "missing"), ({"id": None}, "null"), ({"id": {"a": 1}}, "dict")],
)
def test_a_record_without_a_usable_key_is_an_error_naming_the_attribute(
    record: dict[str, object], reason: str
) -> None:
    store = MemoryStateStore()
    sink = CacheSink(key_attribute="id")
    sink.run_context = RunContext(store=store)
    with pytest.raises(RecordValidationError) as info:
        sink.write_batch([{"id": 1}, record])
    assert info.value.field == "id" and reason in str(info.value)
    assert store.keys() == []


def test_a_state_store_url_and_the_default_embedded_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'cache.db'}"
    sink = CacheSink(key_attribute="id", key_prefix="c:", url=url)
    sink.write_batch([{"id": 1, "v": "a"}])
    sink.close()
    with SqliteStateStore(str(tmp_path / "cache.db")) as store:
        assert store.get("c:1") == {"id": 1, "v": "a"}

    monkeypatch.setenv("ADF_STATE_DIR", str(tmp_path / "state"))
    sink = CacheSink(key_attribute="id")
    sink.run_context = RunContext(flow_name="f")
    sink.write_batch([{"id": 2}])
    sink.close()
    with SqliteStateStore(str(tmp_path / "state" / "state.db")) as store:
        assert store.get("f:2") == {"id": 2}


def test_configuration_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        CacheSink(ttl=-1)
    assert len(info.value.problems) == 2
    assert any("'key_attribute' is required" in p for p in info.value.problems)
    assert any("'ttl'" in p for p in info.value.problems)


def test_describe_hides_the_redis_password() -> None:
    sink = CacheSink(key_attribute="id", key_prefix="p:", url="redis://:s3cret@cache:6379/0")
    assert "s3cret" not in sink.describe() and "p:" in sink.describe()
