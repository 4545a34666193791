"""The heartbeat runtime's `adf` commands, run as real processes on the embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def adf(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), **env}
    return subprocess.run([sys.executable, "-m", "active_data_flow.cli", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=120)


def last_json(stdout: str) -> Any:
    return json.loads(stdout.strip().splitlines()[-1])


def test_schedule_a_flow_tick_from_cron_and_read_the_history(tmp_path: Path) -> None:
    env = {"ADF_STATE_DIR": str(tmp_path / "state")}
    out = tmp_path / "out.jsonl"
    spec = tmp_path / "flow.yaml"
    spec.write_text(
        "source: {type: memory, records: [{n: 1}, {n: 2}, {n: 7}]}\n"
        "steps: [{type: python, function: 'flowlib.steps:explode_on_sevens'}]\n"
        f"sink: {{type: file, path: '{out}'}}\n"
    )
    res = adf("db", "upgrade", env=env)
    assert res.returncode == 0, res.stderr
    assert "at revision" in res.stdout and (tmp_path / "state" / "adf.db").exists()

    res = adf("flows", "add", "nightly", "--spec", str(spec), "--interval", "3600", "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert last_json(res.stdout)["name"] == "nightly"

    # n=7 raises in the step: one record of three dead-lettered, a partial run — exit 0
    res = adf("heartbeat", "--json", env=env)  # a new flow is due at once
    assert res.returncode == 0, res.stderr
    tick = last_json(res.stdout)
    assert tick["flows_due"] == 1 and tick["flows_triggered"] == 1 and len(tick["run_ids"]) == 1
    assert [(r["id"], r["status"]) for r in tick["runs"]] == [(tick["run_ids"][0], "partial")]
    assert sorted(json.loads(line)["n"] for line in out.read_text().splitlines()) == [1, 2]

    res = adf("heartbeat", env=env)  # not due again within the interval
    assert res.returncode == 0 and res.stdout.startswith("flows due 0, triggered 0"), res.stdout

    runs = last_json(adf("runs", "list", "--json", env=env).stdout)
    assert len(runs) == 1 and runs[0]["status"] == "partial"
    assert (runs[0]["records_in"], runs[0]["records_out"], runs[0]["dead_letters"]) == (3, 2, 1)
    assert runs[0]["error_message"].startswith("1 record dead-lettered: 1")
    assert "1x ValueError: seven divides 7" in runs[0]["error_message"]  # one dead letter: its reason as written
    shown = last_json(adf("runs", "show", str(runs[0]["id"]), "--json", env=env).stdout)
    assert shown["duration"] is not None and shown["trigger"] == "cli"
    listing = adf("runs", "list", env=env).stdout
    assert " partial " in listing and "1 record dead-lettered" in listing
    assert last_json(adf("runs", "list", "--status", "partial", "--json", env=env).stdout)[0]["id"] == runs[0]["id"]

    res = adf("flows", "trigger", "nightly", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert " partial " in res.stdout

    assert adf("flows", "disable", "nightly", env=env).returncode == 0
    listed = last_json(adf("flows", "list", "--json", env=env).stdout)
    assert listed[0]["enabled"] is False


def test_async_mode_leaves_runs_for_a_worker(tmp_path: Path) -> None:
    env = {"ADF_STATE_DIR": str(tmp_path / "state"), "ADF_HEARTBEAT_MODE": "async"}
    out = tmp_path / "out.jsonl"
    spec = tmp_path / "flow.json"
    spec.write_text(json.dumps({"source": {"type": "memory", "records": [{"n": 1}]},
                                "sink": {"type": "file", "path": str(out)}}))
    assert adf("flows", "add", "queued", "--spec", str(spec), "--interval", "60", env=env).returncode == 0
    tick = last_json(adf("heartbeat", "--json", env=env).stdout)
    assert tick["flows_triggered"] == 1 and not out.exists()
    assert last_json(adf("runs", "list", "--json", env=env).stdout)[0]["status"] == "pending"
    res = adf("worker", "--once", "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert last_json(res.stdout)["status"] == "success"
    assert out.read_text().strip() == '{"n":1}'


def test_an_invalid_flow_is_refused_with_every_problem_and_nothing_is_saved(tmp_path: Path) -> None:
    env = {"ADF_STATE_DIR": str(tmp_path / "state")}
    spec = tmp_path / "bad.yaml"
    spec.write_text("source: {type: file}\nsink: {type: nosuch}\n")
    res = adf("flows", "add", "bad flow", "--spec", str(spec), "--interval", "0", "--json", env=env)
    assert res.returncode == 2
    problems = last_json(res.stdout)["problems"]
    text = " ".join(problems)
    assert "name" in text and "interval" in text and "path" in text and "nosuch" in text
    assert last_json(adf("flows", "list", "--json", env=env).stdout) == []


def test_step_modules_beside_the_spec_stay_importable_when_the_heartbeat_runs_it(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "local_steps_for_hb.py").write_text("def tag(record):\n    record['tagged'] = True\n    return record\n")
    out = tmp_path / "out.jsonl"
    (flows / "flow.yaml").write_text(
        "name: something_else\n"
        "source: {type: memory, records: [{n: 1}]}\n"
        "steps: [{type: python, function: 'local_steps_for_hb:tag'}]\n"
        f"sink: {{type: file, path: '{out}'}}\n"
    )
    env = {"ADF_STATE_DIR": str(tmp_path / "state")}
    res = adf("flows", "add", "tagger", "--spec", str(flows / "flow.yaml"), "--interval", "60", "--json", env=env)
    assert res.returncode == 0, res.stderr
    stored = last_json(res.stdout)["configuration"]
    assert stored["name"] == "tagger" and stored["python_path"] == [str(flows)]
    tick = last_json(adf("heartbeat", "--json", env=env).stdout)  # runs from the repository root
    assert tick["flows_triggered"] == 1
    assert json.loads(out.read_text()) == {"n": 1, "tagged": True}
