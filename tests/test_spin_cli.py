"""`adf spin …`: manifests, validation, scaffolding, and the hand-off to the spin CLI and the build.

The commands run as real processes (``python -m active_data_flow.cli``) except where a test replaces the
componentize-py build with a recorder to see what ``adf spin build`` hands it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
INFRA_COMMAND = [
    "spin", "manifest", "--name", "adf-orders",
    "--description", "ActiveDataFlow example: orders priced over HTTP, Redis, MQTT and cron",
    "--flow", "examples/spin/orders_enrich.yaml", "--flow", "examples/spin/orders_publish.yaml",
    "--flow", "examples/spin/orders_snapshot.yaml",
    "--trigger", "http", "--route", "http=orders_publish", "--route", "redis:orders=orders_publish",
    "--route", "mqtt:orders/+/incoming=orders_publish", "--route", "cron=orders_snapshot",
    "--out", "spin.toml",
]  # run in infra/: the app mounts only files inside its own directory (infra/examples/...)
#: infra/ holds copies of these (Spin mounts files only from inside the app directory)
INFRA_COPIES = ["examples/spin/orders_enrich.yaml", "examples/spin/orders_publish.yaml",
                "examples/spin/orders_snapshot.yaml", "examples/spin/order_steps.py",
                "examples/orders/data/orders-1.csv", "examples/orders/data/orders-2.csv",
                "examples/orders/data/orders-3.csv"]


def adf(*args: str, cwd: Path = ROOT, path: str | None = None,
        env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess[str]:
    """``adf ARGS`` in a subprocess; ``env`` adds variables (None removes one)."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    if path is not None:
        environ["PATH"] = path
    for name, value in (env or {}).items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    return subprocess.run([sys.executable, "-m", "active_data_flow.cli", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=120)


def load(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Flows of every Spin shape: payload -> step -> response, -> spin_redis, -> spin_http, file -> kv."""
    (tmp_path / "flows").mkdir()
    (tmp_path / "data" / "in").mkdir(parents=True)
    (tmp_path / "data" / "in" / "a.jsonl").write_text('{"n": 1}\n{"n": 2}\n')
    (tmp_path / "flows" / "shop_steps.py").write_text(textwrap.dedent("""
        import json
        from decimal import Decimal

        def price(record):
            record["total"] = float(Decimal(str(record["n"])) * 2)
            return record
    """))
    specs = {
        "priced.yaml": """
            name: priced
            source: {type: payload}
            steps: [{type: python, function: "shop_steps:price"}]
            sink: {type: response}
        """,
        "published.yaml": """
            name: published
            source: {type: payload}
            steps: [{type: filter, field: n, op: gt, value: 0}]
            sink: {type: spin_redis, channel: shop.out}
        """,
        "forwarded.yaml": """
            name: forwarded
            source: {type: payload}
            sink: {type: spin_http, url: "https://api.example.com/v1/orders", headers: {authorization: "Bearer t0ken"}}
        """,
        "cached.yaml": """
            name: cached
            source: {type: file, path: data/in/*.jsonl}
            steps: [{type: python, function: "shop_steps:price"}]
            sink: {type: kv, key_field: n, prefix: "n/"}
            runtime: {interval_seconds: 60}
        """,
    }
    for name, text in specs.items():
        (tmp_path / "flows" / name).write_text(textwrap.dedent(text))
    return tmp_path


def generate(project: Path, *extra: str, out: str = "spin.toml") -> subprocess.CompletedProcess[str]:
    flows = [a for name in ("priced", "published", "forwarded", "cached") for a in ("--flow", f"flows/{name}.yaml")]
    return adf("spin", "manifest", *flows, "--out", out, *extra, cwd=project)


# --------------------------------------------------------------------------- manifest


def test_manifest_is_a_spin3_manifest_with_variables_triggers_and_components(project: Path) -> None:
    res = generate(project, "--name", "shop", "--trigger", "http", "--route", "redis:orders=published",
                   "--route", "redis:returns=published", "--route", "mqtt:shop/+/orders=priced",
                   "--route", "http=priced", "--route", "cron=cached", "--route", "http=forwarded")
    assert res.returncode == 0, res.stderr
    m = load(project / "spin.toml")

    assert m["spin_manifest_version"] == 2
    assert m["application"]["name"] == "shop" and m["application"]["version"] == "0.1.0"
    assert m["application"]["trigger"]["redis"] == {"address": "{{ redis_address }}"}
    assert m["application"]["trigger"]["mqtt"] == {
        "address": "{{ mqtt_address }}", "username": "{{ mqtt_username }}", "password": "{{ mqtt_password }}",
        "keep_alive_interval": "30",
    }
    variables = m["variables"]
    assert variables["redis_address"]["default"] == "redis://127.0.0.1:6379"
    assert variables["log_level"]["default"] == "info"
    assert variables["adf_json"]["default"] == "{}"
    assert variables["adf_flow_priced_json"]["default"] == "{}"
    assert variables["mqtt_password"]["secret"] is True
    # the secret header of the spin_http sink becomes a secret variable defaulting to the spec's value
    assert variables["adf_flow_forwarded_sink_headers"] == {
        "default": '{"authorization": "Bearer t0ken"}', "secret": True, "description": "secret value of flow forwarded"}

    assert m["trigger"]["http"] == [{"route": "/flows/...", "component": "adf-http"}]
    # Spin's Redis trigger does not tell a component the channel: one component per channel
    assert m["trigger"]["redis"] == [{"channel": "orders", "component": "adf-redis-orders"},
                                     {"channel": "returns", "component": "adf-redis-returns"}]
    assert m["trigger"]["cron"] == [{"component": "adf-cron", "cron_expression": "*/10 * * * * *"}]
    assert len(m["trigger"]["cron"][0]["cron_expression"].split()) == 6  # croner: no year field
    assert m["trigger"]["mqtt"] == [{"component": "adf-mqtt", "topic": "shop/+/orders", "qos": "1"}]

    http = m["component"]["adf-http"]
    assert http["source"] == "build/spin/http.wasm"
    assert http["files"] == [
        {"source": "flows/forwarded.yaml", "destination": "/flows/forwarded.yaml"},
        {"source": "flows/priced.yaml", "destination": "/flows/priced.yaml"},
    ]
    assert http["key_value_stores"] == ["default"] and http["sqlite_databases"] == ["default"]
    assert http["allowed_outbound_hosts"] == ["https://api.example.com"]
    hv = http["variables"]
    assert hv["adf_trigger"] == "http"
    assert json.loads(hv["adf_flows"]) == {"forwarded": "/flows/forwarded.yaml", "priced": "/flows/priced.yaml"}
    assert json.loads(hv["adf_routes"]) == {"/flows/forwarded/run": "forwarded", "/flows/priced/run": "priced"}
    assert hv["adf_json"] == "{{ adf_json }}" and hv["adf_log_level"] == "{{ log_level }}"
    assert hv["adf_flow_forwarded_sink_headers"] == "{{ adf_flow_forwarded_sink_headers }}"
    assert http["build"]["command"] == "adf spin build --manifest spin.toml --out build/spin --trigger http"
    assert "flows/shop_steps.py" in http["build"]["watch"] and "flows/priced.yaml" in http["build"]["watch"]

    orders = m["component"]["adf-redis-orders"]
    assert orders["source"] == "build/spin/redis.wasm"
    assert orders["allowed_outbound_hosts"] == ["{{ redis_address }}"]  # spin_redis without an address
    assert orders["variables"]["adf_channel"] == "orders"
    assert json.loads(orders["variables"]["adf_routes"]) == {"orders": "published"}
    assert orders["variables"]["adf_redis_address"] == "{{ redis_address }}"
    assert "build" in orders and "build" not in m["component"]["adf-redis-returns"]  # redis.wasm built once

    cron = m["component"]["adf-cron"]
    assert json.loads(cron["variables"]["adf_routes"]) == {"cached": 60}  # runtime.interval_seconds
    # the file source's directory is mounted where the flow reads it (the component's cwd is /)
    assert {"source": "data/in", "destination": "/data/in"} in cron["files"]
    mqtt = m["component"]["adf-mqtt"]
    assert json.loads(mqtt["variables"]["adf_routes"]) == {"shop/+/orders": "priced"}

    res = adf("spin", "validate", "--manifest", "spin.toml", "--no-build-check", cwd=project)
    assert res.returncode == 0, res.stdout
    assert "5 component(s)" in res.stdout


def test_manifest_defaults_to_http_and_prints_with_dash(project: Path) -> None:
    res = adf("spin", "manifest", "--flow", "flows/priced.yaml", "--out", "-", cwd=project)
    assert res.returncode == 0, res.stderr
    m = tomllib.loads(res.stdout)
    assert list(m["component"]) == ["adf-http"] and m["application"]["name"] == "priced"
    assert m["component"]["adf-http"]["files"] == [{"source": "flows/priced.yaml", "destination": "/flows/priced.yaml"}]


def test_manifest_route_mistakes_are_refused(project: Path) -> None:
    res = generate(project, "--route", "http:/orders=priced")
    assert res.returncode == 2 and "GET|POST /flows/<flow>/run" in res.stderr
    res = generate(project, "--route", "redis:orders=priced", "--route", "redis:orders=published")
    assert res.returncode == 2 and "redis channel 'orders' routes to two flows" in res.stderr
    res = generate(project, "--route", "cron=priced")
    assert res.returncode == 2 and "runtime.interval_seconds" in res.stderr
    res = generate(project, "--route", "kafka:x=priced")
    assert res.returncode == 2 and "unknown trigger 'kafka'" in res.stderr
    res = generate(project, "--route", "mqtt:a/#/b=priced")
    assert res.returncode == 2 and "'#' must be the whole last level" in res.stderr


def test_manifest_check_reports_drift_and_never_clobbers_a_hand_written_manifest(project: Path) -> None:
    assert generate(project).returncode == 0
    assert generate(project, "--check").returncode == 0
    res = generate(project, "--check", "--name", "other")
    assert res.returncode == 1 and '+name = "other"' in res.stdout
    (project / "mine.toml").write_text("spin_manifest_version = 2\n")
    res = generate(project, out="mine.toml")
    assert res.returncode == 2 and "not generated by `adf spin manifest`" in res.stderr
    assert (project / "mine.toml").read_text() == "spin_manifest_version = 2\n"


def test_infra_manifest_is_what_the_generator_makes_and_validates() -> None:
    res = adf(*INFRA_COMMAND, "--check", cwd=ROOT / "infra")
    assert res.returncode == 0, res.stdout + res.stderr

    res = adf("spin", "validate", "--manifest", "infra/spin.toml", "--no-build-check", "--json")
    report = json.loads(res.stdout)
    assert res.returncode == 0 and report["valid"], report["errors"]
    assert set(report["flows"]) == {"orders_enrich", "orders_publish", "orders_snapshot"}
    assert report["components"] == {"adf-http": "http", "adf-redis-orders": "redis", "adf-cron": "cron",
                                     "adf-mqtt": "mqtt"}

    if not all((ROOT / "infra" / "build" / "spin" / f"{k}.wasm").exists() for k in ("http", "redis", "cron", "mqtt")):
        res = adf("spin", "validate", "--manifest", "infra/spin.toml", "--json")
        report = json.loads(res.stdout)
        assert res.returncode == 2
        assert report["errors"] and all("run `adf spin build`" in e for e in report["errors"])


def test_infra_copies_of_the_example_flows_are_identical_to_the_originals() -> None:
    manifest = load(ROOT / "infra" / "spin.toml")
    mounted = {f["source"] for c in manifest["component"].values() for f in c.get("files", [])}
    assert all(not s.startswith("..") and not s.startswith("/") for s in mounted), mounted
    for rel in INFRA_COPIES:
        assert (ROOT / "infra" / rel).read_bytes() == (ROOT / rel).read_bytes(), (
            f"infra/{rel} differs from {rel}: copy it again (cp {rel} infra/{rel}) and regenerate infra/spin.toml")
    copied = sorted(str(p.relative_to(ROOT / "infra")) for p in (ROOT / "infra" / "examples").rglob("*") if p.is_file()
                    and "__pycache__" not in p.parts)
    assert copied == sorted(INFRA_COPIES)


# --------------------------------------------------------------------------- validate


def test_validate_lists_every_manifest_problem(tmp_path: Path) -> None:
    (tmp_path / "spin.toml").write_text(textwrap.dedent("""
        spin_manifest_version = 1

        [application]
        name = "bad app"

        [variables]
        token = { secret = true }
        Level = { default = "info" }

        [[trigger.http]]
        route = "orders"
        component = "adf-http"

        [[trigger.http]]
        route = "/a/.../b"
        component = "ghost"

        [[trigger.redis]]
        channel = ""
        component = "adf-redis"

        [[trigger.cron]]
        component = "adf-cron"
        cron_expression = "*/5 * * * *"

        [[trigger.mqtt]]
        component = "adf-mqtt"
        topic = "sensors/#/x"
        qos = "3"

        [component.adf-http]
        source = "build/spin/http.wasm"
        allowed_outbound_hosts = ["example.com"]
        [component.adf-http.variables]
        adf_trigger = "http"
        adf_flows = '{"f": "/flows/f.yaml"}'
        adf_routes = "not json"
        adf_json = "{{ adf_settings }}"

        [component.adf-redis]
        source = "build/spin/redis.wasm"
        [component.adf-redis.variables]
        adf_trigger = "redis"
        adf_flows = "{}"
        adf_routes = "{}"

        [component.adf-cron]
        source = "build/spin/cron.wasm"
        [component.adf-cron.variables]
        adf_trigger = "cron"
        adf_flows = "{}"
        adf_routes = '{"nightly": 0}'

        [component.adf-mqtt]
        source = "build/spin/mqtt.wasm"
        files = [{ source = "nowhere", destination = "data" }]
        [component.adf-mqtt.variables]
        adf_trigger = "mqtt"
        adf_flows = "{}"
        adf_routes = "{}"
    """))
    res = adf("spin", "validate", "--json", cwd=tmp_path)
    assert res.returncode == 2
    errors = json.loads(res.stdout)["errors"]
    expected = [
        "spin_manifest_version must be 2",
        "application.name 'bad app'",
        "variables.token: needs a default or required = true",
        "variables.Level: variable name 'Level' is invalid",
        "trigger.http[0]: HTTP route 'orders' must start with '/'",
        "trigger.http[1]: component 'ghost' is not defined",
        "trigger.http[1]: HTTP route '/a/.../b': the '...' wildcard must be the whole last segment",
        "trigger.redis[0]: 'channel' must be a non-empty string",
        "trigger.redis[0]: no Redis address",
        "trigger.cron[0]: cron_expression '*/5 * * * *' has 5 field(s); spin-trigger-cron needs 6",
        "trigger.mqtt[0]: MQTT topic 'sensors/#/x': '#' must be the whole last level",
        "trigger.mqtt[0]: qos must be 0, 1 or 2, got '3'",
        "trigger.mqtt[0]: [application.trigger.mqtt] address is required",
        "component.adf-http: source build/spin/http.wasm does not exist yet: run `adf spin build`",
        "component.adf-http.allowed_outbound_hosts: 'example.com' must be scheme://host[:port]",
        "component.adf-http.variables.adf_json: references {{ adf_settings }}, which [variables] does not declare",
        "component.adf-http.variables.adf_routes: not valid JSON",
        "component.adf-http.variables.adf_flows: flow 'f': /flows/f.yaml is not mounted",
        "component.adf-redis.variables: adf_channel is required",
        "component.adf-cron.variables.adf_routes: flow 'nightly' is not bundled",
        "component.adf-cron.variables.adf_routes: flow 'nightly': the cron interval must be a number of seconds > 0",
        "component.adf-mqtt.files[0]: destination 'data' must be an absolute path",
        "component.adf-mqtt.files[0]: source nowhere does not exist",
        "component.adf-mqtt: [[trigger.mqtt]] topic 'sensors/#/x' has no entry in adf_routes",
    ]
    for text in expected:
        assert any(text in e for e in errors), f"{text!r} not in:\n" + "\n".join(errors)

    # without the build check a missing .wasm is only a warning
    res = adf("spin", "validate", "--json", "--no-build-check", cwd=tmp_path)
    report = json.loads(res.stdout)
    assert not any("adf spin build" in e for e in report["errors"])
    assert any("adf spin build" in w for w in report["warnings"])


def test_flows_that_cannot_run_inside_spin_are_refused_naming_flow_connector_and_reason(tmp_path: Path) -> None:
    (tmp_path / "netstep.py").write_text("import requests\n\ndef fetch(r):\n    return r\n")
    (tmp_path / "guarded.py").write_text(
        "try:\n    import orjson\nexcept ImportError:\n    orjson = None\n\ndef f(r):\n    return r\n")
    specs = {
        "to_db.yaml": "name: to_db\nsource: {type: payload}\nsink: {type: sql, url: 'sqlite:///x.db', table: t}\n",
        "from_s3.yaml": "name: from_s3\nsource: {type: file, path: 's3://bucket/in/*.csv'}\nsink: {type: response}\n",
        "wasm.yaml": ("name: wasm_flow\nsource: {type: payload}\n"
                      "steps: [{type: wasm, module: pricing@1.2.0, function: transform}]\nsink: {type: response}\n"),
        "to_file.yaml": "name: to_file\nsource: {type: payload}\nsink: {type: file, path: out.jsonl}\n",
        "io.yaml": ("name: io\nsource: {type: payload}\nsteps: [{type: http, url: 'https://api.example.com/x'},"
                    " {type: sql, url: 'sqlite:///x.db', query: 'select 1'}]\nsink: {type: response}\n"),
        "net.yaml": ("name: net\nsource: {type: payload}\nsteps: [{type: python, function: 'netstep:fetch'},"
                     " {type: python, function: 'guarded:f'}, {type: python, function: 'netstep:missing'}]\n"
                     "sink: {type: response}\nruntime: {parallelism: 4}\n"),
    }
    for name, text in specs.items():
        (tmp_path / name).write_text(text)
    flows = [a for name in specs for a in ("--flow", name)]

    res = adf("spin", "manifest", *flows, "--out", "spin.toml", cwd=tmp_path)
    assert res.returncode == 2 and not (tmp_path / "spin.toml").exists()
    assert "refused: 8 problem(s)" in res.stderr

    res = adf("spin", "manifest", *flows, "--out", "spin.toml", "--no-check", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = adf("spin", "validate", "--no-build-check", "--json", cwd=tmp_path)
    assert res.returncode == 2
    report = json.loads(res.stdout)
    errors = report["errors"]
    expected = [
        "flow to_db: sink 'sql': SQLAlchemy opens database connections",
        "flow from_s3: source 'file': path 's3://bucket/in/*.csv': S3 needs boto3",
        "flow wasm_flow: steps[0] 'wasm': WASM steps run on the host targets (local, heartbeat, Lambda, Flink), "
        "not inside a Spin component",
        "flow to_file: sink 'file': a component cannot write files",
        "flow io: steps[0] 'http': the http step opens sockets",
        "flow io: steps[1] 'sql': the sql step opens database connections",
        "flow net: steps[0] 'python' (netstep:fetch): module netstep imports requests (line 1): opens sockets",
        "flow net: steps[2] 'python' (netstep:missing): module netstep defines no 'missing'",
    ]
    for text in expected:
        assert any(text in e for e in errors), f"{text!r} not in:\n" + "\n".join(errors)
    assert len(errors) == 8, errors
    warnings = report["warnings"]
    assert any("flow net: runtime.parallelism 4" in w for w in warnings)
    assert any("module guarded imports orjson (line 2) inside a try/except ImportError" in w for w in warnings)


def test_a_file_source_must_be_mounted_into_the_component(project: Path) -> None:
    assert generate(project, "--route", "cron=cached").returncode == 0
    manifest = project / "spin.toml"
    text = manifest.read_text()
    mount = '    { source = "data/in", destination = "/data/in" },\n'
    assert mount in text
    manifest.write_text(text.replace(mount, ""))
    res = adf("spin", "validate", "--manifest", "spin.toml", "--no-build-check", cwd=project)
    assert res.returncode == 2
    assert ("flow cached: source 'file': path 'data/in/*.jsonl' is read at /data/in inside the component, "
            "but no files entry of component adf-cron mounts it") in res.stdout


# --------------------------------------------------------------------------- init


def test_init_scaffolds_a_self_contained_app(project: Path) -> None:
    res = adf("spin", "init", "shop-app", "--flow", "flows/cached.yaml", "--flow", "flows/priced.yaml",
              "--trigger", "http", "--route", "cron=cached", cwd=project)
    assert res.returncode == 0, res.stderr
    app = project / "shop-app"
    files = sorted(str(p.relative_to(app)) for p in app.rglob("*") if p.is_file())
    assert files == [".gitignore", "README.md", "data/in/a.jsonl", "flows/cached.yaml", "flows/priced.yaml",
                     "flows/shop_steps.py", "spin.toml"]
    m = load(app / "spin.toml")
    assert m["application"]["name"] == "shop-app"
    assert {"source": "data/in", "destination": "/data/in"} in m["component"]["adf-cron"]["files"]
    readme = (app / "README.md").read_text()
    assert "adf spin build" in readme and "adf spin up" in readme and "adf spin deploy" in readme
    assert "build/spin/" in (app / ".gitignore").read_text()
    res = adf("spin", "validate", "--no-build-check", cwd=app)
    assert res.returncode == 0, res.stdout
    assert not any("outside the application directory" in line for line in res.stdout.splitlines())

    res = adf("spin", "init", "shop-app", cwd=project)
    assert res.returncode == 2 and "not empty" in res.stderr


def test_init_without_flows_writes_a_starter_flow_and_refuses_flows_spin_cannot_run(tmp_path: Path) -> None:
    res = adf("spin", "init", "hello", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "hello" / "flows").iterdir()) == ["hello.yaml", "hello_steps.py"]
    assert adf("spin", "validate", "--no-build-check", cwd=tmp_path / "hello").returncode == 0

    res = adf("spin", "init", "orders", "--flow", str(ROOT / "examples/orders/flow.yaml"), cwd=tmp_path)
    assert res.returncode == 2 and "flow orders_to_sqlite: sink 'sql'" in res.stderr
    assert not (tmp_path / "orders").exists()


# --------------------------------------------------------------------------- up / deploy


def _built_app(tmp_path: Path) -> Path:
    assert adf("spin", "init", "app", cwd=tmp_path).returncode == 0
    app = tmp_path / "app"
    (app / "build" / "spin").mkdir(parents=True)
    (app / "build" / "spin" / "http.wasm").write_bytes(b"\0asm")
    return app


@pytest.mark.parametrize("verb", ["up", "deploy"])
def test_up_and_deploy_without_the_spin_cli_exit_127_and_say_what_to_do(tmp_path: Path, verb: str) -> None:
    app = _built_app(tmp_path)
    res = adf("spin", verb, cwd=app, path="/usr/bin:/bin")
    assert res.returncode == 127
    assert "the `spin` CLI is not installed" in res.stderr
    assert "https://spinframework.dev/v3/install" in res.stderr
    assert "python -m active_data_flow.spin_app.host serve build/spin/http.wasm" in res.stderr


def _fake_spin(tmp_path: Path, script: str, *, version: str = "spin 3.4.1 (2a1b3c4 2025-09-10)",
               plugins: str = "") -> str:
    """A ``spin`` executable running the shell ``script`` (after answering ``--version`` with
    ``version`` and ``plugins list`` with ``plugins``); returns a PATH that finds it first."""
    fake = tmp_path / "bin"
    fake.mkdir()
    head = (f'if [ "$1" = "--version" ]; then echo "{version}"; exit 0; fi\n'
            'if [ "$1" = "plugins" ]; then\n'
            '  case "$*" in *json*) echo "not a flag" >&2; exit 2;; esac\n'
            f"  printf '%s' '{plugins}'; exit 0\nfi\n")
    (fake / "spin").write_text(f"#!/bin/sh\n{head}{script}\n")
    (fake / "spin").chmod(0o755)
    return f"{fake}:/usr/bin:/bin"


def test_up_and_deploy_run_the_real_spin_cli_with_the_manifest(tmp_path: Path) -> None:
    app = _built_app(tmp_path)
    calls = tmp_path / "calls.txt"
    path = _fake_spin(tmp_path, f'echo "$@" >> {calls}\nexit 7')

    res = adf("spin", "up", "--", "--listen", "127.0.0.1:3001", cwd=app, path=path)
    assert res.returncode == 7, res.stderr  # spin's own exit code
    res = adf("spin", "deploy", "--manifest", "spin.toml", cwd=app, path=path)
    assert res.returncode == 7, res.stderr
    assert calls.read_text().splitlines() == ["up --from spin.toml --listen 127.0.0.1:3001",
                                              "deploy --from spin.toml"]

    # a manifest that does not validate never reaches spin
    (app / "build" / "spin" / "http.wasm").unlink()
    res = adf("spin", "up", cwd=app, path=path)
    assert res.returncode == 2 and "run `adf spin build`" in res.stdout
    assert len(calls.read_text().splitlines()) == 2


def test_spin_up_keeps_a_python_components_heap_resident_unless_told_otherwise(tmp_path: Path) -> None:
    app = _built_app(tmp_path)
    seen = tmp_path / "env.txt"
    path = _fake_spin(tmp_path, f'echo "$1 keep=$SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT" >> {seen}')
    unset = {"SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT": None}

    res = adf("spin", "up", cwd=app, path=path, env=unset)
    assert res.returncode == 0 and "SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT=33554432" in res.stderr
    adf("spin", "deploy", cwd=app, path=path, env=unset)  # Fermyon Cloud: not ours to tune
    adf("spin", "up", cwd=app, path=path, env={"SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT": "4194304"})
    assert seen.read_text().splitlines() == [f"up keep={32 << 20}", "deploy keep=", "up keep=4194304"]


# --------------------------------------------------------------------------- build / stage


def test_build_validates_then_hands_the_manifest_to_the_spin_build(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from active_data_flow.cli import main
    from active_data_flow.spin_app import build as build_module
    from active_data_flow.spin_app import cli as spin_cli

    assert generate(project, "--trigger", "http", "--route", "redis:orders=published", "--route", "http=priced",
                    "--route", "http=published").returncode == 0
    calls: list[dict[str, Any]] = []

    def fake_build(out_dir: str, **kwargs: Any) -> dict[str, str]:
        calls.append({"out_dir": out_dir, **kwargs})
        out = {}
        for kind in kwargs["triggers"]:
            path = Path(out_dir) / f"{kind}.wasm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\0" * 2_000_000)
            out[kind] = str(path)
        return out

    monkeypatch.setattr(build_module, "build", fake_build)
    monkeypatch.chdir(project)
    assert main(["spin", "build", "--manifest", "spin.toml"]) == 0
    out = capsys.readouterr().out
    assert "built 2 component(s)" in out and "http.wasm  2.0 MB" in out
    (call,) = calls
    assert call["out_dir"] == str(project / "build" / "spin")
    assert call["triggers"] == ("http", "redis")
    assert call["flows"] == [str(project / "flows" / f"{n}.yaml") for n in ("cached", "forwarded", "priced", "published")]
    assert call["routes"]["redis"] == {"orders": "published"}
    assert "adf_flow_priced_json" in call["variables"] and "adf_trigger" not in call["variables"]
    assert call["strip"] is True
    assert main(["spin", "validate", "--manifest", "spin.toml"]) == 0  # the .wasm files exist now

    # an invalid manifest is never built
    (project / "flows" / "priced.yaml").write_text("name: priced\nsource: {type: payload}\nsink: {type: sql}\n")
    assert main(["spin", "build", "--manifest", "spin.toml"]) == 2
    assert len(calls) == 1 and "flow priced: sink 'sql'" in capsys.readouterr().out

    monkeypatch.setattr(spin_cli, "_componentize_available", lambda: False)
    (project / "flows" / "priced.yaml").write_text("name: priced\nsource: {type: payload}\nsink: {type: response}\n")
    assert main(["spin", "build", "--manifest", "spin.toml"]) == 127
    assert "pip install 'active-data-flow[spin]'" in capsys.readouterr().err


def test_stage_copies_the_files_a_component_mounts(project: Path) -> None:
    assert generate(project, "--route", "cron=cached").returncode == 0
    res = adf("spin", "stage", "--manifest", "spin.toml", cwd=project)
    assert res.returncode == 0, res.stderr
    root = project / ".spin" / "files" / "adf-cron"
    assert (root / "flows" / "cached.yaml").read_text() == (project / "flows" / "cached.yaml").read_text()
    assert (root / "data" / "in" / "a.jsonl").exists()


@pytest.mark.slow
def test_build_writes_a_component_the_size_it_reports(project: Path) -> None:
    assert generate(project, "--route", "http=priced").returncode == 0
    res = adf("spin", "build", "--manifest", "spin.toml", "--json", cwd=project)
    assert res.returncode == 0, res.stderr
    built = json.loads(res.stdout.splitlines()[-1])
    wasm = Path(built["wasm"]["http"]["path"])
    assert wasm == project / "build" / "spin" / "http.wasm"
    assert wasm.read_bytes()[:4] == b"\0asm" and built["wasm"]["http"]["bytes"] == wasm.stat().st_size
    assert adf("spin", "validate", "--manifest", "spin.toml", cwd=project).returncode == 0


def test_the_build_bundles_the_step_modules_a_flow_imports(tmp_path: Path) -> None:
    from active_data_flow.spin_app.build import BuildError, bundle_source, step_module_sources

    lib = tmp_path / "lib"
    (lib / "pkg_steps").mkdir(parents=True)
    (lib / "pkg_steps" / "__init__.py").write_text("")
    (lib / "pkg_steps" / "prices.py").write_text("def f(r):\n    return r\n")
    (lib / "flat_steps.py").write_text("def g(r):\n    return r\n")
    spec = {
        "name": "f", "source": {"type": "payload"}, "sink": {"type": "response"}, "python_path": [str(lib)],
        "steps": [{"type": "python", "function": "pkg_steps.prices:f"}, {"type": "python", "function": "flat_steps:g"},
                  {"type": "filter", "function": "json:loads"}, {"type": "python", "function": "active_data_flow.step:build_steps"}],
    }
    found = step_module_sources({"f": spec})
    assert found == {"pkg_steps": lib / "pkg_steps", "flat_steps": lib / "flat_steps.py"}
    assert "STEP_MODULES = ['active_data_flow.step', 'flat_steps', 'json', 'pkg_steps.prices']" in bundle_source([spec])
    missing = dict(spec, steps=[{"type": "python", "function": "nowhere_to_be_found:f"}])
    with pytest.raises(BuildError, match="nowhere_to_be_found"):
        step_module_sources({"f": missing})
