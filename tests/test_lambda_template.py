"""infra/template.yaml: the properties a security review checks, on the parsed template (fast),
then `sam validate --lint`, cfn-lint's informational rules, SAM's own transform and `sam build`
for real (slow).

Conditions are evaluated here the way CloudFormation does (Fn::Equals / Not / And / Or over the
parameters), so "every route has auth" is checked for each value of ApiAuth, not read off text.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from active_data_flow.handlers.invoke.events import object_route

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "infra" / "template.yaml"
FUNCTIONS = {
    "HttpFunction": "active_data_flow.lambda_app.http.handler",
    "ScheduleFunction": "active_data_flow.lambda_app.schedule.handler",
    "SqsFunction": "active_data_flow.lambda_app.sqs.handler",
    "S3Function": "active_data_flow.lambda_app.s3.handler",
}
#: the handler's routes (active_data_flow.handlers.invoke.http)
ROUTES = {"GET /flows", "GET /flows/{name}", "GET /flows/{name}/run", "POST /flows/{name}/run"}
NO_VALUE = {"Ref": "AWS::NoValue"}
#: actions AWS offers no resource-level permission for: "*" is the only possible Resource
RESOURCELESS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords", "ec2:CreateNetworkInterface",
                "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets", "ec2:DeleteNetworkInterface",
                "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"}


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation short forms (!Ref X → {"Ref": X}, !GetAtt a.b, !Sub …)."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = {"Ref": "Ref", "Condition": "Condition"}.get(suffix, f"Fn::{suffix}")
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
    return parsed


# --------------------------------------------------------------------------- a small CloudFormation evaluator


class Stack:
    """The template's conditions under given parameter values (defaults for the others)."""

    def __init__(self, template: dict[str, Any], **params: Any) -> None:
        self.template = template
        self.params = {k: str(p.get("Default", "")) for k, p in template["Parameters"].items()}
        self.params.update({k: str(v) for k, v in params.items()})

    def value(self, node: Any) -> Any:
        if isinstance(node, dict) and set(node) == {"Ref"} and node["Ref"] in self.params:
            return self.params[node["Ref"]]
        return node

    def condition(self, name: str) -> bool:
        return self.truth(self.template["Conditions"][name])

    def truth(self, node: Any) -> bool:
        (fn, args), = node.items()
        if fn == "Fn::Equals":
            return bool(self.value(args[0]) == self.value(args[1]))
        if fn == "Fn::Not":
            return not self.truth(args[0])
        if fn == "Fn::And":
            return all(self.truth(a) for a in args)
        if fn == "Fn::Or":
            return any(self.truth(a) for a in args)
        if fn == "Condition":
            return self.condition(args)
        raise AssertionError(f"unknown condition function {fn}")

    def resolve(self, node: Any) -> Any:
        """``node`` with every Fn::If decided and AWS::NoValue dropped."""
        if isinstance(node, dict):
            if set(node) == {"Fn::If"}:
                name, yes, no = node["Fn::If"]
                return self.resolve(yes if self.condition(name) else no)
            out = {k: self.resolve(v) for k, v in node.items()}
            return {k: v for k, v in out.items() if v != NO_VALUE}
        if isinstance(node, list):
            return [r for r in (self.resolve(v) for v in node) if r != NO_VALUE]
        return node

    def resources(self) -> dict[str, dict[str, Any]]:
        """The resources this stack creates (their Condition true), resolved."""
        return {name: self.resolve(r) for name, r in self.template["Resources"].items()
                if "Condition" not in r or self.condition(r["Condition"])}


POOL = "arn:aws:cognito-idp:eu-west-1:123456789012:userpool/eu-west-1_AbC123"
AUTH_MODES = {
    "AWS_IAM": ({}, "AWS_IAM", "AWS_IAM", None),
    "LAMBDA_TOKEN": ({"AuthorizerFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:authz"},
                     "CUSTOM", "CUSTOM", ("RestTokenAuthorizer", "HttpTokenAuthorizer")),
    "COGNITO": ({"CognitoUserPoolArn": POOL, "CognitoAppClientIds": "abc123,def456"},
                "COGNITO_USER_POOLS", "JWT", ("RestCognitoAuthorizer", "HttpJwtAuthorizer")),
}


def _statements(role: dict[str, Any], stack: Stack) -> Iterator[dict[str, Any]]:
    for policy in role["Properties"].get("Policies", []):
        yield from policy["PolicyDocument"]["Statement"]
    for arn in role["Properties"].get("ManagedPolicyArns", []):
        assert set(arn) == {"Ref"}, f"an AWS managed policy is attached: {arn}"
        yield from stack.resources()[arn["Ref"]]["Properties"]["PolicyDocument"]["Statement"]


def _actions(statement: Mapping[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def _role_of(stack: Stack, function: str) -> dict[str, Any]:
    resources = stack.resources()
    role = resources[function]["Properties"]["Role"]
    assert role == {"Fn::GetAtt": [f"{function}Role", "Arn"]}
    return resources[f"{function}Role"]


def _every_env(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "Globals", template["Globals"]["Function"]["Environment"]["Variables"]
    for name in FUNCTIONS:
        yield name, template["Resources"][name]["Properties"].get("Environment", {}).get("Variables", {})


# --------------------------------------------------------------------------- functions


def test_globals(template: dict[str, Any]) -> None:
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    fn = template["Globals"]["Function"]
    assert fn["Runtime"] == "python3.11" and fn["Architectures"] == ["x86_64"]
    assert fn["Tracing"] == {"Ref": "Tracing"} and template["Parameters"]["Tracing"]["Default"] == "Active"
    assert fn["Timeout"] and fn["MemorySize"]
    env = fn["Environment"]["Variables"]
    # tracing off in the template is tracing off for Powertools (and no X-Ray SDK is loaded)
    assert env["POWERTOOLS_TRACE_DISABLED"] == {"Fn::If": ["TracingActive", "false", "true"]}
    for name in ("ADF_FLOWS_DIR", "ADF_STATE_DIR", "ADF_STATE_URL", "ADF_VAR_JSON", "POWERTOOLS_SERVICE_NAME",
                 "POWERTOOLS_METRICS_NAMESPACE", "LOG_LEVEL", "ADF_TRACE_PATCH_MODULES"):
        assert name in env, name
    # every parameter is used
    text = TEMPLATE.read_text()
    for name in template["Parameters"]:
        assert re.search(rf"!Ref {name}\b|\${{{name}}}", text), f"parameter {name} is unused"


def test_functions_and_their_triggers(template: dict[str, Any]) -> None:
    res = template["Resources"]
    for name, handler in FUNCTIONS.items():
        assert res[name]["Type"] == "AWS::Serverless::Function"
        assert res[name]["Properties"]["Handler"] == handler
        assert res[name]["Metadata"]["BuildMethod"] == "makefile"
    assert res["HttpFunction"]["Properties"]["FunctionUrlConfig"]["AuthType"] == "AWS_IAM"
    assert "Events" not in res["HttpFunction"]["Properties"]  # the APIs are declared below, with auth
    (tick,) = res["ScheduleFunction"]["Properties"]["Events"].values()
    assert tick["Type"] == "Schedule" and tick["Properties"]["Schedule"] == {"Ref": "ScheduleExpression"}
    assert template["Parameters"]["ScheduleExpression"]["Default"] == "rate(1 minute)"
    mapping = res["SqsEventSource"]
    assert mapping["Type"] == "AWS::Lambda::EventSourceMapping"
    assert mapping["Properties"]["FunctionName"] == {"Ref": "SqsFunction"}
    assert mapping["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["FlowQueue", "Arn"]}
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    redrive = res["FlowQueue"]["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["FlowDeadLetterQueue", "Arn"]}
    (s3,) = res["S3Function"]["Properties"]["Events"].values()
    assert s3["Type"] == "S3" and s3["Properties"]["Events"] == "s3:ObjectCreated:*"
    assert s3["Properties"]["Bucket"] == {"Ref": "InputBucket"}
    assert s3["Properties"]["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": {"Ref": "S3Prefix"}}]


def test_per_trigger_default_flows(template: dict[str, Any]) -> None:
    res = template["Resources"]
    assert "ADF_DEFAULT_FLOW" not in template["Globals"]["Function"]["Environment"]["Variables"]
    sqs = res["SqsFunction"]["Properties"]["Environment"]["Variables"]
    s3 = res["S3Function"]["Properties"]["Environment"]["Variables"]
    assert sqs["ADF_DEFAULT_FLOW"] == {"Fn::If": ["HasSqsDefaultFlow", {"Ref": "SqsDefaultFlow"}, NO_VALUE]}
    assert s3["ADF_DEFAULT_FLOW"] == {"Fn::If": ["HasS3DefaultFlow", {"Ref": "S3DefaultFlow"}, NO_VALUE]}
    for name in ("HttpFunction", "ScheduleFunction"):
        assert "ADF_DEFAULT_FLOW" not in res[name]["Properties"].get("Environment", {}).get("Variables", {})


def test_the_s3_routes_example_works_with_prefixes_of_the_input_bucket(
        template: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from active_data_flow.lambda_app.s3 import routes as s3_routes

    param = template["Parameters"]["S3Routes"]
    example = json.loads(re.search(r"\{.*\}", param["Description"]).group(0))  # type: ignore[union-attr]
    prefix = template["Parameters"]["S3Prefix"]["Default"]
    assert example and all(key.startswith(prefix) and "adf-input" not in key for key in example)
    assert re.fullmatch(param["AllowedPattern"], json.dumps(example))
    env = template["Resources"]["S3Function"]["Properties"]["Environment"]["Variables"]
    assert env["ADF_S3_ROUTES"] == {"Fn::If": ["HasS3Routes", {"Ref": "S3Routes"}, NO_VALUE]}
    # the prefixes are relative to the input bucket, whose name the template computes (a Ref
    # would be a cycle: bucket notification -> function -> bucket)
    assert env["ADF_S3_ROUTES_BUCKET"] == template["Resources"]["InputBucket"]["Properties"]["BucketName"]
    # the handler reads them so: the example, as the parameter passes it, routes the bucket's keys
    bucket = "adf-input-123456789012-0f1e2d3c"
    monkeypatch.setenv("ADF_S3_ROUTES", json.dumps(example))
    monkeypatch.setenv("ADF_S3_ROUTES_BUCKET", bucket)
    first_key, first_flow = next(iter(example.items()))
    assert object_route(s3_routes(), bucket, f"{first_key}batch 1/day.csv") == first_flow


def test_the_tick_runs_alone_and_only_with_a_database(template: dict[str, Any]) -> None:
    fn = template["Resources"]["ScheduleFunction"]
    assert fn["Properties"]["ReservedConcurrentExecutions"] == 1
    assert fn["Condition"] == "HasDatabase"
    assert not Stack(template).condition("HasDatabase")
    assert Stack(template, DatabaseUrlParameterName="/adf/db").condition("HasDatabase")
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:adf/db-AbCdEf"
    assert Stack(template, DatabaseUrlSecretArn=secret).condition("HasDatabase")
    assert re.fullmatch(template["Parameters"]["DatabaseUrlSecretArn"]["AllowedPattern"], secret)
    # the role and log group exist exactly when the function does
    for name in ("ScheduleFunctionRole", "ScheduleFunctionLogGroup"):
        assert template["Resources"][name]["Condition"] == "HasDatabase"


def test_sqs_batches_over_10_get_a_batching_window(template: dict[str, Any]) -> None:
    params = template["Parameters"]
    assert (params["SqsBatchSize"]["MinValue"], params["SqsBatchSize"]["MaxValue"]) == (1, 10000)
    window = params["SqsBatchingWindowSeconds"]
    assert (window["MinValue"], window["MaxValue"]) == (1, 300)  # what the event source mapping accepts
    timeout = template["Globals"]["Function"]["Timeout"]
    for size in (1, 5, 10, 11, 100, 10000):
        stack = Stack(template, SqsBatchSize=size, SqsBatchingWindowSeconds=300)
        res = stack.resources()
        mapping = res["SqsEventSource"]["Properties"]
        if size <= 10:
            assert "MaximumBatchingWindowInSeconds" not in mapping, size
        else:
            assert mapping["MaximumBatchingWindowInSeconds"] == {"Ref": "SqsBatchingWindowSeconds"}, size
        # AWS guidance: visibility timeout >= 6 x function timeout + batching window
        visible = res["FlowQueue"]["Properties"]["VisibilityTimeout"]
        assert visible >= 6 * timeout + (0 if size <= 10 else window["MaxValue"]), size


# --------------------------------------------------------------------------- HTTP APIs: auth and routes


def _rest_routes(stack: Stack) -> dict[str, dict[str, Any]]:
    res = stack.resources()

    def path(resource_id: Any) -> str:
        if resource_id == {"Fn::GetAtt": ["RestApi", "RootResourceId"]}:
            return ""
        r = res[resource_id["Ref"]]["Properties"]
        return f"{path(r['ParentId'])}/{r['PathPart']}"

    return {f"{r['Properties']['HttpMethod']} {path(r['Properties']['ResourceId'])}": r["Properties"]
            for r in res.values() if r["Type"] == "AWS::ApiGateway::Method"}


def _http_routes(stack: Stack) -> dict[str, dict[str, Any]]:
    return {r["Properties"]["RouteKey"]: r["Properties"]
            for r in stack.resources().values() if r["Type"] == "AWS::ApiGatewayV2::Route"}


@pytest.mark.parametrize("mode", list(AUTH_MODES))
def test_every_route_of_both_apis_requires_auth(template: dict[str, Any], mode: str) -> None:
    extra, rest_type, http_type, authorizers = AUTH_MODES[mode]
    stack = Stack(template, ApiAuth=mode, **extra)
    res = stack.resources()
    rest, http = _rest_routes(stack), _http_routes(stack)
    assert set(rest) == ROUTES and set(http) == ROUTES  # GET /flows (and /flows/{name}) included
    for key, method in rest.items():
        assert method["AuthorizationType"] == rest_type, key
        assert method["Integration"]["Type"] == "AWS_PROXY"
    for key, route in http.items():
        assert route["AuthorizationType"] == http_type, key
        assert route["Target"] == {"Fn::Sub": "integrations/${HttpApiIntegration}"}
    if authorizers is None:
        assert not any("AuthorizerId" in r for r in [*rest.values(), *http.values()])
        assert not [n for n, r in res.items() if r["Type"].endswith("::Authorizer")]
    else:
        rest_authorizer, http_authorizer = authorizers
        assert all(m["AuthorizerId"] == {"Ref": rest_authorizer} for m in rest.values())
        assert all(r["AuthorizerId"] == {"Ref": http_authorizer} for r in http.values())
        assert rest_authorizer in res and http_authorizer in res
    # the stage serves the deployment made for this mode (a new one when the mode changes)
    deployment = res["RestStage"]["Properties"]["DeploymentId"]["Ref"]
    assert deployment in res and set(res[deployment]["DependsOn"]) == {
        n for n, r in res.items() if r["Type"] == "AWS::ApiGateway::Method"}
    assert [n for n, r in res.items() if r["Type"] == "AWS::ApiGateway::Deployment"] == [deployment]


def test_an_incomplete_auth_choice_falls_back_to_iam(template: dict[str, Any]) -> None:
    for mode in ("LAMBDA_TOKEN", "COGNITO"):
        stack = Stack(template, ApiAuth=mode)  # no authorizer ARN / user pool
        assert {m["AuthorizationType"] for m in _rest_routes(stack).values()} == {"AWS_IAM"}
        assert {r["AuthorizationType"] for r in _http_routes(stack).values()} == {"AWS_IAM"}
    # and the deployment refuses it with a message (CloudFormation Rules)
    rules = template["Rules"]
    assert rules["LambdaTokenNeedsAnAuthorizer"]["RuleCondition"] == {"Fn::Equals": [{"Ref": "ApiAuth"}, "LAMBDA_TOKEN"]}
    assert rules["CognitoNeedsAPoolAndClients"]["RuleCondition"] == {"Fn::Equals": [{"Ref": "ApiAuth"}, "COGNITO"]}
    assert template["Parameters"]["ApiAuth"]["Default"] == "AWS_IAM"


def test_cognito_tokens_are_checked_against_the_pool_and_clients(template: dict[str, Any]) -> None:
    extra = AUTH_MODES["COGNITO"][0]
    res = Stack(template, ApiAuth="COGNITO", **extra).resources()
    assert res["RestCognitoAuthorizer"]["Properties"]["ProviderARNs"] == [{"Ref": "CognitoUserPoolArn"}]
    jwt = res["HttpJwtAuthorizer"]["Properties"]["JwtConfiguration"]
    assert jwt["Audience"] == {"Fn::Split": [",", {"Ref": "CognitoAppClientIds"}]}
    issuer, names = jwt["Issuer"]["Fn::Sub"]
    parts = POOL.split(":")
    assert issuer.replace("${PoolRegion}", parts[3]).replace("${PoolId}", POOL.split("/")[1]).replace(
        "${AWS::URLSuffix}", "amazonaws.com") == "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"
    assert names["PoolRegion"] == {"Fn::Select": [3, {"Fn::Split": [":", {"Ref": "CognitoUserPoolArn"}]}]}


def test_api_gateway_may_invoke_only_the_flow_routes(template: dict[str, Any]) -> None:
    res = template["Resources"]
    for name, api in (("RestApiInvokePermission", "RestApi"), ("HttpApiInvokePermission", "HttpApi")):
        props = res[name]["Properties"]
        assert props["Principal"] == "apigateway.amazonaws.com" and props["FunctionName"] == {"Ref": "HttpFunction"}
        assert props["SourceArn"]["Fn::Sub"].endswith(f":${{{api}}}/*/*/flows*")
    stage = res["HttpApiStage"]["Properties"]
    assert stage["StageName"] == "$default" and stage["AutoDeploy"] is True
    for settings in (stage["DefaultRouteSettings"], res["RestStage"]["Properties"]["MethodSettings"][0]):
        assert settings["ThrottlingRateLimit"] == {"Ref": "ApiThrottleRateLimit"}
        assert settings["ThrottlingBurstLimit"] == {"Ref": "ApiThrottleBurstLimit"}


def test_outputs_give_urls_that_reach_the_routes(template: dict[str, Any]) -> None:
    out = template["Outputs"]
    assert {"ApiUrl", "HttpApiUrl", "FunctionUrl", "QueueUrl", "InputBucketName", "FailedEventsQueueUrl"} <= set(out)
    stage = template["Resources"]["RestStage"]["Properties"]["StageName"]
    rest_url = out["ApiUrl"]["Value"]["Fn::Sub"]
    assert rest_url == "https://${RestApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${RestStage}/flows"
    assert stage == "Prod"
    assert out["HttpApiUrl"]["Value"] == {"Fn::Sub": "${HttpApi.ApiEndpoint}/flows"}
    # {ApiUrl}, {ApiUrl}/<flow> and {ApiUrl}/<flow>/run are exactly the routes
    base = rest_url.rsplit("/${RestStage}", 1)[1]
    assert {f"GET {base}", f"GET {base}/{{name}}", f"GET {base}/{{name}}/run", f"POST {base}/{{name}}/run"} == ROUTES
    for name in ("ApiUrl", "HttpApiUrl"):
        assert "/<flow>/run" in out[name]["Description"]


# --------------------------------------------------------------------------- secrets, VPC


def test_no_database_url_in_any_environment(template: dict[str, Any]) -> None:
    for where, env in _every_env(template):
        assert "ADF_DATABASE_URL" not in env, where
        for name, value in env.items():
            assert "DatabaseUrl" not in json.dumps(value) or name.startswith("ADF_DATABASE_URL_"), (where, name)
    assert "DatabaseUrl" not in template["Parameters"]
    assert not [p for p, v in template["Parameters"].items() if v.get("NoEcho")], "a secret is a parameter"
    env = template["Resources"]["ScheduleFunction"]["Properties"]["Environment"]["Variables"]
    assert env["ADF_DATABASE_URL_SECRET"] == {"Fn::If": ["HasDatabaseSecret", {"Ref": "DatabaseUrlSecretArn"}, NO_VALUE]}
    assert env["ADF_DATABASE_URL_PARAMETER"] == {
        "Fn::If": ["HasDatabaseParameter", {"Ref": "DatabaseUrlParameterName"}, NO_VALUE]}
    assert template["Rules"]["OneDatabaseUrlSource"]


def test_only_the_tick_may_read_the_database_secret(template: dict[str, Any]) -> None:
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:adf/db-AbCdEf"
    stack = Stack(template, DatabaseUrlSecretArn=secret, DatabaseUrlKmsKeyArn="arn:aws:kms:us-east-1:123456789012:key/k")
    reads = [s for s in _statements(_role_of(stack, "ScheduleFunction"), stack)
             if {"secretsmanager:GetSecretValue", "ssm:GetParameter"} & set(_actions(s))]
    assert reads == [{"Sid": "DatabaseUrlSecret", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                      "Resource": {"Ref": "DatabaseUrlSecretArn"}}]
    kms = [s for s in _statements(_role_of(stack, "ScheduleFunction"), stack) if "kms:Decrypt" in _actions(s)]
    assert kms and kms[0]["Resource"] == {"Ref": "DatabaseUrlKmsKeyArn"} and "kms:ViaService" in json.dumps(kms)
    stack = Stack(template, DatabaseUrlParameterName="/adf/database-url")
    reads = [s for s in _statements(_role_of(stack, "ScheduleFunction"), stack)
             if {"secretsmanager:GetSecretValue", "ssm:GetParameter"} & set(_actions(s))]
    assert [s["Action"] for s in reads] == ["ssm:GetParameter"]
    assert reads[0]["Resource"]["Fn::Sub"].endswith(":parameter${DatabaseUrlParameterName}")
    for function in ("HttpFunction", "SqsFunction", "S3Function"):
        text = json.dumps(list(_statements(_role_of(stack, function), stack)))
        assert "secretsmanager" not in text and "ssm:" not in text and "kms:" not in text, function


def test_vpc_is_optional_and_needs_subnets_and_security_groups(template: dict[str, Any]) -> None:
    vpc = template["Globals"]["Function"]["VpcConfig"]
    assert vpc["Fn::If"][0] == "HasVpc" and vpc["Fn::If"][2] == NO_VALUE
    assert vpc["Fn::If"][1] == {"SubnetIds": {"Fn::Split": [",", {"Ref": "VpcSubnetIds"}]},
                                "SecurityGroupIds": {"Fn::Split": [",", {"Ref": "VpcSecurityGroupIds"}]}}
    assert not Stack(template).condition("HasVpc")
    assert not Stack(template, VpcSubnetIds="subnet-0a1b").condition("HasVpc")
    inside = Stack(template, VpcSubnetIds="subnet-0a1b,subnet-2c3d", VpcSecurityGroupIds="sg-0f00")
    assert inside.condition("HasVpc")
    inside_actions = {a for s in _statements(_role_of(inside, "HttpFunction"), inside) for a in _actions(s)}
    assert "ec2:CreateNetworkInterface" in inside_actions
    outside = Stack(template)
    outside_actions = {a for s in _statements(_role_of(outside, "HttpFunction"), outside) for a in _actions(s)}
    assert not [a for a in outside_actions if a.startswith("ec2:")]


# --------------------------------------------------------------------------- least privilege


def test_each_function_has_its_own_least_privilege_role(template: dict[str, Any]) -> None:
    text = TEMPLATE.read_text()
    assert "CrudPolicy" not in text and "arn:aws:iam::aws:policy" not in text
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:adf/db-AbCdEf"
    stack = Stack(template, DatabaseUrlSecretArn=secret, VpcSubnetIds="subnet-0a", VpcSecurityGroupIds="sg-0a")
    res = stack.resources()
    granted: dict[str, dict[str, list[Any]]] = {}
    for function in FUNCTIONS:
        assert "Policies" not in res[function]["Properties"], f"{function}: SAM would generate a broader role"
        role = _role_of(stack, function)
        trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert trust == [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]
        granted[function] = {}
        for s in _statements(role, stack):
            assert s["Effect"] == "Allow"
            for action in _actions(s):
                assert "*" not in action, f"{function}: wildcard action {action}"
                if s["Resource"] == "*":
                    assert action in RESOURCELESS, f"{function}: {action} on every resource"
                granted[function].setdefault(action, []).append(s["Resource"])
    table = {"Fn::GetAtt": ["IdempotencyTable", "Arn"]}
    for function, actions in granted.items():
        dynamo = {a: r for a, r in actions.items() if a.startswith("dynamodb:")}
        if function in ("SqsFunction", "S3Function"):
            assert set(dynamo) == {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}
            assert all(r == [table] for r in dynamo.values())
        else:
            assert not dynamo, function
        # logs: its own group only
        group = {"Fn::GetAtt": [f"{function}LogGroup", "Arn"]}
        assert actions["logs:PutLogEvents"] == [group] and actions["logs:CreateLogStream"] == [group]
        assert "logs:CreateLogGroup" not in actions
        # the data bucket: objects and listing, nothing on the bucket's configuration
        assert actions["s3:PutObject"][0] == {"Fn::Sub": "${DataBucket.Arn}/*"}
        assert not [a for a in actions if a.startswith("s3:") and ("Bucket" in a[3:] and a != "s3:ListBucket")]
    # only the S3 function reads the input bucket, and only under S3Prefix
    (input_objects,) = [r for r in granted["S3Function"]["s3:GetObject"] if "adf-input" in json.dumps(r)]
    assert input_objects["Fn::Sub"][0].endswith("/${S3Prefix}*")
    for function in ("HttpFunction", "ScheduleFunction", "SqsFunction"):
        assert "adf-input" not in json.dumps(granted[function]), function
    assert granted["SqsFunction"]["sqs:ReceiveMessage"] == [{"Fn::GetAtt": ["FlowQueue", "Arn"]}]
    assert not [f for f, a in granted.items() if "sqs:ReceiveMessage" in a and f != "SqsFunction"]
    for function in ("S3Function", "ScheduleFunction"):
        assert granted[function]["sqs:SendMessage"] == [{"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}]


def test_buckets_and_queues_are_private_and_encrypted(template: dict[str, Any]) -> None:
    res = template["Resources"]
    for bucket in ("InputBucket", "DataBucket"):
        props = res[bucket]["Properties"]
        assert all(props["PublicAccessBlockConfiguration"].values())
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        (deny,) = res[f"{bucket}Policy"]["Properties"]["PolicyDocument"]["Statement"]
        assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    for queue in ("FlowQueue", "FlowDeadLetterQueue", "FailedEventsQueue"):
        assert res[queue]["Properties"]["SqsManagedSseEnabled"] is True


# --------------------------------------------------------------------------- failures, logs, alarms


def test_asynchronous_failures_are_retried_then_kept(template: dict[str, Any]) -> None:
    res = template["Resources"]
    for function in ("S3Function", "ScheduleFunction"):
        config = res[function]["Properties"]["EventInvokeConfig"]
        assert 1 <= config["MaximumRetryAttempts"] <= 2, function
        assert 60 <= config["MaximumEventAgeInSeconds"] <= 21600, function
        assert config["DestinationConfig"]["OnFailure"] == {
            "Type": "SQS", "Destination": {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}}
    assert res["S3Function"]["Properties"]["EventInvokeConfig"]["MaximumRetryAttempts"] == 2
    assert res["FailedEventsQueue"]["Properties"]["MessageRetentionPeriod"] == 1209600


def test_every_function_logs_to_a_group_with_retention(template: dict[str, Any]) -> None:
    res = template["Resources"]
    assert template["Parameters"]["LogRetentionDays"]["Default"] == 30
    for function in FUNCTIONS:
        group = res[function]["Properties"]["LoggingConfig"]["LogGroup"]
        assert group == {"Ref": f"{function}LogGroup"}
        assert res[group["Ref"]]["Type"] == "AWS::Logs::LogGroup"
        assert res[group["Ref"]]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    access = res["HttpApiStage"]["Properties"]["AccessLogSettings"]
    assert access["DestinationArn"] == {"Fn::GetAtt": ["HttpApiAccessLogGroup", "Arn"]}
    json.loads(access["Format"])  # a JSON line per request
    assert res["HttpApiAccessLogGroup"]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_a_failed_event_raises_an_alarm(template: dict[str, Any]) -> None:
    alarms = {name: r["Properties"] for name, r in template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    watched = {}
    for name, alarm in alarms.items():
        assert alarm["Namespace"] == "AWS/SQS" and alarm["MetricName"] == "ApproximateNumberOfMessagesVisible", name
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold" and alarm["Threshold"] == 0, name
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["AlarmActions"] == {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], NO_VALUE]}
        (dimension,) = alarm["Dimensions"]
        watched[dimension["Value"]["Fn::GetAtt"][0]] = name
    assert {"FailedEventsQueue", "FlowDeadLetterQueue"} <= set(watched)


def test_idempotency_table(template: dict[str, Any]) -> None:
    table = template["Resources"]["IdempotencyTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    for function in ("SqsFunction", "S3Function"):
        env = template["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert env["ADF_IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}


def test_requirements_list_what_the_handlers_need() -> None:
    text = (ROOT / "lambda_app" / "requirements.txt").read_text().lower()
    for pkg in ("aws-lambda-powertools", "sqlalchemy", "psycopg[binary]", "pyyaml"):
        assert pkg in text, pkg


# --------------------------------------------------------------------------- the real SAM CLI and cfn-lint


def _sam() -> str:
    """scripts/sam-setup's venv (installed on first use: ~30 s from PyPI)."""
    sam = ROOT / ".venv-sam" / "bin" / "sam"
    if not (sam.exists() and (ROOT / ".venv-sam" / "bin" / "cfn-lint").exists()):
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
def test_cfn_lint_informational_rules_are_clean(tmp_path: Path) -> None:
    cfn_lint = str(Path(_sam()).parent / "cfn-lint")
    r = subprocess.run([cfn_lint, "--include-checks", "I", "--", str(TEMPLATE)], cwd=ROOT, env=_sam_env(tmp_path),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


_TRANSLATE = """
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse
class NoManagedPolicies:
    def load(self):
        return {}
template = yaml_parse(open(sys.argv[1]).read())
template["Globals"]["Function"]["CodeUri"] = "s3://bucket/package.zip"  # what `sam deploy` puts there
json.dump(transform(template, {}, NoManagedPolicies()), sys.stdout)
"""


@pytest.mark.slow
def test_sams_transform_adds_no_role_or_managed_policy(tmp_path: Path) -> None:
    python = str(Path(_sam()).parent / "python")
    r = subprocess.run([python, "-c", _TRANSLATE, str(TEMPLATE)], cwd=ROOT, env=_sam_env(tmp_path),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)["Resources"]
    roles = {n for n, r in out.items() if r["Type"] == "AWS::IAM::Role"}
    assert roles == {f"{f}Role" for f in FUNCTIONS}  # ours: SAM generated none
    assert not [r for r in out.values() if r["Properties"].get("ManagedPolicyArns") and any(
        "iam::aws:policy" in json.dumps(a) for a in r["Properties"]["ManagedPolicyArns"])]
    for function in ("S3Function", "ScheduleFunction"):
        config = out[f"{function}EventInvokeConfig"]
        assert config["Type"] == "AWS::Lambda::EventInvokeConfig"
        assert config["Properties"]["DestinationConfig"]["OnFailure"]["Destination"] == {
            "Fn::GetAtt": ["FailedEventsQueue", "Arn"]}
    assert out["ScheduleFunctionEventInvokeConfig"]["Condition"] == "HasDatabase"
    assert out["ScheduleFunctionTick"]["Condition"] == "HasDatabase"
    assert out["ScheduleFunction"]["Properties"]["ReservedConcurrentExecutions"] == 1
    assert not [n for n, r in out.items() if r["Type"] in ("AWS::ApiGateway::RestApi", "AWS::ApiGatewayV2::Api")
                and n not in ("RestApi", "HttpApi")], "SAM generated an implicit API without auth"


@pytest.mark.slow
def test_sam_build(tmp_path: Path) -> None:
    build_dir = tmp_path / "sam"
    r = subprocess.run([_sam(), "build", "-t", str(TEMPLATE), "--build-dir", str(build_dir)], cwd=ROOT,
                       env=_sam_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (build_dir / "template.yaml").is_file()
    for name in FUNCTIONS:
        fn = build_dir / name
        for pkg in ("active_data_flow/lambda_app", "active_data_flow", "active_data_flow/handlers", "aws_lambda_powertools",
                    "sqlalchemy", "yaml", "psycopg"):
            assert (fn / pkg / "__init__.py").is_file(), f"{name} lacks {pkg}"
        assert (fn / "active_data_flow" / "lambda_app" / "secrets.py").is_file()
        assert (fn / "flows").is_dir()
        assert not (fn / "node_modules").exists() and not (fn / "tests").exists()
