"""Records and schemas: coercion, error reasons, spec forms, TypedRecord, extra-field policy."""

from __future__ import annotations

import datetime
import decimal
import doctest
import json
import typing
from typing import Annotated, Any, ClassVar, Optional

import pytest

import active_data_flow.record
from active_data_flow.errors import RecordValidationError, SpecError
from active_data_flow.record import FIELD_TYPES, MISSING, Field, Schema, TypedRecord

D = decimal.Decimal


def _one(type_name: str, **flags: Any) -> Schema:
    return Schema([Field("v", type_name, **flags)])


# --------------------------------------------------------------------------- coercion


@pytest.mark.parametrize(
    ("type_name", "given", "expected"),
    [
        ("string", "abc", "abc"),
        ("string", "", ""),
        ("string", "  padded ", "  padded "),
        ("integer", "42", 42),
        ("integer", " -7 ", -7),
        ("integer", "+3", 3),
        ("integer", "42.0", 42),
        ("integer", 42.0, 42),
        ("integer", 7, 7),
        ("integer", D("5"), 5),
        ("integer", "123456789012345678901234567890", 123456789012345678901234567890),
        ("number", "3.5", 3.5),
        ("number", "1e3", 1000.0),
        ("number", ".5", 0.5),
        ("number", "-2", -2.0),
        ("number", 3, 3.0),
        ("number", 2.25, 2.25),
        ("number", D("2.25"), 2.25),
        ("boolean", "true", True),
        ("boolean", "False", False),
        ("boolean", "1", True),
        ("boolean", "0", False),
        ("boolean", "yes", True),
        ("boolean", " NO ", False),
        ("boolean", 1, True),
        ("boolean", 0, False),
        ("boolean", True, True),
        ("date", "2024-01-31", "2024-01-31"),
        ("date", "20240131", "2024-01-31"),
        ("date", datetime.date(2024, 1, 31), "2024-01-31"),
        ("datetime", "2024-01-31T12:30:00Z", "2024-01-31T12:30:00+00:00"),
        ("datetime", "2024-01-31 12:30", "2024-01-31T12:30:00"),
        ("datetime", "2024-01-31", "2024-01-31T00:00:00"),
        ("datetime", datetime.datetime(2024, 1, 31, 12), "2024-01-31T12:00:00"),
        ("datetime", datetime.date(2024, 1, 31), "2024-01-31T00:00:00"),
        ("decimal", "1.50", "1.50"),
        ("decimal", " -0.10 ", "-0.10"),
        ("decimal", "12345678901234567890.000000001", "12345678901234567890.000000001"),
        ("decimal", 3, "3"),
        ("decimal", 0.1, "0.1"),
        ("decimal", D("2.500"), "2.500"),
        ("json", {"a": [1, None]}, {"a": [1, None]}),
        ("json", "", ""),
        ("any", [1, "x"], [1, "x"]),
        ("str", "x", "x"),
        ("int", "5", 5),
        ("float", "5", 5.0),
        ("bool", "yes", True),
    ],
)
def test_values_coerce_to_the_declared_type(type_name: str, given: Any, expected: Any) -> None:
    out = _one(type_name).validate({"v": given})
    assert out == {"v": expected}
    assert type(out["v"]) is type(expected)


@pytest.mark.parametrize(
    ("type_name", "given", "reason"),
    [
        ("string", 42, "expected string, got 42"),
        ("integer", "abc", "expected integer, got 'abc'"),
        ("integer", "4.5", "expected integer, got '4.5'"),
        ("integer", 4.5, "expected integer, got 4.5"),
        ("integer", True, "expected integer, got True"),
        ("integer", "1_000", "expected integer, got '1_000'"),
        ("integer", "٤٢", "expected integer, got '٤٢'"),
        ("integer", [1], "expected integer, got [1]"),
        ("number", "abc", "expected number, got 'abc'"),
        ("number", "nan", "expected number, got 'nan'"),
        ("number", "0x10", "expected number, got '0x10'"),
        ("number", "1e999", "expected a finite number, got '1e999'"),
        ("number", float("inf"), "expected a finite number, got inf"),
        ("number", False, "expected number, got False"),
        ("boolean", "maybe", "expected boolean (true/false, yes/no, 1/0), got 'maybe'"),
        ("boolean", 2, "expected boolean (true/false, yes/no, 1/0), got 2"),
        ("date", "31/01/2024", "expected date (ISO 8601, e.g. '2024-01-31'), got '31/01/2024'"),
        ("date", "2024-02-30", "expected date (ISO 8601, e.g. '2024-01-31'), got '2024-02-30'"),
        (
            "date",
            datetime.datetime(2024, 1, 31, 12),
            "expected date (ISO 8601, e.g. '2024-01-31'), got datetime.datetime(2024, 1, 31, 12, 0)",
        ),
        (
            "datetime",
            "yesterday",
            "expected datetime (ISO 8601, e.g. '2024-01-31T12:00:00+00:00'), got 'yesterday'",
        ),
        ("decimal", "1.2.3", "expected decimal, got '1.2.3'"),
        ("decimal", D("NaN"), "expected decimal, got Decimal('NaN')"),
        ("decimal", True, "expected decimal, got True"),
    ],
)
def test_bad_values_name_the_field_and_the_reason(type_name: str, given: Any, reason: str) -> None:
    with pytest.raises(RecordValidationError) as info:
        _one(type_name).validate({"v": given})
    assert info.value.field == "v"
    assert info.value.reason == reason
    assert str(info.value) == f"field 'v': {reason}"


def test_long_bad_values_are_cut_in_the_message() -> None:
    with pytest.raises(RecordValidationError) as info:
        _one("integer").validate({"v": "x" * 500})
    assert info.value.reason.startswith("expected integer, got 'xxxx")
    assert info.value.reason.endswith("…")
    assert len(info.value.reason) < 100


def test_every_field_type_has_a_canonical_name() -> None:
    assert FIELD_TYPES == ("string", "integer", "number", "boolean", "date", "datetime", "decimal", "json")
    assert Field("x", "INTEGER").type == "integer"
    assert Field("x", "any").type == "json"


# --------------------------------------------------------------------------- missing, blank, null, defaults


@pytest.mark.parametrize("type_name", ["integer", "number", "boolean", "date", "datetime", "decimal"])
def test_blank_string_counts_as_missing_for_non_string_types(type_name: str) -> None:
    with pytest.raises(RecordValidationError, match=r"^field 'v': required field is missing$"):
        _one(type_name).validate({"v": "  "})
    assert _one(type_name, required=False).validate({"v": "", "w": 1}) == {"w": 1}


def test_blank_string_takes_the_default() -> None:
    assert _one("integer", default=5).validate({"v": ""}) == {"v": 5}


def test_blank_string_is_a_value_for_strings() -> None:
    assert _one("string").validate({"v": ""}) == {"v": ""}


def test_missing_required_field() -> None:
    with pytest.raises(RecordValidationError) as info:
        Schema.from_spec({"id": "integer", "name": "string"}).validate({"id": 1})
    assert (info.value.field, info.value.reason) == ("name", "required field is missing")


def test_missing_optional_field_without_default_stays_absent() -> None:
    assert _one("integer", required=False).validate({}) == {}


def test_null_needs_a_nullable_field() -> None:
    with pytest.raises(RecordValidationError, match=r"^field 'v': null not allowed$"):
        _one("integer", required=False).validate({"v": None})
    assert _one("integer", nullable=True).validate({"v": None}) == {"v": None}


def test_defaults_are_coerced_at_declaration_and_filled_in() -> None:
    schema = Schema(
        [
            Field("n", "integer", default="3"),
            Field("day", "date", default=datetime.date(2024, 1, 2)),
            Field("note", "string", nullable=True, default=None),
        ]
    )
    assert schema["n"].default == 3
    assert schema.validate({}) == {"n": 3, "day": "2024-01-02", "note": None}


def test_mutable_defaults_are_not_shared_between_records() -> None:
    schema = _one("json", default={"tags": []})
    first = schema.validate({})
    first["v"]["tags"].append("x")
    assert schema.validate({}) == {"v": {"tags": []}}


def test_validate_returns_a_new_dict_and_leaves_the_input_alone() -> None:
    record = {"id": "1", "extra": "kept"}
    out = Schema.from_spec({"id": "integer"}).validate(record)
    assert out == {"id": 1, "extra": "kept"}
    assert out is not record
    assert record == {"id": "1", "extra": "kept"}


def test_a_record_that_is_not_a_mapping_is_rejected() -> None:
    schema = Schema.from_spec({"id": "integer"})
    with pytest.raises(RecordValidationError) as info:
        schema.validate([1, 2])  # type: ignore[arg-type]
    assert info.value.field == "(record)"
    assert info.value.reason == "expected a mapping of field names to values, got list"
    assert [e.reason for e in schema.errors("x")] == [  # type: ignore[arg-type]
        "expected a mapping of field names to values, got str"
    ]


# --------------------------------------------------------------------------- extra policy


def test_extra_fields_are_kept_by_default() -> None:
    assert Schema.from_spec({"id": "int"}).validate({"id": "1", "x": "y"}) == {"id": 1, "x": "y"}


def test_extra_drop_leaves_undeclared_fields_out() -> None:
    schema = Schema([Field("id", "integer")], extra="drop")
    assert schema.validate({"x": 1, "id": "2", "y": 3}) == {"id": 2}


def test_extra_forbid_rejects_undeclared_fields() -> None:
    schema = Schema([Field("id", "integer"), Field("n", "integer", default=0)], extra="forbid")
    assert schema.validate({"id": 1}) == {"id": 1, "n": 0}
    with pytest.raises(RecordValidationError) as info:
        schema.validate({"id": 1, "junk": 2})
    assert str(info.value) == "field 'junk': unexpected field (schema forbids extra fields)"


def test_unknown_extra_policy_is_a_spec_error() -> None:
    with pytest.raises(SpecError) as info:
        Schema([], extra="ignore")  # type: ignore[arg-type]
    assert info.value.problems == ["extra must be one of 'allow', 'forbid', 'drop', got 'ignore'"]


# --------------------------------------------------------------------------- errors()


def test_errors_returns_every_problem_without_raising() -> None:
    schema = Schema.from_spec(
        {"id": "integer", "name": "string", "paid": "boolean", "note": {"type": "string", "required": False}},
        extra="forbid",
    )
    problems = schema.errors({"id": "abc", "paid": None, "note": "ok", "junk": 1, "more": 2})
    assert [(e.field, e.reason) for e in problems] == [
        ("id", "expected integer, got 'abc'"),
        ("name", "required field is missing"),
        ("paid", "null not allowed"),
        ("junk", "unexpected field (schema forbids extra fields)"),
        ("more", "unexpected field (schema forbids extra fields)"),
    ]
    assert all(isinstance(e, RecordValidationError) for e in problems)
    assert not schema.is_valid({"id": 1})
    assert schema.errors({"id": 1, "name": "n", "paid": "no"}) == []
    assert schema.is_valid({"id": 1, "name": "n", "paid": "no"})


def test_validate_raises_on_the_first_bad_field() -> None:
    schema = Schema.from_spec({"a": "integer", "b": "integer"})
    with pytest.raises(RecordValidationError) as info:
        schema.validate({"a": "x", "b": "y"})
    assert info.value.field == "a"


# --------------------------------------------------------------------------- spec forms


def test_list_and_mapping_spec_forms_build_the_same_schema() -> None:
    as_list = Schema.from_spec(
        [
            {"name": "id", "type": "int"},
            {"name": "price", "type": "number", "required": False, "nullable": True},
            {"name": "qty", "type": "integer", "default": "1"},
        ]
    )
    as_mapping = Schema.from_spec(
        {
            "id": "integer",
            "price": {"type": "float", "required": False, "nullable": True},
            "qty": {"type": "integer", "default": 1},
        }
    )
    assert as_list == as_mapping
    assert as_list.names == ("id", "price", "qty")
    assert as_list["price"] == Field("price", "number", required=False, nullable=True)
    assert "qty" in as_list and "nope" not in as_list
    assert len(as_list) == 3
    assert [f.name for f in as_list] == ["id", "price", "qty"]


def test_unknown_field_name_lookup_lists_the_fields() -> None:
    with pytest.raises(KeyError, match="no field 'nope' in schema \\(fields: id\\)"):
        Schema.from_spec({"id": "integer"})["nope"]


def test_list_spec_reports_every_problem_at_once() -> None:
    with pytest.raises(SpecError) as info:
        Schema.from_spec(
            [
                {"name": "id", "type": "intger"},
                {"type": "string"},
                {"name": "id", "type": "integer"},
                {"name": "when"},
                {"name": "n", "type": "integer", "requird": False},
                {"name": "m", "type": "integer", "default": "many"},
                {"name": "flag", "type": "boolean", "required": "no"},
                "oops",
                {"name": "", "type": "string"},
            ]
        )
    assert info.value.problems == [
        "field 'id': unknown type 'intger' (known types: string, integer, number, boolean, date, "
        "datetime, decimal, json; aliases: str, int, float, bool, any); did you mean 'integer'?",
        "field #2: missing 'name'",
        "field 'when': missing 'type' (one of string, integer, number, boolean, date, datetime, decimal, json)",
        "field 'n': unknown key 'requird' (accepted keys: name, type, required, default, nullable)",
        "field 'm': default: expected integer, got 'many'",
        "field 'flag': 'required' must be true or false, got 'no'",
        "field #8: expected a mapping with 'name' and 'type', got 'oops'",
        "field #9: 'name' must be a non-empty string, got ''",
        "duplicate field name 'id' (fields #1 and #3)",
    ]
    assert str(info.value).startswith("invalid configuration for record schema: field 'id': unknown type")


def test_mapping_spec_reports_every_problem_at_once() -> None:
    with pytest.raises(SpecError) as info:
        Schema.from_spec(
            {
                "id": "text",
                "n": {"required": False},
                "x": 5,
                "y": {"type": "date", "default": "someday", "name": "y"},
                "z": {"type": "integer", "default": None},
            }
        )
    assert info.value.problems == [
        "field 'id': unknown type 'text' (known types: string, integer, number, boolean, date, "
        "datetime, decimal, json; aliases: str, int, float, bool, any)",
        "field 'n': missing 'type' (one of string, integer, number, boolean, date, datetime, decimal, json)",
        "field 'x': expected a type name or a mapping with 'type', got 5",
        "field 'y': unknown key 'name' (accepted keys: type, required, default, nullable)",
        "field 'y': default: expected date (ISO 8601, e.g. '2024-01-31'), got 'someday'",
        "field 'z': default: null not allowed (the field is not nullable)",
    ]


@pytest.mark.parametrize("spec", [42, "id: integer", None])
def test_a_spec_that_is_neither_list_nor_mapping_is_rejected(spec: Any) -> None:
    with pytest.raises(SpecError) as info:
        Schema.from_spec(spec)
    assert info.value.problems == [
        "a schema is a list of {name, type} mappings or a mapping of field name to type, "
        f"got {type(spec).__name__}"
    ]


def test_wrapper_spec_form_carries_the_extra_policy() -> None:
    schema = Schema.from_spec({"fields": [{"name": "id", "type": "integer"}], "extra": "drop"})
    assert schema.extra == "drop"
    assert Schema.from_spec({"fields": [], "extra": "drop"}, extra="forbid").extra == "forbid"
    with pytest.raises(SpecError) as info:
        Schema.from_spec({"fields": [{"name": "id", "type": "blob"}], "extra": "maybe", "strict": True})
    assert info.value.problems[0] == "unknown key 'strict' (accepted keys: fields, extra)"
    assert info.value.problems[1] == "extra must be one of 'allow', 'forbid', 'drop', got 'maybe'"
    assert info.value.problems[2].startswith("field 'id': unknown type 'blob'")


def test_a_field_may_be_called_fields_in_the_mapping_form() -> None:
    assert Schema.from_spec({"fields": "json", "extra": "string"}).names == ("fields", "extra")


@pytest.mark.parametrize("extra", ["allow", "forbid", "drop"])
def test_to_spec_round_trips_through_json(extra: Any) -> None:
    schema = Schema(
        [
            Field("id", "int"),
            Field("price", "decimal", required=False, nullable=True),
            Field("day", "date", default=datetime.date(2024, 5, 6)),
            Field("tags", "json", default=["a"]),
            Field("note", "string", nullable=True, default=None),
        ],
        extra=extra,
    )
    spec = json.loads(json.dumps(schema.to_spec()))
    assert Schema.from_spec(spec) == schema
    fields = spec if extra == "allow" else spec["fields"]
    assert fields[0] == {"name": "id", "type": "integer"}
    assert fields[1] == {"name": "price", "type": "decimal", "required": False, "nullable": True}
    assert fields[2] == {"name": "day", "type": "date", "default": "2024-05-06"}
    if extra != "allow":
        assert spec["extra"] == extra


def test_from_spec_accepts_a_schema_or_a_record_class() -> None:
    schema = Schema([Field("id", "integer")])
    assert Schema.from_spec(schema) is schema
    assert Schema.from_spec(schema, extra="forbid").extra == "forbid"

    class Row(TypedRecord):
        id: int

    assert Schema.from_spec(Row) == schema


# --------------------------------------------------------------------------- Field and Schema constructors


def test_field_with_unknown_type_says_what_is_known() -> None:
    with pytest.raises(SpecError) as info:
        Field("when", "datetim")
    assert info.value.problems == [
        "field 'when': unknown type 'datetim' (known types: string, integer, number, boolean, date, "
        "datetime, decimal, json; aliases: str, int, float, bool, any); did you mean 'datetime'?"
    ]


def test_field_defaults() -> None:
    f = Field("id", "integer")
    assert (f.required, f.nullable, f.default, f.has_default) == (True, False, MISSING, False)
    assert Field("n", "integer", nullable=True, default=None).has_default


def test_schema_rejects_duplicate_names() -> None:
    with pytest.raises(SpecError) as info:
        Schema([Field("a", "string"), Field("b", "string"), Field("a", "integer")])
    assert info.value.problems == ["duplicate field name 'a' (fields #1 and #3)"]


def test_schema_repr_shows_fields_and_policy() -> None:
    assert repr(Schema([Field("a", "str")], extra="drop")) == (
        "Schema([Field(name='a', type='string', required=True, default=MISSING, nullable=False)], extra='drop')"
    )


# --------------------------------------------------------------------------- TypedRecord


class Order(TypedRecord):
    id: int
    name: str
    price: float | None = None
    created: datetime.date
    amount: decimal.Decimal = decimal.Decimal("0.00")
    paid: bool = False
    meta: dict[str, Any]
    tags: list[str] | None
    seen_at: Optional[datetime.datetime]  # noqa: UP045 - the typing spelling must work too
    label: Annotated[str, "shown in the UI"] = "-"
    registry: ClassVar[dict[str, int]] = {}
    _cache: int = 0


def test_typed_record_derives_fields_from_annotations() -> None:
    schema = Order.schema()
    assert schema is Order.__schema__
    assert schema.names == (
        "id",
        "name",
        "price",
        "created",
        "amount",
        "paid",
        "meta",
        "tags",
        "seen_at",
        "label",
    )
    assert schema["id"] == Field("id", "integer")
    assert schema["name"] == Field("name", "string")
    assert schema["price"] == Field("price", "number", required=False, nullable=True, default=None)
    assert schema["created"] == Field("created", "date")
    assert schema["amount"] == Field("amount", "decimal", required=False, default="0.00")
    assert schema["paid"] == Field("paid", "boolean", required=False, default=False)
    assert schema["meta"] == Field("meta", "json")
    assert schema["tags"] == Field("tags", "json", required=False, nullable=True)
    assert schema["seen_at"] == Field("seen_at", "datetime", required=False, nullable=True)
    assert schema["label"] == Field("label", "string", required=False, default="-")
    assert schema.extra == "allow"


def test_typed_record_validates_to_a_plain_dict() -> None:
    out = Order.validate({"id": "9", "name": "n", "created": "2024-03-01", "meta": {"k": 1}, "x": 1})
    assert out == {
        "id": 9,
        "name": "n",
        "created": "2024-03-01",
        "meta": {"k": 1},
        "x": 1,
        "price": None,
        "amount": "0.00",
        "paid": False,
        "label": "-",
    }
    assert type(out) is dict
    assert [e.field for e in Order.errors({"id": "x", "name": "n", "meta": {}})] == ["id", "created"]
    with pytest.raises(RecordValidationError, match=r"^field 'created': required field is missing$"):
        Order.validate({"id": 1, "name": "n", "meta": {}})


def test_typed_record_subclasses_extend_fields_and_inherit_the_extra_policy() -> None:
    class Base(TypedRecord, extra="forbid"):
        id: int
        kind: str = "base"

    class Child(Base):
        kind: str = "child"
        size: int | None = None

    class Loose(Child, extra="drop"):
        pass

    assert Child.schema().names == ("id", "kind", "size")
    assert Child.schema()["kind"].default == "child"
    assert Child.schema().extra == "forbid"
    assert Loose.schema().extra == "drop"
    assert Base.schema().names == ("id", "kind")
    with pytest.raises(RecordValidationError, match="unexpected field"):
        Child.validate({"id": 1, "other": 2})


def test_typed_record_reports_every_bad_annotation_at_definition() -> None:
    with pytest.raises(SpecError) as info:

        class Bad(TypedRecord):
            a: int | str
            b: bytes
            c: int = "many"  # type: ignore[assignment]
            d: int = None  # type: ignore[assignment]
            e: NoSuchType  # type: ignore[name-defined]  # noqa: F821

    problems = info.value.problems
    assert len(problems) == 5
    assert problems[0].startswith("field 'a': unsupported annotation int | str (a field has exactly one type")
    assert problems[1].startswith("field 'b': unsupported annotation <class 'bytes'> (supported: str, int")
    assert problems[2] == "field 'c': default: expected integer, got 'many'"
    assert problems[3] == "field 'd': default: null not allowed (the field is not nullable)"
    assert (
        problems[4] == "field 'e': cannot resolve annotation 'NoSuchType': name 'NoSuchType' is not defined"
    )
    assert "record class " in str(info.value) and "Bad" in str(info.value)


def test_typed_record_with_evaluated_annotations() -> None:
    # Classes built without `from __future__ import annotations` carry real type objects.
    cls = typing.cast(
        "type[TypedRecord]",
        type(
            "Evaluated",
            (TypedRecord,),
            {"__annotations__": {"id": int, "note": typing.Optional[str], "n": float}, "n": 1.5},  # noqa: UP045
        ),
    )
    assert cls.schema().to_spec() == [
        {"name": "id", "type": "integer"},
        {"name": "note", "type": "string", "required": False, "nullable": True},
        {"name": "n", "type": "number", "required": False, "default": 1.5},
    ]


def test_typed_record_method_names_are_usable_as_field_names() -> None:
    class Doc(TypedRecord):
        schema: str  # type: ignore[assignment]
        errors: int  # type: ignore[assignment]

    assert Doc.__schema__["schema"] == Field("schema", "string")
    assert Doc.__schema__["errors"] == Field("errors", "integer")


def test_typed_record_is_not_instantiated() -> None:
    with pytest.raises(TypeError, match=r"Order declares a record schema .* use Order.validate\(record\)"):
        Order()


def test_typed_record_base_has_an_empty_schema() -> None:
    assert TypedRecord.schema() == Schema()
    assert TypedRecord.validate({"a": 1}) == {"a": 1}


# --------------------------------------------------------------------------- docs


def test_docstring_examples_hold() -> None:
    result = doctest.testmod(active_data_flow.record, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10
    assert result.failed == 0
