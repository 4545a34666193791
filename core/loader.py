"""Load a flow with its configuration layers resolved.

Every trigger (CLI, heartbeat, Lambda, Spin, Flink) goes through :func:`load_flow`, so
they all apply the same precedence, lowest first: defaults < manifest (the spec file or
class) < key-value store (``config/<flow>`` in the state store) < environment
(``ADF__SECTION__KEY``, ``ADF_<FLOW>__SECTION__KEY``) < payload (``--set``).

The payload layer is the operator's (``adf run --set``): a request (HTTP, a message) never
reaches it. What a request may give — the values of the parameters a flow declares — is
``params`` (see :mod:`active_data_flow.spec`), checked against the declarations after the layers are resolved.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from active_data_flow.config import ResolvedConfig, flow_name_of, resolve_flow_config
from active_data_flow.errors import SpecError
from active_data_flow.registry import Registry, add_import_path, import_path, registry
from active_data_flow.spec import FlowSpec, load_spec_file, parse_spec, spec_defaults
from active_data_flow.state import StateStore, default_state_dir, open_state_store

__all__ = ["LoadedFlow", "load_flow", "read_flow_ref"]


@dataclass
class LoadedFlow:
    """A validated spec, how its values were resolved, and the flow's state store."""

    spec: FlowSpec
    config: ResolvedConfig
    store: StateStore | None
    origin: str


def read_flow_ref(ref: Any) -> tuple[dict[str, Any], Any, str]:
    """(raw spec, DataFlow class or None, origin) from a path, ``module:Class`` or a mapping."""
    if isinstance(ref, Mapping):
        return dict(ref), None, "payload spec"
    if isinstance(ref, type):
        raw: dict[str, Any] = getattr(ref, "to_spec_dict")()  # noqa: B009 - any DataFlow subclass
        return raw, ref, f"class {ref.__module__}.{ref.__qualname__}"
    if not isinstance(ref, str):
        raise SpecError([f"cannot load a flow from {type(ref).__name__}"])
    if os.path.exists(ref) or ref.endswith((".yaml", ".yml", ".json")):
        raw = load_spec_file(ref)
        # Step modules next to the spec, or in the working directory, import without packaging.
        add_import_path(os.path.dirname(os.path.abspath(ref)))
        add_import_path(os.getcwd())
        return raw, None, ref
    if ":" in ref:
        from active_data_flow.flow import DataFlow

        add_import_path(os.getcwd())
        try:
            cls = import_path(ref)
        except (ImportError, AttributeError, ValueError) as exc:
            raise SpecError([f"cannot import flow class {ref!r}: {type(exc).__name__}: {exc}"]) from exc
        if not (isinstance(cls, type) and issubclass(cls, DataFlow)):
            raise SpecError([f"{ref!r} is not a DataFlow subclass"])
        return cls.to_spec_dict(), cls, f"class {ref}"
    raise SpecError([f"spec file {ref!r} does not exist (give a .yaml/.json path or 'module:FlowClass')"])


def _typed_sections(raw: Mapping[str, Any], payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """The spec with the payload's sections merged in, keeping each section's type (for defaults)."""
    out = dict(raw)
    for key, value in (payload or {}).items():
        base = raw.get(key)
        out[key] = {**base, **value} if isinstance(base, Mapping) and isinstance(value, Mapping) else value
    return out


def load_flow(
    ref: Any,
    *,
    payload: Mapping[str, Any] | None = None,
    payload_origin: str = "payload",
    params: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    store: StateStore | None = None,
    use_store: bool = True,
    extra: Iterable[tuple[str, Mapping[str, Any], str]] = (),
    reg: Registry | None = None,
    origin: str | None = None,
) -> LoadedFlow:
    """Resolve all configuration layers of a flow and validate the result.

    The state store is the one the spec names (``state: URL``, itself layered), else the
    embedded SQLite file under the state directory; pass ``store`` to use another one, or
    ``use_store=False`` to skip the key-value layer. ``origin`` names where a spec mapping
    came from in ``adf config explain`` (a bundled file, a database row…). ``params``: values
    of the flow's declared parameters (:func:`active_data_flow.spec.parse_spec`).
    """
    reg = reg or registry
    raw, flow_class, ref_origin = read_flow_ref(ref)
    origin = origin or ref_origin
    defaults = spec_defaults(_typed_sections(raw, payload), reg)
    # First pass without the store: the store's own URL may come from any other layer.
    first = resolve_flow_config(
        raw, defaults=defaults, environ=environ, payload=payload, spec_origin=origin,
        payload_origin=payload_origin, extra=extra,
    )
    if store is None and use_store:
        state_dir = first.get("runtime.state_dir") or default_state_dir()
        store = open_state_store(first.get("state"), state_dir=state_dir)
    name = flow_name_of(raw, payload, defaults)
    if store is None or not name or store.get(f"config/{name}") is None:
        # no kv layer: the first pass is the answer, checked once (every problem at once)
        spec = parse_spec(first.values, reg=reg, params=params, flow_class=flow_class)
        resolved = first.with_secret_keys(spec.secret_keys(reg))
    else:
        try:
            secret_keys = parse_spec(
                first.values, reg=reg, check_components=False, params=params, flow_class=flow_class
            ).secret_keys(reg)
        except SpecError:
            secret_keys = set()  # the full check below reports every problem
        resolved = resolve_flow_config(
            raw, defaults=defaults, store=store, environ=environ, payload=payload, spec_origin=origin,
            payload_origin=payload_origin, extra=extra, secret_keys=secret_keys,
        )
        spec = parse_spec(resolved.values, reg=reg, params=params, flow_class=flow_class)
    spec.flow_class = flow_class
    spec.origin = os.path.abspath(ref) if isinstance(ref, str) and os.path.isfile(ref) else origin
    if flow_class is not None:
        flow_class(spec.config)
    return LoadedFlow(spec=spec, config=resolved, store=store, origin=origin)
