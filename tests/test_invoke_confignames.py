"""How spin.toml variables name configuration paths (active_data_flow.handlers.confignames), and how X-ADF-*
headers name a flow's declared parameters — the only thing a header may set
(active_data_flow.handlers.invoke.params)."""

from __future__ import annotations

from typing import Any

import pytest

from active_data_flow.handlers.confignames import expand_dotted, flow_slug, resolve_words, variables_config
from active_data_flow.handlers.invoke.errors import BadRequest
from active_data_flow.handlers.invoke.params import RefusedRequest, RequestParams, request_values
from active_data_flow.spec import parse_params

SPEC: dict[str, Any] = {
    "name": "orders-to-db",
    "source": {"type": "file", "path": "in.csv"},
    "steps": [{"type": "filter", "field": "status", "op": "eq", "value": "paid"}],
    "sink": {"type": "file", "path": "out.jsonl"},
    "dead_letter": {"type": "file", "path": "dead.jsonl"},
    "runtime": {"batch_size": 100},
    "config": {"api_base": "https://x", "limits": {"max_rows": 5}},
}


@pytest.mark.parametrize(
    ("words", "path"),
    [
        ("sink_path", ["sink", "path"]),
        ("sink_mode", ["sink", "mode"]),  # an attribute of the file sink, not in the spec
        ("runtime_batch_size", ["runtime", "batch_size"]),
        ("runtime_max_dead_letters", ["runtime", "max_dead_letters"]),
        ("dead_letter_path", ["dead_letter", "path"]),
        ("steps_0_value", ["steps", "0", "value"]),
        ("steps_0", ["steps", "0"]),
        ("source_split_bytes", ["source", "split_bytes"]),
        ("config_api_base", ["config", "api_base"]),
        ("config_limits_max_rows", ["config", "limits", "max_rows"]),
        ("config_new_key", ["config", "new_key"]),  # free-form: the rest is one key
        ("description", ["description"]),
        ("sink", ["sink"]),
    ],
)
def test_words_resolve_against_the_flow_structure(words: str, path: list[str]) -> None:
    assert resolve_words(words.split("_"), SPEC) == path


@pytest.mark.parametrize("words", ["name", "sink_nonsense", "runtime_fast", "steps_x_value", "kv_store", "description_x"])
def test_words_that_name_nothing_resolve_to_none(words: str) -> None:
    assert resolve_words(words.split("_"), SPEC) is None


def test_hyphens_split_words_like_underscores_do() -> None:
    assert resolve_words(["runtime", "batch", "size"], SPEC) == ["runtime", "batch_size"]


def test_flow_slug() -> None:
    assert flow_slug("orders-to-db") == "orders_to_db"
    assert flow_slug("Orders..V2") == "orders_v2"


def test_variables_in_precedence_order_with_origins_and_ignored_names() -> None:
    variables = {
        "adf_flow_orders_to_db_sink_path": "scoped.jsonl",
        "adf_sink_path": "generic.jsonl",
        "adf_json": '{"runtime": {"batch_size": 7}, "sink.mode": "append"}',
        "adf_flow_orders_to_db_json": '{"runtime.batch_size": 8}',
        "adf_runtime_batch_size": "9",
        "adf_heartbeat_token": "not config",
        "adf_flow_other_sink_path": "someone else's",
        "adf_orders_to_db__runtime__retries": "2",
        "adf__runtime__retries": "1",
        "adf_name": "renamed",
        "spin_thing": "x",
    }
    additions, ignored = variables_config(variables, "orders-to-db", SPEC)
    assert [origin for _, origin in additions] == [
        "variable adf_json",
        "variable adf__runtime__retries",
        "variable adf_runtime_batch_size",
        "variable adf_sink_path",
        "variable adf_flow_orders_to_db_json",
        "variable adf_flow_orders_to_db_sink_path",
        "variable adf_orders_to_db__runtime__retries",
    ]
    values = dict((origin, v) for v, origin in additions)
    assert values["variable adf_json"] == {"runtime": {"batch_size": 7}, "sink": {"mode": "append"}}
    assert values["variable adf_runtime_batch_size"] == {"runtime": {"batch_size": 9}}  # JSON-parsed
    assert values["variable adf_flow_orders_to_db_sink_path"] == {"sink": {"path": "scoped.jsonl"}}
    assert values["variable adf_orders_to_db__runtime__retries"] == {"runtime": {"retries": 2}}
    assert ignored == ["adf_heartbeat_token", "adf_name"]


def test_a_variable_changing_the_sink_type_lets_the_others_use_that_types_attributes() -> None:
    spec = {"name": "f", "source": {"type": "payload"}, "sink": {"type": "response"}}
    additions, ignored = variables_config({"adf_sink_type": "file", "adf_sink_path": "o.jsonl"}, "f", spec)
    assert ignored == []
    assert [v for v, _ in additions] == [{"sink": {"path": "o.jsonl"}}, {"sink": {"type": "file"}}]


def test_malformed_json_variables_are_reported_as_ignored() -> None:
    _, ignored = variables_config({"adf_json": "{nope"}, "f", SPEC)
    assert len(ignored) == 1 and ignored[0].startswith("adf_json: variable adf_json must be a JSON object")


DECLARED, _ = parse_params({
    "max_rows": {"type": "integer", "default": 5},
    "region": {"type": "string", "choices": ["eu", "us"]},
    "retry_after_s": "number",
    "labels": "mapping",
})


def test_headers_json_and_per_value_forms_give_parameters() -> None:
    headers = {
        "x-adf-params": '{"max_rows": 7, "region": "us", "labels": {"a": 1}}',
        "x-adf-param-region": "eu",  # a per-value header wins over X-ADF-Params
        "x-adf-param-retry-after-s": "0.5",  # '-' stands for '_'; text read as the declared type
        "X-ADF-Param-MAX_ROWS": "10",  # names are matched case-insensitively
        "content-type": "application/json",
    }
    request = RequestParams()
    request.add_headers(headers)
    assert request_values("orders-to-db", DECLARED, request) == {
        "max_rows": 10, "region": "eu", "retry_after_s": 0.5, "labels": {"a": 1},
    }


def test_headers_that_name_no_parameter_are_refused_by_name() -> None:
    request = RequestParams()
    request.add_headers({"x-adf-nonsense": "1", "x-adf-config": '{"sink": {}}', "x-adf-name": "x",
                         "x-adf-sink..path": "p", "x-adf-param-sink.path": "/tmp/x"})
    with pytest.raises(RefusedRequest) as refused:
        request_values("orders-to-db", DECLARED, request)
    assert len(refused.value.refused) == 5
    for header in ("x-adf-nonsense", "x-adf-config", "x-adf-name", "x-adf-sink..path", "x-adf-param-sink.path"):
        assert any(header in r for r in refused.value.refused), header
    assert [p["name"] for p in refused.value.declared] == ["max_rows", "region", "retry_after_s", "labels"]
    with pytest.raises(BadRequest, match="X-ADF-Params must be a JSON object"):
        RequestParams().add_headers({"x-adf-params": "[1]"})


def test_variables_set_a_declared_parameters_value_or_its_default() -> None:
    spec = {**SPEC, "params": {"max_rows": {"type": "integer", "default": 5}}, "config": {}}
    additions, ignored = variables_config(
        {"adf_flow_orders_to_db_config_max_rows": "9", "adf_params_max_rows_default": "6"}, "orders-to-db", spec
    )
    assert ignored == []
    assert [v for v, _ in additions] == [{"params": {"max_rows": {"default": 6}}}, {"config": {"max_rows": 9}}]


def test_expand_dotted() -> None:
    assert expand_dotted({"a.b": 1, "a": {"c.d": 2}}) == {"a": {"b": 1, "c": {"d": 2}}}
    with pytest.raises(ValueError, match="empty segment"):
        expand_dotted({"a..b": 1})


def test_flow_slugs_of_digit_led_words_reach_the_flow() -> None:
    # Spin 3 refuses a variable word that starts with a digit: `orders_2024` is addressed as orders_n2024
    assert flow_slug("orders_2024") == "orders_n2024" and flow_slug("2nd-pass") == "n2nd_pass"
    assert flow_slug("Bestellungen-Köln") == "bestellungen_k_ln" and flow_slug("---") == "flow"
    spec = {"source": {"type": "payload"}, "sink": {"type": "response"}}
    additions, ignored = variables_config({"adf_flow_orders_n2024_json": '{"runtime": {"batch_size": 7}}'},
                                          "orders_2024", spec)
    assert ignored == [] and additions and additions[0][0] == {"runtime": {"batch_size": 7}}
