"""The declarative flow spec: loading (YAML or JSON) and validation.

Shape::

    name: orders_to_db
    source:  {type: file, path: data/orders/*.csv}
    steps:
      - {type: python, function: my_pkg.transforms:enrich}
    sink:    {type: sql, url: "sqlite:///out.db", table: orders, mode: upsert, key: id}
    runtime: {batch_size: 500, parallelism: 2}
    dead_letter: {type: file, path: rejected.jsonl}     # optional; default: the run's state dir
    schema:  {id: integer, amount: number}               # optional typed records
    state:   "sqlite:///.adf/state.db"                    # optional state store URL
    python_path: [/srv/flows/lib]                          # optional: where step modules import from
    params:                                              # optional: what a request may set
      vat: {type: number, default: 0.2}
      region: {type: string, choices: [eu, us], required: true}

:func:`parse_spec` reports every problem of a spec at once.

Parameters
----------
``params`` declares the values a run may be given from outside — by an HTTP request, a
Redis / MQTT / SQS message — and is the *only* thing such a request can set besides its
records (see :mod:`active_data_flow.handlers.invoke.params`). Each entry is ``name: {type, default, required,
choices, secret, help}`` or just ``name: <type>``; the types are :data:`PARAM_TYPES`
(``string``, ``integer``, ``number``, ``boolean``, ``list``, ``mapping``, ``json`` — anything).
Parameters are :class:`~active_data_flow.attributes.Attribute` values underneath: a class-form flow's
``configuration_attributes`` are its declared parameters. A run's values are, lowest first, the
declared ``default``, the entry of the same name in the spec's ``config`` section (the
operators' layers: ``ADF_<FLOW>__CONFIG__VAT``, a Spin variable, the key-value store), and the
values given to :func:`parse_spec` (a request's). Steps read them as ``${params.name}`` in
their options (resolved here, before the steps are built: :func:`active_data_flow.refs.resolve_params`);
the run context may copy them (``context: {tier: "${params.tier}"}``); ``${params.…}`` anywhere
else in a spec is an error. :attr:`FlowSpec.params` holds the values.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from active_data_flow.attributes import MISSING, Attribute, validate_config
from active_data_flow.errors import AdfError, ConfigError, SpecError
from active_data_flow.redact import REDACTED
from active_data_flow.refs import ReferenceError_, has_refs, param_refs, resolve_params
from active_data_flow.registry import Registry, add_import_path, registry
from active_data_flow.step import step_id_problems

__all__ = [
    "NAME_RE",
    "PARAM_KEYS",
    "PARAM_NAME_RE",
    "PARAM_TYPES",
    "RUNTIME_ATTRIBUTES",
    "SPEC_KEYS",
    "FlowSpec",
    "as_spec",
    "describe_params",
    "flow_secret_keys",
    "load_spec_file",
    "parse_params",
    "parse_spec",
    "spec_defaults",
]


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _not_negative(v: Any) -> str | None:
    return None if v >= 0 else "must not be negative"


def _schedule(v: Any) -> str | None:
    """A runtime ``schedule``: ``{cron: "0 6 * * 1-5", timezone: Europe/Berlin}`` (zone optional, UTC)."""
    from active_data_flow.cron import CronError, parse_cron

    unknown = sorted(str(k) for k in v if k not in ("cron", "timezone"))
    if unknown:
        return f"unknown key(s) {', '.join(unknown)} (allowed: cron, timezone)"
    if not isinstance(v.get("cron"), str):
        return "needs cron: an expression such as '0 6 * * 1-5' (and optionally timezone: Europe/Berlin)"
    try:
        parse_cron(v["cron"], v.get("timezone") or "UTC")
    except CronError as exc:
        return str(exc)
    return None


def _ratio(v: Any) -> str | None:
    return None if 0 <= v <= 1 else "must be between 0 and 1"


def _retry_policy(v: Any) -> str | None:
    from active_data_flow.retry import RetryPolicy

    try:
        RetryPolicy.from_config(v, "sink_retry")
    except ConfigError as exc:
        return "; ".join(exc.problems)
    return None


RUNTIME_ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("type", str, default="local", help="runtime that runs the flow"),
    Attribute("batch_size", int, default=500, check=_positive, help="records per batch (and per checkpoint)"),
    Attribute("parallelism", int, default=1, check=_positive, help="parallel readers (processes)"),
    Attribute("interval_seconds", int, check=_positive, help="how often a scheduler runs the flow"),
    Attribute("schedule", dict, check=_schedule,
              help="a calendar for schedulers instead of interval_seconds: "
                   "{cron: '0 6 * * 1-5', timezone: Europe/Berlin} (active_data_flow.cron)"),
    Attribute("checkpoint", bool, default=True, help="checkpoint after every batch and resume after a crash"),
    Attribute("checkpoint_fsync", bool, default=False, help="fsync checkpoints (survive power loss, slower)"),
    Attribute("retries", int, default=3, check=_not_negative,
              help="retries of a batch the sink failed for an unknown reason, before its records are tried alone"),
    Attribute("retry_backoff_s", float, default=0.1, check=_not_negative, help="first such retry delay, doubled each time"),
    Attribute("sink_retry", dict, default={}, check=_retry_policy,
              help="how long an unreachable sink is retried before the run fails: "
                   "{window_s: 60, first_delay_s: 0.5, max_delay_s: 10}"),
    Attribute("sink_error_policy", str, default="dead_letter", choices=("dead_letter", "fail"),
              help="what a record the sink refuses for its content does: go to the dead letters, or fail the run"),
    Attribute("max_dead_letters", int, check=_not_negative, help="fail the run when more records are dead-lettered"),
    Attribute("max_dead_letter_ratio", float, check=_ratio,
              help="fail a run whose dead letters are more than this share of the records read, e.g. 0.05 "
                   "(default: no limit; a run that rejects every record fails regardless)"),
    Attribute("max_reader_restarts", int, default=3, check=_not_negative, help="restarts of a crashed reader"),
    Attribute("idle_sleep_s", float, default=0.2, check=_positive, help="unbounded sources: wait when idle"),
    Attribute("discovery_interval_s", float, default=5.0, check=_positive, help="unbounded: look for new splits"),
    Attribute("stop_after_s", float, check=_positive, help="unbounded sources: stop after this many seconds"),
    Attribute("state_dir", str, help="checkpoints and dead letters (default $ADF_STATE_DIR or ./.adf)"),
    Attribute("checkpoint_interval_ms", int, check=_positive,
              help="under Flink: the checkpoint interval (default 2000 for bounded sources, 10000 for unbounded)"),
    Attribute("flink_report_dir", str,
              help="under Flink: a directory the TaskManagers and the client share, where a detached bounded job "
                   "commits each split's counts (`adf flink package` sets it to the first --shared directory's "
                   ".adf-flink-runs)"),
    Attribute("flink_split_bytes", int, check=_positive,
              help="under Flink: the byte ranges a file source without split_bytes is cut into (default 4 MiB)"),
)

SPEC_KEYS = (
    "name", "description", "source", "steps", "sink", "runtime", "dead_letter", "schema", "state", "config",
    "python_path", "context", "params",
)
#: what a flow's ``name`` may be
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_NAME_RE = NAME_RE

#: the type names of a declared parameter → the :class:`~active_data_flow.attributes.Attribute` type
PARAM_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "list": list,
    "mapping": dict,
    "json": object,
}
#: what a declared parameter's name may be, and the keys of its declaration
PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PARAM_KEYS = ("type", "default", "required", "choices", "secret", "help")
_PARAM_NAME_RE = PARAM_NAME_RE
_PARAM_KEYS = PARAM_KEYS
#: sections where ``${params.x}`` is resolved; anywhere else it is refused
_PARAM_SECTIONS = ("steps", "context")


@dataclass
class FlowSpec:
    """A validated flow spec (plain data; ``raw`` is the spec as given)."""

    name: str
    source: dict[str, Any]
    sink: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)
    runtime: dict[str, Any] = field(default_factory=dict)
    dead_letter: dict[str, Any] | None = None
    schema: Any = None
    state: str | None = None
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    #: the run context's initial values (steps read them as ``${context.x}`` and may set more)
    context: dict[str, Any] = field(default_factory=dict)
    #: the parameters the flow declares (``params:``; a class-form flow's ``configuration_attributes``)
    param_attributes: tuple[Attribute, ...] = ()
    #: this run's parameter values (declared default < ``config.<name>`` < the values given);
    #: ``steps`` and ``context`` already have them in place of their ``${params.x}`` references
    params: dict[str, Any] = field(default_factory=dict)
    #: the spec as given (``${params.x}`` unresolved: parse it again with ``params=spec.params``)
    raw: dict[str, Any] = field(default_factory=dict)
    #: the DataFlow subclass for the class form (None for a declarative spec)
    flow_class: Any = None
    #: where the spec came from (a spec file's path, ``class module:Name``…), when known
    origin: str = ""

    def fingerprint(self) -> str:
        """Identifies the flow a checkpoint belongs to: one hash of every section in
        :meth:`fingerprint_sections` (a checkpoint resumes only the same flow)."""
        data = json.dumps(self.fingerprint_sections(), sort_keys=True)
        return hashlib.sha256(data.encode()).hexdigest()[:16]

    def fingerprint_sections(self) -> dict[str, str]:
        """A short hash per part of the flow that decides what a run writes: ``source`` (with
        the flow's name), ``steps`` (with the flow class, ``config`` and ``context``), ``schema``
        and ``sink``. Runtime settings (parallelism, batch size…) are not part of it."""
        flow_class = None
        if self.flow_class is not None:
            flow_class = f"{getattr(self.flow_class, '__module__', '')}:{getattr(self.flow_class, '__qualname__', '')}"
        parts = {
            "source": {"name": self.name, "source": _with_defaults("source", self.source)},
            "steps": {"steps": [_with_defaults("step", s) for s in self.steps], "flow_class": flow_class,
                      "config": self.config, "context": self.context},
            "schema": self.schema,
            "sink": _with_defaults("sink", self.sink),
        }
        return {
            key: hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
            for key, value in parts.items()
        }

    def legacy_fingerprint(self) -> str:
        """The fingerprint of checkpoints written before sections were recorded (name and source only)."""
        data = json.dumps({"name": self.name, "source": self.source}, sort_keys=True, default=str)
        return hashlib.sha256(data.encode()).hexdigest()[:16]

    def secret_keys(self, reg: Registry | None = None) -> set[str]:
        """Dotted paths of the secret attributes of the chosen connectors (for redaction)."""
        reg = reg or registry
        out: set[str] = set()
        for section, kind in (("source", "source"), ("sink", "sink"), ("dead_letter", "sink")):
            spec = getattr(self, section)
            if not spec:
                continue
            try:
                cls = reg.resolve(kind, spec.get("type", ""))
            except AdfError:
                continue
            out.update(f"{section}.{k}" for k in cls.secret_keys())
        for attr in self.param_attributes:
            if attr.secret:  # where an operator may write its value, or its default
                out.update((f"config.{attr.name}", f"params.{attr.name}.default", f"params.{attr.name}.choices"))
        return out


def _with_defaults(kind: str, section: Mapping[str, Any]) -> dict[str, Any]:
    """``section`` with its component's defaults filled in, so that a value left out and the same
    value written out give the same fingerprint (the CLI's loader fills defaults, ``run_flow``
    with a mapping does not)."""
    type_name = section.get("type", "python" if kind == "step" else "")
    try:
        cls = registry.resolve(kind, type_name)
        own = {k: v for k, v in section.items() if k not in ("type", "id", "next")}
        filled = validate_config(getattr(cls, "attributes", ()), own, kind, allow_extra=())
    except Exception:
        return dict(section)
    return {**{k: v for k, v in section.items() if k in ("type", "id", "next")}, **filled, "type": type_name}


def load_spec_file(path: str) -> dict[str, Any]:
    """Read a spec file (``.yaml``/``.yml`` need PyYAML; ``.json`` uses the standard library)."""
    if not os.path.exists(path):
        raise SpecError([f"spec file {path!r} does not exist"], where=path)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError as exc:
            raise SpecError([f"reading YAML needs PyYAML (pip install PyYAML), or give the spec as JSON: {exc}"]) from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError([f"invalid YAML: {exc}"], where=path) from exc
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError([f"invalid JSON: {exc}"], where=path) from exc
    if not isinstance(data, dict):
        raise SpecError([f"a spec must be a mapping, got {type(data).__name__}"], where=path)
    return data


def _param_attribute(name: Any, decl: Any) -> tuple[Attribute | None, list[str]]:  # noqa: C901
    where = f"params.{name}"
    if not isinstance(name, str) or not _PARAM_NAME_RE.match(name):
        return None, [f"params: {name!r} is not a parameter name (letters, digits and '_', not first a digit)"]
    if isinstance(decl, str):
        decl = {"type": decl}
    elif decl is None:
        decl = {}
    if not isinstance(decl, Mapping):
        return None, [f"{where}: must be a type name or a mapping {{{', '.join(_PARAM_KEYS)}}}"]
    problems = [f"{where}: unknown key {k!r} (accepted: {', '.join(_PARAM_KEYS)})" for k in decl if k not in _PARAM_KEYS]
    type_name = decl.get("type", "string")
    if type_name not in PARAM_TYPES:
        problems.append(f"{where}: unknown type {type_name!r} (one of: {', '.join(PARAM_TYPES)})")
        return None, problems
    probe = Attribute(name, PARAM_TYPES[type_name])
    for flag in ("required", "secret"):
        if not isinstance(decl.get(flag, False), bool):
            problems.append(f"{where}: {flag!r} must be true or false")
    if not isinstance(decl.get("help", ""), str):
        problems.append(f"{where}: 'help' must be a string")
    choices: tuple[Any, ...] | None = None
    if decl.get("choices") is not None:
        if not isinstance(decl["choices"], list) or not decl["choices"]:
            problems.append(f"{where}: 'choices' must be a non-empty list")
        else:
            try:
                choices = tuple(probe.coerce(c) for c in decl["choices"])
            except ValueError as exc:
                problems.append(f"{where}: a choice: {exc}")
    default = MISSING
    if decl.get("default") is not None:
        try:
            default = probe.coerce(decl["default"])
        except ValueError as exc:
            problems.append(f"{where}: the default: {exc}")
        else:
            if choices is not None and default not in choices:
                problems.append(f"{where}: the default {default!r} is not one of the choices")
    if decl.get("required") is True and default is not MISSING:
        problems.append(f"{where}: a required parameter has no default (drop one of them)")
    if problems:
        return None, problems
    return Attribute(name, probe.type, required=bool(decl.get("required", False)), default=default,
                     secret=bool(decl.get("secret", False)), help=str(decl.get("help") or ""), choices=choices), []


def parse_params(section: Any) -> tuple[tuple[Attribute, ...], list[str]]:
    """The parameters a spec's ``params`` section declares, and every problem with it.

    ``{"vat": {"type": "number", "default": 0.2}, "region": "string"}`` → two
    :class:`~active_data_flow.attributes.Attribute` values (see the module doc for the keys and types).
    """
    if section is None:
        return (), []
    if not isinstance(section, Mapping):
        return (), [f"'params' must be a mapping of parameter name → declaration, got {type(section).__name__}"]
    attributes: list[Attribute] = []
    problems: list[str] = []
    for name, decl in section.items():
        attr, found = _param_attribute(name, decl)
        problems.extend(found)
        if attr is not None:
            attributes.append(attr)
    return tuple(attributes), problems


def describe_params(attributes: tuple[Attribute, ...] | list[Attribute]) -> list[dict[str, Any]]:
    """The declared parameters as JSON-friendly rows (``name``, ``type``, ``required``,
    ``default``, ``choices``, ``secret``, ``help``); a secret parameter's default and choices
    are redacted. This is what an answer refusing a request lists."""
    rows = []
    for a in attributes:
        row: dict[str, Any] = {"name": a.name, "type": _param_type_name(a), "required": a.required}
        if a.default is not MISSING:
            row["default"] = REDACTED if a.secret else a.default
        if a.choices:
            row["choices"] = REDACTED if a.secret else list(a.choices)
        if a.secret:
            row["secret"] = True
        if a.help:
            row["help"] = a.help
        rows.append(row)
    return rows


def _param_type_name(attr: Attribute) -> str:
    types = attr.type if isinstance(attr.type, tuple) else (attr.type,)
    names = {v: k for k, v in PARAM_TYPES.items()}
    return " or ".join(names.get(t, getattr(t, "__name__", str(t))) for t in types)


def _param_values(
    declared: tuple[Attribute, ...], config: Mapping[str, Any], given: Mapping[str, Any] | None
) -> tuple[dict[str, Any], list[str]]:
    values = {a.name: config[a.name] for a in declared if a.name in config}
    values.update(given or {})
    try:
        return validate_config(declared, values, "params", allow_extra=()), []
    except ConfigError as exc:
        return {}, [f"params: {p}" for p in exc.problems]


def _with_params(
    section: str, value: Any, values: Mapping[str, Any], declared: tuple[Attribute, ...]
) -> tuple[Any, list[str]]:
    if not has_refs(value):
        return value, []
    try:
        return resolve_params(value, values), []
    except ReferenceError_ as exc:
        return value, [f"{section}: {exc} (declared: {', '.join(a.name for a in declared) or 'none'})"]


def _misplaced_param_refs(raw: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, value in raw.items():
        if key in _PARAM_SECTIONS or key == "params":
            continue
        refs = param_refs(value)
        if refs:
            problems.append(
                f"{key}: ${{{refs[0]}}} — parameters are resolved in step options and the context only; "
                "the source, sink, dead letters, runtime and state are never set from a request"
            )
    return problems


def _component_problems(kind: str, section: str, spec: Any, reg: Registry) -> list[str]:
    if not isinstance(spec, Mapping):
        return [f"{section}: must be a mapping with a 'type', got {type(spec).__name__}"]
    type_name = spec.get("type", "python" if kind == "step" else None)
    if not type_name:
        return [f"{section}: 'type' is required (one of: {', '.join(reg.names(kind))})"]
    try:
        cls = reg.resolve(kind, type_name)
    except AdfError as exc:
        return [f"{section}: {exc}"]
    try:
        cls({k: v for k, v in spec.items() if k not in ("type", "id", "next")} if kind == "step" else
            {k: v for k, v in spec.items() if k != "type"})
    except ConfigError as exc:
        return [f"{section}: {p}" for p in exc.problems]
    except Exception as exc:
        return [f"{section}: {type(exc).__name__}: {exc}"]
    return []


def parse_spec(  # noqa: C901
    raw: Mapping[str, Any],
    *,
    reg: Registry | None = None,
    check_components: bool = True,
    params: Mapping[str, Any] | None = None,
    flow_class: Any = None,
) -> FlowSpec:
    """Validate ``raw`` and return a :class:`FlowSpec`; :class:`SpecError` lists every problem.

    With ``check_components`` each connector and step is built once to check its config
    (and that step functions import). ``params``: the values given for the flow's declared
    parameters (a request's; checked against the declarations like any configuration: an
    undeclared name, a wrong type, a value outside ``choices``, a missing required one are
    problems); ``${params.x}`` in ``steps`` and ``context`` is replaced by the values before
    the steps are checked. ``flow_class``: a :class:`~active_data_flow.flow.DataFlow` subclass, whose
    ``configuration_attributes`` are declared parameters too (its ``config`` is their values).
    """
    reg = reg or registry
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        raise SpecError([f"a spec must be a mapping, got {type(raw).__name__}"])
    for key in raw:
        if key not in SPEC_KEYS:
            problems.append(f"unknown key {key!r} (accepted: {', '.join(SPEC_KEYS)})")
    name = raw.get("name")
    if not name or not isinstance(name, str):
        problems.append("'name' is required (letters, digits, '_', '-', '.')")
    elif not _NAME_RE.match(name):
        problems.append(f"'name' {name!r} may contain only letters, digits, '_', '-' and '.'")
    python_path = raw.get("python_path") or []
    if not isinstance(python_path, list) or not all(isinstance(p, str) for p in python_path):
        problems.append("'python_path' must be a list of directories")
        python_path = []
    for entry in python_path:
        # Step modules of a stored flow (heartbeat, Lambda…) import from here, as they did
        # next to the spec file.
        add_import_path(os.path.abspath(entry))
    for section, kind in (("source", "source"), ("sink", "sink")):
        if section not in raw:
            problems.append(f"'{section}' is required")
        elif check_components:
            problems.extend(_component_problems(kind, section, raw[section], reg))
    declared, param_problems = parse_params(raw.get("params"))
    problems.extend(param_problems)
    if flow_class is not None:
        own = tuple(getattr(flow_class, "configuration_attributes", ()) or ())
        clash = sorted({a.name for a in own} & {a.name for a in declared})
        problems.extend(f"params: {n!r} is declared by the spec and by the flow class" for n in clash)
        declared = own + declared
    config = raw.get("config") or {}
    if not isinstance(config, Mapping):
        problems.append("'config' must be a mapping")
        config = {}
    param_values, value_problems = _param_values(declared, config, params)
    problems.extend(value_problems)
    problems.extend(_misplaced_param_refs(raw))
    steps = raw.get("steps") or []
    context = raw.get("context") or {}
    if not value_problems:
        steps, found = _with_params("steps", steps, param_values, declared)
        problems.extend(found)
        context, found = _with_params("context", context, param_values, declared)
        problems.extend(found)
    if not isinstance(steps, list):
        problems.append(f"'steps' must be a list, got {type(steps).__name__}")
        steps = []
    else:
        problems.extend(step_id_problems(steps))
        # with a bad parameter value the steps still hold ${params.x}: checked once it is right
        if check_components and not value_problems:
            for i, step in enumerate(steps):
                problems.extend(_component_problems("step", f"steps[{i}]", step, reg))
    dead_letter = raw.get("dead_letter")
    if dead_letter is not None and check_components:
        problems.extend(_component_problems("sink", "dead_letter", dead_letter, reg))
    runtime: dict[str, Any] = {}
    try:
        runtime = validate_config(RUNTIME_ATTRIBUTES, raw.get("runtime") or {}, "runtime", allow_extra=())
    except ConfigError as exc:
        problems.extend(f"runtime: {p}" for p in exc.problems)
    if runtime.get("interval_seconds") and runtime.get("schedule"):
        problems.append("runtime: interval_seconds and schedule both say when a scheduler runs the flow; keep one")
    if runtime.get("type", "local") != "local" and check_components:
        try:
            reg.resolve("runtime", runtime["type"])
        except AdfError as exc:
            problems.append(f"runtime: {exc}")
    schema = raw.get("schema")
    if schema is not None:
        from active_data_flow.record import Schema

        try:
            Schema.from_spec(schema)
        except ConfigError as exc:
            problems.extend(f"schema: {p}" for p in exc.problems)
    state = raw.get("state")
    if state is not None and not isinstance(state, str):
        problems.append("'state' must be a state store URL string")
    if not isinstance(context, Mapping):
        problems.append("'context' must be a mapping (the run context's initial values)")
        context = {}
    if problems:
        raise SpecError(problems, where=f"flow {name!r}" if isinstance(name, str) and name else "flow spec")
    assert isinstance(name, str)
    return FlowSpec(
        name=name,
        description=str(raw.get("description") or ""),
        source=dict(raw["source"]),
        sink=dict(raw["sink"]),
        steps=[dict(s) for s in steps],
        runtime=runtime,
        dead_letter=dict(dead_letter) if dead_letter else None,
        schema=schema,
        state=state,
        # a class-form flow's config is its parameters' values (its ``self.config``)
        config={**config, **param_values} if flow_class is not None else dict(config),
        context=dict(context),
        param_attributes=declared,
        params=param_values,
        raw=dict(raw),
        flow_class=flow_class,
    )


def spec_defaults(raw: Mapping[str, Any], reg: Registry | None = None) -> dict[str, Any]:
    """The defaults layer for config explanation: runtime defaults and connector attribute defaults."""
    from active_data_flow.attributes import MISSING

    reg = reg or registry
    out: dict[str, Any] = {"runtime": {a.name: a.default for a in RUNTIME_ATTRIBUTES if a.default is not MISSING}}
    for section, kind in (("source", "source"), ("sink", "sink")):
        spec = raw.get(section)
        if not isinstance(spec, Mapping):
            continue
        try:
            cls = reg.resolve(kind, spec.get("type", ""))
        except AdfError:
            continue
        out[section] = {a.name: a.default for a in cls.attributes if a.default is not MISSING}
    return out


def as_spec(flow: Any, reg: Registry | None = None) -> FlowSpec:
    """A :class:`FlowSpec` from a spec, a mapping, or a class-form flow — a
    :class:`~active_data_flow.flow.DataFlow` subclass or instance, known by its ``spec`` and ``to_spec_dict``."""
    if isinstance(flow, FlowSpec):
        return flow
    if isinstance(flow, Mapping):
        return parse_spec(flow, reg=reg)
    cls: Any = flow if isinstance(flow, type) else type(flow)
    if callable(getattr(cls, "spec", None)) and callable(getattr(cls, "to_spec_dict", None)):
        if flow is cls:
            return cls.spec(reg=reg)  # type: ignore[no-any-return]
        config = getattr(flow, "config", None)
        return cls.spec({"config": config} if config else None, reg=reg)  # type: ignore[no-any-return]
    raise SpecError([f"cannot run {type(flow).__name__}: give a spec mapping, a FlowSpec or a DataFlow subclass"])


def flow_secret_keys(configuration: Any) -> set[str]:
    """Dotted paths of the secret attributes (``Attribute(..., secret=True)``) of the source,
    sink, dead-letter sink and steps a flow configuration names (``sink.url``,
    ``steps.2.headers``); types that are not installed contribute none. Secret key *names*
    (``password``, ``token``…) and URL credentials are hidden by :func:`mask` anyway."""
    if not isinstance(configuration, Mapping):
        return set()

    def section(key: str) -> dict[str, Any]:
        value = configuration.get(key)
        return dict(value) if isinstance(value, Mapping) and isinstance(value.get("type"), str) else {}

    spec = FlowSpec(name="", source=section("source"), sink=section("sink"), dead_letter=section("dead_letter"))
    keys = spec.secret_keys()
    steps = configuration.get("steps")
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        if not isinstance(step, Mapping):
            continue
        try:
            cls = registry.resolve("step", str(step.get("type") or "python"))
            keys.update(f"steps.{i}.{k}" for k in cls.secret_keys())
        except Exception:  # an unknown or unloadable step type declares nothing here
            continue
    return keys
