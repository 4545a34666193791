"""The memory source and sink: round-robin splits, resumable positions, per-name stores."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from active_data_flow.connectors.memory import MemorySink, MemorySource, MemorySplit
from active_data_flow.context import RunContext
from active_data_flow.errors import ConfigError
from active_data_flow.source import InlineContexts, ReaderStatus

RECORDS = [{"n": i} for i in range(10)]


@pytest.fixture(autouse=True)
def _clean_stores() -> Iterator[None]:
    MemorySink.clear()
    yield
    MemorySink.clear()


def test_records_are_dealt_round_robin_into_splits_and_each_is_read_once() -> None:
    source = MemorySource(records=RECORDS, splits=3)
    rows = list(source.each(batch_size=2))
    assert sorted(r["n"] for r in rows) == list(range(10))
    assert [r["n"] for r in rows][:4] == [0, 3, 6, 9]  # split 0 first, in order


def test_a_reader_resumes_after_the_last_record_of_its_snapshot() -> None:
    source = MemorySource(records=RECORDS, splits=2)
    ctx = InlineContexts()
    ctx.enumerator = source.create_enumerator(ctx)
    ctx.enumerator.start()
    reader = source.create_reader(ctx)
    ctx.reader = reader
    reader.start()
    first = [r["n"] for r in reader.poll_batch(3).records]
    held = json.loads(json.dumps([s.to_dict() for s in reader.snapshot_state()]))
    pending = json.loads(json.dumps(ctx.enumerator.snapshot_state()))
    assert first == [0, 2, 4] and held[0]["position"] == 3

    ctx2 = InlineContexts()
    ctx2.enumerator = source.create_enumerator(ctx2, pending)
    ctx2.enumerator.start()
    ctx2.enumerator.add_splits_back([source.split_from_dict(d) for d in held], 0)
    reader2 = source.create_reader(ctx2)
    ctx2.reader = reader2
    reader2.start()
    rest: list[int] = []
    while True:
        batch = reader2.poll_batch(3)
        rest.extend(r["n"] for r in batch.records)
        if batch.status is ReaderStatus.END_OF_INPUT:
            break
    assert sorted(first + rest) == list(range(10)) and len(first + rest) == 10


def test_records_read_are_copies_of_the_configuration() -> None:
    source = MemorySource(records=[{"n": 1, "tags": []}])
    row = next(source.each())
    row["tags"].append("changed")
    assert source.option("records") == [{"n": 1, "tags": []}]
    assert MemorySplit.from_dict(MemorySplit("memory-0", 2, 0, 1).to_dict()).position == 2


def test_sink_appends_per_name_and_setup_empties_unless_resuming() -> None:
    sink = MemorySink(name="out")
    sink.write_batch([{"a": 1}])
    sink.write_batch([{"a": 2}])
    other = MemorySink()
    other.write({"b": 1})
    assert MemorySink.get("out") == [{"a": 1}, {"a": 2}]
    assert MemorySink.get() == [{"b": 1}] and MemorySink.stores["default"] == [{"b": 1}]

    sink.run_context = RunContext(resuming=True)
    sink.setup()
    assert len(MemorySink.get("out")) == 2
    sink.run_context = RunContext()
    sink.setup()
    assert MemorySink.get("out") == [] and MemorySink.get("never") == []


def test_bad_configuration_is_reported() -> None:
    with pytest.raises(ConfigError) as info:
        MemorySource(records=[1, {"a": 1}], splits=0)
    assert len(info.value.problems) == 2
