"""The source and the sink in real runs of the engine: what arrives, the counts, a resumed run.

Two sinks here are the plugin's sink with a test hook, registered for these tests only: one
stops the run after some records (a crash, as far as the run can tell), one holds each reader
after its first batch until every reader has written one (so a test can tell that the files
were shared out between the readers).
"""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path
from typing import Any

import pytest
from adf_example_plugin import PartsSink

from active_data_flow.attributes import Attribute
from active_data_flow.engine import run_flow
from active_data_flow.errors import AdfError
from active_data_flow.record import Record
from active_data_flow.registry import register


@register("sink", "example_parts_crashing")
class CrashingPartsSink(PartsSink):
    """Raises in ``flush()`` once a reader wrote ``crash_after`` records, while ``while_exists`` exists.

    The batch is in the file by then but not checkpointed: a resumed run writes it again.
    """

    attributes = (
        *PartsSink.attributes,
        Attribute("crash_after", int, required=True),
        Attribute("while_exists", str, required=True),
    )
    written = 0

    def write_batch(self, records: Any) -> int:
        self.written += len(records)
        return super().write_batch(records)

    def flush(self) -> None:
        super().flush()
        if self.written >= self.config["crash_after"] and os.path.exists(self.config["while_exists"]):
            raise RuntimeError(f"simulated crash after {self.written} records")


@register("sink", "example_parts_all_readers")
class AllReadersPartsSink(PartsSink):
    """After its first batch, a reader waits until every reader's part file has a line in it."""

    waited = False

    def flush(self) -> None:
        super().flush()
        if self.waited:
            return
        self.waited = True
        parts = [os.path.join(self.directory, f"part-{i}.jsonl") for i in range(self.run_context.parallelism)]
        deadline = time.monotonic() + 30
        while not all(os.path.exists(p) and os.path.getsize(p) for p in parts):
            if time.monotonic() > deadline:
                raise AdfError(f"reader {self.run_context.reader_id}: not every reader wrote within 30 s")
            time.sleep(0.01)


def _flow(data: Path, out: Path, *, parallelism: int, batch_size: int = 7, **extra: Any) -> dict[str, Any]:
    return {
        "name": "readings",
        "source": {"type": "example_lines", "path": str(data)},
        "sink": {"type": "example_parts", "directory": str(out)},
        "runtime": {"batch_size": batch_size, "parallelism": parallelism},
        **extra,
    }


def _adds_up(summary: Any) -> bool:
    return summary.records_in + summary.fanned_out == (
        summary.records_out + summary.filtered + summary.dead_letters + summary.in_flight)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_every_record_arrives_once(tmp_path: Path, state_dir: str, write_readings, read_parts, parallelism: int) -> None:
    ids = write_readings(tmp_path / "in", 5, 23)
    summary = run_flow(_flow(tmp_path / "in", tmp_path / "out", parallelism=parallelism), state_dir=state_dir)

    assert summary.status == "success", summary.error
    assert (summary.records_in, summary.records_out, summary.dead_letters, summary.splits) == (115, 115, 0, 5)
    assert _adds_up(summary)
    assert sorted(int(r["id"]) for r in read_parts(tmp_path / "out")) == ids
    assert summary.sink == f"example_parts {tmp_path / 'out'}/part-*.jsonl"


def test_two_readers_share_the_files(tmp_path: Path, state_dir: str, write_readings, read_parts) -> None:
    ids = write_readings(tmp_path / "in", 6, 10)
    flow = _flow(tmp_path / "in", tmp_path / "out", parallelism=2, batch_size=5)
    flow["sink"]["type"] = "example_parts_all_readers"
    summary = run_flow(flow, state_dir=state_dir)

    assert summary.status == "success", summary.error
    parts = {p.name: p.read_text().splitlines() for p in (tmp_path / "out").glob("part-*.jsonl")}
    assert sorted(parts) == ["part-0.jsonl", "part-1.jsonl"] and all(parts.values())
    assert sorted(int(r["id"]) for r in read_parts(tmp_path / "out")) == ids


def test_bad_lines_and_refused_records_are_dead_letters_and_the_counts_add_up(
    tmp_path: Path, state_dir: str, write_readings, read_parts,
) -> None:
    ids = write_readings(tmp_path / "in", 2, 10)
    with open(tmp_path / "in" / "readings-01.txt", "a", encoding="utf-8") as f:
        f.write('id=21 sensor="unclosed\n')             # line 12: the source cannot parse it
        f.write("id=22 celsius=warm\n")                 # line 13: the schema refuses it
        f.write("id=23 celsius=-40.0\n")                # line 14: the filter drops it
    flow = _flow(tmp_path / "in", tmp_path / "out", parallelism=1,
                 schema={"id": "integer", "celsius": {"type": "number", "required": False}},
                 steps=[{"type": "filter", "field": "celsius", "op": "gt", "value": -30}],
                 dead_letter={"type": "example_parts", "directory": str(tmp_path / "dead")})
    summary = run_flow(flow, state_dir=state_dir)

    assert summary.status == "partial"
    assert (summary.records_in, summary.records_out, summary.filtered, summary.dead_letters) == (23, 20, 1, 2)
    assert _adds_up(summary)
    assert sorted(r["id"] for r in read_parts(tmp_path / "out")) == ids  # typed by the schema
    letters = {r["record"]["id"] if isinstance(r["record"], dict) else "?": r for r in read_parts(tmp_path / "dead")}
    path = str(tmp_path / "in" / "readings-01.txt")
    assert letters["?"]["stage"] == "source" and letters["?"]["record"] == 'id=21 sensor="unclosed'
    assert letters["?"]["origin"]["file"] == path and letters["?"]["origin"]["line"] == 12
    assert (letters["22"]["stage"], letters["22"]["step"]) == ("step", "schema")
    assert letters["22"]["origin"] == {"file": path, "line": 13}  # where the source said the record came from


def _counted(records: list[Record]) -> collections.Counter[int]:
    return collections.Counter(int(r["id"]) for r in records)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_stopped_run_resumes_where_it_stopped_and_loses_nothing(
    tmp_path: Path, state_dir: str, write_readings, read_parts, parallelism: int,
) -> None:
    ids = write_readings(tmp_path / "in", 4, 30)
    marker = tmp_path / "crash"
    marker.touch()
    flow = _flow(tmp_path / "in", tmp_path / "out", parallelism=parallelism, batch_size=7)
    flow["sink"] = {**flow["sink"], "type": "example_parts_crashing", "crash_after": 20, "while_exists": str(marker)}
    flow["runtime"]["sink_error_policy"] = "fail"  # a sink error stops the run (default: dead letters)

    first = run_flow(flow, state_dir=state_dir)
    assert first.status == "failed" and "simulated crash" in (first.error or "")
    assert _adds_up(first) and first.in_flight > 0
    written_before = _counted(read_parts(tmp_path / "out"))
    assert 0 < sum(written_before.values()) < len(ids)

    marker.unlink()
    second = run_flow(flow, state_dir=state_dir)  # the same flow and state directory: it resumes
    assert second.status == "success", second.error
    assert second.resumed and _adds_up(second)
    assert second.records_in < len(ids)  # it did not start over

    counted = _counted(read_parts(tmp_path / "out"))
    assert sorted(counted) == ids  # nothing lost
    assert all(counted[i] >= written_before[i] for i in written_before)  # the setup of a resumed run truncates nothing
    # at-least-once: only a batch written but not yet checkpointed is written again, one per reader at most
    duplicates = sum(n - 1 for n in counted.values())
    assert duplicates <= 7 * parallelism
    if parallelism == 1:
        # one reader: the first run committed all but the batch it was writing, the second read the rest
        assert first.records_in - first.in_flight + second.records_in == len(ids)
        assert duplicates == first.in_flight


def test_the_entry_points_name_the_plugin_classes() -> None:
    from importlib.metadata import entry_points

    from adf_example_plugin import LinesSource

    from active_data_flow.registry import registry

    sources = {ep.name: ep for ep in entry_points(group="active_data_flow.sources")}
    sinks = {ep.name: ep for ep in entry_points(group="active_data_flow.sinks")}
    assert sources["example_lines"].load() is LinesSource, "install the plugin first: pip install -e examples/plugin"
    assert sinks["example_parts"].load() is PartsSink
    assert registry.resolve("source", "example_lines") is LinesSource
    assert registry.origin("sink", "example_parts") == "entry point active_data_flow.sinks (adf-example-plugin)"
