"""Checking one ``[component.<id>]`` table of a manifest (:func:`check_component`).

First Spin's rules for any component, one part at a time: its id and keys, ``source``,
``files``, store labels and ``allowed_outbound_hosts``, ``variables`` and ``build``. Then, for
an ActiveDataFlow component (one with an ``adf_trigger`` variable), the conventions of
:mod:`active_data_flow.spin_app.manifest.conventions`: its trigger and ``.wasm``, its control and configuration
variables, its routes against the triggers that run it, and every flow it bundles.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from active_data_flow.errors import ConfigError
from active_data_flow.registry import Registry
from active_data_flow.spin_app.manifest.conventions import (
    COMPONENT_VARIABLES,
    CONTROL_VARIABLES,
    GLOB_CHARS,
    TRIGGER_KINDS,
    WASM_FILES,
    glob_prefix,
    inside_path,
    rule_note,
    spin_id_problem,
    templates,
)
from active_data_flow.spin_app.manifest.flows import FlowFile, Mount, load_flow_file, outbound_hosts
from active_data_flow.spin_app.manifest.report import ValidationReport
from active_data_flow.spin_app.manifest.routes import http_route_covers, http_run_path, route_key_problem
from active_data_flow.spin_app.manifest.rules import (
    BUILD_KEYS,
    COMPONENT_KEYS,
    file_source_problem,
    label_problem,
    outbound_host_problem,
    unknown_keys,
    variable_name_problem,
)
from active_data_flow.spin_app.manifest.scan import check_flow_for_spin


@dataclass
class ComponentScope:
    """What checking a component needs from the rest of the manifest and the check."""

    #: the manifest's directory (``files`` sources and ``source`` are relative to it)
    base: str
    #: the ``[[trigger.<kind>]]`` entries that run the component, as (kind, entry)
    served: list[tuple[str, dict[str, Any]]]
    #: flow specs already read, by host path (None: the spec could not be read)
    flow_cache: dict[str, FlowFile | None]
    report: ValidationReport
    #: a missing ``.wasm`` is an error (True), a warning (False) or not reported (None)
    build_check: bool | None
    reg: Registry | None
    #: refuses ``{{ name }}`` references to variables the manifest does not declare
    check_refs: Callable[[str, Any], None]


def check_component(cid: str, comp: Any, scope: ComponentScope) -> None:
    """Check ``[component.<cid>]``; the messages go to ``scope.report``."""
    where = f"component.{cid}"
    problem = spin_id_problem(cid, "-", lower=False)
    if problem:
        scope.report.errors.append(f"{where}: component ids must be kebab-case: {problem}{rule_note('id')}")
    if not isinstance(comp, dict):
        scope.report.errors.append(f"{where}: must be a table")
        return
    check = _ComponentCheck(cid, comp, scope)
    check.keys()
    wasm_path = check.source()
    mounts = check.files()
    check.labels_and_hosts()
    variables = check.variables()
    check.build()
    kind = check.adf_trigger(variables)
    if kind is None:
        return  # not ours: Spin checks the rest
    check.adf_component(kind, variables, wasm_path, mounts)


def _parse_json_variable(cid: str, name: str, value: Any, err: Callable[[str], None]) -> Any:
    if not isinstance(value, str):
        err(f"component.{cid}.variables.{name}: must be a string of JSON")
        return None
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        err(f"component.{cid}.variables.{name}: not valid JSON ({exc})")
        return None
    if not isinstance(data, dict):
        err(f"component.{cid}.variables.{name}: must be a JSON object")
        return None
    return data


class _ComponentCheck:
    """The checks of one component table, one method per part of it."""

    def __init__(self, cid: str, comp: dict[str, Any], scope: ComponentScope) -> None:
        self.cid = cid
        self.comp = comp
        self.scope = scope
        self.where = f"component.{cid}"
        self.report = scope.report
        self.err = scope.report.errors.append
        self.warn = scope.report.warnings.append

    # ----------------------------------------------------------------- any component (Spin's rules)

    def keys(self) -> None:
        unknown = unknown_keys(self.comp, COMPONENT_KEYS)
        if unknown:
            self.err(f"{self.where}: unknown key(s) {', '.join(unknown)}{rule_note('keys')}")
        if not self.scope.served:
            self.warn(f"{self.where}: no trigger runs this component")

    def source(self) -> str | None:
        """Check ``source``; the host path of a local ``.wasm``, else None."""
        where = self.where
        source = self.comp.get("source")
        wasm_path: str | None = None
        if isinstance(source, str):
            wasm_path = os.path.normpath(os.path.join(self.scope.base, source))
            if not os.path.isfile(wasm_path) and self.scope.build_check is not None:
                msg = f"{where}: source {source} does not exist yet: run `adf spin build` (it writes the .wasm files)"
                (self.err if self.scope.build_check else self.warn)(msg)
        elif isinstance(source, dict):
            if not source.get("url"):
                self.err(f"{where}: a table source needs url and digest")
        else:
            self.err(f"{where}: 'source' is required (the component's .wasm)")
        return wasm_path

    def files(self) -> list[Mount]:
        """Check ``files``; the mounts they make."""
        mounts: list[Mount] = []
        files = self.comp.get("files", [])
        if not isinstance(files, list):
            self.err(f"{self.where}.files: must be an array")
            files = []
        for i, entry in enumerate(files):
            mount = self._file_entry(f"{self.where}.files[{i}]", entry)
            if mount is not None:
                mounts.append(mount)
        return mounts

    def _file_entry(self, fw: str, entry: Any) -> Mount | None:
        base = self.scope.base
        if isinstance(entry, str):
            problem = file_source_problem(glob_prefix(entry), base, pattern=bool(GLOB_CHARS.search(entry)))
            if problem:
                self.err(f"{fw}: {problem}{rule_note('files')}")
            return Mount(entry, inside_path(glob_prefix(entry)))
        if isinstance(entry, dict):
            src, dst = entry.get("source"), entry.get("destination")
            if not isinstance(src, str) or not isinstance(dst, str):
                self.err(f"{fw}: needs 'source' and 'destination' strings{rule_note('keys')}")
                return None
            unknown = unknown_keys(entry, ("source", "destination"))
            if unknown:
                self.err(f"{fw}: unknown key(s) {', '.join(unknown)}{rule_note('keys')}")
            if not dst.startswith("/"):
                self.err(f"{fw}: destination {dst!r} must be an absolute path{rule_note('files')}")
            problem = file_source_problem(src, base, pattern=False)
            if problem:
                self.err(f"{fw}: {problem}{rule_note('files')}")
            return Mount(src, dst)
        self.err(f"{fw}: must be a path or {{ source, destination }}{rule_note('keys')}")
        return None

    def labels_and_hosts(self) -> None:
        """``key_value_stores``, ``sqlite_databases`` and ``allowed_outbound_hosts``."""
        where = self.where
        for key in ("key_value_stores", "sqlite_databases", "allowed_outbound_hosts"):
            value = self.comp.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                self.err(f"{where}.{key}: must be an array of strings{rule_note('keys')}")
            elif key != "allowed_outbound_hosts":
                for label in value:
                    problem = label_problem(label)
                    if problem:
                        self.err(f"{where}.{key}: {problem}{rule_note('labels')}")
        for host in self.comp.get("allowed_outbound_hosts", []) or []:
            if not isinstance(host, str):
                continue
            self.scope.check_refs(f"{where}.allowed_outbound_hosts", host)
            problem = outbound_host_problem(host)
            if problem:
                self.err(f"{where}.allowed_outbound_hosts: {problem}{rule_note('hosts')}")

    def variables(self) -> dict[str, Any]:
        """Check ``[component.<id>.variables]``; the table (empty when it is not one)."""
        where = self.where
        variables = self.comp.get("variables", {})
        if not isinstance(variables, dict):
            self.err(f"{where}.variables: must be a table")
            variables = {}
        for vname, value in variables.items():
            problem = variable_name_problem(vname)
            if problem:
                self.err(f"{where}.variables.{vname}: {problem}")
            if not isinstance(value, str):
                self.err(f"{where}.variables.{vname}: values must be strings, got {type(value).__name__}")
                continue
            self.scope.check_refs(f"{where}.variables.{vname}", value)
        return variables

    def build(self) -> None:
        build = self.comp.get("build")
        if build is not None and (not isinstance(build, dict) or not isinstance(build.get("command"), str | list)):
            self.err(f"{self.where}.build: needs a 'command' string{rule_note('keys')}")
        elif isinstance(build, dict):
            unknown = unknown_keys(build, BUILD_KEYS)
            if unknown:
                self.err(f"{self.where}.build: unknown key(s) {', '.join(unknown)}{rule_note('keys')}")

    # ----------------------------------------------------------------- an ActiveDataFlow component

    def adf_trigger(self, variables: Mapping[str, Any]) -> str | None:
        """The component's ``adf_trigger``, or None when it is not an ActiveDataFlow component
        (or names no trigger kind: refused)."""
        kind: str | None = variables.get("adf_trigger")
        if kind is None:
            if self.cid.startswith("adf-"):
                self.err(f"{self.where}: an ActiveDataFlow component needs the variables "
                         f"{', '.join(COMPONENT_VARIABLES)}")
            return None
        if kind not in TRIGGER_KINDS:
            self.err(f"{self.where}.variables.adf_trigger: {kind!r} is not one of {', '.join(TRIGGER_KINDS)}")
            return None
        return kind

    def adf_component(self, kind: str, variables: Mapping[str, Any], wasm_path: str | None,
                      mounts: Sequence[Mount]) -> None:
        """Everything an ActiveDataFlow component of trigger ``kind`` must agree with."""
        self.report.components[self.cid] = kind
        for tkind, _entry in self.scope.served:
            if tkind != kind:
                self.err(f"{self.where}: built for the {kind} trigger (adf_trigger) but [[trigger.{tkind}]] runs it")
        self._wasm(kind, wasm_path)
        flows, routes = self._control_variables(kind, variables)
        if kind == "redis":
            self._redis_channel(variables)
        if kind == "cron":
            self._cron_routes(flows, routes)
        else:
            self._routes(kind, flows, routes, variables)
        self._served_routes(kind, routes)
        self._bundled_flows(flows, mounts, variables)

    def _wasm(self, kind: str, wasm_path: str | None) -> None:
        """The ``.wasm`` is the one ``adf spin build`` writes for the kind, the same for every component of it."""
        source = self.comp.get("source")
        if not isinstance(source, str):
            return
        if os.path.basename(source) != WASM_FILES[kind]:
            self.warn(f"{self.where}: source {source} is not {WASM_FILES[kind]}, the file `adf spin build` writes "
                      f"for {kind}")
        if wasm_path:
            other = self.report.wasm.setdefault(kind, wasm_path)
            if other != wasm_path:
                self.err(f"{self.where}: {kind} components load different files ({other} and {wasm_path})")

    def _control_variables(self, kind: str, variables: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The required variables, and the JSON ones; returns ``adf_flows`` and ``adf_routes``."""
        cid, report = self.cid, self.report
        missing = [v for v in COMPONENT_VARIABLES if v not in variables]
        if missing:
            self.err(f"{self.where}.variables: missing {', '.join(missing)}")
        flows = _parse_json_variable(cid, "adf_flows", variables.get("adf_flows", "{}"), self.err) or {}
        routes = _parse_json_variable(cid, "adf_routes", variables.get("adf_routes", "{}"), self.err) or {}
        report.routes.setdefault(kind, {}).update(routes)
        report.config_variables.extend(
            v for v in variables if v not in CONTROL_VARIABLES and v not in report.config_variables)
        for vname, value in variables.items():
            if vname == "adf_json" or (vname.startswith("adf_flow_") and vname.endswith("_json")):
                if isinstance(value, str) and not templates(value):
                    _parse_json_variable(cid, vname, value, self.err)
        return flows, routes

    def _redis_channel(self, variables: Mapping[str, Any]) -> None:
        """A Redis component names the one channel its triggers subscribe to."""
        where = self.where
        channel = variables.get("adf_channel")
        channels = [str(e.get("channel")) for t, e in self.scope.served if t == "redis"]
        if not channel:
            self.err(f"{where}.variables: adf_channel is required (Spin's Redis trigger does not pass the channel)")
        elif channels and set(channels) != {channel}:
            self.err(f"{where}: subscribed to {', '.join(sorted(set(channels)))} but adf_channel is {channel!r}; "
                     "give each Redis channel its own component")
        for c in channels:
            if any(ch in c for ch in "*?["):
                self.warn(f"{where}: Spin subscribes to the channel name {c!r} literally (no patterns)")

    def _cron_routes(self, flows: Mapping[str, Any], routes: Mapping[str, Any]) -> None:
        """Cron routes are ``{bundled flow: seconds > 0 or a calendar}`` (a calendar as text,
        ``"0 6 * * 1-5"`` or ``"CRON_TZ=Europe/Berlin 0 6 * * 1-5"``, read by the schedule's parser)."""
        for fname, when in routes.items():
            if fname not in flows:
                self.err(f"{self.where}.variables.adf_routes: flow {fname!r} is not bundled (adf_flows)")
            if isinstance(when, str) and not when.strip().isdigit():
                problem = route_key_problem("cron", when)
                if problem:
                    self.err(f"{self.where}.variables.adf_routes: flow {fname!r}: {problem}")
            elif isinstance(when, bool) or not isinstance(when, int) or when <= 0:
                self.err(f"{self.where}.variables.adf_routes: flow {fname!r}: the cron interval must be a number of "
                         f"seconds > 0 or a calendar such as \"0 6 * * 1-5\", got {when!r}")

    def _routes(self, kind: str, flows: Mapping[str, Any], routes: Mapping[str, Any],
                variables: Mapping[str, Any]) -> None:
        """HTTP, Redis and MQTT routes are ``{key: bundled flow}``, each key served by a trigger."""
        for key, target in routes.items():
            if not isinstance(target, str):
                self.err(f"{self.where}.variables.adf_routes: {key!r} must map to one flow name, got {target!r}")
                continue
            if target not in flows:
                self.err(f"{self.where}.variables.adf_routes: {key!r} routes to flow {target!r}, which adf_flows "
                         "does not bundle")
            if kind == "http":
                self._http_route(key, target)
            else:
                self._message_route(kind, key, variables)

    def _http_route(self, key: str, target: str) -> None:
        where = f"{self.where}.variables.adf_routes"
        if not any(http_route_covers(str(e.get("route")), key) for t, e in self.scope.served if t == "http"):
            self.err(f"{where}: no [[trigger.http]] route of this component serves {key!r}")
        if key != http_run_path(target):
            self.warn(f"{where}: {key!r}: HTTP runs a flow at {http_run_path(target)} "
                      "(active_data_flow.handlers.invoke routes by path)")

    def _message_route(self, kind: str, key: str, variables: Mapping[str, Any]) -> None:
        where = f"{self.where}.variables.adf_routes"
        problem = route_key_problem(kind, key)
        if problem:
            self.err(f"{where}: {problem}")
        if kind == "mqtt" and key not in [e.get("topic") for t, e in self.scope.served if t == "mqtt"]:
            self.err(f"{where}: no [[trigger.mqtt]] topic {key!r} runs this component")
        if kind == "redis" and key != variables.get("adf_channel"):
            self.err(f"{where}: {key!r} is not this component's channel {variables.get('adf_channel')!r}")

    def _served_routes(self, kind: str, routes: Mapping[str, Any]) -> None:
        """Every MQTT topic and Redis channel that runs the component has a route."""
        if kind == "mqtt":
            for t, e in self.scope.served:
                if t == "mqtt" and e.get("topic") not in routes:
                    self.err(f"{self.where}: [[trigger.mqtt]] topic {e.get('topic')!r} has no entry in adf_routes")
        if kind == "redis":
            for t, e in self.scope.served:
                if t == "redis" and e.get("channel") not in routes:
                    self.err(f"{self.where}: channel {e.get('channel')!r} has no entry in adf_routes")

    # ----------------------------------------------------------------- the bundled flows

    def _bundled_flows(self, flows: Mapping[str, Any], mounts: Sequence[Mount], variables: Mapping[str, Any]) -> None:
        by_destination = {m.destination: m for m in mounts}
        for fname, inside in flows.items():
            fw = f"{self.where}.variables.adf_flows: flow {fname!r}"
            mount = by_destination.get(str(inside))
            if mount is None:
                self.err(f"{fw}: {inside} is not mounted by a files entry "
                         f"{{ source = \"<spec>\", destination = \"{inside}\" }}")
                continue
            host = os.path.normpath(os.path.join(self.scope.base, mount.source))
            flow = self._load_flow(host, mount)
            if flow is not None:
                self._bundled_flow(fname, fw, flow, host, mount, mounts, variables)

    def _load_flow(self, host: str, mount: Mount) -> FlowFile | None:
        """The spec mounted by ``mount`` (read once per manifest), or None when it cannot be read."""
        cache = self.scope.flow_cache
        if host not in cache:
            try:
                cache[host] = load_flow_file(host)
            except ConfigError as exc:
                cache[host] = None
                for p in exc.problems:
                    if p not in self.report.errors:
                        self.err(f"flow spec {mount.source}: {p}")
        return cache[host]

    def _bundled_flow(self, fname: str, fw: str, flow: FlowFile, host: str, mount: Mount, mounts: Sequence[Mount],
                      variables: Mapping[str, Any]) -> None:
        """One bundled flow: its name, a single spec per name, runnable inside Spin, its hosts allowed."""
        report = self.report
        if flow.name != fname:
            self.err(f"{fw}: the spec {mount.source} is named {flow.name!r}")
        known = report.flows.setdefault(flow.name, host)
        if known != host:
            self.err(f"flow {flow.name!r} comes from two specs: {known} and {host}")
        found = check_flow_for_spin(flow, mounts=mounts, reg=self.scope.reg, component=self.cid)
        for msg in found.errors:
            if msg not in report.errors:
                self.err(msg)
        for msg in found.warnings:
            if msg not in report.warnings:
                self.warn(msg)
        hosts, needs_redis = outbound_hosts(flow)
        allowed = self.comp.get("allowed_outbound_hosts") or []
        for h in hosts:
            if h not in allowed:
                self.err(f"flow {flow.name}: {self.where}.allowed_outbound_hosts lacks {h!r} (the flow's connectors "
                         "reach it)")
        if needs_redis and "adf_redis_address" not in variables:
            self.err(f"flow {flow.name}: spin_redis without an address needs {self.where}.variables.adf_redis_address")
