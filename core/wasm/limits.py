"""Per-call resource limits of a WebAssembly step."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from active_data_flow.errors import ConfigError

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """``fuel``: instructions (wasmtime fuel units) per call; ``memory_mb``: linear memory cap;
    ``timeout_ms``: wall clock per call (epoch interruption); ``max_output_bytes``: the
    largest JSON answer accepted."""

    fuel: int = 50_000_000
    memory_mb: int = 64
    timeout_ms: int = 2_000
    max_output_bytes: int = 4 << 20

    def __post_init__(self) -> None:
        problems = [f"{f.name} must be a positive integer, got {getattr(self, f.name)!r}"
                    for f in fields(self)
                    if not isinstance(getattr(self, f.name), int) or isinstance(getattr(self, f.name), bool)
                    or getattr(self, f.name) <= 0]
        if problems:
            raise ConfigError("wasm limits", problems)

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb << 20

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base: Limits | None = None) -> Limits:
        """Limits from a step spec (``fuel``, ``memory_mb``, ``timeout_ms``, ``max_output_bytes``);
        unknown keys are ignored, missing ones come from ``base`` (default: the defaults)."""
        values = asdict(base or cls())
        for f in fields(cls):
            if data.get(f.name) is not None:
                values[f.name] = data[f.name]
        return cls(**values)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)
