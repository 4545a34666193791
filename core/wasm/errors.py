"""What WebAssembly execution and the module registry raise."""

from __future__ import annotations

from typing import Any

from active_data_flow.errors import AdfError

__all__ = [
    "LIMIT_KINDS",
    "ModuleIntegrityError",
    "ModuleNotFoundInRegistry",
    "SignatureError",
    "WasmAbiError",
    "WasmError",
    "WasmLimitExceeded",
    "WasmPermissionDenied",
    "WasmTrap",
]

#: the limits a call can hit (``WasmLimitExceeded.kind``)
LIMIT_KINDS = ("fuel", "memory", "timeout", "output")


class WasmError(AdfError):
    """Base of WebAssembly errors. ``fuel_consumed`` is what the call used before it failed
    (0 when it never ran); ``trace`` the trap's wasm backtrace, when there is one."""

    def __init__(self, message: str, *, fuel_consumed: int = 0, trace: str | None = None) -> None:
        super().__init__(message)
        self.fuel_consumed = fuel_consumed
        self.trace = trace

    def to_dict(self) -> dict[str, Any]:
        return {"error": str(self), "error_type": type(self).__name__, "fuel_consumed": self.fuel_consumed,
                "trace": self.trace}


class WasmLimitExceeded(WasmError):
    """A limit stopped the call: ``kind`` is one of :data:`LIMIT_KINDS`; ``limit`` its value."""

    def __init__(self, kind: str, limit: int | float, message: str | None = None, *, fuel_consumed: int = 0,
                 trace: str | None = None) -> None:
        if kind not in LIMIT_KINDS:
            raise ValueError(f"unknown limit kind {kind!r}")
        super().__init__(message or f"{kind} limit exceeded ({limit})", fuel_consumed=fuel_consumed, trace=trace)
        self.kind = kind
        self.limit = limit

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "limit": self.kind, "limit_value": self.limit}


class WasmTrap(WasmError):
    """The module trapped (unreachable, out-of-bounds access, stack overflow, a bad host call...)."""


class WasmAbiError(WasmError):
    """The module does not follow the guest ABI (missing export, output not JSON...)."""


class WasmPermissionDenied(WasmError):
    """A host call the module's permissions do not allow (``permission`` is what it needed)."""

    def __init__(self, permission: str, resource: str, module: str = "") -> None:
        who = f"module {module!r} " if module else ""
        super().__init__(f"permission denied: {who}needs {permission} for {resource!r}")
        self.permission = permission
        self.resource = resource
        self.module = module


class ModuleNotFoundInRegistry(WasmError, LookupError):
    """No module ``id@version`` in the registry."""


class ModuleIntegrityError(WasmError):
    """The stored bytes do not match the registered SHA-256: the module is refused."""


class SignatureError(WasmError):
    """A signature that does not verify, or an unknown author key."""
