"""Spin 3's manifest rules: the generator never writes what the checker refuses, known-bad
manifests are refused naming the rule, versions are checked, and ``adf spin init`` makes
self-contained apps from any directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from active_data_flow.errors import SpecError
from active_data_flow.spin_app.cli import check_spin_versions
from active_data_flow.spin_app.manifest import (
    RULES,
    ManifestOptions,
    cron_expression_problem,
    flow_slug,
    load_flow_file,
    plan_routes,
    render_manifest,
    slug_collisions,
    spin_id_problem,
    validate_manifest,
)

ROOT = Path(__file__).resolve().parent.parent


def adf(*args: str, cwd: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-m", "active_data_flow.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


NAMES = ["orders", "orders_2024", "2nd-pass", "orders-to-db", "x", "a1b2", "trail__", "Mixed-Case", "dots.2.x",
         "9", "a" * 200, "v2-2024-final", "UPPER_2", "a--b__c"]


def _app(tmp_path: Path, name: str, trigger: str, *, interval: int = 60) -> str:
    spec = tmp_path / "flow.yaml"
    spec.write_text(json.dumps({"name": name, "source": {"type": "payload"}, "sink": {"type": "response"},
                                "runtime": {"interval_seconds": interval}}))
    flow = load_flow_file(str(spec))
    plan = plan_routes([flow], [trigger], [])
    options = ManifestOptions(name="app", mqtt_qos=0)
    text = render_manifest([flow], plan, options, str(tmp_path))
    (tmp_path / "spin.toml").write_text(text)
    return str(tmp_path / "spin.toml")


@pytest.mark.parametrize("trigger", ["http", "redis", "cron", "mqtt"])
@pytest.mark.parametrize("name", NAMES)
def test_every_generated_manifest_passes_the_checker(tmp_path: Path, name: str, trigger: str) -> None:
    path = _app(tmp_path, name, trigger)  # every one of NAMES is a valid flow name
    report = validate_manifest(path, build_check=None)
    assert report.ok, report.errors


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=1, max_size=60).filter(lambda s: s.strip() and "\x00" not in s),
       trigger=st.sampled_from(["http", "redis", "cron", "mqtt"]))
def test_generated_identifiers_are_always_valid(tmp_path_factory: pytest.TempPathFactory, name: str,
                                                trigger: str) -> None:
    assert spin_id_problem(f"adf_flow_{flow_slug(name)}_json", "_", lower=True) is None
    tmp = tmp_path_factory.mktemp("app")
    try:
        path = _app(tmp, name, trigger)
    except SpecError as exc:  # a name the spec parser itself refuses is not ours to map
        assert "name" in str(exc), exc
        return
    report = validate_manifest(path, build_check=None)
    assert not report.rule_errors, report.rule_errors


def test_the_mapping_is_readable_and_collisions_name_both_flows() -> None:
    assert flow_slug("orders-to-db") == "orders_to_db"
    assert flow_slug("orders_2024") == "orders_n2024"
    assert flow_slug("2nd-pass") == "n2nd_pass"
    assert flow_slug("日本語") == "flow"
    (msg,) = slug_collisions(["orders-2024", "orders_2024", "other"])
    assert "'orders-2024' and 'orders_2024'" in msg and "orders_n2024" in msg


def test_spin_identifier_rules() -> None:
    assert spin_id_problem("adf-http", "-", lower=False) is None
    assert "start with an ASCII letter" in (spin_id_problem("adf-redis-2024", "-", lower=False) or "")
    assert "start with an ASCII letter" in (spin_id_problem("adf_flow_orders_2024_json", "_", lower=True) or "")
    assert spin_id_problem("Level", "_", lower=True)
    assert spin_id_problem("a__b", "_", lower=True)


def test_cron_expressions_follow_the_pinned_plugin() -> None:
    assert cron_expression_problem("*/10 * * * * *") is None
    assert cron_expression_problem("0 30 9 * * MON-FRI") is None
    assert cron_expression_problem("0 0 12 ? JAN,JUL 5#2") is None
    assert "has 7 field(s)" in (cron_expression_problem("0/10 * * * * * *") or "")
    assert "has 5 field(s)" in (cron_expression_problem("*/5 * * * *") or "")
    assert "hour '24'" in (cron_expression_problem("0 0 24 * * *") or "")
    assert "runs backwards" in (cron_expression_problem("0 0 5-1 * * *") or "")


BAD = """
spin_manifest_version = 2
colour = "blue"

[application]
name = "bad"

[variables]
adf_flow_orders_2024_json = {{ default = "{{}}" }}
both = {{ default = "x", required = true }}

[[trigger.cron]]
component = "adf-cron"
cron_expression = "0/10 * * * * * *"

[[trigger.mqtt]]
component = "adf-mqtt"
topic = "a/b"
qos = 1

[application.trigger.mqtt]
address = "mqtt://localhost:1883"

[component.adf-cron]
source = "cron.wasm"
flavour = "x"
files = [{{ source = "../outside", destination = "/o" }}, {{ source = "{abs}", destination = "/a" }}]
key_value_stores = ["b@d"]
allowed_outbound_hosts = ["example.com"]

[component.adf-mqtt]
source = "mqtt.wasm"
"""


def test_known_bad_manifests_are_refused_naming_rule_and_version(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "outside").mkdir()
    manifest = tmp_path / "app" / "spin.toml"
    manifest.write_text(BAD.format(abs=str(tmp_path / "outside")))
    errors = validate_manifest(str(manifest), build_check=None).errors
    expected = [
        ("unknown top-level key(s) colour", "keys"),
        ("variables.adf_flow_orders_2024_json: variable name", "id"),
        ("variables.both: a required variable cannot have a default", "variables"),
        ("trigger.cron[0]: cron_expression '0/10 * * * * * *' has 7 field(s)", "cron"),
        ("trigger.mqtt[0]: qos must be a string", "mqtt"),
        ("application.trigger.mqtt: 'username' is required", "mqtt"),
        ("component.adf-cron: unknown key(s) flavour", "keys"),
        ("component.adf-cron.files[0]: source '../outside' is outside the application directory", "files"),
        ("component.adf-cron.files[1]: source", "files"),
        ("component.adf-cron.key_value_stores: label 'b@d'", "labels"),
        ("component.adf-cron.allowed_outbound_hosts: 'example.com'", "hosts"),
    ]
    for text, rule in expected:
        assert any(text in e and RULES[rule] in e for e in errors), f"{text!r} ({rule}) not in:\n" + "\n".join(errors)
    assert any("spin-trigger-cron 0." in e for e in errors) and any("Spin 3.4" in e for e in errors)


def test_manifest_refuses_a_7_field_cron_expression_and_flows_outside_the_app(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text("name: f\nsource: {type: payload}\nsink: {type: response}\n"
                                     "runtime: {interval_seconds: 60}\n")
    res = adf("spin", "manifest", "--flow", "f.yaml", "--route", "cron=f", "--cron-expression", "0/10 * * * * * *",
              "--out", "spin.toml", cwd=tmp_path)
    assert res.returncode == 2 and "has 7 field(s)" in res.stderr and not (tmp_path / "spin.toml").exists()
    res = adf("spin", "init", "ticks", "--flow", "f.yaml", "--route", "cron=f", "--cron-expression",
              "*/10 * * * * *", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert adf("spin", "validate", "--no-build-check", cwd=tmp_path / "ticks").returncode == 0
    res = adf("spin", "manifest", "--flow", "f.yaml", "--out", "app/spin.toml", cwd=tmp_path)
    assert res.returncode == 2 and "outside the application directory" in res.stderr


def test_init_from_outside_the_repository_makes_a_self_contained_app(tmp_path: Path) -> None:
    res = adf("spin", "init", "shop", "--flow", "examples/spin/orders_snapshot.yaml", "--route",
              "cron=orders_snapshot", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    app = tmp_path / "shop"
    assert sorted(p.name for p in (app / "examples" / "orders" / "data").iterdir()) == [
        "orders-1.csv", "orders-2.csv", "orders-3.csv"]
    report = validate_manifest(str(app / "spin.toml"), build_check=None)
    assert report.ok, report.errors

    (tmp_path / "lost.yaml").write_text("name: lost\nsource: {type: file, path: nowhere/*.csv}\n"
                                        "sink: {type: kv, key_field: id}\nruntime: {interval_seconds: 60}\n")
    res = adf("spin", "init", "lost", "--flow", "lost.yaml", "--route", "cron=lost", cwd=tmp_path)
    assert res.returncode == 2 and "matches no file" in res.stderr and not (tmp_path / "lost").exists()


def _fake_spin(tmp_path: Path, version: str, plugins: str) -> str:
    fake = tmp_path / "bin"
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "spin").write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then echo "{version}"; exit 0; fi\n'
        'if [ "$1" = "plugins" ]; then case "$*" in *json*) exit 2;; esac; '
        f"printf '{plugins}'; exit 0; fi\n"
        'echo "ran $*"\n')
    (fake / "spin").chmod(0o755)
    return str(fake / "spin")


def test_versions_are_checked_with_install_commands(tmp_path: Path) -> None:
    ok = "trigger-cron 0.5.0 [installed]\\ntrigger-mqtt 0.8.0 [installed]\\n"
    assert check_spin_versions(_fake_spin(tmp_path / "a", "spin 3.4.1 (abc 2025-09-10)", ok), ["cron", "mqtt"]) == []
    (old,) = check_spin_versions(_fake_spin(tmp_path / "b", "spin 3.3.0", ok), ["http"])
    assert "Spin 3.3.0 is installed" in old and "3.4.0" in old
    (four,) = check_spin_versions(_fake_spin(tmp_path / "c", "spin 4.0.1", ok), ["http"])
    assert "Spin 4.0.1" in four
    wrong = "trigger-cron 0.6.1 [installed]\\n"
    problems = check_spin_versions(_fake_spin(tmp_path / "d", "spin 3.5.0", wrong), ["cron", "mqtt"])
    assert any("trigger-cron 0.6.1 is installed" in p and "spin plugins uninstall trigger-cron" in p
               and "spin plugins install trigger-cron --version 0.5.0 --yes" in p for p in problems)
    assert any("trigger-mqtt is not installed" in p and "--version 0.8.0" in p for p in problems)


def test_spin_up_refuses_missing_plugins(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text("name: f\nsource: {type: payload}\nsink: {type: response}\n"
                                     "runtime: {interval_seconds: 60}\n")
    assert adf("spin", "init", "app", "--flow", "f.yaml", "--route", "cron=f", cwd=tmp_path).returncode == 0
    app = tmp_path / "app"
    (app / "build" / "spin").mkdir(parents=True)
    (app / "build" / "spin" / "cron.wasm").write_bytes(b"\0asm")
    spin = _fake_spin(tmp_path, "spin 3.4.1", "")
    res = adf("spin", "up", cwd=app, path=f"{os.path.dirname(spin)}:/usr/bin:/bin")
    assert res.returncode == 2 and "trigger-cron is not installed" in res.stderr, res.stderr
    assert "ran up" not in res.stdout


def test_the_mqtt_component_may_publish_its_results_on_the_broker() -> None:
    import tomllib

    manifest = tomllib.loads((ROOT / "infra" / "spin.toml").read_text(encoding="utf-8"))
    mqtt = manifest["component"]["adf-mqtt"]
    assert "{{ mqtt_address }}" in mqtt["allowed_outbound_hosts"]
    names = ("address", "username", "password", "response_topic", "response_via")
    assert {f"adf_mqtt_{n}": f"{{{{ mqtt_{n} }}}}" for n in names}.items() <= mqtt["variables"].items()
    variables = manifest["variables"]
    assert variables["mqtt_response_topic"]["default"] == "{topic}/results"
    assert variables["mqtt_response_via"]["default"] == "mqtt" and variables["mqtt_password"]["secret"] is True
