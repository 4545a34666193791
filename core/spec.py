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

:func:`parse_spec` reports every problem of a spec at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.attributes import Attribute, validate_config
from core.errors import AdfError, ConfigError, SpecError
from core.registry import Registry, registry
from core.steps import step_id_problems

__all__ = ["RUNTIME_ATTRIBUTES", "SPEC_KEYS", "FlowSpec", "load_spec_file", "parse_spec", "spec_defaults"]


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _not_negative(v: Any) -> str | None:
    return None if v >= 0 else "must not be negative"


def _ratio(v: Any) -> str | None:
    return None if 0 <= v <= 1 else "must be between 0 and 1"


def _retry_policy(v: Any) -> str | None:
    from core.retry import RetryPolicy

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
              help="under Flink, unbounded sources: the checkpoint interval (default 10000)"),
)

SPEC_KEYS = (
    "name", "description", "source", "steps", "sink", "runtime", "dead_letter", "schema", "state", "config",
    "python_path", "context",
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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


def parse_spec(raw: Mapping[str, Any], *, reg: Registry | None = None, check_components: bool = True) -> FlowSpec:
    """Validate ``raw`` and return a :class:`FlowSpec`; :class:`SpecError` lists every problem.

    With ``check_components`` each connector and step is built once to check its config
    (and that step functions import).
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
        path = os.path.abspath(entry)
        if path not in sys.path:
            sys.path.append(path)
    for section, kind in (("source", "source"), ("sink", "sink")):
        if section not in raw:
            problems.append(f"'{section}' is required")
        elif check_components:
            problems.extend(_component_problems(kind, section, raw[section], reg))
    steps = raw.get("steps") or []
    if not isinstance(steps, list):
        problems.append(f"'steps' must be a list, got {type(steps).__name__}")
        steps = []
    else:
        problems.extend(step_id_problems(steps))
        if check_components:
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
    if runtime.get("type", "local") != "local" and check_components:
        try:
            reg.resolve("runtime", runtime["type"])
        except AdfError as exc:
            problems.append(f"runtime: {exc}")
    schema = raw.get("schema")
    if schema is not None:
        from core.records import Schema

        try:
            Schema.from_spec(schema)
        except ConfigError as exc:
            problems.extend(f"schema: {p}" for p in exc.problems)
    state = raw.get("state")
    if state is not None and not isinstance(state, str):
        problems.append("'state' must be a state store URL string")
    config = raw.get("config") or {}
    if not isinstance(config, Mapping):
        problems.append("'config' must be a mapping")
        config = {}
    context = raw.get("context") or {}
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
        config=dict(config),
        context=dict(context),
        raw=dict(raw),
    )


def spec_defaults(raw: Mapping[str, Any], reg: Registry | None = None) -> dict[str, Any]:
    """The defaults layer for config explanation: runtime defaults and connector attribute defaults."""
    from core.attributes import MISSING

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
