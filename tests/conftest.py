from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
# Test flows refer to step functions as "flowlib.steps:NAME".
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``sam build`` of infra/template.yaml, once per session (tests/lambda_build.py)."""
    from lambda_build import sam_build

    return sam_build(tmp_path_factory.mktemp("sam-build") / "sam", tmp_path_factory.mktemp("sam-home"))


@pytest.fixture(scope="session")
def runtime_dir() -> Path:
    """The python3.11 Lambda runtime's own boto3/botocore (tests/lambda_build.py)."""
    from lambda_build import runtime_libraries

    return runtime_libraries()
