"""The result of checking a manifest (:class:`ValidationReport`): its errors and warnings, and
what it describes — components, flows, ``.wasm`` files, triggers, routes and variables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ValidationReport:
    """The result of :func:`~active_data_flow.spin_app.manifest.validate.validate_manifest`."""

    manifest: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: component id -> trigger kind (ADF components only)
    components: dict[str, str] = field(default_factory=dict)
    #: flow name -> host spec path (absolute)
    flows: dict[str, str] = field(default_factory=dict)
    #: trigger kind -> host path of its .wasm (absolute)
    wasm: dict[str, str] = field(default_factory=dict)
    triggers: dict[str, int] = field(default_factory=dict)
    #: the errors that break a rule of Spin 3 or of a pinned trigger plugin (Spin would refuse the
    #: manifest whatever the flows), a subset of ``errors``
    rule_errors: list[str] = field(default_factory=list)
    #: trigger kind -> ``adf_routes`` of its components (merged)
    routes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: component variables that feed the flows' configuration (not :data:`~active_data_flow.spin_app.manifest.conventions.CONTROL_VARIABLES`)
    config_variables: list[str] = field(default_factory=list)
    #: the default of the ``redis_address`` application variable
    redis_address: str | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"manifest": self.manifest, "valid": self.ok, "errors": self.errors, "warnings": self.warnings,
                "components": self.components, "flows": self.flows, "wasm": self.wasm, "triggers": self.triggers,
                "routes": self.routes}

    def summary(self) -> str:
        triggers = ", ".join(f"{n} {k}" for k, n in self.triggers.items()) or "none"
        return (f"{len(self.components)} component(s) ({', '.join(self.components) or 'none'}), "
                f"{len(self.flows)} flow(s) ({', '.join(sorted(self.flows)) or 'none'}), triggers: {triggers}")
