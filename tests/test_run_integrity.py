"""A run's status is true and its counts add up: in + added by steps = out + filtered + dead letters
+ in flight. Dead letters are for refused records and can be replayed; a changed flow never
silently resumes; run ids are never reused."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from active_data_flow.engine import SpecChangedError, run_flow

ROOT = Path(__file__).resolve().parent.parent


def adf(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), **(env or {})}
    return subprocess.run([sys.executable, "-m", "active_data_flow.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=180)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def adds_up(s: dict[str, Any]) -> bool:
    return s["records_in"] + s["fanned_out"] == s["records_out"] + s["filtered"] + s["dead_letters"] + s["in_flight"]


def last_json(text: str) -> dict[str, Any]:
    return json.loads(text.strip().splitlines()[-1])


# --------------------------------------------------------------------------- counts


@pytest.mark.parametrize("parallelism", [1, 2])
def test_counts_add_up_with_filtered_fanned_out_and_dead_letters(tmp_path: Path, state_dir: Path, parallelism: int) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"n": i, "bad": i % 10 == 3} for i in range(200)])
    out = tmp_path / "out.jsonl"
    summary = run_flow(
        {
            "name": "counted",
            "source": {"type": "file", "path": str(src), "split_bytes": 2000},
            "steps": [
                {"type": "python", "function": "flowlib.integrity:drop_odd"},        # 100 filtered
                {"type": "python", "function": "flowlib.integrity:reject_when"},     # refuses none: n % 10 == 3 is odd
                {"type": "filter", "field": "n", "op": "lt", "value": 150},          # 25 more filtered
                {"type": "python", "function": "flowlib.integrity:triple"},          # 75 -> 225: 150 added
            ],
            "sink": {"type": "file", "path": str(out)},
            "runtime": {"batch_size": 17, "parallelism": parallelism},
        },
        state_dir=str(state_dir),
    )
    s = summary.to_dict()
    assert summary.status == "success", summary.error
    assert (s["records_in"], s["filtered"], s["fanned_out"], s["records_out"], s["dead_letters"]) == (200, 125, 150, 225, 0)
    assert adds_up(s) and s["in_flight"] == 0
    assert len(read_jsonl(out)) == 225


def test_a_run_with_some_dead_letters_is_partial_and_says_why_in_its_last_line(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"n": i, "bad": i in (4, 9, 11)} for i in range(30)])
    spec = tmp_path / "flow.json"
    spec.write_text(json.dumps({
        "name": "some_bad", "source": {"type": "file", "path": str(src)},
        "steps": [{"type": "python", "function": "flowlib.integrity:reject_when"}],
        "sink": {"type": "file", "path": str(tmp_path / "out.jsonl")},
    }))
    res = adf("run", str(spec), "--state-dir", str(tmp_path / "s"))
    assert res.returncode == 0, res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert "3 records dead-lettered" in last and "ValueError: record N is marked bad" in last, last
    assert "dead letters went to:" in last and "adf dead-letters replay" in last
    assert res.stdout.startswith("PARTIAL: flow some_bad partial")
    summary = last_json(adf("run", str(spec), "--state-dir", str(tmp_path / "s2"), "--json").stdout)
    assert summary["status"] == "partial" and summary["dead_letters"] == 3 and adds_up(summary)
    assert summary["dead_letter_reasons"] == [{"reason": "ValueError: record N is marked bad", "count": 3}]


def test_a_run_that_rejects_every_record_fails_with_the_reason(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"n": i, "bad": True} for i in range(1200)])
    spec = tmp_path / "flow.json"
    spec.write_text(json.dumps({
        "name": "all_bad", "source": {"type": "file", "path": str(src)},
        "steps": [{"type": "python", "function": "flowlib.integrity:reject_when"}],
        "sink": {"type": "file", "path": str(tmp_path / "out.jsonl")},
    }))
    res = adf("run", str(spec), "--state-dir", str(tmp_path / "s"), "--json")
    assert res.returncode == 1, res.stdout
    summary = last_json(res.stdout)
    assert summary["status"] == "failed" and summary["error_type"] == "DeadLetterShareError"
    assert summary["records_out"] == 0 and summary["dead_letters"] == 1200 and adds_up(summary)
    assert "every record was rejected" in summary["error"] and "is marked bad" in summary["error"]
    assert "every record was rejected" in res.stderr  # the one line on stderr says why


def test_a_dead_letter_share_above_max_dead_letter_ratio_fails_the_run(tmp_path: Path, state_dir: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"n": i, "bad": i % 5 == 0} for i in range(100)])
    flow = {
        "name": "ratio", "source": {"type": "file", "path": str(src)},
        "steps": [{"type": "python", "function": "flowlib.integrity:reject_when"}],
        "sink": {"type": "file", "path": str(tmp_path / "out.jsonl")},
        "runtime": {"max_dead_letter_ratio": 0.1},
    }
    summary = run_flow(flow, state_dir=str(state_dir))
    assert summary.status == "failed" and summary.error_type == "DeadLetterShareError"
    assert "20% of the records were rejected, more than runtime.max_dead_letter_ratio=0.1" in (summary.error or "")
    flow["runtime"] = {"max_dead_letter_ratio": 0.25}
    assert run_flow(flow, state_dir=str(state_dir)).status == "partial"


def test_a_failed_runs_summary_counts_the_rows_it_wrote_and_the_limit_message_agrees(tmp_path: Path, state_dir: Path) -> None:
    """The batch that passed max_dead_letters was written (3 rows) and dead-lettered (1) before
    the run failed: the summary says so, and the message gives the same count."""
    db = tmp_path / "out.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("INSERT INTO t VALUES (2, 'already there')")
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "v": str(i)} for i in range(1, 5)])
    summary = run_flow(
        {"name": "limit", "source": {"type": "file", "path": str(src)},
         "sink": {"type": "sql", "url": f"sqlite:///{db}", "table": "t"},
         "runtime": {"max_dead_letters": 0, "retries": 0}},
        state_dir=str(state_dir),
    )
    assert summary.status == "failed"
    s = summary.to_dict()
    assert (s["records_in"], s["records_out"], s["dead_letters"]) == (4, 3, 1) and adds_up(s)
    assert "1 records were dead-lettered, more than runtime.max_dead_letters=0" in (summary.error or "")
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone() == (4,)


# --------------------------------------------------------------------------- origins


def test_every_dead_letter_says_where_its_record_came_from(tmp_path: Path, state_dir: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("n,bad\n" + "".join(f"{i},{'x' if i in (3, 8) else ''}\n" for i in range(12)) + "oops\n")
    db = tmp_path / "out.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, bad TEXT, seen BOOLEAN, CHECK (n <> 10))")
    summary = run_flow(
        {"name": "origins", "source": {"type": "file", "path": str(src)},
         "schema": {"n": "integer"},
         "steps": [{"type": "python", "function": "flowlib.integrity:new_dict"},
                   {"type": "python", "function": "flowlib.integrity:reject_when"}],
         "sink": {"type": "sql", "url": f"sqlite:///{db}", "table": "t"},
         "runtime": {"batch_size": 5, "retries": 0}},
        state_dir=str(state_dir),
    )
    assert summary.status == "partial", summary.error
    letters = read_jsonl(Path(summary.dead_letter_destination or ""))
    by_stage = {(d["stage"], d["origin"].get("line")): d for d in letters}
    # the record that entered the file on line 5 (n=3), refused by the second step after the
    # first made a new dict of it; n=10 refused by the table's CHECK; the malformed last line
    assert set(by_stage) == {("step", 5), ("step", 10), ("sink", 12), ("source", 14)}, letters
    assert all(d["origin"]["file"] == str(src) for d in letters)


# --------------------------------------------------------------------------- resume


def _crash_into(tmp_path: Path, db: str) -> tuple[Path, Path]:
    src = write_jsonl(tmp_path / "in.jsonl", [{"n": i} for i in range(4799)])
    spec = tmp_path / "flow.json"
    spec.write_text(json.dumps({
        "name": "switch", "source": {"type": "file", "path": str(src)},
        "steps": [{"type": "python", "function": "flowlib.integrity:die_at", "options": {"n": 2500}}],
        "sink": {"type": "sql", "url": f"sqlite:///{tmp_path / db}", "table": "t", "mode": "upsert", "key": "n"},
        "runtime": {"batch_size": 100},
    }))
    state = tmp_path / "s"
    res = adf("run", str(spec), "--state-dir", str(state))
    assert res.returncode == 3, res.stderr  # killed mid-run, checkpoint left behind
    assert (state / "switch" / "checkpoint" / "run.json").exists()
    return spec, state


def _rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(DISTINCT n) FROM t").fetchone()[0])


def test_a_changed_sink_never_silently_resumes_and_says_what_changed(tmp_path: Path) -> None:
    spec, state = _crash_into(tmp_path, "a.db")
    assert 0 < _rows(tmp_path / "a.db") < 4799
    b = f"sink.url=sqlite:///{tmp_path / 'b.db'}"
    stop = {"options": {"n": -1}}  # the crash no longer happens
    res = adf("run", str(spec), "--state-dir", str(state), "--set", b,
              "--set", f"steps={json.dumps([{'type': 'python', 'function': 'flowlib.integrity:die_at', **stop}])}")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "sink" in res.stderr and "steps" in res.stderr and "--fresh" in res.stderr, res.stderr
    assert not (tmp_path / "b.db").exists()
    res = adf("run", str(spec), "--state-dir", str(state), "--set", b, "--set", "steps=[]", "--fresh", "--json")
    assert res.returncode == 0, res.stderr
    assert last_json(res.stdout)["resumed"] is False and _rows(tmp_path / "b.db") == 4799


def test_resume_anyway_resumes_a_changed_step_or_sink(tmp_path: Path) -> None:
    spec, state = _crash_into(tmp_path, "a.db")
    done = _rows(tmp_path / "a.db")
    res = adf("run", str(spec), "--state-dir", str(state), "--set", "steps=[]", "--resume-anyway", "--json")
    assert res.returncode == 0, res.stderr
    summary = last_json(res.stdout)
    assert summary["resumed"] is True and summary["records_in"] < 4799
    assert done < 4799 and _rows(tmp_path / "a.db") == 4799


def test_resume_anyway_never_resumes_a_changed_source(tmp_path: Path) -> None:
    spec, state = _crash_into(tmp_path, "a.db")
    other = write_jsonl(tmp_path / "other.jsonl", [{"n": 1}])
    res = adf("run", str(spec), "--state-dir", str(state), "--set", f"source.path={other}", "--resume-anyway")
    assert res.returncode == 2, res.stdout
    assert "its source changed" in res.stderr and "--fresh" in res.stderr and "--resume-anyway" not in res.stderr


def test_an_unchanged_flow_resumes_and_the_python_api_refuses_a_changed_one(tmp_path: Path) -> None:
    spec, state = _crash_into(tmp_path, "a.db")
    data = json.loads(spec.read_text())
    with pytest.raises(SpecChangedError) as info:
        run_flow(dict(data, sink={**data["sink"], "url": f"sqlite:///{tmp_path / 'elsewhere.db'}"}), state_dir=str(state))
    assert info.value.changed == ["sink"]
    data["steps"] = []
    summary = run_flow(data, state_dir=str(state), on_spec_change="resume")
    assert summary.resumed and summary.status == "success" and _rows(tmp_path / "a.db") == 4799


def test_a_run_id_is_never_reused(tmp_path: Path, state_dir: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"n": 1, "bad": True}, {"n": 2}])
    flow = {"name": "ids", "source": {"type": "file", "path": str(src)},
            "steps": [{"type": "python", "function": "flowlib.integrity:reject_when"}],
            "sink": {"type": "file", "path": str(tmp_path / "out.jsonl")}}
    first = run_flow(flow, state_dir=str(state_dir), run_id="run-2")
    assert first.run_id == "run-2"
    before = (state_dir / "ids" / "runs" / "run-2" / "dead_letters.jsonl").read_text()
    second = run_flow(flow, state_dir=str(state_dir), run_id="run-2")
    assert second.run_id != "run-2" and second.run_id.startswith("run-2-")
    assert (state_dir / "ids" / "runs" / "run-2" / "dead_letters.jsonl").read_text() == before
    assert json.loads((state_dir / "ids" / "runs" / "run-2" / "summary.json").read_text())["run_id"] == "run-2"


# --------------------------------------------------------------------------- dead letters you can act on


def test_dead_letters_list_show_and_replay_after_a_fix(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"n": i, "bad": i % 4 == 1}) + "\n" for i in range(20)) + "{not json\n")
    db = tmp_path / "out.db"
    spec = tmp_path / "flow.json"
    spec.write_text(json.dumps({
        "name": "fixable", "source": {"type": "file", "path": str(src)},
        "steps": [{"type": "python", "function": "flowlib.integrity:reject_when", "options": {"env": "ADF_TEST_FIXED"}},
                  {"type": "python", "function": "flowlib.steps:double"}],
        "sink": {"type": "sql", "url": f"sqlite:///{db}", "table": "t", "mode": "upsert", "key": "n"},
    }))
    state = tmp_path / "s"
    summary = last_json(adf("run", str(spec), "--state-dir", str(state), "--json").stdout)
    assert summary["status"] == "partial" and summary["dead_letters"] == 6  # 5 refused + 1 malformed line
    run_id = summary["run_id"]
    listed = adf("dead-letters", "list", "--state-dir", str(state), "--json")
    assert [(r["run_id"], r["dead_letters"]) for r in json.loads(listed.stdout)] == [(run_id, 6)]
    shown = [json.loads(line) for line in adf("dead-letters", "show", run_id, "--state-dir", str(state)).stdout.splitlines()]
    assert {d["record"]["n"] for d in shown if d["stage"] == "step"} == {1, 5, 9, 13, 17}
    assert all(d["origin"]["file"] == str(src) and d["origin"]["line"] for d in shown)

    still = adf("dead-letters", "replay", run_id, "--state-dir", str(state), "--json")
    assert still.returncode == 1 and json.loads(still.stdout)["remaining"] == 6

    fixed = adf("dead-letters", "replay", run_id, "--state-dir", str(state), "--json", env={"ADF_TEST_FIXED": "1"})
    outcome = json.loads(fixed.stdout)
    assert (outcome["replayed"], outcome["written"], outcome["kept"], outcome["remaining"]) == (5, 5, 1, 1)
    assert fixed.returncode == 1  # the malformed line stays: fix the input and run again
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT n, doubled FROM t"))
    assert rows == {i: 2 * i for i in range(20)}  # replayed records went through the rest of the flow
    left = [json.loads(line) for line in adf("dead-letters", "show", run_id, "--state-dir", str(state)).stdout.splitlines()]
    assert [d["stage"] for d in left] == ["source"]
    recorded = json.loads((state / "fixable" / "runs" / run_id / "summary.json").read_text())
    assert recorded["dead_letters_remaining"] == 1 and len(recorded["replays"]) == 2


# --------------------------------------------------------------------------- smaller promises


def test_the_stdout_sink_keeps_standard_output_for_the_records(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"n": i} for i in range(50)])
    spec = tmp_path / "flow.json"
    spec.write_text(json.dumps({"name": "to_stdout", "source": {"type": "file", "path": str(src)},
                                "sink": {"type": "stdout"}}))
    for extra in ([], ["--json"]):
        res = adf("run", str(spec), "--state-dir", str(tmp_path / "s"), *extra)
        assert res.returncode == 0, res.stderr
        assert [json.loads(line) for line in res.stdout.splitlines()] == [{"n": i} for i in range(50)]
        assert "to_stdout success" in res.stderr or '"records_out": 50' in res.stderr


def test_progress_lines_every_few_seconds_off_a_terminal(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"n": i} for i in range(400)])
    spec = tmp_path / "flow.json"
    spec.write_text(json.dumps({"name": "slowish", "source": {"type": "file", "path": str(src)},
                                "steps": [{"type": "python", "function": "flowlib.steps:slow", "options": {"delay": 0.002}}],
                                "sink": {"type": "file", "path": str(tmp_path / "o.jsonl")},
                                "runtime": {"batch_size": 20}}))
    res = adf("run", str(spec), "--state-dir", str(tmp_path / "s"), env={"ADF_PROGRESS_INTERVAL_S": "0.2"})
    assert res.returncode == 0, res.stderr
    progress = [json.loads(line) for line in res.stderr.splitlines() if '"msg": "progress"' in line]
    assert len(progress) >= 2, res.stderr
    assert all(p["flow"] == "slowish" and p["run_id"] for p in progress)
    assert [p["records_in"] for p in progress] == sorted(p["records_in"] for p in progress)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_schema_types_become_real_column_types(tmp_path: Path, state_dir: Path, backend: str, request: Any) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'typed.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "1", "price": "12.30", "qty": "3", "at": "2026-01-04T03:51:00+01:00", "day": "2026-01-04",
         "ok": "yes", "ratio": "0.5", "name": "a", "doc": {"k": [1]}},
    ])
    summary = run_flow(
        {"name": "typed", "source": {"type": "file", "path": str(src)},
         "schema": {"id": "integer", "price": "decimal", "qty": "integer", "at": "datetime", "day": "date",
                    "ok": "boolean", "ratio": "number", "name": "string", "doc": "json"},
         "sink": {"type": "sql", "url": url, "table": "typed", "mode": "upsert", "key": "id"}},
        state_dir=str(state_dir),
    )
    assert summary.status == "success", summary.error
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        columns = {c["name"]: type(c["type"]).__name__.upper() for c in sa.inspect(engine).get_columns("typed")}
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT price, at, qty FROM typed")).one()
    finally:
        engine.dispose()
    expected = {"id": "BIGINT", "qty": "BIGINT", "price": "NUMERIC", "day": "DATE", "ok": "BOOLEAN",
                "ratio": "DOUBLE" if backend == "sqlite" else "DOUBLE_PRECISION", "name": "TEXT"}
    assert {k: columns[k] for k in expected} == expected, columns
    assert columns["at"] in ("DATETIME", "TIMESTAMP")
    if backend == "postgres":
        assert columns["doc"] == "JSONB"
        assert str(row.price) == "12.30" and row.at.utcoffset() is not None and row.at.hour == 2
    else:
        assert float(row.price) == 12.3 and str(row.at).startswith("2026-01-04 02:51:00")  # stored in UTC
    assert row.qty == 3


@pytest.fixture
def pg_url() -> Any:
    pytest.importorskip("psycopg")
    import uuid

    import psycopg

    name = f"adf_integrity_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("postgresql://root@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://root@127.0.0.1:5432/{name}"
    with psycopg.connect("postgresql://root@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_dead_letters_of_records_from_memory_and_payload_sources_name_their_index(state_dir: Path) -> None:
    records = [{"n": i, "bad": i in (2, 5)} for i in range(8)]
    for source, key in (({"type": "memory", "records": records, "splits": 2}, "index"),
                        ({"type": "payload", "records": [*records[:3], "not an object", *records[3:]]}, "payload_index")):
        summary = run_flow(
            {"name": f"origin_{source['type']}", "source": source,
             "steps": [{"type": "python", "function": "flowlib.integrity:reject_when"}],
             "sink": {"type": "memory"}},
            state_dir=str(state_dir), persist=False,
        )
        got = {(d["stage"], d["record"].get("n") if isinstance(d["record"], dict) else d["record"]): d["origin"][key]
               for d in summary.dead_letter_sample or []}
        if key == "index":
            assert got == {("step", 2): 2, ("step", 5): 5}
        else:
            assert got == {("step", 2): 2, ("source", "not an object"): 3, ("step", 5): 6}


@pytest.mark.redis
def test_dead_letters_of_stream_records_name_topic_partition_and_entry(state_dir: Path) -> None:
    import uuid

    import redis

    from active_data_flow.connectors.rafka import Admin, Producer, stream_key

    url, topic = "redis://127.0.0.1:6379", f"origins-{uuid.uuid4().hex[:8]}"
    admin = Admin(url)
    admin.create_topic(topic, 2)
    try:
        producer = Producer(url)
        producer.send_batch(topic, [{"n": i, "bad": i % 9 == 4} for i in range(40)], key_field="n")
        producer.flush()
        summary = run_flow(
            {"name": "stream_origins",
             "source": {"type": "rafka", "url": url, "topic": topic, "group": "g", "bounded": True},
             "steps": [{"type": "python", "function": "flowlib.integrity:reject_when"}],
             "sink": {"type": "memory"}},
            state_dir=str(state_dir),
        )
        letters = read_jsonl(Path(summary.dead_letter_destination or ""))
        assert sorted(d["record"]["n"] for d in letters) == [4, 13, 22, 31]
        client = redis.Redis.from_url(url)
        for d in letters:  # the origin names the very entry the record came from
            origin = d["origin"]
            assert origin["topic"] == topic and origin["partition"] in (0, 1)
            entries = client.xrange(stream_key(topic, origin["partition"]), origin["id"], origin["id"])
            assert len(entries) == 1 and json.loads(entries[0][1][b"v"])["n"] == d["record"]["n"]
    finally:
        admin.delete_topic(topic)


def test_dead_letters_of_records_from_a_table_name_their_cursor_value(tmp_path: Path, state_dir: Path) -> None:
    db = tmp_path / "in.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, n INTEGER, bad BOOLEAN)")
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?)", [(100 + i, i, i in (3, 7)) for i in range(12)])
    summary = run_flow(
        {"name": "table_origins",
         "source": {"type": "sql", "url": f"sqlite:///{db}", "table": "orders", "cursor_column": "id", "split_size": 5},
         "steps": [{"type": "python", "function": "flowlib.integrity:reject_when"}],
         "sink": {"type": "memory"}, "runtime": {"batch_size": 4}},
        state_dir=str(state_dir),
    )
    letters = read_jsonl(Path(summary.dead_letter_destination or ""))
    assert sorted(d["origin"]["id"] for d in letters) == [103, 107]
    assert all(d["origin"]["split"] for d in letters)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_top_reasons_fold_values_only_when_they_differ(state_dir: Path, parallelism: int) -> None:
    def reasons(values: list[Any]) -> list[dict[str, Any]]:
        summary = run_flow(
            {"name": f"reasons_{parallelism}", "source": {"type": "memory", "records": [{"q": v} for v in values],
                                                           "splits": parallelism},
             "schema": {"q": "integer"}, "sink": {"type": "memory"},
             "runtime": {"parallelism": parallelism, "batch_size": 2}},
            state_dir=str(state_dir),
        )
        assert summary.status == "partial"
        return summary.dead_letter_reasons

    same = reasons(["many", 1, "many", 2, "many", 3])
    assert same == [{"reason": "RecordValidationError: field 'q': expected integer, got 'many'", "count": 3}]
    varied = reasons(["many", 1, "lots", 2, "many", 3])
    assert varied == [{"reason": "RecordValidationError: field 'q': expected integer, got …", "count": 3}]
