"""Helpers of the Lambda handler tests: the event fixtures and a Lambda context."""

from __future__ import annotations

import copy
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Before lambda_app is imported: no X-Ray daemon here.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "adf")

EVENTS = Path(__file__).resolve().parent / "events"


def event(name: str) -> dict[str, Any]:
    """A fresh copy of ``tests/events/<name>.json``."""
    data: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return copy.deepcopy(data)


@dataclass
class Context:
    """What the Lambda runtime passes as ``context`` (the attributes Powertools reads)."""

    function_name: str = "adf-test"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:adf-test"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/adf-test"
    log_stream_name: str = "2024/01/01/[$LATEST]abc"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def write_flows(directory: Path, specs: dict[str, dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, spec in specs.items():
        (directory / f"{name}.json").write_text(json.dumps({"name": name, **spec}))
    return directory
