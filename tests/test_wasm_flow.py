"""WASM steps inside flows: real modules built from the guest templates with the real
toolchains (scripts/wasm-setup), run through the engine, and the registry path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from active_data_flow.connectors.memory import MemorySink
from active_data_flow.engine import run_flow
from active_data_flow.errors import SpecError
from active_data_flow.spec import parse_spec
from active_data_flow.wasm import toolchain

pytestmark = pytest.mark.slow

ORDERS = [
    {"id": 1, "price": 10, "qty": 2, "amount": 50},
    {"id": 2, "price": 5, "qty": 3, "amount": 150},
    {"id": 3, "price": 1, "qty": 1, "amount": -4},     # invalid: negative amount
    {"id": 4, "price": 2, "qty": 2, "amount": 0},      # routed nowhere: done
    {"price": 1, "qty": 1, "amount": 7},               # invalid: no id
]


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], str]:
    missing = [lang for lang in ("c", "rust", "assemblyscript") if not toolchain.find_toolchain(lang)]
    if missing:
        pytest.fail(f"toolchains missing for {', '.join(missing)}: run scripts/wasm-setup")
    root = tmp_path_factory.mktemp("wasm-projects")
    built = {}
    for lang, example in [("c", "validate"), ("c", "transform"), ("c", "route"), ("c", "context"),
                          ("rust", "transform"), ("assemblyscript", "transform"), ("rust", "route"),
                          ("assemblyscript", "validate")]:
        project = toolchain.init_project(lang, f"{example}_{lang}".replace("assemblyscript", "as"), root,
                                         example=example)
        built[(lang, example)] = str(toolchain.build_project(project))
    return built


@pytest.fixture(autouse=True)
def registry_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("ADF_WASM_DB_URL", f"sqlite:///{tmp_path / 'wasm.db'}")
    monkeypatch.setenv("ADF_WASM_STORAGE", str(tmp_path / "modules"))
    yield tmp_path


def _flow(name: str, steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    MemorySink.clear(name)
    return {"name": name, "source": {"type": "memory", "records": ORDERS}, "steps": steps,
            "sink": {"type": "memory", "name": name}, **extra}


def _letters(summary: Any) -> list[dict[str, Any]]:
    return [json.loads(x) for x in Path(summary.dead_letter_destination).read_text().splitlines()]


def _tag(label: str, sid: str, **extra: Any) -> dict[str, Any]:
    return {"type": "python", "id": sid, "function": "flowlib.steps:tag", "options": {"label": label}, **extra}


@pytest.mark.parametrize("lang", ["c", "rust", "assemblyscript"])
def test_validate_transform_and_route_in_one_flow(modules: dict[tuple[str, str], str], tmp_path: Path,
                                                  lang: str) -> None:
    validate = modules[("assemblyscript", "validate")] if lang == "assemblyscript" else modules[("c", "validate")]
    route = modules[("rust", "route")] if lang == "rust" else modules[("c", "route")]
    steps = [
        {"type": "wasm", "id": "check", "module": validate, "memory_mb": 4},
        {"type": "wasm", "id": "price", "module": modules[(lang, "transform")], "output": "merge", "memory_mb": 4},
        {"type": "wasm", "id": "router", "module": route, "config": {"threshold": "${context.threshold}"},
         "memory_mb": 4},
        _tag("small", "small", next=[]),
        _tag("big", "big"),
    ]
    summary = run_flow(_flow(f"wasm_{lang}", steps, context={"threshold": 100}), state_dir=str(tmp_path))
    assert summary.status == "partial", summary.error
    out = sorted(MemorySink.get(f"wasm_{lang}"), key=lambda r: r["id"])
    assert [(r["id"], r["total"], r.get("seen")) for r in out] == [(1, 20, ["small"]), (2, 15, ["big"]), (4, 4, None)]
    letters = _letters(summary)
    assert sorted(str(x["record"].get("id")) for x in letters) == ["3", "None"]
    assert all(x["step"] == f"wasm:{validate}" and "WasmRecordInvalid" in x["reason"] for x in letters)
    # the threshold came from the run context: with 10, order 1 (amount 50) is big too
    summary = run_flow(_flow(f"wasm_{lang}_t10", steps, context={"threshold": 10}), state_dir=str(tmp_path))
    assert {r["id"]: r.get("seen") for r in MemorySink.get(f"wasm_{lang}_t10")}[1] == ["big"]


def test_invalid_records_can_fail_the_run_instead(modules: dict[tuple[str, str], str], tmp_path: Path) -> None:
    steps = [{"type": "wasm", "module": modules[("c", "validate")], "on_invalid": "fail"}]
    summary = run_flow(_flow("wasm_fail", steps), state_dir=str(tmp_path))
    assert (summary.status, summary.error_type) == ("failed", "WasmRecordInvalid")
    assert "negative amount -4" in (summary.error or "")


def test_the_context_module_reads_and_sets_the_run_context(modules: dict[tuple[str, str], str], tmp_path: Path) -> None:
    steps = [{"type": "wasm", "module": modules[("c", "context")], "batch_size": 2},
             {"type": "python", "function": "flowlib.steps:tag", "options": {"label": "after"}}]
    summary = run_flow(_flow("wasm_ctx", steps, context={"seen": 100}), state_dir=str(tmp_path))
    assert summary.status == "success", summary.error
    out = MemorySink.get("wasm_ctx")
    assert len(out) == len(ORDERS) and all("seq" in r for r in out)
    assert sorted(r["seq"] for r in out)[0] > 100  # counted on from the context's "seen"


def test_a_registry_module_runs_with_its_registered_permissions_and_is_logged(
    modules: dict[tuple[str, str], str], tmp_path: Path
) -> None:
    from active_data_flow.wasm.registry import ModuleRegistry

    reg = ModuleRegistry.from_env()
    reg.upload("pricing", "1.0.0", Path(modules[("c", "transform")]).read_bytes())
    steps = [{"type": "wasm", "module": "pricing@1.0.0", "output": "merge", "batch_size": 2}]
    summary = run_flow(_flow("wasm_reg", steps), state_dir=str(tmp_path))
    assert summary.status == "success", summary.error
    totals = sorted(r["total"] for r in MemorySink.get("wasm_reg"))
    assert totals == [1, 1, 4, 15, 20]
    executions = reg.query(module_id="pricing")
    assert len(executions) == 3 and all(e["ok"] and e["fuel_consumed"] > 0 for e in executions)  # 5 records, batches of 2


def test_an_unknown_module_or_bad_options_are_refused_when_the_flow_is_saved(tmp_path: Path) -> None:
    base = {"name": "bad", "source": {"type": "memory", "records": []}, "sink": {"type": "memory"}}
    with pytest.raises(SpecError) as err:
        parse_spec({**base, "steps": [
            {"type": "wasm", "module": "nosuch@1.0.0"},
            {"type": "wasm", "module": "Bad Name"},
            {"type": "wasm", "module": str(tmp_path / "missing.wasm")},
            {"type": "wasm", "module": "x.wasm", "fuel": -1},
            {"type": "wasm", "module": str(tmp_path / "missing.wasm"), "allow": ["http:fetch:x"]},
            {"type": "wasm", "module": "nosuch@1.0.0", "allow": ["http:read:https://x/*"]},
        ]})
    text = str(err.value)
    assert "steps[0]: module 'nosuch@1.0.0'" in text
    assert "steps[1]: module 'Bad Name' is neither 'id@version'" in text
    assert "missing.wasm' does not exist" in text
    assert "steps[3]: 'fuel': must be a positive integer" in text
    assert "steps[4]: allow: permission 'http:fetch:x': unknown kind 'http:fetch'" in text
    assert "steps[5]: allow: a registry module's permissions are the registry's" in text
