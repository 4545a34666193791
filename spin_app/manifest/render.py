"""Rendering ``spin.toml``: the manifest of a set of flows and their routes (:func:`render_manifest`).

:class:`ManifestOptions` says what to generate; the components are planned from the routes (one
per trigger kind, one per Redis channel), then written section by section: the application and
its trigger settings, the variables, the triggers, and each component with its files, hosts,
variables and build command. Every path in the manifest is relative to its directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from active_data_flow.registry import Registry
from active_data_flow.spin_app.manifest.conventions import (
    DEFAULT_CRON_EXPRESSION,
    DEFAULT_MQTT_ADDRESS,
    DEFAULT_REDIS_ADDRESS,
    DEFAULT_WASM_DIR,
    GENERATED_MARKER,
    TRIGGER_KINDS,
    WASM_FILES,
    component_id,
    flow_slug,
)
from active_data_flow.spin_app.manifest.flows import (
    FlowFile,
    Mount,
    data_mounts,
    outbound_hosts,
    secret_variables,
    spin_registry,
)
from active_data_flow.spin_app.manifest.routes import HTTP_TRIGGER_ROUTE
from active_data_flow.spin_app.manifest.scan import find_module, is_installed_package, search_path
from active_data_flow.spin_app.manifest.toml_writer import TomlWriter


@dataclass
class ManifestOptions:
    """What ``adf spin manifest`` generates; every path in the manifest is relative to ``manifest_dir``."""

    name: str
    version: str = "0.1.0"
    description: str = ""
    wasm_dir: str = DEFAULT_WASM_DIR
    manifest_file: str = "spin.toml"
    cron_expression: str = DEFAULT_CRON_EXPRESSION
    mqtt_qos: int = 1
    redis_address: str = DEFAULT_REDIS_ADDRESS
    mqtt_address: str = DEFAULT_MQTT_ADDRESS
    log_level: str = "info"
    #: relative file-source paths are resolved against this directory (default: the cwd)
    base_dir: str | None = None


def _rel(path: str, start: str) -> str:
    return os.path.relpath(path, start).replace(os.sep, "/")


def _step_module_files(flow: FlowFile, manifest_dir: str) -> list[str]:
    """The project's own step modules (for ``build.watch``): .py files found outside installed packages."""
    out: list[str] = []
    search = search_path(flow)
    for step in flow.spec.steps:
        function = step.get("function")
        if not isinstance(function, str) or ":" not in function:
            continue
        spec = find_module(function.partition(":")[0], search)
        origin = spec.origin if spec else None
        if origin and origin.endswith(".py") and not is_installed_package(origin) \
                and origin.startswith(os.path.dirname(flow.path) + os.sep):
            rel = _rel(origin, manifest_dir)
            if rel not in out:
                out.append(rel)
    return out



def render_manifest(flows: Sequence[FlowFile], plan: Mapping[str, Mapping[str, str]],
                    options: ManifestOptions, manifest_dir: str, reg: Registry | None = None) -> str:
    """The text of ``spin.toml`` for ``flows`` routed by ``plan`` (see :func:`~active_data_flow.spin_app.manifest.routes.plan_routes`)."""
    manifest_dir = os.path.abspath(manifest_dir)
    reg = reg or spin_registry()
    by_name = {f.name: f for f in flows}
    components = _plan_components(plan)

    uses_redis_var = "redis" in plan
    secrets: dict[str, dict[str, str]] = {f.name: secret_variables(f, reg) for f in flows}
    for comp in components:
        _add_flows_and_hosts(comp, by_name)
        uses_redis_var = uses_redis_var or comp["needs_redis"]
    used_flows = sorted({f.name for comp in components for f in comp["flows"]})

    w = TomlWriter()
    _write_application(w, options, by_name, plan)
    _write_variables(w, options, plan, used_flows, secrets, uses_redis_var)
    for comp in components:
        _write_trigger(w, comp, options)
    redis_flows = sorted({f for f in (plan.get("redis") or {}).values()})
    for comp in components:
        _write_component(w, comp, options, manifest_dir, secrets)
        if comp["build"]:
            watched = comp["flows"] if comp["kind"] != "redis" else [by_name[n] for n in redis_flows]
            _write_build(w, comp, options, manifest_dir, watched)
    return w.text()


def _plan_components(plan: Mapping[str, Mapping[str, str]]) -> list[dict[str, Any]]:
    """One component per trigger kind of ``plan``, one per channel for Redis (only the first of
    them builds ``redis.wasm``)."""
    components: list[dict[str, Any]] = []
    taken: set[str] = set()
    for kind in TRIGGER_KINDS:
        routes = plan.get(kind)
        if not routes:
            continue
        if kind == "redis":
            for i, (channel, flow) in enumerate(sorted(routes.items())):
                cid = component_id("redis", channel, taken)
                taken.add(cid)
                components.append({"id": cid, "kind": kind, "routes": {channel: flow}, "flow_names": [flow],
                                   "channel": channel, "build": i == 0})
        else:
            cid = component_id(kind)
            taken.add(cid)
            flow_names = list(routes) if kind == "cron" else list(routes.values())
            components.append({"id": cid, "kind": kind, "routes": dict(routes), "flow_names": flow_names,
                               "build": True})
    return components


def _add_flows_and_hosts(comp: dict[str, Any], by_name: Mapping[str, FlowFile]) -> None:
    """A planned component's flows, its ``allowed_outbound_hosts`` and whether it needs outbound Redis."""
    comp["flows"] = [by_name[n] for n in sorted(set(comp["flow_names"]))]
    hosts: list[str] = []
    needs_redis = comp["kind"] == "redis"
    for f in comp["flows"]:
        h, needs = outbound_hosts(f)
        hosts += [x for x in h if x not in hosts]
        needs_redis = needs_redis or needs
    if needs_redis and "{{ redis_address }}" not in hosts:
        hosts.append("{{ redis_address }}")
    if comp["kind"] == "mqtt" and "{{ mqtt_address }}" not in hosts:
        hosts.append("{{ mqtt_address }}")  # the component publishes its results there (outbound MQTT)
    comp["hosts"] = hosts
    comp["needs_redis"] = needs_redis


def _write_application(w: TomlWriter, options: ManifestOptions, by_name: Mapping[str, FlowFile],
                       plan: Mapping[str, Mapping[str, str]]) -> None:
    w.comment(f"{GENERATED_MARKER} (ActiveDataFlow): regenerate it with the same options rather than")
    w.comment("editing it; `adf spin manifest ... --check` reports drift, `adf spin validate` checks it.")
    w.comment("The conventions (components, variables, routes) are described in docs/SPIN.md.")
    w.kv("spin_manifest_version", 2)
    w.table("application")
    w.kv("name", options.name)
    w.kv("version", options.version)
    w.kv("description", options.description or f"ActiveDataFlow flows: {', '.join(sorted(by_name))}")
    if "redis" in plan:
        w.table("application.trigger.redis")
        w.kv("address", "{{ redis_address }}")
    if "mqtt" in plan:
        w.table("application.trigger.mqtt")
        w.kv("address", "{{ mqtt_address }}")
        w.kv("username", "{{ mqtt_username }}")
        w.kv("password", "{{ mqtt_password }}")
        w.kv("keep_alive_interval", "30")


def _write_variables(w: TomlWriter, options: ManifestOptions, plan: Mapping[str, Mapping[str, str]],
                     used_flows: Sequence[str], secrets: Mapping[str, Mapping[str, str]], uses_redis_var: bool) -> None:
    w.table("variables")
    w.kv("log_level", {"default": options.log_level, "description": "debug, info, warning or error"})
    w.kv("adf_json", {"default": "{}", "description": "configuration of every flow: a JSON object "
                                                      "(nested or dotted keys), the manifest layer"})
    for name in used_flows:
        w.kv(f"adf_flow_{flow_slug(name)}_json", {"default": "{}", "description": f"configuration of flow {name}"})
        for var, value in secrets[name].items():
            w.kv(var, {"default": value, "secret": True, "description": f"secret value of flow {name}"})
    if uses_redis_var:
        w.kv("redis_address", {"default": options.redis_address,
                               "description": "Redis of the Redis trigger and of outbound Redis"})
    if "mqtt" in plan:
        w.kv("mqtt_address", {"default": options.mqtt_address,
                              "description": "MQTT broker of the MQTT trigger and of the results"})
        w.kv("mqtt_username", {"default": ""})
        w.kv("mqtt_password", {"default": "", "secret": True})
        w.kv("mqtt_response_topic", {"default": "{topic}/results",
                                     "description": "where a message's results are published ({topic}: its topic)"})
        w.kv("mqtt_response_via", {"default": "mqtt", "description": "mqtt, or redis (outbound Redis)"})


def _write_trigger(w: TomlWriter, comp: Mapping[str, Any], options: ManifestOptions) -> None:
    """The ``[[trigger.<kind>]]`` entries that run one component (one per topic for MQTT)."""
    kind = comp["kind"]
    if kind == "http":
        w.array_table("trigger.http")
        w.kv("route", HTTP_TRIGGER_ROUTE)
        w.kv("component", comp["id"])
    elif kind == "redis":
        w.array_table("trigger.redis")
        w.kv("channel", comp["channel"])
        w.kv("component", comp["id"])
    elif kind == "mqtt":
        for topic in comp["routes"]:
            w.array_table("trigger.mqtt")
            w.kv("component", comp["id"])
            w.kv("topic", topic)
            w.kv("qos", str(options.mqtt_qos))
    else:
        w.array_table("trigger.cron")
        w.kv("component", comp["id"])
        w.kv("cron_expression", options.cron_expression)


def _component_mounts(comp: Mapping[str, Any], manifest_dir: str, base_dir: str | None) -> list[Mount]:
    """The component's ``files``: its flows' specs, then the files their ``file`` sources read."""
    mounts: list[Mount] = []
    for f in comp["flows"]:
        mounts.append(Mount(_rel(f.path, manifest_dir), f.mount_destination))
    for f in comp["flows"]:
        for m in data_mounts(f, manifest_dir, base_dir):
            if m not in mounts:
                mounts.append(m)
    return mounts


def _write_component(w: TomlWriter, comp: Mapping[str, Any], options: ManifestOptions, manifest_dir: str,
                     secrets: Mapping[str, Mapping[str, str]]) -> None:
    """``[component.<id>]`` and its ``.variables`` table."""
    kind, cid = comp["kind"], comp["id"]
    w.table(f"component.{cid}")
    w.kv("description", _component_description(comp))
    w.kv("source", f"{options.wasm_dir.rstrip('/')}/{WASM_FILES[kind]}")
    mounts = _component_mounts(comp, manifest_dir, options.base_dir)
    w.kv("files", [{"source": m.source, "destination": m.destination} for m in mounts])
    w.kv("key_value_stores", ["default"])
    w.kv("sqlite_databases", ["default"])
    w.kv("allowed_outbound_hosts", comp["hosts"])
    w.table(f"component.{cid}.variables")
    w.kv("adf_trigger", kind)
    w.kv("adf_flows", _json({f.name: f.mount_destination for f in comp["flows"]}))
    if kind == "cron":
        # seconds as numbers, calendars as their text (the component's heartbeat reads both)
        w.kv("adf_routes", _json({f: int(v) if str(v).isdigit() else v for f, v in comp["routes"].items()}))
    else:
        w.kv("adf_routes", _json(comp["routes"]))
    if kind == "redis":
        w.kv("adf_channel", comp["channel"])
    if kind == "mqtt":
        for name in ("address", "username", "password", "response_topic", "response_via"):
            w.kv(f"adf_mqtt_{name}", f"{{{{ mqtt_{name} }}}}")
    if comp["needs_redis"]:
        w.kv("adf_redis_address", "{{ redis_address }}")
    w.kv("adf_log_level", "{{ log_level }}")
    w.kv("adf_json", "{{ adf_json }}")
    for f in comp["flows"]:
        var = f"adf_flow_{flow_slug(f.name)}_json"
        w.kv(var, f"{{{{ {var} }}}}")
        for secret in secrets[f.name]:
            w.kv(secret, f"{{{{ {secret} }}}}")


def _write_build(w: TomlWriter, comp: Mapping[str, Any], options: ManifestOptions, manifest_dir: str,
                 watched: Sequence[FlowFile]) -> None:
    """``[component.<id>.build]``: the command that builds the kind's ``.wasm`` and the files it watches."""
    kind, cid = comp["kind"], comp["id"]
    w.table(f"component.{cid}.build")
    w.kv("command", f"adf spin build --manifest {options.manifest_file} "
                    f"--out {options.wasm_dir.rstrip('/')} --trigger {kind}")
    watch: list[str] = []
    for f in watched:
        for p in [_rel(f.path, manifest_dir), *_step_module_files(f, manifest_dir)]:
            if p not in watch:
                watch.append(p)
    w.kv("watch", watch)


def _component_description(comp: Mapping[str, Any]) -> str:
    kind = comp["kind"]
    if kind == "http":
        return "ActiveDataFlow HTTP trigger: GET|POST /flows/<flow>/run runs a flow, GET /flows lists them"
    if kind == "redis":
        return f"ActiveDataFlow Redis trigger: a message on {comp['channel']!r} runs its flow"
    if kind == "cron":
        return "ActiveDataFlow cron trigger: each tick runs the flows that are due"
    return "ActiveDataFlow MQTT trigger: a message on a routed topic runs its flow"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)

