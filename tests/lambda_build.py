"""The Lambda packages as `sam build` ships them (the session fixtures ``build`` and
``runtime_dir`` in tests/conftest.py): the real SAM CLI of scripts/sam-setup's ``.venv-sam``
builds infra/template.yaml, and the python3.11 runtime's own boto3/botocore
(scripts/lambda-runtime-setup; Lambda's ``/var/runtime``) sit beside it."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "infra" / "template.yaml"
RUNTIME_DIR = ROOT / ".venv-lambda-runtime" / "python"


@dataclass(frozen=True)
class Build:
    root: Path
    handlers: dict[str, str]  # function -> handler ("active_data_flow.lambda_app.http.handler")

    def function(self, name: str) -> Path:
        return self.root / name


def sam() -> str:
    path = ROOT / ".venv-sam" / "bin" / "sam"
    if not path.exists():
        subprocess.run([str(ROOT / "scripts" / "sam-setup")], check=True, timeout=900)
    return str(path)


class _TemplateLoader(yaml.SafeLoader):
    """Reads a SAM template's short forms (!Ref, !If…) as plain values: only Handler is read."""


_TemplateLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def sam_build(out: Path, home: Path) -> Build:
    """``sam build`` of the template into ``out`` (``home``: the CLI's own HOME)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", SAM_CLI_TELEMETRY="0", HOME=str(home))
    r = subprocess.run([sam(), "build", "-t", str(TEMPLATE), "--build-dir", str(out)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    built = yaml.load((out / "template.yaml").read_text(), Loader=_TemplateLoader)
    handlers = {name: res["Properties"]["Handler"] for name, res in built["Resources"].items()
                if res.get("Type") == "AWS::Serverless::Function"}
    assert handlers, "the template has no functions"
    return Build(out, handlers)


def runtime_libraries() -> Path:
    """The Lambda runtime's own boto3/botocore (installed once, outside the repo's venvs)."""
    if not (RUNTIME_DIR / "boto3").is_dir():
        subprocess.run([str(ROOT / "scripts" / "lambda-runtime-setup")], check=True, timeout=600)
    return RUNTIME_DIR
