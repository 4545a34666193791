"""``adf spin …``: scaffold, describe, check, build and run Fermyon Spin 3 apps of flows.

Registered through the ``active_data_flow.commands`` entry-point group (``core`` does not
import this layer). Standard library only at module level; the build imports
``active_data_flow.spin_app.build`` (componentize-py) when it runs.

=====================================  ==========================================================
``adf spin init NAME``                 a new app directory: spin.toml, flows/, README.md, .gitignore
``adf spin manifest --flow SPEC …``    generate spin.toml (manifest version 2) for flows and routes
``adf spin validate``                  check spin.toml and that every bundled flow can run in Spin
``adf spin build``                     validate, then componentize one .wasm per trigger kind
``adf spin up`` / ``adf spin deploy``  run the real ``spin`` CLI (``spin up|deploy --from spin.toml``)
=====================================  ==========================================================

Exit codes: 0 success; 1 a build failed or ``manifest --check`` found drift; 2 invalid input (a
manifest, a flow that cannot run inside Spin, a command line); 127 a required tool (the ``spin``
CLI, componentize-py) is not installed. ``up``/``deploy`` return ``spin``'s own exit code.

The module is longer than most (the command line of every ``adf spin`` verb and the starter
project ``init`` writes); the work itself lives in :mod:`active_data_flow.spin_app.build`, :mod:`active_data_flow.spin_app.manifest`
and :mod:`active_data_flow.spin_app.local_host`.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Sequence
from typing import Any

from active_data_flow.errors import ConfigError
from active_data_flow.spin_app.manifest import (
    DEFAULT_CRON_EXPRESSION,
    DEFAULT_WASM_DIR,
    GENERATED_MARKER,
    MIN_SPIN_VERSION,
    PINNED_PLUGINS,
    PLUGIN_RELEASE_URL,
    SPIN_MAJOR,
    TRIGGER_KINDS,
    TRIGGER_PLUGINS,
    FlowFile,
    ManifestOptions,
    ValidationReport,
    check_flow_for_spin,
    component_runtimes,
    load_flow_file,
    parse_route,
    plan_routes,
    render_manifest,
    slug_collisions,
    spin_cron_expression,
    spin_registry,
    stage_files,
    validate_manifest,
)

__all__ = ["local_host_command", "local_host_commands", "register"]

Handler = Callable[[argparse.Namespace], int]

SPIN_INSTALL_URL = "https://spinframework.dev/v3/install"
FERMYON_INSTALL_URL = "https://developer.fermyon.com/spin/v3/install"
SPIN_EXTRA_HINT = "pip install 'active-data-flow[spin]'"
#: Where the local Spin host (for development without the spin CLI) may live, most likely first.
_LOCAL_HOST_MODULES = ("active_data_flow.spin_app.host", "active_data_flow.spin_app.local_host",
                       "active_data_flow.spin_app.localhost", "active_data_flow.spin_app.dev_host", "scripts.spin_host")


def _err(message: str) -> None:
    print(f"adf: {message}", file=sys.stderr)


def _problems(title: str, problems: Sequence[str], *, stream: Any = None) -> None:
    out = stream or sys.stderr
    print(title, file=out)
    for p in problems:
        print(f"  - {p}", file=out)


def _slug(text: str) -> str:
    return "-".join(w for w in "".join(c if c.isalnum() else " " for c in text.lower()).split())


# --------------------------------------------------------------------------- flows -> manifest text


def _load_flows(paths: Sequence[str]) -> tuple[list[FlowFile], list[str]]:
    flows: list[FlowFile] = []
    problems: list[str] = []
    for path in paths:
        try:
            flows.append(load_flow_file(path))
        except ConfigError as exc:
            problems.extend(f"{path}: {p}" for p in exc.problems)
    seen: dict[str, str] = {}
    for f in flows:
        if f.name in seen:
            problems.append(f"two specs define flow {f.name!r}: {seen[f.name]} and {f.path}")
        seen[f.name] = f.path
    problems += slug_collisions(seen)
    return flows, problems


def _generate(args: argparse.Namespace, flow_paths: Sequence[str], manifest_dir: str, manifest_file: str,
              name: str | None, base_dir: str | None = None) -> tuple[str | None, int]:
    """(manifest text, 0) or (None, exit code) after reporting the problems."""
    flows, problems = _load_flows(flow_paths)
    if problems:
        _problems(f"adf: invalid flow spec(s): {len(problems)} problem(s)", problems)
        return None, 2
    try:
        routes = [parse_route(r) for r in args.route or []]
        plan = plan_routes(flows, args.trigger or [], routes)
        cron_expression = spin_cron_expression(args.cron_expression, getattr(args, "cron_timezone", None))
    except ValueError as exc:
        _err(str(exc))
        return None, 2
    warnings: list[str] = []
    refusals: list[str] = []
    for f in flows:
        found = check_flow_for_spin(f)
        refusals += found.errors
        warnings += found.warnings
    for w in warnings:
        print(f"adf: warning: {w}", file=sys.stderr)
    if refusals and not args.no_check:
        _problems(f"adf: refused: {len(refusals)} problem(s) keep these flows from running inside a Spin "
                  "component (--no-check writes the manifest anyway)", refusals)
        return None, 2
    options = ManifestOptions(
        name=name or (_slug(flows[0].name) if len(flows) == 1 else "adf-flows"),
        version=args.app_version,
        description=args.description or "",
        wasm_dir=args.wasm_dir,
        manifest_file=manifest_file,
        cron_expression=cron_expression,
        mqtt_qos=args.mqtt_qos,
        redis_address=args.redis_address,
        mqtt_address=args.mqtt_address,
        base_dir=base_dir,
    )
    text = render_manifest(flows, plan, options, manifest_dir)
    # The one checker: what Spin 3 or a pinned trigger plugin would refuse is never written.
    report = validate_manifest(os.path.join(manifest_dir, manifest_file), build_check=None, text=text)
    refused = report.errors if not args.no_check else report.rule_errors
    if refused:
        _problems(f"adf: refused: the generated manifest breaks {len(refused)} rule(s) (docs/SPIN.md, "
                  "\"Manifest rules\")", refused)
        return None, 2
    return text, 0


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trigger", action="append", choices=TRIGGER_KINDS,
                   help="route every flow without a --route to this trigger's default route (repeatable; "
                        "default: http when no --route is given)")
    p.add_argument("--route", action="append", metavar="KIND[:PATTERN]=FLOW",
                   help="route a trigger to a flow (repeatable): http:/orders=FLOW, redis:CHANNEL=FLOW, "
                        "mqtt:TOPIC/+/FILTER=FLOW, cron:SECONDS=FLOW (the interval after which the flow is due); "
                        "KIND=FLOW uses the default (/flows/FLOW, channel FLOW, topic adf/FLOW, "
                        "runtime.interval_seconds)")
    p.add_argument("--app-version", default="0.1.0", help="application.version (default 0.1.0)")
    p.add_argument("--description", help="application.description")
    p.add_argument("--wasm-dir", default=DEFAULT_WASM_DIR,
                   help=f"where the components' .wasm files are, relative to the manifest (default {DEFAULT_WASM_DIR})")
    p.add_argument("--cron-expression", default=DEFAULT_CRON_EXPRESSION,
                   help="tick of the cron trigger, in the heartbeat's cron syntax (5 fields: minute hour "
                        "day-of-month month day-of-week, or a macro such as @hourly; written with 0 seconds in "
                        "front) or the trigger's 6 fields with seconds first "
                        f"(default {DEFAULT_CRON_EXPRESSION!r}); read in UTC")
    p.add_argument("--cron-timezone", default="UTC",
                   help="the zone of --cron-expression: the cron trigger runs in UTC, so anything but UTC "
                        "is refused (a flow's calendar in a zone is a heartbeat schedule)")
    p.add_argument("--mqtt-qos", type=int, choices=(0, 1, 2), default=1, help="QoS of the MQTT subscriptions")
    p.add_argument("--redis-address", default="redis://127.0.0.1:6379", help="default of the redis_address variable")
    p.add_argument("--mqtt-address", default="mqtt://127.0.0.1:1883", help="default of the mqtt_address variable")
    p.add_argument("--no-check", action="store_true",
                   help="write the manifest even if a flow cannot run inside a component")


# --------------------------------------------------------------------------- manifest


def _cmd_manifest(args: argparse.Namespace) -> int:
    to_stdout = args.out == "-"
    out = os.path.abspath(args.out) if not to_stdout else None
    manifest_dir = os.path.dirname(out) if out else os.getcwd()
    manifest_file = os.path.basename(out) if out else "spin.toml"
    text, code = _generate(args, args.flow, manifest_dir, manifest_file, args.name)
    if text is None:
        return code
    if to_stdout:
        sys.stdout.write(text)
        return 0
    assert out is not None
    current = None
    if os.path.exists(out):
        with open(out, encoding="utf-8") as f:
            current = f.read()
    if args.check:
        if current == text:
            print(f"up to date: {args.out}")
            return 0
        print(f"{args.out} differs from what `adf spin manifest` generates for these flows and options:")
        diff = difflib.unified_diff((current or "").splitlines(), text.splitlines(), args.out, "generated",
                                    lineterm="")
        for line in list(diff)[:80]:
            print(line)
        return 1
    if current is not None and GENERATED_MARKER not in current and not args.force:
        _err(f"refusing to overwrite {args.out}: it was not generated by `adf spin manifest` (use --force)")
        return 2
    os.makedirs(manifest_dir, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    report = validate_manifest(out, build_check=False)
    print(f"wrote {args.out}: {report.summary()}")
    print(f"next: adf spin build --manifest {args.out}")
    return 0


# --------------------------------------------------------------------------- validate


def _print_report(report: ValidationReport, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
        return
    if report.errors:
        _problems(f"invalid: {report.manifest}: {len(report.errors)} problem(s)", report.errors, stream=sys.stdout)
    else:
        print(f"valid: {report.manifest}: {report.summary()}")
    if report.warnings:
        _problems(f"warnings: {len(report.warnings)}", report.warnings, stream=sys.stdout)


def _cmd_validate(args: argparse.Namespace) -> int:
    report = validate_manifest(args.manifest, build_check=not args.no_build_check)
    _print_report(report, args.json)
    return 0 if report.ok else 2


# --------------------------------------------------------------------------- build


def _componentize_available() -> bool:
    return importlib.util.find_spec("componentize_py") is not None or shutil.which("componentize-py") is not None


def _cmd_build(args: argparse.Namespace) -> int:  # noqa: C901
    report = validate_manifest(args.manifest, build_check=None)
    if not report.ok:
        _print_report(report, args.json)
        return 2
    for w in report.warnings:
        print(f"adf: warning: {w}", file=sys.stderr)
    kinds = [k for k in TRIGGER_KINDS if k in set(report.components.values())]
    if args.trigger:
        missing = [k for k in args.trigger if k not in kinds]
        if missing:
            _err(f"{args.manifest} has no {', '.join(missing)} component (it has: {', '.join(kinds) or 'none'})")
            return 2
        kinds = [k for k in kinds if k in args.trigger]
    if not kinds:
        _err(f"{args.manifest} has no ActiveDataFlow components to build")
        return 2
    manifest_dir = os.path.dirname(os.path.abspath(args.manifest))
    dirs = sorted({os.path.dirname(report.wasm[k]) for k in kinds if k in report.wasm})
    if args.out:
        out_dir = os.path.abspath(args.out)
        if dirs and dirs != [out_dir]:
            print(f"adf: warning: the manifest loads the components from {', '.join(dirs)}, not {out_dir}",
                  file=sys.stderr)
    elif len(dirs) > 1:
        _err(f"the manifest's components are in several directories ({', '.join(dirs)}); give --out")
        return 2
    else:
        out_dir = dirs[0] if dirs else os.path.join(manifest_dir, DEFAULT_WASM_DIR)
    if not _componentize_available():
        _err(f"componentize-py is not installed: {SPIN_EXTRA_HINT}")
        return 127
    try:
        from active_data_flow.spin_app.build import build
    except ImportError as exc:
        if (exc.name or "").startswith("active_data_flow.spin_app"):
            _err(f"the Spin build (active_data_flow.spin_app.build) is not part of this installation: {exc}")
            return 1
        _err(f"the Spin build is unavailable ({exc}): {SPIN_EXTRA_HINT}")
        return 127
    flows = [report.flows[name] for name in sorted(report.flows)]
    try:
        result: dict[str, Any] = build(
            out_dir, triggers=tuple(kinds), flows=flows, strip=not args.no_strip,
            routes={k: v for k, v in report.routes.items() if k in kinds},
            redis_address=report.redis_address, variables=report.config_variables,
        )
    except ImportError as exc:  # MissingExtraError is an ImportError too
        _err(f"{exc}: {SPIN_EXTRA_HINT}")
        return 127
    except Exception as exc:
        _err(f"build failed: {type(exc).__name__}: {exc}")
        return 1
    sizes = {kind: (str(path), os.path.getsize(path) if os.path.exists(path) else None)
             for kind, path in result.items()}
    if args.json:
        rows = {kind: {"path": path, "bytes": size} for kind, (path, size) in sizes.items()}
        sys.stdout.write(json.dumps({"out": out_dir, "wasm": rows}) + "\n")
    else:
        print(f"built {len(sizes)} component(s) into {out_dir} (flows: {', '.join(sorted(report.flows))})")
        for kind, (path, size) in sizes.items():
            shown = f"{size / 1e6:.1f} MB" if size is not None else "missing!"
            print(f"  {kind:<6} {path}  {shown}")
    missing = [path for path, size in sizes.values() if size is None]
    if missing:
        _err(f"the build reported files that do not exist: {', '.join(missing)}")
        return 1
    return 0


def _cmd_stage(args: argparse.Namespace) -> int:
    report = validate_manifest(args.manifest, build_check=None)
    if not report.ok:
        _print_report(report, False)
        return 2
    runtimes = {rt.id: rt for rt in component_runtimes(args.manifest)}
    wanted = args.component or sorted(runtimes)
    unknown = [c for c in wanted if c not in runtimes]
    if unknown:
        _err(f"no component {', '.join(unknown)} in {args.manifest} (components: {', '.join(sorted(runtimes))})")
        return 2
    base = os.path.dirname(os.path.abspath(args.manifest))
    for cid in wanted:
        root = os.path.join(args.root, cid) if args.root else os.path.join(base, ".spin", "files", cid)
        if os.path.isdir(root):
            shutil.rmtree(root)
        stage_files(runtimes[cid], root)
        print(f"{cid}: {os.path.relpath(root)} (mount it at /)")
    return 0


# --------------------------------------------------------------------------- up / deploy


def _local_host_module() -> str:
    for module in _LOCAL_HOST_MODULES:
        try:
            if importlib.util.find_spec(module) is not None:
                return module
        except (ImportError, ValueError):
            continue
    return _LOCAL_HOST_MODULES[0]


def local_host_command(manifest: str = "spin.toml") -> str:
    """How to run built components without the spin CLI (the project's local Spin host)."""
    return "; ".join(local_host_commands(manifest)) or f"python -m {_local_host_module()} --help"


def local_host_commands(manifest: str) -> list[str]:
    """One local-host command per component of ``manifest`` (empty if it cannot be read).

    The flow specs and data are mounted by copying the manifest's ``files`` into
    ``.spin/files/<component>`` (as Spin does); the variables are passed with ``--var``.
    """
    try:
        runtimes = component_runtimes(manifest)
    except (OSError, ValueError, KeyError, tomllib.TOMLDecodeError):
        return []
    module = _local_host_module()
    base = os.path.dirname(os.path.abspath(manifest))
    out: list[str] = []
    for rt in runtimes:
        wasm = os.path.relpath(rt.wasm) if rt.wasm else "<component>.wasm"
        files = os.path.relpath(os.path.join(base, ".spin", "files", rt.id))
        args = ["python", "-m", module]
        if rt.kind == "http":
            args += ["serve", wasm, "--port", "3000"]
        elif rt.kind == "cron":
            args += ["cron", wasm, "--every", "10"]
        elif rt.kind == "redis":
            address = next((str(t["address"]) for t in rt.triggers if t.get("address")), None)
            args += ["redis", wasm, "--channel", str(rt.triggers[0].get("channel", "")) if rt.triggers else ""]
            args += ["--address", address] if address else []
        elif rt.kind == "mqtt":
            args += ["mqtt", wasm, "--topic", str(rt.triggers[0].get("topic", "")) if rt.triggers else ""]
        else:
            continue
        if rt.mounts:
            args += ["--dir", f"{files}:/"]
        for name, value in sorted(rt.variables.items()):
            args += ["--var", f"{name}={value}"]
        staged = f"adf spin stage --manifest {shlex.quote(manifest)} --component {rt.id}"
        out.append((f"{staged} && " if rt.mounts else "") + " ".join(shlex.quote(a) for a in args))
    return out


def _spin_missing(manifest: str) -> int:
    lines = [
        "adf: the `spin` CLI is not installed (no `spin` on PATH), so it cannot run the app.",
        f"  Install Spin 3: {SPIN_INSTALL_URL} (Fermyon's guide: {FERMYON_INSTALL_URL}), e.g.",
        "    curl -fsSL https://spinframework.dev/downloads/install.sh | bash && sudo mv spin /usr/local/bin/",
        "  The cron and MQTT triggers are Spin plugins: install spin-trigger-cron and spin-trigger-mqtt",
        "  as their READMEs describe.",
        f"  For development without the spin CLI, the local Spin host (python -m {_local_host_module()}) runs",
        f"  the built components: first `adf spin build --manifest {manifest}`, then",
    ]
    commands = local_host_commands(manifest)
    lines += [f"    {c}" for c in commands] or [f"    python -m {_local_host_module()} --help"]
    print("\n".join(lines), file=sys.stderr)
    return 127


_KEEP_RESIDENT = "SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT"


def _version_tuple(text: str) -> tuple[int, int, int] | None:
    import re

    m = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def plugin_install_commands(plugin: str) -> list[str]:
    """The commands that install the pinned release of a trigger plugin."""
    version = PINNED_PLUGINS[plugin]
    url = PLUGIN_RELEASE_URL.format(name=plugin, version=version)
    return [f"spin plugins update && spin plugins install {plugin} --version {version} --yes",
            f"(or: spin plugins install --url {url} --yes)"]


def _installed_plugins(spin: str) -> dict[str, str]:
    """``{name: version}`` from ``spin plugins list --installed``: JSON with ``--format json``,
    else its text lines ``<name> <version> [installed]``."""
    import re

    out: dict[str, str] = {}
    res = subprocess.run([spin, "plugins", "list", "--installed", "--format", "json"], capture_output=True,
                         text=True, check=False)
    if res.returncode == 0:
        try:
            for item in json.loads(res.stdout):
                if isinstance(item, dict) and item.get("name") and item.get("version"):
                    out[str(item["name"])] = str(item["version"])
            return out
        except ValueError:
            pass
    res = subprocess.run([spin, "plugins", "list", "--installed"], capture_output=True, text=True, check=False)
    for line in res.stdout.splitlines():
        m = re.match(r"^\s*([A-Za-z0-9][\w.-]*)\s+v?(\d+\.\d+\.\d+\S*)", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def check_spin_versions(spin: str, trigger_kinds: Sequence[str]) -> list[str]:
    """Problems with the installed Spin and trigger plugins (empty: fine), each saying what to run.

    Spin must be 3.x and at least :data:`MIN_SPIN_VERSION`; each trigger plugin the manifest
    uses must be its :data:`PINNED_PLUGINS` release.
    """
    minimum = ".".join(map(str, MIN_SPIN_VERSION))
    try:
        res = subprocess.run([spin, "--version"], capture_output=True, text=True, check=False, timeout=30)
        found = _version_tuple(res.stdout + res.stderr)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"cannot run `{spin} --version`: {exc}"]
    if found is None:
        return [f"`spin --version` printed no version ({(res.stdout + res.stderr).strip()!r}); "
                f"install Spin {minimum} or later 3.x: {SPIN_INSTALL_URL}"]
    shown = ".".join(map(str, found))
    if found[0] != SPIN_MAJOR or found < MIN_SPIN_VERSION:
        return [f"Spin {shown} is installed; these components need Spin {minimum} or a later {SPIN_MAJOR}.x "
                f"(they import spin:postgres@4.0.0, first in Spin 3.4); install it: {SPIN_INSTALL_URL}"]
    problems: list[str] = []
    plugins = [TRIGGER_PLUGINS[k] for k in TRIGGER_KINDS if k in trigger_kinds and k in TRIGGER_PLUGINS]
    if not plugins:
        return problems
    installed = _installed_plugins(spin)
    for plugin in plugins:
        want, have = PINNED_PLUGINS[plugin], installed.get(plugin)
        if have == want:
            continue
        state = "is not installed" if have is None else f"{have} is installed"
        steps = ([] if have is None else [f"spin plugins uninstall {plugin}"]) + plugin_install_commands(plugin)
        problems.append(f"{plugin} {state}; this app needs {plugin} {want} (the last release for Spin 3): "
                        + "; ".join(steps))
    return problems


def _run_spin(args: argparse.Namespace, verb: str) -> int:
    spin = shutil.which("spin")
    if spin is None:
        return _spin_missing(args.manifest)
    if not args.no_validate:
        report = validate_manifest(args.manifest, build_check=True)
        if not report.ok:
            _print_report(report, False)
            return 2
    if not args.no_version_check:
        kinds: list[str] = []
        if verb == "up":  # the trigger plugins run locally; Fermyon Cloud brings its own
            try:
                with open(args.manifest, "rb") as fh:
                    kinds = list(tomllib.load(fh).get("trigger") or {})
            except (OSError, tomllib.TOMLDecodeError):
                kinds = []
        problems = check_spin_versions(spin, kinds)
        if problems:
            _problems(f"adf: refused: {len(problems)} version problem(s) (--no-version-check skips this)", problems)
            return 2
    if not args.no_validate:
        if verb == "deploy":
            local_only = sorted({k for k in report.triggers if k != "http"})
            if local_only:
                print(f"adf: note: Fermyon Cloud runs HTTP components; the {', '.join(local_only)} trigger(s) "
                      "need a self-hosted Spin (spin up) or SpinKube", file=sys.stderr)
    extra = list(args.spin_args or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    cmd = [spin, verb, "--from", args.manifest, *extra]
    env = dict(os.environ)
    if verb == "up" and _KEEP_RESIDENT not in env:
        # Spin resets only 2 MiB of a finished instance's memory in place and hands the rest
        # back to the kernel; a Python component then faults its heap in again on every
        # request (docs/SPIN.md, "The local Spin host"). The local host's size, unless one is set.
        from active_data_flow.spin_app.engine import EngineSettings

        env[_KEEP_RESIDENT] = str(EngineSettings().keep_resident)
        print(f"adf: {_KEEP_RESIDENT}={env[_KEEP_RESIDENT]} (a Python component's heap is reset in place; "
              "set the variable to choose another size)", file=sys.stderr)
    print(f"adf: running {' '.join(cmd)}", file=sys.stderr)
    try:
        return subprocess.run(cmd, check=False, env=env).returncode
    except KeyboardInterrupt:
        return 130


def _cmd_up(args: argparse.Namespace) -> int:
    return _run_spin(args, "up")


def _cmd_deploy(args: argparse.Namespace) -> int:
    return _run_spin(args, "deploy")


# --------------------------------------------------------------------------- init


_STARTER_FLOW = """\
# A starter flow: the records a trigger brings -> a pure-Python step -> the HTTP response.
#   curl -X POST localhost:3000/flows/{flow}/run -H 'content-type: application/json' \\
#        -d '{{"records": [{{"name": "Ada"}}]}}'
name: {flow}
description: Greets every record it is given.
source: {{type: payload}}
steps:
  - {{type: python, function: "{module}:greet"}}
sink: {{type: response}}
"""

_STARTER_STEPS = '''\
"""Steps of the {flow} flow. Inside a Spin component only pure Python can run: the standard
library and modules like this one (no sockets, no C extensions)."""

from __future__ import annotations

from typing import Any


def greet(record: dict[str, Any]) -> dict[str, Any]:
    """Add a greeting to the record."""
    record["greeting"] = f"Hello, {{record.get('name', 'world')}}!"
    return record
'''

_README = """\
# {name}

An ActiveDataFlow app for Fermyon Spin 3: the flows in `flows/` run inside WebAssembly
components built with componentize-py. `spin.toml` was generated by `adf spin manifest`.

```sh
adf spin validate                 # check spin.toml and that every flow can run inside Spin
adf spin build                    # componentize: {wasm_dir}/<trigger>.wasm, one per trigger kind
adf spin up                       # spin up --from spin.toml (needs the spin CLI; without it,
                                  #   it prints the local-host commands: python -m {local_host})
adf spin deploy                   # spin deploy --from spin.toml (Fermyon Cloud)
```

Run a flow over HTTP (`GET /flows` lists the flows the HTTP component bundles):

```sh
curl -X POST localhost:3000/flows/<flow>/run -H 'content-type: application/json' \\
     -d '{{"records": [{{"name": "Ada"}}]}}'
```

After adding or changing flows or routes, regenerate the manifest:

```sh
adf spin manifest --name {name} {flow_args} --out spin.toml --force
```

Configuration (lowest precedence first): the spec, then the Spin variables `adf_json` (every
flow) and `adf_flow_<flow>_json` (one flow) — JSON objects, e.g.
`SPIN_VARIABLE_ADF_FLOW_MY_FLOW_JSON='{{"runtime": {{"batch_size": 100}}}}' spin up` — then the
key-value store (`config/<flow>`), the environment, the trigger payload.
"""

_GITIGNORE = """\
{wasm_dir}/
.spin/
.adf/
__pycache__/
*.pyc
"""


def _local_step_modules(flow: FlowFile) -> list[str]:
    """Files/directories next to the spec that its steps import (copied along by init)."""
    spec_dir = os.path.dirname(flow.path)
    out: list[str] = []
    for step in flow.spec.steps:
        function = step.get("function")
        if not isinstance(function, str) or ":" not in function:
            continue
        top = function.partition(":")[0].split(".")[0]
        for candidate in (os.path.join(spec_dir, top + ".py"), os.path.join(spec_dir, top)):
            if os.path.exists(candidate) and candidate not in out:
                out.append(candidate)
                break
    return out


def project_root() -> str:
    """The directory the project's packages were installed from (``core/``, ``spin_app/``,
    ``examples/`` side by side in a source checkout), found from this module, not the cwd."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _resolve_input(path: str) -> str:
    """A ``--flow`` path: as given (relative to the cwd), else inside the project (``examples/...``)."""
    if os.path.exists(path) or os.path.isabs(path):
        return path
    candidate = os.path.join(project_root(), path)
    return candidate if os.path.exists(candidate) else path


def _local_data_files(flow: FlowFile) -> tuple[list[tuple[str, str]], list[str]]:
    """((host file, relative path inside the app) for the files a ``file`` source reads,
    problems: paths init cannot copy, or that match no file)."""
    import glob

    if flow.spec.source.get("type") != "file":
        return [], []
    raw = flow.spec.source.get("path")
    paths = [raw] if isinstance(raw, str) else [p for p in raw or [] if isinstance(p, str)]
    files: list[tuple[str, str]] = []
    problems: list[str] = []
    for path in paths:
        if "://" in path:
            continue  # refused by check_flow_for_spin
        norm = os.path.normpath(path)
        if os.path.isabs(path) or norm.split(os.sep)[0] == "..":
            problems.append(f"flow {flow.name}: file source path {path!r} lies outside the app; Spin mounts only "
                            "files inside the application directory: give a path relative to the working directory")
            continue
        found: list[str] = []
        for base in dict.fromkeys([os.getcwd(), os.path.dirname(flow.path), project_root()]):
            found = [m for m in sorted(glob.glob(os.path.join(base, norm), recursive=True)) if os.path.isfile(m)]
            if found:
                files += [(m, os.path.relpath(m, base)) for m in found
                          if all(rel != os.path.relpath(m, base) for _h, rel in files)]
                break
        if not found:
            problems.append(f"flow {flow.name}: file source path {path!r} matches no file (looked in the working "
                            f"directory, next to the spec and in {project_root()}); the app would mount nothing")
    return files, problems


def _cmd_init(args: argparse.Namespace) -> int:  # noqa: C901
    name = _slug(args.name)
    if not name or name != args.name:
        _err(f"app name {args.name!r}: use lower-case letters, digits and '-' (e.g. {name or 'my-flows'!r})")
        return 2
    target = os.path.abspath(args.dir or args.name)
    if os.path.exists(target) and (not os.path.isdir(target) or os.listdir(target)):
        _err(f"refusing to scaffold into {args.dir or args.name}: it exists and is not empty")
        return 2
    flows, problems = _load_flows([_resolve_input(p) for p in args.flow or []])
    if problems:
        _problems(f"adf: invalid flow spec(s): {len(problems)} problem(s)", problems)
        return 2
    flows_dir = os.path.join(target, "flows")
    # Generate into a staging list first so nothing is written when the manifest is refused.
    copies: list[tuple[str, str]] = []
    spec_paths: list[str] = []
    for f in flows:
        dest = os.path.join(flows_dir, os.path.basename(f.path))
        if dest in spec_paths:
            dest = os.path.join(flows_dir, f.name + os.path.splitext(f.path)[1])
        copies.append((f.path, dest))
        spec_paths.append(dest)
        for module in _local_step_modules(f):
            module_dest = os.path.join(flows_dir, os.path.basename(module))
            if all(d != module_dest for _s, d in copies):
                copies.append((module, module_dest))
    uncopyable: list[str] = []
    for f in flows:
        data, data_problems = _local_data_files(f)
        copies += [(host, os.path.join(target, rel)) for host, rel in data]
        uncopyable += data_problems
    if uncopyable:
        _problems(f"adf: refused: {len(uncopyable)} file(s) cannot be copied into the app", uncopyable)
        return 2
    starter: list[tuple[str, str]] = []
    if not flows:
        flow = name.replace("-", "_")
        module = f"{flow}_steps"
        starter = [
            (os.path.join(flows_dir, f"{flow}.yaml"), _STARTER_FLOW.format(flow=flow, module=module)),
            (os.path.join(flows_dir, f"{module}.py"), _STARTER_STEPS.format(flow=flow)),
        ]
        spec_paths.append(starter[0][0])
    existed = os.path.isdir(target)

    def undo() -> None:
        shutil.rmtree(target, ignore_errors=True)
        if existed:
            os.makedirs(target, exist_ok=True)

    try:
        os.makedirs(flows_dir, exist_ok=True)
        for src, dest in copies:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if os.path.isdir(src):
                shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, dest)
        for path, text in starter:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        # The data files were copied to the same relative paths inside the app: resolve there.
        manifest, code = _generate(args, spec_paths, target, "spin.toml", name, base_dir=target)
        if manifest is None:
            undo()
            return code
        with open(os.path.join(target, "spin.toml"), "w", encoding="utf-8") as fh:
            fh.write(manifest)
    except OSError as exc:
        undo()
        _err(f"cannot create the app in {args.dir or args.name}: {exc}; nothing was left behind")
        return 1
    except BaseException:
        undo()
        raise
    flow_args = " ".join(f"--flow {os.path.relpath(p, target)}" for p in spec_paths)
    route_args = " ".join([*(f"--trigger {t}" for t in args.trigger or []), *(f"--route {r}" for r in args.route or [])])
    with open(os.path.join(target, "README.md"), "w", encoding="utf-8") as fh:
        fh.write(_README.format(name=name, wasm_dir=args.wasm_dir, local_host=_local_host_module(),
                                flow_args=" ".join(filter(None, [flow_args, route_args]))))
    with open(os.path.join(target, ".gitignore"), "w", encoding="utf-8") as fh:
        fh.write(_GITIGNORE.format(wasm_dir=args.wasm_dir.rstrip("/")))
    shown = args.dir or args.name
    print(f"created {shown}/: spin.toml, flows/ ({', '.join(sorted(os.listdir(flows_dir)))}), README.md, .gitignore")
    print(f"next: cd {shown} && adf spin validate --no-build-check && adf spin build && adf spin up")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    """``adf schema`` for flows that run inside Spin: core's types and the Spin-native connectors."""
    from active_data_flow.spec_schema import flow_schema, write_schema

    write_schema(flow_schema(spin_registry(), no_plugins=args.no_plugins, schema_id=SPIN_SCHEMA_ID,
                             title="ActiveDataFlow flow spec (Fermyon Spin components)"), args.output)
    return 0


#: the ``$id`` of ``adf spin schema`` (docs/spin-flow.schema.json)
SPIN_SCHEMA_ID = "urn:active-data-flow:flow-spec:spin"


# --------------------------------------------------------------------------- parser


def register(sub: Any) -> None:
    """Add ``adf spin …`` to the ``adf`` parser (the ``active_data_flow.commands`` entry point)."""
    spin = sub.add_parser("spin", help="Fermyon Spin 3: init, manifest, validate, build, up, deploy",
                          description="Run flows inside Fermyon Spin 3 components (see docs/SPIN.md).")
    ssub = spin.add_subparsers(dest="spin_command", required=True)

    init = ssub.add_parser("init", help="scaffold a Spin app directory for flows")
    init.add_argument("name", help="application name (lower-case, '-' separated)")
    init.add_argument("--flow", action="append", metavar="SPEC",
                      help="flow spec to copy into flows/ (repeatable; default: a starter flow)")
    init.add_argument("--dir", help="directory to create (default: ./NAME); must not exist or be empty")
    _add_generation_args(init)
    init.set_defaults(func=_cmd_init)

    man = ssub.add_parser("manifest", help="generate spin.toml (manifest version 2) for flows")
    man.add_argument("--flow", action="append", required=True, metavar="SPEC", help="flow spec (repeatable)")
    man.add_argument("--out", default="spin.toml", help="where to write (default spin.toml; '-' prints it); "
                                                        "paths inside are relative to its directory")
    man.add_argument("--name", help="application.name (default: from the flow)")
    man.add_argument("--check", action="store_true",
                     help="write nothing; exit 1 when --out differs from what would be generated")
    man.add_argument("--force", action="store_true", help="overwrite a manifest not generated by adf")
    _add_generation_args(man)
    man.set_defaults(func=_cmd_manifest)

    val = ssub.add_parser("validate", help="check spin.toml and that every bundled flow can run inside Spin")
    val.add_argument("--manifest", default="spin.toml")
    val.add_argument("--no-build-check", action="store_true",
                     help="a missing component .wasm is a warning, not an error")
    val.add_argument("--json", action="store_true", help="print the report as one JSON object")
    val.set_defaults(func=_cmd_validate)

    bld = ssub.add_parser("build", help="validate, then build one .wasm per trigger kind (componentize-py)")
    bld.add_argument("--manifest", default="spin.toml")
    bld.add_argument("--out", help="output directory (default: where the manifest's components are)")
    bld.add_argument("--trigger", action="append", choices=TRIGGER_KINDS, help="build only these (repeatable)")
    bld.add_argument("--no-strip", action="store_true", help="keep debug sections (bigger components)")
    bld.add_argument("--json", action="store_true")
    bld.set_defaults(func=_cmd_build)

    stage = ssub.add_parser("stage", help="copy components' files as Spin mounts them (for the local host)")
    stage.add_argument("--manifest", default="spin.toml")
    stage.add_argument("--component", action="append", help="component id (repeatable; default: all)")
    stage.add_argument("--root", help="where to copy (default: .spin/files/<component> next to the manifest)")
    stage.set_defaults(func=_cmd_stage)

    sch = ssub.add_parser("schema", help="the JSON Schema of flow specs inside Spin (with the Spin-native connectors)")
    sch.add_argument("--output", "-o", metavar="FILE", help="write it to FILE (default: standard output)")
    sch.add_argument("--no-plugins", action="store_true",
                     help="only this distribution's own types (docs/spin-flow.schema.json)")
    sch.set_defaults(func=_cmd_schema)


    for verb, handler, text in (("up", _cmd_up, "run the app with the spin CLI (spin up --from MANIFEST)"),
                                ("deploy", _cmd_deploy, "deploy with the spin CLI (spin deploy --from MANIFEST)")):
        p = ssub.add_parser(verb, help=text, description=f"{text}; arguments after -- go to spin.")
        p.add_argument("--manifest", default="spin.toml")
        p.add_argument("--no-validate", action="store_true", help="skip `adf spin validate`")
        p.add_argument("--no-version-check", action="store_true",
                       help="skip the check of the Spin and trigger plugin versions")
        p.add_argument("spin_args", nargs=argparse.REMAINDER, help="arguments for spin (after --)")
        p.set_defaults(func=handler)
