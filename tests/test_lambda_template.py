"""infra/template.yaml: its shape (fast), then `sam validate --lint` and `sam build` for real (slow)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "infra" / "template.yaml"
FUNCTIONS = {
    "HttpFunction": "lambda_app.http.handler",
    "ScheduleFunction": "lambda_app.schedule.handler",
    "SqsFunction": "lambda_app.sqs.handler",
    "S3Function": "lambda_app.s3.handler",
}


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation short forms (!Ref X → {"Ref": X}, !GetAtt a.b, !Sub …)."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)


def test_globals(template: dict[str, Any]) -> None:
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    fn = template["Globals"]["Function"]
    assert fn["Runtime"] == "python3.11" and fn["Architectures"] == ["x86_64"]
    assert fn["Tracing"] == {"Ref": "Tracing"} and template["Parameters"]["Tracing"]["Default"] == "Active"
    assert fn["Timeout"] and fn["MemorySize"]
    # tracing off in the template is tracing off for Powertools (and no X-Ray SDK is loaded)
    assert fn["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == {"Fn::If": ["TracingActive", "false", "true"]}
    env = fn["Environment"]["Variables"]
    for name in ("ADF_FLOWS_DIR", "ADF_STATE_DIR", "ADF_STATE_URL", "ADF_DATABASE_URL", "ADF_DEFAULT_FLOW",
                 "ADF_S3_ROUTES", "ADF_VAR_JSON", "ADF_IDEMPOTENCY_TABLE", "POWERTOOLS_SERVICE_NAME",
                 "POWERTOOLS_METRICS_NAMESPACE", "LOG_LEVEL"):
        assert name in env, name
    assert env["ADF_IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}
    # every parameter reaches the functions and the secret one is NoEcho
    params = template["Parameters"]
    assert params["DatabaseUrl"]["NoEcho"] is True
    text = TEMPLATE.read_text()
    for name in params:
        assert f"!Ref {name}" in text, f"parameter {name} is unused"


def test_functions_and_events(template: dict[str, Any]) -> None:
    res = template["Resources"]
    for name, handler in FUNCTIONS.items():
        assert res[name]["Type"] == "AWS::Serverless::Function"
        assert res[name]["Properties"]["Handler"] == handler
        assert res[name]["Metadata"]["BuildMethod"] == "makefile"
    http = res["HttpFunction"]["Properties"]
    events = {e["Type"]: e["Properties"] for e in http["Events"].values()}
    assert events["Api"] == {"Path": "/flows/{proxy+}", "Method": "ANY"}
    assert events["HttpApi"]["Path"] == "/flows/{proxy+}"
    assert http["FunctionUrlConfig"]["AuthType"] == "AWS_IAM"
    (tick,) = res["ScheduleFunction"]["Properties"]["Events"].values()
    assert tick["Type"] == "Schedule"
    assert template["Parameters"]["ScheduleExpression"]["Default"] == "rate(1 minute)"
    (sqs,) = res["SqsFunction"]["Properties"]["Events"].values()
    assert sqs["Type"] == "SQS"
    assert sqs["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert sqs["Properties"]["Queue"] == {"Fn::GetAtt": ["FlowQueue", "Arn"]}
    redrive = res["FlowQueue"]["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["FlowDeadLetterQueue", "Arn"]}
    assert res["FlowQueue"]["Properties"]["VisibilityTimeout"] >= 6 * template["Globals"]["Function"]["Timeout"]
    (s3,) = res["S3Function"]["Properties"]["Events"].values()
    assert s3["Type"] == "S3" and s3["Properties"]["Events"] == "s3:ObjectCreated:*"
    assert s3["Properties"]["Bucket"] == {"Ref": "InputBucket"}
    assert s3["Properties"]["Filter"]["S3Key"]["Rules"][0]["Name"] == "prefix"
    assert res["InputBucket"]["Type"] == "AWS::S3::Bucket"


def test_policies(template: dict[str, Any]) -> None:
    res = template["Resources"]
    for name in FUNCTIONS:
        kinds = {next(iter(p)) for p in res[name]["Properties"]["Policies"]}
        assert "DynamoDBCrudPolicy" in kinds, name
    assert "SQSPollerPolicy" in {next(iter(p)) for p in res["SqsFunction"]["Properties"]["Policies"]}
    assert "S3ReadPolicy" in {next(iter(p)) for p in res["S3Function"]["Properties"]["Policies"]}


def test_idempotency_table(template: dict[str, Any]) -> None:
    table = template["Resources"]["IdempotencyTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}


def test_outputs(template: dict[str, Any]) -> None:
    assert {"ApiUrl", "HttpApiUrl", "FunctionUrl", "QueueUrl", "InputBucketName"} <= set(template["Outputs"])


def test_requirements_list_what_the_handlers_need() -> None:
    text = (ROOT / "lambda_app" / "requirements.txt").read_text().lower()
    for pkg in ("aws-lambda-powertools", "sqlalchemy", "psycopg[binary]", "pyyaml"):
        assert pkg in text, pkg


# --------------------------------------------------------------------------- the real SAM CLI


def _sam() -> str:
    """scripts/sam-setup's venv (installed on first use: ~30 s from PyPI)."""
    sam = ROOT / ".venv-sam" / "bin" / "sam"
    if not sam.exists():
        subprocess.run([str(ROOT / "scripts" / "sam-setup")], check=True, timeout=900)
    return str(sam)


def _sam_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_EC2_METADATA_DISABLED="true", SAM_CLI_TELEMETRY="0", HOME=str(tmp_path))
    return env


@pytest.mark.slow
def test_sam_validate_lint(tmp_path: Path) -> None:
    r = subprocess.run([_sam(), "validate", "--lint", "-t", str(TEMPLATE)], cwd=ROOT, env=_sam_env(tmp_path),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is a valid SAM Template" in r.stdout + r.stderr


@pytest.mark.slow
def test_sam_build(tmp_path: Path) -> None:
    build_dir = tmp_path / "sam"
    r = subprocess.run([_sam(), "build", "-t", str(TEMPLATE), "--build-dir", str(build_dir)], cwd=ROOT,
                       env=_sam_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (build_dir / "template.yaml").is_file()
    for name in FUNCTIONS:
        fn = build_dir / name
        for pkg in ("lambda_app", "core", "handlers", "aws_lambda_powertools", "sqlalchemy", "yaml", "psycopg"):
            assert (fn / pkg / "__init__.py").is_file(), f"{name} lacks {pkg}"
        assert (fn / "flows").is_dir()
        assert not (fn / "node_modules").exists() and not (fn / "tests").exists()
