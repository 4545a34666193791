"""Spin 3 manifests (``spin.toml``, manifest version 2) for ActiveDataFlow flows.

Three jobs, all standard library (TOML is read with :mod:`tomllib` and written by
:mod:`active_data_flow.spin_app.manifest.toml_writer`):

* :func:`render_manifest` — generate the manifest of a set of flows and their routes;
* :func:`check_flow_for_spin` — can a flow run *inside* a component? (the one check that
  ``adf spin manifest``, ``init``, ``validate``, ``build``, ``up`` and ``deploy`` all use);
* :func:`validate_manifest` — check a manifest: its tables, variables, triggers, component
  files, and every bundled flow.

One module per concern; every public name is importable from here:

=====================  ==========================================================================
``conventions``        trigger kinds, ``.wasm`` files, component variables, the Spin release and
                       plugins the rules come from (``RULES``), identifiers and in-component paths
``flows``              ``FlowFile``, ``Mount``, ``Findings``; a flow's mounts, hosts and secrets
``scan``               ``check_flow_for_spin``: connectors, steps and the modules they import
``routes``             ``Route``, ``parse_route``, ``plan_routes``; route patterns
``render``             ``ManifestOptions``, ``render_manifest``
``toml_writer``        the TOML writer ``render`` uses
``rules``              Spin's and the trigger plugins' rules as checks of single values
``report``             ``ValidationReport``
``validate``           ``validate_manifest``: the document, its variables and triggers
``components``         the checks of one ``[component.<id>]`` table
``local``              ``component_runtimes``, ``resolve_variables``, ``stage_files``: running a
                       manifest's components on the local host
=====================  ==========================================================================
"""

from __future__ import annotations

from active_data_flow.spin_app.manifest.conventions import (
    COMPONENT_VARIABLES,
    CONTROL_VARIABLES,
    DEFAULT_CRON_EXPRESSION,
    DEFAULT_WASM_DIR,
    FLOWS_MOUNT,
    GENERATED_MARKER,
    MIN_SPIN_VERSION,
    PINNED_PLUGINS,
    PLUGIN_RELEASE_URL,
    RULES,
    SPIN_MAJOR,
    TRIGGER_KINDS,
    TRIGGER_PLUGINS,
    WASM_FILES,
    component_id,
    flow_slug,
    slug_collisions,
    spin_id_problem,
)
from active_data_flow.spin_app.manifest.flows import (
    Findings,
    FlowFile,
    Mount,
    load_flow_file,
    secret_variables,
    spin_registry,
)
from active_data_flow.spin_app.manifest.local import (
    ComponentRuntime,
    component_runtimes,
    resolve_variables,
    stage_files,
)
from active_data_flow.spin_app.manifest.render import ManifestOptions, render_manifest
from active_data_flow.spin_app.manifest.report import ValidationReport
from active_data_flow.spin_app.manifest.routes import Route, parse_route, plan_routes
from active_data_flow.spin_app.manifest.rules import (
    cron_expression_problem,
    outbound_host_problem,
    spin_cron_expression,
)
from active_data_flow.spin_app.manifest.scan import (
    ALLOWED_SINKS,
    ALLOWED_SOURCES,
    ALLOWED_STEPS,
    check_flow_for_spin,
)
from active_data_flow.spin_app.manifest.validate import validate_manifest

__all__ = [
    "ALLOWED_SINKS",
    "ALLOWED_SOURCES",
    "ALLOWED_STEPS",
    "COMPONENT_VARIABLES",
    "CONTROL_VARIABLES",
    "DEFAULT_CRON_EXPRESSION",
    "DEFAULT_WASM_DIR",
    "FLOWS_MOUNT",
    "GENERATED_MARKER",
    "MIN_SPIN_VERSION",
    "PINNED_PLUGINS",
    "PLUGIN_RELEASE_URL",
    "RULES",
    "SPIN_MAJOR",
    "TRIGGER_KINDS",
    "TRIGGER_PLUGINS",
    "WASM_FILES",
    "ComponentRuntime",
    "Findings",
    "FlowFile",
    "ManifestOptions",
    "Mount",
    "Route",
    "ValidationReport",
    "check_flow_for_spin",
    "component_id",
    "component_runtimes",
    "cron_expression_problem",
    "flow_slug",
    "load_flow_file",
    "outbound_host_problem",
    "parse_route",
    "plan_routes",
    "render_manifest",
    "resolve_variables",
    "secret_variables",
    "slug_collisions",
    "spin_cron_expression",
    "spin_id_problem",
    "spin_registry",
    "stage_files",
    "validate_manifest",
]
