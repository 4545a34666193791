"""Build the Spin components: one ``.wasm`` per trigger kind, flows bundled in.

:func:`build` stages the import package ``active_data_flow`` as it installs (``core/`` as the
package, ``handlers/`` and ``spin_app/`` inside it) and the installed ``spin_sdk``, with a
generated ``active_data_flow/spin_app/_bundle.py`` — the specs of the given flow files
and the routes — and runs componentize-py once per trigger kind (two at a time):

==========  ============================  ================================================
kind        world                         entry module
==========  ============================  ================================================
``http``    ``spin-http`` (spin-sdk)      :mod:`active_data_flow.spin_app.http_component`
``redis``   ``spin-redis`` (spin-sdk)     :mod:`active_data_flow.spin_app.redis_component`
``cron``    ``cron-component`` (own WIT)  :mod:`active_data_flow.spin_app.cron_component`
``mqtt``    ``mqtt-component`` (own WIT)  :mod:`active_data_flow.spin_app.mqtt_component`
==========  ============================  ================================================

The cron and MQTT worlds (``spin_app/wit``) export the trigger plugins' functions and take
their imports from spin-sdk's ``spin-imports`` world (``-m spin_sdk=spin-imports``), so all
four components have the same imports. With ``strip`` the debug sections are removed
(:mod:`active_data_flow.spin_app.strip`: ~36 MB → ~17 MB).

Routes (``routes``; each kind defaults as shown):

* ``http``: every bundled flow is served at ``/flows/<name>`` (see :mod:`active_data_flow.handlers.invoke.http`);
* ``redis``: ``{channel: flow}``, default ``{"adf:<flow>": flow}`` for each flow;
* ``mqtt``: ``{topic filter: flow}``, default ``{"adf/<flow>": flow}``;
* ``cron``: ``{flow: interval seconds or calendar}``, default the flows with ``runtime.interval_seconds``
  (seconds) or ``runtime.schedule`` (a calendar, ``"0 6 * * 1-5"`` or ``"CRON_TZ=Europe/Berlin 0 6 * * 1-5"``).
  When a calendar names a zone of the time zone database, the installed ``tzdata`` package is
  bundled too (a component has no zone database of its own).

Component variables override all of this at run time (``adf_routes``, ``adf_channel`` ...:
:mod:`active_data_flow.spin_app.runtime`).

    python -m active_data_flow.spin_app.build --out build/spin flows/orders.yaml [--trigger http ...] [--no-strip]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = [
    "MIN_SPIN_VERSION", "SPIN_INTERFACES", "TRIGGERS", "BuildError", "build", "bundle_source", "component_imports",
    "needs_zone_database", "source_digest", "spin_version_problems",
]

ROOT = Path(__file__).resolve().parent.parent
TRIGGERS = ("http", "redis", "cron", "mqtt")
_ENTRY = {
    "http": ("active_data_flow.spin_app.http_component", ["-w", "spin-http"], []),
    "redis": ("active_data_flow.spin_app.redis_component", ["-w", "spin-redis"], []),
    "cron": ("active_data_flow.spin_app.cron_component", ["-d", "{wit}", "-w", "cron-component", "--world-module", "cron_world"],
             ["-m", "spin_sdk=spin-imports"]),
    "mqtt": ("active_data_flow.spin_app.mqtt_component", ["-d", "{wit}", "-w", "mqtt-component", "--world-module", "mqtt_world"],
             ["-m", "spin_sdk=spin-imports"]),
}
#: The oldest Spin release that runs every component built here: spin-sdk 3.4.1's
#: ``spin-imports`` world imports ``spin:postgres/postgres@4.0.0``, first in Spin 3.4 (all four
#: components import it, used or not: a host that lacks an import cannot instantiate one).
MIN_SPIN_VERSION = "3.4"

_WASI_0_2_0 = (
    "cli/environment", "cli/exit", "cli/stdin", "cli/stdout", "cli/stderr", "cli/terminal-input",
    "cli/terminal-output", "cli/terminal-stdin", "cli/terminal-stdout", "cli/terminal-stderr",
    "clocks/monotonic-clock", "clocks/wall-clock", "filesystem/types", "filesystem/preopens", "io/error", "io/poll",
    "io/streams", "random/random", "random/insecure", "random/insecure-seed", "sockets/network",
    "sockets/instance-network", "sockets/udp", "sockets/udp-create-socket", "sockets/tcp",
    "sockets/tcp-create-socket", "sockets/ip-name-lookup", "http/types", "http/outgoing-handler",
)

#: Every interface a component may import → the first Spin release that provides it (from
#: Spin's ``wit/`` worlds and pull requests: WASI 0.2.0 with Wasmtime 17 in Spin 2.2, spinframework/spin#2250;
#: the ``fermyon:spin@2.0.0`` interfaces with Spin 2.0; ``world3`` — wasi:keyvalue draft2,
#: wasi:config/store, spin:postgres@3.0.0 — with Spin 3.0; spin:sqlite@3.0.0 in 3.3, #3095;
#: spin:postgres@4.0.0 in 3.4). The trigger plugins' own types (``*-types``) come from the
#: plugin (spin-trigger-cron / spin-trigger-mqtt), whose Spin 3 releases need Spin 3.0.
#: ``tests/test_spin_imports.py`` fails on an import missing here or newer than
#: :data:`MIN_SPIN_VERSION`.
SPIN_INTERFACES: dict[str, str] = {
    **{f"wasi:{name}@0.2.0": "2.2" for name in _WASI_0_2_0},
    "fermyon:spin/key-value@2.0.0": "2.0",
    "fermyon:spin/llm@2.0.0": "2.0",
    "fermyon:spin/mqtt@2.0.0": "2.0",
    "fermyon:spin/mysql@2.0.0": "2.0",
    "fermyon:spin/postgres@2.0.0": "2.0",
    "fermyon:spin/rdbms-types@2.0.0": "2.0",
    "fermyon:spin/redis@2.0.0": "2.0",
    "fermyon:spin/sqlite@2.0.0": "2.0",
    "fermyon:spin/variables@2.0.0": "2.0",
    # the unversioned (Spin 1.x) package, still provided by Spin 2 and 3: the Redis trigger's
    # fermyon:spin/inbound-redis export takes its payload type from here
    "fermyon:spin/redis-types": "2.0",
    "wasi:config/store@0.2.0-draft-2024-09-27": "3.0",
    "wasi:keyvalue/store@0.2.0-draft2": "3.0",
    "wasi:keyvalue/atomics@0.2.0-draft2": "3.0",
    "wasi:keyvalue/batch@0.2.0-draft2": "3.0",
    "spin:postgres/postgres@3.0.0": "3.0",
    "spin:sqlite/sqlite@3.0.0": "3.3",
    "spin:postgres/postgres@4.0.0": "3.4",
    # the trigger plugins' types (spin_app/wit/deps)
    "fermyon:spin-cron/cron-types@2.0.0": "3.0",
    "spin:mqtt-trigger/spin-mqtt-types": "3.0",
}


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def _leb128(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def component_imports(wasm: str | os.PathLike[str] | bytes) -> list[str]:
    """The names of the interfaces (and functions) a built component imports, read from its
    top-level import sections (no compilation: ``wasmtime.component.Component(...).type.imports``
    gives the same names after compiling it). Type imports (``use``d types) are left out."""
    data = wasm if isinstance(wasm, bytes) else Path(wasm).read_bytes()
    if data[:4] != b"\0asm" or data[6:8] != b"\x01\x00":
        raise BuildError(f"{wasm if not isinstance(wasm, bytes) else 'the bytes'}: not a WebAssembly component")
    names: list[str] = []
    i = 8
    while i < len(data):
        section = data[i]
        size, i = _leb128(data, i + 1)
        end = i + size
        if section == 10:  # an import section: vec(importname externdesc)
            count, j = _leb128(data, i)
            for _ in range(count):
                if data[j] != 0x00:
                    raise BuildError(f"an import name of an unknown form (0x{data[j]:02x})")
                length, j = _leb128(data, j + 1)
                name = data[j : j + length].decode("utf-8")
                j += length
                kind = data[j]
                j += 1
                if kind == 0x00:  # core module: 0x11 typeidx
                    _, j = _leb128(data, j + 1)
                elif kind == 0x03:  # type: eq typeidx | sub resource
                    j = _leb128(data, j + 1)[1] if data[j] == 0x00 else j + 1
                else:  # func, value, component, instance: an index
                    _, j = _leb128(data, j)
                if kind in (0x01, 0x04, 0x05):
                    names.append(name)
        i = end
    return names


def spin_version_problems(imports: Iterable[str], minimum: str = MIN_SPIN_VERSION) -> list[str]:
    """What in ``imports`` Spin ``minimum`` cannot provide (unknown, or first in a later release)."""
    problems = []
    for name in imports:
        first = SPIN_INTERFACES.get(name)
        if first is None:
            problems.append(f"{name}: not in SPIN_INTERFACES (which Spin release provides it?)")
        elif _version_key(first) > _version_key(minimum):
            problems.append(f"{name}: needs Spin {first}, newer than the documented minimum {minimum}")
    return problems


# Component variables whose values feed the manifest layer of a flow's configuration.
_BASE_VARIABLES = ("adf_json",)


class BuildError(RuntimeError):
    """A component could not be built (the message has componentize-py's output)."""


def _spin_sdk_dir() -> Path:
    try:
        import spin_sdk
    except ImportError as exc:
        raise BuildError("spin-sdk is not installed: pip install 'active-data-flow[spin]' (or run scripts/spin-setup)") from exc
    return Path(spin_sdk.__file__).resolve().parent


def _componentize_py() -> str:
    exe = Path(sys.executable).parent / "componentize-py"
    if exe.exists():
        return str(exe)
    found = shutil.which("componentize-py")
    if not found:
        raise BuildError("componentize-py is not installed: pip install 'componentize-py==0.17.2' (or run scripts/spin-setup)")
    return found


def _read_spec(path: str) -> dict[str, Any]:
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".json"):
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise BuildError(f"{path}: a flow spec must be a mapping")
    data.setdefault("name", Path(path).stem)
    # Step modules beside the spec file are bundled too (see step_module_sources).
    spec_dir = str(Path(path).resolve().parent)
    if spec_dir not in (data.get("python_path") or []):
        data["python_path"] = [*(data.get("python_path") or []), spec_dir]
    return data


_OWN = ("active_data_flow", "spin_sdk")


def _step_modules(spec: Mapping[str, Any]) -> list[str]:
    names = []
    for step in spec.get("steps") or []:
        function = step.get("function") if isinstance(step, Mapping) else None
        if isinstance(function, str) and ":" in function:
            names.append(function.partition(":")[0])
    return names


def step_module_sources(specs: Mapping[str, Mapping[str, Any]]) -> dict[str, Path]:
    """Top-level module or package name → its source path, for every step function's module.

    Looked up on the spec's ``python_path`` (the spec file's directory is added when the spec
    is read from a file) and then ``sys.path``; the project's own packages and the standard
    library are already in the component. A module that cannot be found is an error: the
    component could not import it at run time either.
    """
    import importlib.machinery

    found: dict[str, Path] = {}
    for name, spec in specs.items():
        search = [*(spec.get("python_path") or []), *sys.path]
        for module in _step_modules(spec):
            top = module.split(".")[0]
            if top in _OWN or top in found or top in sys.stdlib_module_names:
                continue
            hit = importlib.machinery.PathFinder.find_spec(top, search)
            if hit is None or not hit.origin:
                raise BuildError(f"flow {name!r}: cannot find the step module {module!r} (looked in {search[:3]}…)")
            if hit.submodule_search_locations:
                found[top] = Path(next(iter(hit.submodule_search_locations)))
            elif hit.origin.endswith(".py"):
                found[top] = Path(hit.origin)
            else:
                raise BuildError(f"flow {name!r}: step module {module!r} is compiled ({hit.origin}); "
                                 "a component can only bundle pure Python")
    return found


def bundle_source(
    flows: Sequence[str | Mapping[str, Any]],
    routes: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    redis_address: str | None = None,
    variables: Iterable[str] = (),
) -> str:
    """The text of ``active_data_flow/spin_app/_bundle.py`` for these flows (spec paths or mappings) and routes."""
    specs: dict[str, dict[str, Any]] = {}
    for flow in flows:
        spec = dict(flow) if isinstance(flow, Mapping) else _read_spec(str(flow))
        name = str(spec.get("name") or "")
        if not name:
            raise BuildError(f"a bundled flow needs a name: {flow!r}")
        json.dumps(spec)  # must be plain JSON data
        specs[name] = spec
    routes = dict(routes or {})
    table: dict[str, dict[str, Any]] = {
        "http": dict(routes.get("http", {})),
        "redis": dict(routes.get("redis", {f"adf:{n}": n for n in specs})),
        "mqtt": dict(routes.get("mqtt", {f"adf/{n}": n for n in specs})),
        "cron": dict(routes.get("cron", _default_cron_routes(specs))),
    }
    from active_data_flow.handlers.confignames import flow_slug

    names = list(_BASE_VARIABLES) + [f"adf_flow_{flow_slug(n)}_json" for n in specs] + list(variables)
    modules = sorted({m for s in specs.values() for m in _step_modules(s)})
    return _python_literal(specs, table, sorted(set(names)), redis_address, modules)


def _default_cron_routes(specs: Mapping[str, Mapping[str, Any]]) -> dict[str, int | str]:
    """``{flow: seconds}`` of the flows with ``runtime.interval_seconds``, ``{flow: calendar}`` of
    those with ``runtime.schedule`` (``CRON_TZ=<zone> <expression>`` outside UTC)."""
    from active_data_flow.cron import spec_schedule_text

    table: dict[str, int | str] = {}
    for name, spec in specs.items():
        calendar, interval = spec_schedule_text(spec), (spec.get("runtime") or {}).get("interval_seconds")
        if calendar:
            table[name] = calendar
        elif interval:
            table[name] = int(interval)
    return table


def needs_zone_database(schedules: Iterable[Any]) -> bool:
    """Whether a calendar among ``schedules`` (cron route values: seconds or one-line calendars)
    names a zone of the time zone database (``CRON_TZ=Europe/Berlin …``): a component has none
    of its own, so the build bundles the ``tzdata`` package then, and the component loads those
    zones while it is built (:mod:`active_data_flow.spin_app.runtime`). UTC and fixed offsets
    (``+02:00``) need none."""
    from active_data_flow.cron import named_zones

    return bool(named_zones(schedules))


def _python_literal(specs: Any, table: Any, names: Any, redis_address: Any, modules: Any = ()) -> str:
    return (
        '"""Generated by active_data_flow.spin_app.build: the flows and routes bundled into the components."""\n\n'
        "import json\n\n"
        f"SPECS = json.loads({json.dumps(json.dumps(specs, sort_keys=True))})\n"
        f"ROUTES = json.loads({json.dumps(json.dumps(table, sort_keys=True))})\n"
        f"VARIABLES = {names!r}\n"
        f"REDIS_ADDRESS = {redis_address!r}\n"
        'SQLITE_DATABASE = "default"\n'
        f"STEP_MODULES = {list(modules)!r}\n"
    )


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules", "wit"),
                    dirs_exist_ok=True)


def source_digest(extra: str = "") -> str:
    """A hash of everything that goes into a component (sources, WIT, tool versions, bundle)."""
    h = hashlib.sha256(extra.encode())
    for base in ("core", "handlers", "spin_app"):
        for path in sorted((ROOT / base).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".wit") and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(ROOT)).encode())
                h.update(path.read_bytes())
    for pkg in ("spin-sdk", "componentize-py", "tzdata"):
        try:
            from importlib.metadata import version

            h.update(f"{pkg}={version(pkg)}".encode())
        except Exception:
            h.update(pkg.encode())
    return h.hexdigest()[:24]


def _zone_database() -> Path:
    """The installed ``tzdata`` package's directory (the IANA zone database as package data)."""
    import importlib.util

    spec = importlib.util.find_spec("tzdata")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("a cron schedule names a time zone, and a component has no zone database of its own: "
                         "pip install tzdata (the `spin` extra has it), or use UTC or a fixed offset like +02:00")
    return Path(next(iter(spec.submodule_search_locations)))


def _stage(stage: Path, bundle: str, modules: Mapping[str, Path] | None = None, *, zones: bool = False) -> Path:
    for top, source in (modules or {}).items():  # the flows' step modules, importable by name
        if source.is_dir():
            _copy_tree(source, stage / top)
        else:
            stage.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, stage / f"{top}.py")
    package = stage / "active_data_flow"  # the import package, laid out as it installs
    _copy_tree(ROOT / "core", package)
    _copy_tree(ROOT / "handlers", package / "handlers")
    _copy_tree(ROOT / "spin_app", package / "spin_app")
    for name in ("host.py", "wasi_host.py", "build.py", "strip.py"):  # host-side modules, never in a component
        (package / "spin_app" / name).unlink(missing_ok=True)
    shutil.rmtree(package / "spin_app" / "local_host", ignore_errors=True)  # the local Spin host (wasmtime)
    (package / "spin_app" / "_bundle.py").write_text(bundle, encoding="utf-8")
    shutil.copytree(_spin_sdk_dir(), stage / "spin_sdk", ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    if zones:  # zoneinfo reads the package's files when the system has no zone database (WASI)
        shutil.copytree(_zone_database(), stage / "tzdata", ignore=shutil.ignore_patterns("__pycache__"),
                        dirs_exist_ok=True)
    wit = stage.parent / "wit"
    shutil.rmtree(wit, ignore_errors=True)
    shutil.copytree(ROOT / "spin_app" / "wit", wit)
    return wit


def _componentize(kind: str, stage: Path, wit: Path, out: Path) -> tuple[str, float]:
    module, before, after = _ENTRY[kind]
    # componentize-py 0.17 names fermyon:spin/sqlite@2.0.0 ``fermyon_spin_sqlite`` (it clashes
    # with spin:sqlite@3.0.0), while spin-sdk 3.4.1's modules import ``spin_sdk.wit.imports.sqlite``.
    names = ["--import-interface-name", "fermyon:spin/sqlite@2.0.0=sqlite"]
    cmd = [_componentize_py(), *names, *[a.replace("{wit}", str(wit)) for a in before], "componentize", *after,
           "-p", str(stage), module, "-o", str(out)]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=str(stage), env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        text = (proc.stderr or proc.stdout or "").strip()
        # componentize-py prints a Python traceback first, then a Rust backtrace: keep the first
        message = text.split("Stack backtrace:")[0].strip()
        raise BuildError(f"building {kind}.wasm failed:\n{message[-4000:]}")
    return kind, time.monotonic() - t0


def build(
    out_dir: str | os.PathLike[str],
    *,
    triggers: Sequence[str] = TRIGGERS,
    flows: Sequence[str | Mapping[str, Any]] = (),
    strip: bool = True,
    routes: Mapping[str, Mapping[str, Any]] | None = None,
    redis_address: str | None = None,
    variables: Iterable[str] = (),
    jobs: int = 2,
    report: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Build ``<out_dir>/<kind>.wasm`` for each trigger kind; returns ``{kind: path}``.

    ``flows``: spec files (YAML/JSON) or spec mappings to bundle. ``routes``: see the module
    doc. ``variables``: extra component variable names read into the manifest config layer.
    ``report`` (a dict) receives sizes (raw and stripped) and build seconds per kind.
    """
    unknown = [t for t in triggers if t not in _ENTRY]
    if unknown:
        raise BuildError(f"unknown trigger kinds {unknown}; choose from {', '.join(TRIGGERS)}")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    bundle = bundle_source(flows, routes, redis_address=redis_address, variables=variables)
    specs = [dict(f) if isinstance(f, Mapping) else _read_spec(str(f)) for f in flows]
    by_name = {str(s.get("name")): s for s in specs}
    modules = step_module_sources(by_name)
    from active_data_flow.cron import spec_schedule_text

    zones = needs_zone_database([*map(spec_schedule_text, specs), *dict((routes or {}).get("cron", {})).values()])
    results: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="adf-spin-build-") as tmp:
        stage = Path(tmp) / "src"
        wit = _stage(stage, bundle, modules, zones=zones)
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = [pool.submit(_componentize, kind, stage, wit, out / f"{kind}.wasm") for kind in triggers]
            timings = dict(f.result() for f in futures)
    for kind in triggers:
        path = out / f"{kind}.wasm"
        raw = path.stat().st_size
        stripped = raw
        if strip:
            from active_data_flow.spin_app.strip import strip_file

            raw, stripped = strip_file(str(path))
        results[kind] = str(path)
        if report is not None:
            report[kind] = {"path": str(path), "raw_bytes": raw, "stripped_bytes": stripped,
                            "build_seconds": round(timings[kind], 2)}
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m active_data_flow.spin_app.build", description="Build the Spin components.")
    parser.add_argument("flows", nargs="*", help="flow spec files to bundle")
    parser.add_argument("--out", default="build/spin")
    parser.add_argument("--trigger", action="append", choices=TRIGGERS, help="build only these kinds (repeatable)")
    parser.add_argument("--no-strip", action="store_true")
    parser.add_argument("--routes", help="JSON {kind: {key: flow}}")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}
    try:
        build(args.out, triggers=tuple(args.trigger or TRIGGERS), flows=args.flows, strip=not args.no_strip,
              routes=json.loads(args.routes) if args.routes else None, report=report)
    except BuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    for _kind, info in report.items():
        print(f"{info['path']}: {info['raw_bytes'] / 1e6:.1f} MB raw, {info['stripped_bytes'] / 1e6:.1f} MB stripped "
              f"({info['build_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
