"""The sink on its own: its life cycle as the engine drives it, one call at a time."""

from __future__ import annotations

import datetime
import decimal
import json
from pathlib import Path

import pytest
from adf_example_plugin import PartsSink

from active_data_flow.context import RunContext
from active_data_flow.errors import RecordValidationError


def _sink(directory: Path, *, reader_id: int = 0, resuming: bool = False) -> PartsSink:
    sink = PartsSink(directory=str(directory))
    sink.run_context = RunContext(reader_id=reader_id, resuming=resuming)  # the engine sets it
    return sink


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_reader_writes_its_own_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _sink(out).setup()  # once per run, in the coordinator: creates the directory
    sink = _sink(out, reader_id=1)
    sink.open()
    assert sink.write_batch([{"id": 1}, {"id": 2, "name": "Ada"}]) == 2
    sink.flush()
    sink.write_batch([{"id": 3}])
    sink.flush()
    sink.close()
    assert sorted(p.name for p in out.iterdir()) == ["part-1.jsonl"]
    assert _lines(out / "part-1.jsonl") == [{"id": 1}, {"id": 2, "name": "Ada"}, {"id": 3}]
    assert sink.describe() == f"example_parts {out}/part-*.jsonl"


def test_setup_starts_a_new_run_afresh_but_keeps_what_a_resumed_run_wrote(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-0.jsonl").write_text('{"id": 1}\n')
    (out / "part-1.jsonl").write_text('{"id": 2}\n')
    (out / "notes.txt").write_text("not ours\n")

    _sink(out, resuming=True).setup()
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "part-0.jsonl", "part-1.jsonl"]
    sink = _sink(out, resuming=True)
    sink.open()
    sink.write_batch([{"id": 3}])
    sink.flush()
    sink.close()
    assert _lines(out / "part-0.jsonl") == [{"id": 1}, {"id": 3}]

    _sink(out).setup()
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_open_cuts_off_a_line_torn_by_a_killed_process(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-0.jsonl").write_text('{"id": 1}\n{"id": 2}\n{"id": 3, "na')  # killed in the middle of a write
    (out / "part-1.jsonl").write_text('{"id": 4')
    for reader_id in (0, 1):
        sink = _sink(out, reader_id=reader_id, resuming=True)
        sink.open()
        sink.write_batch([{"id": 3 if reader_id == 0 else 4}])  # the resumed run writes that batch again
        sink.flush()
        sink.close()
    assert _lines(out / "part-0.jsonl") == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert _lines(out / "part-1.jsonl") == [{"id": 4}]


def test_a_record_that_is_not_json_is_refused_and_nothing_of_its_batch_is_written(tmp_path: Path) -> None:
    sink = _sink(tmp_path)
    sink.open()
    with pytest.raises(RecordValidationError) as err:
        sink.write_batch([{"id": 1}, {"id": 2, "celsius": float("nan")}])
    assert err.value.field == "celsius"
    with pytest.raises(RecordValidationError, match="'blob'"):
        sink.write_batch([{"id": 3, "blob": b"\x00"}])
    sink.flush()
    assert (tmp_path / "part-0.jsonl").read_text() == ""

    # what a schema makes (decimals, dates) is written as text
    sink.write_batch([{"id": 4, "price": decimal.Decimal("9.50"), "day": datetime.date(2024, 5, 1)}])
    sink.flush()
    sink.close()
    assert _lines(tmp_path / "part-0.jsonl") == [{"id": 4, "price": "9.50", "day": "2024-05-01"}]
