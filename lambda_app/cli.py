"""``adf lambda …``: validate, build and deploy the AWS Lambda target with the AWS SAM CLI.

Registered through the ``active_data_flow.commands`` entry-point group (``core`` does not
import this layer). Standard library only at module level (botocore is used, when installed,
to resolve AWS credentials the way ``sam`` will).

==========================================  ==============================================================
``adf lambda validate``                     ``sam validate --lint -t infra/template.yaml`` (offline, cfn-lint)
``adf lambda build``                        ``sam build -t infra/template.yaml --build-dir build/sam``
``adf lambda deploy [--guided] [-- ARGS]``  ``sam deploy --template-file build/sam/template.yaml …``; first
                                            checks credentials, region, stack name and an artefact bucket
==========================================  ==============================================================

The SAM CLI lives in its own venv (it pins boto3 / pydantic): ``scripts/sam-setup`` creates
``.venv-sam``. ``sam`` is looked up as ``$ADF_SAM``, then on ``PATH``, then in ``.venv-sam/bin``
of the current directory and of the project.

Exit codes: ``sam``'s own exit code; 2 something needed is missing (deploy: credentials, region,
stack name, bucket; a template or a build); 127 the ``sam`` CLI is not installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["deploy_problems", "find_sam", "register"]

DEFAULT_TEMPLATE = os.path.join("infra", "template.yaml")
DEFAULT_BUILD_DIR = os.path.join("build", "sam")
SAM_SETUP_HINT = "run scripts/sam-setup (installs aws-sam-cli into .venv-sam) or put `sam` on PATH"
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _err(message: str) -> None:
    print(f"adf: {message}", file=sys.stderr)


def find_sam(environ: Mapping[str, str] | None = None) -> str | None:
    """The ``sam`` executable: ``$ADF_SAM``, ``PATH``, ``./.venv-sam/bin/sam``, ``<project>/.venv-sam/bin/sam``."""
    env = os.environ if environ is None else environ
    explicit = env.get("ADF_SAM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("sam", path=env.get("PATH"))
    if found:
        return found
    for base in (Path.cwd(), _PROJECT_ROOT):
        candidate = base / ".venv-sam" / "bin" / "sam"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _sam_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("SAM_CLI_TELEMETRY", "0")
    return env


def _run(cmd: Sequence[str]) -> int:
    print("+ " + " ".join(cmd), file=sys.stderr)
    try:
        return subprocess.call(list(cmd), env=_sam_env())
    except OSError as exc:
        _err(f"cannot run {cmd[0]}: {exc}")
        return 127


def _extra(args: argparse.Namespace) -> list[str]:
    extra = list(getattr(args, "sam_args", None) or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    return extra


def _require_sam() -> str | None:
    sam = find_sam()
    if sam is None:
        _err(f"the AWS SAM CLI (`sam`) is not installed: {SAM_SETUP_HINT}")
    return sam


def _require_template(template: str) -> bool:
    if not os.path.isfile(template):
        _err(f"no SAM template at {template} (give --template)")
        return False
    return True


# --------------------------------------------------------------------------- validate / build


def _cmd_validate(args: argparse.Namespace) -> int:
    if not _require_template(args.template):
        return 2
    sam = _require_sam()
    if sam is None:
        return 127
    cmd = [sam, "validate", "-t", args.template]
    if not args.no_lint:
        cmd.append("--lint")
    # `sam validate` wants a region even when linting offline
    if not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        cmd += ["--region", "us-east-1"]
    return _run(cmd + _extra(args))


def _cmd_build(args: argparse.Namespace) -> int:
    if not _require_template(args.template):
        return 2
    sam = _require_sam()
    if sam is None:
        return 127
    code = _run([sam, "build", "-t", args.template, "--build-dir", args.build_dir, *_extra(args)])
    if code == 0:
        print(f"built: {args.build_dir} (next: adf lambda deploy --guided --build-dir {args.build_dir})")
    return code


# --------------------------------------------------------------------------- deploy


def _aws_files(env: Mapping[str, str]) -> list[Path]:
    home = Path(env.get("HOME") or Path.home())
    return [Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials"),
            Path(env.get("AWS_CONFIG_FILE") or home / ".aws" / "config")]


def _credentials(env: Mapping[str, str]) -> tuple[bool, str | None]:
    """(credentials found?, region from the AWS configuration) as ``sam`` would resolve them."""
    env = dict(env)  # a copy: os.environ is swapped below
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    try:
        import botocore.session
    except ImportError:
        botocore = None  # type: ignore[assignment]
    if botocore is not None:
        saved = dict(os.environ)
        try:  # botocore reads os.environ itself
            os.environ.clear()
            os.environ.update(env)
            session: Any = botocore.session.Session()
            try:
                creds = session.get_credentials()
            except Exception:  # a broken profile: sam would fail the same way
                creds = None
            try:
                region = region or session.get_config_variable("region")
            except Exception:
                pass
            return creds is not None, region
        finally:
            os.environ.clear()
            os.environ.update(saved)
    # no botocore: the common sources only
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return True, region
    if env.get("AWS_PROFILE") or env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or env.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        return True, region
    return any(p.is_file() for p in _aws_files(env)), region


def _has_option(extra: Sequence[str], *names: str) -> bool:
    return any(a == n or a.startswith(n + "=") for a in extra for n in names)


def deploy_problems(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> list[str]:
    """What keeps ``sam deploy`` from working, one sentence each with the fix; [] when nothing."""
    env = os.environ if environ is None else environ
    extra = _extra(args)
    problems: list[str] = []
    has_creds, region = _credentials(env)
    if not has_creds:
        problems.append(
            "AWS credentials: none found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, "
            "or run `aws configure` / `aws sso login` to write ~/.aws/credentials)")
    config_file = args.config_file or "samconfig.toml"
    has_config = os.path.isfile(config_file)
    if not (args.guided or has_config):
        # non-interactive and no samconfig.toml: everything must be on the command line
        if not (region or args.region or _has_option(extra, "--region")):
            problems.append("AWS region: none configured (give --region, set AWS_REGION / AWS_DEFAULT_REGION, "
                            "or use --guided)")
        if not (args.stack_name or _has_option(extra, "--stack-name")):
            problems.append("stack name: give --stack-name NAME (or use --guided, which saves it to samconfig.toml)")
        if not (args.resolve_s3 or args.s3_bucket or _has_option(extra, "--resolve-s3", "--s3-bucket")):
            problems.append("an S3 bucket for the deployment artefacts: give --resolve-s3 (SAM creates and "
                            "manages one) or --s3-bucket BUCKET (or use --guided)")
    return problems


def _cmd_deploy(args: argparse.Namespace) -> int:
    problems = deploy_problems(args)
    if problems:
        _err(f"cannot deploy: {len(problems)} thing(s) missing (nothing was sent to AWS):")
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 2
    built = os.path.join(args.build_dir, "template.yaml")
    if not os.path.isfile(built):
        _err(f"no build at {args.build_dir}: run `adf lambda build --build-dir {args.build_dir}` first")
        return 2
    sam = _require_sam()
    if sam is None:
        return 127
    cmd = [sam, "deploy", "--template-file", built]
    if args.guided:
        cmd.append("--guided")
    if args.stack_name:
        cmd += ["--stack-name", args.stack_name]
    if args.region:
        cmd += ["--region", args.region]
    if args.resolve_s3:
        cmd.append("--resolve-s3")
    if args.s3_bucket:
        cmd += ["--s3-bucket", args.s3_bucket]
    if args.config_file:
        cmd += ["--config-file", args.config_file]
    if not args.guided and not _has_option(_extra(args), "--capabilities"):
        cmd += ["--capabilities", "CAPABILITY_IAM"]
    return _run(cmd + _extra(args))


# --------------------------------------------------------------------------- register


def register(sub: Any) -> None:
    """Add ``adf lambda …`` to the ``adf`` parser (the ``active_data_flow.commands`` entry point)."""
    lam = sub.add_parser("lambda", help="AWS Lambda: validate, build and deploy the SAM template",
                         description="Build and deploy the AWS Lambda target with the AWS SAM CLI "
                                     f"({SAM_SETUP_HINT}).")
    lsub = lam.add_subparsers(dest="lambda_command", required=True)
    remainder = {"nargs": argparse.REMAINDER, "help": "more arguments for sam, after `--`"}

    val = lsub.add_parser("validate", help="sam validate --lint (offline)")
    val.add_argument("--template", "-t", default=DEFAULT_TEMPLATE)
    val.add_argument("--no-lint", action="store_true", help="skip cfn-lint")
    val.add_argument("sam_args", **remainder)
    val.set_defaults(func=_cmd_validate)

    bld = lsub.add_parser("build", help="sam build into --build-dir")
    bld.add_argument("--template", "-t", default=DEFAULT_TEMPLATE, help=f"default {DEFAULT_TEMPLATE}")
    bld.add_argument("--build-dir", "-b", default=DEFAULT_BUILD_DIR, help=f"default {DEFAULT_BUILD_DIR}")
    bld.add_argument("sam_args", **remainder)
    bld.set_defaults(func=_cmd_build)

    dep = lsub.add_parser("deploy", help="sam deploy the build (checks credentials, region and bucket first)")
    dep.add_argument("--guided", "-g", action="store_true", help="ask for stack name, region, parameters")
    dep.add_argument("--build-dir", "-b", default=DEFAULT_BUILD_DIR, help=f"the build to deploy (default {DEFAULT_BUILD_DIR})")
    dep.add_argument("--stack-name")
    dep.add_argument("--region")
    dep.add_argument("--resolve-s3", action="store_true", help="let SAM create the artefact bucket")
    dep.add_argument("--s3-bucket", help="artefact bucket")
    dep.add_argument("--config-file", help="samconfig file (default samconfig.toml when it exists)")
    dep.add_argument("sam_args", **remainder)
    dep.set_defaults(func=_cmd_deploy)
