"""File source / sink and stdout sink on real files: globs, byte-range splits, resume, watch, appends,
malformed input (unterminated quotes, encodings, line ends, duplicate headers) through the engine."""

from __future__ import annotations

import codecs
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

from active_data_flow.connectors.file import (
    FileReadError,
    FileSink,
    FileSource,
    FileSplit,
    NoFilesError,
    parse_size,
)
from active_data_flow.connectors.stdout import StdoutSink
from active_data_flow.context import RunContext
from active_data_flow.engine import run_flow
from active_data_flow.errors import ConfigError, SourceDataError
from active_data_flow.record import DeadLetter
from active_data_flow.source import ReaderStatus, SourceReaderContext, Split, SplitEnumeratorContext


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
    text = p.read_bytes()
    assert [(d.origin, d.reason) for d in all_dead] == [
        ({"file": str(p), "line": 1501, "offset": text.index(b'{"i": 1500,,}')},
         "invalid JSON: Expecting property name enclosed in double quotes at column 12"),
        ({"file": str(p), "line": 1701, "offset": text.index(b'"just a string"')},
         "JSON line is not an object (got string)"),
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
    assert [(d.origin, d.reason) for d in dead] == [
        ({"file": str(c), "line": bad_line, "offset": text.index(b'1000,"a"')}, "CSV row has 4 fields, header has 3")
    ]


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


# --------------------------------------------------------------------------- malformed input


def _run(tmp_path: Path, source: dict[str, Any], name: str = "flow", **runtime: Any) -> tuple[Any, list[Any], list[Any]]:
    """Run ``source`` into a JSON Lines file through the engine: (summary, records out, dead letters)."""
    out = tmp_path / f"{name}.out.jsonl"
    spec: dict[str, Any] = {"name": name, "source": source, "sink": {"type": "file", "path": str(out)}}
    if runtime:
        spec["runtime"] = runtime
    summary = run_flow(spec, state_dir=str(tmp_path / "state"))
    records = [json.loads(x) for x in out.read_bytes().splitlines()] if out.exists() else []  # bytes: not on U+2028
    letters_path = Path(summary.dead_letter_destination or tmp_path / "none")
    letters = [json.loads(x) for x in letters_path.read_bytes().splitlines()] if letters_path.is_file() else []
    return summary, records, letters


def _unterminated_csv(path: Path) -> None:
    with path.open("w") as f:
        f.write("id,name,n\n")
        for i in range(100_000):
            f.write('50000,"unterminated,1\n' if i == 50_000 else f"{i},name{i},{i}\n")


@pytest.mark.parametrize("split_bytes", [None, 65536])
def test_an_unterminated_quote_loses_no_other_line_of_100000(tmp_path: Path, split_bytes: int | None) -> None:
    p = tmp_path / "in.csv"
    _unterminated_csv(p)
    source: dict[str, Any] = {"type": "file", "path": str(p), "format": "csv"}
    if split_bytes:
        source["split_bytes"] = split_bytes
    summary, records, letters = _run(tmp_path, source, batch_size=997)
    assert summary.status == "partial", summary.error
    assert sorted(int(r["id"]) for r in records) == [i for i in range(100_000) if i != 50_000]
    assert all(r == {"id": r["id"], "name": f"name{r['id']}", "n": r["id"]} for r in records)
    assert [(d["origin"], d["reason"], d["record"]) for d in letters] == [
        ({"file": str(p), "line": 50_002, "offset": p.read_bytes().index(b'50000,"')},
         "unterminated quoted field opened on line 50002", '50000,"unterminated,1')
    ]
    assert (summary.records_in, summary.records_out, summary.dead_letters) == (100_000, 99_999, 1)
    assert summary.records_in == summary.records_out + summary.dead_letters


def test_a_blob_over_the_csv_modules_limit_goes_through_the_engine_intact(tmp_path: Path) -> None:
    blob = json.dumps({"k": ["v" * 100] * 3000})
    p = tmp_path / "in.csv"
    _write_csv(p, [{"id": "1", "blob": blob}, {"id": "2", "blob": "x"}], ["id", "blob"])
    summary, records, letters = _run(tmp_path, {"type": "file", "path": str(p)})
    assert summary.status == "success" and letters == []
    assert records == [{"id": "1", "blob": blob}, {"id": "2", "blob": "x"}]


def test_a_field_longer_than_max_field_bytes_is_a_dead_letter_and_the_run_goes_on(tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    p.write_text('id,blob\n1,"' + "b" * 5000 + '"\n2,small\n')
    summary, records, letters = _run(tmp_path, {"type": "file", "path": str(p), "max_field_bytes": "1KB"})
    assert records == [{"id": "2", "blob": "small"}]
    assert [(d["origin"]["line"], d["reason"]) for d in letters] == [
        (2, "quoted field opened on line 2 is longer than max_field_bytes (1024 bytes)")
    ]
    assert summary.records_in == summary.records_out + summary.dead_letters == 2


def _snapshot_resume_everywhere(src: FileSource, batch: int) -> None:
    """After every batch, a reader restored from the snapshot reads exactly the rest."""
    splits = _splits(src)
    whole, whole_dead = _read(src, splits, batch=batch)
    reader = src.create_reader(_ReaderCtx())
    reader.start()
    reader.add_splits([src.split_from_dict(s.to_dict()) for s in splits])
    reader.notify_no_more_splits()
    got: list[dict[str, Any]] = []
    dead: list[DeadLetter] = []
    try:
        while True:
            b = reader.poll_batch(batch)
            got += b.records
            dead += b.dead_letters
            snap = [src.split_from_dict(json.loads(json.dumps(s.to_dict()))) for s in reader.snapshot_state()]
            rest, rest_dead = _read(src, snap, batch=batch + 3)
            assert got + rest == whole
            assert [d.origin for d in dead + rest_dead] == [d.origin for d in whole_dead]
            if b.status is ReaderStatus.END_OF_INPUT:
                break
    finally:
        reader.close()


def test_resume_from_any_checkpoint_past_an_unterminated_quote_is_exact(tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    lines = ["id,v"] + [f"{i},{'x' * (i % 9)}" for i in range(300)]
    lines[100] = '99,"opened here'
    lines[200] = '199,"quoted\nfine"'
    p.write_text("\n".join(lines) + "\n")
    for config in ({}, {"max_field_bytes": 200}, {"split_bytes": 500}, {"split_bytes": 500, "max_field_bytes": 200}):
        src = FileSource(path=str(p), **config)
        records, dead = _read(src, _splits(src))
        if "max_field_bytes" in config:  # no closing quote within 200 bytes: the field opened on line 101 is dropped
            assert len(records) == 299 and [d.origin["line"] for d in dead] == [101]
        else:  # within 64 MiB the quote on line 201 closes it, as in the csv module: one (odd) record
            assert len(records) == 200 and records[99]["v"].startswith("opened here\n100,")
        _snapshot_resume_everywhere(src, batch=17)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-8"])
def test_a_file_with_a_byte_order_mark_reads_and_resumes_in_its_encoding(tmp_path: Path, encoding: str) -> None:
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE,
           "utf-32-le": codecs.BOM_UTF32_LE, "utf-8": codecs.BOM_UTF8}[encoding]
    rows = [{"id": str(i), "text": f"é{i}😀\r\nzwei" if i % 4 == 0 else f"ü{i}"} for i in range(60)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, ["id", "text"], lineterminator="\r")
    w.writeheader()
    w.writerows(rows)
    p = tmp_path / "in.csv"
    p.write_bytes(bom + buf.getvalue().encode(encoding))
    src = FileSource(path=str(p), split_bytes=256)  # the configured utf-8 gives way to the mark
    splits = _splits(src)
    assert len(splits) > 1 if encoding == "utf-8" else len(splits) == 1  # UTF-16/32: no byte-range splits
    assert _read(src, splits, batch=7) == (rows, [])
    _snapshot_resume_everywhere(FileSource(path=str(p)), batch=7)
    q = tmp_path / "in.jsonl"
    q.write_bytes(bom + "".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows).encode(encoding))
    _snapshot_resume_everywhere(FileSource(path=str(q)), batch=5)
    assert _read(FileSource(path=str(q)), _splits(FileSource(path=str(q))))[0] == rows


def test_cr_only_files_split_and_resume_with_line_numbers(tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    rows = _big_csv_rows(400)
    buf = io.StringIO()
    w = csv.DictWriter(buf, ["id", "name", "note"], lineterminator="\r")
    w.writeheader()
    w.writerows(rows)
    p.write_bytes(buf.getvalue().encode().replace(b"\n", b"\r") + b'x,"unterminated\r1,2,3\r')
    src = FileSource(path=str(p), split_bytes=1024)
    splits = _splits(src)
    assert len(splits) > 5
    records, dead = _read(src, splits, batch=33)
    assert records[:-1] == [dict(r, note=r["note"].replace("\n", "\r")) for r in rows]
    assert records[-1] == {"id": "1", "name": "2", "note": "3"}
    text = p.read_bytes()
    assert [(d.origin, d.reason) for d in dead] == [
        ({"file": str(p), "line": text.count(b"\r") - 1, "offset": text.index(b'x,"unterminated')},
         "unterminated quoted field opened on line " + str(text.count(b"\r") - 1))
    ]
    _snapshot_resume_everywhere(src, batch=29)


def test_a_duplicate_header_name_fails_the_run_naming_the_file_and_the_names(tmp_path: Path) -> None:
    p = tmp_path / "dup.csv"
    p.write_text("id,id,x,,\n1,2,3,4,5\n")
    summary, records, _ = _run(tmp_path, {"type": "file", "path": str(p)})
    assert summary.status == "failed" and records == []
    assert summary.error_type == "SourceDataError"
    assert summary.error is not None
    assert str(p) in summary.error and "'id', ''" in summary.error and "'columns'" in summary.error
    with pytest.raises(SourceDataError, match=r"dup\.csv: the CSV header on line 1 names 'id', '' more than once"):
        list(FileSource(path=str(p)).each())
    renamed = FileSource(path=str(p), columns=["a", "b", "c", "d", "e"])
    assert list(renamed.each()) == [{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5"}]
    with pytest.raises(ConfigError, match="'columns': 'a' named more than once"):
        FileSource(path=str(p), columns=["a", "a"])


def test_an_empty_header_name_is_kept_as_a_field_named_empty(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("id,,x\n1,2,3\n")
    assert list(FileSource(path=str(p)).each()) == [{"id": "1", "": "2", "x": "3"}]


def test_each_record_says_where_it_came_from(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text('id,v\n1,"two\nlines"\n\n2,b\n')
    (tmp_path / "b.jsonl").write_text('{"n": 1}\n{"n": 2}\n\n{"n": 3}\n')
    (tmp_path / "c.json").write_text('[{"n": 1}, 7, {"n": 2}]')
    big = tmp_path / "d.jsonl"
    big.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(200)))
    for name, expected in [
        ("a.csv", [{"line": 2}, {"line": 5}]),
        ("b.jsonl", [{"line": 1}, {"line": 2}, {"line": 4}]),
        ("c.json", [{"index": 0}, {"index": 2}]),
    ]:
        path = str(tmp_path / name)
        src = FileSource(path=path)
        reader = src.create_reader(_ReaderCtx())
        reader.add_splits(_splits(src))
        reader.notify_no_more_splits()
        batch = reader.poll_batch(100)
        assert batch.origins is not None
        assert [batch.origins.of(i) for i in range(len(batch.records))] == [dict(e, file=path) for e in expected]
    # a JSON Lines byte range whose first line number is not counted: byte offsets instead
    src = FileSource(path=str(big), split_bytes=700)
    split = _splits(src)[2]
    assert split.start_line == 0
    reader = src.create_reader(_ReaderCtx())
    reader.add_splits([split])
    batch = reader.poll_batch(3)
    assert batch.origins is not None
    data = big.read_bytes()
    first = batch.records[0]["i"]
    assert [batch.origins.of(i) for i in range(3)] == [
        {"file": str(big), "offset": data.index(json.dumps({"i": first + k}).encode() + b"\n")} for k in range(3)
    ]


def test_errors_while_reading_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "gone.csv"
    p.write_text("a\n1\n")
    src = FileSource(path=str(p))
    splits = _splits(src)
    p.unlink()
    with pytest.raises(FileReadError, match=r"cannot read .*gone\.csv: FileNotFoundError.*check that the file exists"):
        _read(src, splits)
    p.mkdir()  # now a directory of that name
    with pytest.raises(FileReadError, match=r"gone\.csv"):
        _read(src, splits)


def test_source_csv_options_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"delimiter.*ASCII"):
        FileSource(path="x.csv", delimiter="§")
    with pytest.raises(ConfigError, match="'delimiter' and 'quotechar' must differ"):
        FileSource(path="x.csv", delimiter="'", quotechar="'")
    with pytest.raises(ConfigError, match="max_field_bytes"):
        FileSource(path="x.csv", max_field_bytes="huge")
    assert FileSource(path="x.csv").max_field_bytes == 64 << 20
    assert FileSource(path="x.csv", max_field_bytes="1MB").max_field_bytes == 1 << 20


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
