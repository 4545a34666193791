"""Schema evolution in the sql and iceberg sinks: a field the table lacks becomes a column, the
change is in the run summary; ``freeze`` dead-letters it; a value its column cannot hold is
dead-lettered naming the column and both types. Real SQLite files, the real PostgreSQL server,
real pyiceberg tables."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from active_data_flow.cli import main
from active_data_flow.connectors.iceberg import IcebergSink, IcebergSource
from active_data_flow.connectors.sql import SqlSink
from active_data_flow.context import RunContext, RunNotes
from active_data_flow.engine import run_flow
from active_data_flow.errors import RecordValidationError

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class Db:
    def __init__(self, url: str, table: str) -> None:
        self.url, self.table = url, table
        self.engine = sa.create_engine(url)

    def execute(self, sql: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql))

    def rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                dict(r) for r in conn.execute(sa.text(f'SELECT * FROM "{self.table}" ORDER BY id')).mappings()
            ]

    def columns(self) -> dict[str, str]:
        return {c["name"]: str(c["type"]) for c in sa.inspect(self.engine).get_columns(self.table)}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "sqlite":
        found = Db(f"sqlite:///{tmp_path / 'out.db'}", "orders")
        yield found
        found.engine.dispose()
        return
    found = Db(PG_URL, f"adf_evolve_{uuid.uuid4().hex[:10]}")
    try:
        yield found
    finally:
        found.execute(f'DROP TABLE IF EXISTS "{found.table}"')
        found.engine.dispose()


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _flow(name: str, source: dict[str, Any], sink: dict[str, Any], **runtime: Any) -> dict[str, Any]:
    return {"name": name, "source": source, "sink": sink, "runtime": {"batch_size": 3, **runtime}}


OLD = [{"id": i, "name": f"n{i}"} for i in range(3)]
NEW = [
    {
        "id": i,
        "name": f"n{i}",
        "colour": "red",
        "score": 1.5,
        "tags": {"a": i},
        "vip": i % 2 == 0,
        "visits": i,
    }
    for i in range(3, 6)
]


@pytest.mark.parametrize("mode", ["insert", "upsert"])
def test_a_new_field_arrives_as_a_new_column_and_the_summary_says_so(
    db: Db, tmp_path: Path, mode: str
) -> None:
    sink = {"type": "sql", "url": db.url, "table": db.table, "mode": mode, "key": "id"}
    summary = run_flow(
        _flow(
            "evolve",
            {"type": "file", "path": _jsonl(tmp_path / "in.jsonl", OLD + NEW), "format": "jsonl"},
            sink,
        ),
        state_dir=str(tmp_path / "state"),
    )
    assert summary.status == "success", summary.error
    assert (summary.records_out, summary.dead_letters) == (6, 0)
    rows = db.rows()
    assert [r["colour"] for r in rows] == [None] * 3 + ["red"] * 3
    assert [r["visits"] for r in rows] == [None, None, None, 3, 4, 5]
    assert rows[3]["score"] == 1.5 and bool(rows[4]["vip"]) is True and bool(rows[3]["vip"]) is False
    tags = rows[4]["tags"]
    assert (json.loads(tags) if isinstance(tags, str) else tags) == {"a": 4}
    changes = {c["column"]: c["type"] for c in summary.schema_changes}
    expected = {
        "sqlite": {"colour": "TEXT", "score": "DOUBLE", "tags": "TEXT", "vip": "BOOLEAN", "visits": "BIGINT"},
        "postgresql": {
            "colour": "TEXT",
            "score": "DOUBLE PRECISION",
            "tags": "JSONB",
            "vip": "BOOLEAN",
            "visits": "BIGINT",
        },
    }[db.engine.dialect.name]
    assert changes == expected
    assert all(c["table"] == db.table for c in summary.schema_changes)
    assert summary.to_dict()["schema_changes"] == summary.schema_changes
    assert set(db.columns()) == {"id", "name", *expected}


def test_a_field_null_in_the_whole_batch_becomes_a_text_column(db: Db) -> None:
    sink = SqlSink(url=db.url, table=db.table)
    sink.write_batch(OLD)
    sink.write_batch([{"id": 9, "note": None}])
    assert sink.run_context.notes.schema_changes() == [{"table": db.table, "column": "note", "type": "TEXT"}]
    sink.write_batch([{"id": 10, "note": "later text"}])
    sink.close()
    assert db.rows()[-1]["note"] == "later text"


def test_two_reader_processes_adding_the_same_column_both_succeed_and_it_is_listed_once(
    db: Db, tmp_path: Path
) -> None:
    SqlSink(url=db.url, table=db.table).write_batch(OLD)  # the table exists without the new column
    folder = tmp_path / "in"
    folder.mkdir()
    for part in range(4):
        _jsonl(
            folder / f"part{part}.jsonl",
            [{"id": 100 * (part + 1) + i, "extra": f"p{part}"} for i in range(20)],
        )
    summary = run_flow(
        _flow(
            "evolve_parallel",
            {"type": "file", "path": str(folder / "*.jsonl"), "format": "jsonl"},
            {"type": "sql", "url": db.url, "table": db.table, "mode": "upsert", "key": "id"},
            parallelism=2,
            batch_size=5,
        ),
        state_dir=str(tmp_path / "state"),
    )
    assert summary.status == "success", summary.error
    assert summary.records_out == 80 and summary.dead_letters == 0
    assert [c["column"] for c in summary.schema_changes] == ["extra"]
    rows = db.rows()
    assert len(rows) == 83 and sorted({r["extra"] for r in rows if r["extra"]}) == ["p0", "p1", "p2", "p3"]


def test_a_writer_whose_view_of_the_table_is_stale_adds_nothing_twice_and_writes_its_batch(db: Db) -> None:
    first, second = SqlSink(url=db.url, table=db.table), SqlSink(url=db.url, table=db.table)
    first.write_batch(OLD)
    second.write_batch([{"id": 10, "name": "x"}])  # both know the table without 'late'
    first.write_batch([{"id": 11, "late": "from first"}])
    second.write_batch([{"id": 12, "late": "from second"}])  # its ALTER finds the column there
    first.close()
    second.close()
    assert [r["late"] for r in db.rows()] == [None] * 4 + ["from first", "from second"]
    assert [c["column"] for c in first.run_context.notes.schema_changes()] == ["late"]


def test_a_batch_that_fails_leaves_no_added_column(db: Db) -> None:
    db.execute(f'CREATE TABLE "{db.table}" (id BIGINT PRIMARY KEY CHECK (id > 0), name TEXT)')
    sink = SqlSink(url=db.url, table=db.table)
    with pytest.raises(sa.exc.IntegrityError):
        sink.write_batch([{"id": 1, "name": "a", "added": 1}, {"id": -1, "name": "b", "added": 2}])
    assert set(db.columns()) == {"id", "name"}  # the ALTER was in the batch's rolled-back transaction
    assert sink.run_context.notes.schema_changes() == []
    sink.write_batch([{"id": 1, "name": "a", "added": 1}])
    sink.close()
    assert db.rows() == [{"id": 1, "name": "a", "added": 1}]


def test_the_sqlalchemy_path_adds_columns_too(db: Db) -> None:
    db.execute(f'CREATE TABLE "{db.table}" (id BIGINT, name TEXT)')  # no unique key: delete then insert
    sink = SqlSink(url=db.url, table=db.table, mode="upsert", key="id")
    sink.write_batch([{"id": 1, "name": "a"}])
    assert sink._fast is None
    sink.write_batch([{"id": 1, "name": "b", "size": 40}, {"id": 2, "size": 41}])
    sink.close()
    assert db.rows() == [{"id": 1, "name": "b", "size": 40}, {"id": 2, "name": None, "size": 41}]


def test_with_freeze_a_new_field_is_dead_lettered_as_before(db: Db, tmp_path: Path) -> None:
    SqlSink(url=db.url, table=db.table).write_batch(OLD)
    summary = run_flow(
        _flow(
            "frozen",
            {"type": "memory", "records": [{"id": 50, "name": "x"}, {"id": 51, "surprise": 1}]},
            {"type": "sql", "url": db.url, "table": db.table, "schema_evolution": "freeze"},
        ),
        state_dir=str(tmp_path / "state"),
    )
    assert (summary.status, summary.records_out, summary.dead_letters) == ("partial", 1, 1)
    assert summary.schema_changes == []
    assert "surprise" in summary.dead_letter_reasons[0]["reason"]
    assert set(db.columns()) == {"id", "name"}


def test_a_value_its_column_cannot_hold_is_dead_lettered_naming_the_column_and_both_types(
    db: Db, tmp_path: Path
) -> None:
    SqlSink(url=db.url, table=db.table).write_batch([{"id": 1, "qty": 3, "ok": True, "price": 1.5}])
    records = [
        {"id": 2, "qty": "7", "ok": False, "price": "2.5"},  # number text fits a number column
        {"id": 3, "qty": "many"},
        {"id": 4, "ok": {"yes": 1}},
        {"id": 5, "price": [1]},
        {"id": 6, "qty": 2.0},
    ]
    summary = run_flow(
        _flow(
            "conflicts",
            {"type": "memory", "records": records},
            {"type": "sql", "url": db.url, "table": db.table},
            batch_size=10,
        ),
        state_dir=str(tmp_path / "state"),
    )
    assert (summary.records_out, summary.dead_letters) == (2, 3), summary.error
    assert summary.schema_changes == []
    letters = [
        json.loads(line) for line in Path(summary.dead_letter_destination or "").read_text().splitlines()
    ]
    reasons = {d["record"]["id"]: d["reason"] for d in letters}
    assert set(reasons) == {3, 4, 5}
    assert "a str value" in reasons[3] and "column 'qty' of type BIGINT" in reasons[3]
    assert "a dict value" in reasons[4] and "column 'ok' of type BOOLEAN" in reasons[4]
    assert "a list value" in reasons[5] and "column 'price' of type" in reasons[5]
    assert [r["id"] for r in db.rows()] == [1, 2, 6]


# --------------------------------------------------------------------------- iceberg


def test_a_new_field_arrives_as_a_new_iceberg_column(tmp_path: Path) -> None:
    wh = str(tmp_path / "wh")
    sink = {"type": "iceberg", "table": "db.orders", "warehouse": wh}
    summary = run_flow(
        _flow("ice", {"type": "memory", "records": OLD + NEW}, sink), state_dir=str(tmp_path / "s")
    )
    assert summary.status == "success", summary.error
    assert (summary.records_out, summary.dead_letters) == (6, 0)
    assert {c["column"]: c["type"] for c in summary.schema_changes} == {
        "colour": "string",
        "score": "double",
        "tags": "string",
        "vip": "boolean",
        "visits": "long",
    }
    assert all(c["table"] == "db.orders" for c in summary.schema_changes)
    rows = sorted(IcebergSource(table="db.orders", warehouse=wh).each(), key=lambda r: r["id"])
    assert [r["colour"] for r in rows] == [None] * 3 + ["red"] * 3
    assert rows[4]["visits"] == 4 and json.loads(rows[4]["tags"]) == {"a": 4}


def test_iceberg_readers_adding_the_same_column_list_it_once_and_freeze_dead_letters(tmp_path: Path) -> None:
    wh = str(tmp_path / "wh")
    IcebergSink(table="db.orders", warehouse=wh).write_batch(OLD)
    folder = tmp_path / "in"
    folder.mkdir()
    for part in range(3):
        _jsonl(folder / f"p{part}.jsonl", [{"id": 10 * (part + 1) + i, "extra": part} for i in range(6)])
    summary = run_flow(
        _flow(
            "ice_parallel",
            {"type": "file", "path": str(folder / "*.jsonl"), "format": "jsonl"},
            {"type": "iceberg", "table": "db.orders", "warehouse": wh},
            parallelism=2,
        ),
        state_dir=str(tmp_path / "s"),
    )
    assert summary.status == "success", summary.error
    assert summary.schema_changes == [{"table": "db.orders", "column": "extra", "type": "long"}]
    frozen = run_flow(
        _flow(
            "ice_frozen",
            {"type": "memory", "records": [{"id": 99, "other": "x"}]},
            {"type": "iceberg", "table": "db.orders", "warehouse": wh, "schema_evolution": "freeze"},
        ),
        state_dir=str(tmp_path / "s"),
    )
    assert (frozen.records_out, frozen.dead_letters, frozen.schema_changes) == (0, 1, [])
    rows = list(IcebergSource(table="db.orders", warehouse=wh).each())
    assert (
        len(rows) == 21
        and sorted(r["extra"] for r in rows if r["extra"] is not None) == [0] * 6 + [1] * 6 + [2] * 6
    )


# --------------------------------------------------------------------------- the run summary channel


def test_notes_are_deduplicated_and_counted_across_processes() -> None:
    reader_a, reader_b, coordinator = RunNotes(), RunNotes(), RunNotes()
    for _ in range(3):
        reader_a.warn("page limit reached", url="http://x/1")
    reader_b.warn("page limit reached", url="http://x/1")
    reader_b.warn("page limit reached", url="http://x/2")
    reader_a.schema_change("t", "c", "TEXT")
    reader_b.schema_change("t", "c", "TEXT")
    coordinator.merge(reader_a.take())
    coordinator.merge(reader_b.take())
    assert reader_a.take() is None  # taken once
    assert coordinator.warnings() == [
        {"message": "page limit reached", "url": "http://x/1", "count": 4},
        {"message": "page limit reached", "url": "http://x/2"},
    ]
    assert coordinator.schema_changes() == [{"table": "t", "column": "c", "type": "TEXT"}]
    ctx = RunContext()
    ctx.warn("w")
    assert ctx.notes.warnings() == [{"message": "w"}] and RunContext().notes.warnings() == []


def test_adf_run_prints_the_added_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "out.db"
    SqlSink(url=f"sqlite:///{db}", table="t").write_batch(OLD)
    spec = tmp_path / "flow.json"
    spec.write_text(
        json.dumps(
            _flow(
                "printed",
                {"type": "memory", "records": NEW},
                {"type": "sql", "url": f"sqlite:///{db}", "table": "t"},
            )
        )
    )
    code = main(["run", str(spec), "--state-dir", str(tmp_path / "state")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "schema: added column colour TEXT to t" in out and "schema: added column visits BIGINT to t" in out


def test_a_type_conflict_on_a_sink_without_a_flow_names_both_types(tmp_path: Path) -> None:
    sink = SqlSink(url=f"sqlite:///{tmp_path / 'x.db'}", table="t")
    sink.write_batch([{"id": 1, "n": 1}])
    with pytest.raises(RecordValidationError) as info:
        sink.write_batch([{"id": 2, "n": "x"}])
    assert info.value.field == "n" and "a str value" in str(info.value) and "BIGINT" in str(info.value)
