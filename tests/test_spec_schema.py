"""`adf schema`: the JSON Schema (draft 2020-12) of flow specs, made from the declarations.

The schema is checked with two independent validators (python-jsonschema and jsonschema-rs)
against every example spec and every flow-spec snippet of the README and docs/; the committed
copies are what the commands print now; a plug-in's types appear once it is installed (found
through a real entry point); the loader and the schema agree on generated specs (hypothesis);
and the web API and the dashboard refuse what the schema refuses, saying where.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live_server import client_from, live_server

from active_data_flow.attributes import Attribute
from active_data_flow.errors import AdfError
from active_data_flow.handlers.schedule.sql import SqlScheduleStore
from active_data_flow.handlers.settings import Settings
from active_data_flow.registry import registry
from active_data_flow.spec import SPEC_KEYS, parse_spec
from active_data_flow.spec_schema import check_spec, dump_schema

ROOT = Path(__file__).resolve().parent.parent
DOCS_SCHEMA = ROOT / "docs" / "flow.schema.json"
SPIN_SCHEMA = ROOT / "docs" / "spin-flow.schema.json"
PLUGIN = ROOT / "examples" / "plugin"
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")
#: the sections that make a YAML snippet of the docs a (partial) flow spec
SPEC_SECTIONS = {"source", "sink", "steps", "runtime", "params", "dead_letter"}
TOKEN = "schema-token-3"


def adf(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "active_data_flow.cli", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def validators(schema: dict[str, Any]) -> list[Any]:
    """Both validators of ``schema`` (checked against the draft 2020-12 meta-schema first)."""
    jsonschema.Draft202012Validator.check_schema(schema)
    return [jsonschema.Draft202012Validator(schema), jsonschema_rs.Draft202012Validator(schema)]


def example_specs() -> list[Path]:
    found = [
        *ROOT.glob("examples/**/*.yaml"),
        *ROOT.glob("infra/examples/**/*.yaml"),
        *ROOT.glob("tests/conformance/data/*.yaml"),
    ]
    return sorted(p for p in found if "name" in (yaml.safe_load(p.read_text()) or {}))


def docs_snippets() -> list[tuple[str, dict[str, Any]]]:
    """Every ```yaml block of README.md and docs/*.md that holds flow-spec sections."""
    fence = re.compile(r"^```ya?ml[^\n]*\n(.*?)^```", re.S | re.M)
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for match in fence.finditer(text):
            data = yaml.safe_load(match.group(1))
            if isinstance(data, dict) and SPEC_SECTIONS & set(data):
                line = text[: match.start()].count("\n") + 1
                out.append((f"{path.relative_to(ROOT)}:{line}", data))
    return out


# --------------------------------------------------------------------------- the command and the committed copies


def test_adf_schema_prints_a_stable_draft_2020_12_schema(tmp_path: Path) -> None:
    first, second = adf("schema"), adf("schema", "--output", str(tmp_path / "flow.schema.json"))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == (tmp_path / "flow.schema.json").read_text()
    schema = json.loads(first.stdout)
    assert first.stdout == dump_schema(schema)  # sorted keys: diffs of a committed copy stay small
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "urn:active-data-flow:flow-spec"
    validators(schema)
    # generated from the declarations: every installed type with its attributes (the registry of a
    # fresh interpreter, as the command's: this one's may hold types other tests registered)
    names = subprocess.run(
        [sys.executable, "-c", "import json; from active_data_flow.registry import registry; "
         "print(json.dumps({k: registry.names(k) for k in ('source', 'sink', 'step')}))"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120, check=True,
    )
    for kind, installed in json.loads(names.stdout).items():
        assert schema["$defs"][kind]["properties"]["type"]["enum"] == installed
    sql_sink = schema["$defs"]["sink.sql"]
    assert sql_sink["properties"]["mode"]["enum"] == ["insert", "upsert", None]
    assert sql_sink["properties"]["mode"]["default"] == "insert"
    assert sql_sink["properties"]["url"]["writeOnly"] is True  # a secret
    assert (
        "url" not in sql_sink["required"] and "table" in sql_sink["required"]
    )  # secrets may come from the env
    assert sql_sink["additionalProperties"] is False
    assert set(schema["properties"]) == set(SPEC_KEYS)


def test_the_committed_schemas_are_what_the_commands_print() -> None:
    core = adf("schema", "--no-plugins")
    spin = adf("spin", "schema", "--no-plugins")
    assert core.returncode == 0 and spin.returncode == 0, core.stderr + spin.stderr
    assert core.stdout == DOCS_SCHEMA.read_text(), (
        "docs/flow.schema.json is stale: adf schema --no-plugins --output docs/flow.schema.json"
    )
    assert spin.stdout == SPIN_SCHEMA.read_text(), (
        "docs/spin-flow.schema.json is stale: adf spin schema --no-plugins --output docs/spin-flow.schema.json"
    )
    spin_types = json.loads(spin.stdout)["$defs"]["sink"]["properties"]["type"]["enum"]
    assert {"kv", "spin_redis", "spin_http", "spin_sqlite"} <= set(spin_types)
    assert "kv" not in json.loads(core.stdout)["$defs"]["sink"]["properties"]["type"]["enum"]


def test_adf_run_does_not_import_the_schema_module() -> None:
    code = (
        "import sys; from active_data_flow import cli; cli.build_parser(['run', 'x.yaml']); "
        "print('active_data_flow.spec_schema' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == "False", out.stderr


# --------------------------------------------------------------------------- examples and docs


def test_every_example_names_its_schema_and_matches_it() -> None:
    specs = example_specs()
    assert len(specs) >= 9, specs  # orders, plugin, three Spin flows and their infra/ copies, conformance
    for path in specs:
        first = path.read_text().splitlines()[0]
        found = MODELINE.match(first)
        assert found, f"{path}: first line should be '# yaml-language-server: $schema=…', got {first!r}"
        named = (path.parent / found.group(1)).resolve()
        if path.is_relative_to(ROOT / "infra"):  # byte-for-byte copies of examples/spin: the same schema
            named = (ROOT / path.relative_to(ROOT / "infra")).parent.joinpath(found.group(1)).resolve()
        assert named.is_file(), f"{path} names {found.group(1)}, which does not exist"
        spec = yaml.safe_load(path.read_text())
        for validator in validators(json.loads(named.read_text())):
            errors = list(validator.iter_errors(spec))
            assert not errors, (path, [str(e) for e in errors])


def test_every_flow_spec_snippet_of_the_docs_matches_the_schema() -> None:
    snippets = docs_snippets()
    assert len(snippets) >= 10, [where for where, _ in snippets]
    schema = json.loads(DOCS_SCHEMA.read_text())
    checks = validators(schema)
    for where, data in snippets:
        # a snippet shows some sections: the others are stand-ins
        spec = {
            "name": "snippet",
            "source": {"type": "memory", "records": []},
            "sink": {"type": "stdout"},
            **data,
        }
        for validator in checks:
            errors = list(validator.iter_errors(spec))
            assert not errors, (where, [str(e) for e in errors])
        assert check_spec(spec) == [], where


# --------------------------------------------------------------------------- typos


ORDERS = yaml.safe_load((ROOT / "examples" / "orders" / "flow.yaml").read_text())


def test_a_typo_is_refused_with_its_path() -> None:
    misspelt_section = {("sorce" if k == "source" else k): v for k, v in ORDERS.items()}
    assert [str(p) for p in check_spec(misspelt_section)] == [
        "$: 'source' is required",
        "$.sorce: unknown key 'sorce'; did you mean 'source'? (accepted keys: config, context, dead_letter, "
        "description, name, params, python_path, runtime, schema, sink, source, state, steps)",
    ]

    misspelt_key = {**ORDERS, "source": {"type": "file", "pth": "x"}}
    problems = [str(p) for p in check_spec(misspelt_key)]
    assert problems == [
        "$.source: 'path' is required",
        "$.source.pth: unknown key 'pth'; did you mean 'path'? (accepted keys: auto_split, columns, delimiter, "
        "encoding, endpoint_url, format, header, max_field_bytes, min_split_bytes, path, quotechar, region, "
        "split_bytes, type, watch)",
    ]
    # python-jsonschema on its own says where too (its json_path)
    errors = list(
        jsonschema.Draft202012Validator(json.loads(DOCS_SCHEMA.read_text())).iter_errors(misspelt_key)
    )
    assert {e.json_path for e in errors} == {"$.source"} and any(
        "'pth' was unexpected" in e.message for e in errors
    )


@pytest.mark.parametrize(
    ("change", "path", "fragment"),
    [
        (
            {"steps": [{"type": "filter", "field": "q", "op": "greather"}]},
            "$.steps[0].op",
            "expected one of 'eq', 'ne',",
        ),
        ({"steps": [{"function": "m:f", "batchh": True}]}, "$.steps[0].batchh", "did you mean 'batch'?"),
        (
            {"steps": [{"type": "wasm", "module": "m@1", "fuel": "lots"}]},
            "$.steps[0].fuel",
            "expected integer",
        ),
        (
            {"sink": {"type": "sqll", "url": "sqlite://"}},
            "$.sink.type",
            "unknown sink type 'sqll' (installed: cache,",
        ),
        ({"runtime": {"batchsize": 5}}, "$.runtime.batchsize", "did you mean 'batch_size'?"),
        ({"runtime": {"parallelism": True}}, "$.runtime.parallelism", "expected integer"),
        ({"schema": {"id": "intger"}}, "$.schema.id", "not a valid field type"),
        ({"params": {"vat": {"type": "float"}}}, "$.params.vat.type", "'float' is not one of 'string'"),
        ({"name": "orders to db"}, "$.name", "not a valid flow name"),
        ({"steps": {"type": "python"}}, "$.steps", "expected array or null"),
    ],
)
def test_typical_mistakes_are_refused_where_they_are(
    change: dict[str, Any], path: str, fragment: str
) -> None:
    spec = {**ORDERS, **change}
    found = check_spec(spec)
    assert any(p.path == path and fragment in p.message for p in found), [str(p) for p in found]
    with pytest.raises(AdfError):  # adf validate refuses it too
        parse_spec(spec)


def test_what_the_loader_coerces_the_schema_accepts() -> None:
    spec = {
        **ORDERS,
        "params": {"tier": {"type": "integer", "default": 2}, "region": "string"},
        "steps": [
            {"function": "json:dumps", "batch": "yes"},
            {"type": "http", "url": "https://x.example/${record.id}", "concurrency": "${params.tier}"},
        ],
        "runtime": {"batch_size": "250", "retry_backoff_s": "1e-1", "checkpoint": "False", "state_dir": None},
        "sink": {"type": "sql", "url": None, "table": "t"},  # the URL from ADF_ORDERS_TO_SQLITE__SINK__URL
    }
    assert check_spec(spec) == []
    spec["sink"]["url"] = "sqlite:///x.db"
    parse_spec(spec)


# --------------------------------------------------------------------------- loader and schema agree


#: a valid configuration of each built-in type, which the generated specs start from
SEEDS: dict[str, dict[str, dict[str, Any]]] = {
    "source": {
        "file": {"path": "data/*.csv"},
        "memory": {"records": [{"id": 1}]},
        "payload": {},
        "sql": {"url": "sqlite:///in.db", "table": "orders"},
        "http": {"url": "https://api.example.com/orders"},
        "rafka": {"topic": "orders"},
        "iceberg": {"table": "db.orders"},
        "sftp": {"host": "h", "path": "/in/*.csv"},
    },
    "sink": {
        "file": {"path": "out.jsonl"},
        "sql": {"url": "sqlite:///out.db", "table": "orders"},
        "stdout": {},
        "memory": {},
        "response": {},
        "cache": {"key_attribute": "id"},
        "rafka": {"topic": "orders"},
        "iceberg": {"table": "db.orders"},
        "http": {"url": "https://api.example.com/in"},
        "sftp": {"host": "h", "path": "/out.jsonl"},
    },
    "step": {
        "python": {"function": "json:dumps"},
        "filter": {"field": "qty", "op": "gt", "value": 0},
        "http": {"url": "https://api.example.com/p/${record.id}"},
        "sql": {"url": "sqlite:///x.db", "query": "select 1"},
    },
}
#: keys no type declares (typos)
TYPOS = ["pth", "tabel", "nmae", "url_", "Type"]
#: a mistake now and then (one draw in twelve)
RARELY = st.sampled_from([False] * 11 + [True])


def _value(attr: Attribute, in_step: bool) -> st.SearchStrategy[Any]:
    """Values of a declared attribute in every form the loader takes (and now and then a wrong one)."""
    types = attr.type if isinstance(attr.type, tuple) else (attr.type,)
    forms: list[st.SearchStrategy[Any]] = [st.none()]
    if attr.choices:
        forms.append(st.sampled_from(attr.choices))
    for t in types:
        if t is bool:
            forms += [st.booleans(), st.sampled_from(["yes", "No", "TRUE", "false", "1", "0"])]
        elif t is int:
            forms += [st.integers(1, 10**6), st.integers(1, 10**6).map(str), st.just(" 1_000 ")]
        elif t is float:
            forms += [
                st.floats(0.1, 1e6, allow_nan=False),
                st.integers(1, 9),
                st.sampled_from(["0.5", "2", " 1e3 "]),
            ]
        elif t is str and not attr.choices:
            forms.append(st.sampled_from(["id", "x.csv", ";", "orders"]))
        elif t is list:
            forms.append(st.lists(st.sampled_from(["id", "qty"]), min_size=1, max_size=2, unique=True))
        elif t is dict:
            forms.append(st.dictionaries(st.sampled_from(["a", "b"]), st.integers(), max_size=2))
        elif t is object:
            forms.append(st.one_of(st.integers(), st.text(max_size=3)))
    if in_step and int in types:
        forms.append(st.just("${params.n}"))
    wrong = st.sampled_from([7, "seven", True, [1], {"a": 1}])
    return RARELY.flatmap(lambda mistake: wrong if mistake else st.one_of(forms))


@st.composite
def _component(draw: Any, kind: str, names: list[str]) -> dict[str, Any]:
    name = draw(st.sampled_from(names))
    cls = registry.resolve(kind, name)
    seed = dict(SEEDS[kind].get(name, {}))
    if kind == "step" and name == "python" and draw(st.booleans()):
        out = seed  # a step without a type is a python step
    else:
        out = {"type": name, **seed}
    optional = [a for a in cls.attributes if not a.required]
    for attr in (
        draw(st.lists(st.sampled_from(optional), unique_by=lambda a: a.name, max_size=3)) if optional else []
    ):
        out[attr.name] = draw(_value(attr, kind == "step"))
    if draw(RARELY):
        out[draw(st.sampled_from(TYPOS))] = "x"
    if seed and draw(RARELY):
        del out[draw(st.sampled_from(sorted(seed)))]
    return out


@st.composite
def _specs(draw: Any) -> dict[str, Any]:
    from active_data_flow.spec import RUNTIME_ATTRIBUTES

    spec: dict[str, Any] = {
        "name": "-bad" if draw(RARELY) else draw(st.sampled_from(["orders", "a.b-c_1", "orders_2"])),
        "source": draw(_component("source", sorted(SEEDS["source"]))),
        "sink": draw(_component("sink", sorted(SEEDS["sink"]))),
        "params": {"n": {"type": "integer", "default": 3}},
    }
    if draw(st.booleans()):
        spec["steps"] = draw(st.lists(_component("step", sorted(SEEDS["step"])), max_size=3))
    if draw(st.booleans()):
        chosen = draw(
            st.lists(
                st.sampled_from([a for a in RUNTIME_ATTRIBUTES if a.name != "type"]),
                unique_by=lambda a: a.name,
                max_size=3,
            )
        )
        spec["runtime"] = {a.name: draw(_value(a, False)) for a in chosen}
    if draw(RARELY):
        spec[draw(st.sampled_from(["sorce", "step", "runtim", "Name"]))] = {}
    return spec


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_specs())
def test_every_spec_the_loader_accepts_the_schema_accepts(spec: dict[str, Any]) -> None:
    problems = check_spec(spec)
    try:
        parse_spec(spec)
    except AdfError as exc:
        refused_by_loader = str(exc)
    else:
        assert problems == [], (spec, [str(p) for p in problems])
        return
    # what the schema covers (keys, types, choices, required keys) it refuses as the loader does
    for section in ("source", "sink"):
        unknown = [k for k in spec[section] if k in TYPOS]
        if unknown:
            assert any(p.path == f"$.{section}.{unknown[0]}" for p in problems), (spec, refused_by_loader)
    if any(k not in SPEC_KEYS for k in spec):
        assert any(p.message.startswith("unknown key") and p.path.count(".") == 1 for p in problems)


# --------------------------------------------------------------------------- plug-ins


def _install_plugin_entry_points(into: Path) -> dict[str, str]:
    """The example plug-in made importable with its entry points (a real dist-info directory, as
    pip would write it); the environment that finds them."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    info = into / f"adf_example_plugin-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    groups = project["entry-points"]
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in entries.items()) + "\n"
            for group, entries in groups.items()
        )
    )
    return {"PYTHONPATH": os.pathsep.join([str(into), str(PLUGIN / "src"), str(ROOT)])}


def test_an_installed_plugin_adds_its_types_and_attributes(tmp_path: Path) -> None:
    env = _install_plugin_entry_points(tmp_path / "site")
    res = adf("schema", "--id", "urn:active-data-flow:flow-spec:example-plugin", env=env)
    assert res.returncode == 0, res.stderr
    schema = json.loads(res.stdout)
    lines = schema["$defs"]["source.example_lines"]
    assert lines["required"] == ["path"] and lines["properties"]["pattern"]["default"] == "*.txt"
    assert "example_parts" in schema["$defs"]["sink"]["properties"]["type"]["enum"]
    # the plug-in example names this schema, committed beside it
    assert res.stdout == (PLUGIN / "flow.schema.json").read_text(), (
        "examples/plugin/flow.schema.json is stale: with the plug-in installed (pip install -e examples/plugin), "
        "adf schema --id urn:active-data-flow:flow-spec:example-plugin --output examples/plugin/flow.schema.json"
    )
    flow = yaml.safe_load((PLUGIN / "flow.yaml").read_text())
    assert check_spec(flow, schema=schema) == []
    assert [
        str(p) for p in check_spec({**flow, "source": {**flow["source"], "patern": "*"}}, schema=schema)
    ] == [
        "$.source.patern: unknown key 'patern'; did you mean 'pattern'? (accepted keys: encoding, path, pattern, type)"
    ]
    # without the plug-in, its types are unknown, and --no-plugins leaves them out anyway
    assert [p.path for p in check_spec(flow)] == ["$.sink.type", "$.source.type"]
    without = json.loads(adf("schema", "--no-plugins", env=env).stdout)
    assert without == json.loads(DOCS_SCHEMA.read_text())


# --------------------------------------------------------------------------- web API and dashboard


@dataclass
class Web:
    url: str
    store: SqlScheduleStore
    dir: Path


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    config = Settings(
        state_dir=str(tmp_path / "state"), database_url=f"sqlite:///{tmp_path / 'adf.db'}", api_token=TOKEN
    )
    store = SqlScheduleStore(config.database_url)
    try:
        with live_server(config, store) as url:
            yield Web(url, store, tmp_path)
    finally:
        store.close()


def _flow_spec(web: Web) -> dict[str, Any]:
    return {
        "source": {"type": "memory", "records": [{"id": 1}]},
        "sink": {"type": "file", "path": str(web.dir / "o.jsonl")},
    }


def test_the_api_refuses_what_the_schema_refuses_saying_where(web: Web) -> None:
    with client_from(headers={"authorization": f"Bearer {TOKEN}"}) as client:
        flows = f"{web.url}/api/flows"
        typo = {**_flow_spec(web), "sink": {"type": "file", "pth": "x.jsonl"}}
        resp = client.post(flows, json={"name": "orders", "configuration": typo, "run_interval": 0})
        assert resp.status_code == 422, resp.text
        body = resp.json()
        assert {"path": "$.sink.pth", "message": body["schema_errors"][1]["message"]} in body["schema_errors"]
        assert [e["path"] for e in body["schema_errors"]] == ["$.sink", "$.sink.pth"]
        assert "configuration: $.sink.pth: unknown key 'pth'; did you mean 'path'?" in body["error"]
        assert any(p.startswith("run_interval: must be a positive integer") for p in body["problems"])
        assert web.store.list_flows() == []

        assert (
            client.post(
                flows, json={"name": "orders", "configuration": _flow_spec(web), "run_interval": 60}
            ).status_code
            == 201
        )
        before = web.store.get_flow("orders")
        resp = client.patch(
            f"{flows}/orders", json={"configuration": {**_flow_spec(web), "runtime": {"batchsize": 9}}}
        )
        assert resp.status_code == 422, resp.text
        assert [e["path"] for e in resp.json()["schema_errors"]] == ["$.runtime.batchsize"]
        assert web.store.get_flow("orders") == before
        # what only the loader can tell (a step function that does not import) keeps its answer
        resp = client.patch(
            f"{flows}/orders",
            json={"configuration": {**_flow_spec(web), "steps": [{"function": "no_such_module:f"}]}},
        )
        assert resp.status_code == 422 and "schema_errors" not in resp.json(), resp.text
        assert "no_such_module" in resp.json()["error"]


def test_the_dashboard_shows_the_schema_problems_on_the_form(web: Web) -> None:
    web.store.create_flow("shown", _flow_spec(web), 3600)
    with client_from(base_url=web.url, follow_redirects=False) as client:
        page = client.get("/ui/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf, page.text
        assert (
            client.post(
                "/ui/login", data={"token": TOKEN, "csrf_token": csrf.group(1), "next": "/ui/flows"}
            ).status_code
            == 303
        )
        form_page = client.get("/ui/flows/shown")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form_page.text)
        assert token, form_page.text
        text = f"source: {{type: memory, records: []}}\nsink: {{type: file, path: {web.dir / 'x.jsonl'}, fsynk: true}}\n"
        resp = client.post(
            "/ui/flows/shown/configuration",
            data={
                "csrf_token": token.group(1),
                "format": "yaml",
                "configuration": text,
                "run_interval": "60",
            },
        )
        assert resp.status_code == 422, resp.text
        problems = re.findall(r"<li>(.*?)</li>", resp.text)
        assert any(
            p.startswith(
                "configuration: $.sink.fsynk: unknown key &#39;fsynk&#39;; did you mean &#39;fsync&#39;?"
            )
            for p in problems
        ), problems
        assert "fsynk: true" in resp.text  # the text stays on the form for fixing
    assert "fsynk" not in json.dumps(web.store.get_flow("shown").configuration)
