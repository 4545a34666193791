"""One spec on every target: the same sink contents, the same accounting, the same dead letters.

The spec (data/conformance.yaml) reads a hostile CSV (data/input.csv: a UTF-8 byte-order mark,
CRLF row ends, quoted commas, quoted LF and CRLF line ends, doubled quotes, non-Latin text and
an emoji, a row with a field too few), types it with a schema, prices it in a Python step
(data/conformance_steps.py) and filters it; ``split_bytes`` cuts the file into byte ranges so
that parallel readers share it. Rows that the CSV reader, the schema or the step refuse are dead
letters. Each target gets the flow the way its operators give it (``--set``, ``ADF__*`` /
``ADF_<FLOW>__*`` environment, the Lambda flows directory, the Spin components' bundle and
variables), and the sink it can hold:

=================  ============================================  =============================
target             how it runs                                   sink compared
=================  ============================================  =============================
local p1 / p2      ``adf run --set runtime.parallelism=N``       JSON Lines file
heartbeat sync     ``adf flows add`` + ``adf heartbeat``          JSON Lines file (ADF__SINK__PATH)
heartbeat worker   async ``adf heartbeat`` + ``adf worker --once``  JSON Lines file
Lambda S3          the ``sam build`` package's S3Function, an S3  JSON Lines object in a moto
                   put event for the CSV in a moto bucket        bucket (ADF_CONFORMANCE__SINK__PATH)
Spin HTTP          http.wasm under the local host, CSV mounted   the ``response`` sink's records
Spin cron          cron.wasm tick over its Spin SQLite schedule  the key-value store
Flink              PyFlink mini-cluster, parallelism 2           JSON Lines file
=================  ============================================  =============================

Every target is compared with the reference (local, parallelism 1): the sorted canonical JSON
lines byte for byte, records_in / records_out / filtered / dead_letters, the summary's dead-letter
reasons, and the dead letters themselves (stage, step, reason, input line, record) where the
target keeps them where a test can read them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lambda_build import Build

from .conftest import (
    CSV,
    FLOW,
    ROOT,
    SPEC,
    SPIN_CRON_FLOW,
    SPIN_HTTP_FLOW,
    SPIN_KV_PREFIX,
    STEPS,
    Outcome,
    jsonl_records,
    read_letters,
)

pytestmark = pytest.mark.slow

#: what the spec does to data/input.csv (checked on the reference run; every target must agree)
EXPECTED_COUNTS = {"records_in": 18, "records_out": 9, "filtered": 3, "dead_letters": 6}
EXPECTED_IDS = [1, 2, 8, 10, 11, 12, 14, 15, 18]
QTY_REASON = "RecordValidationError: field 'qty': expected integer, got 'many'"
EXPECTED_REASONS = sorted([
    (QTY_REASON, 2),
    ("CSV row has 7 fields, header has 8", 1),
    ("RecordValidationError: field 'ordered': expected date (ISO 8601, e.g. '2024-01-31'), got '2024-13-01'", 1),
    ("RecordValidationError: field 'price': required field is missing", 1),
    ("ValueError: refusing record 13: the name is Boom", 1),
])

_PYTHONPATH = os.pathsep.join([str(ROOT), str(ROOT / "tests")])


def _adf(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": _PYTHONPATH, **(env or {})}
    return subprocess.run([sys.executable, "-m", "active_data_flow.cli", *args], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=timeout)


def _last_json(stdout: str) -> Any:
    return json.loads(stdout.strip().splitlines()[-1])


def _sink_file(path: Path) -> list[dict[str, Any]]:
    assert path.exists(), f"the sink file {path} was not written"
    return jsonl_records(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- local


def _local(tmp: Path, parallelism: int) -> Outcome:
    out = tmp / "out.jsonl"
    res = _adf("run", str(SPEC), "--json", "--state-dir", str(tmp / "state"),
               "--set", f"sink.path={out}", "--set", f"runtime.parallelism={parallelism}")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = _last_json(res.stdout)
    assert summary["parallelism"] == parallelism and summary["splits"] > 1, summary
    return Outcome.make(f"local p{parallelism}", _sink_file(out), summary,
                        letters=read_letters(summary["dead_letter_destination"]))


@pytest.fixture(scope="module")
def local_p1(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    return _local(tmp_path_factory.mktemp("local-p1"), 1)


@pytest.fixture(scope="module")
def local_p2(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    return _local(tmp_path_factory.mktemp("local-p2"), 2)


# --------------------------------------------------------------------------- heartbeat


def _heartbeat(tmp: Path, mode: str) -> Outcome:
    out = tmp / "out.jsonl"
    env = {"ADF_STATE_DIR": str(tmp / "state"), "ADF__SINK__PATH": str(out), "ADF_HEARTBEAT_MODE": mode}
    res = _adf("flows", "add", FLOW, "--spec", str(SPEC), "--interval", "3600", "--json", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    res = _adf("heartbeat", "--json", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    tick = _last_json(res.stdout)
    assert tick["flows_due"] == 1 and tick["flows_triggered"] == 1, tick
    if mode == "async":
        assert not out.exists()  # left for a worker
        res = _adf("worker", "--once", "--json", env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert _last_json(res.stdout)["status"] == "partial", res.stdout
    [run] = _last_json(_adf("runs", "list", "--json", env=env).stdout)
    assert run["status"] == "partial" and run["trigger"] == "cli", run
    # the schedule's run record has no `filtered`: the engine's own summary of that run has
    run_dir = tmp / "state" / FLOW / "runs" / run["engine_run_id"]
    engine = json.loads((run_dir / "summary.json").read_text())
    for key in ("records_in", "records_out", "dead_letters"):
        assert run[key] == engine[key], (key, run, engine)
    return Outcome.make(f"heartbeat {mode}", _sink_file(out), engine,
                        letters=read_letters(run_dir / "dead_letters.jsonl"), error_message=run["error_message"])


@pytest.fixture(scope="module")
def heartbeat_sync(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    return _heartbeat(tmp_path_factory.mktemp("heartbeat-sync"), "sync")


@pytest.fixture(scope="module")
def heartbeat_worker(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    return _heartbeat(tmp_path_factory.mktemp("heartbeat-worker"), "async")


# --------------------------------------------------------------------------- Lambda


IN_BUCKET, OUT_BUCKET = "adf-conformance-in", "adf-conformance-out"


@pytest.fixture(scope="module")
def lambda_s3(build: Build, runtime_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    import boto3
    from lambda_env import s3_put_event
    from moto_endpoint import moto_endpoint
    from test_lambda_package import invoke

    tmp = tmp_path_factory.mktemp("lambda")
    flows = tmp / "flows"  # the function's flows directory (the template's FlowsDir)
    flows.mkdir()
    shutil.copy2(SPEC, flows / SPEC.name)
    shutil.copy2(STEPS, flows / STEPS.name)
    with moto_endpoint() as (url, _mp):
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        s3.create_bucket(Bucket=IN_BUCKET)
        s3.create_bucket(Bucket=OUT_BUCKET)
        key = "incoming/day 1/input.csv"
        put = s3.put_object(Bucket=IN_BUCKET, Key=key, Body=CSV.read_bytes())
        event = s3_put_event(IN_BUCKET, "incoming/day+1/input.csv", etag=put["ETag"].strip('"'))
        got = invoke(build, runtime_dir, "S3Function", [event], tmp,
                     ADF_FLOWS_DIR=str(flows), AWS_ENDPOINT_URL=url,
                     ADF_S3_ROUTES=json.dumps({f"{IN_BUCKET}/incoming/": FLOW}),
                     ADF_CONFORMANCE__SINK__PATH=f"s3://{OUT_BUCKET}/conformance/out.jsonl")
        [run] = got.ok()["results"]
        assert (run["flow"], run["object"]) == (FLOW, f"s3://{IN_BUCKET}/{key}"), run
        body = s3.get_object(Bucket=OUT_BUCKET, Key="conformance/out.jsonl")["Body"].read().decode("utf-8")
    # the handler's answer has the counts but `filtered`; the engine's "run finished" line has all
    [finished] = [line for line in got.logs if line.get("message") == "run finished"]
    for k in ("records_in", "records_out", "dead_letters", "status"):
        assert run[k] == finished[k], (k, run, finished)
    letters_files = list(tmp.glob("S3Function-*/state/**/dead_letters.jsonl"))
    letters = [d for f in letters_files for d in read_letters(f)]
    yield Outcome.make("lambda s3", jsonl_records(body), finished, letters=letters if letters_files else None)


# --------------------------------------------------------------------------- Spin


@pytest.fixture(scope="module")
def spin_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CSV, in the directory mounted into the components at /data (the manifest's `files`)."""
    d = tmp_path_factory.mktemp("spin-data")
    shutil.copy2(CSV, d / CSV.name)
    return d


def _source_override(flow: str) -> dict[str, str]:
    """The operator's Spin variable for ``flow``: read the mounted CSV."""
    return {f"adf_flow_{flow}_json": json.dumps({"source": {"path": f"/data/{CSV.name}"}})}


@pytest.fixture(scope="module")
def spin_http(spin_components: dict[str, str], spin_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    from active_data_flow.spin_app.host import HttpHost

    state = tmp_path_factory.mktemp("spin-http")
    with HttpHost(spin_components["http"], state_dir=str(state), variables=_source_override(SPIN_HTTP_FLOW),
                  dirs={str(spin_data): "/data"}, engine="wasmtime") as host:
        req = urllib.request.Request(f"{host.url}/flows/{SPIN_HTTP_FLOW}/run", method="GET")
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
    body = json.loads(raw)
    assert status == 200, body
    assert body["records_truncated"] is False and body["records_total"] == len(body["records"]), body
    sample = body.get("dead_letter_sample")
    return Outcome.make("spin http", body["records"], body, letters=sample)


def _kv(state: Path) -> dict[str, Any]:
    data = json.loads((state / "key_value.json").read_text(encoding="utf-8"))
    return {k: json.loads(base64.b64decode(v)) for k, v in data.get("default", {}).items()}


@pytest.fixture(scope="module")
def spin_cron(spin_components: dict[str, str], spin_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    from active_data_flow.spin_app.host import ComponentHost, SpinState

    state = tmp_path_factory.mktemp("spin-cron")
    host = ComponentHost(spin_components["cron"], state=SpinState(str(state), _source_override(SPIN_CRON_FLOW)),
                         dirs={str(spin_data): "/data"})
    try:
        host.cron(int(time.time()))
    finally:
        host.close()
    kv = _kv(state)
    records = [v for k, v in kv.items() if k.startswith(SPIN_KV_PREFIX)]
    assert sorted(k for k in kv if k.startswith(SPIN_KV_PREFIX)) == sorted(
        f"{SPIN_KV_PREFIX}{r['id']}" for r in records), kv.keys()
    with sqlite3.connect(state / "sqlite_db.db") as db:
        db.row_factory = sqlite3.Row
        runs = [dict(r) for r in db.execute(
            "SELECT r.*, f.name AS flow_name FROM data_flow_runs r JOIN data_flows f ON f.id = r.flow_id")]
    assert [r["flow_name"] for r in runs] == [SPIN_CRON_FLOW], runs
    [run] = runs
    # the schedule's record: no `filtered` and no reasons but its error message (top 3 reasons)
    return Outcome.make("spin cron", records, {**run, "filtered": None}, error_message=run["error_message"])


# --------------------------------------------------------------------------- Flink


@pytest.fixture(scope="module")
def flink(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    from active_data_flow.flink_job.cli import flink_python

    python = flink_python()
    if python is None:
        pytest.fail("PyFlink is not installed: run scripts/flink-setup")
    tmp = tmp_path_factory.mktemp("flink")
    out = tmp / "out.jsonl"
    r = subprocess.run([python, "-m", "active_data_flow.flink_job.job", str(SPEC), "--parallelism", "2", "--state-dir",
                        str(tmp / "state"), "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp),
                            "ADF__SINK__PATH": str(out)})
    assert r.stdout.strip(), r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["parallelism"] == 2 and summary["splits"] > 1, summary
    return Outcome.make("flink p2", _sink_file(out), summary, letters=read_letters(summary["dead_letter_destination"]))


# --------------------------------------------------------------------------- the comparison


def test_the_reference_run_does_what_the_spec_says(local_p1: Outcome) -> None:
    """Local, parallelism 1: the numbers every other target is held to."""
    assert local_p1.status == "partial"
    assert local_p1.counts == EXPECTED_COUNTS
    records = [json.loads(line) for line in local_p1.sink.decode("utf-8").splitlines()]
    assert sorted(r["id"] for r in records) == EXPECTED_IDS
    assert local_p1.reasons == EXPECTED_REASONS
    by_id = {r["id"]: r for r in records}
    # the hostile parts survived: BOM gone from the first header, quoted commas / line ends / quotes, text
    assert by_id[1]["city"] == "Zürich, CH" and "\ufeffid" not in by_id[1]
    assert by_id[2]["name"] == 'Bob "the builder"' and by_id[2]["note"] == "two\nlines, one comma"
    assert by_id[10]["note"] == "crlf\r\ninside, and a tab\there" and by_id[10]["note_lines"] == 2
    assert by_id[8]["name"] == "Hé 😀" and by_id[14]["city"] == "Hà Nội" and by_id[14]["total"] == 86.42
    assert by_id[15]["note"] == "  leading and trailing spaces  " and by_id[11]["price"] == 100.0
    assert by_id[12]["label"] == "LOU @ ?" and by_id[1]["active"] is True and by_id[8]["active"] is False
    assert local_p1.letters is not None and len(local_p1.letters) == EXPECTED_COUNTS["dead_letters"]
    stages = sorted((stage, step) for stage, step, *_ in local_p1.letters)
    assert stages == [("source", None), ("step", "python:conformance_steps:enrich")] + [("step", "schema")] * 4


TARGETS: list[Any] = [
    "local_p2",
    "heartbeat_sync",
    "heartbeat_worker",
    "lambda_s3",
    "spin_http",
    "spin_cron",
    pytest.param("flink", marks=pytest.mark.flink),
]


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_gives_the_reference_sink_and_accounting(
    target: str, local_p1: Outcome, request: pytest.FixtureRequest
) -> None:
    got: Outcome = request.getfixturevalue(target)
    ref = local_p1
    print(f"{got.target}: {got.counts}; reasons compared: {got.reasons is not None}; "
          f"dead letters compared: {got.letters is not None}")
    assert got.status == ref.status, (got.target, got.status)
    # the sink's contents, canonical JSON lines sorted: byte for byte
    assert got.sink.decode("utf-8").splitlines() == ref.sink.decode("utf-8").splitlines(), got.target
    assert got.sink == ref.sink
    # the accounting; `filtered` where the target tells it, else what the others add up to
    counts = dict(got.counts)
    if counts["filtered"] is None:
        counts["filtered"] = counts["records_in"] - counts["records_out"] - counts["dead_letters"]
    assert counts == ref.counts, got.target
    if got.reasons is not None:
        assert got.reasons == ref.reasons, got.target
    if got.letters is not None:
        # the same dead letters (stage, step, reason, record), then each with its input line
        assert sorted(d[:3] + d[4:] for d in got.letters) == sorted(d[:3] + d[4:] for d in ref.letters), got.target
        unplaced = [(d[0], d[1], d[2]) for d in got.letters if d[3] is None]
        assert not unplaced, f"{got.target}: dead letters without their input position (origin): {unplaced}"
        assert got.letters == ref.letters, got.target
    message = got.extra.get("error_message")
    if message is not None:  # the schedule's run record: "6 records dead-lettered: 2x …; 1x …; …"
        assert message.startswith(f"{EXPECTED_COUNTS['dead_letters']} records dead-lettered: 2x {QTY_REASON}"), message


def test_the_summaries_of_all_targets_agree(request: pytest.FixtureRequest, local_p1: Outcome) -> None:
    """One table of what each target said, so that a failure shows every difference at once."""
    names = ["local_p1", *[t if isinstance(t, str) else t.values[0] for t in TARGETS]]
    table: dict[str, Any] = {}
    for name in names:
        try:
            got: Outcome = request.getfixturevalue(name)
        except (Exception, pytest.fail.Exception) as exc:  # a target that did not run fails its own test
            table[name] = f"did not run: {type(exc).__name__}"
            continue
        table[name] = (got.counts["records_in"], got.counts["records_out"], got.counts["filtered"],
                       got.counts["dead_letters"], len(got.sink.splitlines()))
    print(json.dumps(table, indent=1))
    ran = {k: v for k, v in table.items() if not isinstance(v, str)}
    assert {(v[0], v[1], v[3], v[4]) for v in ran.values()} == {(18, 9, 6, 9)}, table

