"""The sql sink and source against real SQLite files and the real PostgreSQL server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from active_data_flow.connectors.sql import SqlRangeSplit, SqlSink, SqlSource
from active_data_flow.context import RunContext
from active_data_flow.errors import ConfigError, MissingExtraError, RecordValidationError
from active_data_flow.source import InlineContexts, ReaderStatus
from active_data_flow.state import MemoryStateStore, SqliteStateStore

ROOT = Path(__file__).resolve().parent.parent
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@dataclass
class Db:
    """One database under test and a fresh table name in it."""

    url: str
    table: str
    engine: sa.Engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def rows(self, order_by: str = "id") -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            result = conn.execute(sa.text(f'SELECT * FROM "{self.table}" ORDER BY {order_by}'))
            return [dict(r) for r in result.mappings()]

    def execute(self, sql: str, params: Any = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params or {})

    def column_types(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                info = conn.execute(sa.text(f'PRAGMA table_info("{self.table}")')).fetchall()
                return {r[1]: r[2].upper() for r in info}
            info = conn.execute(
                sa.text(
                    "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = :t"
                ),
                {"t": self.table},
            ).fetchall()
            return {r[0]: r[1].upper() for r in info}


def _sqlite_db(tmp_path: Path) -> Iterator[Db]:
    url = f"sqlite:///{tmp_path / 'flow.db'}"
    engine = sa.create_engine(url)
    yield Db(url, "orders", engine)
    engine.dispose()


def _postgres_db() -> Iterator[Db]:
    engine = sa.create_engine(PG_URL)
    table = f"adf_test_{uuid.uuid4().hex[:12]}"
    try:
        yield Db(PG_URL, table, engine)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "sqlite":
        yield from _sqlite_db(tmp_path)
    else:
        yield from _postgres_db()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Db]:
    yield from _sqlite_db(tmp_path)


@pytest.fixture
def pg_db() -> Iterator[Db]:
    yield from _postgres_db()


def _write(sink: SqlSink, *batches: list[dict[str, Any]]) -> None:
    sink.open()
    try:
        for batch in batches:
            sink.write_batch(batch)
            sink.flush()
    finally:
        sink.close()


def _fill(db: Db, n: int, start: int = 1) -> None:
    _write(
        SqlSink(url=db.url, table=db.table, key="id"),
        [{"id": i, "name": f"row {i}", "amount": i * 1.5} for i in range(start, start + n)],
    )


# --------------------------------------------------------------------------- sink


def test_insert_creates_the_table_from_the_first_batch_and_writes_every_row(db: Db) -> None:
    sink = SqlSink(url=db.url, table=db.table)
    assert sink.idempotent is False
    _write(
        sink,
        [
            {"id": 1, "name": "ada", "price": 9.5, "paid": True},
            {"id": 2, "name": "bob", "price": 3, "paid": False},
        ],
        [{"id": 3, "name": "cy"}],
    )
    rows = db.rows()
    assert [(r["id"], r["name"]) for r in rows] == [(1, "ada"), (2, "bob"), (3, "cy")]
    assert rows[0]["price"] == 9.5 and rows[1]["price"] == 3.0
    assert rows[2]["price"] is None and rows[2]["paid"] is None  # missing columns -> NULL
    types = db.column_types()
    assert types["id"] == "BIGINT"
    assert types["name"] == "TEXT"
    assert types["price"] in ("DOUBLE PRECISION", "DOUBLE")
    assert types["paid"] == "BOOLEAN"


def test_upsert_twice_with_the_same_keys_leaves_one_row_per_key_with_the_newer_values(db: Db) -> None:
    sink = SqlSink(url=db.url, table=db.table, mode="upsert", key="id")
    assert sink.idempotent is True
    first = [{"id": i, "status": "new", "total": i * 10} for i in range(1, 6)]
    second = [{"id": i, "status": "paid", "total": i * 100} for i in range(3, 8)]
    _write(sink, first)
    _write(SqlSink(url=db.url, table=db.table, mode="upsert", key="id"), second, second)
    rows = db.rows()
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert [r["status"] for r in rows] == ["new", "new", "paid", "paid", "paid", "paid", "paid"]
    assert [r["total"] for r in rows] == [10, 20, 300, 400, 500, 600, 700]


def test_upsert_with_a_composite_key_and_a_key_repeated_in_one_batch_keeps_the_last(db: Db) -> None:
    sink = SqlSink(url=db.url, table=db.table, mode="upsert", key=["id", "region"])
    batch = [
        {"id": 1, "region": "eu", "v": "a"},
        {"id": 1, "region": "us", "v": "b"},
        {"id": 1, "region": "eu", "v": "c"},
    ]
    _write(sink, batch)
    rows = db.rows(order_by="region")
    assert [(r["region"], r["v"]) for r in rows] == [("eu", "c"), ("us", "b")]


def test_dict_and_list_values_are_stored_as_json(db: Db) -> None:
    records: list[dict[str, Any]] = [
        {"id": 1, "meta": {"tags": ["a", "b"], "score": 1.5}, "items": [1, 2, 3]},
        {"id": 2, "meta": {"nested": {"deep": True}}, "items": []},
        {"id": 3},
    ]
    _write(SqlSink(url=db.url, table=db.table, mode="upsert", key="id"), records)
    rows = db.rows()
    if db.dialect == "postgresql":
        assert db.column_types()["meta"] == "JSONB"
        meta = [r["meta"] for r in rows]
        items = [r["items"] for r in rows]
    else:
        assert db.column_types()["meta"] == "TEXT"
        meta = [json.loads(r["meta"]) if r["meta"] is not None else None for r in rows]
        items = [json.loads(r["items"]) if r["items"] is not None else None for r in rows]
    assert meta == [{"tags": ["a", "b"], "score": 1.5}, {"nested": {"deep": True}}, None]
    assert items == [[1, 2, 3], [], None]


def test_with_frozen_schema_a_field_the_table_lacks_is_an_error_naming_it_and_nothing_is_written(db: Db) -> None:
    sink = SqlSink(url=db.url, table=db.table)
    _write(sink, [{"id": 1, "name": "a"}])
    sink = SqlSink(url=db.url, table=db.table, schema_evolution="freeze")
    with pytest.raises(RecordValidationError) as info:
        _write(sink, [{"id": 2, "name": "b"}, {"id": 3, "name": "c", "colour": "red"}])
    assert info.value.field == "colour"
    assert "colour" in str(info.value) and "no such column" in str(info.value)
    assert [r["id"] for r in db.rows()] == [1]


def test_configured_columns_write_only_those_and_ignore_other_fields(db: Db) -> None:
    sink = SqlSink(url=db.url, table=db.table, columns=["id", "name"])
    _write(sink, [{"id": 1, "name": "a", "secret": "x"}, {"id": 2}])
    assert db.rows() == [{"id": 1, "name": "a"}, {"id": 2, "name": None}]


def test_text_columns_of_an_existing_table_get_json_text_and_iso_dates(sqlite_db: Db) -> None:
    sqlite_db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, payload TEXT, day DATE, at DATETIME)")
    sink = SqlSink(url=sqlite_db.url, table="orders", mode="upsert", key="id")
    _write(sink, [{"id": 1, "payload": {"a": [1, 2]}, "day": "2024-01-31", "at": "2024-01-31T12:30:00"}])
    row = sqlite_db.rows()[0]
    assert json.loads(row["payload"]) == {"a": [1, 2]}
    assert row["day"] == "2024-01-31"
    assert row["at"].startswith("2024-01-31 12:30:00")


def test_upsert_without_a_unique_key_constraint_falls_back_to_delete_then_insert(sqlite_db: Db) -> None:
    sqlite_db.execute("CREATE TABLE orders (id INTEGER, v TEXT)")
    sink = SqlSink(url=sqlite_db.url, table="orders", mode="upsert", key="id")
    _write(sink, [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}])
    _write(
        SqlSink(url=sqlite_db.url, table="orders", mode="upsert", key="id"),
        [{"id": 2, "v": "B"}, {"id": 3, "v": "c"}],
    )
    assert sqlite_db.rows() == [{"id": 1, "v": "a"}, {"id": 2, "v": "B"}, {"id": 3, "v": "c"}]


def test_a_missing_table_without_create_table_is_reported_by_setup(db: Db) -> None:
    sink = SqlSink(url=db.url, table=db.table, create_table=False)
    with pytest.raises(ConfigError, match="does not exist"):
        sink.setup()
    with pytest.raises(ConfigError, match="does not exist"):
        _write(sink, [{"id": 1}])


@pytest.mark.postgres
def test_postgres_schema_attribute_writes_into_that_schema(pg_db: Db) -> None:
    schema = f"adf_schema_{uuid.uuid4().hex[:8]}"
    pg_db.execute(f'CREATE SCHEMA "{schema}"')
    try:
        sink = SqlSink(url=pg_db.url, table="t", schema=schema, mode="upsert", key="id")
        _write(sink, [{"id": 1, "v": "x"}], [{"id": 1, "v": "y"}])
        with pg_db.engine.connect() as conn:
            assert conn.execute(sa.text(f'SELECT id, v FROM "{schema}".t')).fetchall() == [(1, "y")]
    finally:
        pg_db.execute(f'DROP SCHEMA "{schema}" CASCADE')


_WORKER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from active_data_flow.connectors.sql import SqlSink
    worker, url, table = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    sink = SqlSink(url=url, table=table, mode={mode!r}, key="id")
    sink.open()
    for b in range(20):
        base = worker * 100_000 + b * 50
        sink.write_batch([{{"id": base + i, "worker": worker, "payload": {{"b": b}}}} for i in range(50)])
        sink.flush()
    sink.close()
    """
)


def _two_writers(url: str, table: str, mode: str) -> dict[int, int]:
    """Two processes write 1000 rows each into ``table`` (created by whichever comes first)."""
    script = _WORKER.format(root=str(ROOT), mode=mode)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(w), url, table], stderr=subprocess.PIPE, text=True
        )
        for w in (1, 2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(f'SELECT worker, COUNT(*), COUNT(DISTINCT id) FROM "{table}" GROUP BY worker')
        )
        counts = {int(w): int(n) for w, n, distinct in rows if n == distinct}
    engine.dispose()
    return counts


@pytest.mark.parametrize("mode", ["insert", "upsert"])
def test_two_processes_write_batches_concurrently_into_one_sqlite_file(tmp_path: Path, mode: str) -> None:
    assert _two_writers(f"sqlite:///{tmp_path / 'shared.db'}", "events", mode) == {1: 1000, 2: 1000}


@pytest.mark.postgres
def test_two_processes_create_and_fill_one_postgres_table_concurrently(pg_db: Db) -> None:
    assert _two_writers(pg_db.url, pg_db.table, "upsert") == {1: 1000, 2: 1000}


def test_describe_hides_the_password() -> None:
    sink = SqlSink(url="postgresql+psycopg://app:hunter2@db:5432/x", table="t")
    assert "hunter2" not in sink.describe() and "table t" in sink.describe()
    source = SqlSource(url="postgresql://app:hunter2@db/x", table="t")
    assert "hunter2" not in source.describe()


# --------------------------------------------------------------------------- source


def test_split_size_smaller_than_the_rows_gives_several_splits_and_every_row_once(db: Db) -> None:
    _fill(db, 100)
    source = SqlSource(url=db.url, table=db.table, cursor_column="id", split_size=7)
    splits, upper = source.plan_splits()
    assert len(splits) == 15 and upper == 100
    assert splits[0].lo is None and splits[0].hi == 7 and splits[1].lo == 7 and splits[-1].hi == 100
    rows = list(source.each(batch_size=4))
    assert sorted(r["id"] for r in rows) == list(range(1, 101))
    assert rows[0] == {"id": 1, "name": "row 1", "amount": 1.5}


def test_every_split_is_read_by_one_of_several_readers_exactly_once(sqlite_db: Db) -> None:
    _fill(sqlite_db, 60)
    source = SqlSource(url=sqlite_db.url, table=sqlite_db.table, cursor_column="id", split_size=10)
    splits, _ = source.plan_splits()
    seen: list[int] = []
    for split in splits:  # each split handed to its own reader, as the engine would
        ctx = InlineContexts()
        ctx.enumerator = source.create_enumerator(
            ctx, {"pending": [split.to_dict()], "seen": [], "upper": 60}
        )
        ctx.enumerator.start()
        reader = source.create_reader(ctx)
        ctx.reader = reader
        reader.start()
        while True:
            batch = reader.poll_batch(3)
            seen.extend(r["id"] for r in batch.records)
            if batch.status is ReaderStatus.END_OF_INPUT:
                break
        reader.close()
    assert sorted(seen) == list(range(1, 61))


def test_a_reader_resumes_from_its_snapshot_mid_split_without_loss_or_duplicates(db: Db) -> None:
    _fill(db, 30)
    source = SqlSource(url=db.url, table=db.table, cursor_column="id", split_size=10)

    ctx = InlineContexts()
    ctx.enumerator = source.create_enumerator(ctx)
    ctx.enumerator.start()
    reader = source.create_reader(ctx)
    ctx.reader = reader
    reader.start()
    first = [r["id"] for r in reader.poll_batch(4).records]
    first += [r["id"] for r in reader.poll_batch(4).records]
    held = reader.snapshot_state()
    enumerator_state = json.loads(json.dumps(ctx.enumerator.snapshot_state()))
    held_state = json.loads(json.dumps([s.to_dict() for s in held]))
    reader.close()  # the process "crashes" here
    assert first == list(range(1, 9))
    assert held_state[0]["position"] == 8 and held_state[0]["hi"] == 10

    resumed = SqlSource(url=db.url, table=db.table, cursor_column="id", split_size=10)
    ctx2 = InlineContexts()
    ctx2.enumerator = resumed.create_enumerator(ctx2, enumerator_state)
    ctx2.enumerator.start()
    ctx2.enumerator.add_splits_back([resumed.split_from_dict(d) for d in held_state], 0)
    reader2 = resumed.create_reader(ctx2)
    ctx2.reader = reader2
    reader2.start()
    rest: list[int] = []
    while True:
        batch = reader2.poll_batch(4)
        rest.extend(r["id"] for r in batch.records)
        if batch.status is ReaderStatus.END_OF_INPUT:
            break
    reader2.close()
    assert first + rest == list(range(1, 31))


def test_rows_sharing_a_cursor_value_across_a_batch_boundary_are_all_read_once(db: Db) -> None:
    records = [{"id": i, "version": v} for i, v in enumerate([1, 2, 2, 2, 2, 2, 3, 3, 4, 5, 5, 5], start=1)]
    _write(SqlSink(url=db.url, table=db.table, key="id"), records)
    source = SqlSource(url=db.url, table=db.table, cursor_column="version", split_size=2)
    rows = list(source.each(batch_size=3))
    assert sorted(r["id"] for r in rows) == list(range(1, 13))


def test_incremental_mode_reads_only_rows_added_since_the_last_successful_run(db: Db) -> None:
    store = MemoryStateStore()
    context = RunContext(flow_name="orders_sync", store=store)

    def run() -> list[int]:
        source = SqlSource(url=db.url, table=db.table, cursor_column="id", incremental=True, split_size=4)
        source.run_context = context
        ids = [r["id"] for r in source.each(batch_size=3)]
        source.on_run_success()
        return ids

    _fill(db, 10)
    assert run() == list(range(1, 11))
    assert store.get("sql_cursor/orders_sync") == 10
    _fill(db, 5, start=11)
    assert run() == list(range(11, 16))
    assert store.get("sql_cursor/orders_sync") == 15
    assert run() == []
    assert store.get("sql_cursor/orders_sync") == 15


def test_an_incremental_run_that_fails_saves_nothing(sqlite_db: Db, tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path / "state.db"))
    _fill(sqlite_db, 5)
    source = SqlSource(url=sqlite_db.url, table=sqlite_db.table, cursor_column="id", incremental=True)
    source.run_context = RunContext(flow_name="f", store=store)
    assert len(list(source.each())) == 5  # ... and the run fails: on_run_success is not called
    assert store.get("sql_cursor/f") is None
    assert len(list(source.each())) == 5
    store.close()


@pytest.mark.postgres
def test_incremental_mode_with_a_timestamp_cursor_on_postgres(pg_db: Db) -> None:
    pg_db.execute(
        f'CREATE TABLE "{pg_db.table}" (id serial PRIMARY KEY, updated_at timestamptz NOT NULL, v numeric(8,2))'
    )
    pg_db.execute(
        f'INSERT INTO "{pg_db.table}" (updated_at, v) '
        "SELECT timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute', g * 1.25 FROM generate_series(1, 6) g"
    )
    store = MemoryStateStore()
    context = RunContext(flow_name="ts_flow", store=store)

    def run() -> list[dict[str, Any]]:
        source = SqlSource(url=pg_db.url, table=pg_db.table, cursor_column="updated_at", incremental=True)
        source.run_context = context
        rows = list(source.each(batch_size=4))
        source.on_run_success()
        return rows

    rows = run()
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0]["updated_at"] == "2024-01-01T00:01:00+00:00" and rows[0]["v"] == "1.25"
    assert store.get("sql_cursor/ts_flow") == {"$datetime": "2024-01-01T00:06:00+00:00"}
    pg_db.execute(
        f"INSERT INTO \"{pg_db.table}\" (updated_at, v) VALUES ('2024-01-01 00:06:00+00', 0), ('2024-01-02 00:00:00+00', 1)"
    )
    assert [r["id"] for r in run()] == [8]  # 7 has the saved cursor value: not newer


def test_a_query_source_with_columns_returns_only_those_columns(db: Db) -> None:
    _fill(db, 20)
    source = SqlSource(
        url=db.url,
        query=f'SELECT id, name, amount FROM "{db.table}" WHERE amount > 15;',
        cursor_column="id",
        columns=["name"],
        split_size=5,
    )
    rows = list(source.each(batch_size=4))
    assert rows == [{"name": f"row {i}"} for i in range(11, 21)]


def test_without_a_cursor_column_one_split_is_streamed_and_resumes_by_row_count(sqlite_db: Db) -> None:
    _fill(sqlite_db, 9)
    source = SqlSource(url=sqlite_db.url, table=sqlite_db.table)
    assert len(list(source.each(batch_size=2))) == 9
    ctx = InlineContexts()
    ctx.enumerator = source.create_enumerator(ctx, {"pending": [], "seen": ["sql-0"], "upper": None})
    ctx.enumerator.start()
    ctx.enumerator.add_splits_back([SqlRangeSplit("sql-0", position=6)], 0)
    reader = source.create_reader(ctx)
    ctx.reader = reader
    reader.start()
    batch = reader.poll_batch(10)
    reader.close()
    assert len(batch.records) == 3 and batch.status is ReaderStatus.END_OF_INPUT


def test_an_empty_table_has_no_splits(sqlite_db: Db) -> None:
    sqlite_db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    source = SqlSource(url=sqlite_db.url, table="orders", cursor_column="id")
    assert source.plan_splits() == ([], None)
    assert list(source.each()) == []


def test_range_split_round_trips_through_json() -> None:
    split = SqlRangeSplit(
        "sql-3", lo={"$decimal": "4.00"}, hi={"$decimal": "7.00"}, position={"$decimal": "5.50"}
    )
    again = SqlRangeSplit.from_dict(json.loads(json.dumps(split.to_dict())))
    assert again == split


# --------------------------------------------------------------------------- configuration


def test_upsert_without_key_is_reported_with_every_other_problem() -> None:
    with pytest.raises(ConfigError) as info:
        SqlSink(url="sqlite:///x.db", mode="upsert", batch_size=0, colour="red")
    problems = " | ".join(info.value.problems)
    assert "'table' is required" in problems
    assert "'key': mode 'upsert' needs the key column(s)" in problems
    assert "'batch_size'" in problems
    assert "unknown key 'colour'" in problems
    assert len(info.value.problems) == 4


def test_key_must_be_among_configured_columns() -> None:
    with pytest.raises(ConfigError, match="must be among 'columns'"):
        SqlSink(url="sqlite:///x.db", table="t", mode="upsert", key="id", columns=["name"])


def test_source_with_both_table_and_query_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        SqlSource(url="sqlite:///x.db", table="t", query="SELECT 1", incremental=True, split_size=0)
    problems = info.value.problems
    assert any("not both" in p for p in problems)
    assert any("'incremental' needs 'cursor_column'" in p for p in problems)
    assert any("'split_size'" in p for p in problems)
    assert len(problems) == 3


def test_source_without_table_or_query_and_without_url() -> None:
    with pytest.raises(ConfigError) as info:
        SqlSource()
    assert len(info.value.problems) == 2
    assert any("'url' is required" in p for p in info.value.problems)
    assert any("'table' or 'query' is required" in p for p in info.value.problems)


def test_a_missing_sqlalchemy_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    sink = SqlSink(url="sqlite:///x.db", table="t")
    with pytest.raises(MissingExtraError) as info:
        sink.open()
    assert info.value.extra == "sql" and "active-data-flow[sql]" in str(info.value)


def test_importing_the_sql_connectors_does_not_import_sqlalchemy() -> None:
    code = "import sys; import active_data_flow.connectors.sql, active_data_flow.connectors.cache; print('sqlalchemy' in sys.modules, 'redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_a_flow_copies_a_table_incrementally_with_two_reader_processes(tmp_path: Path) -> None:
    from active_data_flow.engine import run_flow

    src, out = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'out.db'}"
    _write(
        SqlSink(url=src, table="orders"),
        [{"id": i, "name": f"n{i}", "meta": {"i": i}} for i in range(1, 501)],
    )
    spec = {
        "name": "copy_orders",
        "source": {
            "type": "sql",
            "url": src,
            "table": "orders",
            "cursor_column": "id",
            "split_size": 60,
            "incremental": True,
        },
        "sink": {"type": "sql", "url": out, "table": "copy", "mode": "upsert", "key": "id"},
        "runtime": {"batch_size": 32, "parallelism": 2},
    }
    store = SqliteStateStore(str(tmp_path / "state.db"))
    first = run_flow(spec, state_dir=str(tmp_path / "runs"), store=store)
    assert first.status == "success", first.error
    _write(
        SqlSink(url=src, table="orders"),
        [{"id": i, "name": f"n{i}", "meta": {"i": i}} for i in range(501, 511)],
    )
    second = run_flow(spec, state_dir=str(tmp_path / "runs"), store=store)
    assert second.status == "success", second.error
    assert store.get("sql_cursor/copy_orders") == 510
    store.close()
    engine = sa.create_engine(out)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*), COUNT(DISTINCT id), MAX(id) FROM copy")).one() == (
            510,
            510,
            510,
        )
        meta = conn.execute(sa.text("SELECT meta FROM copy WHERE id = 505")).scalar_one()
    engine.dispose()
    assert json.loads(meta) == {"i": 505}
