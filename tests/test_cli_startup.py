"""What ``adf`` imports before it runs a command, and the file sink's bytes.

The plug-in commands (heartbeat runtime, Spin, Lambda, Flink, WebAssembly, rafka) are declared
(:class:`active_data_flow.cli.LazyCommand`) and imported only when used: checked in fresh
interpreters by the modules they hold. A third-party plug-in whose entry point is a plain
``register(subparsers)`` function works as before, and so does one that declares its command.
The file sink writes the same bytes as it always has (one ``dumps(record) + b"\\n"`` per record).
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from active_data_flow import cli
from active_data_flow.codec import Codec
from active_data_flow.connectors.file.sink import FileSink
from active_data_flow.context import RunContext
from active_data_flow.engine.loop import steady_gc
from active_data_flow.formats import encoders

ROOT = Path(__file__).resolve().parent.parent

#: the modules of the plug-in commands
PLUGIN_MODULES = (
    "active_data_flow.handlers.cli", "active_data_flow.spin_app.cli", "active_data_flow.lambda_app.cli",
    "active_data_flow.flink_job.cli", "active_data_flow.wasm.cli", "active_data_flow.rafka_cli",
)

PROBE = """
import json, sys
from active_data_flow.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
loaded = sorted(m for m in sys.modules if m.startswith("active_data_flow") and (
    "cli" in m.split(".")[-1] or m.split(".")[1:2] in (["spin_app"], ["lambda_app"], ["flink_job"], ["handlers"])
) or m.startswith("adf_hello"))
sys.stdout.flush()
print("MODULES " + json.dumps({"code": code, "loaded": loaded}), file=sys.stderr)
"""


def _adf(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, list[str], str, str]:
    """``adf ARGS`` in a fresh interpreter: exit code, the CLI modules it imported, stdout, stderr."""
    # run outside the repository: a build's stale *.egg-info there would be found first
    res = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=120)
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("MODULES "))
    got = json.loads(line[len("MODULES "):])
    return got["code"], got["loaded"], res.stdout, res.stderr


def _plugin_modules(loaded: list[str]) -> list[str]:
    return [m for m in loaded if m != "active_data_flow.cli"]


def test_adf_run_imports_no_plugin_command(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "name": "Zürich"}\n{"id": 2, "name": "東京"}\n', encoding="utf-8")
    spec = tmp_path / "flow.yaml"
    spec.write_text(f"name: startup\nsource: {{type: file, path: {src}}}\nsink: {{type: file, path: {tmp_path / 'out.jsonl'}}}\n")
    code, loaded, out, err = _adf("run", spec, "--json", "--no-progress", "--state-dir", tmp_path / "state", cwd=tmp_path)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["records_out"] == 2
    assert (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines() == [
        '{"id":1,"name":"Zürich"}', '{"id":2,"name":"東京"}'
    ]
    assert _plugin_modules(loaded) == []


def test_adf_validate_imports_no_plugin_command(tmp_path: Path) -> None:
    spec = tmp_path / "flow.yaml"
    spec.write_text("name: v\nsource: {type: file, path: in.jsonl}\nsink: {type: stdout}\n")
    code, loaded, out, err = _adf("--log-level", "warning", "validate", spec, cwd=tmp_path)
    assert code == 0, err
    assert out.startswith("valid: flow v")
    assert _plugin_modules(loaded) == []


@pytest.mark.parametrize(
    ("command", "module"),
    [("spin", "active_data_flow.spin_app.cli"), ("lambda", "active_data_flow.lambda_app.cli"),
     ("wasm", "active_data_flow.wasm.cli"), ("rafka", "active_data_flow.rafka_cli"),
     ("serve", "active_data_flow.handlers.cli"), ("flows", "active_data_flow.handlers.cli")],
)
def test_a_plugin_command_imports_only_its_own_module(tmp_path: Path, command: str, module: str) -> None:
    code, loaded, out, err = _adf(command, "--help", cwd=tmp_path)
    assert code == 0, err
    assert out.startswith(f"usage: adf {command} ")
    assert [m for m in loaded if m in PLUGIN_MODULES] == [module]


def test_adf_help_lists_every_command_without_importing_them(tmp_path: Path) -> None:
    code, loaded, out, err = _adf("--help", cwd=tmp_path)
    assert code == 0, err
    text = " ".join(out.split())
    for declared in _declarations():
        assert f"{declared.name} {' '.join(declared.help.split())}" in text
    for builtin in ("run", "validate", "connectors", "config", "dead-letters"):
        assert f" {builtin} " in text
    assert _plugin_modules(loaded) == []


def _declarations() -> list[cli.LazyCommand]:
    return [value for value in vars(cli).values() if isinstance(value, cli.LazyCommand)]


def test_every_declared_help_line_is_the_one_its_command_registers() -> None:
    import argparse

    declarations = _declarations()
    assert {d.name for d in declarations} == {
        "serve", "worker", "heartbeat", "db", "flows", "runs", "spin", "lambda", "flink", "wasm", "rafka"
    }
    for declared in declarations:
        parser = argparse.ArgumentParser(prog="adf")
        sub = parser.add_subparsers(dest="command")
        declared(sub)  # a declaration is a register function too
        assert declared.name in sub.choices
        assert " ".join(declared.help.split()) in " ".join(parser.format_help().split())


def test_the_entry_points_name_the_declarations() -> None:
    import importlib
    import tomllib

    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][cli.COMMANDS_GROUP]
    found = {}
    for name, target in table.items():
        module, _, attr = target.partition(":")
        found[name] = getattr(importlib.import_module(module), attr)
    assert found == {declared.name: declared for declared in _declarations()}


@pytest.mark.parametrize(
    ("argv", "word"),
    [(["run", "x.yaml"], "run"), (["--log-level", "debug", "spin", "build"], "spin"),
     (["--log-level=debug", "spin"], "spin"), (["--log", "info", "serve"], "serve"), (["-h", "spin"], None),
     (["--help"], None), (["--he", "run"], None), ([], None), (["--version"], None), (["--", "run"], "run"),
     (["nope"], "nope")],
)
def test_command_word(argv: list[str], word: str | None) -> None:
    assert cli.command_word(argv) == word


def test_lazy_command_wants_module_and_function() -> None:
    with pytest.raises(ValueError, match="module:function"):
        cli.LazyCommand("x", "help", "my_pkg.cli")


# --------------------------------------------------------------------------- third-party plug-ins


def _third_party(site: Path) -> dict[str, str]:
    """An installed distribution (its dist-info on PYTHONPATH) with two ``adf`` commands: ``hello``,
    a plain ``register(subparsers)`` entry point, and ``hi``, declared with a ``LazyCommand``."""
    site.mkdir()
    info = site / "adf_hello-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: adf-hello\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[active_data_flow.commands]\nhello = adf_hello:register\nhi = adf_hello_commands:HI\n"
    )
    (site / "adf_hello.py").write_text(textwrap.dedent("""
        def _hello(args):
            print(f"hello {args.name}")
            return 0

        def register(sub):
            p = sub.add_parser("hello", help="say hello (a plain register function)")
            p.add_argument("--name", default="world")
            p.set_defaults(func=_hello)
    """))
    (site / "adf_hello_commands.py").write_text(textwrap.dedent("""
        from active_data_flow.cli import LazyCommand

        HI = LazyCommand("hi", "say hi (declared)", "adf_hello_impl:register")
    """))
    (site / "adf_hello_impl.py").write_text(textwrap.dedent("""
        def register(sub):
            p = sub.add_parser("hi", help="say hi (declared)")
            p.add_argument("who")
            p.set_defaults(func=lambda args: print(f"hi {args.who}") or 0)
    """))
    return {"PYTHONPATH": os.pathsep.join(filter(None, (str(site), os.environ.get("PYTHONPATH"))))}


def test_a_third_party_register_function_still_works(tmp_path: Path) -> None:
    env = _third_party(tmp_path / "site")
    code, loaded, out, err = _adf("hello", "--name", "plugin", cwd=tmp_path, env=env)
    assert (code, out) == (0, "hello plugin\n"), err
    assert "adf_hello" in loaded and "adf_hello_impl" not in loaded
    assert _plugin_modules([m for m in loaded if not m.startswith("adf_hello")]) == []

    code, loaded, out, err = _adf("--help", cwd=tmp_path, env=env)
    assert code == 0, err
    text = " ".join(out.split())
    assert "hello say hello (a plain register function)" in text and "hi say hi (declared)" in text
    assert "adf_hello" in loaded and "adf_hello_impl" not in loaded  # full help: the plain one is imported


def test_a_third_party_declared_command_loads_when_used(tmp_path: Path) -> None:
    env = _third_party(tmp_path / "site")
    code, loaded, out, err = _adf("hi", "there", cwd=tmp_path, env=env)
    assert (code, out) == (0, "hi there\n"), err
    assert "adf_hello_impl" in loaded and "adf_hello" not in loaded

    spec = tmp_path / "flow.yaml"
    spec.write_text("name: v\nsource: {type: file, path: in.jsonl}\nsink: {type: stdout}\n")
    code, loaded, out, err = _adf("validate", spec, cwd=tmp_path, env=env)
    assert code == 0, err
    assert not [m for m in loaded if m.startswith("adf_hello")]


# --------------------------------------------------------------------------- the file sink's bytes

RECORDS: list[dict[Any, Any]] = [
    {"id": 1, "city": "Zürich", "note": "naïve café — 東京 🚀", "price": 12.5, "ok": True, "none": None},
    {"id": 2, "tags": ["ä", "b"], "nested": {"k": [1, 2.25, {"x": "ÿ"}]}, "big": 2**53},
    {"id": 3, "day": datetime.date(2026, 12, 7), "set": {"b", "a"}, 7: "int key", "raw": b"bytes \xc3\xa9"},
    {"id": 4, "quote": 'say "hi"\nand\ttab', "escape": "\\ / \u2028 \x00"},
]


@pytest.mark.parametrize("fast", [False, True], ids=["json", "orjson"])
def test_the_jsonl_bytes_are_those_of_one_dumps_per_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         fast: bool) -> None:
    if fast:
        pytest.importorskip("orjson")
    codec = Codec(prefer_fast=fast)
    assert codec.name == ("orjson" if fast else "json")
    monkeypatch.setattr(encoders, "codec", lambda: codec)
    expected = b"".join(codec.dumps(r) + b"\n" for r in RECORDS)  # what the sink always wrote
    assert codec.dumps_lines(RECORDS) == expected
    assert codec.dumps_lines([]) == b""
    path = tmp_path / "out.jsonl"
    sink = FileSink(path=str(path))
    sink.run_context = RunContext(state_dir=str(tmp_path / "state"))
    sink.setup()
    sink.open()
    sink.write_batch(RECORDS[:2])
    sink.write_batch([])
    sink.write_batch(RECORDS[2:])
    sink.flush()
    sink.close()
    assert path.read_bytes() == expected
    assert "Zürich" in path.read_text(encoding="utf-8")  # UTF-8, not \\u escapes


def test_the_csv_bytes_are_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    sink = FileSink(path=str(path))
    sink.run_context = RunContext(state_dir=str(tmp_path / "state"))
    sink.setup()
    sink.open()
    sink.write_batch([{"id": 1, "city": "Zürich", "tags": ["a", "ä"], "ok": True},
                      {"id": 2, "city": 'say "東京", ok', "tags": None, "ok": False}])
    sink.close()
    assert path.read_bytes() == (
        'id,city,tags,ok\r\n1,Zürich,"[""a"",""ä""]",true\r\n2,"say ""東京"", ok",,false\r\n'
    ).encode()


@pytest.mark.parametrize("fsync", [False, True])
def test_after_flush_another_process_reads_the_batch(tmp_path: Path, fsync: bool) -> None:
    path = tmp_path / "out.jsonl"
    sink = FileSink(path=str(path), fsync=fsync)
    sink.run_context = RunContext(state_dir=str(tmp_path / "state"))
    sink.setup()
    sink.open()
    read = [sys.executable, "-c", f"import sys; sys.stdout.buffer.write(open({str(path)!r}, 'rb').read())"]
    try:
        for n in range(3):
            sink.write_batch([{"batch": n, "i": i, "text": "é" * 300} for i in range(700)])
            sink.flush()
            seen = subprocess.run(read, capture_output=True, check=True, timeout=60).stdout.splitlines()
            assert len(seen) == 700 * (n + 1)
            assert json.loads(seen[-1]) == {"batch": n, "i": 699, "text": "é" * 300}
    finally:
        sink.close()


# --------------------------------------------------------------------------- the collector during a run


def test_steady_gc_restores_the_collector_and_still_collects_cycles() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    with steady_gc(50_000):
        assert gc.get_threshold()[0] == max(before[0], 50_000)
        assert gc.get_freeze_count() >= frozen
        cycle: list[Any] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen
