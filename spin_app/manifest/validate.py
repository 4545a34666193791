"""Checking a manifest (:func:`validate_manifest`): the one checker of Spin 3's rules and the
pinned trigger plugins' rules (:data:`~active_data_flow.spin_app.manifest.conventions.RULES`).

The document is checked table by table — the top level, ``[application]``, ``[variables]``,
``[application.trigger.<kind>]``, each ``[[trigger.<kind>]]`` entry (one checker per trigger
kind) — then each component (:mod:`active_data_flow.spin_app.manifest.components`), the variables nothing uses
and flow names that map to one identifier.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from typing import Any

from active_data_flow.registry import Registry
from active_data_flow.spin_app.manifest.components import ComponentScope, check_component
from active_data_flow.spin_app.manifest.conventions import (
    DEFAULT_CRON_EXPRESSION,
    TRIGGER_KINDS,
    rule_note,
    slug_collisions,
    templates,
)
from active_data_flow.spin_app.manifest.flows import FlowFile, spin_registry
from active_data_flow.spin_app.manifest.report import ValidationReport
from active_data_flow.spin_app.manifest.routes import http_route_problem, mqtt_topic_problem
from active_data_flow.spin_app.manifest.rules import (
    APP_NAME_RE,
    APP_TRIGGER_KEYS,
    APPLICATION_KEYS,
    TOP_KEYS,
    TRIGGER_KEYS,
    TRIGGER_RULE,
    VARIABLE_KEYS,
    cron_expression_problem,
    unknown_keys,
    variable_name_problem,
)

Err = Callable[[str], None]


class _Checker:
    """A validation's messages (an error that names a rule is also a rule error) and the
    variables the manifest declares, which ``{{ name }}`` references must name."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        self.declared: dict[str, Any] = {}
        self.warn = report.warnings.append

    def err(self, message: str) -> None:
        self.report.errors.append(message)
        if "[rule: " in message:
            self.report.rule_errors.append(message)

    def check_refs(self, where: str, value: Any) -> None:
        if isinstance(value, str):
            for ref in templates(value):
                if ref not in self.declared:
                    self.err(f"{where}: references {{{{ {ref} }}}}, which [variables] does not declare")


def validate_manifest(path: str, *, build_check: bool | None = True, reg: Registry | None = None,
                      text: str | None = None) -> ValidationReport:
    """Check a manifest and every flow it bundles; see ``adf spin validate``. The one checker of
    Spin 3's rules (:data:`~active_data_flow.spin_app.manifest.conventions.RULES`): the generator runs it on what
    it is about to write (``text``, read as if it were at ``path``) and refuses what it refuses.

    With ``build_check`` a missing component ``.wasm`` is an error, with False a warning, with
    None (before a build) not reported.
    """
    report = ValidationReport(manifest=path)
    checker = _Checker(report)
    reg = reg or spin_registry()
    doc = _read(path, text, checker.err)
    if doc is None:
        return report
    base = os.path.dirname(os.path.abspath(path))

    _check_top_level(doc, checker.err)
    app = _check_application(doc, checker.err)
    _check_variables(doc, checker)
    redis_def = checker.declared.get("redis_address")
    if isinstance(redis_def, dict) and isinstance(redis_def.get("default"), str):
        report.redis_address = redis_def["default"]
    app_triggers = _check_app_triggers(app, checker)

    components = doc.get("component")
    if not isinstance(components, dict) or not components:
        checker.err("[component.<id>] tables are required (run `adf spin manifest`)")
        components = {}
    served = _check_triggers(doc, components, app_triggers, checker)

    flow_cache: dict[str, FlowFile | None] = {}
    for cid, comp in components.items():
        check_component(cid, comp, ComponentScope(base, served.get(cid, []), flow_cache, report, build_check, reg,
                                                  checker.check_refs))
    for name in checker.declared:
        if not _variable_used(name, components, app_triggers):
            checker.warn(f"variables.{name}: declared but no component or trigger uses it")
    for message in slug_collisions(report.flows):
        checker.err(message)
    return report


def _read(path: str, text: str | None, err: Err) -> dict[str, Any] | None:
    """The manifest's document (``text`` when given, else the file at ``path``), or None."""
    try:
        if text is not None:
            return tomllib.loads(text)
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        err(f"{path}: no such manifest (generate one with `adf spin manifest --flow SPEC`)")
        return None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        err(f"{path}: not valid TOML: {exc}")
        return None


def _check_top_level(doc: Mapping[str, Any], err: Err) -> None:
    version = doc.get("spin_manifest_version")
    if version != 2:
        err(f"spin_manifest_version must be 2 (Spin 3 manifest format), got {version!r}")
    unknown = unknown_keys(doc, TOP_KEYS)
    if unknown:
        err(f"unknown top-level key(s) {', '.join(unknown)}{rule_note('keys')}")


def _check_application(doc: Mapping[str, Any], err: Err) -> dict[str, Any]:
    """Check ``[application]``; the table (empty when it is missing)."""
    app = doc.get("application")
    if not isinstance(app, dict):
        err("[application] is required (name, version, description)")
        return {}
    name = app.get("name")
    if not isinstance(name, str) or not APP_NAME_RE.match(name):
        err(f"application.name {name!r} is required: letters, digits, '-' and '_'")
    ver = app.get("version")
    if ver is not None and not (isinstance(ver, str) and re.match(r"^\d+\.\d+\.\d+", ver)):
        err(f"application.version {ver!r} must be major.minor.patch")
    unknown = unknown_keys(app, APPLICATION_KEYS)
    if unknown:
        err(f"application: unknown key(s) {', '.join(unknown)}{rule_note('keys')}")
    return app


def _check_variables(doc: Mapping[str, Any], checker: _Checker) -> None:
    """Check ``[variables]``; every table in it becomes a declared variable."""
    err = checker.err
    variables = doc.get("variables", {})
    if not isinstance(variables, dict):
        err("[variables] must be a table")
        variables = {}
    for vname, vdef in variables.items():
        problem = variable_name_problem(vname)
        if problem:
            err(f"variables.{vname}: {problem}")
        if not isinstance(vdef, dict):
            err(f"variables.{vname}: must be a table like {{ default = \"...\" }}")
            continue
        checker.declared[vname] = vdef
        _check_variable(vname, vdef, err)


def _check_variable(vname: str, vdef: Mapping[str, Any], err: Err) -> None:
    """One ``[variables]`` entry: its keys and their types; a default or ``required = true``."""
    unknown = unknown_keys(vdef, VARIABLE_KEYS)
    if unknown:
        err(f"variables.{vname}: unknown key(s) {', '.join(unknown)}{rule_note('keys')}")
    if "default" in vdef and not isinstance(vdef["default"], str):
        err(f"variables.{vname}: default must be a string, got {type(vdef['default']).__name__}"
            f"{rule_note('variables')}")
    for flag in ("required", "secret"):
        if flag in vdef and not isinstance(vdef[flag], bool):
            err(f"variables.{vname}: {flag} must be true or false{rule_note('variables')}")
    if "description" in vdef and not isinstance(vdef["description"], str):
        err(f"variables.{vname}: description must be a string{rule_note('variables')}")
    if "default" not in vdef and vdef.get("required") is not True:
        err(f"variables.{vname}: needs a default or required = true{rule_note('variables')}")
    if "default" in vdef and vdef.get("required") is True:
        err(f"variables.{vname}: a required variable cannot have a default{rule_note('variables')}")


def _variable_used(name: str, components: Mapping[str, Any], app_triggers: Mapping[str, Any]) -> bool:
    """Whether a component's variables or hosts, or an application trigger, reference ``name``."""
    return any(name in templates(str(v)) for c in components.values() if isinstance(c, dict)
               for v in (c.get("variables") or {}).values()) or any(
        name in templates(str(v)) for t in app_triggers.values() if isinstance(t, dict) for v in t.values()) or any(
        name in templates(str(h)) for c in components.values() if isinstance(c, dict)
        for h in (c.get("allowed_outbound_hosts") or []))


# --------------------------------------------------------------------------- triggers


def _check_app_triggers(app: Mapping[str, Any], checker: _Checker) -> dict[str, Any]:
    """Check every ``[application.trigger.<kind>]``; the ``application.trigger`` table (empty when
    it is not one)."""
    app_triggers = app.get("trigger", {}) if isinstance(app.get("trigger", {}), dict) else {}
    for tkind, tconf in app_triggers.items():
        if isinstance(tconf, dict):
            for k, v in tconf.items():
                checker.check_refs(f"application.trigger.{tkind}.{k}", v)
            _check_app_trigger(tkind, tconf, checker.err)
    return app_triggers


def _check_app_trigger(kind: str, conf: Mapping[str, Any], err: Err) -> None:
    """``[application.trigger.<kind>]``: the keys the trigger knows; the MQTT plugin needs all four."""
    allowed = APP_TRIGGER_KEYS.get(kind)
    if allowed is None:
        return  # a trigger ActiveDataFlow does not know: its plugin checks it
    rule = rule_note(TRIGGER_RULE[kind])
    unknown = unknown_keys(conf, allowed)
    if unknown:
        err(f"application.trigger.{kind}: unknown key(s) {', '.join(unknown)}{rule}")
    for key in sorted(allowed):
        value = conf.get(key)
        if kind == "mqtt" and key not in conf:
            err(f"application.trigger.mqtt: {key!r} is required (a string; \"\" for none){rule}")
        elif key in conf and not isinstance(value, str):
            err(f"application.trigger.{kind}.{key}: must be a string, got {type(value).__name__}{rule}")
    keep_alive = conf.get("keep_alive_interval")
    if kind == "mqtt" and isinstance(keep_alive, str) and not keep_alive.isdigit():
        err(f"application.trigger.mqtt.keep_alive_interval: {keep_alive!r} must be a whole number of seconds "
            f"(the plugin parses it without resolving variables){rule}")


def _check_triggers(doc: Mapping[str, Any], components: Mapping[str, Any], app_triggers: Mapping[str, Any],
                    checker: _Checker) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Check every ``[[trigger.<kind>]]`` entry; the entries that run each component, by component id."""
    triggers = doc.get("trigger")
    if not isinstance(triggers, dict) or not triggers:
        checker.err("no [[trigger.<kind>]] entries: nothing would run the components")
        triggers = {}
    served: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for tkind, entries in triggers.items():
        if not isinstance(entries, list):
            checker.err(f"trigger.{tkind} must be an array of tables ([[trigger.{tkind}]])")
            continue
        checker.report.triggers[tkind] = len(entries)
        if tkind not in TRIGGER_KINDS:
            checker.warn(f"trigger.{tkind}: not a trigger ActiveDataFlow builds components for (not checked)")
        for i, entry in enumerate(entries):
            _check_trigger(tkind, f"trigger.{tkind}[{i}]", entry, components, app_triggers, checker, served)
    return served


def _check_trigger(kind: str, where: str, entry: Any, components: Mapping[str, Any], app_triggers: Mapping[str, Any],
                   checker: _Checker, served: dict[str, list[tuple[str, dict[str, Any]]]]) -> None:
    """One ``[[trigger.<kind>]]`` entry: the component it runs, its references and its keys."""
    err = checker.err
    if not isinstance(entry, dict):
        err(f"{where}: must be a table")
        return
    comp = entry.get("component")
    if not isinstance(comp, str) or not comp:
        err(f"{where}: 'component' is required")
    elif comp not in components:
        err(f"{where}: component {comp!r} is not defined ([component.{comp}])")
    else:
        served.setdefault(comp, []).append((kind, entry))
    for k, v in entry.items():
        checker.check_refs(f"{where}.{k}", v)
    _check_trigger_entry(kind, where, entry, app_triggers, err)


def _check_trigger_entry(kind: str, where: str, entry: Mapping[str, Any], app_triggers: Mapping[str, Any],
                         err: Err) -> None:
    """The keys of a ``[[trigger.<kind>]]`` entry, then what its trigger (or plugin) requires."""
    allowed = TRIGGER_KEYS.get(kind)
    if allowed is not None:
        unknown = unknown_keys(entry, allowed)
        if unknown:
            err(f"{where}: unknown key(s) {', '.join(unknown)}{rule_note(TRIGGER_RULE[kind])}")
    check = _TRIGGER_CHECKS.get(kind)
    if check is not None:
        check(where, entry, app_triggers, err)


def _check_http_trigger(where: str, entry: Mapping[str, Any], app_triggers: Mapping[str, Any], err: Err) -> None:
    route = entry.get("route")
    if isinstance(route, dict):
        if route.get("private") is not True:
            err(f"{where}: a table route must be {{ private = true }}")
    elif not isinstance(route, str):
        err(f"{where}: 'route' is required (e.g. \"/flows/my_flow\"){rule_note('http')}")
    else:
        problem = http_route_problem(route)
        if problem:
            err(f"{where}: {problem}")


def _check_redis_trigger(where: str, entry: Mapping[str, Any], app_triggers: Mapping[str, Any], err: Err) -> None:
    channel = entry.get("channel")
    if not isinstance(channel, str) or not channel.strip():
        err(f"{where}: 'channel' must be a non-empty string{rule_note('redis')}")
    redis_app = app_triggers.get("redis") if isinstance(app_triggers.get("redis"), dict) else {}
    if not entry.get("address") and not (redis_app or {}).get("address"):
        err(f"{where}: no Redis address: set [application.trigger.redis] address (or 'address' here)"
            f"{rule_note('redis')}")


def _check_cron_trigger(where: str, entry: Mapping[str, Any], app_triggers: Mapping[str, Any], err: Err) -> None:
    expr = entry.get("cron_expression")
    if not isinstance(expr, str):
        err(f"{where}: 'cron_expression' is required (6 fields, e.g. \"{DEFAULT_CRON_EXPRESSION}\")"
            f"{rule_note('cron')}")
    else:
        problem = cron_expression_problem(expr)
        if problem:
            err(f"{where}: {problem}{rule_note('cron')}")


def _check_mqtt_trigger(where: str, entry: Mapping[str, Any], app_triggers: Mapping[str, Any], err: Err) -> None:
    rule = rule_note("mqtt")
    topic = entry.get("topic")
    if not isinstance(topic, str) or not topic.strip():
        err(f"{where}: 'topic' must be a non-empty string{rule}")
    elif "{{" not in topic:
        problem = mqtt_topic_problem(topic)
        if problem:
            err(f"{where}: {problem}")
    qos = entry.get("qos")
    if not isinstance(qos, str):
        err(f"{where}: qos must be a string \"0\", \"1\" or \"2\" (the plugin reads a string), got {qos!r}{rule}")
    elif qos not in ("0", "1", "2"):
        err(f"{where}: qos must be 0, 1 or 2, got {qos!r}{rule}")
    mqtt_app = app_triggers.get("mqtt") if isinstance(app_triggers.get("mqtt"), dict) else None
    if not mqtt_app or not mqtt_app.get("address"):
        err(f"{where}: [application.trigger.mqtt] address is required by the MQTT trigger{rule}")


#: What each trigger kind (or its plugin) requires of a ``[[trigger.<kind>]]`` entry.
_TRIGGER_CHECKS: dict[str, Callable[[str, Mapping[str, Any], Mapping[str, Any], Err], None]] = {
    "http": _check_http_trigger,
    "redis": _check_redis_trigger,
    "cron": _check_cron_trigger,
    "mqtt": _check_mqtt_trigger,
}
