"""Lambda cold start: import time of each handler module against Powertools alone; package size.

    scripts/sam-setup && scripts/lambda-runtime-setup
    .venv-sam/bin/sam build -t infra/template.yaml --build-dir build/sam
    .venv/bin/python bench/lambda_init.py [--runs 15] [--package build/sam] [--markdown]

Each measurement is a fresh interpreter (``python -S``: no site-packages) whose import path
is one function's deployment package (``build/sam/<Function>``, what Lambda puts in
``/var/task``) and then the AWS SDK of Lambda's python3.11 runtime (``/var/runtime`` there:
``.venv-lambda-runtime/python`` here, boto3 1.34, from ``scripts/lambda-runtime-setup``), with the environment the SAM template sets, and, as in Lambda, whose ``/var/task`` is
read-only, no bytecode written: only the ``.pyc`` the package ships are used (the build
compiles them; the report says how many modules have one). It times ``import <module>``
with ``time.perf_counter``. The baseline, measured in the same run and interleaved with the
handlers, imports the Powertools pieces the handlers import at module level (Logger, Metrics,
Tracer, batch, data classes, typing; idempotency is imported on first use, as it needs
boto3, which Lambda's runtime provides) and nothing of ours. Figures are medians of ``--runs``.
Target: each handler adds ≤ 50 ms over the baseline. Both tracing settings of the template
are measured: ``on`` (``Tracing: Active``, Powertools' X-Ray tracer) and ``off``
(``POWERTOOLS_TRACE_DISABLED=true``, where ``active_data_flow.lambda_app.tracing`` skips the X-Ray SDK). Two more
columns, for reading the figures: over a plain Powertools handler module (its ``Logger()``,
``Metrics()``, ``Tracer()`` with Powertools' defaults, which patch every library X-Ray knows)
and over the same with ``Tracer(auto_patch=False)``: Powertools' tracer with the X-Ray SDK
loaded and nothing patched, what Powertools itself costs a traced function — the difference
is our code's.

Without a SAM build (``--package -``) it measures in this interpreter's environment instead
(the project and aws-lambda-powertools must be importable). The package size is the SAM
build output per function: bytes on disk and as a deflated zip (what ``sam deploy`` uploads).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HANDLERS = {  # module -> SAM function (its package)
    "active_data_flow.lambda_app.http": "HttpFunction",
    "active_data_flow.lambda_app.schedule": "ScheduleFunction",
    "active_data_flow.lambda_app.sqs": "SqsFunction",
    "active_data_flow.lambda_app.s3": "S3Function",
}
POWERTOOLS = """\
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, S3Event
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
"""
#: a minimal Powertools handler module: the same imports plus the Logger, Metrics and Tracer
#: objects every handler creates (Tracer() loads the X-Ray SDK and botocore: most of the cost)
SKELETON = POWERTOOLS + "logger, metrics, tracer = Logger(), Metrics(), Tracer()\n"
#: the same with a tracer that patches nothing: what Powertools itself costs a traced function
#: (with tracing on, Tracer() loads the X-Ray SDK)
TRACED = POWERTOOLS + "logger, metrics, tracer = Logger(), Metrics(), Tracer(auto_patch=False)\n"
PROBE = """\
import sys, time
t = time.perf_counter()
{body}
sys.stdout.write(repr((time.perf_counter() - t) * 1000.0))
"""


#: the runtime's own libraries (boto3, botocore, jmespath…): scripts/lambda-runtime-setup
RUNTIME_DIR = ROOT / ".venv-lambda-runtime" / "python"


def lambda_env(package: Path | None, state_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADF_", "POWERTOOLS_", "PYTHON"))}
    env.update(
        POWERTOOLS_SERVICE_NAME="active-data-flow", POWERTOOLS_METRICS_NAMESPACE="ActiveDataFlow",
        LOG_LEVEL="INFO", ADF_STATE_DIR=state_dir, ADF_IDEMPOTENCY_TABLE="adf-idempotency",
        AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1", AWS_LAMBDA_FUNCTION_NAME="bench",
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_EC2_METADATA_DISABLED="true",
        LAMBDA_TASK_ROOT=str(package or ROOT),  # as in Lambda: Powertools enables tracing only there
    )
    if package is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(package), str(RUNTIME_DIR)])  # /var/task, then /var/runtime
        env["ADF_FLOWS_DIR"] = str(package / "flows")
        # /var/task is read-only in Lambda: only the bytecode the package ships is used, none is written
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPATH"] = str(ROOT)
    return env


def measure(body: str, env: dict[str, str], isolated: bool) -> float:
    cmd = [sys.executable, *(["-S", "-s"] if isolated else []), "-c", PROBE.format(body=body)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir())
    if r.returncode != 0:
        raise RuntimeError(f"{body!r} failed:\n{r.stderr[-2000:]}")
    return float(r.stdout)


def dir_size(path: Path) -> tuple[int, int]:
    """(bytes on disk, bytes as a deflated zip)."""
    raw = 0
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(path.rglob("*")):
            if f.is_file():
                raw += f.stat().st_size
                zf.write(f, f.relative_to(path))
    return raw, buf.tell()


def shipped_bytecode(package: Path) -> tuple[int, int]:
    """(modules with a .pyc for this Python in the package, modules)."""
    tag = sys.implementation.cache_tag
    sources = list(package.rglob("*.py"))
    compiled = sum(1 for f in sources if (f.parent / "__pycache__" / f"{f.stem}.{tag}.pyc").exists())
    return compiled, len(sources)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--package", default=str(ROOT / "build" / "sam"),
                    help="the `sam build` output dir ('-': this interpreter's environment)")
    ap.add_argument("--target-ms", type=float, default=50.0)
    ap.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = ap.parse_args(argv)

    build = None if args.package == "-" else Path(args.package).resolve()
    if build is not None and not (build / "HttpFunction").is_dir():
        print(f"no SAM build in {build}: run `adf lambda build` (or give --package -)", file=sys.stderr)
        return 2
    if build is not None and not (RUNTIME_DIR / "boto3").is_dir():
        print(f"no Lambda runtime libraries in {RUNTIME_DIR}: run scripts/lambda-runtime-setup", file=sys.stderr)
        return 2
    missing = [m for m in HANDLERS if not (ROOT / (m.replace(".", "/") + ".py")).exists()]
    if missing:
        print(f"handler modules not there yet: {', '.join(missing)}", file=sys.stderr)
        return 2

    # bytecode: what the package ships (infra/lambda/Makefile compiles it; nothing is written while measuring)
    sizes = {f: dir_size(build / f) for f in HANDLERS.values()} if build is not None else {}
    modes = {"on": {}, "off": {"POWERTOOLS_TRACE_DISABLED": "true"}}  # template: Tracing=Active / PassThrough
    with tempfile.TemporaryDirectory() as state_dir:
        samples: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.runs):  # interleaved: drift hits every contender alike
            for mode, extra in modes.items():
                for module, function in HANDLERS.items():
                    pkg = None if build is None else build / function
                    env = {**lambda_env(pkg, state_dir), **extra}
                    samples.setdefault((mode, module), []).append(measure(f"import {module}", env, build is not None))
                env = {**lambda_env(None if build is None else build / "HttpFunction", state_dir), **extra}
                samples.setdefault((mode, "powertools"), []).append(measure(POWERTOOLS, env, build is not None))
                samples.setdefault((mode, "skeleton"), []).append(measure(SKELETON, env, build is not None))
                samples.setdefault((mode, "traced"), []).append(measure(TRACED, env, build is not None))
    med = {k: statistics.median(v) for k, v in samples.items()}
    results = {}
    for mode in modes:
        base, skeleton, traced = med[(mode, "powertools")], med[(mode, "skeleton")], med[(mode, "traced")]
        rows = []
        for module, function in HANDLERS.items():
            added = med[(mode, module)] - base
            row = {"module": module, "function": function, "import_ms": round(med[(mode, module)], 1),
                   "added_ms": round(added, 1), "added_over_skeleton_ms": round(med[(mode, module)] - skeleton, 1),
                   "added_over_traced_ms": round(med[(mode, module)] - traced, 1),
                   "ok": added <= args.target_ms}
            if function in sizes:
                raw, zipped = sizes[function]
                row.update(package_bytes=raw, zip_bytes=zipped)
            rows.append(row)
        results[mode] = {"powertools_ms": round(base, 1), "skeleton_ms": round(skeleton, 1),
                         "traced_ms": round(traced, 1), "handlers": rows}
    result = {"runs": args.runs, "python": sys.version.split()[0], "target_ms": args.target_ms,
              "package": str(build) if build else None, "tracing": results,
              "bytecode": shipped_bytecode(build / "SqsFunction") if build else None}

    if args.json:
        print(json.dumps(result))
        return 0
    if result["bytecode"] is not None:
        compiled, sources = result["bytecode"]
        print(f"package bytecode: {compiled} of {sources} modules compiled"
              + ("" if compiled else " (none: every cold start compiles what it imports)"))
    for mode, res in results.items():
        print(f"tracing {mode}: Powertools imports alone {res['powertools_ms']:.1f} ms; with Logger()/Metrics()/"
              f"Tracer(): {res['skeleton_ms']:.1f} ms; with a tracer patching nothing: {res['traced_ms']:.1f} ms "
              f"(median of {args.runs}, fresh interpreter each)")
        for r in res["handlers"]:
            size = (f"  package {r['package_bytes'] / 1e6:.1f} MB, zip {r['zip_bytes'] / 1e6:.1f} MB"
                    if "zip_bytes" in r else "")
            print(f"  {r['module']:<22} {r['import_ms']:7.1f} ms  adds {r['added_ms']:6.1f} ms "
                  f"({'ok' if r['ok'] else 'OVER'} ≤ {args.target_ms:.0f}); over the skeleton "
                  f"{r['added_over_skeleton_ms']:6.1f} ms, over the unpatched tracer {r['added_over_traced_ms']:6.1f} ms"
                  f"{size}")
    if args.markdown:
        print("\n| tracing | handler module | import (ms) | added over Powertools imports (ms) "
              "| added over Powertools skeleton (ms) | added over Powertools with an unpatched tracer (ms) "
              "| package (MB) | zip (MB) |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for mode, res in results.items():
            print(f"| {mode} | Powertools imports alone (baseline) | {res['powertools_ms']:.1f} | — | — | — | | |")
            print(f"| {mode} | Powertools skeleton: imports + Logger/Metrics/Tracer | {res['skeleton_ms']:.1f} "
                  "| — | — | — | | |")
            print(f"| {mode} | the same, Tracer(auto_patch=False) | {res['traced_ms']:.1f} | — | — | — | | |")
            for r in res["handlers"]:
                pkg = f"{r['package_bytes'] / 1e6:.1f}" if "package_bytes" in r else "—"
                zp = f"{r['zip_bytes'] / 1e6:.1f}" if "zip_bytes" in r else "—"
                print(f"| {mode} | `{r['module']}` | {r['import_ms']:.1f} | {r['added_ms']:.1f} "
                      f"| {r['added_over_skeleton_ms']:.1f} | {r['added_over_traced_ms']:.1f} | {pkg} | {zp} |")
    return 0 if all(r["ok"] for res in results.values() for r in res["handlers"]) else 1


if __name__ == "__main__":
    t0 = time.perf_counter()
    code = main()
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    sys.exit(code)
