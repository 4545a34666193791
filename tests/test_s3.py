"""File source and sink on s3:// URLs against moto's S3 server on loopback (a real HTTP endpoint)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto_endpoint import moto_endpoint

from active_data_flow.connectors import s3 as _s3
from active_data_flow.connectors.file import FileSink, FileSource, FileSplit, NoFilesError
from active_data_flow.context import RunContext
from active_data_flow.source import ReaderStatus, SourceReaderContext, Split, SplitEnumeratorContext

BUCKET = "adf-test"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_endpoint() as (url, _):
        boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield url


@pytest.fixture
def s3(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def _put(s3: Any, key: str, data: bytes) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=data)


def _rows(n: int) -> list[dict[str, str]]:
    return [
        {"id": str(i), "name": f"n,{i}", "note": f'multi\nline "{i}"' if i % 4 == 0 else "plain"} for i in range(n)
    ]


def _csv_bytes(rows: list[dict[str, str]]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, ["id", "name", "note"])
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode()


class _ReaderCtx(SourceReaderContext):
    @property
    def reader_id(self) -> int:
        return 0

    def send_split_request(self) -> None:
        pass


class _EnumCtx(SplitEnumeratorContext):
    @property
    def parallelism(self) -> int:
        return 1

    def registered_readers(self) -> list[int]:
        return [0]

    def assign_split(self, split: Split, reader_id: int) -> None:
        pass

    def signal_no_more_splits(self, reader_id: int) -> None:
        pass


def _read_split(source: FileSource, split: Split, batch: int = 40) -> list[dict[str, Any]]:
    reader = source.create_reader(_ReaderCtx())
    reader.add_splits([source.split_from_dict(split.to_dict())])
    reader.notify_no_more_splits()
    out: list[dict[str, Any]] = []
    try:
        while True:
            b = reader.poll_batch(batch)
            assert b.dead_letters == []
            out += b.records
            if b.status is ReaderStatus.END_OF_INPUT:
                return out
    finally:
        reader.close()


def test_read_csv_and_jsonl_objects_by_glob(endpoint: str, s3: Any) -> None:
    rows = _rows(30)
    _put(s3, "in/a.csv", b"\xef\xbb\xbf" + _csv_bytes(rows[:10]))
    _put(s3, "in/b.csv", _csv_bytes(rows[10:]))
    _put(s3, "in/sub/c.csv", _csv_bytes(rows[:1]))  # '*' does not cross '/'
    _put(s3, "in/d.jsonl", b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    src = FileSource(path=f"s3://{BUCKET}/in/*.csv", endpoint_url=endpoint)
    assert list(src.each(batch_size=7)) == rows
    deep = FileSource(path=f"s3://{BUCKET}/in/**/*.csv", endpoint_url=endpoint)
    assert len(list(deep.each())) == 31
    jl = FileSource(path=f"s3://{BUCKET}/in/d.jsonl", endpoint_url=endpoint)
    assert list(jl.each()) == rows
    assert _s3.size(f"s3://{BUCKET}/in/d.jsonl", endpoint_url=endpoint) == len(
        b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    )


def test_byte_range_splits_over_ranged_gets(endpoint: str, s3: Any) -> None:
    rows = _rows(600)
    _put(s3, "big/data.csv", _csv_bytes(rows))
    _put(s3, "big/data.jsonl", b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    for key in ("big/data.csv", "big/data.jsonl"):
        src = FileSource(path=f"s3://{BUCKET}/{key}", endpoint_url=endpoint, split_bytes=2000)
        enum = src.create_enumerator(_EnumCtx())
        enum.start()
        splits = [FileSplit.from_dict(d) for d in enum.snapshot_state()["pending"]]
        assert len(splits) > 5
        got: list[dict[str, Any]] = []
        for split in splits:
            got += _read_split(src, split)
        assert got == rows, key
        assert list(src.each(batch_size=33)) == rows


def test_resume_an_s3_split_from_its_position(endpoint: str, s3: Any) -> None:
    rows = _rows(200)
    _put(s3, "resume/data.csv", _csv_bytes(rows))
    src = FileSource(path=f"s3://{BUCKET}/resume/data.csv", endpoint_url=endpoint)
    enum = src.create_enumerator(_EnumCtx())
    enum.start()
    split = src.split_from_dict(enum.snapshot_state()["pending"][0])
    reader = src.create_reader(_ReaderCtx())
    reader.add_splits([split])
    first = reader.poll_batch(50).records + reader.poll_batch(50).records
    snap = [s.to_dict() for s in reader.snapshot_state()]
    reader.close()
    rest = _read_split(src, src.split_from_dict(json.loads(json.dumps(snap))[0]))
    assert first + rest == rows


def test_no_object_matching(endpoint: str) -> None:
    with pytest.raises(NoFilesError, match=r"no files match 's3://adf-test/none/\*\.csv'"):
        list(FileSource(path=f"s3://{BUCKET}/none/*.csv", endpoint_url=endpoint).each())


def test_sink_writes_an_object(endpoint: str, s3: Any, tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/out/result.jsonl"
    sink = FileSink(path=url, endpoint_url=endpoint)
    sink.run_context = RunContext(state_dir=str(tmp_path / "run"))
    sink.setup()
    sink.open()
    sink.write_batch([{"a": 1}, {"a": 2}])
    sink.flush()
    sink.write_batch([{"a": 3}])
    sink.flush()
    sink.close()
    body = s3.get_object(Bucket=BUCKET, Key="out/result.jsonl")["Body"].read()
    assert [json.loads(x) for x in body.splitlines()] == [{"a": 1}, {"a": 2}, {"a": 3}]
    # append: starts from the object's content
    sink = FileSink(path=url, endpoint_url=endpoint, mode="append")
    sink.run_context = RunContext(state_dir=str(tmp_path / "run2"))
    sink.setup()
    sink.write_batch([{"a": 4}])
    sink.close()
    body = s3.get_object(Bucket=BUCKET, Key="out/result.jsonl")["Body"].read()
    assert [json.loads(x)["a"] for x in body.splitlines()] == [1, 2, 3, 4]
    # and reading it back through the file source
    assert [r["a"] for r in FileSource(path=url, endpoint_url=endpoint).each()] == [1, 2, 3, 4]


def test_sink_csv_parts_with_several_readers(endpoint: str, s3: Any, tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/parts/out.csv"
    _put(s3, "parts/out.part-7.csv", b"stale\n")
    state = str(tmp_path / "run")
    coordinator = FileSink(path=url, endpoint_url=endpoint)
    coordinator.run_context = RunContext(state_dir=state, parallelism=2)
    coordinator.setup()  # overwrite: removes old part objects
    for reader_id in range(2):
        sink = FileSink(path=url, endpoint_url=endpoint)
        sink.run_context = RunContext(state_dir=state, parallelism=2, reader_id=reader_id)
        sink.open()
        sink.write_batch([{"id": reader_id, "v": "x,y"}])
        sink.flush()
        sink.close()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="parts/")["Contents"])
    assert keys == ["parts/out.part-0.csv", "parts/out.part-1.csv"]
    body = s3.get_object(Bucket=BUCKET, Key="parts/out.part-1.csv")["Body"].read().decode()
    assert list(csv.DictReader(io.StringIO(body))) == [{"id": "1", "v": "x,y"}]
    both = FileSource(path=f"s3://{BUCKET}/parts/out.part-*.csv", endpoint_url=endpoint)
    assert list(both.each()) == [{"id": "0", "v": "x,y"}, {"id": "1", "v": "x,y"}]


def test_endpoint_from_the_environment(endpoint: str, s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _put(s3, "env/x.jsonl", b'{"ok": true}\n')
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    _s3._clients.pop((None, None), None)
    try:
        assert list(FileSource(path=f"s3://{BUCKET}/env/*.jsonl").each()) == [{"ok": True}]
    finally:
        _s3._clients.pop((None, None), None)


def test_glob_regex() -> None:
    rx = _s3.glob_regex("in/**/*.csv")
    assert rx.match("in/a.csv") and rx.match("in/x/y/a.csv")
    assert not rx.match("in/a.csvx") and not rx.match("other/a.csv")
    assert _s3.glob_regex("in/*.csv").match("in/a.csv")
    assert not _s3.glob_regex("in/*.csv").match("in/sub/a.csv")
    assert _s3.glob_regex("in/[ab]?.csv").match("in/b1.csv")
    assert not _s3.glob_regex("in/[!ab]?.csv").match("in/b1.csv")
