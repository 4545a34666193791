"""Configuration layering: precedence, provenance, env/--set/kv readers, redaction."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from active_data_flow.config import (
    LAYERS,
    Explanation,
    LayeredConfig,
    env_values,
    flow_env_prefix,
    kv_values,
    parse_set_args,
    parse_value,
    resolve_flow_config,
)
from active_data_flow.errors import ConfigError
from active_data_flow.redact import REDACTED, is_secret_key, redact, redact_text
from active_data_flow.state import SqliteStateStore

SPEC = {
    "name": "orders",
    "source": {"type": "file", "path": "data/spec.csv", "format": "csv"},
    "steps": [
        {"type": "python", "function": "pkg.mod:enrich"},
        {"type": "wasm", "module": "pricing@1.2.0", "fuel": 5000000},
    ],
    "sink": {"type": "sql", "url": "sqlite:///out.db", "table": "orders"},
    "runtime": {"batch_size": 500},
}


def _by_path(explanations: list[Explanation]) -> dict[str, Explanation]:
    return {e.path: e for e in explanations}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStateStore]:
    s = SqliteStateStore(str(tmp_path / "state.db"))
    yield s
    s.close()


def test_layers_order() -> None:
    assert LAYERS == ("default", "manifest", "kv", "env", "payload")


def test_all_five_layers_on_one_key(store: SqliteStateStore) -> None:
    store.set("config/orders", {"source.path": "data/kv.csv"})
    cfg = resolve_flow_config(
        SPEC,
        defaults={"source": {"path": "data/default.csv"}},
        store=store,
        environ={"ADF__SOURCE__PATH": "data/env.csv"},
        payload={"source": {"path": "data/payload.csv"}},
        spec_origin="flow.yaml",
    )
    assert cfg.get("source.path") == "data/payload.csv"
    row = _by_path(cfg.explain())["source.path"]
    assert (row.layer, row.origin) == ("payload", "payload")
    assert row.overridden == (
        ("default", "defaults"),
        ("manifest", "flow.yaml"),
        ("kv", "kv config/orders"),
        ("env", "environment ADF__SOURCE__PATH"),
    )
    # untouched values keep their own origin
    assert _by_path(cfg.explain())["source.format"].layer == "manifest"
    assert cfg.get("source.format") == "csv"


@pytest.mark.parametrize(
    ("drop", "expected", "layer"),
    [
        ("payload", "data/env.csv", "env"),
        ("env", "data/payload.csv", "payload"),
    ],
)
def test_each_layer_beats_the_lower_ones(
    store: SqliteStateStore, drop: str, expected: str, layer: str
) -> None:
    store.set("config/orders", {"source": {"path": "data/kv.csv"}})
    cfg = resolve_flow_config(
        SPEC,
        defaults={"source": {"path": "data/default.csv"}},
        store=store,
        environ={} if drop == "env" else {"ADF__SOURCE__PATH": "data/env.csv"},
        payload=None if drop == "payload" else {"source": {"path": "data/payload.csv"}},
    )
    assert cfg.get("source.path") == expected
    assert _by_path(cfg.explain())["source.path"].layer == layer


def test_kv_beats_manifest_and_manifest_beats_default(store: SqliteStateStore) -> None:
    cfg = resolve_flow_config(
        SPEC, defaults={"source": {"path": "d"}, "runtime": {"parallelism": 1}}, environ={}
    )
    assert cfg.get("source.path") == "data/spec.csv"
    assert cfg.get("runtime.parallelism") == 1
    assert _by_path(cfg.explain())["runtime.parallelism"].origin == "defaults"
    store.set("config/orders", {"source": {"path": "kv.csv"}})
    cfg = resolve_flow_config(SPEC, store=store, environ={})
    assert cfg.get("source.path") == "kv.csv"
    assert _by_path(cfg.explain())["source.path"].origin == "kv config/orders"


def test_additions_in_any_order_and_later_wins_within_layer() -> None:
    c = LayeredConfig()
    c.add("payload", {"a": 3}, "--set")
    c.add("default", {"a": 1}, "defaults")
    c.add("env", {"a": 2}, "first")
    c.add("env", {"a": 2.5}, "second")
    r = c.resolve()
    assert r.get("a") == 3
    assert _by_path(r.explain())["a"].overridden == (
        ("default", "defaults"),
        ("env", "first"),
        ("env", "second"),
    )


def test_unknown_layer_is_value_error() -> None:
    with pytest.raises(ValueError, match="unknown configuration layer 'spin'"):
        LayeredConfig().add("spin", {}, "x")


def test_values_are_copied() -> None:
    src: dict[str, Any] = {"runtime": {"batch_size": 1}, "steps": [{"fuel": 1}]}
    c = LayeredConfig()
    c.add("manifest", src, "m")
    src["runtime"]["batch_size"] = 99
    r = c.resolve()
    assert r.values == {"runtime": {"batch_size": 1}, "steps": [{"fuel": 1}]}
    got = r.get("steps")
    got.append("x")
    assert r.get("steps") == [{"fuel": 1}]


def test_lists_replace_and_mappings_merge() -> None:
    c = LayeredConfig()
    c.add("manifest", {"sink": {"key": ["id", "day"], "table": "t"}}, "m")
    c.add("payload", {"sink": {"key": ["id"]}}, "p")
    r = c.resolve()
    assert r.values == {"sink": {"key": ["id"], "table": "t"}}
    rows = _by_path(r.explain())
    assert "sink.key.1" not in rows
    assert rows["sink.key.0"].overridden == (("manifest", "m"),)


def test_scalar_replaced_by_mapping_keeps_provenance() -> None:
    c = LayeredConfig()
    c.add("default", {"source": "none", "runtime": {}}, "d")
    c.add("manifest", {"source": {"type": "file"}, "runtime": {"batch_size": 2}}, "m")
    r = c.resolve()
    rows = _by_path(r.explain())
    assert set(rows) == {"source.type", "runtime.batch_size"}
    assert rows["source.type"].overridden == (("default", "d"),)


def test_env_index_sets_one_list_item() -> None:
    cfg = resolve_flow_config(SPEC, environ={"ADF__STEPS__1__FUEL": "10"})
    assert cfg.get("steps.1") == {"type": "wasm", "module": "pricing@1.2.0", "fuel": 10}
    assert cfg.get("steps.0.function") == "pkg.mod:enrich"
    row = _by_path(cfg.explain())["steps.1.fuel"]
    assert (row.layer, row.origin, row.value) == ("env", "environment ADF__STEPS__1__FUEL", 10)
    assert row.overridden == (("manifest", "spec"),)


def test_index_past_the_end_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_flow_config(SPEC, environ={"ADF__STEPS__2__FUEL": "10"})
    msg = str(info.value)
    assert "steps.2" in msg and "environment ADF__STEPS__2__FUEL" in msg and "2 items" in msg


def test_index_mixed_with_keys_on_a_list_is_an_error() -> None:
    c = LayeredConfig()
    c.add("manifest", {"steps": [{"a": 1}]}, "m")
    c.add("payload", {"steps": {"0": {"a": 2}, "name": "x"}}, "p")
    with pytest.raises(ConfigError, match="not list indexes"):
        c.resolve()


def test_whole_list_from_env_then_index() -> None:
    env = {"ADF__STEPS__0__FUEL": "7", "ADF__STEPS": '[{"type": "wasm", "fuel": 1}]'}
    cfg = resolve_flow_config(SPEC, environ=env)
    assert cfg.get("steps") == [{"type": "wasm", "fuel": 7}]


def test_flow_scoped_env_wins_over_generic() -> None:
    env = {
        "ADF_ORDERS__RUNTIME__BATCH_SIZE": "20",
        "ADF__RUNTIME__BATCH_SIZE": "10",
        "ADF_OTHER__RUNTIME__BATCH_SIZE": "30",
        "ADF_STATE_DIR": "/tmp/x",
        "PATH": "/usr/bin",
    }
    cfg = resolve_flow_config(SPEC, environ=env)
    assert cfg.get("runtime.batch_size") == 20
    row = _by_path(cfg.explain())["runtime.batch_size"]
    assert row.origin == "environment ADF_ORDERS__RUNTIME__BATCH_SIZE"
    assert row.overridden == (("manifest", "spec"), ("env", "environment ADF__RUNTIME__BATCH_SIZE"))


def test_env_values_parsing() -> None:
    env = {
        "ADF__SOURCE__PATH": "data/x.csv",
        "ADF__RUNTIME__BATCH_SIZE": "10",
        "ADF__RUNTIME__STREAMING": "true",
        "ADF__SINK__KEY": '["id", "day"]',
        "ADF__SINK__OPTIONS": '{"a": 1}',
        "ADF__SINK__NOTHING": "null",
        "ADF__SINK__RATIO": "NaN",
        "ADF_STATE_DIR": "/x",
    }
    got = env_values(env)
    origins = [o for _, o in got]
    assert "environment ADF_STATE_DIR" not in origins
    merged: dict[str, dict[str, object]] = {}
    for values, _ in got:
        for k, v in values.items():
            merged.setdefault(k, {}).update(v)
    assert merged == {
        "source": {"path": "data/x.csv"},
        "runtime": {"batch_size": 10, "streaming": True},
        "sink": {"key": ["id", "day"], "options": {"a": 1}, "nothing": None, "ratio": "NaN"},
    }


def test_env_flow_prefix_normalisation() -> None:
    assert flow_env_prefix("orders-to.db") == "ADF_ORDERS_TO_DB__"
    got = env_values({"ADF_ORDERS_TO_DB__SOURCE__PATH": "p"}, "orders-to.db")
    assert got == [({"source": {"path": "p"}}, "environment ADF_ORDERS_TO_DB__SOURCE__PATH")]
    assert env_values({"ADF_ORDERS_TO_DB__SOURCE__PATH": "p"}) == []


def test_env_empty_segment_is_an_error() -> None:
    with pytest.raises(ConfigError, match="ADF__SOURCE____PATH"):
        env_values({"ADF__SOURCE____PATH": "x"})


def test_parse_value() -> None:
    assert parse_value("10") == 10
    assert parse_value("1.5") == 1.5
    assert parse_value("false") is False
    assert parse_value("data/x.csv") == "data/x.csv"
    assert parse_value("") == ""
    assert parse_value("Infinity") == "Infinity"


def test_parse_set_args() -> None:
    got = parse_set_args(
        ["source.path=data/x.csv", "runtime.batch_size=10", "sink.where=a=b", "steps.0.fuel=3"]
    )
    assert got == {
        "source": {"path": "data/x.csv"},
        "runtime": {"batch_size": 10},
        "sink": {"where": "a=b"},
        "steps": {"0": {"fuel": 3}},
    }
    cfg = resolve_flow_config(SPEC, environ={}, payload=got, payload_origin="--set")
    assert cfg.get("steps.0") == {"type": "python", "function": "pkg.mod:enrich", "fuel": 3}
    assert _by_path(cfg.explain())["runtime.batch_size"].origin == "--set"


def test_parse_set_args_errors() -> None:
    with pytest.raises(ConfigError) as info:
        parse_set_args(["source.path", "=1", "a..b=2", "ok=1"])
    assert info.value.where == "--set"
    assert len(info.value.problems) == 3
    assert "'source.path' has no '='" in info.value.problems[0]


def test_kv_values_nested_and_dotted(store: SqliteStateStore) -> None:
    assert kv_values(store, "orders") == {}
    store.set("config/orders", {"source.path": "a.csv", "source": {"format": "json"}, "runtime": {"x.y": 1}})
    assert kv_values(store, "orders") == {
        "source": {"path": "a.csv", "format": "json"},
        "runtime": {"x": {"y": 1}},
    }
    store.set("config/orders", [1, 2])
    with pytest.raises(ConfigError, match="JSON object"):
        kv_values(store, "orders")


def test_kv_layer_scoped_by_payload_name(store: SqliteStateStore) -> None:
    store.set("config/orders", {"runtime.batch_size": 1})
    store.set("config/renamed", {"runtime.batch_size": 2})
    cfg = resolve_flow_config(SPEC, store=store, environ={}, payload={"name": "renamed"})
    assert cfg.get("runtime.batch_size") == 2
    assert cfg.get("name") == "renamed"


def test_secrets_redacted_in_explain_and_dict() -> None:
    spec = {
        "name": "orders",
        "source": {"type": "http", "url": "https://api.example.com/x?api_key=k123&page=1", "token": "tok-1"},
        "sink": {"type": "sql", "url": "postgresql://bob:hunter2@db:5432/app", "table": "t"},
        "steps": [{"type": "python", "options": {"signing_key": "sk", "custom": "c"}}],
        "runtime": {"note": "see redis://:pw9@cache:6379/0"},
    }
    cfg = resolve_flow_config(
        spec, environ={"ADF__SINK__PASSWORD": "p@ss"}, secret_keys=["custom", "sink.table"]
    )
    rows = _by_path(cfg.explain())
    assert rows["source.token"].value == REDACTED
    assert rows["sink.password"].value == REDACTED
    assert rows["steps.0.options.signing_key"].value == REDACTED
    assert rows["steps.0.options.custom"].value == REDACTED  # bare key name
    assert rows["sink.table"].value == REDACTED  # dotted path
    assert rows["sink.url"].value == "postgresql://bob:***@db:5432/app"
    assert rows["source.url"].value == "https://api.example.com/x?api_key=***&page=1"
    assert rows["runtime.note"].value == "see redis://:***@cache:6379/0"
    text = cfg.explain_text()
    red = cfg.as_dict_redacted()
    for secret in ("hunter2", "tok-1", "k123", "sk", "p@ss", "pw9"):
        assert secret not in text.split()
        assert secret not in str(red)
        assert secret not in repr(cfg)
    assert red["sink"] == {
        "type": "sql",
        "url": "postgresql://bob:***@db:5432/app",
        "table": REDACTED,
        "password": REDACTED,
    }
    # the real values are still there for the engine
    assert cfg.get("sink.url") == "postgresql://bob:hunter2@db:5432/app"
    assert cfg.get("sink.password") == "p@ss"


def test_explain_text_is_an_aligned_table() -> None:
    cfg = resolve_flow_config(SPEC, environ={"ADF__STEPS__1__FUEL": "10"}, spec_origin="flow.yaml")
    lines = cfg.explain_text().splitlines()
    assert lines[0].split() == ["PATH", "VALUE", "LAYER", "ORIGIN", "OVERRIDES"]
    col = lines[0].index("LAYER")
    for line in lines[1:]:
        assert line[col:].split()[0] in LAYERS
    fuel = next(line for line in lines if line.startswith("steps.1.fuel"))
    assert "environment ADF__STEPS__1__FUEL" in fuel and "manifest (flow.yaml)" in fuel
    paths = [line.split()[0] for line in lines[1:]]
    assert paths == [e.path for e in cfg.explain()]
    assert paths.index("steps.0.function") < paths.index("steps.1.fuel")


def test_explain_sorts_indexes_numerically() -> None:
    c = LayeredConfig()
    c.add("manifest", {"xs": list(range(12))}, "m")
    paths = [e.path for e in c.resolve().explain()]
    assert paths == [f"xs.{i}" for i in range(12)]


def test_is_secret_key_heuristics() -> None:
    for name in (
        "password",
        "DB_PASSWORD",
        "passwd",
        "api_key",
        "apiKey",
        "APIKEY",
        "access_key",
        "AWS_SECRET_ACCESS_KEY",
        "private-key",
        "credentials",
        "auth",
        "Authorization",
        "token",
        "client_secret",
        "sessionToken",
    ):
        assert is_secret_key(name), name
    for name in ("key", "path", "token_field", "password_env", "auth_type", "max_tokens", "author", "table"):
        assert not is_secret_key(name), name


def test_redact_helpers() -> None:
    assert redact_text("no secrets here") == "no secrets here"
    assert redact_text("redis://user:pa55@h:1/0") == "redis://user:***@h:1/0"
    assert redact_text("http://h/x?token=abc&x=1") == "http://h/x?token=***&x=1"
    data: dict[str, Any] = {
        "a": {"password": "x", "list": ["mysql://u:p@h/db", 3]},
        "creds": {"user": "u"},
        "secret": None,
    }
    out = redact(data, ["creds"])
    assert out == {
        "a": {"password": REDACTED, "list": ["mysql://u:***@h/db", 3]},
        "creds": REDACTED,
        "secret": None,
    }
    assert data["a"]["password"] == "x"


@pytest.mark.parametrize("layer", ["env", "kv", "set", "variables"])
def test_a_layer_that_changes_a_components_type_replaces_its_section(tmp_path: Path, layer: str) -> None:
    from active_data_flow.loader import load_flow

    spec = {"name": "switch", "source": {"type": "memory", "records": [{"id": 1}]},
            "steps": [{"type": "filter", "field": "id", "op": "gt", "value": 0}],
            "sink": {"type": "file", "path": str(tmp_path / "out.jsonl"), "mode": "overwrite"}}
    change = {"sink": {"type": "stdout"}, "steps": {"0": {"type": "python", "function": "json:dumps"}}}
    environ: dict[str, str] = {}
    store = SqliteStateStore(str(tmp_path / "kv.db"))
    kwargs: dict[str, Any] = {}
    if layer == "env":
        environ = {"ADF__SINK__TYPE": "stdout", "ADF_SWITCH__STEPS__0__TYPE": "python",
                   "ADF_SWITCH__STEPS__0__FUNCTION": "json:dumps"}
    elif layer == "kv":
        store.set("config/switch", change)
    elif layer == "set":
        kwargs["payload"] = change
    else:
        kwargs["extra"] = [("manifest", change, "spin.toml variables")]
    loaded = load_flow(spec, environ=environ, store=store, **kwargs)
    assert loaded.spec.sink == {"type": "stdout"} or (loaded.spec.sink["type"] == "stdout"
                                                      and "path" not in loaded.spec.sink), loaded.spec.sink
    assert loaded.spec.steps[0]["type"] == "python" and "field" not in loaded.spec.steps[0]
    # the same type merges as before: one attribute changes, the others stay
    same = load_flow(spec, environ={"ADF__SINK__MODE": "append"}, store=store if layer != "kv" else None,
                     use_store=layer != "kv")
    assert same.spec.sink["path"] == str(tmp_path / "out.jsonl") and same.spec.sink["mode"] == "append"
    store.close()
