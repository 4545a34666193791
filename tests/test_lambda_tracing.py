"""Tracing on and off, each in a fresh interpreter as a cold start is (Powertools reads the
environment when the handler module is imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, sys
sys.path.insert(0, {tests!r})
from lambda_app import http  # first: lambda_env turns tracing off when it is imported first
from lambda_app.host import tracer
from lambda_env import Context, event
ev = event("lambda-function-url")
ev.update(rawPath="/flows/echo/run", body=json.dumps({{"records": [{{"n": 1}}, {{"n": 2}}]}}), isBase64Encoded=False)
ev["requestContext"]["http"].update(method="POST", path="/flows/echo/run")
answer = http.handler(ev, Context())
print(json.dumps({{
    "provider": type(tracer.provider).__name__,
    "xray_loaded": "aws_xray_sdk.core" in sys.modules,
    "patched": sorted(__import__("aws_xray_sdk.core.patcher", fromlist=["x"])._PATCHED_MODULES)
               if "aws_xray_sdk.core" in sys.modules else [],
    "status": answer["statusCode"],
    "records_out": json.loads(answer["body"]).get("records_out"),
}}))
"""


def _run(tmp_path: Path, **env: str) -> dict[str, object]:
    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "echo.json").write_text(json.dumps({"source": {"type": "payload"}, "sink": {"type": "response"}}))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "ADF_", "LAMBDA_TASK_ROOT"))}
    base.update(ADF_FLOWS_DIR=str(flows), ADF_STATE_DIR=str(tmp_path / "state"), LAMBDA_TASK_ROOT=str(ROOT),
                AWS_LAMBDA_FUNCTION_NAME="adf-test", AWS_DEFAULT_REGION="us-east-1", PYTHONPATH=str(ROOT), **env)
    r = subprocess.run([sys.executable, "-c", PROBE.format(tests=str(ROOT / "tests"))], env=base,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    result: dict[str, object] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


def test_with_tracing_off_the_x_ray_sdk_is_not_loaded_and_the_handler_runs(tmp_path: Path) -> None:
    got = _run(tmp_path, POWERTOOLS_TRACE_DISABLED="true")
    assert got == {"provider": "NoOpProvider", "xray_loaded": False, "patched": [], "status": 200, "records_out": 2}


def test_with_tracing_on_in_lambda_the_tracer_is_powertools_x_ray_tracer(tmp_path: Path) -> None:
    # an X-Ray trace header as Lambda sets it; the segments go nowhere (no daemon), as in sam local
    got = _run(tmp_path, _X_AMZN_TRACE_ID="Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
               AWS_XRAY_CONTEXT_MISSING="IGNORE_ERROR")
    assert got["provider"] == "AsyncAWSXRayRecorder" and got["xray_loaded"] is True
    assert got["patched"] == ["botocore", "httplib"]  # what the connectors use, not patch_all
    assert (got["status"], got["records_out"]) == (200, 2)


def test_the_patched_modules_are_configurable(tmp_path: Path) -> None:
    trace = {"_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
             "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR"}
    assert _run(tmp_path, ADF_TRACE_PATCH_MODULES="", **trace)["patched"] == []
    every = _run(tmp_path, ADF_TRACE_PATCH_MODULES="all", **trace)["patched"]
    assert {"botocore", "sqlite3"} <= set(every) and len(every) > 2
