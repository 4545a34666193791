"""What a connector or a step knows about the run it is part of."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, overload

__all__ = ["RunContext", "RunContextSlot"]


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


class RunContextSlot:
    """The ``run_context`` attribute of sources and sinks: the engine sets it before it uses the
    connector; until then each instance has a :class:`RunContext` of its own (never one shared by
    every instance of a class, which one connector's changes would leak into another's)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = f"_{name}_value"

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> RunContextSlot: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> RunContext: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> RunContext | RunContextSlot:
        if obj is None:
            return self
        found = obj.__dict__.get(self.key)
        if found is None:
            found = obj.__dict__[self.key] = RunContext()
        return found

    def __set__(self, obj: object, value: RunContext) -> None:
        obj.__dict__[self.key] = value
