"""How spin.toml variables and X-ADF-* headers name configuration paths (handlers.confignames)."""

from __future__ import annotations

from typing import Any

import pytest

from handlers.confignames import expand_dotted, flow_slug, headers_config, resolve_words, variables_config

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


def test_headers_dotted_word_and_json_forms() -> None:
    headers = {
        "x-adf-config": '{"sink": {"path": "a.jsonl", "mode": "append"}, "runtime.retries": 5}',
        "x-adf-sink.path": "b.jsonl",
        "x-adf-runtime-batch-size": "10",
        "x-adf-runtime.retry-backoff-s": "0.5",
        "content-type": "application/json",
    }
    values, problems = headers_config(headers, SPEC)
    assert problems == []
    assert values == {
        "sink": {"path": "b.jsonl", "mode": "append"},
        "runtime": {"retries": 5, "batch_size": 10, "retry_backoff_s": 0.5},
    }


def test_unusable_headers_are_problems() -> None:
    values, problems = headers_config(
        {"x-adf-nonsense": "1", "x-adf-config": "[1]", "x-adf-name": "x", "x-adf-sink..path": "p"}, SPEC
    )
    assert values == {}
    assert len(problems) == 4
    assert any("X-ADF-Config must be a JSON object" in p for p in problems)
    assert any(p.startswith("header x-adf-nonsense does not name a configuration key") for p in problems)
    assert any("cannot be changed" in p for p in problems)


def test_expand_dotted() -> None:
    assert expand_dotted({"a.b": 1, "a": {"c.d": 2}}) == {"a": {"b": 1, "c": {"d": 2}}}
    with pytest.raises(ValueError, match="empty segment"):
        expand_dotted({"a..b": 1})
