"""The ``payload`` source and the ``response`` sink (active_data_flow.connectors.memory), through the engine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from active_data_flow.connectors.memory import PayloadSource, ResponseSink
from active_data_flow.context import RunContext
from active_data_flow.engine import run_flow
from active_data_flow.errors import ConfigError
from active_data_flow.registry import registry


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    ResponseSink.clear()
    yield
    ResponseSink.clear()


def test_both_types_are_registered_builtins() -> None:
    assert registry.resolve("source", "payload") is PayloadSource
    assert registry.resolve("sink", "response") is ResponseSink
    assert registry.origin("source", "payload") == "builtin"


def test_payload_records_run_and_non_objects_become_dead_letters_with_the_reason() -> None:
    items = [{"n": 1}, 7, "text", None, [1], {"n": 2}, {"n": 3}]
    summary = run_flow(
        {"name": "payload_probe", "source": {"type": "payload", "records": items},
         "sink": {"type": "response"}, "runtime": {"batch_size": 2}},
        persist=False, run_id="r-payload",
    )
    assert summary.status == "partial"
    assert (summary.records_in, summary.records_out, summary.dead_letters) == (7, 3, 4)
    kept = ResponseSink.pop("r-payload")
    assert kept is not None and kept.records == [{"n": 1}, {"n": 2}, {"n": 3}]
    letters = {d["origin"]["payload_index"]: d for d in summary.dead_letter_sample or []}
    assert sorted(letters) == [1, 2, 3, 4]
    assert letters[1]["reason"] == "payload record 1 is a number, not a JSON object"
    assert letters[2]["reason"] == "payload record 2 is a string, not a JSON object"
    assert letters[3]["reason"] == "payload record 3 is null, not a JSON object"
    assert letters[4]["reason"] == "payload record 4 is an array, not a JSON object"
    assert all(d["stage"] == "source" and d["error_type"] == "TypeError" for d in letters.values())
    assert letters[2]["record"] == "text"


def test_payload_records_default_to_none_and_must_be_a_list() -> None:
    summary = run_flow({"name": "payload_empty", "source": {"type": "payload"}, "sink": {"type": "response"}},
                       persist=False, run_id="r-empty")
    assert (summary.status, summary.records_in) == ("success", 0)
    kept = ResponseSink.pop("r-empty")
    assert kept is not None and kept.records == [] and kept.total == 0
    with pytest.raises(ConfigError, match="records"):
        PayloadSource(records={"n": 1})


def test_a_step_mutating_a_record_leaves_the_payload_as_given() -> None:
    items = [{"n": 1}]
    source = PayloadSource(records=items)
    for record in source.each():
        record["n"] = 99
    assert items == [{"n": 1}]


def test_response_sink_keeps_at_most_limit_records_and_counts_the_rest() -> None:
    summary = run_flow(
        {"name": "resp_limit", "source": {"type": "memory", "records": [{"i": i} for i in range(10)]},
         "sink": {"type": "response", "limit": 3}, "runtime": {"batch_size": 4}},
        persist=False, run_id="r-limit",
    )
    assert summary.records_out == 10
    kept = ResponseSink.pop("r-limit")
    assert kept is not None
    assert kept.records == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert (kept.total, kept.limit, kept.truncated) == (10, 3, True)
    assert ResponseSink.pop("r-limit") is None  # popped: gone


def test_response_sink_runs_are_kept_apart_and_the_oldest_is_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ResponseSink, "max_runs", 2)
    for run_id in ("a", "b", "c"):
        sink = ResponseSink({"limit": 5})
        sink.run_context = RunContext(run_id=run_id)
        sink.setup()
        sink.write_batch([{"run": run_id}])
    assert ResponseSink.peek("a") is None
    b, c = ResponseSink.pop("b"), ResponseSink.pop("c")
    assert b is not None and b.records == [{"run": "b"}]
    assert c is not None and c.records == [{"run": "c"}]


def test_response_sink_setup_resets_a_new_run_but_not_a_resumed_one() -> None:
    sink = ResponseSink({})
    sink.run_context = RunContext(run_id="x")
    sink.setup()
    sink.write_batch([{"a": 1}])
    resumed = ResponseSink({})
    resumed.run_context = RunContext(run_id="x", resuming=True)
    resumed.setup()
    resumed.write_batch([{"a": 2}])
    kept = ResponseSink.peek("x")
    assert kept is not None and kept.records == [{"a": 1}, {"a": 2}]
    fresh = ResponseSink({})
    fresh.run_context = RunContext(run_id="x")
    fresh.setup()
    kept = ResponseSink.peek("x")
    assert kept is not None and kept.records == [] and kept.total == 0


def test_response_limit_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match="must not be negative"):
        ResponseSink({"limit": -1})
