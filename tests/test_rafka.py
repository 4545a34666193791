"""Rafka: Kafka-like topics over Redis streams — client API, source, sink, crash recovery, CLI.

Every test uses the real Redis server on 127.0.0.1:6379 and topics with unique names, deleted
afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from adf_runs import children, finish, start_run, wait_for_lines

import active_data_flow.connectors.rafka.client as rafka
from active_data_flow.connectors.memory import MemorySink
from active_data_flow.connectors.rafka import (
    Admin,
    Consumer,
    Producer,
    RafkaError,
    RafkaSource,
    RafkaSplit,
    TopicExistsError,
    UnknownTopicError,
    meta_key,
    parse_id,
    partition_for,
    stream_key,
)
from active_data_flow.engine import run_flow

pytestmark = pytest.mark.redis

URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def admin() -> Iterator[Admin]:
    with Admin(URL) as a:
        yield a


@pytest.fixture
def new_topic(admin: Admin) -> Iterator[Callable[..., str]]:
    """``new_topic(partitions, **retention)`` creates a uniquely named topic, deleted after the test."""
    made: list[str] = []

    def make(partitions: int = 2, **kwargs: Any) -> str:
        name = f"test-{uuid.uuid4().hex[:10]}"
        admin.create_topic(name, partitions, **kwargs)
        made.append(name)
        return name

    yield make
    for name in made:
        admin.delete_topic(name)


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(URL)
    yield client
    client.close()


def group_totals(admin: Admin, topic: str, group: str) -> dict[str, Any]:
    for g in admin.describe(topic)["groups"]:
        if g["group"] == group:
            return g
    raise AssertionError(f"no group {group!r} on {topic}")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- admin and producer


def test_topics_are_created_grown_described_and_deleted(admin: Admin, raw: redis.Redis) -> None:
    name = f"test-{uuid.uuid4().hex[:10]}"
    try:
        meta = admin.create_topic(name, 3, retention_maxlen=500)
        assert (meta.partitions, meta.retention) == (3, {"maxlen": 500})
        assert raw.hget(meta_key(name), "partitions") == b"3"
        with pytest.raises(TopicExistsError):
            admin.create_topic(name, 3)
        assert admin.create_topic(name, 9, exist_ok=True).partitions == 3
        assert name in admin.list_topics()
        with pytest.raises(RafkaError, match="only be added"):
            admin.add_partitions(name, 2)
        assert admin.add_partitions(name, 5).partitions == 5
        d = admin.describe(name)
        assert d["partition_count"] == 5 and [p["length"] for p in d["partitions"]] == [0] * 5
        with Producer(URL) as producer:
            producer.send(name, {"x": 1}, partition=4)
        assert admin.delete_topic(name)
        assert not raw.exists(meta_key(name), stream_key(name, 4))
        assert not admin.delete_topic(name)
        with pytest.raises(UnknownTopicError, match="create-topic"):
            admin.describe(name)
    finally:
        admin.delete_topic(name)
    with pytest.raises(RafkaError, match="invalid rafka topic name"):
        admin.create_topic("a:b", 1)


def test_key_partitioning_is_stable_across_producers_and_processes(new_topic: Callable[..., str]) -> None:
    topic = new_topic(4)
    keys = [f"customer-{i}" for i in range(200)]
    expected = {k: zlib.crc32(k.encode()) % 4 for k in keys}
    assert {k: partition_for(k, 4) for k in keys} == expected
    # another interpreter with another hash seed computes the same partitions
    code = "import json,sys; from active_data_flow.connectors.rafka import partition_for; " \
           "print(json.dumps({k: partition_for(k, 4) for k in json.loads(sys.argv[1])}))"
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(keys)], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "12345"}, check=True,
    )
    assert json.loads(out.stdout) == expected
    with Producer(URL) as first, Producer(URL) as second:
        a = first.send_batch(topic, [{"k": k} for k in keys], key_field="k")
        b = second.send_batch(topic, [{"k": k} for k in keys], keys=keys)
    assert [m.partition for m in a] == [m.partition for m in b] == [expected[k] for k in keys]
    assert len({m.partition for m in a}) == 4


def test_without_a_key_entries_go_round_robin(new_topic: Callable[..., str], admin: Admin) -> None:
    topic = new_topic(3)
    with Producer(URL) as producer:
        for i in range(30):
            producer.send(topic, {"i": i})
    assert [p["length"] for p in admin.describe(topic)["partitions"]] == [10, 10, 10]


def test_key_headers_and_value_round_trip(new_topic: Callable[..., str]) -> None:
    topic = new_topic(2)
    value = {"id": 7, "name": "Zoë", "nested": {"a": [1, 2.5, None, True]}}
    with Producer(URL) as producer:
        partition = producer.send(topic, value, key="k-7", headers={"trace": "abc", "n": 3})
        producer.send(topic, {"id": 8})
        sent = producer.flush()
    assert sent[0].partition == partition == partition_for("k-7", 2)
    consumer = Consumer(URL, topic, "g", "c1")
    records = {r.id + str(r.partition): r for r in consumer.poll(10)}
    first = records[sent[0].id + str(sent[0].partition)]
    assert (first.value, first.key, first.headers, first.error) == (value, "k-7", {"trace": "abc", "n": 3}, None)
    second = records[sent[1].id + str(sent[1].partition)]
    assert (second.value, second.key, second.headers) == ({"id": 8}, None, None)
    consumer.close()


def test_retention_maxlen_and_minid_trim_the_partitions(
    new_topic: Callable[..., str], admin: Admin, raw: redis.Redis
) -> None:
    capped = new_topic(2, retention_maxlen=100)
    with Producer(URL) as producer:
        producer.send_batch(capped, [{"i": i} for i in range(5000)])
    lengths = [p["length"] for p in admin.describe(capped)["partitions"]]
    # "~": whole stream nodes (100 entries each by default) are dropped, so about maxlen stay
    assert all(100 <= n < 300 for n in lengths), lengths

    aged = new_topic(1, retention_minid_ms=60_000)
    key = stream_key(aged, 0)
    for i in range(1, 301):  # entries from 1970: far older than a minute
        raw.xadd(key, {"v": json.dumps({"old": i})}, id=f"{i}-0")
    with Producer(URL) as producer:
        producer.send(aged, {"new": True})
    entries = raw.xrange(key)
    assert len(entries) < 301 and json.loads(entries[-1][1][b"v"]) == {"new": True}
    assert admin.describe(aged)["retention"] == {"minid_ms": 60_000}


def test_producer_batches_without_hiredis_and_after_an_error_reply(
    new_topic: Callable[..., str], raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = new_topic(2)
    with Producer(URL) as producer:
        fast = producer.send_batch(topic, [{"n": i} for i in range(10)])
        raw.delete(stream_key(topic, 1))
        raw.set(stream_key(topic, 1), "not a stream")  # XADD to it gets an error reply
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            producer.send_batch(topic, [{"n": i} for i in range(10)])
        raw.delete(stream_key(topic, 1))
        monkeypatch.setattr(rafka, "_hiredis_pack", lambda: None)  # as without hiredis: redis-py's pipeline
        slow = producer.send_batch(topic, [{"n": i} for i in range(10, 20)])
    assert len(fast) == len(slow) == 10 and all(m.id for m in fast + slow)
    assert raw.xlen(stream_key(topic, 0)) == 15


# --------------------------------------------------------------------------- consumers


def test_two_consumers_of_one_group_each_get_every_entry_once(new_topic: Callable[..., str], admin: Admin) -> None:
    topic = new_topic(3)
    with Producer(URL) as producer:
        producer.send_batch(topic, [{"n": i} for i in range(900)], key_field="n")
    one, two = Consumer(URL, topic, "shared", "one"), Consumer(URL, topic, "shared", "two")
    got: dict[str, list[int]] = {"one": [], "two": []}
    for _ in range(100):
        batch_one, batch_two = one.poll(40, block_ms=0), two.poll(40, block_ms=0)
        got["one"] += [r.value["n"] for r in batch_one]
        got["two"] += [r.value["n"] for r in batch_two]
        one.commit(batch_one)
        two.commit(batch_two)
        if not batch_one and not batch_two:
            break
    assert got["one"] and got["two"]
    assert not set(got["one"]) & set(got["two"])
    assert sorted(got["one"] + got["two"]) == list(range(900))
    assert group_totals(admin, topic, "shared")["pending"] == 0
    assert group_totals(admin, topic, "shared")["lag"] == 0


def test_a_dead_consumers_unacknowledged_entries_are_claimed_and_redelivered(
    new_topic: Callable[..., str], admin: Admin
) -> None:
    topic = new_topic(2)
    with Producer(URL) as producer:
        producer.send_batch(topic, [{"n": i} for i in range(50)])
    dead = Consumer(URL, topic, "g", "dead")
    taken = dead.poll(20)  # read, never committed: the consumer "dies"
    assert len(taken) == 20 and dead.pending() == 20
    survivor = Consumer(URL, topic, "g", "survivor")
    assert survivor.claim_stale(idle_ms=60_000) == []  # not idle long enough yet
    time.sleep(0.15)
    claimed = survivor.claim_stale(idle_ms=100)
    assert sorted(r.value["n"] for r in claimed) == sorted(r.value["n"] for r in taken)
    assert dead.pending() == 0 and survivor.pending() == 20
    survivor.commit(claimed)
    rest = survivor.poll(100)
    survivor.commit(rest)
    assert len(rest) == 30
    assert group_totals(admin, topic, "g")["pending"] == 0


def test_a_restarted_consumer_reads_its_own_pending_entries_first(new_topic: Callable[..., str]) -> None:
    topic = new_topic(1)
    with Producer(URL) as producer:
        producer.send_batch(topic, [{"n": i} for i in range(10)])
    first = Consumer(URL, topic, "g", "worker")
    assert [r.value["n"] for r in first.poll(4)] == [0, 1, 2, 3]
    first.close()  # crashed before commit
    again = Consumer(URL, topic, "g", "worker")
    records = again.poll(4)
    assert [r.value["n"] for r in records] == [0, 1, 2, 3]
    again.commit(records)
    assert [r.value["n"] for r in again.poll(100)] == [4, 5, 6, 7, 8, 9]


def test_start_latest_skips_what_is_already_there(new_topic: Callable[..., str]) -> None:
    topic = new_topic(2)
    with Producer(URL) as producer:
        producer.send_batch(topic, [{"old": i} for i in range(5)])
        consumer = Consumer(URL, topic, "late", "c", start="latest")
        producer.send_batch(topic, [{"new": i} for i in range(3)])
    assert sorted(r.value["new"] for r in consumer.poll(100)) == [0, 1, 2]


# --------------------------------------------------------------------------- the source in flows


def spec(name: str, topic: str, sink: dict[str, Any], **runtime: Any) -> dict[str, Any]:
    source: dict[str, Any] = {"type": "rafka", "url": URL, "topic": topic}
    source.update(runtime.pop("source", {}))
    return {"name": name, "source": source, "sink": sink, "runtime": {"batch_size": 100, **runtime}}


_DURING: dict[str, Any] = {}


def produce_during_run(record: dict[str, Any]) -> dict[str, Any]:
    """Step: the first record seen writes 50 more entries to the topic (after the run started)."""
    if not _DURING.get("done"):
        _DURING["done"] = True
        with Producer(URL) as producer:
            producer.send_batch(_DURING["topic"], [{"n": 10_000 + i} for i in range(50)])
    return record


def test_bounded_flow_reads_exactly_what_was_there_at_start_and_the_next_run_the_rest(
    new_topic: Callable[..., str], admin: Admin, state_dir: Path
) -> None:
    topic = new_topic(3)
    with Producer(URL) as producer:
        producer.send_batch(topic, [{"n": i} for i in range(1000)], key_field="n")
    _DURING.clear()
    _DURING["topic"] = topic
    flow = spec("bounded", topic, {"type": "memory", "name": "bounded"}, source={"bounded": True})
    flow["steps"] = [{"type": "python", "function": "test_rafka:produce_during_run"}]
    MemorySink.clear("bounded")
    first = run_flow(flow, state_dir=str(state_dir))
    assert first.status == "success", first.error
    assert sorted(r["n"] for r in MemorySink.get("bounded")) == list(range(1000))

    MemorySink.clear("bounded")
    second = run_flow(flow, state_dir=str(state_dir))
    assert second.status == "success", second.error
    assert sorted(r["n"] for r in MemorySink.get("bounded")) == [10_000 + i for i in range(50)]
    totals = group_totals(admin, topic, "bounded")
    assert (totals["pending"], totals["lag"]) == (0, 0)


def test_unbounded_flow_picks_up_new_entries_until_stopped(
    new_topic: Callable[..., str], admin: Admin, state_dir: Path
) -> None:
    topic = new_topic(2)
    with Producer(URL) as producer:
        producer.send_batch(topic, [{"n": i} for i in range(100)])

    def later() -> None:
        with Producer(URL) as producer:
            producer.send_batch(topic, [{"n": i} for i in range(100, 250)])

    MemorySink.clear("stream")
    timer = threading.Timer(0.8, later)
    timer.start()
    summary = run_flow(
        spec("stream", topic, {"type": "memory", "name": "stream"}, stop_after_s=2.5, idle_sleep_s=0.05),
        state_dir=str(state_dir),
    )
    timer.join()
    assert summary.status == "stopped", summary.error
    assert sorted(r["n"] for r in MemorySink.get("stream")) == list(range(250))
    assert group_totals(admin, topic, "stream")["pending"] == 0


def test_parallelism_two_shares_the_partitions_and_a_partition_added_later_is_read(
    new_topic: Callable[..., str], admin: Admin, state_dir: Path, tmp_path: Path
) -> None:
    topic = new_topic(4)
    with Producer(URL) as producer:
        producer.send_batch(topic, [{"n": i} for i in range(2000)], key_field="n")

    def grow_and_write() -> None:
        admin_ = Admin(URL)
        admin_.add_partitions(topic, 5)
        with Producer(URL) as producer:
            producer.send_batch(topic, [{"n": 5000 + i} for i in range(40)])  # round-robin: 8 land in partition 4
            for i in range(20):
                producer.send(topic, {"n": 6000 + i}, partition=4)
        admin_.close()

    out = tmp_path / "out.jsonl"
    timer = threading.Timer(1.0, grow_and_write)
    timer.start()
    summary = run_flow(
        spec("pair", topic, {"type": "file", "path": str(out)}, parallelism=2, stop_after_s=4.0,
             discovery_interval_s=0.3, idle_sleep_s=0.05),
        state_dir=str(state_dir),
    )
    timer.join()
    assert summary.status == "stopped", summary.error
    counts = Counter(r["n"] for r in read_jsonl(out))
    expected = set(range(2000)) | {5000 + i for i in range(40)} | {6000 + i for i in range(20)}
    assert set(counts) == expected and max(counts.values()) == 1
    described = admin.describe(topic)
    consumers = {c["name"]: c for c in group_totals(admin, topic, "pair")["consumers"]}
    assert sorted(consumers["pair-r0"]["partitions"]) == [0, 2, 4]
    assert sorted(consumers["pair-r1"]["partitions"]) == [1, 3]
    assert all(g["pending"] == 0 and g["lag"] == 0 for p in described["partitions"] for g in p["groups"])


def test_malformed_entries_become_dead_letters_with_the_reason_and_are_acknowledged(
    new_topic: Callable[..., str], admin: Admin, raw: redis.Redis, state_dir: Path
) -> None:
    topic = new_topic(1)
    key = stream_key(topic, 0)
    raw.xadd(key, {"v": '{"n": 1}'})
    raw.xadd(key, {"v": "{not json"})
    raw.xadd(key, {"value": '{"n": 2}'})
    raw.xadd(key, {"v": "[1, 2]"})
    raw.xadd(key, {"k": "key", "v": '{"n": 3}'})  # fields in another order are fine
    MemorySink.clear("dlq")
    summary = run_flow(
        spec("dlq", topic, {"type": "memory", "name": "dlq"}, source={"bounded": True}), state_dir=str(state_dir)
    )
    assert summary.status == "partial", summary.error
    assert sorted(r["n"] for r in MemorySink.get("dlq")) == [1, 3]
    assert summary.dead_letters == 3
    letters = read_jsonl(Path(str(summary.dead_letter_destination)))
    reasons = " | ".join(d["reason"] for d in letters)
    for reason in ("'v' field is not valid JSON", "has no 'v' field (fields: value)", "JSON list, not an object"):
        assert reason in reasons
    assert all(d["stage"] == "source" and d["origin"]["topic"] == topic for d in letters)
    assert {"value": '{"n": 2}'} in [d["record"]["fields"] for d in letters]
    totals = group_totals(admin, topic, "dlq")
    assert (totals["pending"], totals["lag"]) == (0, 0), "dead letters are acknowledged with their batch"


def test_records_can_carry_their_rafka_metadata(new_topic: Callable[..., str], state_dir: Path) -> None:
    topic = new_topic(1)
    with Producer(URL) as producer:
        producer.send(topic, {"n": 1}, key="a", headers={"h": 1})
        (sent,) = producer.flush()
    MemorySink.clear("meta")
    summary = run_flow(
        spec("meta", topic, {"type": "memory", "name": "meta"}, source={"bounded": True, "metadata": True}),
        state_dir=str(state_dir),
    )
    assert summary.status == "success", summary.error
    assert MemorySink.get("meta") == [
        {"n": 1, "_rafka": {"topic": topic, "partition": 0, "id": sent.id, "key": "a", "headers": {"h": 1}}}
    ]


def test_split_state_survives_serialisation() -> None:
    split = RafkaSplit("t:3", "1700000000000-5", "t", 3, "1700000000001-0")
    again = RafkaSource(topic="t").split_from_dict(json.loads(json.dumps(split.to_dict())))
    assert again == split and isinstance(again, RafkaSplit)
    assert parse_id(b"10-2") > parse_id("9-99") and parse_id("5") == (5, 0)


def test_a_bounded_source_on_a_missing_topic_says_how_to_create_it(state_dir: Path) -> None:
    summary = run_flow(spec("missing", "no-such-topic-here", {"type": "memory"}, source={"bounded": True}),
                       state_dir=str(state_dir))
    assert summary.status == "failed"
    assert "does not exist" in str(summary.error) and "create-topic" in str(summary.error)


# --------------------------------------------------------------------------- the sink


def test_sink_creates_the_topic_and_partitions_by_the_key_field(admin: Admin, state_dir: Path) -> None:
    topic = f"test-{uuid.uuid4().hex[:10]}"
    try:
        records = [{"id": i, "customer": f"c{i % 7}"} for i in range(300)]
        summary = run_flow(
            {
                "name": "to_rafka",
                "source": {"type": "memory", "records": records},
                "sink": {"type": "rafka", "url": URL, "topic": topic, "key": "customer", "partitions": 3,
                         "maxlen": 10_000},
                "runtime": {"batch_size": 64},
            },
            state_dir=str(state_dir),
        )
        assert summary.status == "success", summary.error
        assert admin.topic(topic).retention == {"maxlen": 10_000}
        consumer = Consumer(URL, topic, "check", "c")
        got = consumer.poll(1000)
        assert sorted(r.value["id"] for r in got) == list(range(300))
        assert all(r.key == r.value["customer"] and r.partition == partition_for(r.key, 3) for r in got)
        consumer.close()
    finally:
        admin.delete_topic(topic)


def test_sink_without_partitions_needs_an_existing_topic_and_dead_letters_keyless_records(
    new_topic: Callable[..., str], state_dir: Path
) -> None:
    missing = run_flow(
        {"name": "nosuch", "source": {"type": "memory", "records": [{"id": 1}]},
         "sink": {"type": "rafka", "url": URL, "topic": "no-such-topic-here"}},
        state_dir=str(state_dir),
    )
    assert missing.status == "failed" and "create-topic" in str(missing.error)
    topic = new_topic(2)
    summary = run_flow(
        {"name": "keyless", "source": {"type": "memory", "records": [{"id": 1, "k": "a"}, {"id": 2}]},
         "sink": {"type": "rafka", "url": URL, "topic": topic, "key": "k"}},
        state_dir=str(state_dir),
    )
    assert summary.status == "partial" and summary.records_out == 1 and summary.dead_letters == 1


# --------------------------------------------------------------------------- crashes


def crash_spec(tmp: Path, topic: str, parallelism: int, batch: int) -> Path:
    flow = {
        "name": "rafka_crashy",
        "source": {"type": "rafka", "url": URL, "topic": topic, "bounded": True, "claim_idle_ms": 60_000},
        "steps": [{"type": "python", "function": "flowlib.steps:slow", "options": {"delay": 0.001}}],
        "sink": {"type": "file", "path": str(tmp / "out.jsonl"), "mode": "append"},
        "runtime": {"batch_size": batch, "parallelism": parallelism},
    }
    path = tmp / "flow.json"
    path.write_text(json.dumps(flow))
    return path










N_CRASH = 6000
BATCH = 100


def kill_mid_batch(proc: subprocess.Popen[str], restart: Callable[[], subprocess.Popen[str]], out: Path,
                   in_flight: Callable[[], bool]) -> None:
    """SIGKILL the run's process group while a batch is in flight (read, not yet acknowledged).
    A kill that lands between two batches is not that case (and loses nothing): the run goes
    on from where it was and is killed again."""
    for _ in range(5):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if in_flight():
            return
        proc = restart()
        wait_for_lines(out, len(read_jsonl(out)) + 300)
    raise AssertionError("five kills in a row landed between two batches")


@pytest.mark.slow
@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_run_killed_mid_batch_and_run_again_loses_nothing(
    new_topic: Callable[..., str], admin: Admin, tmp_path: Path, parallelism: int
) -> None:
    topic = new_topic(2)
    with Producer(URL) as producer:
        producer.send_batch(topic, [{"n": i} for i in range(N_CRASH)], key_field="n")
    out, state = tmp_path / "out.jsonl", tmp_path / "state"
    spec_path = crash_spec(tmp_path, topic, parallelism, BATCH)
    proc = start_run(spec_path, state)
    wait_for_lines(out, 1500)
    kill_mid_batch(proc, lambda: start_run(spec_path, state), out,
                   lambda: group_totals(admin, topic, "rafka_crashy")["pending"] > 0)
    before = Counter(r["n"] for r in read_jsonl(out))
    assert 0 < len(before) < N_CRASH
    assert group_totals(admin, topic, "rafka_crashy")["pending"] > 0, "a batch was in flight"

    summary = finish(start_run(spec_path, state))
    assert summary["status"] == "success" and summary["resumed"] is True
    counts = Counter(r["n"] for r in read_jsonl(out))
    assert set(counts) == set(range(N_CRASH)), "records lost"
    duplicates = sum(c - 1 for c in counts.values())
    assert duplicates <= BATCH * parallelism, f"{duplicates} duplicates: more than one batch per reader"
    totals = group_totals(admin, topic, "rafka_crashy")
    assert (totals["pending"], totals["lag"]) == (0, 0)


@pytest.mark.slow
def test_a_killed_reader_process_is_replaced_and_rereads_its_pending_entries(
    new_topic: Callable[..., str], admin: Admin, tmp_path: Path
) -> None:
    topic = new_topic(2)
    with Producer(URL) as producer:
        producer.send_batch(topic, [{"n": i} for i in range(N_CRASH)], key_field="n")
    out = tmp_path / "out.jsonl"
    proc = start_run(crash_spec(tmp_path, topic, 2, BATCH), tmp_path / "state")
    wait_for_lines(out, 1500)
    readers = children(proc.pid)
    assert len(readers) >= 2, readers
    os.kill(readers[0], signal.SIGKILL)
    summary = finish(proc)
    assert summary["status"] == "success" and summary["reader_restarts"] == 1
    counts = Counter(r["n"] for r in read_jsonl(out))
    assert set(counts) == set(range(N_CRASH)), "records lost"
    assert sum(c - 1 for c in counts.values()) <= BATCH
    totals = group_totals(admin, topic, "rafka_crashy")
    assert (totals["pending"], totals["lag"]) == (0, 0)


@pytest.mark.slow
def test_a_rerun_with_less_parallelism_takes_over_the_pending_entries_of_the_gone_reader(
    new_topic: Callable[..., str], admin: Admin, tmp_path: Path
) -> None:
    topic = new_topic(2)
    with Producer(URL) as producer:
        producer.send_batch(topic, [{"n": i} for i in range(N_CRASH)], key_field="n")
    out, state = tmp_path / "out.jsonl", tmp_path / "state"
    spec_path = crash_spec(tmp_path, topic, 2, BATCH)
    proc = start_run(spec_path, state)
    wait_for_lines(out, 1500)

    def r1_pending() -> int:
        consumers = {c["name"]: c for c in group_totals(admin, topic, "rafka_crashy")["consumers"]}
        return int(consumers.get("rafka_crashy-r1", {}).get("pending", 0))

    kill_mid_batch(proc, lambda: start_run(spec_path, state), out, lambda: r1_pending() > 0)
    assert r1_pending() > 0
    # run again with one reader: reader 1's consumer is gone for good (and claim_idle_ms is a
    # minute, so only the take-over of the flow's own earlier readers can recover its entries)
    summary = finish(start_run(crash_spec(tmp_path, topic, 1, BATCH), state))
    assert summary["status"] == "success", summary
    counts = Counter(r["n"] for r in read_jsonl(out))
    assert set(counts) == set(range(N_CRASH)), "records lost"
    totals = group_totals(admin, topic, "rafka_crashy")
    assert (totals["pending"], totals["lag"]) == (0, 0)
    assert {c["name"]: c["pending"] for c in totals["consumers"]}["rafka_crashy-r1"] == 0


# --------------------------------------------------------------------------- CLI


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ADF_RAFKA_URL": URL}
    return subprocess.run(
        [sys.executable, "-m", "active_data_flow.cli", "rafka", *args], input=stdin, capture_output=True, text=True,
        cwd=ROOT, env=env, timeout=60,
    )


def test_cli_create_produce_describe_consume_grow_and_delete(admin: Admin, tmp_path: Path) -> None:
    topic = f"test-{uuid.uuid4().hex[:10]}"
    try:
        res = cli("create-topic", topic, "--partitions", "3", "--maxlen", "10000")
        assert res.returncode == 0, res.stderr
        assert "3 partition(s)" in res.stdout
        assert cli("create-topic", topic, "--partitions", "3").returncode == 2

        data = tmp_path / "records.jsonl"
        data.write_text("".join(json.dumps({"n": i, "user": f"u{i % 5}"}) + "\n" for i in range(60)) + "\n")
        res = cli("produce", topic, "--file", str(data), "--key", "user")
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "60"
        res = cli("produce", topic, stdin='{"n": 100}\n{"n": 101}\n')
        assert res.returncode == 0 and res.stdout.strip() == "2", res.stderr
        bad = cli("produce", topic, stdin='{"n": 1}\nnot json\n')
        assert bad.returncode == 2 and "line 2" in bad.stderr

        res = cli("consume", topic, "--group", "readers", "--max", "25", "--from-beginning")
        assert res.returncode == 0, res.stderr
        consumed = [json.loads(line) for line in res.stdout.splitlines()]
        assert len(consumed) == 25 and all("n" in r for r in consumed)

        res = cli("describe", topic, "--json")
        assert res.returncode == 0, res.stderr
        d = json.loads(res.stdout)
        assert d["partition_count"] == 3 and d["length"] == 63
        assert sum(p["length"] for p in d["partitions"]) == 63
        expected = Counter(partition_for(f"u{i % 5}", 3) for i in range(60))
        keyed = {p["partition"]: p["length"] for p in d["partitions"]}
        assert all(keyed[p] >= n for p, n in expected.items())
        (group,) = d["groups"]
        assert group["group"] == "readers" and group["pending"] == 0 and group["lag"] == 63 - 25
        assert group["consumers"][0]["pending"] == 0
        text = cli("describe", topic)
        assert text.returncode == 0 and "group readers: pending 0, lag 38" in text.stdout

        res = cli("consume", topic, "--group", "readers", "--max", "38", "--meta")
        rows = [json.loads(line) for line in res.stdout.splitlines()]
        assert len(rows) == 38 and {"partition", "id", "key", "headers", "value"} <= set(rows[0])
        assert {r["value"]["n"] for r in rows} | {r["n"] for r in consumed} == set(range(60)) | {100, 101}

        res = cli("add-partitions", topic, "--partitions", "4")
        assert res.returncode == 0 and admin.topic(topic).partitions == 4
        assert cli("delete-topic", topic).returncode == 2
        assert admin.exists(topic)
        res = cli("delete-topic", topic, "--yes")
        assert res.returncode == 0 and not admin.exists(topic)
        missing = cli("describe", topic)
        assert missing.returncode == 2 and "does not exist" in missing.stderr
    finally:
        admin.delete_topic(topic)


def test_cli_reports_an_unreachable_server() -> None:
    res = cli("describe", "anything", "--url", "redis://127.0.0.1:1/0")
    assert res.returncode == 1 and "ConnectionError" in res.stderr


def test_a_reader_hands_out_acknowledgements_for_later_and_never_returns_their_entries_twice(
    new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """What a runner acknowledging on a schedule of its own uses (Flink: after a checkpoint): a
    token of the entries read so far, plain JSON, acknowledged later — meanwhile those entries
    are not returned again, even when the reader re-reads its own pending list."""
    from active_data_flow.context import RunContext
    from active_data_flow.flink_job.job import all_splits
    from active_data_flow.source import DetachedReaderContext

    topic = new_topic(1)
    with Producer(URL) as producer:
        producer.send_batch(topic, [{"n": i} for i in range(10)])
    source = RafkaSource(url=URL, topic=topic, group="g", bounded=False, claim_idle_ms=50, block_ms=50)
    source.run_context = RunContext(flow_name="acks", run_id="r", state_dir=str(tmp_path))
    reader = source.create_reader(DetachedReaderContext(0))
    reader.add_splits(all_splits(source))
    reader.start()
    client = redis.Redis.from_url(URL)
    try:
        def pending() -> int:
            return int(client.xpending(rafka.stream_key(topic, 0), "g")["pending"])

        assert [r["n"] for r in reader.poll_batch(4).records] == [0, 1, 2, 3]
        token = json.loads(json.dumps(reader.take_acknowledgement()))  # plain JSON: kept in a checkpoint
        assert sum(len(ids) for ids in token.values()) == 4
        time.sleep(0.3)  # past claim_idle_ms: the reader takes its own pending entries over again
        later = [r["n"] for _ in range(5) for r in reader.poll_batch(100).records]
        assert later == [4, 5, 6, 7, 8, 9]  # 0-3 are pending, not read twice
        assert pending() == 10
        reader.acknowledge(token)
        assert pending() == 6
        reader.notify_checkpoint_complete()  # the rest: everything returned since
        assert pending() == 0
    finally:
        reader.close()
        client.close()
