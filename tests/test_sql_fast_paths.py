"""The sql sink's fast paths (sqlite3 executemany, psycopg COPY) write what the SQLAlchemy path writes.

Each test writes the same batches twice — through the fast path, and through SQLAlchemy Core
(the fast writer switched off) into a twin table — and compares the rows read back, on a real
SQLite file and on the real PostgreSQL server.
"""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects.postgresql import JSONB

from active_data_flow.connectors.sql import SqlSink
from active_data_flow.connectors.sql import fast as fast_module
from active_data_flow.connectors.sql import sink as sink_module
from active_data_flow.engine import run_flow

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@dataclass
class Target:
    """A database and two fresh tables in it: one written by the fast path, one by SQLAlchemy."""

    url: str
    engine: sa.Engine
    fast: str
    slow: str

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def create(self, *, unique_key: bool = True) -> None:
        """Both tables, with a column of each kind the sink converts."""
        metadata = sa.MetaData()
        for name in (self.fast, self.slow):
            sa.Table(
                name, metadata,
                sa.Column("id", sa.BigInteger, primary_key=unique_key, nullable=not unique_key),
                sa.Column("label", sa.Text),
                sa.Column("amount", sa.Numeric),
                sa.Column("flag", sa.Boolean),
                sa.Column("at", sa.DateTime(timezone=True)),
                sa.Column("doc", sa.JSON().with_variant(JSONB(), "postgresql")),
                sa.Column("score", sa.Double),
                sa.Column("qty", sa.Integer),
            )
        metadata.create_all(self.engine)

    def rows(self, table: str) -> list[dict[str, Any]]:
        reflected = sa.Table(table, sa.MetaData(), autoload_with=self.engine)  # JSON columns read back parsed
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(reflected).order_by(reflected.c.id)).mappings()]

    def empty(self) -> None:
        with self.engine.begin() as conn:
            for name in (self.fast, self.slow):
                conn.execute(sa.text(f'DELETE FROM "{name}"'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fast.db'}"
        engine = sa.create_engine(url)
        yield Target(url, engine, "fast_rows", "slow_rows")
        engine.dispose()
        return
    engine = sa.create_engine(PG_URL)
    name = f"adf_fast_{uuid.uuid4().hex[:10]}"
    try:
        yield Target(PG_URL, engine, name, f"{name}_ref")
    finally:
        with engine.begin() as conn:
            for table in (name, f"{name}_ref"):
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
        engine.dispose()


@pytest.fixture
def pg_target() -> Iterator[Target]:
    engine = sa.create_engine(PG_URL)
    name = f"adf_fast_{uuid.uuid4().hex[:10]}"
    try:
        yield Target(PG_URL, engine, name, f"{name}_ref")
    finally:
        with engine.begin() as conn:
            for table in (name, f"{name}_ref"):
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
        engine.dispose()


class SlowSink(SqlSink):
    """The sql sink with its fast writer switched off: every batch goes through SQLAlchemy Core."""

    def write_batch(self, records: Any) -> None:
        original = sink_module.fast_writer
        sink_module.fast_writer = lambda *args, **kwargs: None
        try:
            super().write_batch(records)
        finally:
            sink_module.fast_writer = original


def write_both(target: Target, batches: list[list[dict[str, Any]]], **config: Any) -> None:
    """Write ``batches`` through the fast path and through SQLAlchemy, each sink asserting its path."""
    for name, kind in ((target.fast, SqlSink), (target.slow, SlowSink)):
        sink = kind(url=target.url, table=name, **config)
        sink.open()
        try:
            for batch in batches:
                sink.write_batch([dict(r) for r in batch])
        finally:
            sink.close()


def assert_same_rows(target: Target) -> list[dict[str, Any]]:
    fast_rows, slow_rows = target.rows(target.fast), target.rows(target.slow)
    assert fast_rows == slow_rows
    return fast_rows


UTC = datetime.UTC
BATCH_ONE = [
    {"id": 1, "label": "first", "amount": "12345678901234567890.123456789", "flag": True,
     "at": "2024-05-06T07:08:09.123456+02:00", "doc": {"a": [1, 2, {"b": None}], "ü": "ß"}, "score": 1.5, "qty": 3},
    {"id": 2, "label": None, "amount": decimal.Decimal("0.1"), "flag": False, "at": None, "doc": [1, "x"],
     "score": None, "qty": None},
    {"id": 3, "label": 42, "amount": 0.1, "flag": None, "at": datetime.datetime(2024, 1, 1, tzinfo=UTC),
     "doc": None, "score": 3, "qty": "7"},
    {"id": 4, "label": True, "amount": 7, "doc": "just text", "score": "2.25", "qty": 2.5},
    {"id": 5, "label": 1e15, "amount": None, "flag": True, "doc": {"n": 1.25}, "qty": 3.5},
    {"id": 6, "label": {"k": [1, "ü"]}, "at": "2030-12-31T23:59:59", "score": -0.0},
    {"id": 7, "label": datetime.date(2024, 2, 29), "amount": "-0.000001", "score": 1e-7},
    {"id": 1, "label": "the later record wins", "amount": "1.10", "flag": False, "at": "2024-05-06T07:08:09Z",
     "doc": {"v": 2}, "score": 2.5, "qty": 4},
]
BATCH_TWO = [
    {"id": 2, "label": "updated over an existing row", "amount": "99.990", "flag": True, "doc": {"again": True}},
    {"id": 8, "label": "ünïcödé ✓ 🚀", "amount": "1e-3", "flag": False, "doc": [], "score": 8.0},
    {"id": 2, "label": "updated twice in one batch", "amount": "100", "flag": None, "doc": {}},
]


def test_upsert_through_the_fast_path_writes_what_sqlalchemy_writes(target: Target) -> None:
    target.create()
    write_both(target, [BATCH_ONE, BATCH_TWO], mode="upsert", key="id")
    rows = {r["id"]: r for r in assert_same_rows(target)}
    assert sorted(rows) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert rows[1]["label"] == "the later record wins" and rows[1]["doc"] == {"v": 2} and rows[1]["qty"] == 4
    assert rows[2]["label"] == "updated twice in one batch" and rows[2]["doc"] == {} and rows[2]["flag"] is None
    assert rows[3]["flag"] is None and rows[3]["doc"] is None and rows[3]["qty"] == 7
    assert rows[8]["label"] == "ünïcödé ✓ 🚀"
    if target.dialect == "postgresql":
        assert rows[2]["amount"] == decimal.Decimal("100")
        assert rows[1]["amount"] == decimal.Decimal("1.10")
        assert rows[1]["at"] == datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
        assert rows[4]["label"] == "true" and rows[5]["label"] == "1e+15"
        assert rows[4]["qty"] == 2 and rows[5]["qty"] == 4  # rounded half to even, as PostgreSQL casts


def test_numeric_keeps_every_digit_on_postgres(pg_target: Target) -> None:
    pg_target.create()
    digits = "12345678901234567890.123456789012345678901234567890"
    write_both(pg_target, [[{"id": 1, "amount": digits}, {"id": 2, "amount": decimal.Decimal("-0.000000001")}]],
               mode="upsert", key="id")
    rows = assert_same_rows(pg_target)
    assert [r["amount"] for r in rows] == [decimal.Decimal(digits), decimal.Decimal("-0.000000001")]


def test_insert_through_the_fast_path_writes_what_sqlalchemy_writes(target: Target) -> None:
    target.create()
    first = [r for r in BATCH_ONE if r["label"] != "the later record wins"]
    second = [{**r, "id": r["id"] + 100} for r in BATCH_TWO if r["label"] != "updated twice in one batch"]
    write_both(target, [first, second], mode="insert")
    rows = assert_same_rows(target)
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 102, 108]


def test_a_table_the_sink_creates_gets_the_same_rows_by_either_path(target: Target) -> None:
    batch = [{"id": i, "name": f"n{i}", "price": i / 4, "ok": i % 2 == 0, "tags": {"i": i}} for i in range(50)]
    write_both(target, [batch, batch[10:20]], mode="upsert", key="id")
    rows = assert_same_rows(target)
    tags = rows[3]["tags"]
    assert len(rows) == 50 and (json.loads(tags) if isinstance(tags, str) else tags) == {"i": 3}  # JSON text on SQLite


def test_with_frozen_schema_a_field_the_table_lacks_is_refused_before_anything_is_written(target: Target) -> None:
    target.create()
    sink = SqlSink(url=target.url, table=target.fast, mode="upsert", key="id", schema_evolution="freeze")
    from active_data_flow.errors import RecordValidationError

    with pytest.raises(RecordValidationError, match="nope"):
        sink.write_batch([{"id": 1}, {"id": 2, "nope": 1}])
    with pytest.raises(RecordValidationError, match="upsert key"):
        sink.write_batch([{"id": 1}, {"id": None}])
    sink.close()
    assert target.rows(target.fast) == []


# --------------------------------------------------------------------------- generated batches

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), TEXT,
                   st.floats(allow_nan=False, allow_infinity=False, width=64))
JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), TEXT),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
RECORD = st.fixed_dictionaries({
    "id": st.integers(0, 6),
    "label": SCALAR,
    "amount": st.none() | st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-(10**9), max_value=10**9),
    "flag": st.none() | st.booleans(),
    "doc": JSON_VALUE,
})
BATCHES = st.lists(st.lists(RECORD, min_size=1, max_size=12), min_size=1, max_size=3)


def _same_amount(got: Any, wanted: decimal.Decimal | None, dialect: str) -> bool:
    if wanted is None or got is None:
        return got is wanted
    if dialect == "sqlite":  # SQLite keeps NUMERIC as a float
        return float(got) == float(wanted)
    return bool(got == wanted)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=BATCHES)
def test_generated_upserts_leave_the_last_record_of_each_key(target: Target, batches: list[list[dict[str, Any]]]) -> None:
    if not sa.inspect(target.engine).has_table(target.fast):
        target.create()
    target.empty()
    write_both(target, batches, mode="upsert", key="id")
    rows = {r["id"]: r for r in assert_same_rows(target)}
    last = {r["id"]: r for batch in batches for r in batch}
    assert sorted(rows) == sorted(last)
    for key, record in last.items():
        row = rows[key]
        assert row["flag"] == record["flag"] and row["doc"] == record["doc"]
        assert _same_amount(row["amount"], record["amount"], target.dialect)
        if isinstance(record["label"], str) or record["label"] is None:
            assert row["label"] == record["label"]


# --------------------------------------------------------------------------- errors and fallbacks


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["insert", "upsert"])
def test_a_bad_value_on_the_copy_path_fails_the_batch_and_only_its_record_is_dead_lettered(
    pg_target: Target, tmp_path: Path, state_dir: Path, mode: str
) -> None:
    pg_target.create()
    # a whole number, so the sink passes it on, but too large for BIGINT: the database refuses it
    records = [{"id": i, "label": f"r{i}", "qty": 2**70 if i == 5 else i} for i in range(10)]
    summary = run_flow(
        {
            "name": "copy_bad_value",
            "source": {"type": "file", "path": str(_jsonl(tmp_path / "in.jsonl", records))},
            "sink": {"type": "sql", "url": pg_target.url, "table": pg_target.fast, "mode": mode, "key": "id"},
            "runtime": {"batch_size": 10, "retries": 0},
        },
        state_dir=str(state_dir),
    )
    assert summary.status == "partial", summary.error
    assert (summary.records_out, summary.dead_letters) == (9, 1)
    letters = [json.loads(line) for line in Path(summary.dead_letter_destination or "").read_text().splitlines()]
    assert [d["record"]["id"] for d in letters] == [5]
    assert letters[0]["stage"] == "sink" and letters[0]["error_type"] == "DataError"
    assert [r["id"] for r in pg_target.rows(pg_target.fast)] == [0, 1, 2, 3, 4, 6, 7, 8, 9]


def test_an_upsert_into_a_table_without_a_unique_key_takes_the_sqlalchemy_path(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    target.create(unique_key=False)

    def no_fast_write(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the fast path was taken")

    monkeypatch.setattr(fast_module.FastWriter, "write", no_fast_write)
    sink = SqlSink(url=target.url, table=target.fast, mode="upsert", key="id")
    sink.open()
    sink.write_batch([{"id": 1, "label": "a"}, {"id": 2, "label": "b"}, {"id": 1, "label": "c"}])
    sink.write_batch([{"id": 2, "label": "d"}])
    sink.close()
    assert [(r["id"], r["label"]) for r in target.rows(target.fast)] == [(1, "c"), (2, "d")]


def test_other_databases_and_drivers_get_no_fast_writer() -> None:
    from sqlalchemy.dialects.mysql.pymysql import MySQLDialect_pymysql
    from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2

    table = sa.Table("t", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    for dialect in (MySQLDialect_pymysql(), PGDialect_psycopg2()):
        assert fast_module.fast_writer(table, dialect, ["id"], "upsert", True) is None
        assert fast_module.fast_writer(table, dialect, ["id"], "insert", False) is None


@pytest.mark.parametrize(
    ("value", "text"),
    [(1e15, "1e+15"), (1e14, "100000000000000"), (123456789012345.0, "123456789012345"), (1e16, "1e+16"),
     (0.0001, "0.0001"), (1e-05, "1e-05"), (1.5, "1.5"), (-0.0, "-0"), (0.0, "0"), (2.5e-07, "2.5e-07"),
     (float("inf"), "Infinity"), (float("-inf"), "-Infinity"), (float("nan"), "NaN"), (-1234.5678, "-1234.5678"),
     (1.7976931348623157e308, "1.7976931348623157e+308")],
)
def test_floats_become_the_text_postgresql_writes_for_them(value: float, text: str) -> None:
    assert fast_module.pg_float_text(value) == text


@pytest.mark.postgres
@settings(max_examples=60, deadline=None)
@given(value=st.floats(width=64))
def test_float_text_matches_the_server(value: float) -> None:
    import psycopg

    with psycopg.connect(PG_URL.replace("+psycopg", "")) as conn:
        row = conn.execute("SELECT %s::float8::text", (value,)).fetchone()
    assert row is not None and fast_module.pg_float_text(value) == row[0]


@pytest.mark.postgres
def test_an_upsert_whose_role_may_not_create_temporary_tables_goes_through_sqlalchemy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import psycopg

    admin = PG_URL.replace("+psycopg", "")
    suffix = uuid.uuid4().hex[:8]
    database, role = f"adf_notemp_{suffix}", f"adf_notemp_{suffix}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"CREATE DATABASE {database} OWNER {role}")
        conn.execute(f"REVOKE TEMPORARY ON DATABASE {database} FROM PUBLIC, {role}")
    url = f"postgresql+psycopg://{role}@127.0.0.1:5432/{database}"
    try:
        sink = SqlSink(url=url, table="t", mode="upsert", key="id")
        sink.open()
        sink.write_batch([{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 1, "v": "c"}])
        sink.write_batch([{"id": 2, "v": "d"}])
        sink.close()
        with psycopg.connect(url.replace("+psycopg", "")) as conn:
            assert conn.execute("SELECT id, v FROM t ORDER BY id").fetchall() == [(1, "c"), (2, "d")]
        assert "no temporary staging table" in caplog.text
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            conn.execute(f"DROP ROLE IF EXISTS {role}")
