"""Steps: what happens to records between the source and the sink.

A step gets a batch of records and returns the records to pass on. A record the step
fails on goes to the dead-letter destination through ``on_error``; the run goes on.

Built-in step types:

``python``
    ``{type: python, function: "my_pkg.transforms:enrich", options: {...}}`` — the function
    takes one record and returns a record, ``None`` (drop it), or a list/iterable of records
    (fan-out). With ``batch: true`` it takes the list of records and returns a list; if the
    batch call raises, each record is retried alone so only the bad ones are dead-lettered.
    ``options`` are passed as keyword arguments.
``filter``
    ``{type: filter, function: "pkg:predicate"}`` keeps the records for which the predicate
    is true, or ``{type: filter, field: status, op: eq, value: paid}`` with ``op`` one of
    eq, ne, gt, ge, lt, le, in, not_in, exists, missing, contains.
"""

from __future__ import annotations

import abc
import functools
import inspect
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from active_data_flow.attributes import Attribute, Configurable
from active_data_flow.errors import ConfigError
from active_data_flow.record import Record
from active_data_flow.registry import import_path

if TYPE_CHECKING:
    from active_data_flow.registry import Registry
    from active_data_flow.spec import FlowSpec

__all__ = [
    "ErrorHandler", "FilterStep", "FunctionStep", "PythonStep", "Routed", "SchemaStep", "Step", "build_steps",
    "flow_steps", "step_id_problems",
]

#: ``on_error(record, exception, step_name)`` — called for a record the step failed on.
ErrorHandler = Callable[[Any, BaseException, str], None]


class Routed(NamedTuple):
    """A record a routing step sends to the steps ``targets`` (ids of later steps); an
    empty ``targets`` means the record is done and goes straight to the sink."""

    record: Any
    targets: tuple[str, ...]


class Step(Configurable, abc.ABC):
    """Base of steps. Subclasses implement :meth:`process_batch`.

    ``name`` identifies the step in dead letters and logs (``steps[1]:python`` unless the
    spec gives ``name``). ``id`` is what routing decisions name (the spec's ``id``, else
    ``steps[<index>]``). A step whose ``can_route`` is true may return :class:`Routed`
    items; ``forward_ids`` are the ids it may route to (the steps after it).
    ``run_context`` is set by the engine before :meth:`open`; its ``extras["context"]``
    is the run context (the spec's ``context`` plus what steps set).
    """

    name: str = ""
    id: str = ""
    can_route: bool = False
    forward_ids: tuple[str, ...] = ()
    #: the spec's ``next``: where every record this step passes on goes (``()``: the sink);
    #: None: the step after it
    static_next: tuple[str, ...] | None = None
    run_context: Any = None

    @classmethod
    def _kind(cls) -> str:
        return "step"

    def open(self) -> None:
        """Called once per reader before the first batch."""

    @abc.abstractmethod
    def process_batch(self, records: list[Record], on_error: ErrorHandler) -> list[Record]:
        """Return the records to pass on (fewer: filtered; more: fanned out; ``Routed`` items
        when ``can_route``); report each record that fails through ``on_error(record, exc,
        self.name)`` and go on. Called by the pipeline once per batch, in the reader's process;
        must not raise for one bad record (a raise fails the run) and must not keep the records."""

    def close(self) -> None:
        """Called once per reader at the end."""


def _load_callable(path: Any, what: str) -> Callable[..., Any]:
    if callable(path):
        return path  # type: ignore[no-any-return]
    if not isinstance(path, str) or ":" not in path:
        raise ConfigError(what, [f"'function' must be 'module:function', got {path!r}"])
    try:
        fn = import_path(path)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(what, [f"cannot load function {path!r}: {type(exc).__name__}: {exc}"]) from exc
    if not callable(fn):
        raise ConfigError(what, [f"{path!r} is not callable"])
    return fn  # type: ignore[no-any-return]


def _check_signature(fn: Callable[..., Any], options: Mapping[str, Any], where: str) -> None:
    """Refuse a function that cannot take a record plus ``options`` before any record fails on it."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: find out at run time
    try:
        signature.bind({}, **options)
    except TypeError as exc:
        raise ConfigError(where, [f"the function cannot be called as fn(record, **options): {exc}"]) from exc


class FunctionStep(Step):
    """Runs a Python callable on each record (or on each batch)."""

    def __init__(self, fn: Callable[..., Any], *, name: str = "function", batch: bool = False) -> None:
        super().__init__({})
        self.fn = fn
        self.name = name
        self.batch = batch

    def process_batch(self, records: list[Record], on_error: ErrorHandler) -> list[Record]:
        if self.batch:
            return self._process_as_batch(records, on_error)
        fn = self.fn
        out: list[Record] = []
        append = out.append
        extend = out.extend
        name = self.name
        dict_type = dict
        it = iter(records)
        # One try block around the loop (re-entered only after an error) keeps the
        # per-record cost to a call and a type check.
        while True:
            try:
                for record in it:
                    result = fn(record)
                    if type(result) is dict_type:
                        append(result)
                    elif result is None:
                        continue
                    elif isinstance(result, Mapping):
                        append(dict(result))
                    elif isinstance(result, list | tuple):
                        extend(result)
                    elif isinstance(result, Iterable) and not isinstance(result, str | bytes):
                        extend(result)
                    else:
                        raise TypeError(
                            f"a step must return a record (dict), None or a list of records, got {type(result).__name__}"
                        )
                return out
            except Exception as exc:
                on_error(record, exc, name)

    def _process_as_batch(self, records: list[Record], on_error: ErrorHandler) -> list[Record]:
        try:
            result = self.fn(list(records))
            return [r for r in result if r is not None]
        except Exception:
            out: list[Record] = []
            for record in records:
                try:
                    out.extend(r for r in self.fn([record]) if r is not None)
                except Exception as exc:
                    on_error(record, exc, self.name)
            return out


class PythonStep(FunctionStep):
    """``{type: python, function: "pkg.module:func", batch: false, options: {}}``."""

    type_name = "python"
    attributes = (
        Attribute("function", str, required=True, help="'module:function' taking a record"),
        Attribute("batch", bool, default=False, help="the function takes and returns a list of records"),
        Attribute("options", dict, default={}, help="keyword arguments passed to the function"),
        Attribute("name", str, help="name used in dead letters and logs"),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        Configurable.__init__(self, config, **kwargs)
        where = f"step {self.option('name') or self.option('function')!r}"
        fn = _load_callable(self.option("function"), where)
        _check_signature(fn, self.option("options") or {}, where)
        if self.option("options"):
            fn = functools.partial(fn, **self.option("options"))
        self.fn = fn
        self.batch = bool(self.option("batch"))
        self.name = self.option("name") or f"python:{self.option('function')}"


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "in": lambda a, b: a in b,
    "not_in": lambda a, b: a not in b,
    "contains": lambda a, b: b in a,
}


class FilterStep(Step):
    """Keeps the records that match a predicate function or a field condition."""

    type_name = "filter"
    attributes = (
        Attribute("function", str, help="'module:predicate' returning true to keep a record"),
        Attribute("field", str, help="field to test"),
        Attribute("op", str, default="eq", choices=(*_OPS, "exists", "missing")),
        Attribute("value", object, help="value to compare with"),
        Attribute("name", str),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        fn_path, field_name = self.option("function"), self.option("field")
        where = f"step {self.option('name') or 'filter'!r}"
        if bool(fn_path) == bool(field_name):
            raise ConfigError(where, ["give exactly one of 'function' or 'field' (with 'op' and 'value')"])
        op = self.option("op")
        if field_name and op in _OPS and "value" not in (config or {}) and "value" not in kwargs:
            raise ConfigError(where, [f"'value' is required with op {op!r}"])
        self.name = self.option("name") or f"filter:{fn_path or field_name}"
        if fn_path:
            self.predicate: Callable[[Record], Any] = _load_callable(fn_path, where)
        else:
            self.predicate = self._condition(field_name, op, self.option("value"))

    @staticmethod
    def _condition(field_name: str, op: str, value: Any) -> Callable[[Record], bool]:
        if op == "exists":
            return lambda r: r.get(field_name) is not None
        if op == "missing":
            return lambda r: r.get(field_name) is None
        compare = _OPS[op]
        return lambda r: field_name in r and compare(r[field_name], value)

    def process_batch(self, records: list[Record], on_error: ErrorHandler) -> list[Record]:
        predicate = self.predicate
        out: list[Record] = []
        append = out.append
        it = iter(records)
        while True:
            try:
                for record in it:
                    if predicate(record):
                        append(record)
                return out
            except Exception as exc:
                on_error(record, exc, self.name)


def step_id_problems(specs: Sequence[Any]) -> list[str]:
    """Problems with the steps' ``id`` and ``next`` keys: an id that is not a string or is
    used twice; a ``next`` that is not a list of ids of later steps."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        sid = spec.get("id", f"steps[{i}]") if isinstance(spec, Mapping) else f"steps[{i}]"
        if not isinstance(sid, str) or not sid.strip():
            problems.append(f"steps[{i}]: 'id' must be a non-empty string, got {sid!r}")
        elif sid in seen:
            problems.append(f"steps[{i}]: id {sid!r} is already used by steps[{seen[sid]}]")
        else:
            seen[sid] = i
    for i, spec in enumerate(specs):
        nxt = spec.get("next") if isinstance(spec, Mapping) else None
        if nxt is None:
            continue
        if not isinstance(nxt, list) or not all(isinstance(t, str) for t in nxt):
            problems.append(f"steps[{i}]: 'next' must be a list of step ids ([] ends the record's path), got {nxt!r}")
            continue
        later = [sid for sid, j in seen.items() if j > i]
        for target in nxt:
            if seen.get(target, -1) <= i:
                problems.append(f"steps[{i}]: next {target!r} is not a later step (later steps: "
                                f"{', '.join(later) or 'none'})")
    return problems


def build_steps(specs: Sequence[Mapping[str, Any]], resolve: Callable[[str, str], Any]) -> list[Step]:
    """Instantiate steps from their spec mappings (``resolve`` is ``registry.resolve``)."""
    steps: list[Step] = []
    for i, spec in enumerate(specs):
        cls = resolve("step", spec.get("type", "python"))
        config = {k: v for k, v in spec.items() if k not in ("type", "id", "next")}
        step = cls(config)
        if not getattr(step, "name", ""):
            step.name = f"steps[{i}]:{spec.get('type')}"
        step.id = str(spec.get("id") or f"steps[{i}]")
        if spec.get("next") is not None:
            step.static_next = tuple(spec["next"])
        steps.append(step)
    for i, step in enumerate(steps):
        step.forward_ids = tuple(s.id for s in steps[i + 1 :])
    problems = step_id_problems(specs)
    if problems:
        raise ConfigError("steps", problems)
    return steps


def flow_steps(spec: FlowSpec, reg: Registry) -> list[Step]:
    """A flow's steps in order: its schema's (when it has one), the spec's, its class's."""
    steps: list[Step] = []
    if spec.schema is not None:
        from active_data_flow.record import Schema

        steps.append(SchemaStep(Schema.from_spec(spec.schema)))
    steps.extend(build_steps(spec.steps, reg.resolve))
    if spec.flow_class is not None:
        flow = spec.flow_class(spec.config)
        steps.extend(flow.build_steps())
    return steps


class SchemaStep(Step):
    """Validates (and coerces) each record against the spec's ``schema``."""

    def __init__(self, schema: Any) -> None:
        super().__init__({})
        self.schema = schema
        self.name = "schema"

    def process_batch(self, records: list[Record], on_error: Any) -> list[Record]:
        validate = self.schema.validate
        out: list[Record] = []
        for record in records:
            try:
                out.append(validate(record))
            except Exception as exc:
                on_error(record, exc, self.name)
        return out
