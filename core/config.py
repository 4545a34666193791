"""Configuration layering: where every value of a flow's configuration comes from.

A flow's configuration is nested plain data (a flow spec: ``{name, source: {...},
steps: [...], sink: {...}, runtime: {...}}``) assembled from layers. Precedence, lowest
first, is :data:`LAYERS`::

    default < manifest (spec file, spin.toml variables, SAM parameters) < kv (key-value
    store) < env (environment variables) < payload (``adf run --set``)

Merge rule: mappings merge deeply; scalars and lists replace what was there; a key that is
an integer (``"0"``) addresses an item of a list that already exists at that place, so
``ADF__STEPS__0__FUEL=10`` sets ``steps[0].fuel`` and keeps the rest of the step. A layer
that gives a component section (``source``, ``sink``, ``dead_letter``, a step) another
``type`` replaces that section: ``ADF__SINK__TYPE=stdout`` turns a file sink into a stdout
sink without its ``path`` (set the new type's attributes in the same layer or above).

The resolved configuration (:class:`ResolvedConfig`) remembers, for every leaf, the layer
and origin that set it and the ones it overrode; :meth:`ResolvedConfig.explain` reports it
with secrets redacted (see :mod:`active_data_flow.redact`).

Sources of layer values:

* :func:`env_values` - ``ADF__SOURCE__PATH=x`` and flow-scoped ``ADF_<FLOW>__SOURCE__PATH=x``;
* :func:`parse_set_args` - ``source.path=x`` items of ``--set``;
* :func:`kv_values` - the JSON object under ``config/<flow>`` in a state store;
* :func:`resolve_flow_config` - all of the above in order.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from active_data_flow.errors import ConfigError
from active_data_flow.redact import REDACTED, is_secret_key, redact

if TYPE_CHECKING:
    from active_data_flow.state import StateStore

__all__ = [
    "ENV_PREFIX",
    "LAYERS",
    "Explanation",
    "LayeredConfig",
    "ResolvedConfig",
    "env_values",
    "flow_env_prefix",
    "flow_name_of",
    "kv_values",
    "parse_set_args",
    "parse_value",
    "resolve_flow_config",
]

#: Layer names, lowest precedence first.
LAYERS: tuple[str, ...] = ("default", "manifest", "kv", "env", "payload")

#: Prefix of generic configuration environment variables (``ADF__SOURCE__PATH``).
ENV_PREFIX = "ADF__"

_Path = tuple[str, ...]
_INDEX_RE = re.compile(r"-?\d+")
_MAX_SHOWN = 60


@dataclass(frozen=True)
class Explanation:
    """Where one leaf value of a resolved configuration comes from.

    ``path`` is dotted (``"steps.0.fuel"``); ``value`` is redacted when secret; ``layer``
    and ``origin`` name the addition that set it; ``overridden`` lists the ``(layer,
    origin)`` pairs whose values it replaced, oldest first.
    """

    path: str
    value: Any
    layer: str
    origin: str
    overridden: tuple[tuple[str, str], ...] = ()


@dataclass
class _Provenance:
    layer: str
    origin: str
    overridden: list[tuple[str, str]] = field(default_factory=list)


_SCALARS = (str, int, float, type(None))
_MAPPINGS = (dict, Mapping)  # dict first: exact, without the ABC's Python-level check


def _plain(value: Any) -> Any:
    """Deep copy of ``value`` as plain data: mappings -> dict with str keys, tuples -> list."""
    if isinstance(value, _SCALARS):  # first: a Mapping check is a Python-level ABC call
        return value
    if isinstance(value, _MAPPINGS):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _dotted(path: _Path) -> str:
    return ".".join(path)


def _leaves(value: Any, path: _Path) -> Iterator[tuple[_Path, Any]]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, str(i)))
    else:
        yield path, value


def _sort_key(path: str) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, int(s), "") if s.isdigit() else (1, 0, s) for s in path.split("."))


#: the sections that name a component by ``type`` (and each item of ``steps``)
_TYPED_SECTIONS = frozenset({"source", "sink", "dead_letter"})


def _switches_type(path: _Path, current: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """True when ``new`` gives the component section at ``path`` (``sink``, ``steps.2``…) another
    ``type`` than it has: the section is then replaced, not merged — the attributes of the old
    type (a file sink's ``path``, its defaults) do not belong to the new one."""
    typed = (len(path) == 1 and path[0] in _TYPED_SECTIONS) or (len(path) == 2 and path[0] == "steps")
    return typed and "type" in new and "type" in current and new["type"] != current["type"]


class _Merger:
    """Applies layer additions in order, tracking the provenance of every leaf."""

    def __init__(self, track: bool = True) -> None:
        self.values: dict[str, Any] = {}
        self.provenance: dict[_Path, _Provenance] = {}
        self._track = track

    def apply(self, values: dict[str, Any], layer: str, origin: str) -> None:
        self._merge(self.values, values, (), layer, origin)

    def _merge(
        self, target: dict[str, Any] | list[Any], values: dict[str, Any], path: _Path, layer: str, origin: str
    ) -> None:
        for key, new in values.items():
            here = (*path, key)
            slot: int | str
            if isinstance(target, list):
                slot = int(key)
                exists, current = True, target[slot]
            else:
                slot = key
                exists, current = key in target, target.get(key)
            if exists and isinstance(new, dict):
                if isinstance(current, dict) and not _switches_type(here, current, new):
                    self._merge(current, new, here, layer, origin)
                    continue
                if isinstance(current, list) and new and self._indexes_list(current, new, here, origin):
                    self._merge(current, new, here, layer, origin)
                    continue
            value = _plain(new)
            if isinstance(target, list):
                target[int(slot)] = value
            else:
                target[str(slot)] = value
            if self._track:
                self._record(here, value, layer, origin)

    @staticmethod
    def _indexes_list(current: list[Any], new: dict[str, Any], path: _Path, origin: str) -> bool:
        """True when every key of ``new`` is a valid index of ``current``; raise when only some are."""
        index_keys = [k for k in new if _INDEX_RE.fullmatch(k)]
        if not index_keys:
            return False
        problems: list[str] = []
        if len(index_keys) != len(new):
            others = ", ".join(repr(k) for k in new if k not in index_keys)
            problems.append(f"{_dotted(path)} is a list: keys {others} are not list indexes")
        for k in index_keys:
            i = int(k)
            if i < 0 or i >= len(current):
                problems.append(
                    f"{_dotted((*path, k))}: index {i} is outside the list {_dotted(path)} "
                    f"({len(current)} items; indexes 0..{len(current) - 1}); set the whole list instead"
                )
        if problems:
            raise ConfigError(origin, problems)
        return True

    def _record(self, path: _Path, value: Any, layer: str, origin: str) -> None:
        exact = self.provenance.pop(path, None)
        n = len(path)
        below = {p: self.provenance.pop(p) for p in list(self.provenance) if len(p) > n and p[:n] == path}
        for i in range(1, n):  # an empty container that was a leaf is no longer one
            self.provenance.pop(path[:i], None)
        for leaf, _ in _leaves(value, path):
            beaten: list[tuple[str, str]] = []
            previous = exact if leaf == path else below.get(leaf)
            if leaf != path and exact is not None:  # a scalar replaced by a mapping or list
                beaten += [*exact.overridden, (exact.layer, exact.origin)]
            if previous is not None:
                beaten += [*previous.overridden, (previous.layer, previous.origin)]
            self.provenance[leaf] = _Provenance(layer, origin, beaten)


class LayeredConfig:
    """Configuration additions per layer, resolved by precedence into a :class:`ResolvedConfig`.

    Additions may be made in any order; :meth:`resolve` applies them by layer (see
    :data:`LAYERS`) and, within one layer, in the order they were added (later wins).
    Values are copied when added, so later changes to the caller's mapping do not show.
    """

    def __init__(self) -> None:
        self._additions: list[tuple[int, int, str, dict[str, Any], str]] = []

    def add(self, layer: str, values: Mapping[str, Any], origin: str) -> None:
        """Add ``values`` (nested mapping) to ``layer``; ``origin`` names where they came from.

        ``origin`` is human text shown by :meth:`ResolvedConfig.explain` ("flow.yaml",
        "environment ADF__SOURCE__PATH", "--set", "kv config/orders"). Raises
        ``ValueError`` for an unknown layer and ``TypeError`` when ``values`` is not a mapping.
        """
        if layer not in LAYERS:
            raise ValueError(f"unknown configuration layer {layer!r}; layers are {', '.join(LAYERS)}")
        if not isinstance(values, Mapping):
            raise TypeError(f"configuration from {origin} must be a mapping, got {type(values).__name__}")
        self._additions.append((LAYERS.index(layer), len(self._additions), layer, _plain(values), origin))

    def resolve(self, secret_keys: Iterable[str] = ()) -> ResolvedConfig:
        """Merge all additions by precedence.

        ``secret_keys`` are dotted paths (``"sink.url"``) or bare key names (``"password"``)
        whose values :meth:`ResolvedConfig.explain` and :meth:`ResolvedConfig.as_dict_redacted`
        hide, besides the keys :func:`active_data_flow.redact.is_secret_key` recognises. Raises
        :class:`ConfigError` naming the path and origin when an integer key addresses an
        index outside an existing list.
        """
        ordered = [(layer, values, origin) for _r, _s, layer, values, origin in sorted(self._additions)]
        merger = _Merger(track=False)
        for layer, values, origin in ordered:
            merger.apply(values, layer, origin)
        # Most resolutions are never explained: where each leaf came from is worked out by
        # merging the same additions again, on the first question (the additions are private
        # copies, never changed after they were added).
        return ResolvedConfig(merger.values, lambda: _provenance_of(ordered), secret_keys)


def _provenance_of(ordered: Sequence[tuple[str, dict[str, Any], str]]) -> dict[_Path, _Provenance]:
    merger = _Merger()
    for layer, values, origin in ordered:
        merger.apply(values, layer, origin)
    return merger.provenance


class ResolvedConfig:
    """The merged configuration and the provenance of each of its leaves.

    ``values`` is the merged nested plain data (the resolver's own copy). ``repr()`` shows
    redacted values only, so a resolved config can be logged safely.
    """

    def __init__(
        self,
        values: dict[str, Any],
        provenance: Mapping[_Path, _Provenance] | Callable[[], Mapping[_Path, _Provenance]],
        secret_keys: Iterable[str] = (),
    ) -> None:
        self.values: dict[str, Any] = values
        self._provenance_source = provenance
        self._provenance_known: dict[_Path, _Provenance] | None = None if callable(provenance) else dict(provenance)
        keys = [k.lower() for k in secret_keys]
        self.secret_keys: tuple[str, ...] = tuple(keys)
        self._secret_names = frozenset(k for k in keys if "." not in k)
        self._secret_paths = frozenset(k for k in keys if "." in k)

    @property
    def _provenance(self) -> dict[_Path, _Provenance]:
        if self._provenance_known is None:
            source = self._provenance_source
            self._provenance_known = dict(source() if callable(source) else source)
        return self._provenance_known

    def with_secret_keys(self, secret_keys: Iterable[str]) -> ResolvedConfig:
        """The same values and provenance, redacted with ``secret_keys``."""
        known = self._provenance_known
        return ResolvedConfig(self.values, known if known is not None else self._provenance_source, secret_keys)

    def get(self, path: str, default: Any = None) -> Any:
        """The value at dotted ``path`` (``"source.path"``, ``"steps.0.function"``), else ``default``.

        Integer segments index lists. An empty path returns the whole configuration.
        Containers are returned as copies.
        """
        node: Any = self.values
        for seg in path.split(".") if path else ():
            if isinstance(node, dict) and seg in node:
                node = node[seg]
            elif isinstance(node, list) and seg.isdigit() and int(seg) < len(node):
                node = node[int(seg)]
            else:
                return default
        return _plain(node)

    def is_secret(self, path: str) -> bool:
        """Whether the value at dotted ``path`` is hidden: it, or a key above it, is secret."""
        segs = path.split(".")
        for i, seg in enumerate(segs):
            if seg.lower() in self._secret_names or is_secret_key(seg):
                return True
            if ".".join(segs[: i + 1]).lower() in self._secret_paths:
                return True
        return False

    def _shown(self, path: str, value: Any) -> Any:
        if value is not None and self.is_secret(path):
            return REDACTED
        return redact(value)

    def explain(self) -> list[Explanation]:
        """One :class:`Explanation` per leaf path, sorted by path (list indexes numerically).

        A leaf is a scalar or an empty mapping/list. Secret values are :data:`REDACTED`;
        every string goes through :func:`active_data_flow.redact.redact_text`.
        """
        rows = [
            Explanation(
                path=_dotted(path),
                value=self._shown(_dotted(path), self.get(_dotted(path))),
                layer=prov.layer,
                origin=prov.origin,
                overridden=tuple(prov.overridden),
            )
            for path, prov in self._provenance.items()
        ]
        rows.sort(key=lambda e: _sort_key(e.path))
        return rows

    def explain_text(self) -> str:
        """:meth:`explain` as an aligned text table: PATH, VALUE, LAYER, ORIGIN, OVERRIDES."""
        header = ("PATH", "VALUE", "LAYER", "ORIGIN", "OVERRIDES")
        rows = [header]
        for e in self.explain():
            shown = (
                e.value if isinstance(e.value, str) else json.dumps(e.value, ensure_ascii=False, default=str)
            )
            if len(shown) > _MAX_SHOWN:
                shown = shown[: _MAX_SHOWN - 1] + "…"
            overrides = ", ".join(f"{layer} ({origin})" for layer, origin in reversed(e.overridden))
            rows.append((e.path, shown, e.layer, e.origin, overrides or "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
        lines = [
            "  ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)), r[-1]]).rstrip()
            for r in rows
        ]
        return "\n".join(lines)

    def as_dict_redacted(self) -> dict[str, Any]:
        """A redacted deep copy of :attr:`values` (see :func:`active_data_flow.redact.redact`)."""
        result: dict[str, Any] = redact(self.values, self.secret_keys)
        return result

    def __repr__(self) -> str:
        return f"ResolvedConfig({self.as_dict_redacted()!r})"


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def parse_value(raw: str) -> Any:
    """``raw`` parsed as JSON when it is valid JSON, else ``raw`` itself.

    ``"10"`` -> 10, ``"true"`` -> True, ``"null"`` -> None, ``"[1,2]"`` -> [1, 2],
    ``'{"a":1}'`` -> {"a": 1}, ``"data/x.csv"`` -> "data/x.csv". ``NaN`` and ``Infinity``
    stay strings.
    """
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        return raw


def _nest(segments: Sequence[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    for seg in segments[:-1]:
        node[seg] = {}
        node = node[seg]
    node[segments[-1]] = value
    return out


def _deep_set(target: dict[str, Any], segments: Sequence[str], value: Any) -> None:
    """Set ``value`` at ``segments`` in ``target``; mappings merge into mappings already there."""
    node = target
    for seg in segments[:-1]:
        child = node.get(seg)
        if not isinstance(child, dict):
            child = node[seg] = {}
        node = child
    last = segments[-1]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        for k, v in value.items():
            _deep_set(node[last], [k], v)
    else:
        node[last] = value


def flow_env_prefix(flow_name: str) -> str:
    """Prefix of flow-scoped variables: ``ADF_`` + upper-cased name (non-alphanumerics -> ``_``) + ``__``.

    ``flow_env_prefix("orders-to-db")`` is ``"ADF_ORDERS_TO_DB__"``.
    """
    return "ADF_" + re.sub(r"[^A-Z0-9]", "_", flow_name.upper()) + "__"


def env_values(environ: Mapping[str, str], flow_name: str | None = None) -> list[tuple[dict[str, Any], str]]:
    """Configuration from environment variables, as ``(nested values, origin)`` pairs.

    ``ADF__SOURCE__PATH=x`` gives ``{"source": {"path": "x"}}``; segments are separated by
    ``__`` and lower-cased; values go through :func:`parse_value`. When ``flow_name`` is
    given, ``ADF_<FLOW>__...`` variables (see :func:`flow_env_prefix`) are read too and come
    after - so they win over - the generic ones. Within each group, shallower paths come
    first (``ADF__STEPS`` before ``ADF__STEPS__0__FUEL``), then a ``type`` (which may replace
    its section: see the module doc) before its siblings, then by name. Each origin is
    ``"environment NAME"``. Other variables (``ADF_STATE_DIR``, ``PATH``) are ignored; an
    ``ADF__`` variable with an empty segment raises :class:`ConfigError`.
    """
    scoped_prefix = flow_env_prefix(flow_name) if flow_name else None
    generic: list[tuple[int, str, list[str], str]] = []
    scoped: list[tuple[int, str, list[str], str]] = []
    problems: list[str] = []
    for name, raw in environ.items():
        if scoped_prefix and name.startswith(scoped_prefix):
            rest, group = name[len(scoped_prefix) :], scoped
        elif name.startswith(ENV_PREFIX):
            rest, group = name[len(ENV_PREFIX) :], generic
        else:
            continue
        segments = [s.lower() for s in rest.split("__")]
        if not all(segments):
            problems.append(f"{name}: empty key segment (separate keys with exactly two underscores)")
            continue
        group.append((len(segments), name, segments, raw))
    if problems:
        raise ConfigError("environment", problems)
    return [
        (_nest(segments, parse_value(raw)), f"environment {name}")
        for group in (generic, scoped)
        for _depth, name, segments, raw in sorted(group, key=lambda g: (g[0], g[2][-1] != "type", g[1]))
    ]


def parse_set_args(items: Sequence[str]) -> dict[str, Any]:
    """Nested configuration from ``--set`` items ``KEY.PATH=VALUE``.

    ``["source.path=data/x.csv", "runtime.batch_size=10"]`` gives ``{"source": {"path":
    "data/x.csv"}, "runtime": {"batch_size": 10}}``. Only the first ``=`` splits; values go
    through :func:`parse_value`; keys are kept as written (integer segments index lists
    when merged). Later items win. Raises :class:`ConfigError` listing every item without
    ``=`` or with an empty key segment.
    """
    out: dict[str, Any] = {}
    problems: list[str] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            problems.append(f"{item!r} has no '=': write KEY=VALUE, e.g. source.path=data/x.csv")
            continue
        segments = key.split(".")
        if not key or not all(segments):
            problems.append(
                f"{item!r}: empty key or key segment before '=' (write e.g. runtime.batch_size=10)"
            )
            continue
        _deep_set(out, segments, parse_value(raw))
    if problems:
        raise ConfigError("--set", problems)
    return out


def _expand_dotted(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        segments = str(key).split(".")
        if not all(segments):
            raise ConfigError(where, [f"key {key!r} has an empty segment"])
        item = _expand_dotted(value, where) if isinstance(value, Mapping) else value
        _deep_set(out, segments, item)
    return out


def kv_values(store: StateStore, flow_name: str) -> dict[str, Any]:
    """The configuration stored under key ``config/<flow_name>`` of ``store``; ``{}`` when absent.

    The stored value is a JSON object, nested (``{"source": {"path": "x"}}``), with dotted
    keys (``{"source.path": "x"}``) or both; dotted keys are expanded into nested mappings.
    Raises :class:`ConfigError` when the stored value is not an object.
    """
    where = f"kv config/{flow_name}"
    raw = store.get(f"config/{flow_name}")
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(where, [f"must hold a JSON object, found {type(raw).__name__}"])
    return _expand_dotted(raw, where)


def flow_name_of(spec: Mapping[str, Any], payload: Mapping[str, Any] | None = None,
                 defaults: Mapping[str, Any] | None = None) -> str | None:
    """The flow name that scopes the kv and env layers (see :func:`resolve_flow_config`)."""
    return _name_of(payload) or _name_of(spec) or _name_of(defaults)


def _name_of(values: Mapping[str, Any] | None) -> str | None:
    name = values.get("name") if values else None
    return str(name) if name else None


def resolve_flow_config(
    spec: Mapping[str, Any],
    *,
    defaults: Mapping[str, Any] | None = None,
    store: StateStore | None = None,
    environ: Mapping[str, str] | None = None,
    payload: Mapping[str, Any] | None = None,
    spec_origin: str = "spec",
    payload_origin: str = "payload",
    extra: Iterable[tuple[str, Mapping[str, Any], str]] = (),
    secret_keys: Iterable[str] = (),
) -> ResolvedConfig:
    """Resolve a flow's configuration from all layers.

    * default: ``defaults`` (origin ``"defaults"``);
    * manifest: ``spec`` (origin ``spec_origin``, e.g. the spec file name);
    * kv: :func:`kv_values` of ``store`` for the flow's name (skipped when ``store`` is None);
    * env: :func:`env_values` of ``environ`` (``None`` means ``os.environ``; pass ``{}`` to skip);
    * payload: ``payload`` (origin ``payload_origin``; trigger payload or ``--set`` values);
    * ``extra``: further ``(layer, values, origin)`` additions (spin.toml variables, SAM
      parameters...), applied by their layer after the ones above of the same layer.

    The flow name that scopes kv and env is ``payload["name"]``, else ``spec["name"]``, else
    ``defaults["name"]``. Raises :class:`ConfigError` as the layer readers and
    :meth:`LayeredConfig.resolve` do.
    """
    cfg = LayeredConfig()
    if defaults:
        cfg.add("default", defaults, "defaults")
    cfg.add("manifest", spec, spec_origin)
    if payload:
        cfg.add("payload", payload, payload_origin)
    name = flow_name_of(spec, payload, defaults)
    if store is not None and name:
        kv = kv_values(store, name)
        if kv:
            cfg.add("kv", kv, f"kv config/{name}")
    for env_part, origin in env_values(os.environ if environ is None else environ, name):
        cfg.add("env", env_part, origin)
    for layer, values, origin in extra:
        cfg.add(layer, values, origin)
    return cfg.resolve(secret_keys)
