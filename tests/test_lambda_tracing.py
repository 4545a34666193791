"""Tracing on and off, each in a fresh interpreter as a cold start is (Powertools reads the
environment when the handler module is imported)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from moto_endpoint import moto_endpoint

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, sys
sys.path.insert(0, {tests!r})
from active_data_flow.lambda_app import http  # first: lambda_env turns tracing off when it is imported first
from active_data_flow.lambda_app.host import tracer
from lambda_env import Context, event
ev = event("lambda-function-url")
ev.update(rawPath="/flows/echo/run", body=json.dumps({{"records": [{{"n": 1}}, {{"n": 2}}]}}), isBase64Encoded=False)
ev["requestContext"]["http"].update(method="POST", path="/flows/echo/run")
answer = http.handler(ev, Context())
def patched():
    return (sorted(__import__("aws_xray_sdk.core.patcher", fromlist=["x"])._PATCHED_MODULES)
            if "aws_xray_sdk.core" in sys.modules else [])
after_handler = {{"botocore_client_loaded": "botocore.client" in sys.modules, "patched": patched()}}
{then}
print(json.dumps({{
    "after_handler": after_handler,
    "provider": type(tracer.provider).__name__,
    "xray_loaded": "aws_xray_sdk.core" in sys.modules,
    "patched": patched(),
    "status": answer["statusCode"],
    "records_out": json.loads(answer["body"]).get("records_out"),
}}))
"""


def _run(tmp_path: Path, then: str = "", **env: str) -> dict[str, Any]:
    """The HTTP handler's cold start and one request in a fresh interpreter, then ``then``."""
    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "echo.json").write_text(json.dumps({"source": {"type": "payload"}, "sink": {"type": "response"}}))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "ADF_", "LAMBDA_TASK_ROOT"))}
    base.update(ADF_FLOWS_DIR=str(flows), ADF_STATE_DIR=str(tmp_path / "state"), LAMBDA_TASK_ROOT=str(ROOT),
                AWS_LAMBDA_FUNCTION_NAME="adf-test", AWS_DEFAULT_REGION="us-east-1", PYTHONPATH=str(ROOT), **env)
    r = subprocess.run([sys.executable, "-c", PROBE.format(tests=str(ROOT / "tests"), then=then)], env=base,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    result: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


def test_with_tracing_off_the_x_ray_sdk_is_not_loaded_and_the_handler_runs(tmp_path: Path) -> None:
    got = _run(tmp_path, POWERTOOLS_TRACE_DISABLED="true")
    assert got == {"after_handler": {"botocore_client_loaded": False, "patched": []}, "provider": "NoOpProvider",
                   "xray_loaded": False, "patched": [], "status": 200, "records_out": 2}


TRACE = {"_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
         "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR"}  # a trace header as Lambda sets it


def _daemon() -> socket.socket:
    """A UDP socket standing in for the X-Ray daemon (what ``AWS_XRAY_DAEMON_ADDRESS`` names)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock


def _segments(sock: socket.socket) -> list[dict[str, Any]]:
    out = []
    sock.settimeout(0.5)
    try:
        while True:
            header, _, body = sock.recv(65536).decode().partition("\n")
            assert json.loads(header) == {"format": "json", "version": 1}
            out.append(json.loads(body))
    except TimeoutError:
        return out


def test_with_tracing_on_botocore_is_patched_when_imported_and_its_calls_are_traced(tmp_path: Path) -> None:
    sock = _daemon()
    with moto_endpoint() as (url, _mp):
        # then the function uses AWS: botocore is patched as it is imported, its calls traced
        then = ("import boto3\nwith tracer.provider.in_subsegment('## probe'):\n"
                f"    boto3.client('s3', endpoint_url={url!r}).list_buckets()")
        got = _run(tmp_path, then, AWS_XRAY_DAEMON_ADDRESS=f"127.0.0.1:{sock.getsockname()[1]}", **TRACE)
    assert got["provider"] == "AsyncAWSXRayRecorder" and got["xray_loaded"] is True
    assert (got["status"], got["records_out"]) == (200, 2)
    # a flow that never touches AWS: botocore is neither loaded nor patched at a cold start
    assert got["after_handler"] == {"botocore_client_loaded": False, "patched": []}
    assert "botocore" in got["patched"]  # patched as boto3 imported it
    # the X-Ray SDK streams each subsegment to the daemon on its own
    segments = {seg["name"]: seg for seg in _segments(sock)}
    assert "## handler" in segments and "## probe" in segments
    call = segments["s3"]
    assert (call["namespace"], call["aws"]["operation"]) == ("aws", "ListBuckets")
    assert call["parent_id"] == segments["## probe"]["id"] and call["http"]["response"]["status"] == 200


def test_the_patched_modules_are_configurable(tmp_path: Path) -> None:
    assert _run(tmp_path, ADF_TRACE_PATCH_MODULES="", **TRACE)["patched"] == []
    only = _run(tmp_path, "import sqlite3, http.client, boto3", ADF_TRACE_PATCH_MODULES="sqlite3", **TRACE)
    assert (only["after_handler"]["patched"], only["patched"]) == ([], ["sqlite3"])
    every = _run(tmp_path, "import sqlite3", ADF_TRACE_PATCH_MODULES="all", **TRACE)
    # Powertools' patch_all list, each library as the function imports it; the rest stay unloaded
    assert (every["after_handler"]["patched"], every["patched"]) == ([], ["sqlite3"])
