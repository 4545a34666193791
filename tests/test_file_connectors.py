"""File source / sink and stdout sink on real files: globs, byte-range splits, resume, watch, appends."""

from __future__ import annotations

import csv
import io
import itertools
import json
import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from core.connectors.base import RunContext
from core.connectors.file import FileSink, FileSource, FileSplit, NoFilesError, parse_size
from core.connectors.stdout import StdoutSink
from core.errors import ConfigError
from core.splits import DeadLetter, ReaderStatus, SourceReaderContext, Split, SplitEnumeratorContext


class _ReaderCtx(SourceReaderContext):
    def __init__(self) -> None:
        self.requests = 0

    @property
    def reader_id(self) -> int:
        return 0

    def send_split_request(self) -> None:
        self.requests += 1


class _EnumCtx(SplitEnumeratorContext):
    def __init__(self) -> None:
        self.assigned: list[Split] = []
        self.no_more: list[int] = []

    @property
    def parallelism(self) -> int:
        return 1

    def registered_readers(self) -> list[int]:
        return [0]

    def assign_split(self, split: Split, reader_id: int) -> None:
        self.assigned.append(split)

    def signal_no_more_splits(self, reader_id: int) -> None:
        self.no_more.append(reader_id)


def _splits(source: FileSource) -> list[FileSplit]:
    ctx = _EnumCtx()
    enum = source.create_enumerator(ctx)
    enum.start()
    out = enum.snapshot_state()["pending"]
    return [FileSplit.from_dict(d) for d in out]  # type: ignore[misc]


def _read(
    source: FileSource, splits: Sequence[Split], batch: int = 100
) -> tuple[list[dict[str, Any]], list[DeadLetter]]:
    reader = source.create_reader(_ReaderCtx())
    reader.start()
    # readers move ``split.position`` forward: give this one copies
    reader.add_splits([source.split_from_dict(s.to_dict()) for s in splits])
    reader.notify_no_more_splits()
    records: list[dict[str, Any]] = []
    dead: list[DeadLetter] = []
    try:
        for _ in range(100_000):
            b = reader.poll_batch(batch)
            records += b.records
            dead += b.dead_letters
            if b.status is ReaderStatus.END_OF_INPUT:
                return records, dead
        raise AssertionError("reader never ended")
    finally:
        reader.close()


def _write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(rows)


def _big_csv_rows(n: int) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        note = f'note {i}, with "quotes"\nand\nnew lines' if i % 5 == 0 else f"n{i}"
        rows.append({"id": str(i), "name": f"name,{i}", "note": note})
    return rows


# --------------------------------------------------------------------------- source


def test_each_reads_csv_json_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b'\xef\xbb\xbfid,name\n1,"x, y"\n2,"multi\nline"\n')
    (tmp_path / "b.json").write_text('[{"id": 1}, {"id": 2}]')
    (tmp_path / "c.jsonl").write_text('{"id": 1}\n\n{"id": 2}\n')
    assert list(FileSource(path=str(tmp_path / "a.csv")).each()) == [
        {"id": "1", "name": "x, y"},
        {"id": "2", "name": "multi\nline"},
    ]
    assert list(FileSource(path=str(tmp_path / "b.json")).each(batch_size=1)) == [{"id": 1}, {"id": 2}]
    assert list(FileSource(path=str(tmp_path / "c.jsonl")).each()) == [{"id": 1}, {"id": 2}]


def test_glob_several_files_sorted_recursive_and_lists(tmp_path: Path) -> None:
    for rel in ["b/2.jsonl", "a/1.jsonl", "a/deep/3.jsonl", "top.jsonl", "a/skip.csv"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"f": rel}) + "\n")
    src = FileSource(path=str(tmp_path / "**" / "*.jsonl"))
    assert [r["f"] for r in src.each()] == ["a/1.jsonl", "a/deep/3.jsonl", "b/2.jsonl", "top.jsonl"]
    src = FileSource(path=[str(tmp_path / "b" / "*.jsonl"), str(tmp_path / "a" / "*.jsonl"), str(tmp_path / "b/2.jsonl")])
    assert [r["f"] for r in src.each()] == ["b/2.jsonl", "a/1.jsonl"]


def test_no_matching_file_is_a_clear_error(tmp_path: Path) -> None:
    pattern = str(tmp_path / "nothing" / "*.csv")
    with pytest.raises(NoFilesError, match=r"no files match '.*nothing/\*\.csv'") as info:
        list(FileSource(path=pattern).each())
    assert isinstance(info.value, ConfigError)
    assert info.value.patterns == [pattern]


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"cannot tell the format of 'data\.txt'"):
        FileSource(path="data.txt")
    with pytest.raises(ConfigError, match="'columns' is required when 'header' is false"):
        FileSource(path="x.csv", header=False)
    with pytest.raises(ConfigError, match="split_bytes"):
        FileSource(path="x.csv", split_bytes="lots")
    with pytest.raises(ConfigError, match="format"):
        FileSource(path="x.csv", format="xml")
    FileSource(path="data/*", format="csv", columns=["a"], header=False)
    assert parse_size("64MB") == 64 << 20
    assert parse_size("1.5k") == 1536
    assert parse_size(1000) == 1000


def test_unknown_extension_from_a_wildcard_glob_fails_at_discovery(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hello\n")
    with pytest.raises(ConfigError, match=r"x\.txt"):
        list(FileSource(path=str(tmp_path / "*")).each())


def test_csv_header_false_with_columns_and_tsv(tmp_path: Path) -> None:
    (tmp_path / "a.tsv").write_text("id\tname\n1\tx, y\n")
    (tmp_path / "b.csv").write_text("1,a\n2,b\n")
    assert list(FileSource(path=str(tmp_path / "a.tsv")).each()) == [{"id": "1", "name": "x, y"}]
    assert list(FileSource(path=str(tmp_path / "b.csv"), header=False, columns=["id", "v"]).each()) == [
        {"id": "1", "v": "a"},
        {"id": "2", "v": "b"},
    ]


def test_byte_range_splits_of_a_big_csv_read_back_exactly_once(tmp_path: Path) -> None:
    rows = _big_csv_rows(3000)
    p = tmp_path / "big.csv"
    _write_csv(p, rows, ["id", "name", "note"])
    size = p.stat().st_size
    whole = FileSource(path=str(p))
    ranged = FileSource(path=str(p), split_bytes=4096)
    splits = _splits(ranged)
    assert len(splits) > 20
    assert splits[0].start == 0 and splits[-1].end == size
    assert all(a.end == b.start for a, b in itertools.pairwise(splits))
    data = p.read_bytes()
    for s in splits:
        assert data[: s.start].count(b'"') % 2 == 0
        assert data[: s.start].count(b"\n") + 1 == s.start_line
    assert ranged.total_work(splits) == size
    one, dead1 = _read(whole, _splits(whole), batch=97)
    assert one == rows and dead1 == []
    # every split read on its own, then concatenated in split order
    got: list[dict[str, Any]] = []
    for s in splits:
        part, dead = _read(ranged, [s], batch=50)
        assert dead == []
        got += part
    assert got == rows
    assert list(ranged.each(batch_size=333)) == rows


def test_byte_range_splits_of_a_big_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "big.jsonl"
    records = [{"i": i, "s": "x" * (i % 50), "q": 'a "quoted" \\ thing'} for i in range(5000)]
    p.write_text("".join(json.dumps(r) + "\n" for r in records))
    src = FileSource(path=str(p), split_bytes="16K")
    splits = _splits(src)
    assert len(splits) > 10
    got: list[dict[str, Any]] = []
    for s in splits:
        got += _read(src, [s], batch=128)[0]
    assert got == records
    assert _read(FileSource(path=str(p)), _splits(FileSource(path=str(p))))[0] == records


def test_dead_letters_in_a_later_byte_range_split_have_file_line_numbers(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    lines = [json.dumps({"i": i}) for i in range(2000)]
    lines[1500] = '{"i": 1500,,}'
    lines[1700] = '"just a string"'
    p.write_text("\n".join(lines) + "\n")
    src = FileSource(path=str(p), split_bytes=2048)
    splits = _splits(src)
    assert len(splits) > 3
    for s in splits:
        _, dead = _read(src, [s], batch=64)
        for d in dead:
            assert s.start_line <= d.origin["line"]
    all_dead = [d for s in splits for d in _read(src, [s], batch=64)[1]]
    assert [(d.origin, d.reason) for d in all_dead] == [
        ({"file": str(p), "line": 1501}, "invalid JSON: Expecting property name enclosed in double quotes at column 12"),
        ({"file": str(p), "line": 1701}, "JSON line is not an object (got string)"),
    ]
    # CSV: the same in a later split
    c = tmp_path / "bad.csv"
    rows = _big_csv_rows(1000)
    _write_csv(c, rows, ["id", "name", "note"])
    with c.open("a") as f:
        f.write('1000,"a","b",EXTRA\n1001,x,y\n')
    text = c.read_bytes()
    bad_line = text.count(b"\n") - 1
    src = FileSource(path=str(c), split_bytes=4096)
    splits = _splits(src)
    last = splits[-1]
    assert last.start > 0
    recs, dead = _read(src, [last], batch=10)
    assert recs[-1] == {"id": "1001", "name": "x", "note": "y"}
    assert [(d.origin, d.reason) for d in dead] == [({"file": str(c), "line": bad_line}, "CSV row has 4 fields, header has 3")]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
def test_resume_from_a_snapshot_mid_split(tmp_path: Path, fmt: str) -> None:
    rows = _big_csv_rows(400)
    p = tmp_path / f"data.{fmt}"
    if fmt == "csv":
        _write_csv(p, rows, ["id", "name", "note"])
    elif fmt == "jsonl":
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        p.write_text(json.dumps(rows, indent=1))
    src = FileSource(path=str(p))
    ctx = _ReaderCtx()
    reader = src.create_reader(ctx)
    reader.start()
    reader.add_splits(_splits(src))
    got: list[dict[str, Any]] = []
    for _ in range(3):
        got += reader.poll_batch(37).records
    snapshot = json.loads(json.dumps([s.to_dict() for s in reader.snapshot_state()]))
    reader.close()
    assert len(got) == 111 and got == rows[:111]
    assert snapshot[0]["position"] is not None
    rest, dead = _read(src, [src.split_from_dict(d) for d in snapshot], batch=50)
    assert dead == []
    assert got + rest == rows


def test_resume_inside_a_later_csv_range_split(tmp_path: Path) -> None:
    rows = _big_csv_rows(1000)
    p = tmp_path / "big.csv"
    _write_csv(p, rows, ["id", "name", "note"])
    src = FileSource(path=str(p), split_bytes=8192)
    split = _splits(src)[2]
    expected, _ = _read(src, [split], batch=1000)
    reader = src.create_reader(_ReaderCtx())
    reader.add_splits([src.split_from_dict(split.to_dict())])
    first = reader.poll_batch(5).records
    snap = [s.to_dict() for s in reader.snapshot_state()]
    reader.close()
    rest, _ = _read(src, [src.split_from_dict(d) for d in snap])
    assert first + rest == expected


def test_watch_discovers_files_added_later(tmp_path: Path) -> None:
    (tmp_path / "1.jsonl").write_text('{"n": 1}\n')
    src = FileSource(path=str(tmp_path / "*.jsonl"), watch=True)
    assert src.boundedness.value == "unbounded"
    ctx = _EnumCtx()
    enum = src.create_enumerator(ctx)
    enum.start()
    enum.handle_split_request(0)
    enum.handle_split_request(0)  # nothing left: an unbounded source waits, it does not end
    assert [s.split_id for s in ctx.assigned] == [str(tmp_path / "1.jsonl")] and ctx.no_more == []
    (tmp_path / "2.jsonl").write_text('{"n": 2}\n')
    enum.discover()
    enum.discover()
    enum.handle_split_request(0)
    enum.handle_split_request(0)
    assert [s.split_id for s in ctx.assigned] == [str(tmp_path / "1.jsonl"), str(tmp_path / "2.jsonl")]
    recs, _ = _read(src, ctx.assigned)
    assert recs == [{"n": 1}, {"n": 2}]
    # a restored enumerator remembers what it saw
    enum2 = src.create_enumerator(ctx, json.loads(json.dumps(enum.snapshot_state())))
    enum2.start()
    enum2.discover()
    assert enum2.snapshot_state()["pending"] == []


def test_watch_with_no_file_yet_is_not_an_error(tmp_path: Path) -> None:
    src = FileSource(path=str(tmp_path / "*.jsonl"), watch=True)
    ctx = _EnumCtx()
    enum = src.create_enumerator(ctx)
    enum.start()
    (tmp_path / "late.jsonl").write_text('{"n": 1}\n')
    enum.discover()
    enum.handle_split_request(0)
    assert len(ctx.assigned) == 1


# --------------------------------------------------------------------------- sinks


def _sink(path: Path, resuming: bool = False, **cfg: Any) -> FileSink:
    sink = FileSink(path=str(path), **cfg)
    sink.run_context = RunContext(resuming=resuming, state_dir=str(path.parent / "state"))
    return sink


def _run_sink(sink: FileSink, batches: list[list[dict[str, Any]]], setup: bool = True) -> None:
    if setup:
        sink.setup()
    sink.open()
    for b in batches:
        sink.write_batch(b)
        sink.flush()
    sink.close()


def test_file_sink_jsonl_overwrite_append_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "out" / "o.jsonl"
    _run_sink(_sink(out), [[{"a": 1}], [{"a": 2}, {"a": 3}]])
    assert [json.loads(x) for x in out.read_text().splitlines()] == [{"a": 1}, {"a": 2}, {"a": 3}]
    _run_sink(_sink(out), [[{"a": 4}]])
    assert out.read_text() == '{"a":4}\n'
    _run_sink(_sink(out, mode="append"), [[{"a": 5}]])
    _run_sink(_sink(out, resuming=True), [[{"a": 6}]])
    assert [json.loads(x)["a"] for x in out.read_text().splitlines()] == [4, 5, 6]


def test_file_sink_csv_header_once(tmp_path: Path) -> None:
    out = tmp_path / "o.csv"
    _run_sink(_sink(out), [[{"id": 1, "name": "a, b"}], [{"id": 2, "name": "multi\nline"}]])
    _run_sink(_sink(out, mode="append"), [[{"name": "c", "id": 3}]])  # columns come from the header
    assert list(csv.DictReader(out.open(newline=""))) == [
        {"id": "1", "name": "a, b"},
        {"id": "2", "name": "multi\nline"},
        {"id": "3", "name": "c"},
    ]
    assert out.read_text().count("id,name") == 1
    with pytest.raises(ValueError, match="not CSV columns: extra"):
        _run_sink(_sink(out, mode="append"), [[{"id": 4, "extra": 1}]])
    # configured columns: header written at setup, even with no record
    out2 = tmp_path / "o2.csv"
    _run_sink(_sink(out2, columns=["x", "y"]), [])
    assert out2.read_bytes() == b"x,y\r\n"
    _run_sink(_sink(out2, columns=["x", "y"], resuming=True), [[{"y": 2, "x": 1}]])
    assert out2.read_bytes() == b"x,y\r\n1,2\r\n"


def test_file_sink_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set 'format' to jsonl or csv"):
        FileSink(path="out.json")
    with pytest.raises(ConfigError, match="mode"):
        FileSink(path="out.jsonl", mode="replace")
    assert FileSink(path="out.txt", format="csv").format == "csv"


def _append_worker(path: str, worker: int, batches: int, per_batch: int) -> None:
    sink = FileSink(path=path, mode="append")
    sink.open()
    for b in range(batches):
        sink.write_batch(
            [{"w": worker, "b": b, "i": i, "pad": "x" * (200 + (i * 37) % 3000)} for i in range(per_batch)]
        )
        sink.flush()
    sink.close()


def test_two_processes_append_batches_to_one_jsonl_file(tmp_path: Path) -> None:
    out = tmp_path / "shared.jsonl"
    _sink(out).setup()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_worker, args=(str(out), w, 40, 50)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b""
    recs = [json.loads(x) for x in lines[:-1]]  # every line is valid JSON
    assert sorted((r["w"], r["b"], r["i"]) for r in recs) == [
        (w, b, i) for w in range(2) for b in range(40) for i in range(50)
    ]
    # batches never interleave: each batch's 50 lines are contiguous
    for k in range(0, len(recs), 50):
        assert len({(r["w"], r["b"]) for r in recs[k : k + 50]}) == 1


def test_stdout_sink(capsys: pytest.CaptureFixture[str]) -> None:
    sink = StdoutSink()
    sink.write_batch([{"a": 1}, {"a": "é"}])
    sink.flush()
    assert [json.loads(x) for x in capsys.readouterr().out.splitlines()] == [{"a": 1}, {"a": "é"}]
    sink = StdoutSink(format="csv")
    sink.write_batch([{"a": 1, "b": "x,y"}])
    sink.write_batch([{"a": 2, "b": None}])
    sink.flush()
    assert list(csv.DictReader(io.StringIO(capsys.readouterr().out))) == [
        {"a": "1", "b": "x,y"},
        {"a": "2", "b": ""},
    ]


def test_file_sink_fsync_and_reopen(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    sink = _sink(out, fsync=True)
    sink.setup()
    sink.write_batch([{"a": 1}])  # opens on first write
    sink.flush()
    assert os.path.getsize(out) == len(b'{"a":1}\n')
    sink.close()
    sink.close()
