"""What the built Spin components import, against the Spin release they are documented to need.

Every import of every component must be in ``active_data_flow.spin_app.build.SPIN_INTERFACES`` (interface →
the first Spin release that provides it) and be provided by ``MIN_SPIN_VERSION``: a Spin host
without one of them cannot instantiate the component at all, used or not. The components are
the session's built ones (``tests/test_spin_components.py``'s fixture, cached by source hash).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_spin_components import components  # noqa: F401  (the session's built components)

from active_data_flow.spin_app.build import (
    MIN_SPIN_VERSION,
    SPIN_INTERFACES,
    component_imports,
    spin_version_problems,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_every_import_of_every_component_is_provided_by_the_documented_minimum_spin(
    components: dict[str, str],  # noqa: F811
) -> None:
    seen: dict[str, list[str]] = {}
    for kind, path in sorted(components.items()):
        names = component_imports(path)
        assert names, f"{kind}.wasm: no imports read"
        problems = spin_version_problems(names)
        assert not problems, f"{kind}.wasm (minimum Spin {MIN_SPIN_VERSION}):\n" + "\n".join(problems)
        seen[kind] = names
    # what the components need, and so the minimum, is one of the table's versions, not lower
    needed = max((SPIN_INTERFACES[n] for names in seen.values() for n in names), key=lambda v: tuple(map(int, v.split("."))))
    assert needed == MIN_SPIN_VERSION, f"the components need Spin {needed}, MIN_SPIN_VERSION says {MIN_SPIN_VERSION}"
    # the MQTT component's outbound MQTT and the triggers' own interfaces are among them
    assert "fermyon:spin/mqtt@2.0.0" in seen["mqtt"]
    assert "spin:mqtt-trigger/spin-mqtt-types" in seen["mqtt"]
    assert "fermyon:spin-cron/cron-types@2.0.0" in seen["cron"]


def test_the_import_reader_agrees_with_wasmtime(components: dict[str, str]) -> None:  # noqa: F811
    from active_data_flow.spin_app.host import ComponentHost, SpinState

    host = ComponentHost(components["mqtt"], state=SpinState(str(ROOT / "build" / "test-artifacts" / "imports")))
    try:
        by_wasmtime = [name for name, item in host.component.type.imports(host.engine).items()
                       if type(item.ty).__name__ in ("ComponentInstanceType", "FuncType")]
    finally:
        host.close()
    assert component_imports(components["mqtt"]) == by_wasmtime


def test_the_check_refuses_unknown_and_too_new_interfaces() -> None:
    assert spin_version_problems(["fermyon:spin/mqtt@2.0.0", "spin:postgres/postgres@4.0.0"]) == []
    unknown, too_new = spin_version_problems(["wasi:nn/graph@0.2.0", "spin:postgres/postgres@4.0.0"], minimum="3.3")
    assert "not in SPIN_INTERFACES" in unknown and "needs Spin 3.4" in too_new


def test_the_table_is_documented() -> None:
    text = (ROOT / "docs" / "SPIN.md").read_text(encoding="utf-8")
    assert f"Spin {MIN_SPIN_VERSION}" in text
    for name in ("spin:postgres/postgres@4.0.0", "spin:sqlite/sqlite@3.0.0", "fermyon:spin/mqtt@2.0.0",
                 "wasi:config/store@0.2.0-draft-2024-09-27"):
        row = re.search(rf"`{re.escape(name)}`[^\n]*\|\s*([\d.]+)\s*\|", text)
        assert row and row.group(1) == SPIN_INTERFACES[name], name
