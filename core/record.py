"""Records flowing through the engine, the schemas that check them, and dead letters.

At run time a record is always a plain ``dict[str, Any]`` (:data:`Record`): the engine moves
about 100k records a second and never wraps them. A :class:`Schema` is optional; when a flow
declares one, :meth:`Schema.validate` returns a *new* dict whose values have the declared types.
Validated records stay JSON-friendly: dates, datetimes and decimals are ISO / digit strings,
never ``datetime`` or ``Decimal`` objects, so every sink and every target can serialise them.

A schema is declared in three equivalent ways::

    Schema([Field("id", "integer"), Field("price", "number", nullable=True, required=False)])
    Schema.from_spec({"id": "integer", "price": {"type": "number", "nullable": True, "required": False}})

    class Order(TypedRecord):
        id: int
        price: float | None = None

Example:

>>> schema = Schema.from_spec({"id": "integer", "paid": "boolean", "day": "date"})
>>> schema.validate({"id": "42", "paid": "yes", "day": "20240131", "note": "kept"})
{'id': 42, 'paid': True, 'day': '2024-01-31', 'note': 'kept'}

The field types, their coercions and the three ways to declare a schema are one table of rules
kept together (a type's parser beside its name), which is why this file is longer than most.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import inspect
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias

from active_data_flow.attributes import MISSING
from active_data_flow.errors import RecordValidationError, SpecError

__all__ = [
    "FIELD_TYPES",
    "FIELD_TYPE_ALIASES",
    "MISSING",
    "DeadLetter",
    "ExtraPolicy",
    "Field",
    "Record",
    "Schema",
    "TypedRecord",
]

#: A record as it flows through the engine: a plain dict, never a wrapper object.
Record: TypeAlias = dict[str, Any]

#: What a schema does with fields it does not declare: keep them, reject the record, or drop them.
ExtraPolicy: TypeAlias = Literal["allow", "forbid", "drop"]

_EXTRA_POLICIES: tuple[str, ...] = ("allow", "forbid", "drop")
_WHERE = "record schema"
_ABSENT: Any = object()


# --------------------------------------------------------------------------- coercion


def _show(value: Any) -> str:
    """``repr(value)`` cut to a readable length for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _expected(what: str, value: Any) -> ValueError:
    return ValueError(f"expected {what}, got {_show(value)}")


_INT_RE = re.compile(r"[+-]?[0-9]+(?:\.0*)?", re.ASCII)
_NUM_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_BOOL_WORDS: dict[str, bool] = {
    "true": True,
    "false": False,
    "1": True,
    "0": False,
    "yes": True,
    "no": False,
}


def _to_string(value: Any) -> Any:
    if isinstance(value, str):
        return value
    raise _expected("string", value)


def _to_integer(value: Any) -> Any:
    cls = value.__class__
    if cls is int:
        return value
    if isinstance(value, str):
        text = value.strip()
        if _INT_RE.fullmatch(text):
            return int(text.partition(".")[0])
    elif isinstance(value, float):
        if value.is_integer():
            return int(value)
    elif isinstance(value, bool):
        pass
    elif isinstance(value, int):
        return int(value)
    elif isinstance(value, decimal.Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
    raise _expected("integer", value)


def _to_number(value: Any) -> Any:
    cls = value.__class__
    if cls is float:
        if math.isfinite(value):
            return value
        raise _expected("a finite number", value)
    if isinstance(value, bool):
        raise _expected("number", value)
    if isinstance(value, str):
        text = value.strip()
        if not _NUM_RE.fullmatch(text):
            raise _expected("number", value)
    elif not isinstance(value, int | float | decimal.Decimal):
        raise _expected("number", value)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if math.isfinite(number):
        return number
    raise _expected("a finite number", value)


def _to_boolean(value: Any) -> Any:
    if value is True or value is False:
        return value
    if isinstance(value, str):
        word = _BOOL_WORDS.get(value.strip().lower())
        if word is not None:
            return word
    elif isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return value == 1
    raise _expected("boolean (true/false, yes/no, 1/0)", value)


def _to_date(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    elif isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        return value.isoformat()
    raise _expected("date (ISO 8601, e.g. '2024-01-31')", value)


def _to_datetime(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return datetime.datetime.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    elif isinstance(value, datetime.datetime):
        return value.isoformat()
    elif isinstance(value, datetime.date):
        return datetime.datetime.combine(value, datetime.time()).isoformat()
    raise _expected("datetime (ISO 8601, e.g. '2024-01-31T12:00:00+00:00')", value)


def _to_decimal(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if _NUM_RE.fullmatch(text):
            return text
    elif isinstance(value, bool):
        pass
    elif isinstance(value, int):
        return str(value)
    elif isinstance(value, float):
        if math.isfinite(value):
            return repr(value)
    elif isinstance(value, decimal.Decimal):
        if value.is_finite():
            return str(value)
    raise _expected("decimal", value)


def _to_json(value: Any) -> Any:
    return value


_COERCERS: dict[str, Callable[[Any], Any]] = {
    "string": _to_string,
    "integer": _to_integer,
    "number": _to_number,
    "boolean": _to_boolean,
    "date": _to_date,
    "datetime": _to_datetime,
    "decimal": _to_decimal,
    "json": _to_json,
}

#: The canonical field type names, in the order documentation lists them.
FIELD_TYPES: tuple[str, ...] = tuple(_COERCERS)

#: Other names a field type may be given by (matched case-insensitively, like the canonical ones).
FIELD_TYPE_ALIASES: dict[str, str] = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "any": "json",
}
_ALIASES = FIELD_TYPE_ALIASES

# Types for which a blank string means "no value" (a CSV cell left empty).
_BLANK_IS_MISSING: frozenset[str] = frozenset(FIELD_TYPES) - {"string", "json"}


def _canonical_type(name: object) -> str | None:
    """The canonical type name for ``name`` (aliases and case folded), or None if unknown."""
    if not isinstance(name, str):
        return None
    key = name.lower()
    if key in _COERCERS:
        return key
    return _ALIASES.get(key)


def _unknown_type(name: object) -> str:
    known = ", ".join(FIELD_TYPES)
    aliases = ", ".join(_ALIASES)
    msg = f"unknown type {_show(name)} (known types: {known}; aliases: {aliases})"
    if isinstance(name, str):
        import difflib  # only for the suggestion in an error

        close = difflib.get_close_matches(name.lower(), [*FIELD_TYPES, *_ALIASES], n=1)
        if close:
            msg += f"; did you mean {close[0]!r}?"
    return msg


# --------------------------------------------------------------------------- Field


@dataclass(frozen=True)
class Field:
    """One declared field of a record.

    ``type`` is one of :data:`FIELD_TYPES` (``string``, ``integer``, ``number``, ``boolean``,
    ``date``, ``datetime``, ``decimal``, ``json``) or an alias (``str``, ``int``, ``float``,
    ``bool``, ``any``); it is stored in canonical form. Contract:

    - ``required``: a record without the field (or with a blank string for a non-string type)
      is rejected with "required field is missing" — unless a ``default`` is declared, which is
      then filled in. A missing optional field without a default stays absent from the output.
    - ``nullable``: whether an explicit ``None`` is a valid value; otherwise "null not allowed".
    - ``default``: checked and coerced when the field is built, so a bad default fails at
      declaration time, never mid-flow. :data:`MISSING` means "no default".

    Building a field with an unknown type, a bad name or a bad default raises
    :class:`~active_data_flow.errors.SpecError` listing every problem.

    >>> Field("qty", "int", default="3")
    Field(name='qty', type='integer', required=True, default=3, nullable=False)
    """

    name: str
    type: str
    required: bool = True
    default: Any = MISSING
    nullable: bool = False

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not isinstance(self.name, str) or not self.name:
            problems.append(f"field name must be a non-empty string, got {_show(self.name)}")
        label = f"field {self.name!r}"
        canonical = _canonical_type(self.type)
        if canonical is None:
            problems.append(f"{label}: {_unknown_type(self.type)}")
        else:
            object.__setattr__(self, "type", canonical)
        for flag in ("required", "nullable"):
            if not isinstance(getattr(self, flag), bool):
                problems.append(f"{label}: {flag!r} must be true or false, got {_show(getattr(self, flag))}")
        if self.default is not MISSING and canonical is not None:
            if self.default is None:
                if self.nullable is not True:
                    problems.append(f"{label}: default: null not allowed (the field is not nullable)")
            else:
                try:
                    object.__setattr__(self, "default", _COERCERS[canonical](self.default))
                except ValueError as exc:
                    problems.append(f"{label}: default: {exc}")
        if problems:
            raise SpecError(problems, where=_WHERE)

    @property
    def has_default(self) -> bool:
        """Whether a default is declared (``None`` counts as a default for a nullable field)."""
        return self.default is not MISSING

    def to_spec(self) -> dict[str, Any]:
        """The JSON-friendly spec form; flags are written only when they differ from the defaults.

        >>> Field("price", "float", required=False, nullable=True).to_spec()
        {'name': 'price', 'type': 'number', 'required': False, 'nullable': True}
        """
        spec: dict[str, Any] = {"name": self.name, "type": self.type}
        if not self.required:
            spec["required"] = False
        if self.nullable:
            spec["nullable"] = True
        if self.has_default:
            spec["default"] = copy.deepcopy(self.default)
        return spec


_FIELD_KEYS: tuple[str, ...] = ("name", "type", "required", "default", "nullable")


def _duplicates(names: list[str | None]) -> list[str]:
    """One problem per name declared more than once, naming the 1-based positions."""
    positions: dict[str, list[int]] = {}
    for index, name in enumerate(names, start=1):
        if name is not None:
            positions.setdefault(name, []).append(index)
    return [
        f"duplicate field name {name!r} (fields {' and '.join(f'#{i}' for i in where)})"
        for name, where in positions.items()
        if len(where) > 1
    ]


def _field_from_spec(entry: Mapping[Any, Any], label: str, name: Any, problems: list[str]) -> Field | None:
    """Build a Field from one spec mapping, appending every problem to ``problems``."""
    if "type" not in entry:
        problems.append(f"{label}: missing 'type' (one of {', '.join(FIELD_TYPES)})")
        return None
    kwargs = {key: entry[key] for key in ("required", "default", "nullable") if key in entry}
    try:
        return Field(name, entry["type"], **kwargs)
    except SpecError as exc:
        problems.extend(exc.problems)
        return None


# --------------------------------------------------------------------------- Schema

# One validation step per field: name, coerce, blank_is_missing, nullable, required, fill.
_Plan: TypeAlias = tuple[str, Callable[[Any], Any], bool, bool, bool, Callable[[], Any] | None]


def _filler(default: Any) -> Callable[[], Any] | None:
    if default is MISSING:
        return None
    if isinstance(default, list | dict):
        return lambda: copy.deepcopy(default)
    return lambda: default


class Schema:
    """An ordered set of :class:`Field` values and a policy for undeclared fields.

    ``extra`` says what :meth:`validate` does with fields the schema does not declare:
    ``"allow"`` (default) keeps them unchanged, ``"drop"`` leaves them out of the result,
    ``"forbid"`` rejects the record with "unexpected field (schema forbids extra fields)".
    Duplicate names or an unknown policy raise :class:`~active_data_flow.errors.SpecError`.

    >>> schema = Schema([Field("id", "integer"), Field("name", "string")], extra="drop")
    >>> schema.names
    ('id', 'name')
    >>> schema.validate({"id": "7", "name": "Ada", "junk": 1})
    {'id': 7, 'name': 'Ada'}
    """

    __slots__ = ("_by_name", "_extra", "_fields", "_plan")

    def __init__(self, fields: Iterable[Field] = (), *, extra: ExtraPolicy = "allow") -> None:
        self._fields: tuple[Field, ...] = tuple(fields)
        problems: list[str] = []
        for index, item in enumerate(self._fields, start=1):
            if not isinstance(item, Field):
                problems.append(f"field #{index}: expected a Field, got {_show(item)}")
        if extra not in _EXTRA_POLICIES:
            problems.append(
                f"extra must be one of {', '.join(map(repr, _EXTRA_POLICIES))}, got {_show(extra)}"
            )
        problems.extend(_duplicates([f.name if isinstance(f, Field) else None for f in self._fields]))
        if problems:
            raise SpecError(problems, where=_WHERE)
        self._extra: ExtraPolicy = extra
        self._by_name: dict[str, Field] = {f.name: f for f in self._fields}
        self._plan: tuple[_Plan, ...] = tuple(
            (
                f.name,
                _COERCERS[f.type],
                f.type in _BLANK_IS_MISSING,
                f.nullable,
                f.required,
                _filler(f.default),
            )
            for f in self._fields
        )

    # -- construction from the declarative spec

    @classmethod
    def from_spec(cls, spec: Any, *, extra: ExtraPolicy | None = None) -> Schema:
        """Build a schema from its spec form, reporting every problem at once.

        Accepted forms:

        - a list of ``{name, type, required?, default?, nullable?}`` mappings;
        - a mapping ``{field_name: type_name | {type, required?, default?, nullable?}}``;
        - ``{"fields": <list form>, "extra": "allow" | "forbid" | "drop"}`` (what
          :meth:`to_spec` writes for a non-default policy);
        - a :class:`Schema` (returned unchanged) or a :class:`TypedRecord` subclass.

        ``extra`` overrides the policy found in the spec. Raises
        :class:`~active_data_flow.errors.SpecError` whose ``problems`` list every unknown type, missing or
        duplicate name, unknown key and bad default.

        >>> Schema.from_spec([{"name": "id", "type": "int"}, {"name": "tags", "type": "json"}]).names
        ('id', 'tags')
        >>> try:
        ...     Schema.from_spec({"id": "intger", "n": {"required": False}})
        ... except SpecError as exc:
        ...     len(exc.problems)
        2
        """
        if isinstance(spec, Schema):
            return spec if extra is None or extra == spec.extra else Schema(spec.fields, extra=extra)
        if isinstance(spec, type) and issubclass(spec, TypedRecord):
            return cls.from_spec(spec.__schema__, extra=extra)
        problems: list[str] = []
        policy: Any = "allow"
        if isinstance(spec, Mapping) and isinstance(spec.get("fields"), list):
            for key in spec:
                if key not in ("fields", "extra"):
                    problems.append(f"unknown key {_show(key)} (accepted keys: fields, extra)")
            policy = spec.get("extra", "allow")
            spec = spec["fields"]
        if extra is not None:
            policy = extra
        if policy not in _EXTRA_POLICIES:
            problems.append(
                f"extra must be one of {', '.join(map(repr, _EXTRA_POLICIES))}, got {_show(policy)}"
            )
        fields: list[Field] = []
        if isinstance(spec, list | tuple):
            fields = _fields_from_list(spec, problems)
        elif isinstance(spec, Mapping):
            fields = _fields_from_mapping(spec, problems)
        else:
            problems.append(
                "a schema is a list of {name, type} mappings or a mapping of field name to type, "
                f"got {type(spec).__name__}"
            )
        if problems:
            raise SpecError(problems, where=_WHERE)
        return cls(fields, extra=policy)

    def to_spec(self) -> list[dict[str, Any]] | dict[str, Any]:
        """The JSON-friendly spec form; ``Schema.from_spec(s.to_spec()) == s``.

        The list form when ``extra`` is ``"allow"``, else ``{"fields": [...], "extra": ...}``.

        >>> Schema([Field("id", "integer")], extra="forbid").to_spec()
        {'fields': [{'name': 'id', 'type': 'integer'}], 'extra': 'forbid'}
        """
        fields = [f.to_spec() for f in self._fields]
        if self._extra == "allow":
            return fields
        return {"fields": fields, "extra": self._extra}

    # -- introspection

    @property
    def fields(self) -> tuple[Field, ...]:
        """The declared fields, in declaration order."""
        return self._fields

    @property
    def names(self) -> tuple[str, ...]:
        """The declared field names, in declaration order."""
        return tuple(self._by_name)

    @property
    def extra(self) -> ExtraPolicy:
        """The policy for undeclared fields: ``"allow"``, ``"forbid"`` or ``"drop"``."""
        return self._extra

    def __getitem__(self, name: str) -> Field:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(
                f"no field {name!r} in schema (fields: {', '.join(self._by_name) or '(none)'})"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Field]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schema):
            return NotImplemented
        return self._fields == other._fields and self._extra == other._extra

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Schema({list(self._fields)!r}, extra={self._extra!r})"

    # -- validation

    def validate(self, record: Mapping[str, Any]) -> Record:
        """Return a new dict with every declared field checked and coerced; never mutates ``record``.

        Strings coerce to the declared type (``"42"`` → ``42``, ``"3.5"`` → ``3.5``,
        ``"yes"`` → ``True``); dates and datetimes are normalised to ISO-8601 strings; decimals
        stay strings with their exact digits; a blank string counts as missing for every type
        but ``string`` and ``json``; defaults are filled in. Raises
        :class:`~active_data_flow.errors.RecordValidationError` naming the *first* bad field and why.

        >>> Schema.from_spec({"n": "integer"}).validate({"n": "abc"})
        Traceback (most recent call last):
        ...
        active_data_flow.errors.RecordValidationError: field 'n': expected integer, got 'abc'
        """
        return self._check(record, None)

    def errors(self, record: Mapping[str, Any]) -> list[RecordValidationError]:
        """Every problem of ``record`` (empty when it is valid), without raising.

        >>> schema = Schema.from_spec({"a": "integer", "b": "boolean"}, extra="forbid")
        >>> [str(e) for e in schema.errors({"a": "x", "c": 1})]
        ["field 'a': expected integer, got 'x'", "field 'b': required field is missing", "field 'c': unexpected field (schema forbids extra fields)"]
        """
        problems: list[RecordValidationError] = []
        self._check(record, problems)
        return problems

    def is_valid(self, record: Mapping[str, Any]) -> bool:
        """Whether :meth:`validate` would accept ``record``."""
        return not self.errors(record)

    def _check(self, record: Mapping[str, Any], problems: list[RecordValidationError] | None) -> Record:
        """Validate ``record``; raise on the first problem, or collect them all into ``problems``."""
        if not isinstance(record, Mapping):
            error = RecordValidationError(
                "(record)", f"expected a mapping of field names to values, got {type(record).__name__}"
            )
            if problems is None:
                raise error
            problems.append(error)
            return {}
        out: Record = dict(record) if self._extra == "allow" else {}
        get = record.get
        for name, coerce, blank_is_missing, nullable, required, fill in self._plan:
            value = get(name, _ABSENT)
            if value is None:
                if nullable:
                    out[name] = None
                    continue
                reason = "null not allowed"
            elif value is _ABSENT or (blank_is_missing and value.__class__ is str and not value.strip()):
                if fill is not None:
                    out[name] = fill()
                    continue
                if not required:
                    out.pop(name, None)
                    continue
                reason = "required field is missing"
            else:
                try:
                    out[name] = coerce(value)
                    continue
                except ValueError as exc:
                    reason = str(exc)
            error = RecordValidationError(name, reason)
            if problems is None:
                raise error
            problems.append(error)
        if self._extra == "forbid" and not self._by_name.keys() >= record.keys():
            for key in record:
                if key not in self._by_name:
                    error = RecordValidationError(str(key), "unexpected field (schema forbids extra fields)")
                    if problems is None:
                        raise error
                    problems.append(error)
        return out


def _fields_from_list(entries: Iterable[Any], problems: list[str]) -> list[Field]:
    fields: list[Field] = []
    names: list[str | None] = []
    for index, entry in enumerate(entries, start=1):
        if not isinstance(entry, Mapping):
            problems.append(f"field #{index}: expected a mapping with 'name' and 'type', got {_show(entry)}")
            names.append(None)
            continue
        name = entry.get("name")
        valid_name = isinstance(name, str) and bool(name)
        names.append(name if isinstance(name, str) and valid_name else None)
        label = f"field {name!r}" if valid_name else f"field #{index}"
        for key in entry:
            if key not in _FIELD_KEYS:
                problems.append(
                    f"{label}: unknown key {_show(key)} (accepted keys: {', '.join(_FIELD_KEYS)})"
                )
        if "name" not in entry:
            problems.append(f"{label}: missing 'name'")
            continue
        if not valid_name:
            problems.append(f"{label}: 'name' must be a non-empty string, got {_show(name)}")
            continue
        field = _field_from_spec(entry, label, name, problems)
        if field is not None:
            fields.append(field)
    problems.extend(_duplicates(names))
    return fields


def _fields_from_mapping(entries: Mapping[Any, Any], problems: list[str]) -> list[Field]:
    fields: list[Field] = []
    accepted = tuple(k for k in _FIELD_KEYS if k != "name")
    for name, entry in entries.items():
        if not isinstance(name, str) or not name:
            problems.append(f"field name must be a non-empty string, got {_show(name)}")
            continue
        label = f"field {name!r}"
        if isinstance(entry, str):
            entry = {"type": entry}
        elif not isinstance(entry, Mapping):
            problems.append(f"{label}: expected a type name or a mapping with 'type', got {_show(entry)}")
            continue
        for key in entry:
            if key not in accepted:
                problems.append(f"{label}: unknown key {_show(key)} (accepted keys: {', '.join(accepted)})")
        field = _field_from_spec(entry, label, name, problems)
        if field is not None:
            fields.append(field)
    return fields


# --------------------------------------------------------------------------- TypedRecord

_ANNOTATION_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    datetime.date: "date",
    datetime.datetime: "datetime",
    decimal.Decimal: "decimal",
    Any: "json",
    object: "json",
    dict: "json",
    list: "json",
}


def _type_name_of(annotation: Any) -> str | None:
    """The field type name of a (non-Optional) annotation, or None if it has none."""
    try:
        name = _ANNOTATION_TYPES.get(annotation)
    except TypeError:  # unhashable annotation objects
        name = None
    if name is None and typing.get_origin(annotation) in (dict, list):
        name = "json"
    return name


def _field_from_annotation(name: str, annotation: Any, default: Any) -> Field | str | None:
    """A Field for one annotated attribute, a problem message, or None for a ClassVar."""
    origin = typing.get_origin(annotation)
    if origin is ClassVar:
        return None
    if origin is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
        origin = typing.get_origin(annotation)
    nullable = False
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(annotation)
        members = [a for a in args if a is not type(None)]
        nullable = len(members) < len(args)
        if len(members) != 1:
            return f"field {name!r}: unsupported annotation {annotation!r} (a field has exactly one type, optionally `| None`)"
        annotation = members[0]
    type_name = _type_name_of(annotation)
    if type_name is None:
        supported = (
            "str, int, float, bool, datetime.date, datetime.datetime, decimal.Decimal, dict, list, Any"
        )
        return f"field {name!r}: unsupported annotation {annotation!r} (supported: {supported}, each optionally `| None`)"
    required = not nullable and default is MISSING
    try:
        return Field(name, type_name, required=required, default=default, nullable=nullable)
    except SpecError as exc:
        return "; ".join(exc.problems)


def _class_default(cls: type[TypedRecord], name: str) -> Any:
    """The class-level default of field ``name`` (inherited from record classes only), or MISSING.

    Attributes of TypedRecord itself (``schema``, ``validate``…) are not defaults, so those
    names stay usable as field names.
    """
    for klass in cls.__mro__:
        if klass is TypedRecord:
            break
        if name in klass.__dict__:
            return klass.__dict__[name]
    return MISSING


def _schema_of_class(cls: type[TypedRecord], extra: ExtraPolicy | None) -> Schema:
    """Derive the schema of a TypedRecord subclass from its annotations and class defaults."""
    found: dict[str, Field] = {}
    problems: list[str] = []
    for klass in reversed(cls.__mro__):
        if not issubclass(klass, TypedRecord) or klass is TypedRecord:
            continue
        module = sys.modules.get(klass.__module__)
        module_ns: dict[str, Any] = dict(vars(module)) if module is not None else {}
        for name, annotation in inspect.get_annotations(klass).items():
            if name.startswith("_"):
                continue
            if isinstance(annotation, str):
                # As typing.get_type_hints does for classes: module names win over class attributes.
                try:
                    annotation = eval(annotation, dict(vars(klass)), module_ns)
                except Exception as exc:
                    problems.append(f"field {name!r}: cannot resolve annotation {annotation!r}: {exc}")
                    continue
            result = _field_from_annotation(name, annotation, _class_default(cls, name))
            if isinstance(result, str):
                problems.append(result)
            elif result is not None:
                found[name] = result
    if extra is None:
        extra = cls.__schema__.extra  # still the parent's schema here
    if extra not in _EXTRA_POLICIES:
        problems.append(f"extra must be one of {', '.join(map(repr, _EXTRA_POLICIES))}, got {_show(extra)}")
    if problems:
        raise SpecError(problems, where=f"record class {cls.__qualname__}")
    return Schema(found.values(), extra=extra)


class TypedRecord:
    """Declare a record schema as a class; it is derived once, when the class is defined.

    Each annotated attribute is a field: ``str``, ``int``, ``float``, ``bool``,
    ``datetime.date``, ``datetime.datetime``, ``decimal.Decimal`` or ``dict``/``list``/``Any``
    (``json``). ``X | None`` (or ``Optional[X]``) makes a field nullable and not required; a
    class-level default makes it not required and is filled in. Names starting with ``_`` and
    ``ClassVar`` annotations are not fields. Subclasses inherit and extend their parents' fields.
    The undeclared-field policy is a class keyword: ``class Order(TypedRecord, extra="forbid")``.
    An unsupported annotation or a bad default raises :class:`~active_data_flow.errors.SpecError` at class
    definition. Records stay plain dicts: the class is not instantiated.

    >>> class Order(TypedRecord, extra="drop"):
    ...     id: int
    ...     price: float | None = None
    ...     currency: str = "EUR"
    >>> Order.validate({"id": "1", "junk": True})
    {'id': 1, 'price': None, 'currency': 'EUR'}
    >>> Order.schema().names
    ('id', 'price', 'currency')
    """

    __schema__: ClassVar[Schema] = Schema()

    def __init_subclass__(cls, *, extra: ExtraPolicy | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__schema__ = _schema_of_class(cls, extra)

    def __init__(self) -> None:
        raise TypeError(
            f"{type(self).__name__} declares a record schema and is not instantiated; "
            f"records are plain dicts: use {type(self).__name__}.validate(record)"
        )

    @classmethod
    def schema(cls) -> Schema:
        """The :class:`Schema` derived from the class annotations."""
        return cls.__schema__

    @classmethod
    def validate(cls, record: Mapping[str, Any]) -> Record:
        """Same contract as :meth:`Schema.validate` with this class's schema."""
        return cls.__schema__.validate(record)

    @classmethod
    def errors(cls, record: Mapping[str, Any]) -> list[RecordValidationError]:
        """Same contract as :meth:`Schema.errors` with this class's schema."""
        return cls.__schema__.errors(record)


@dataclass
class DeadLetter:
    """A record (or raw input) that could not go through, and why.

    ``origin`` says where it came from (``{"file": …, "line": …}``), ``stage`` is
    ``source``, ``step`` or ``sink``.
    """

    record: Any
    reason: str
    stage: str
    error_type: str = ""
    origin: dict[str, Any] = field(default_factory=dict)
    step: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stage": self.stage,
            "reason": self.reason,
            "error_type": self.error_type,
            "record": self.record,
        }
        if self.origin:
            out["origin"] = self.origin
        if self.step is not None:
            out["step"] = self.step
        return out
