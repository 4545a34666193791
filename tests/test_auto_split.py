"""The file source cuts files into byte ranges for a run's readers, or says why it cannot.

With ``parallelism`` > 1 and fewer files than readers, CSV and JSON Lines files become byte
ranges (``min_split_bytes`` is set down here so that small files are cut, ranges smaller than a
line included). Whatever the cut, every record is read exactly once, with the same dead-letter
positions as one reader reading the whole file.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from adf_runs import children, finish, start_run, wait_for_lines
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from active_data_flow.connectors.file import FileSource, FileSplit
from active_data_flow.connectors.file.source import AUTO_SPLIT_MIN_BYTES
from active_data_flow.engine import run_flow
from active_data_flow.source import CollectingEnumeratorContext, DetachedReaderContext, ReaderStatus

# text of fields and JSON strings: any character but surrogates, NUL and CR (a lone CR is a line end)
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=40)
LONG_TEXT = st.text(st.sampled_from("ab,\"\n é€😀"), min_size=200, max_size=1500)
FIELD = st.one_of(TEXT, TEXT, TEXT, LONG_TEXT)


def plan(source: FileSource, parallelism: int) -> list[FileSplit]:
    """The splits the source's enumerator hands out to a run of ``parallelism`` readers."""
    ctx = CollectingEnumeratorContext(parallelism)
    enumerator = source.create_enumerator(ctx)
    enumerator.start()
    while len(ctx.done) < parallelism:
        for reader_id in range(parallelism):
            enumerator.handle_split_request(reader_id)
    return [s for s in ctx.assigned if isinstance(s, FileSplit)]


def read_all(source: FileSource, splits: list[FileSplit]) -> tuple[list[Any], list[dict[str, Any]]]:
    """Every record and every dead letter's origin, each split read by a reader of its own."""
    records: list[Any] = []
    dead: list[dict[str, Any]] = []
    for split in splits:
        reader = source.create_reader(DetachedReaderContext())
        reader.add_splits([split])
        reader.notify_no_more_splits()
        reader.start()
        while True:
            batch = reader.poll_batch(7)
            records.extend(dict(r) for r in batch.records)
            dead.extend(dict(d.origin) for d in batch.dead_letters)
            if batch.status is ReaderStatus.END_OF_INPUT:
                break
        reader.close()
    return records, dead


def canonical(items: list[Any]) -> Counter[str]:
    return Counter(json.dumps(i, sort_keys=True, ensure_ascii=False) for i in items)


def check_every_cut(path: Path, expected: list[Any], dead_lines: list[int] | None = None, **config: Any) -> None:
    """At parallelism 1 to 4 the records read are ``expected``, each once, and dead letters keep their lines."""
    whole = FileSource(path=str(path), **config)
    one = plan(whole, 1)
    assert len(one) == 1
    records_1, dead_1 = read_all(whole, one)
    assert canonical(records_1) == canonical(expected)
    if dead_lines is not None:
        assert sorted(d["line"] for d in dead_1) == dead_lines
    for parallelism in (2, 3, 4):
        source = FileSource(path=str(path), **config)
        splits = plan(source, parallelism)
        records, dead = read_all(source, splits)
        assert canonical(records) == canonical(records_1), f"parallelism {parallelism}: {len(splits)} splits"
        assert canonical(dead) == canonical(dead_1), f"parallelism {parallelism}: dead-letter positions moved"
        ranges = sorted((s.start, s.end if s.end is not None else path.stat().st_size) for s in splits)
        assert ranges[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, list[dict[str, str]]]:
    columns = ["id", *draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=3, unique=True))]
    rows = [
        {"id": str(i), **{c: draw(FIELD) for c in columns[1:]}}
        for i in range(draw(st.integers(0, 40)))
    ]
    out = io.StringIO()
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    writer = csv.DictWriter(out, columns, lineterminator=draw(st.sampled_from(["\n", "\r\n"])), quoting=quoting)
    writer.writeheader()
    writer.writerows(rows)
    text = out.getvalue()
    if draw(st.booleans()):  # a file not ending in a line end
        text = text.rstrip("\r\n")
    data = text.encode("utf-8")
    if draw(st.booleans()):
        data = codecs.BOM_UTF8 + data
    return data, rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=csv_files(), min_bytes=st.integers(1, 300))
def test_csv_byte_ranges_read_every_record_once(tmp_path: Path, data: tuple[bytes, list[dict[str, str]]], min_bytes: int) -> None:
    raw, rows = data
    path = tmp_path / "in.csv"
    path.write_bytes(raw)
    check_every_cut(path, rows, min_split_bytes=min_bytes)


@st.composite
def jsonl_files(draw: st.DrawFn) -> tuple[bytes, list[dict[str, Any]], list[int]]:
    records: list[dict[str, Any]] = []
    lines: list[str] = []
    bad: list[int] = []
    for i in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from(["record"] * 8 + ["blank", "malformed"]))
        if kind == "blank":
            lines.append("")
        elif kind == "malformed":
            lines.append('{"id": ' + str(i) + ', "broken": ')
            bad.append(len(lines))
        else:
            rec = {"id": i, "s": draw(FIELD)}
            records.append(rec)
            lines.append(json.dumps(rec, ensure_ascii=draw(st.booleans())))
    end = draw(st.sampled_from(["\n", "\r\n"]))
    text = end.join(lines) + (end if draw(st.booleans()) else "")
    data = text.encode("utf-8")
    if draw(st.booleans()):
        data = codecs.BOM_UTF8 + data
    return data, records, bad


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=jsonl_files(), min_bytes=st.integers(1, 300))
def test_jsonl_byte_ranges_read_every_record_once_and_dead_letters_keep_their_lines(
    tmp_path: Path, data: tuple[bytes, list[dict[str, Any]], list[int]], min_bytes: int
) -> None:
    raw, records, bad = data
    path = tmp_path / "in.jsonl"
    path.write_bytes(raw)
    check_every_cut(path, records, dead_lines=bad, min_split_bytes=min_bytes)


def write_jsonl(path: Path, n: int, pad: int = 50) -> Path:
    path.write_text("".join(json.dumps({"n": i, "pad": "x" * pad}) + "\n" for i in range(n)))
    return path


def test_one_big_file_is_cut_into_about_four_ranges_per_reader_of_at_least_the_minimum(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", 20_000)  # ~1.2 MB
    size = src.stat().st_size
    splits = plan(FileSource(path=str(src), min_split_bytes=size // 100), 2)
    assert len(splits) == 8
    assert all(s.end is not None and s.end - s.start >= size // 100 for s in splits)
    # the minimum wins over the count: ranges of at least a third of the file
    assert len(plan(FileSource(path=str(src), min_split_bytes=size // 3), 4)) == 3
    assert len(plan(FileSource(path=str(src)), 2)) == 1, f"a file below 2 x {AUTO_SPLIT_MIN_BYTES} stays whole"


def test_explicit_split_bytes_wins_and_auto_split_false_turns_the_cut_off(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", 5_000)
    size = src.stat().st_size
    assert len(plan(FileSource(path=str(src), split_bytes=size // 3 + 1, min_split_bytes=64), 4)) == 3
    assert len(plan(FileSource(path=str(src), auto_split=False, min_split_bytes=64), 4)) == 1
    assert len(plan(FileSource(path=str(src), min_split_bytes=64), 1)) == 1, "one reader: nothing to cut for"


def test_as_many_files_as_readers_are_not_cut(tmp_path: Path) -> None:
    for i in range(2):
        write_jsonl(tmp_path / f"in{i}.jsonl", 2_000)
    assert len(plan(FileSource(path=str(tmp_path / "*.jsonl"), min_split_bytes=64), 2)) == 2
    assert len(plan(FileSource(path=str(tmp_path / "*.jsonl"), min_split_bytes=64), 3)) > 3


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def warnings_logged() -> Any:
    handler = Collect()
    logger = logging.getLogger("adf.connectors.file")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize(
    ("name", "content", "config", "reason"),
    [
        ("in.json", json.dumps([{"n": i} for i in range(500)]), {}, "JSON array"),
        ("in.jsonl", "".join(f'{{"n": {i}}}\n' for i in range(500)), {}, "min_split_bytes"),
        ("in.jsonl", "".join(f'{{"n": {i}}}\n' for i in range(500)), {"auto_split": False, "min_split_bytes": 64},
         "auto_split is false"),
        ("in.jsonl", "".join(f'{{"n": {i}}}\n' for i in range(500)), {"split_bytes": "1MB"}, "split_bytes"),
        ("in.jsonl", json.dumps({"n": "x" * 5000}) + "\n", {"min_split_bytes": 64}, "too long"),
    ],
)
def test_a_run_that_cannot_give_every_reader_work_says_which_file_why_and_what_helps(
    tmp_path: Path, warnings_logged: list[logging.LogRecord], name: str, content: str, config: dict[str, Any], reason: str
) -> None:
    src = tmp_path / name
    src.write_text(content)
    source = FileSource(path=str(src), **config)
    ctx = CollectingEnumeratorContext(2)
    enumerator = source.create_enumerator(ctx)
    enumerator.start()
    assert len(warnings_logged) == 1
    fields = warnings_logged[0].fields  # type: ignore[attr-defined]
    assert fields["readers"] == 2 and fields["splits"] == 1
    [uncut] = fields["files"]
    assert uncut["file"] == str(src) and reason in uncut["reason"]


def test_a_utf16_file_is_not_cut_and_the_warning_says_so(tmp_path: Path, warnings_logged: list[logging.LogRecord]) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes("".join(f'{{"n": {i}}}\n' for i in range(500)).encode("utf-16"))
    assert len(plan(FileSource(path=str(src), min_split_bytes=64), 2)) == 1
    assert "UTF-16/32" in warnings_logged[0].fields["files"][0]["reason"]  # type: ignore[attr-defined]


def test_enough_splits_log_no_warning(tmp_path: Path, warnings_logged: list[logging.LogRecord]) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", 2_000)
    assert len(plan(FileSource(path=str(src), min_split_bytes=64), 2)) == 8
    assert warnings_logged == []


def test_the_run_summary_and_the_cli_say_why_a_reader_had_nothing_to_read(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(f'{{"n": {i}}}\n' for i in range(500)))
    spec = {"name": "idle", "source": {"type": "file", "path": str(src)},
            "sink": {"type": "file", "path": str(tmp_path / "out.jsonl")}, "runtime": {"parallelism": 2}}
    summary = run_flow(spec, state_dir=str(tmp_path / "state"))
    assert summary.status == "success" and summary.records_out == 500
    [warning] = summary.to_dict()["warnings"]
    assert "1 reader(s) will have nothing to read" in warning["message"]
    [uncut] = warning["files"]
    assert uncut["file"] == str(src) and "min_split_bytes" in uncut["reason"]
    spec_path = tmp_path / "flow.json"
    spec_path.write_text(json.dumps(spec))
    shown = subprocess.run([sys.executable, "-m", "active_data_flow.cli", "run", str(spec_path), "--state-dir",
                            str(tmp_path / "state2")], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "warning: 1 split(s) for 2 readers: 1 reader(s) will have nothing to read" in shown.stdout


def test_enough_splits_leave_the_summary_without_warnings(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", 2_000)
    spec = {"name": "busy", "source": {"type": "file", "path": str(src), "min_split_bytes": 64},
            "sink": {"type": "file", "path": str(tmp_path / "out.jsonl")}, "runtime": {"parallelism": 2}}
    summary = run_flow(spec, state_dir=str(tmp_path / "state"))
    assert summary.status == "success" and summary.records_out == 2_000 and summary.warnings == []


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_run_at_parallelism_two_reads_one_file_in_ranges_and_writes_every_record_once(tmp_path: Path, fmt: str) -> None:
    n = 6_000
    src = tmp_path / f"in.{fmt}"
    if fmt == "jsonl":
        write_jsonl(src, n)
    else:
        src.write_text("n,note\r\n" + "".join(f'{i},"line one\nline, two ""{i}"""\r\n' for i in range(n)))
    out = tmp_path / "out.jsonl"
    spec = {
        "name": "auto_split",
        "source": {"type": "file", "path": str(src), "min_split_bytes": 4096},
        "steps": [],
        "sink": {"type": "file", "path": str(out)},
        "runtime": {"batch_size": 200, "parallelism": 2},
    }
    summary = run_flow(spec, state_dir=str(tmp_path / "state"), resume=False)
    assert summary.status == "success", summary.error
    assert summary.splits == 8
    counts = Counter(int(json.loads(line)["n"]) for line in out.read_text().splitlines())
    assert counts == Counter(range(n))
    if fmt == "csv":
        assert {json.loads(line)["note"] for line in out.read_text().splitlines()[:3]} <= {
            f'line one\nline, two "{i}"' for i in range(n)
        }


@pytest.mark.slow
def test_a_killed_reader_of_an_automatically_cut_file_loses_nothing(tmp_path: Path) -> None:
    n, batch = 12_000, 100
    src = write_jsonl(tmp_path / "in.jsonl", n)
    out = tmp_path / "out.jsonl"
    spec = tmp_path / "flow.json"
    spec.write_text(json.dumps({
        "name": "auto_crashy",
        "source": {"type": "file", "path": str(src), "min_split_bytes": 60_000},
        "steps": [{"type": "python", "function": "flowlib.steps:slow", "options": {"delay": 0.0004}}],
        "sink": {"type": "file", "path": str(out)},
        "runtime": {"batch_size": batch, "parallelism": 2},
    }))
    proc = start_run(spec, tmp_path / "state")
    wait_for_lines(out, 1500)
    readers = children(proc.pid)
    assert len(readers) >= 2, readers
    os.kill(readers[0], signal.SIGKILL)
    summary = finish(proc)
    assert summary["status"] == "success" and summary["reader_restarts"] == 1
    assert summary["splits"] > 2, "the file was cut"
    counts = Counter(json.loads(line)["n"] for line in out.read_text().splitlines() if line.strip())
    assert set(counts) == set(range(n)), "records lost"
    assert sum(c - 1 for c in counts.values()) <= batch, "more duplicates than the killed reader's batch"


@pytest.mark.slow
def test_a_killed_run_with_cut_ranges_resumes_without_loss(tmp_path: Path) -> None:
    n, batch = 12_000, 100
    src = write_jsonl(tmp_path / "in.jsonl", n)
    out = tmp_path / "out.jsonl"
    state = tmp_path / "state"
    spec = tmp_path / "flow.json"
    spec.write_text(json.dumps({
        "name": "auto_crashy",
        "source": {"type": "file", "path": str(src), "min_split_bytes": 60_000},
        "steps": [{"type": "python", "function": "flowlib.steps:slow", "options": {"delay": 0.0004}}],
        "sink": {"type": "file", "path": str(out)},
        "runtime": {"batch_size": batch, "parallelism": 2},
    }))
    proc = start_run(spec, state)
    wait_for_lines(out, 3000)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    summary = finish(start_run(spec, state))
    assert summary["status"] == "success" and summary["resumed"] is True
    counts = Counter(json.loads(line)["n"] for line in out.read_text().splitlines() if line.strip())
    assert set(counts) == set(range(n)), "records lost"
    assert sum(c - 1 for c in counts.values()) <= batch * 2
    assert summary["records_in"] < n
