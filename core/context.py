"""What a connector or a step knows about the run it is part of."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunContext"]


@dataclass
class RunContext:
    """What a connector knows about the run it is part of.

    ``state_dir`` is the run's own directory (checkpoints, default dead letters);
    ``resuming`` is true when the run continues from a checkpoint, so a sink must not
    truncate what an earlier attempt wrote; ``store`` is the flow's state store (or None).
    """

    flow_name: str = "flow"
    run_id: str = "run"
    state_dir: str = ".adf"
    resuming: bool = False
    reader_id: int = 0
    parallelism: int = 1
    store: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
