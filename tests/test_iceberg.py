"""The iceberg sink and source against real pyiceberg tables: a local SQLite catalog with a
local warehouse, and a warehouse on moto's S3 server (a real HTTP endpoint on loopback).

pyiceberg and pyarrow are imported at the top on purpose: without the ``iceberg`` extra
these tests fail instead of being skipped.
"""

from __future__ import annotations

import datetime
import decimal
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyiceberg
import pytest
from moto_endpoint import moto_endpoint
from package_tree import package_parent

from active_data_flow.connectors.iceberg import (
    IcebergSink,
    IcebergSource,
    IcebergSplit,
    catalog_properties,
    parse_partition,
    parse_type,
)
from active_data_flow.connectors.memory import MemorySink
from active_data_flow.context import RunContext
from active_data_flow.engine import run_flow
from active_data_flow.errors import ConfigError, RecordValidationError
from active_data_flow.source import InlineContexts, ReaderStatus, Split, single_reader
from active_data_flow.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "adf-iceberg"

assert pyiceberg.__version__  # the extra is installed (a missing one fails the import above)


def _rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"id": i, "name": f"name-{i}", "amount": i * 1.5, "country": ("FR", "DE", "IT")[i % 3], "vip": i % 4 == 0}
        for i in range(start, start + n)
    ]


def _key(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in rows)


def _table(warehouse: Path, name: str = "db.orders") -> Any:
    source = IcebergSource(table=name, warehouse=str(warehouse))
    return source.load_table()


def _data_files(table: Any) -> list[str]:
    return sorted(table.inspect.files().column("file_path").to_pylist())


def _read_split(source: IcebergSource, split: Split, max_records: int) -> tuple[list[dict[str, Any]], Split | None]:
    """One poll of a fresh reader holding only ``split``; returns the records and the split's snapshot."""
    ctx = InlineContexts()
    reader = source.create_reader(ctx)
    reader.add_splits([source.split_from_dict(split.to_dict())])
    reader.notify_no_more_splits()
    batch = reader.poll_batch(max_records)
    state = reader.snapshot_state()
    reader.close()
    return batch.records, (state[0] if state else None)


def _flow_to_iceberg(name: str, records: list[dict[str, Any]], sink: dict[str, Any], batch: int) -> dict[str, Any]:
    return {
        "name": name,
        "source": {"type": "memory", "records": records},
        "sink": {"type": "iceberg", **sink},
        "runtime": {"batch_size": batch},
    }


# --------------------------------------------------------------------------- local round trip


def test_a_flow_appends_one_snapshot_per_batch_and_a_flow_reads_the_same_rows_back(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    rows = _rows(25)
    out = run_flow(
        _flow_to_iceberg("to_ice", rows, {"table": "db.orders", "warehouse": str(wh)}, batch=10),
        state_dir=str(tmp_path / "runs"),
    )
    assert out.status == "success", out.error
    table = _table(wh)
    snapshots = table.snapshots()
    assert len(snapshots) == 3  # 10 + 10 + 5 records: one commit per engine batch
    assert {s.summary["adf.flow"] for s in snapshots} == {"to_ice"}
    assert [int(s.summary["added-records"]) for s in snapshots] == [10, 10, 5]
    assert (wh / "catalog.db").is_file()  # the default SQLite catalog lives in the warehouse

    MemorySink.clear("ice_back")
    back = run_flow(
        {
            "name": "from_ice",
            "source": {"type": "iceberg", "table": "db.orders", "warehouse": str(wh)},
            "sink": {"type": "memory", "name": "ice_back"},
            "runtime": {"batch_size": 7},
        },
        state_dir=str(tmp_path / "runs"),
    )
    assert back.status == "success", back.error
    assert _key(MemorySink.get("ice_back")) == _key(rows)
    assert back.records_in == 25


def test_two_reader_processes_read_every_data_file_once(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    sink = IcebergSink(table="db.orders", warehouse=str(wh))
    for start in range(0, 60, 10):
        sink.write_batch(_rows(10, start))
    out_file = tmp_path / "out.jsonl"
    summary = run_flow(
        {
            "name": "ice_parallel",
            "source": {"type": "iceberg", "table": "db.orders", "warehouse": str(wh)},
            "sink": {"type": "file", "path": str(out_file)},
            "runtime": {"batch_size": 4, "parallelism": 2},
        },
        state_dir=str(tmp_path / "runs"),
    )
    assert summary.status == "success", summary.error
    got = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert _key(got) == _key(_rows(60))


def test_the_source_has_one_split_per_data_file(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    sink = IcebergSink(table="db.orders", warehouse=str(wh), partition_by="country")
    sink.write_batch(_rows(9))  # three countries: three data files in one commit
    sink.write_batch(_rows(4, 100))
    table = _table(wh)
    files = _data_files(table)
    assert len(files) == 6
    splits = IcebergSource(table="db.orders", warehouse=str(wh)).plan_splits()
    assert len(splits) == len(files)
    assert sorted(s.split_id for s in splits) == files
    assert sum(s.record_count for s in splits) == 13
    assert {s.snapshot_id for s in splits} == {table.current_snapshot().snapshot_id}
    assert all(s.file_size > 0 and s.delete_files == 0 for s in splits)
    assert [f.name for f in table.spec().fields] == ["country"]


def test_a_resumed_split_skips_the_rows_already_emitted(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    IcebergSink(table="db.orders", warehouse=str(wh)).write_batch(_rows(10))
    source = IcebergSource(table="db.orders", warehouse=str(wh))
    (split,) = source.plan_splits()
    assert split.position is None and split.record_count == 10

    first, state = _read_split(source, split, 4)
    assert [r["id"] for r in first] == [0, 1, 2, 3]
    assert isinstance(state, IcebergSplit)
    assert state.position == 4  # rows emitted: the checkpointed split resumes after them
    saved = json.loads(json.dumps(state.to_dict()))  # checkpoints are JSON
    assert saved["position"] == 4 and saved["path"] == split.path and saved["snapshot_id"] == split.snapshot_id

    second, state2 = _read_split(source, source.split_from_dict(saved), 3)
    assert [r["id"] for r in second] == [4, 5, 6]
    assert state2 is not None and state2.position == 7

    rest, state3 = _read_split(source, state2, 100)
    assert [r["id"] for r in rest] == [7, 8, 9]
    assert state3 is None  # finished: no longer in the reader's snapshot
    assert source.total_work([split]) == split.file_size
    assert IcebergSplit.from_dict(saved).remaining_bytes() == split.file_size * 6 // 10


def test_the_run_reads_the_snapshot_it_planned_even_when_the_table_changes(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    sink = IcebergSink(table="db.orders", warehouse=str(wh))
    sink.write_batch(_rows(5))
    source = IcebergSource(table="db.orders", warehouse=str(wh))
    ctx = InlineContexts()
    enumerator = source.create_enumerator(ctx)
    enumerator.start()
    state = enumerator.snapshot_state()
    sink.write_batch(_rows(5, 5))  # a commit after planning
    restored = source.create_enumerator(ctx, json.loads(json.dumps(state)))
    restored.start()
    pending = restored.pending  # type: ignore[attr-defined]
    assert len(pending) == 1
    records, _ = _read_split(source, pending[0], 100)
    assert [r["id"] for r in records] == [0, 1, 2, 3, 4]


def test_snapshot_id_filter_and_columns(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    sink = IcebergSink(table="db.orders", warehouse=str(wh))
    sink.write_batch(_rows(6))
    first_snapshot = _table(wh).current_snapshot().snapshot_id
    sink.write_batch(_rows(6, 6))

    old = IcebergSource(table="db.orders", warehouse=str(wh), snapshot_id=first_snapshot)
    assert sorted(r["id"] for r in old.each()) == list(range(6))

    some = IcebergSource(
        table="db.orders", warehouse=str(wh), filter="amount >= 6 and country = 'FR'", columns=["id", "country"]
    )
    got = list(some.each())
    assert sorted(r["id"] for r in got) == [6, 9]
    assert all(set(r) == {"id", "country"} for r in got)

    with pytest.raises(ConfigError) as info:
        IcebergSource(table="db.orders", warehouse=str(wh), snapshot_id=42).plan_splits()
    assert "no snapshot 42" in str(info.value) and str(first_snapshot) in str(info.value)
    with pytest.raises(ConfigError) as info:
        IcebergSource(table="db.orders", warehouse=str(wh), columns=["id", "nope"]).plan_splits()
    assert "'nope' is not a column" in str(info.value) and "amount" in str(info.value)
    with pytest.raises(ConfigError, match="'filter'"):
        IcebergSource(table="db.orders", warehouse=str(wh), filter="nope > 1").plan_splits()
    with pytest.raises(ConfigError, match="does not exist"):
        IcebergSource(table="db.missing", warehouse=str(wh)).plan_splits()


def test_an_empty_table_has_no_splits(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    sink = IcebergSink(table="db.empty", warehouse=str(wh))
    catalog = sink.load_catalog()
    catalog.create_namespace("db")
    catalog.create_table("db.empty", pa.schema([("id", pa.int64())]))
    source = IcebergSource(table="db.empty", warehouse=str(wh))
    assert source.plan_splits() == []
    assert list(source.each()) == []


# --------------------------------------------------------------------------- upsert


@pytest.mark.parametrize("native", [True, False], ids=["table-upsert", "delete-then-append"])
def test_upsert_replaces_rows_by_key_and_is_idempotent(tmp_path: Path, native: bool) -> None:
    wh = tmp_path / "wh"
    sink = IcebergSink(table="db.people", warehouse=str(wh), mode="upsert", key="id")
    sink._native_upsert = native
    assert sink.idempotent
    sink.write_batch([{"id": i, "name": f"n{i}", "score": i} for i in range(5)])
    sink.write_batch(
        [
            {"id": 1, "name": "one", "score": 10},
            {"id": 3, "name": "three?", "score": 30},
            {"id": 3, "name": "three", "score": 31},  # the same key twice in a batch: the last wins
            {"id": 7, "name": "seven", "score": 70},
        ]
    )
    expected = {0: ("n0", 0), 1: ("one", 10), 2: ("n2", 2), 3: ("three", 31), 4: ("n4", 4), 7: ("seven", 70)}
    source = IcebergSource(table="db.people", warehouse=str(wh))
    assert {r["id"]: (r["name"], r["score"]) for r in source.each()} == expected
    # a resumed run writes the last batch again: nothing changes
    sink.write_batch([{"id": 7, "name": "seven", "score": 70}, {"id": 1, "name": "one", "score": 10}])
    rows = list(source.each())
    assert len(rows) == 6
    assert {r["id"]: (r["name"], r["score"]) for r in rows} == expected


def test_upsert_with_a_composite_key_through_a_flow(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    sink = {"table": "db.stock", "warehouse": str(wh), "mode": "upsert", "key": ["shop", "sku"]}
    first = [{"shop": s, "sku": k, "qty": 1} for s in ("a", "b") for k in ("x", "y")]
    second = [{"shop": "a", "sku": "y", "qty": 5}, {"shop": "c", "sku": "x", "qty": 2}]
    for name, records in (("stock1", first), ("stock2", second)):
        out = run_flow(_flow_to_iceberg(name, records, sink, batch=3), state_dir=str(tmp_path / "runs"))
        assert out.status == "success", out.error
    got = {(r["shop"], r["sku"]): r["qty"] for r in IcebergSource(table="db.stock", warehouse=str(wh)).each()}
    assert got == {("a", "x"): 1, ("a", "y"): 5, ("b", "x"): 1, ("b", "y"): 1, ("c", "x"): 2}


def test_upsert_rejects_a_null_key(tmp_path: Path) -> None:
    sink = IcebergSink(table="db.people", warehouse=str(tmp_path / "wh"), mode="upsert", key="id")
    sink.write_batch([{"id": 1, "name": "a"}])
    with pytest.raises(RecordValidationError) as info:
        sink.write_batch([{"id": None, "name": "b"}])
    assert info.value.field == "id"


# --------------------------------------------------------------------------- types and schema


def test_values_round_trip_as_json_friendly_python(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    sink = IcebergSink(
        table="db.typed",
        warehouse=str(wh),
        types={"price": "decimal(10, 2)", "at": "timestamptz", "day": "date", "local": "timestamp", "n": "int"},
    )
    sink.write_batch(
        [
            {
                "id": 1,
                "price": "12.50",
                "at": "2024-03-01T10:00:00+02:00",
                "day": "2024-03-01",
                "local": "2024-03-01T10:00:00",
                "n": 7,
                "blob": b"\x00\x01",
                "meta": {"a": [1, 2]},
                "dt": datetime.datetime(2024, 1, 2, 3, 4, 5),
                "d": datetime.date(2024, 5, 6),
                "dec": decimal.Decimal("1.25"),
                "flag": False,
                "ratio": 0.5,
            },
            {"id": 2, "price": decimal.Decimal("3"), "at": datetime.datetime(2024, 3, 2, tzinfo=datetime.UTC)},
        ]
    )
    fields = {f.name: str(f.field_type) for f in _table(wh, "db.typed").schema().fields}
    assert fields == {
        "id": "long",
        "price": "decimal(10, 2)",
        "at": "timestamptz",
        "day": "date",
        "local": "timestamp",
        "n": "int",
        "blob": "binary",
        "meta": "string",
        "dt": "timestamp",
        "d": "date",
        "dec": "string",
        "flag": "boolean",
        "ratio": "double",
    }
    rows = {r["id"]: r for r in IcebergSource(table="db.typed", warehouse=str(wh)).each()}
    assert rows[1] == {
        "id": 1,
        "price": "12.50",
        "at": "2024-03-01T08:00:00+00:00",
        "day": "2024-03-01",
        "local": "2024-03-01T10:00:00",
        "n": 7,
        "blob": "AAE=",
        "meta": '{"a":[1,2]}',
        "dt": "2024-01-02T03:04:05",
        "d": "2024-05-06",
        "dec": "1.25",
        "flag": False,
        "ratio": 0.5,
    }
    assert rows[2]["price"] == "3.00" and rows[2]["at"] == "2024-03-02T00:00:00+00:00" and rows[2]["blob"] is None
    # what the source emits goes back into the same table unchanged (ISO strings, base64)
    IcebergSink(table="db.typed", warehouse=str(wh), mode="upsert", key="id").write_batch([rows[1]])
    again = {r["id"]: r for r in IcebergSource(table="db.typed", warehouse=str(wh)).each()}
    assert again[1] == rows[1]


def test_records_that_do_not_fit_a_frozen_table_name_the_fields(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    sink = IcebergSink(table="db.orders", warehouse=str(wh), schema_evolution="freeze")
    sink.write_batch(_rows(2))
    with pytest.raises(RecordValidationError) as info:
        sink.write_batch([{"id": 5, "colour": "red", "size": 3}])
    message = str(info.value)
    assert info.value.field == "colour"
    assert "colour, size" in message and "id, name, amount, country, vip" in message
    with pytest.raises(RecordValidationError) as bad:
        sink.write_batch([{"id": "five"}])
    assert bad.value.field == "id" and "five" in str(bad.value)
    assert "a str value" in str(bad.value) and "of type int64" in str(bad.value)
    assert len(_table(wh).snapshots()) == 1  # nothing was committed


def test_a_flow_dead_letters_only_the_records_that_do_not_fit_a_frozen_table(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    IcebergSink(table="db.orders", warehouse=str(wh)).write_batch(_rows(1))
    records = [*_rows(3, 10), {"id": 99, "unexpected": True}]
    out = run_flow(
        _flow_to_iceberg("dl", records, {"table": "db.orders", "warehouse": str(wh), "schema_evolution": "freeze"},
                         batch=10),
        state_dir=str(tmp_path / "runs"),
    )
    assert out.status == "partial", out.error
    assert out.records_out == 3 and out.dead_letters == 1
    assert sorted(r["id"] for r in IcebergSource(table="db.orders", warehouse=str(wh)).each()) == [0, 10, 11, 12]


# --------------------------------------------------------------------------- configuration


def test_a_bad_config_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        IcebergSink(mode="upsert")
    problems = info.value.problems
    assert any("'table' is required" in p for p in problems)
    assert any("'key'" in p and "upsert" in p for p in problems)

    with pytest.raises(ConfigError) as info:
        IcebergSink(table="orders", partition_by=["month(ts", "bucket(x)"], types={"a": "varchar"}, colour=1)
    text = str(info.value)
    assert "namespace.table" in text
    assert "partition_by" in text and "types" in text and "varchar" in text and "colour" in text

    with pytest.raises(ConfigError) as info:
        IcebergSource(columns=[])
    assert any("'table' is required" in p for p in info.value.problems)
    assert any("'columns'" in p for p in info.value.problems)


def test_a_missing_table_with_create_false_fails_in_setup(tmp_path: Path) -> None:
    sink = IcebergSink(table="db.nope", warehouse=str(tmp_path / "wh"), create=False)
    with pytest.raises(ConfigError, match="does not exist and 'create' is false"):
        sink.setup()
    upsert = IcebergSink(table="db.orders", warehouse=str(tmp_path / "wh"), mode="upsert", key="order_id")
    IcebergSink(table="db.orders", warehouse=str(tmp_path / "wh")).write_batch(_rows(1))
    with pytest.raises(ConfigError, match=r"'order_id' is not in table db\.orders"):
        upsert.setup()


def test_parse_helpers() -> None:
    assert parse_partition("country") == ("identity", "country")
    assert parse_partition("day(ts)") == ("day", "ts")
    assert parse_partition(" bucket( 16 , id ) ") == ("bucket[16]", "id")
    assert parse_partition("truncate(4, name)") == ("truncate[4]", "name")
    for bad in ("bucket(id)", "day(4, ts)", "frob(x)", "a,b"):
        with pytest.raises(ValueError):
            parse_partition(bad)
    assert parse_type("Decimal(10, 2)") == ("decimal", 10, 2)
    assert parse_type("integer") == ("long",) and parse_type("int") == ("int",)
    with pytest.raises(ValueError, match="decimal"):
        parse_type("decimal(40, 2)")


def test_default_catalog_and_s3_properties(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADF_STATE_DIR", str(tmp_path / "state"))
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    name, props = catalog_properties({"table": "db.t"})
    root = tmp_path / "state" / "iceberg"
    assert name == "adf"
    assert props == {"type": "sql", "warehouse": f"file://{root}", "uri": f"sqlite:///{root}/catalog.db"}

    name, props = catalog_properties(
        {
            "warehouse": "s3://bucket/wh",
            "endpoint_url": "http://127.0.0.1:9000",
            "access_key_id": "AK",
            "secret_access_key": "SK",
            "catalog": {"name": "lake", "s3.region": "eu-west-3"},
        }
    )
    assert name == "lake"
    assert props == {
        "type": "sql",
        "warehouse": "s3://bucket/wh",
        "uri": f"sqlite:///{root}/catalog.db",
        "s3.endpoint": "http://127.0.0.1:9000",
        "s3.region": "eu-west-3",
        "s3.access-key-id": "AK",
        "s3.secret-access-key": "SK",
    }
    _, props = catalog_properties({"catalog": {"type": "rest", "uri": "http://rest:8181", "warehouse": "prod"}})
    assert props == {"type": "rest", "uri": "http://rest:8181", "warehouse": "prod"}
    _, props = catalog_properties({"catalog": {"name": "from_yaml"}}, configured=True)
    assert props == {}  # pyiceberg's own configuration says the rest

    # a flow with no warehouse writes under the state root
    sink = IcebergSink(table="db.t")
    sink.write_batch([{"id": 1}])
    assert (root / "catalog.db").is_file() and (root / "db" / "t" / "metadata").is_dir()


def test_secret_attributes_are_redacted_in_the_spec() -> None:
    spec = parse_spec(
        {
            "name": "ice_secret",
            "source": {"type": "memory", "records": []},
            "sink": {"type": "iceberg", "table": "db.t", "access_key_id": "AK", "secret_access_key": "SK"},
        }
    )
    assert {"sink.access_key_id", "sink.secret_access_key", "sink.session_token"} <= spec.secret_keys()
    from active_data_flow.redact import redact

    shown = redact(
        {"sink": {"catalog": {"s3.secret-access-key": "SK", "uri": "postgresql://u:pw@db/cat"}}},
        spec.secret_keys(),
    )
    assert shown == {"sink": {"catalog": {"s3.secret-access-key": "***", "uri": "postgresql://u:***@db/cat"}}}


def test_the_module_imports_with_only_the_standard_library() -> None:
    code = (
        f"import sys; sys.path[:0] = [{str(package_parent())!r}]; import active_data_flow.connectors.iceberg as m; "
        "print(m.IcebergSink.type_name, any(n.split('.')[0] in ('pyarrow', 'pyiceberg') for n in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-E", "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["iceberg", "False"]


def test_the_registry_resolves_the_iceberg_types() -> None:
    from active_data_flow.registry import registry

    assert registry.resolve("sink", "iceberg") is IcebergSink
    assert registry.resolve("source", "iceberg") is IcebergSource


# --------------------------------------------------------------------------- S3 (moto)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_endpoint() as (url, _):
        boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield url


def test_round_trip_on_s3(tmp_path: Path, s3_endpoint: str) -> None:
    common = {
        "table": "db.orders",
        "warehouse": f"s3://{BUCKET}/wh",
        "endpoint_url": s3_endpoint,
        "catalog": {"uri": f"sqlite:///{tmp_path / 'catalog.db'}"},
    }
    rows = _rows(23)
    out = run_flow(_flow_to_iceberg("to_s3", rows, common, batch=10), state_dir=str(tmp_path / "runs"))
    assert out.status == "success", out.error

    source = IcebergSource(common)
    table = source.load_table()
    assert table.location() == f"s3://{BUCKET}/wh/db/orders"
    assert len(table.snapshots()) == 3
    splits = source.plan_splits()
    assert len(splits) == len(_data_files(table)) == 3
    assert all(s.path.startswith(f"s3://{BUCKET}/wh/db/orders/data/") for s in splits)
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").list_objects_v2(
            Bucket=BUCKET, Prefix="wh/db/orders/"
        )["Contents"]
    ]
    assert sum(k.endswith(".parquet") for k in keys) == 3 and any(k.endswith(".metadata.json") for k in keys)

    MemorySink.clear("s3_back")
    back = run_flow(
        {
            "name": "from_s3",
            "source": {"type": "iceberg", **common},
            "sink": {"type": "memory", "name": "s3_back"},
            "runtime": {"batch_size": 6},
        },
        state_dir=str(tmp_path / "runs"),
    )
    assert back.status == "success", back.error
    assert _key(MemorySink.get("s3_back")) == _key(rows)

    upsert = IcebergSink({**common, "mode": "upsert", "key": "id"})
    upsert.run_context = RunContext(flow_name="s3_upsert")
    upsert.write_batch([{**rows[0], "name": "changed"}])
    got = {r["id"]: r["name"] for r in IcebergSource(common).each()}
    assert len(got) == 23 and got[0] == "changed"


def test_round_trip_on_s3_with_two_reader_processes(tmp_path: Path, s3_endpoint: str) -> None:
    common = {
        "table": "db.par",
        "warehouse": f"s3://{BUCKET}/wh2",
        "endpoint_url": s3_endpoint,
        "catalog": {"uri": f"sqlite:///{tmp_path / 'catalog.db'}"},
    }
    sink = IcebergSink(common)
    for start in range(0, 40, 10):
        sink.write_batch(_rows(10, start))
    out_file = tmp_path / "out.jsonl"
    summary = run_flow(
        {
            "name": "s3_parallel",
            "source": {"type": "iceberg", **common},
            "sink": {"type": "file", "path": str(out_file)},
            "runtime": {"batch_size": 3, "parallelism": 2},
        },
        state_dir=str(tmp_path / "runs"),
    )
    assert summary.status == "success", summary.error
    assert _key([json.loads(x) for x in out_file.read_text().splitlines()]) == _key(_rows(40))


def test_reader_status_ends_after_the_last_split(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    IcebergSink(table="db.orders", warehouse=str(wh)).write_batch(_rows(3))
    batches = list(single_reader(IcebergSource(table="db.orders", warehouse=str(wh)), 10))
    assert batches[-1].status is ReaderStatus.END_OF_INPUT
    assert sum(len(b.records) for b in batches) == 3


def test_two_writer_processes_commit_to_one_table(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    rows = _rows(120)
    summary = run_flow(
        {
            "name": "ice_writers",
            "source": {"type": "memory", "records": rows, "splits": 4},
            "sink": {"type": "iceberg", "table": "db.orders", "warehouse": str(wh)},
            "runtime": {"batch_size": 5, "parallelism": 2},
        },
        state_dir=str(tmp_path / "runs"),
    )
    assert summary.status == "success", summary.error
    table = _table(wh)
    assert len(table.snapshots()) == 24  # one commit per batch, whichever process made it
    assert {s.summary["adf.reader"] for s in table.snapshots()} <= {"0", "1"}
    assert _key(list(IcebergSource(table="db.orders", warehouse=str(wh)).each())) == _key(rows)


def test_a_split_resumes_across_arrow_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from active_data_flow.connectors.iceberg import source as iceberg

    real = iceberg._record_batches

    def small_batches(scan: Any, task: Any) -> Iterator[Any]:
        for batch in real(scan, task):
            yield from pa.Table.from_batches([batch]).to_batches(max_chunksize=3)

    monkeypatch.setattr(iceberg, "_record_batches", small_batches)
    wh = tmp_path / "wh"
    IcebergSink(table="db.orders", warehouse=str(wh)).write_batch(_rows(20))
    source = IcebergSource(table="db.orders", warehouse=str(wh))
    (split,) = source.plan_splits()
    seen: list[int] = []
    state: Split | None = split
    for size in (2, 5, 1, 7, 100):
        assert state is not None
        records, state = _read_split(source, state, size)
        seen.extend(r["id"] for r in records)
    assert seen == list(range(20)) and state is None


def test_a_commit_that_loses_a_race_is_retried_on_the_refreshed_table(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    one = IcebergSink(table="db.orders", warehouse=str(wh))
    two = IcebergSink(table="db.orders", warehouse=str(wh))
    one.write_batch(_rows(2))
    two.write_batch(_rows(2, 2))  # `one` still holds the table as it was before this commit
    stale = one._table.metadata_location
    one.write_batch(_rows(2, 4))
    assert one._table.metadata_location != stale
    table = _table(wh)
    assert len(table.snapshots()) == 3
    assert sorted(r["id"] for r in IcebergSource(table="db.orders", warehouse=str(wh)).each()) == list(range(6))


def test_partition_transforms_need_pyiceberg_core(tmp_path: Path) -> None:
    import importlib.util

    sink = IcebergSink(table="db.events", warehouse=str(tmp_path / "wh"), partition_by=["day(at)", "bucket(4, id)"],
                       types={"at": "timestamptz"})
    if importlib.util.find_spec("pyiceberg_core") is None:
        with pytest.raises(ConfigError) as info:
            sink.setup()
        assert "day(at), bucket(4, id) needs the Python package 'pyiceberg-core'" in str(info.value)
    else:
        sink.setup()
        sink.write_batch([{"id": 1, "at": "2024-01-01T10:00:00Z"}])
        assert [f.name for f in _table(tmp_path / "wh", "db.events").spec().fields] == ["at_day", "id_bucket_4"]


def test_nested_columns_of_a_table_created_elsewhere(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    sink = IcebergSink(table="db.nested", warehouse=str(wh))
    catalog = sink.load_catalog()
    catalog.create_namespace("db")
    catalog.create_table(
        "db.nested",
        pa.schema(
            [
                ("id", pa.int64()),
                ("tags", pa.list_(pa.string())),
                ("attrs", pa.map_(pa.string(), pa.int64())),
                ("address", pa.struct([("city", pa.string()), ("since", pa.date32()), ("zip", pa.int32())])),
                ("stamps", pa.list_(pa.timestamp("us"))),
            ]
        ),
    )
    record = {
        "id": 1,
        "tags": ["a", "b"],
        "attrs": {"x": 1, "y": 2},
        "address": {"city": "Lyon", "since": "2020-02-03", "zip": "69001"},
        "stamps": ["2024-01-01T00:00:00", None],
    }
    sink.write_batch([record, {"id": 2}])
    rows = {r["id"]: r for r in IcebergSource(table="db.nested", warehouse=str(wh)).each()}
    assert rows[1] == {**record, "address": {"city": "Lyon", "since": "2020-02-03", "zip": 69001}}
    assert rows[2] == {"id": 2, "tags": None, "attrs": None, "address": None, "stamps": None}
    with pytest.raises(RecordValidationError) as info:
        sink.write_batch([{"id": 3, "address": {"city": "Nice", "planet": "Earth"}}])
    assert info.value.field == "address" and "planet" in str(info.value)
