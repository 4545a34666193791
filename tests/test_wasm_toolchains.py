"""Guest module templates with the real toolchains: ``adf wasm init`` + ``adf wasm build`` for
each language and example, then the module runs under wasmtime with a small host of the ``adf``
imports written here, and its output envelope is checked.

The toolchains come from ``scripts/wasm-setup`` (Debian rustc/clang/wasi-libc, npm asc); a
missing one fails the test. TinyGo is optional: its test is skipped when ``tinygo`` is absent.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import wasmtime  # the wasm extra; scripts/spin-setup installs it too

from active_data_flow.wasm import toolchain
from active_data_flow.wasm.toolchain import (
    EXAMPLES,
    LANGS,
    PROJECT_FILE,
    BuildFailed,
    ProjectError,
    ToolchainNotFound,
    build_project,
    find_toolchains,
    init_project,
)

pytestmark = pytest.mark.slow

TESTED = ("rust", "c", "assemblyscript")
ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "WASM_EXAMPLES.md"

RECORDS: list[dict[str, Any]] = [
    {"id": 1, "price": 2.5, "qty": 4, "amount": 150},
    {"id": 2, "price": 10, "qty": 0, "amount": -5},
    {"amount": 0, "note": "no id"},
    {"id": 4, "amount": 100, "name": "Zoë \"quoted\" \\ back\nslash\ttab \u0001 😀", "tags": ["a", "b"],
     "nested": {"ok": True, "none": None, "ratio": 0.125, "big": 12345678901, "neg": -3.5e-7}},
    {"id": 5, "amount": None},
]


def envelope(config: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"records": json.loads(json.dumps(RECORDS)), "context": {"run": "r-1"}, "config": config or {}}


# --------------------------------------------------------------------------- a small host


class Host:
    """The ``adf`` imports over a dict context (``deny``: functions answering permission denied);
    ``logs`` collects (level, message)."""

    def __init__(self, context: dict[str, Any] | None = None, deny: set[str] | frozenset[str] = frozenset()):
        self.context: dict[str, Any] = {} if context is None else context
        self.deny = set(deny)
        self.logs: list[tuple[int, str]] = []
        self.calls: list[str] = []

    def _linker(self, engine: Any) -> Any:
        i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
        linker = wasmtime.Linker(engine)

        def read(caller: Any, ptr: int, length: int) -> bytes:
            return bytes(caller["memory"].read(caller, ptr, ptr + length))

        def reply(caller: Any, obj: dict[str, Any]) -> int:
            data = json.dumps(obj).encode()
            ptr = int(caller["alloc"](caller, len(data)))
            caller["memory"].write(caller, data, ptr)
            return (ptr << 32) | len(data)

        def log(caller: Any, level: int, ptr: int, length: int) -> None:
            self.logs.append((level, read(caller, ptr, length).decode()))

        def handler(name: str, answer: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[..., int]:
            def fn(caller: Any, ptr: int, length: int) -> int:
                self.calls.append(name)
                request = json.loads(read(caller, ptr, length))
                if name in self.deny:
                    return reply(caller, {"ok": False, "error": f"permission denied: {name}"})
                return reply(caller, answer(request))
            return fn

        def get_context(req: dict[str, Any]) -> dict[str, Any]:
            return {"ok": True, "value": self.context.get(req["key"])}

        def set_context(req: dict[str, Any]) -> dict[str, Any]:
            self.context[req["key"]] = req["value"]
            return {"ok": True}

        def unsupported(req: dict[str, Any]) -> dict[str, Any]:
            return {"ok": False, "error": "not in this test host"}

        linker.define_func("adf", "log", wasmtime.FuncType([i32, i32, i32], []), log, access_caller=True)
        answers = {"get_context": get_context, "set_context": set_context, "http_request": unsupported,
                   "db_query": unsupported, "file_read": unsupported, "file_write": unsupported}
        for name, answer in answers.items():
            linker.define_func("adf", name, wasmtime.FuncType([i32, i32], [i64]), handler(name, answer),
                               access_caller=True)
        return linker

    def call(self, wasm: Path, payload: dict[str, Any] | bytes, function: str = "run") -> dict[str, Any]:
        config = wasmtime.Config()
        config.consume_fuel = True
        engine = wasmtime.Engine(config)
        module = wasmtime.Module.from_file(engine, str(wasm))
        foreign = [(i.module, i.name) for i in module.imports if i.module != "adf"]
        assert not foreign, f"{wasm.name} imports more than adf: {foreign}"
        store = wasmtime.Store(engine)
        store.set_fuel(2_000_000_000)
        exports = self._linker(engine).instantiate(store, module).exports(store)
        if "_initialize" in exports:  # reactors (TinyGo c-shared)
            exports["_initialize"](store)
        memory = exports["memory"]
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        ptr = exports["alloc"](store, len(data))
        memory.write(store, data, ptr)
        packed = exports[function](store, ptr, len(data)) & 0xFFFF_FFFF_FFFF_FFFF
        out_ptr, out_len = packed >> 32, packed & 0xFFFF_FFFF
        out = json.loads(bytes(memory.read(store, out_ptr, out_ptr + out_len)))
        if "dealloc" in exports:
            exports["dealloc"](store, out_ptr, out_len)
            exports["dealloc"](store, ptr, len(data))
        assert isinstance(out, dict)
        return out


# --------------------------------------------------------------------------- building


def require_toolchain(lang: str) -> None:
    if find_toolchains().get(lang) is None:
        pytest.fail(f"{ToolchainNotFound(lang)} — run scripts/wasm-setup before these tests", pytrace=False)


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """Builds (once per module run) the example ``example`` of ``lang``; returns the .wasm path."""
    root = tmp_path_factory.mktemp("guests")
    built: dict[tuple[str, str], Path] = {}

    def get(lang: str, example: str) -> Path:
        if (lang, example) not in built:
            require_toolchain(lang)
            project = init_project(lang, f"{example}-{lang}", root, example=example)
            built[lang, example] = build_project(project)
        return built[lang, example]

    return get


# --------------------------------------------------------------------------- the examples


@pytest.mark.parametrize("lang", TESTED)
def test_transform_computes_total_and_logs(modules: Callable[[str, str], Path], lang: str) -> None:
    host = Host()
    out = host.call(modules(lang, "transform"), envelope())
    records = out["records"]
    assert len(records) == len(RECORDS)
    assert records[0] == {**RECORDS[0], "total": 10}
    assert records[1] == {**RECORDS[1], "total": 0}
    assert records[2:] == RECORDS[2:]  # no price/qty: unchanged (strings, nesting, numbers round-trip)
    assert "errors" not in out and "next" not in out
    assert host.logs == [(1, "transform: priced 2 of 5 records")]


@pytest.mark.parametrize("lang", TESTED)
def test_validate_reports_bad_records(modules: Callable[[str, str], Path], lang: str) -> None:
    wasm = modules(lang, "validate")
    host = Host()
    out = host.call(wasm, envelope())
    assert out["records"] == [RECORDS[0], None, None, RECORDS[3], None]
    assert out["errors"] == [
        {"index": 1, "error": "negative amount -5"},
        {"index": 2, "error": "missing field 'id'"},
        {"index": 4, "error": "missing field 'amount'"},
    ]
    assert host.logs == [(2, "validate: 3 of 5 records rejected")]

    out = Host().call(wasm, envelope({"required": ["id"]}))  # config: only id required
    assert [e["index"] for e in out["errors"]] == [1, 2]
    assert out["records"][4] == RECORDS[4]

    clean = Host()
    out = clean.call(wasm, {"records": [RECORDS[0]], "context": {}, "config": {}})
    assert out == {"records": [RECORDS[0]], "errors": []}
    assert clean.logs == []


@pytest.mark.parametrize("lang", TESTED)
def test_route_returns_next_per_record(modules: Callable[[str, str], Path], lang: str) -> None:
    wasm = modules(lang, "route")
    out = Host().call(wasm, envelope())
    assert out["records"] == RECORDS  # passed through unchanged
    assert out["next"] == [["big"], ["small"], [], ["small"], None]
    out = Host().call(wasm, envelope({"threshold": 120.5}))
    assert out["next"] == [["big"], ["small"], [], ["small"], None]
    out = Host().call(wasm, envelope({"threshold": 200}))
    assert out["next"][0] == ["small"]
    out = Host().call(wasm, {"records": [], "context": {}, "config": {}})
    assert out == {"records": [], "next": []}


@pytest.mark.parametrize("lang", TESTED)
def test_context_reads_and_sets_a_key(modules: Callable[[str, str], Path], lang: str) -> None:
    wasm = modules(lang, "context")
    host = Host(context={"seen": 10})
    out = host.call(wasm, envelope())
    assert [r["seq"] for r in out["records"]] == [11, 12, 13, 14, 15]
    assert out["records"][3] == {**RECORDS[3], "seq": 14}
    assert out["context"] == {"last_batch": 5}
    assert host.context == {"seen": 15}
    assert host.calls == ["get_context", "set_context"]

    out = host.call(wasm, {"records": [{"id": 9}], "context": {}, "config": {}})  # the next batch
    assert out["records"] == [{"id": 9, "seq": 16}]
    assert host.context == {"seen": 16}

    fresh = Host()
    out = fresh.call(wasm, {"records": [{"id": 1}, {"id": 2}], "context": {}, "config": {}})
    assert [r["seq"] for r in out["records"]] == [1, 2]
    assert fresh.context == {"seen": 2}


@pytest.mark.parametrize("lang", TESTED)
def test_context_without_permission_logs_the_denial(modules: Callable[[str, str], Path], lang: str) -> None:
    host = Host(context={"seen": 10}, deny={"get_context", "set_context"})
    out = host.call(modules(lang, "context"), {"records": [{"id": 1}], "context": {}, "config": {}})
    assert out["records"] == [{"id": 1, "seq": 1}]
    assert host.context == {"seen": 10}
    levels = [level for level, _ in host.logs]
    assert levels == [2, 3]
    assert all("permission denied" in message for _, message in host.logs)


@pytest.mark.parametrize("lang", TESTED)
def test_invalid_input_traps_with_an_error_log(modules: Callable[[str, str], Path], lang: str) -> None:
    host = Host()
    with pytest.raises((wasmtime.Trap, wasmtime.WasmtimeError)):
        host.call(modules(lang, "transform"), b'{"records": [1, 2')
    assert host.logs and host.logs[-1][0] == 3
    assert "JSON" in host.logs[-1][1]


@pytest.mark.parametrize("lang", TESTED)
def test_large_batch(modules: Callable[[str, str], Path], lang: str) -> None:
    records = [{"id": i, "price": i / 4, "qty": 3, "sku": f"sku-{i:05d}"} for i in range(5000)]
    out = Host().call(modules(lang, "transform"), {"records": records, "context": {}, "config": {}})
    assert [r["total"] for r in out["records"]] == [i / 4 * 3 for i in range(5000)]
    assert out["records"][4999]["sku"] == "sku-04999"


def test_tinygo_template_builds_and_runs(tmp_path: Path) -> None:
    if shutil.which("tinygo") is None:
        pytest.skip("tinygo is not installed (optional toolchain; not a Debian package)")
    for example in ("transform", "route"):
        wasm = build_project(init_project("tinygo", f"{example}-go", tmp_path, example=example))
        out = Host().call(wasm, envelope())
        if example == "transform":
            assert out["records"][0]["total"] == 10
        else:
            assert out["next"] == [["big"], ["small"], [], ["small"], None]


# --------------------------------------------------------------------------- projects and the CLI


def test_find_toolchains_reports_every_language() -> None:
    found = find_toolchains()
    assert set(found) == set(LANGS)
    for lang in TESTED:
        assert found[lang] is not None, f"{lang}: run scripts/wasm-setup"
    assert found["rust"] == "/usr/bin/rustc"


@pytest.mark.parametrize("lang", LANGS)
def test_init_project_layout(tmp_path: Path, lang: str) -> None:
    project = init_project(lang, "pricing", tmp_path, example="validate")
    assert project == tmp_path / "pricing"
    meta = json.loads((project / PROJECT_FILE).read_text())
    assert meta == {"name": "pricing", "lang": lang, "example": "validate", "function": "run"}
    files = {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()}
    main = {"rust": "src/lib.rs", "c": "main.c", "assemblyscript": "assembly/index.ts", "tinygo": "main.go"}[lang]
    assert main in files and "README.md" in files
    assert not any(f.startswith("examples/") for f in files)
    assert "validate" in (project / main).read_text()
    for f in files:
        assert "{{" not in (project / f).read_text(), f"unrendered placeholder in {f}"


def test_init_refuses_bad_input(tmp_path: Path) -> None:
    init_project("c", "taken", tmp_path)
    with pytest.raises(ProjectError, match="not empty"):
        init_project("c", "taken", tmp_path)
    with pytest.raises(ProjectError, match="invalid module name"):
        init_project("c", "../escape", tmp_path)
    with pytest.raises(ProjectError, match="unknown language"):
        init_project("cobol", "x", tmp_path)
    with pytest.raises(ProjectError, match="unknown example"):
        init_project("c", "x", tmp_path, example="nope")


def test_build_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ProjectError, match="adf wasm init"):
        build_project(tmp_path)

    require_toolchain("c")
    project = init_project("c", "broken", tmp_path)
    (project / "main.c").write_text("this is not C;\n")
    with pytest.raises(BuildFailed) as info:
        build_project(project)
    assert "error" in info.value.output and "main.c" in str(info.value)
    assert info.value.command[0].endswith("clang")

    monkeypatch.setattr(toolchain, "find_toolchain", lambda lang, project=None: None)
    with pytest.raises(ToolchainNotFound, match=r"scripts/wasm-setup") as missing:
        build_project(project)
    assert "apt-get install clang" in str(missing.value)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="adf wasm")
    toolchain.register(parser.add_subparsers(dest="wasm_command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


@pytest.mark.parametrize("lang", TESTED)
def test_cli_init_and_build(tmp_path: Path, capsys: pytest.CaptureFixture[str], lang: str) -> None:
    require_toolchain(lang)
    assert _cli(["init", "--lang", lang, "--example", "route", "router", "--dir", str(tmp_path)]) == 0
    assert "created" in capsys.readouterr().out
    out_file = tmp_path / "dist" / "router.wasm"
    assert _cli(["build", str(tmp_path / "router"), "--out", str(out_file)]) == 0
    printed = capsys.readouterr().out.strip()
    size = out_file.stat().st_size
    assert printed == f"{out_file} ({size:,} bytes)"
    assert Host().call(out_file, envelope())["next"][0] == ["big"]


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert _cli(["build", str(tmp_path)]) == 2  # not a project
    assert _cli(["init", "--lang", "c", "bad name", "--dir", str(tmp_path)]) == 2
    assert _cli(["init", "--lang", "c", "--example", "validate", "checker", "--dir", str(tmp_path)]) == 0
    project = tmp_path / "checker"
    (project / "main.c").write_text("int oops(\n")
    assert _cli(["build", str(project)]) == 1
    assert "c build failed" in capsys.readouterr().err
    monkeypatch.setattr(toolchain, "find_toolchain", lambda lang, project=None: None)
    assert _cli(["build", str(project)]) == 127
    assert "scripts/wasm-setup" in capsys.readouterr().err


def test_default_output_path(tmp_path: Path) -> None:
    require_toolchain("c")
    wasm = build_project(init_project("c", "defaults", tmp_path))
    assert wasm == tmp_path / "defaults" / "build" / "defaults.wasm"
    assert wasm.read_bytes()[:4] == b"\0asm"


# --------------------------------------------------------------------------- the docs


@pytest.mark.parametrize("lang", TESTED)
@pytest.mark.parametrize("example", ("transform", "validate", "route"))
def test_docs_show_the_template_examples(lang: str, example: str) -> None:
    """docs/WASM_EXAMPLES.md shows each example's code as the templates ship it."""
    ext = {"rust": "rs", "c": "c", "assemblyscript": "ts"}[lang]
    source = (toolchain.TEMPLATES / lang / "examples" / f"{example}.{ext}").read_text()
    docs = DOCS.read_text()
    body = re.sub(r"\A(?://[^\n]*\n|/\*.*?\*/\n)+", "", source, flags=re.S)  # without the header comment
    assert body.strip() in docs, f"docs/WASM_EXAMPLES.md is out of date for {lang} {example}"


def test_every_example_exists() -> None:
    ext = {"rust": "rs", "c": "c", "assemblyscript": "ts", "tinygo": "go"}
    for lang in LANGS:
        for example in EXAMPLES:
            assert (toolchain.TEMPLATES / lang / "examples" / f"{example}.{ext[lang]}").is_file()
