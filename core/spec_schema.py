"""A JSON Schema (draft 2020-12) of the declarative flow spec, made from the declarations.

:func:`flow_schema` builds it from what the spec loader itself checks against: the top-level
keys (:data:`~active_data_flow.spec.SPEC_KEYS`), the runtime's attributes, the ``params`` and
record ``schema`` forms, and the declared :class:`~active_data_flow.attributes.Attribute` values
of every source, sink and step type a registry knows — plug-ins found through their entry
points included. ``adf schema`` prints it (:func:`dump_schema`: sorted keys, so a committed
copy diffs cleanly); editors use it through a ``# yaml-language-server: $schema=…`` line.

The schema is never stricter than ``adf validate``: a value the loader coerces (``"500"`` for
an integer, ``"yes"`` for a boolean) is accepted, ``null`` counts as "not given" like in the
loader, step options may be ``${params.name}`` references (resolved before the steps are
checked), and a *secret* attribute is never required — its value may come from the
environment (``ADF_<FLOW>__SINK__URL``) or the key-value store instead of the file. It rejects
what the loader rejects by shape: unknown keys (every component refuses them), unknown types,
wrong value types, missing required keys. Checks that need code (a step's function imports,
attributes that depend on each other) stay with ``adf validate``.

:func:`check_spec` validates a spec mapping with it (python-jsonschema, the ``web`` extra) and
returns :class:`SchemaProblem` values: a JSON path (``$.source.pth``) and a message.

Example::

    >>> from active_data_flow.spec_schema import check_spec
    >>> [str(p) for p in check_spec({"name": "x", "source": {"type": "memory", "records": []},
    ...                              "sink": {"type": "stdout", "fromat": "csv"}})]
    ["$.sink.fromat: unknown key 'fromat'; did you mean 'format'? (accepted keys: columns, delimiter, format, header, type)"]
"""

from __future__ import annotations

import difflib
import json
import re
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import quote

from active_data_flow.attributes import MISSING, Attribute, at_least_one, not_negative, one_character
from active_data_flow.errors import AdfError, MissingExtraError
from active_data_flow.record import FIELD_TYPE_ALIASES, FIELD_TYPES, ExtraPolicy, Field
from active_data_flow.registry import Registry, registry
from active_data_flow.spec import (
    NAME_RE,
    PARAM_KEYS,
    PARAM_NAME_RE,
    PARAM_TYPES,
    RUNTIME_ATTRIBUTES,
    SPEC_KEYS,
)

__all__ = [
    "DIALECT",
    "PARAMS_REF_PATTERN",
    "SCHEMA_ID",
    "SchemaProblem",
    "attribute_schema",
    "check_configuration",
    "check_spec",
    "dump_schema",
    "flow_schema",
    "write_schema",
]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: the ``$id`` of the schema ``adf schema`` prints (a name, not a download location)
SCHEMA_ID = "urn:active-data-flow:flow-spec"

#: a whole-string ``${params.name}`` reference: step options take the parameter's typed value
PARAMS_REF_PATTERN = r"^\$\{params\.[A-Za-z0-9_.\-]+\}$"
# Strings the loader coerces (Attribute.coerce): int(), float(), and the boolean words.
_INT_TEXT = r"^\s*[+-]?\d+(_\d+)*\s*$"
_FLOAT_TEXT = (
    r"^\s*[+-]?(\d+(_\d+)*(\.(\d+(_\d+)*)?)?|\.\d+(_\d+)*)([eE][+-]?\d+(_\d+)*)?\s*$"
    r"|^\s*[+-]?([iI][nN][fF]([iI][nN][iI][tT][yY])?|[nN][aA][nN])\s*$"
)
_BOOL_TEXT = r"^([tT][rR][uU][eE]|[fF][aA][lL][sS][eE]|[yY][eE][sS]|[nN][oO]|1|0)$"

_JSON_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
}
_TEXT_FORMS: dict[Any, str] = {int: _INT_TEXT, float: _FLOAT_TEXT, bool: _BOOL_TEXT}
_OWN_STEP_KEYS = ("type", "id", "next")


# --------------------------------------------------------------------------- attributes


def _case_insensitive(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _check_keywords(attr: Attribute) -> dict[str, Any]:
    """Keywords for the shared checks of :mod:`active_data_flow.attributes` (others stay with the loader)."""
    if attr.check is at_least_one:
        return {"minimum": 1}
    if attr.check is not_negative:
        return {"minimum": 0}
    if attr.check is one_character:
        return {"minLength": 1, "maxLength": 1}
    return {}


def _value_schema(attr: Attribute, *, params_refs: bool) -> dict[str, Any]:
    """What a value of ``attr`` may be: its JSON types, the strings the loader coerces into
    them, ``null`` when optional, ``${params.x}`` in step options."""
    types = attr.type if isinstance(attr.type, tuple) else (attr.type,)
    if object in types or any(t not in _JSON_TYPES for t in types):
        return {}
    optional = not attr.required or attr.secret  # a secret may be given by the environment instead
    typed: dict[str, Any]
    if attr.choices is not None and _jsonable(list(attr.choices)):
        typed = {"enum": [*attr.choices, *([None] if optional else [])]}
    else:
        names = [_JSON_TYPES[t] for t in types] + (["null"] if optional else [])
        typed = {"type": names[0] if len(names) == 1 else names, **_check_keywords(attr)}
    texts = [] if str in types else [_TEXT_FORMS[t] for t in types if t in _TEXT_FORMS]
    if params_refs and (str not in types or "enum" in typed or "maxLength" in typed):
        texts.append(PARAMS_REF_PATTERN)
    if not texts:
        return typed
    return {"anyOf": [typed, *({"type": "string", "pattern": p} for p in dict.fromkeys(texts))]}


def attribute_schema(attr: Attribute, *, params_refs: bool = False) -> dict[str, Any]:
    """The JSON Schema of one declared attribute (``params_refs``: it is a step option)."""
    out = _value_schema(attr, params_refs=params_refs)
    text = attr.help or ""
    if attr.secret:
        out["writeOnly"] = True
        text = (text + " " if text else "") + (
            "(secret: redacted in logs and run records; may be left out here and given by the environment, "
            "ADF_<FLOW>__<SECTION>__<KEY>, or the key-value store)"
        )
    if text:
        out["description"] = text
    if attr.default is not MISSING and attr.default is not None and _jsonable(attr.default):
        out["default"] = attr.default
    return out


# --------------------------------------------------------------------------- components


def _ref(name: str) -> str:
    return "#/$defs/" + quote(name.replace("~", "~0").replace("/", "~1"), safe="")


def _summary(cls: Any) -> str:
    doc = (getattr(cls, "__doc__", None) or "").strip().splitlines()
    return doc[0].strip() if doc else ""


def _component_schema(kind: str, name: str, cls: Any) -> dict[str, Any]:
    attributes: Sequence[Attribute] = tuple(getattr(cls, "attributes", ()) or ())
    is_step = kind == "step"
    props: dict[str, Any] = {"type": {"const": name}}
    props.update({a.name: attribute_schema(a, params_refs=is_step) for a in attributes})
    if is_step:
        props["id"] = {
            "type": "string",
            "pattern": r"\S",
            "description": "the step's id (for `next`); default steps[<index>]",
        }
        props["next"] = {
            "type": ["array", "null"],
            "items": {"type": "string"},
            "description": "ids of later steps this step's records go to ([] ends their path)",
        }
    out: dict[str, Any] = {"title": f"{kind} {name}", "properties": props, "additionalProperties": False}
    required = [a.name for a in attributes if a.required and not a.secret]
    if required:
        out["required"] = required
    if _summary(cls):
        out["description"] = _summary(cls)
    return out


def _names(reg: Registry, kind: str, no_plugins: bool) -> list[str]:
    """The type names of ``kind``; ``no_plugins``: without those of entry points (other distributions)."""
    return [n for n in reg.names(kind) if not (no_plugins and reg.origin(kind, n).startswith("entry point"))]


def _kind_schemas(kind: str, reg: Registry, no_plugins: bool) -> dict[str, Any]:
    """``$defs`` entries for every type of ``kind``: one per type and the union, discriminated
    by ``type`` (``if``/``then``: an error names the keys of the type given, not of every type)."""
    defs: dict[str, Any] = {}
    names = _names(reg, kind, no_plugins)
    branches = []
    for name in names:
        key = f"{kind}.{name}"
        try:
            defs[key] = _component_schema(kind, name, reg.resolve(kind, name))
        except AdfError as exc:  # a type whose extra is missing: known, its keys unchecked here
            defs[key] = {"title": f"{kind} {name}", "description": f"not usable in this installation: {exc}"}
        condition: dict[str, Any] = {"properties": {"type": {"const": name}}}
        if not (kind == "step" and name == "python"):  # a step without a type is a python step
            condition["required"] = ["type"]
        branches.append({"if": condition, "then": {"$ref": _ref(key)}})
    union: dict[str, Any] = {
        "properties": {"type": {"title": f"{kind} type", "enum": names}},
        "allOf": branches,
    }
    if kind != "step":
        union["required"] = ["type"]
    defs[kind] = union
    return defs


# --------------------------------------------------------------------------- sections


def _runtime_schema(reg: Registry, no_plugins: bool) -> dict[str, Any]:
    props = {a.name: attribute_schema(a) for a in RUNTIME_ATTRIBUTES}
    names = _names(reg, "runtime", no_plugins)
    if "type" in props:
        runtimes: list[Any] = sorted({"local", *names}, key=lambda n: (n != "local", n))
        props["type"] = {**props["type"], "enum": [*runtimes, None], "title": "runtime type"}
        props["type"].pop("type", None)
    return {
        "type": ["object", "null"],
        "properties": props,
        "additionalProperties": False,
        "description": "how the flow runs: batch size, parallelism, retries, dead-letter limits",
    }


def _params_schema() -> dict[str, Any]:
    type_names = list(PARAM_TYPES)
    keys: dict[str, Any] = {
        "type": {"enum": type_names, "default": "string"},
        "default": {"description": "the value when none is given (must be one of choices)"},
        "required": {"type": "boolean", "default": False},
        "choices": {"type": ["array", "null"], "minItems": 1},
        "secret": {"type": "boolean", "default": False},
        "help": {"type": "string"},
    }
    declaration = {
        "type": ["string", "object", "null"],
        "if": {"type": "string"},
        "then": {"enum": type_names},
        "else": {"properties": {k: keys.get(k, {}) for k in PARAM_KEYS}, "additionalProperties": False},
    }
    return {
        "type": ["object", "null"],
        "propertyNames": {"pattern": PARAM_NAME_RE.pattern, "title": "parameter name"},
        "additionalProperties": declaration,
        "description": "what a request may set: name -> a type name or {type, default, required, choices, secret, help}; "
        "steps and the context read them as ${params.name}",
    }


def _record_schema_schema() -> dict[str, Any]:
    names = [*FIELD_TYPES, *FIELD_TYPE_ALIASES]
    type_name = {
        "type": "string",
        "pattern": "^(" + "|".join(_case_insensitive(n) for n in names) + ")$",
        "title": "field type",
        "examples": list(FIELD_TYPES),
    }
    flags: dict[str, Any] = {
        f.name: ({"type": "boolean"} if f.type in ("bool", bool) else {}) for f in fields(Field)
    }
    flags["type"] = type_name
    declared = {
        "properties": {k: v for k, v in flags.items() if k != "name"},
        "required": ["type"],
        "additionalProperties": False,
    }
    named = {
        "type": "object",
        "properties": {**flags, "name": {"type": "string", "minLength": 1}},
        "required": ["name", "type"],
        "additionalProperties": False,
    }
    in_mapping = {"type": ["string", "object"], "if": {"type": "string"}, "then": type_name, "else": declared}
    return {
        "type": ["array", "object", "null"],
        "description": "typed records: {field: type} or [{name, type, required, default, nullable}] or "
        "{fields: [...], extra: allow|forbid|drop}",
        "if": {"type": "array"},
        "then": {"items": named},
        "else": {
            "if": {"properties": {"fields": {"type": "array"}}, "required": ["fields"]},
            "then": {
                "properties": {
                    "fields": {"items": named},
                    "extra": {"enum": list(typing.get_args(ExtraPolicy))},
                },
                "additionalProperties": False,
            },
            "else": {"propertyNames": {"minLength": 1}, "additionalProperties": in_mapping},
        },
    }


_SECTIONS: dict[str, Any] = {
    "name": {
        "type": "string",
        "pattern": NAME_RE.pattern,
        "title": "flow name",
        "description": "the flow's name: letters, digits, '_', '-', '.' (checkpoints and runs are kept under it)",
    },
    "description": {"description": "what the flow does (text)"},
    "source": {"type": "object", "$ref": _ref("source"), "description": "where records come from"},
    "sink": {"type": "object", "$ref": _ref("sink"), "description": "where records go"},
    "dead_letter": {
        "type": ["object", "null"],
        "$ref": _ref("sink"),
        "description": "a sink for refused records (default: the run's state directory)",
    },
    "steps": {
        "type": ["array", "null"],
        "items": {"type": "object", "$ref": _ref("step")},
        "description": "what happens to each record, in order (a step without a type is a python step)",
    },
    "state": {
        "type": ["string", "null"],
        "description": "state store URL (default: SQLite in the state directory)",
    },
    "config": {
        "type": ["object", "null"],
        "description": "values of the declared parameters set by the operator",
    },
    "python_path": {
        "type": ["array", "null"],
        "items": {"type": "string"},
        "description": "directories step modules import from",
    },
    "context": {"type": ["object", "null"], "description": "the run context's initial values (${context.x})"},
}


def flow_schema(
    reg: Registry | None = None,
    *,
    no_plugins: bool = False,
    schema_id: str = SCHEMA_ID,
    title: str = "ActiveDataFlow flow spec",
) -> dict[str, Any]:
    """The JSON Schema of a flow spec for the types ``reg`` knows (default: the process-wide
    registry, plug-ins included; ``no_plugins``: only this distribution's own types)."""
    reg = reg or registry
    defs: dict[str, Any] = {}
    for kind in ("source", "sink", "step"):
        defs.update(_kind_schemas(kind, reg, no_plugins))
    sections = {
        **_SECTIONS,
        "runtime": _runtime_schema(reg, no_plugins),
        "schema": _record_schema_schema(),
        "params": _params_schema(),
    }
    return {
        "$schema": DIALECT,
        "$id": schema_id,
        "title": title,
        "description": "Generated by `adf schema` from the declarations of the installed sources, sinks and steps.",
        "type": "object",
        "required": ["name", "source", "sink"],
        "properties": {key: sections.get(key, {}) for key in SPEC_KEYS},
        "additionalProperties": False,
        "$defs": defs,
    }


def dump_schema(schema: Mapping[str, Any]) -> str:
    """The schema as stable JSON text (sorted keys, two-space indent, a final newline)."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schema(schema: Mapping[str, Any], output: str | None) -> None:
    """:func:`dump_schema` to stdout (``output`` None or ``-``) or into the file ``output``
    (saying so on stderr): what ``adf schema`` and ``adf spin schema`` do."""
    text = dump_schema(schema)
    if not output or output == "-":
        sys.stdout.write(text)
        return
    with open(output, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {output}", file=sys.stderr)


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True, order=True)
class SchemaProblem:
    """One place where a spec does not match the schema: ``path`` is a JSON path (``$.source.pth``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _child_path(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    if _PLAIN_KEY.match(text):
        return f"{path}.{text}"
    return path + "['" + text.replace("\\", "\\\\").replace("'", "\\'") + "']"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(sub: Mapping[str, Any]) -> str:
    if "enum" in sub:
        return "one of " + ", ".join(repr(v) for v in sub["enum"] if v is not None)
    if sub.get("pattern") == PARAMS_REF_PATTERN:
        return "a ${params.name} reference"
    if "pattern" in sub:
        return "a string holding one"
    types = sub.get("type", "any")
    return " or ".join(types) if isinstance(types, list) else str(types)


def _problems_of(error: Any) -> list[SchemaProblem]:
    path: str = error.json_path
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    kind = error.validator
    if kind == "additionalProperties" and isinstance(error.instance, Mapping):
        known = sorted(schema.get("properties", {}))
        out = []
        for key in error.instance:
            if key in known:
                continue
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            out.append(
                SchemaProblem(
                    _child_path(path, key),
                    f"unknown key {_show(key)}{hint} (accepted keys: {', '.join(known) or 'none'})",
                )
            )
        return out
    if kind == "required":
        missing = [
            k
            for k in error.validator_value
            if isinstance(error.instance, Mapping) and k not in error.instance
        ]
        return [SchemaProblem(path, f"{k!r} is required") for k in missing] or [
            SchemaProblem(path, error.message)
        ]
    if kind == "enum" and schema.get("title"):
        installed = ", ".join(str(v) for v in error.validator_value if v is not None)
        return [
            SchemaProblem(path, f"unknown {schema['title']} {_show(error.instance)} (installed: {installed})")
        ]
    if kind == "enum":
        return [SchemaProblem(path, f"{_show(error.instance)} is not {_describe(schema)}")]
    if kind == "pattern" and schema.get("title"):
        listed = f"; one of: {', '.join(schema['examples'])} (any case)" if schema.get("examples") else ""
        return [SchemaProblem(path, f"{_show(error.instance)} is not a valid {schema['title']}{listed}")]
    if kind == "type":
        types = error.validator_value
        wanted = " or ".join(types) if isinstance(types, list) else str(types)
        return [SchemaProblem(path, f"expected {wanted}, got {_show(error.instance)}")]
    if kind == "anyOf":
        wanted = "; or ".join(_describe(s) for s in error.validator_value)
        return [SchemaProblem(path, f"expected {wanted}; got {_show(error.instance)}")]
    return [SchemaProblem(path, error.message)]


_validators: dict[str, Any] = {}


def _validator(schema: Mapping[str, Any]) -> Any:
    try:
        from jsonschema import Draft202012Validator
    except ImportError as exc:
        raise MissingExtraError("jsonschema", "web", "checking a flow spec against its JSON Schema") from exc
    key = dump_schema(schema)
    if key not in _validators:
        if len(_validators) > 8:
            _validators.clear()
        _validators[key] = Draft202012Validator(schema)
    return _validators[key]


def check_spec(
    raw: Any, reg: Registry | None = None, *, schema: Mapping[str, Any] | None = None
) -> list[SchemaProblem]:
    """Every place where ``raw`` does not match the flow schema (``schema``, or
    :func:`flow_schema` of ``reg``), in path order; ``[]`` when it matches."""
    validator = _validator(schema if schema is not None else flow_schema(reg))
    found: set[SchemaProblem] = set()
    for error in validator.iter_errors(raw):
        found.update(_problems_of(error))
    return sorted(found)


def check_configuration(
    configuration: Mapping[str, Any], flow_name: Any, reg: Registry | None = None
) -> list[SchemaProblem]:
    """:func:`check_spec` for a scheduled flow's configuration, whose ``name`` may be left out: it
    is then the flow's own (or a stand-in when that is not a valid name — a problem of its own)."""
    raw = dict(configuration)
    if "name" not in raw:
        raw["name"] = flow_name if isinstance(flow_name, str) and NAME_RE.match(flow_name) else "flow"
    return check_spec(raw, reg)
