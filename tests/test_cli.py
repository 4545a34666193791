"""The `adf` command line, run as a real process."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
ADF = [sys.executable, "-m", "active_data_flow.cli"]


def adf(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), **(env or {})}
    return subprocess.run([*ADF, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def last_json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])


def test_run_json_summary_on_the_example_flow(tmp_path: Path) -> None:
    state = tmp_path / "state"
    res = adf("run", "examples/orders/flow.yaml", "--json", "--state-dir", str(state),
              "--set", f"sink.url=sqlite:///{tmp_path}/orders.db")
    assert res.returncode == 0, res.stderr
    summary = last_json(res.stdout)
    for key in ("records_in", "records_out", "dead_letters", "duration_s"):
        assert key in summary
    assert summary["records_in"] == 1200
    # two rows have quantity "many" -> schema dead letters; quantity 0 rows are filtered out
    assert summary["dead_letters"] == 2
    with sqlite3.connect(tmp_path / "orders.db") as db:
        (count,) = db.execute("select count(*) from orders").fetchone()
        (multi,) = db.execute("select count(*) from orders where customer like '%key account%'").fetchone()
        gross = db.execute("select net, vat, gross from orders where id = 1").fetchone()
    assert count == summary["records_out"]
    assert multi > 0  # quoted newlines survived
    assert gross[2] == pytest.approx(gross[0] + gross[1])
    letters = [json.loads(line) for line in Path(summary["dead_letter_destination"]).read_text().splitlines()]
    assert sorted(d["record"]["id"] for d in letters) == ["123", "777"]
    assert all("quantity" in d["reason"] for d in letters)
    # JSON lines logs on stderr carry the run id
    logs = [json.loads(line) for line in res.stderr.splitlines() if line.startswith("{")]
    assert any(log.get("msg") == "run finished" and log.get("run_id") == summary["run_id"] for log in logs)


def test_human_summary_says_where_dead_letters_went(tmp_path: Path) -> None:
    res = adf("run", "examples/orders/flow.yaml", "--state-dir", str(tmp_path / "s"),
              "--set", f"sink.url=sqlite:///{tmp_path}/o.db")
    assert res.returncode == 0, res.stderr
    assert "records in 1,200" in res.stdout
    assert "dead letters went to:" in res.stdout and "dead_letters.jsonl" in res.stdout


def test_a_failing_run_exits_non_zero_with_a_one_line_reason(tmp_path: Path) -> None:
    spec = tmp_path / "f.json"
    spec.write_text(json.dumps({
        "name": "fails",
        "source": {"type": "memory", "records": [{"n": 1}, {"n": 7}]},
        "steps": [{"type": "python", "function": "flowlib.steps:explode_on_sevens"}],
        "sink": {"type": "sql", "url": f"sqlite:///{tmp_path}/x.db", "table": "t"},
        "runtime": {"max_dead_letters": 0},
    }))
    res = adf("run", str(spec), "--json", "--state-dir", str(tmp_path / "s"))
    assert res.returncode == 1
    summary = last_json(res.stdout)
    assert summary["status"] == "failed" and "max_dead_letters" in summary["error"]
    reason = [line for line in res.stderr.splitlines() if line.startswith("adf: ")]
    assert len(reason) == 1 and "run failed" in reason[0]


def test_an_invalid_spec_exits_2_and_lists_every_problem(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nsource: {type: file}\nsink: {type: nosuch}\nruntime: {parallelism: -1}\n")
    res = adf("validate", str(spec), "--json")
    assert res.returncode == 2
    out = last_json(res.stdout)
    assert out["valid"] is False and len(out["problems"]) == 3
    res = adf("run", str(spec))
    assert res.returncode == 2 and "unknown sink type 'nosuch'" in res.stderr
    res = adf("run", str(tmp_path / "missing.yaml"), "--json")
    assert res.returncode == 2 and "does not exist" in last_json(res.stdout)["error"]
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    res = adf("validate", str(broken))
    assert res.returncode == 2 and "invalid YAML" in res.stdout + res.stderr


def test_validate_and_connectors() -> None:
    res = adf("validate", "examples/orders/flow.yaml")
    assert res.returncode == 0 and "valid: flow orders_to_sqlite" in res.stdout
    res = adf("connectors", "--json")
    assert res.returncode == 0
    data = last_json(res.stdout)
    sources = {row["type"]: row for row in data["sources"]}
    assert {"file", "sql", "memory"} <= set(sources)
    path_attr = next(a for a in sources["file"]["attributes"] if a["name"] == "path")
    assert path_attr["required"] is True
    sql_url = next(a for a in {r["type"]: r for r in data["sinks"]}["sql"]["attributes"] if a["name"] == "url")
    assert sql_url.get("secret") is True
    assert {"python", "filter"} <= {row["type"] for row in data["steps"]}


def test_config_explain_shows_each_layer_and_redacts_secrets(tmp_path: Path) -> None:
    state = tmp_path / "state"
    from active_data_flow.state import SqliteStateStore

    store = SqliteStateStore(str(state / "state.db"))
    store.set("config/orders_to_sqlite", {"runtime.batch_size": 50, "sink.table": "from_kv"})
    store.close()
    env = {"ADF_STATE_DIR": str(state), "ADF__SINK__TABLE": "from_env", "ADF__RUNTIME__PARALLELISM": "2",
           "ADF_ORDERS_TO_SQLITE__SINK__URL": "postgresql://bob:hunter2@db.example/orders"}
    res = adf("config", "explain", "examples/orders/flow.yaml", "--json", "--set", "runtime.parallelism=3", env=env)
    assert res.returncode == 0, res.stderr
    rows = {r["path"]: r for r in last_json(res.stdout)["explain"]}
    assert rows["runtime.batch_size"]["layer"] == "kv" and rows["runtime.batch_size"]["value"] == 50
    assert rows["sink.table"]["layer"] == "env" and rows["sink.table"]["value"] == "from_env"
    assert [o[0] for o in rows["sink.table"]["overridden"]] == ["manifest", "kv"]
    assert rows["runtime.parallelism"]["layer"] == "payload" and rows["runtime.parallelism"]["value"] == 3
    assert rows["runtime.retries"]["layer"] == "default"
    assert rows["source.path"]["layer"] == "manifest" and rows["source.path"]["origin"] == "examples/orders/flow.yaml"
    assert "hunter2" not in res.stdout and rows["sink.url"]["value"] == "***"
    text = adf("config", "explain", "examples/orders/flow.yaml", env=env)
    assert text.returncode == 0 and "hunter2" not in text.stdout and "from_env" in text.stdout


def test_a_runtime_from_another_distribution_runs_the_flow_its_spec_names(tmp_path: Path) -> None:
    site = tmp_path / "site"
    dist = site / "adf_dry_runtime-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: adf-dry-runtime\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[active_data_flow.runtimes]\ndry = flowlib.runtimes:DryRun\n")
    spec = tmp_path / "f.json"
    out = tmp_path / "never.jsonl"
    spec.write_text(json.dumps({
        "name": "dry_flow",
        "source": {"type": "memory", "records": [{"n": i} for i in range(10)]},
        "steps": [{"type": "python", "function": "flowlib.steps:explode_on_sevens"}],
        "sink": {"type": "file", "path": str(out)},
        "runtime": {"type": "dry"},
    }))
    pythonpath = os.pathsep.join([str(ROOT), str(ROOT / "tests"), str(site)])
    res = adf("run", str(spec), "--json", "--state-dir", str(tmp_path / "s"), env={"PYTHONPATH": pythonpath})
    assert res.returncode == 0, res.stderr
    summary = last_json(res.stdout)
    assert summary["sink"] == "(dry run: nothing written)"
    assert (summary["records_in"], summary["records_out"], summary["dead_letters"]) == (10, 8, 2)
    assert not out.exists()
    # without the plugin the same spec is refused, naming the installed runtimes
    res = adf("validate", str(spec))
    assert res.returncode == 2 and "unknown runtime type 'dry'" in res.stdout + res.stderr and "local" in res.stdout + res.stderr


def test_param_gives_a_declared_parameter_and_refuses_anything_else(tmp_path: Path) -> None:
    (tmp_path / "tag.py").write_text("def tag(record, **options):\n    return {**record, **options}\n")
    spec = tmp_path / "priced.yaml"
    spec.write_text(
        "name: priced\n"
        "params:\n  currency: {type: string, choices: [EUR, USD], default: EUR}\n  rate: number\n"
        "source: {type: memory, records: [{id: 1}]}\n"
        "steps: [{type: python, function: 'tag:tag', options: {currency: '${params.currency}', rate: '${params.rate}'}}]\n"
        f"sink: {{type: file, path: '{tmp_path}/out.jsonl'}}\n"
    )
    ok = adf("run", str(spec), "--json", "--state-dir", str(tmp_path / "s"),
             "--param", "currency=USD", "--param", "rate=0.5")
    assert ok.returncode == 0, ok.stderr
    assert [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()] == [
        {"id": 1, "currency": "USD", "rate": 0.5}]
    bad = adf("run", str(spec), "--json", "--state-dir", str(tmp_path / "s2"),
              "--param", "currency=JPY", "--param", "sink.path=/tmp/elsewhere")
    assert bad.returncode == 2
    problems = last_json(bad.stdout)["problems"]
    assert any("'JPY' is not one of" in p for p in problems) and any("sink.path" in p for p in problems)
