"""`adf lambda build|deploy|validate` wrap the SAM CLI: a fake `sam` records its arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ADF = str(Path(sys.executable).parent / "adf")

FAKE_SAM = """#!{python}
import json, os, sys
with open(os.environ["FAKE_SAM_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit(int(os.environ.get("FAKE_SAM_EXIT", "0")))
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No AWS configuration at all (empty HOME, no AWS_* variables, no instance metadata)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    sam = bindir / "sam"
    sam.write_text(FAKE_SAM.format(python=sys.executable))
    sam.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    out = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ADF_SAM"))}
    out.update(HOME=str(home), PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}",
               FAKE_SAM_LOG=str(tmp_path / "sam.log"), AWS_EC2_METADATA_DISABLED="true")
    return out


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ADF, "lambda", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def calls(env: dict[str, str]) -> list[list[str]]:
    log = Path(env["FAKE_SAM_LOG"])
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "infra").mkdir(parents=True)
    (root / "infra" / "template.yaml").write_text("Transform: AWS::Serverless-2016-10-31\nResources: {}\n")
    return root


def test_build_wraps_sam_build(env: dict[str, str], project: Path) -> None:
    r = run(["build"], env, project)
    assert r.returncode == 0, r.stderr
    assert calls(env) == [["build", "-t", os.path.join("infra", "template.yaml"), "--build-dir",
                           os.path.join("build", "sam")]]
    r = run(["build", "--template", "infra/template.yaml", "--build-dir", "out", "--", "--use-container"], env, project)
    assert r.returncode == 0, r.stderr
    assert calls(env)[-1] == ["build", "-t", "infra/template.yaml", "--build-dir", "out", "--use-container"]


def test_build_returns_sams_exit_code(env: dict[str, str], project: Path) -> None:
    env["FAKE_SAM_EXIT"] = "3"
    assert run(["build"], env, project).returncode == 3


def test_validate_lints(env: dict[str, str], project: Path) -> None:
    r = run(["validate"], env, project)
    assert r.returncode == 0, r.stderr
    assert calls(env)[0][:4] == ["validate", "-t", os.path.join("infra", "template.yaml"), "--lint"]


def test_missing_template_is_exit_2(env: dict[str, str], tmp_path: Path) -> None:
    r = run(["build"], env, tmp_path)
    assert r.returncode == 2
    assert "no SAM template" in r.stderr
    assert calls(env) == []


def test_missing_sam_says_how_to_install(env: dict[str, str], project: Path, tmp_path: Path) -> None:
    env["ADF_SAM"] = str(tmp_path / "nowhere" / "sam")
    r = run(["build"], env, project)
    assert r.returncode == 127
    assert "scripts/sam-setup" in r.stderr


def test_deploy_without_credentials_exits_2_and_calls_nothing(env: dict[str, str], project: Path) -> None:
    r = run(["deploy"], env, project)
    assert r.returncode == 2
    assert "cannot deploy" in r.stderr
    for what in ("AWS credentials", "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "region", "--stack-name",
                 "--resolve-s3", "--s3-bucket"):
        assert what in r.stderr, what
    assert calls(env) == []


def test_deploy_guided_only_needs_credentials(env: dict[str, str], project: Path) -> None:
    r = run(["deploy", "--guided"], env, project)
    assert r.returncode == 2
    assert "AWS credentials" in r.stderr
    assert "region" not in r.stderr.split("missing", 1)[1]
    assert calls(env) == []


def test_deploy_with_credentials_but_no_bucket(env: dict[str, str], project: Path) -> None:
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="eu-west-1")
    r = run(["deploy", "--stack-name", "adf"], env, project)
    assert r.returncode == 2
    assert "AWS credentials" not in r.stderr
    assert "--resolve-s3" in r.stderr
    assert calls(env) == []


def test_deploy_calls_sam_deploy(env: dict[str, str], project: Path) -> None:
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="eu-west-1")
    r = run(["deploy", "--stack-name", "adf", "--resolve-s3"], env, project)
    assert r.returncode == 2 and "adf lambda build" in r.stderr  # nothing built yet
    built = project / "build" / "sam"
    built.mkdir(parents=True)
    (built / "template.yaml").write_text("{}")
    r = run(["deploy", "--stack-name", "adf", "--resolve-s3", "--", "--no-confirm-changeset"], env, project)
    assert r.returncode == 0, r.stderr
    assert calls(env) == [["deploy", "--template-file", os.path.join("build", "sam", "template.yaml"),
                           "--stack-name", "adf", "--resolve-s3", "--capabilities", "CAPABILITY_IAM",
                           "--no-confirm-changeset"]]


def test_deploy_with_a_profile_file(env: dict[str, str], project: Path) -> None:
    aws = Path(env["HOME"]) / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text("[default]\naws_access_key_id = a\naws_secret_access_key = b\n")
    (aws / "config").write_text("[default]\nregion = us-west-2\n")
    (project / "build" / "sam").mkdir(parents=True)
    (project / "build" / "sam" / "template.yaml").write_text("{}")
    r = run(["deploy", "--stack-name", "adf", "--s3-bucket", "artefacts"], env, project)
    assert r.returncode == 0, r.stderr
    assert calls(env)[0][:2] == ["deploy", "--template-file"]
