"""The Lambda packages as `sam build` ships them, invoked the way Lambda invokes them.

`sam build` (the real CLI from scripts/sam-setup's ``.venv-sam``) builds infra/template.yaml once
per session. Every function is then imported and invoked from its own build directory in a
clean interpreter — ``python -I -S -B`` whose ``sys.path`` is the function's directory (Lambda's
``/var/task``), a directory holding the python3.11 runtime's own boto3/botocore
(scripts/lambda-runtime-setup; Lambda's ``/var/runtime``) and the standard library, never the
dev venv — with the events `sam local generate-event` prints (tests/events/) and the
environment the template gives the functions. Real services: PostgreSQL on 127.0.0.1 (the
schedule tables, the sinks), moto's ThreadedMotoServer on loopback for S3 and the idempotency
table in DynamoDB (``AWS_ENDPOINT_URL``).
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from flowlib.scheduling import pg_database
from lambda_build import RUNTIME_DIR, Build
from lambda_env import event, rest_event, s3_put_event, sqs_event, v2_event
from moto_endpoint import moto_endpoint

from active_data_flow.handlers.schedule.sql import SqlScheduleStore

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
#: what the package must not hold: the runtime's SDK (and its dependencies), and what nothing imports
NOT_SHIPPED = ("boto3", "botocore", "s3transfer", "urllib3", "dateutil", "jmespath", "pydantic", "pydantic_core")
MAX_ZIP_BYTES = 30 * 1000 * 1000
BUNDLED_FLOWS = {"orders_to_sqlite", "orders_enrich", "orders_publish", "orders_snapshot"}
PASSWORD = "Pw-" + uuid.uuid4().hex[:10]
TOKEN = "Tk-" + uuid.uuid4().hex[:10]
IN_BUCKET, OUT_BUCKET, TABLE = "adf-pkg-in", "adf-pkg-out", "adf-pkg-idempotency"

# The function's start as Lambda's runtime does it: /var/task first, then /var/runtime (the
# runtime's boto3), then the standard library; the handler imported by name and called with
# each event and a context; what it returned (or raised) written to a file, since stdout
# carries the function's logs.
DRIVER = r"""
import importlib, json, sys, uuid
fn_dir, runtime_dir, handler, events_file, out_file = sys.argv[1:6]
sys.path[:0] = [fn_dir, runtime_dir]

class Context:
    function_name = "adf-package-test"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:adf-package-test"
    log_group_name = "/aws/lambda/adf-package-test"
    log_stream_name = "2024/01/01/[$LATEST]0123456789abcdef"
    def __init__(self):
        self.aws_request_id = str(uuid.uuid4())
    def get_remaining_time_in_millis(self):
        return 60000

module, _, name = handler.rpartition(".")
entry = getattr(importlib.import_module(module), name)
with open(events_file) as f:
    events = json.load(f)
results = []
for ev in events:
    try:
        results.append({"result": entry(ev, Context())})
    except Exception as exc:
        results.append({"error": f"{type(exc).__name__}: {exc}"})
modules = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items()) if "." not in n}
with open(out_file, "w") as f:
    json.dump({"results": results, "sys_path": sys.path, "modules": modules}, f, default=str)
"""


# --------------------------------------------------------------------------- the build


# ``build`` and ``runtime_dir`` are the session's (tests/conftest.py): one ``sam build`` for
# every suite that runs the packages (this one and tests/conformance)

# --------------------------------------------------------------------------- invoking a built function


@dataclass
class Shipped:
    """What one cold start of a built function did: its results, its stdout split into log
    lines and EMF metric blobs, and where its modules came from."""

    results: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    output: str
    modules: dict[str, str | None]
    sys_path: list[str]

    def ok(self, i: int = 0) -> Any:
        assert "error" not in self.results[i], self.results[i]
        return self.results[i]["result"]

    def metric(self, name: str) -> float:
        return sum(sum(v) if isinstance(v, list) else float(v) for m in self.metrics if (v := m.get(name)) is not None)

    def engine_lines(self) -> list[dict[str, Any]]:
        """The lines of the engine and the handlers (not of the Lambda adapter itself)."""
        return [line for line in self.logs if str(line.get("location", "")).startswith("active_data_flow.")
                and not str(line.get("location", "")).startswith("active_data_flow.lambda_app.")]


def lambda_environment(fn_dir: Path, name: str, state_dir: Path, **extra: str | None) -> dict[str, str]:
    """The environment Lambda and the template's Globals give a function (parameter defaults)."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "TZ": ":UTC",
        "LAMBDA_TASK_ROOT": str(fn_dir), "LAMBDA_RUNTIME_DIR": str(RUNTIME_DIR),
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11", "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true",
        # the template's Globals.Function.Environment (FlowsDir's default is /var/task/flows)
        "ADF_FLOWS_DIR": str(fn_dir / "flows"), "ADF_STATE_DIR": str(state_dir),
        "POWERTOOLS_SERVICE_NAME": "active-data-flow", "POWERTOOLS_METRICS_NAMESPACE": "ActiveDataFlow",
        "LOG_LEVEL": "INFO", "POWERTOOLS_TRACE_DISABLED": "true", "ADF_TRACE_PATCH_MODULES": "botocore,httplib",
    }
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def invoke(build: Build, runtime: Path, function: str, events: list[dict[str, Any]], tmp: Path,
           **env: str | None) -> Shipped:
    """One cold start of ``function`` from its build directory, then each event in turn (warm)."""
    fn_dir = build.function(function)
    work = tmp / f"{function}-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    (work / "driver.py").write_text(DRIVER)
    (work / "events.json").write_text(json.dumps(events))
    r = subprocess.run(
        [sys.executable, "-I", "-S", "-B", str(work / "driver.py"), str(fn_dir), str(runtime), build.handlers[function],
         str(work / "events.json"), str(work / "out.json")],
        cwd=fn_dir, env=lambda_environment(fn_dir, function, work / "state", **env),
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads((work / "out.json").read_text())
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    shipped = Shipped(out["results"], [x for x in lines if "_aws" not in x], [x for x in lines if "_aws" in x],
                      r.stdout + r.stderr, out["modules"], out["sys_path"])
    _assert_clean_interpreter(shipped, fn_dir, runtime)
    return shipped


def _assert_clean_interpreter(shipped: Shipped, fn_dir: Path, runtime: Path) -> None:
    """Everything came from the package, the runtime's boto3 directory or the standard library."""
    assert shipped.sys_path[:2] == [str(fn_dir), str(runtime)]
    assert not [p for p in shipped.sys_path if "site-packages" in p or ".venv" in p.replace(str(RUNTIME_DIR), "")]
    allowed = (str(fn_dir) + os.sep, str(runtime) + os.sep, *(p + os.sep for p in shipped.sys_path[2:]))
    strays = {n: f for n, f in shipped.modules.items() if f and n not in ("__main__", "__mp_main__") and not f.startswith(allowed)}
    assert not strays, strays
    for sdk in ("boto3", "botocore"):
        if shipped.modules.get(sdk):
            assert shipped.modules[sdk].startswith(str(runtime) + os.sep), shipped.modules[sdk]
    assert "pydantic" not in shipped.modules


# --------------------------------------------------------------------------- services


@pytest.fixture(scope="module")
def pg() -> Iterator[str]:
    """A throwaway PostgreSQL database; its URL carries a password (trust auth ignores it), so
    every log line can be checked for it."""
    with pg_database("adf_pkg") as url:
        yield url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")


@pytest.fixture(scope="module")
def aws() -> Iterator[str]:
    with moto_endpoint() as (url, _mp):
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        s3.create_bucket(Bucket=IN_BUCKET)
        s3.create_bucket(Bucket=OUT_BUCKET)
        boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1").create_table(
            TableName=TABLE, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        )
        yield url


LEAKY_STEPS = f'''
def leak(record):
    raise RuntimeError("cannot reach postgresql://app:{PASSWORD}@db.internal:5432/prod?token={TOKEN}")
'''


@pytest.fixture(scope="module")
def event_flows(tmp_path_factory: pytest.TempPathFactory, pg: str) -> Path:
    """Flows for the SQS and S3 functions (``FlowsDir`` pointed at them), with a step module."""
    d = tmp_path_factory.mktemp("flows")
    specs = {
        "ingest": {"source": {"type": "payload"}, "sink": {"type": "sql", "url": pg, "table": "sqs_rows"}},
        "leaky": {"source": {"type": "payload"}, "steps": [{"type": "python", "function": "leaky_steps:leak"}],
                  "sink": {"type": "file", "path": str(d / "leaky.jsonl")}, "runtime": {"max_dead_letters": 0}},
        "objects": {"source": {"type": "file", "path": f"s3://{IN_BUCKET}/placeholder.csv", "format": "csv"},
                    "sink": {"type": "file", "path": f"s3://{OUT_BUCKET}/orders/result.jsonl", "format": "jsonl"}},
    }
    for name, spec in specs.items():
        (d / f"{name}.json").write_text(json.dumps({"name": name, **spec}))
    (d / "leaky_steps.py").write_text(LEAKY_STEPS)
    return d


def _secrets_absent(shipped: Shipped) -> None:
    assert PASSWORD not in shipped.output and TOKEN not in shipped.output


# --------------------------------------------------------------------------- the package itself


def test_every_package_holds_what_runs_not_what_the_runtime_has_and_fits(build: Build) -> None:
    assert set(build.handlers) == {"HttpFunction", "ScheduleFunction", "SqsFunction", "S3Function"}
    for function in build.handlers:
        fn = build.function(function)
        for pkg in ("active_data_flow/lambda_app", "active_data_flow", "active_data_flow/handlers", "aws_lambda_powertools",
                    "aws_xray_sdk", "sqlalchemy", "psycopg", "yaml", "alembic"):
            assert (fn / pkg / "__init__.py").is_file(), f"{function} lacks {pkg}"
        assert (fn / "active_data_flow" / "handlers" / "schedule" / "migrations" / "env.py").is_file()
        # one import package: nothing generic at the top of the package
        assert not [p for p in ("core", "handlers", "lambda_app") if (fn / p).exists()], function
        assert [p for p in NOT_SHIPPED if (fn / p).exists()] == [], function
        # the bundled example flows, flat (the loader reads one level), with their step modules
        assert {p.name for p in (fn / "flows").glob("*.py")} == {"transforms.py", "order_steps.py"}
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(fn.rglob("*")):
                if f.is_file():
                    zf.write(f, f.relative_to(fn))
        assert buf.tell() <= MAX_ZIP_BYTES, f"{function}: {buf.tell() / 1e6:.1f} MB zipped"


# --------------------------------------------------------------------------- HTTP


ORDERS = [{"id": 1, "customer": "Ada", "quantity": 2, "unit_price": 9.5},
          {"id": 2, "customer": "Bob", "quantity": 3, "unit_price": "1.10"}]


def test_http_lists_the_bundled_flows_and_runs_one_for_every_event_shape(build: Build, runtime_dir: Path,
                                                                         tmp_path: Path) -> None:
    events = [
        rest_event("GET", "/flows"),
        v2_event("http-api", "GET", "/flows"),
        v2_event("url", "GET", "/flows"),
        rest_event("POST", "/flows/orders_enrich/run", body={"records": ORDERS}),
        v2_event("http-api", "POST", "/flows/orders_enrich/run", body={"records": ORDERS}),
        v2_event("url", "POST", "/flows/orders_enrich/run", body=ORDERS),
        rest_event("GET", "/flows/no_such_flow/run"),
    ]
    got = invoke(build, runtime_dir, "HttpFunction", events, tmp_path)
    answers = [got.ok(i) for i in range(len(events))]
    bodies = [json.loads(a["body"]) for a in answers]
    for answer, body in zip(answers[:3], bodies[:3], strict=True):
        assert answer["statusCode"] == 200, body
        assert {f["name"] for f in body["flows"]} == BUNDLED_FLOWS
    for answer, body in zip(answers[3:6], bodies[3:6], strict=True):
        assert answer["statusCode"] == 200, body
        # the bundled step module (flows/order_steps.py) priced them
        assert [(r["id"], r["total"], r["currency"]) for r in body["records"]] == [(1, 19.0, "EUR"), (2, 3.3, "EUR")]
    assert answers[6]["statusCode"] == 404 and "no_such_flow" in answers[6]["body"]
    # logs: Powertools lines, the engine's included, with the run's id and the engine's location
    run_ids = {b["run_id"] for b in bodies[3:6]}
    finished = [line for line in got.logs if line.get("message") == "run finished"]
    assert {line["run_id"] for line in finished} == run_ids
    for line in finished:
        assert line["location"].startswith("active_data_flow.engine."), line
        assert line["service"] == "active-data-flow" and "fields" not in line and line["records_out"] == 2
    assert all(line["service"] == "active-data-flow" for line in got.logs)
    assert got.metric("ColdStart") == 1 and got.metric("HttpRequests") == len(events)
    # the unknown flow is the client's mistake (a 4xx), not a failed flow
    assert (got.metric("FlowRuns"), got.metric("FlowFailures"), got.metric("HttpClientErrors")) == (3, 0, 1)


def test_the_service_name_defaults_to_adf_without_powertools_service_name(build: Build, runtime_dir: Path,
                                                                        tmp_path: Path) -> None:
    got = invoke(build, runtime_dir, "HttpFunction", [rest_event("POST", "/flows/orders_enrich/run", body=ORDERS)],
                 tmp_path, POWERTOOLS_SERVICE_NAME=None)
    assert got.ok()["statusCode"] == 200
    engine = got.engine_lines()
    assert engine and {line["service"] for line in got.logs} == {"adf"}
    # the engine's lines reach the output once each, shaped (not also raw through propagation)
    assert [line["message"] for line in engine].count("run finished") == 1
    assert all("fields" not in line for line in got.logs)


def test_http_with_tracing_on_uses_the_runtime_botocore_and_sends_segments(build: Build, runtime_dir: Path,
                                                                           tmp_path: Path) -> None:
    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.settimeout(2)
    try:
        got = invoke(build, runtime_dir, "HttpFunction", [rest_event("POST", "/flows/orders_enrich/run", body=ORDERS)],
                     tmp_path, POWERTOOLS_TRACE_DISABLED="false", AWS_XRAY_CONTEXT_MISSING="IGNORE_ERROR",
                     AWS_XRAY_DAEMON_ADDRESS=f"127.0.0.1:{daemon.getsockname()[1]}",
                     _X_AMZN_TRACE_ID="Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1")
        assert got.ok()["statusCode"] == 200
        assert got.modules["aws_xray_sdk"].startswith(str(build.function("HttpFunction")))
        names = []
        try:
            while True:
                names.append(json.loads(daemon.recv(65536).decode().partition("\n")[2])["name"])
        except TimeoutError:
            pass
        assert "## handler" in names
    finally:
        daemon.close()


# --------------------------------------------------------------------------- schedule


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").fetchall()
    return {r[0] for r in rows}


def test_the_tick_creates_the_schedule_tables_and_runs_due_flows_on_postgres(
        build: Build, runtime_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "spin"))  # the store checks that step modules import
    with pg_database("adf_pkg_tick") as plain:
        url = plain.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")
        tick = event("cloudwatch-scheduled-event")
        first = invoke(build, runtime_dir, "ScheduleFunction", [tick], tmp_path, ADF_DATABASE_URL=url)
        assert first.ok()["status"] == "ok" and first.ok()["flows_due"] == 0
        assert {"data_flows", "data_flow_runs", "heartbeat_requests", "alembic_version"} <= _tables(plain)
        with SqlScheduleStore(plain) as store:
            store.create_flow("load", {
                "source": {"type": "memory", "records": [{"id": i, "name": f"n{i}"} for i in range(3)]},
                "steps": [{"type": "filter", "field": "id", "op": "lt", "value": 2}],
                "sink": {"type": "sql", "url": url, "table": "ticked"},
            }, 3600)
            store.create_flow("refused", {
                "source": {"type": "memory", "records": [{"id": 1}]},
                "steps": [{"type": "python", "function": "order_steps:accept"}],  # a bundled step module
                "sink": {"type": "sql", "url": url, "table": "never"}, "runtime": {"max_dead_letters": 0},
            }, 3600)
        second = invoke(build, runtime_dir, "ScheduleFunction", [tick, tick], tmp_path, ADF_DATABASE_URL=url)
        result, again = second.ok(0), second.ok(1)
        assert result["flows_triggered"] == 2 and again["flows_triggered"] == 0
        runs = {r["flow"]: r for r in result["runs"]}
        assert (runs["load"]["status"], runs["load"]["records_out"]) == ("success", 2)
        assert runs["refused"]["status"] == "failed" and "dead-lettered" in runs["refused"]["error"]
        with psycopg.connect(plain) as conn:
            assert conn.execute("SELECT id, name FROM ticked ORDER BY id").fetchall() == [(0, "n0"), (1, "n1")]
            statuses = dict(conn.execute(
                "SELECT f.name, r.status FROM data_flow_runs r JOIN data_flows f ON f.id = r.flow_id").fetchall())
        assert statuses == {"load": "success", "refused": "failed"}
        assert second.metric("FlowRuns") == 1 and second.metric("FlowFailures") == 1 and second.metric("ColdStart") == 1
        # the engine's lines: run ids at the top, located in the engine, the URL's password hidden
        by_run = {line["run_id"] for line in second.engine_lines() if line.get("run_id")}
        assert {r["run_id"] for r in result["runs"]} <= by_run
        assert any(line["location"].startswith("active_data_flow.handlers.scheduler.") for line in second.engine_lines())
        for shipped in (first, second):
            _secrets_absent(shipped)


# --------------------------------------------------------------------------- SQS


def test_sqs_batch_reports_the_failed_messages_logs_why_and_loads_the_rest(
        build: Build, runtime_dir: Path, tmp_path: Path, pg: str, event_flows: Path, aws: str) -> None:
    batch = sqs_event([
        ("m-ok-1", json.dumps({"flow": "ingest", "records": [{"id": 1}, {"id": 2}]})),
        ("m-malformed", "{not json"),
        ("m-leaky", json.dumps({"flow": "leaky", "records": [{"n": 1}]})),
        ("m-unknown", json.dumps({"flow": "no_such_flow", "records": [{"id": 9}]})),
        ("m-ok-2", json.dumps({"flow": "ingest", "records": [{"id": 3}]})),
    ])
    got = invoke(build, runtime_dir, "SqsFunction", [batch], tmp_path, ADF_FLOWS_DIR=str(event_flows),
                 AWS_ENDPOINT_URL=aws, ADF_IDEMPOTENCY_TABLE=TABLE)
    failures = got.ok()["batchItemFailures"]
    assert sorted(f["itemIdentifier"] for f in failures) == ["m-leaky", "m-malformed", "m-unknown"]
    with psycopg.connect(pg.replace(f":{PASSWORD}@", "@")) as conn:
        assert [r[0] for r in conn.execute("SELECT id FROM sqs_rows ORDER BY id").fetchall()] == [1, 2, 3]
    failed = {line["message_id"]: line for line in got.logs if line.get("message") == "message failed"}
    assert set(failed) == {"m-leaky", "m-malformed", "m-unknown"}
    assert "JSON" in failed["m-malformed"]["reason"] and "no_such_flow" in failed["m-unknown"]["reason"]
    assert "dead-lettered" in failed["m-leaky"]["reason"]
    # the step's error, as the engine reports it, with the URL's password and the token hidden
    [leaky] = [line for line in got.logs if line.get("message") == "run finished" and line.get("flow") == "leaky"]
    assert leaky["dead_letter_reasons"] == [
        {"count": 1, "reason": "RuntimeError: cannot reach postgresql://app:***@db.internal:5432/prod?token=***"}]
    assert all(line["correlation_id"] == mid for mid, line in failed.items())
    assert got.metric("SqsFailedMessages") == 3 and got.metric("FlowRuns") == 2
    _secrets_absent(got)


# --------------------------------------------------------------------------- S3


def test_s3_put_runs_the_routed_flow_on_the_object_once(build: Build, runtime_dir: Path, tmp_path: Path,
                                                        event_flows: Path, aws: str) -> None:
    s3 = boto3.client("s3", endpoint_url=aws, region_name="us-east-1")
    key = "incoming/day 1/orders.csv"
    put = s3.put_object(Bucket=IN_BUCKET, Key=key, Body=b"id,name\n1,a\n2,b\n3,c\n")
    ev = s3_put_event(IN_BUCKET, "incoming/day+1/orders.csv", etag=put["ETag"].strip('"'))
    got = invoke(build, runtime_dir, "S3Function", [ev, ev], tmp_path, ADF_FLOWS_DIR=str(event_flows),
                 AWS_ENDPOINT_URL=aws, ADF_IDEMPOTENCY_TABLE=TABLE,
                 ADF_S3_ROUTES=json.dumps({f"{IN_BUCKET}/incoming/": "objects"}))
    [run] = got.ok(0)["results"]
    assert (run["flow"], run["object"], run["records_out"]) == ("objects", f"s3://{IN_BUCKET}/{key}", 3)
    body = s3.get_object(Bucket=OUT_BUCKET, Key="orders/result.jsonl")["Body"].read().decode()
    assert [json.loads(line) for line in body.splitlines()] == [
        {"id": "1", "name": "a"}, {"id": "2", "name": "b"}, {"id": "3", "name": "c"}]
    # the redelivered notification is answered from the idempotency table: no second run
    assert got.ok(1)["results"] == [run]
    assert got.metric("FlowRuns") == 1
    assert got.modules["botocore"].startswith(str(runtime_dir))
