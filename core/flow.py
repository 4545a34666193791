"""The Python class form of a flow.

Subclass :class:`DataFlow`, declare the source, sink, steps and the flow's own
configuration attributes, and implement :meth:`DataFlow.transform`; the same engine runs
it as it runs a declarative spec::

    class EnrichOrders(DataFlow):
        name = "enrich_orders"
        source = {"type": "file", "path": "data/orders.csv"}
        sink = {"type": "sql", "url": "sqlite:///out.db", "table": "orders", "mode": "upsert", "key": "id"}
        configuration_attributes = (Attribute("vat", float, default=0.2),)

        def transform(self, record):
            record["total"] = round(float(record["amount"]) * (1 + self.config["vat"]), 2)
            return record

    summary = EnrichOrders.run_now()

``transform`` returns a record, ``None`` to drop it, or a list of records.

``configuration_attributes`` are the flow's **declared parameters** (what a spec declares
under ``params:``): the values a run may be given — by a request on any target, by
``run_now(params=...)`` — and nothing else. ``self.config`` holds their values: the
attribute's default < the spec's ``config`` section (``run_now(config)``, the operators'
layers) < the values given. The class's own steps may read them as ``${params.name}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from active_data_flow.attributes import Attribute, validate_config
from active_data_flow.registry import Registry
from active_data_flow.step import FunctionStep, Step

if TYPE_CHECKING:
    from active_data_flow.engine import RunSummary
    from active_data_flow.spec import FlowSpec

__all__ = ["DataFlow"]


class DataFlow:
    """Base of class-form flows (see the module docstring)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    source: ClassVar[Mapping[str, Any] | None] = None
    sink: ClassVar[Mapping[str, Any] | None] = None
    steps: ClassVar[Sequence[Mapping[str, Any]]] = ()
    runtime: ClassVar[Mapping[str, Any]] = {}
    dead_letter: ClassVar[Mapping[str, Any] | None] = None
    schema: ClassVar[Any] = None
    configuration_attributes: ClassVar[tuple[Attribute, ...]] = ()

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config: dict[str, Any] = validate_config(
            self.configuration_attributes, config or {}, f"flow {self.flow_name()!r}", allow_extra=()
        )

    @classmethod
    def flow_name(cls) -> str:
        if cls.name:
            return cls.name
        out = []
        for i, ch in enumerate(cls.__name__):
            if ch.isupper() and i:
                out.append("_")
            out.append(ch.lower())
        return "".join(out)

    def transform(self, record: dict[str, Any]) -> Any:
        """Override: return the record, ``None`` to drop it, or a list of records."""
        return record

    def build_steps(self) -> list[Step]:
        """The steps the class adds after the spec's ``steps`` (its ``transform`` when overridden)."""
        if type(self).transform is DataFlow.transform:
            return []
        return [FunctionStep(self.transform, name=f"{type(self).__name__}.transform")]

    @classmethod
    def to_spec_dict(cls, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The declarative spec of this class (plus ``overrides``, for layered config)."""
        raw: dict[str, Any] = {"name": cls.flow_name()}
        for key in ("description", "source", "sink", "runtime", "dead_letter", "schema"):
            value = getattr(cls, key)
            if value:
                raw[key] = dict(value) if isinstance(value, Mapping) else value
        if cls.steps:
            raw["steps"] = [dict(s) for s in cls.steps]
        if overrides:
            raw.update(overrides)
        return raw

    @classmethod
    def spec(
        cls,
        overrides: Mapping[str, Any] | None = None,
        reg: Registry | None = None,
        *,
        params: Mapping[str, Any] | None = None,
    ) -> FlowSpec:
        """The validated spec; ``params``: values of the declared parameters (``configuration_attributes``)."""
        from active_data_flow.spec import parse_spec

        spec = parse_spec(cls.to_spec_dict(overrides), reg=reg, params=params, flow_class=cls)
        cls(spec.config)  # configuration attributes checked before the run
        return spec

    @classmethod
    def run_now(
        cls, config: Mapping[str, Any] | None = None, *, params: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> RunSummary:
        """Run this flow with the local runtime (``kwargs`` go to :func:`active_data_flow.engine.run_flow`).

        ``config`` is the flow's ``config`` section (as an operator's layer sets it), ``params``
        the values given for its declared parameters (as a request gives them); both end up in
        ``self.config``, ``params`` winning."""
        from active_data_flow.engine import run_flow

        spec = cls.spec({"config": dict(config)} if config else None, params=params)
        return run_flow(spec, **kwargs)
