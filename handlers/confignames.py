"""How names outside a flow spec address its configuration.

**Variables** — spin.toml variables, SAM parameters, any host's flat ``name → string``
settings — carry configuration into a flow run without being JSON documents: they go into
the **manifest** layer (after the spec file itself, so they win over it; kv and the
environment still win over them). They are the operators' settings. A request's names
(query parameters, ``X-ADF-*`` headers) never address configuration: a request may give only
the values of the flow's declared parameters (:mod:`active_data_flow.handlers.invoke.params`).

Values are parsed like ``--set`` values (:func:`active_data_flow.config.parse_value`: JSON when it is
valid JSON — ``10``, ``true``, ``[1,2]``, ``{"a":1}`` — else the string itself).

Variables
---------
Spin variable names may contain only lower-case letters, digits and *single* underscores
(``__`` is refused by Spin), so a config path is written with ``_`` between keys and the
path is found by matching the words against the flow's structure (see
:func:`resolve_words`): ``adf_sink_table`` → ``sink.table``, ``adf_runtime_batch_size`` →
``runtime.batch_size``, ``adf_dead_letter_path`` → ``dead_letter.path``,
``adf_steps_0_fuel`` → ``steps.0.fuel``. In precedence order (later wins):

=================================  ==================================================
``adf_json``                       a JSON object for every flow (nested or dotted keys)
``adf_<path>``                     one value for every flow (``adf_sink_table``)
``adf__<a>__<b>``                  the same, exact path (hosts that allow ``__``; not Spin)
``adf_flow_<slug>_json``           a JSON object for flow ``<slug>`` only
``adf_flow_<slug>_<path>``         one value for that flow only (``adf_flow_orders_sink_table``)
``adf_<flow>__<a>__<b>``           the same, exact path, like ``ADF_<FLOW>__SINK__TABLE``
=================================  ==================================================

Mind the two JSON-ish names: ``adf_json`` is a JSON object of *overrides* (any path), while
``adf_config`` is, like any ``adf_<path>``, the flow's own ``config`` section (a JSON object
there merges into that section; ``adf_config_api_base`` sets ``config.api_base``).

``<slug>`` is the flow name lower-cased with every run of other characters than
``a-z0-9`` turned into one ``_`` (``orders-to-db`` → ``orders_to_db``). Within a group,
shallower paths come first, then by name. A variable whose name does not map to a path
of the flow (``adf_heartbeat_token``, another flow's variable, a typo) is ignored and
reported by :func:`variables_config` in ``ignored``; the flow ``name`` cannot be set.

Word matching (:func:`resolve_words`)
-------------------------------------
The first words must spell a top-level spec key (``source``, ``sink``, ``dead_letter``,
``steps``, ``runtime``, ``config``, ``params``, ``schema``, ``state``, ``description``; the
longest match wins). Under ``source``/``sink``/``dead_letter`` the next words must spell
``type``, an attribute of that connector type (from the registry) or a key already in the
spec; under ``runtime`` a runtime attribute; under ``steps`` a list index and then an
attribute of that step's type. Deeper words, and the keys of ``config``, ``params`` and
``schema``, match keys already present, else the remaining words form one key joined with
``_`` — so an operator sets a declared parameter's value with ``adf_flow_<slug>_config_<name>``
or changes its default with ``adf_flow_<slug>_params_<name>_default``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from active_data_flow.config import flow_env_prefix, parse_value
from active_data_flow.errors import AdfError
from active_data_flow.registry import Registry, registry
from active_data_flow.spec import RUNTIME_ATTRIBUTES, SPEC_KEYS

__all__ = [
    "VARIABLE_PREFIX",
    "deep_merge",
    "expand_dotted",
    "flow_slug",
    "resolve_words",
    "variables_config",
]

VARIABLE_PREFIX = "adf_"

_TOP_KEYS = tuple(k for k in SPEC_KEYS if k != "name")
_SCALAR_TOP = {"description", "state", "python_path"}
_COMPONENT_KIND = {"source": "source", "sink": "sink", "dead_letter": "sink"}
_RUNTIME_KEYS = frozenset(a.name for a in RUNTIME_ATTRIBUTES)
_SLUG_RE = re.compile(r"[^a-z0-9]+")

Path = list[str]


def flow_slug(name: str) -> str:
    """A flow name as it appears in variable names (``adf_flow_<slug>_json``), always a valid
    Spin 3 snake-case identifier: lower case, other runs of characters → ``_``, a word that
    starts with a digit gets an ``n`` in front, no word at all → ``flow``.

    ``orders-to-db`` → ``orders_to_db``, ``orders_2024`` → ``orders_n2024``, ``2nd-pass`` →
    ``n2nd_pass``, ``Bestellungen-Köln`` → ``bestellungen_k_ln``."""
    words = [w for w in _SLUG_RE.split(name.lower()) if w]
    return "_".join("n" + w if w[0].isdigit() else w for w in words) or "flow"


def _keys(node: Any) -> set[str]:
    return {str(k) for k in node} if isinstance(node, Mapping) else set()


def _longest(words: Sequence[str], candidates: Iterable[str]) -> tuple[str | None, list[str]]:
    known = set(candidates)
    for n in range(len(words), 0, -1):
        key = "_".join(words[:n])
        if key in known:
            return key, list(words[n:])
    return None, list(words)


def _component_keys(kind: str, node: Any, reg: Registry) -> set[str]:
    keys = _keys(node) | {"type"}
    type_name = node.get("type") if isinstance(node, Mapping) else None
    if isinstance(type_name, str) and type_name:
        try:
            cls = reg.resolve(kind, type_name)
        except (AdfError, ImportError):
            return keys
        keys |= {a.name for a in getattr(cls, "attributes", ())}
    return keys


def _open_walk(words: Sequence[str], node: Any) -> Path:
    """Words under a free-form mapping: existing keys first, else the rest is one key."""
    if not words:
        return []
    key, rest = _longest(words, _keys(node))
    if key is None:
        return ["_".join(words)]
    child = node.get(key) if isinstance(node, Mapping) else None
    return [key, *_open_walk(rest, child)]


def _closed_walk(words: Sequence[str], node: Any, candidates: Iterable[str]) -> Path | None:
    key, rest = _longest(words, candidates)
    if key is None:
        return None
    child = node.get(key) if isinstance(node, Mapping) else None
    return [key, *_open_walk(rest, child)]


def resolve_words(words: Sequence[str], spec: Mapping[str, Any], reg: Registry | None = None) -> Path | None:
    """The config path that ``words`` (lower-case, split on ``_``/``-``) spell for ``spec``; None when none.

    ``["runtime", "batch", "size"]`` → ``["runtime", "batch_size"]``; see the module doc.
    """
    reg = reg or registry
    words = [w for w in words if w]
    top, rest = _longest(words, _TOP_KEYS)
    if top is None:
        return None
    if not rest:
        return [top]
    if top in _SCALAR_TOP:
        return None
    node = spec.get(top)
    tail: Path | None
    if top in _COMPONENT_KIND:
        tail = _closed_walk(rest, node, _component_keys(_COMPONENT_KIND[top], node, reg))
    elif top == "runtime":
        tail = _closed_walk(rest, node, _RUNTIME_KEYS | _keys(node))
    elif top == "steps":
        if not rest[0].isdigit():
            return None
        index = int(rest[0])
        step = node[index] if isinstance(node, list) and index < len(node) else None
        if len(rest) == 1:
            return [top, rest[0]]
        sub = _closed_walk(rest[1:], step, _component_keys("step", step, reg))
        tail = None if sub is None else [rest[0], *sub]
    else:  # config, schema: free-form
        tail = _open_walk(rest, node)
    return None if tail is None else [top, *tail]


def _nest(path: Sequence[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {path[-1]: value}
    for key in reversed(path[:-1]):
        out = {key: out}
    return out


def expand_dotted(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"sink.table": "t", "runtime": {"batch_size": 5}}`` → nested mappings (later keys win).

    Raises ``ValueError`` naming a key with an empty segment.
    """
    out: dict[str, Any] = {}
    for key, value in values.items():
        segments = str(key).split(".")
        if not all(segments):
            raise ValueError(f"key {key!r} has an empty segment")
        item = expand_dotted(value) if isinstance(value, Mapping) else value
        deep_merge(out, _nest(segments, item))
    return out


def deep_merge(target: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``values`` into ``target`` in place: mappings merge, everything else replaces."""
    for key, value in values.items():
        current = target.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            deep_merge(current, value)
        else:
            target[key] = deep_merge({}, value) if isinstance(value, Mapping) else value
    return target


def _json_object(raw: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{where} must be a JSON object: {exc}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a JSON object, got {type(value).__name__}")
    return expand_dotted(value)


def variables_config(  # noqa: C901
    variables: Mapping[str, str],
    flow_name: str,
    spec: Mapping[str, Any],
    reg: Registry | None = None,
) -> tuple[list[tuple[dict[str, Any], str]], list[str]]:
    """``(additions, ignored)``: the manifest-layer additions ``(values, origin)`` the
    variables make for flow ``flow_name`` in precedence order, and the ``adf_*`` names that
    map to nothing (or whose JSON is malformed: those are listed as ``"name: reason"``)."""
    reg = reg or registry
    slug = flow_slug(flow_name)
    scoped_json = f"adf_flow_{slug}_json"
    scoped_words = f"adf_flow_{slug}_"
    scoped_exact = flow_env_prefix(flow_name).lower()
    groups: list[list[tuple[int, str, Path, Any]]] = [[], [], [], []]
    ignored: list[str] = []
    pending: list[tuple[int, str, list[str], Any]] = []  # word-matched, resolved after "type" changes
    for raw_name, raw_value in variables.items():
        name = raw_name.lower()
        if not name.startswith(VARIABLE_PREFIX):
            continue
        value = raw_value
        try:
            if name == "adf_json":
                groups[0].append((0, name, [], _json_object(str(value), f"variable {raw_name}")))
                continue
            if name == scoped_json:
                groups[2].append((0, name, [], _json_object(str(value), f"variable {raw_name}")))
                continue
        except ValueError as exc:
            ignored.append(f"{raw_name}: {exc}")
            continue
        if name.startswith(scoped_exact):
            path = name[len(scoped_exact) :].split("__")
            group = 3
        elif name.startswith("adf__"):
            path = name[len("adf__") :].split("__")
            group = 1
        elif name.startswith(scoped_words):
            pending.append((3, raw_name, name[len(scoped_words) :].split("_"), value))
            continue
        elif name.startswith("adf_flow_"):
            continue  # another flow's variable
        else:
            pending.append((1, raw_name, name[len(VARIABLE_PREFIX) :].split("_"), value))
            continue
        if not all(path) or path[0] == "name":
            ignored.append(raw_name)
            continue
        groups[group].append((len(path), raw_name, path, parse_value(str(value))))
    # A variable may change a connector's type; the others then match that type's attributes.
    working: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in spec.items()}
    for _group, _name, words, value in pending:
        found = resolve_words(words, working, reg)
        if found is not None and len(found) == 2 and found[1] == "type" and found[0] in _COMPONENT_KIND:
            section = working.get(found[0])
            working[found[0]] = {**(section if isinstance(section, Mapping) else {}), "type": parse_value(str(value))}
    for group, raw_name, words, value in pending:
        found = resolve_words(words, working, reg)
        if found is None:
            ignored.append(raw_name)
            continue
        groups[group].append((len(found), raw_name, found, parse_value(str(value))))
    additions: list[tuple[dict[str, Any], str]] = []
    for entries in groups:
        for _depth, raw_name, path, value in sorted(entries, key=lambda e: (e[0], e[1])):
            values = value if not path else _nest(path, value)
            additions.append((values, f"variable {raw_name}"))
    return additions, sorted(ignored)
