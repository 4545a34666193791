"""Can a flow run *inside* a Spin component? The one check that ``adf spin manifest``,
``init``, ``validate``, ``build``, ``up`` and ``deploy`` all use (:func:`check_flow_for_spin`).

What this module holds: the connectors and steps a component runs (:data:`ALLOWED_SOURCES`,
:data:`ALLOWED_SINKS`, :data:`ALLOWED_STEPS`), why the others are refused, the modules that
cannot load in a component (:data:`DENIED_MODULES`), and the scan of a step's modules: found
without importing them (:func:`find_module`) and read for their imports, recursively through
the project's own modules.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec, PathFinder
from typing import Any

from active_data_flow.errors import AdfError, ConfigError
from active_data_flow.registry import OWN_PACKAGE, Registry
from active_data_flow.spec import FlowSpec
from active_data_flow.spin_app.manifest.conventions import glob_prefix, inside_path
from active_data_flow.spin_app.manifest.flows import (
    Findings,
    FlowFile,
    Mount,
    connector_sections,
    file_source_paths,
    spin_registry,
)

ALLOWED_SOURCES: dict[str, str] = {
    "payload": "records from the trigger (HTTP body or query, Redis message, MQTT payload)",
    "memory": "records written in the spec",
    "file": "local files mounted read-only through the manifest's files",
    "kv": "the Spin key-value store",
    "spin_sqlite": "the component's SQLite database",
    "spin_http": "outbound HTTP",
}
ALLOWED_SINKS: dict[str, str] = {
    "response": "records returned in the HTTP response",
    "memory": "an in-memory list (tests)",
    "stdout": "the component's stdout (Spin logs)",
    "kv": "the Spin key-value store",
    "spin_sqlite": "the component's SQLite database",
    "spin_redis": "outbound Redis (publish / stream append)",
    "spin_http": "outbound HTTP",
}
ALLOWED_STEPS: dict[str, str] = {
    "python": "a pure-Python function bundled into the component",
    "filter": "a field comparison or a pure-Python predicate",
}

_SPIN_NATIVE_HINT = "inside a component use " + ", ".join(sorted({*ALLOWED_SOURCES, *ALLOWED_SINKS}))
_REFUSED: dict[tuple[str, str], str] = {
    ("source", "sql"): "SQLAlchemy opens database connections (sockets) and needs C extensions; "
                       "inside a component read spin_sqlite (the component's SQLite database) or kv",
    ("sink", "sql"): "SQLAlchemy opens database connections (sockets) and needs C extensions; "
                     "inside a component write to spin_sqlite (the component's SQLite database) or kv",
    ("source", "rafka"): "redis-py opens sockets; inside a component Redis messages arrive through "
                         "the Redis trigger (source type payload)",
    ("sink", "rafka"): "redis-py opens sockets; inside a component publish with spin_redis",
    ("sink", "cache"): "the cache sink writes to Redis (sockets) or a state-store file; inside a component "
                       "use kv (the Spin key-value store)",
    ("sink", "file"): "a component cannot write files (its files are mounted read-only); write to kv, "
                      "spin_sqlite, spin_redis or spin_http, or return the records with response",
    ("step", "wasm"): "WASM steps run on the host targets (local, heartbeat, Lambda, Flink), "
                      "not inside a Spin component",
    ("step", "http"): "the http step opens sockets (urllib); inside a component fetch with a spin_http "
                      "source or post with a spin_http sink",
    ("step", "sql"): "the sql step opens database connections (sockets, SQLAlchemy); inside a component "
                     "use spin_sqlite",
}

#: Modules that cannot load (or cannot work) inside a componentize-py component, with the reason.
#: ``True`` as the second item: importing them fails, so an unguarded module-level import refuses
#: the flow; ``False``: the import works but using the module does not (a warning).
DENIED_MODULES: dict[str, tuple[str, bool]] = {
    "redis": ("redis-py opens sockets; publish with the spin_redis sink", True),
    "hiredis": ("a C extension", True),
    "rafka": ("opens sockets (Redis)", True),
    "boto3": ("the AWS SDK opens sockets; fetch objects with spin_http or mount the files", True),
    "botocore": ("the AWS SDK opens sockets", True),
    "s3fs": ("opens sockets", True),
    "sqlalchemy": ("SQLAlchemy opens database connections and needs C extensions; use spin_sqlite", True),
    "psycopg": ("a PostgreSQL driver (sockets, C extensions)", True),
    "psycopg2": ("a PostgreSQL driver (sockets, C extensions)", True),
    "asyncpg": ("a PostgreSQL driver (sockets, C extensions)", True),
    "pymysql": ("a MySQL driver (sockets)", True),
    "pydantic": ("pydantic needs pydantic-core, a compiled extension", True),
    "pydantic_core": ("a compiled extension", True),
    "orjson": ("a compiled extension", True),
    "ujson": ("a compiled extension", True),
    "msgspec": ("a compiled extension", True),
    "numpy": ("a C extension", True),
    "pandas": ("a C extension", True),
    "pyarrow": ("a C++ extension", True),
    "polars": ("a compiled extension", True),
    "scipy": ("a C extension", True),
    "duckdb": ("a C++ extension", True),
    "lxml": ("a C extension", True),
    "cryptography": ("a compiled extension", True),
    "wasmtime": ("a native library (WASM steps run on the host targets, not inside Spin)", True),
    "requests": ("opens sockets; use the spin_http connector", True),
    "urllib3": ("opens sockets; use the spin_http connector", True),
    "httpx": ("opens sockets; use the spin_http connector", True),
    "httpcore": ("opens sockets; use the spin_http connector", True),
    "aiohttp": ("opens sockets and needs C extensions; use the spin_http connector", True),
    "grpc": ("a C extension that opens sockets", True),
    "kafka": ("a Kafka client (sockets)", True),
    "confluent_kafka": ("a Kafka client (C extension, sockets)", True),
    "paho": ("an MQTT client (sockets); MQTT messages arrive through the MQTT trigger", True),
    "pika": ("an AMQP client (sockets)", True),
    "pyflink": ("runs on the JVM (the Flink target)", True),
    "pyiceberg": ("needs pyarrow and sockets", True),
    "ssl": ("not available in the WASI build of Python", True),
    "ctypes": ("native libraries cannot be loaded inside a component", True),
    "socket": ("a component has no sockets; use spin_http / spin_redis", False),
    "subprocess": ("a component cannot start processes", False),
    "multiprocessing": ("a component cannot start processes", False),
}


def check_flow_for_spin(
    flow: FlowFile, *, mounts: Sequence[Mount] | None = None, reg: Registry | None = None,
    component: str | None = None,
) -> Findings:
    """Whether every connector and step of ``flow`` can run inside a Spin component.

    ``mounts`` are the component's ``files``; when given, a ``file`` source's paths must lie
    under one of them. Each message names the flow, the connector or step, and the reason.
    """
    reg = reg or spin_registry()
    found = Findings()
    spec = flow.spec
    at = f"flow {spec.name}"
    for where, kind, cfg in connector_sections(spec):
        type_name = str(cfg.get("type") or "")
        label = f"{at}: {where} {type_name!r}"
        allowed = ALLOWED_SOURCES if kind == "source" else ALLOWED_SINKS
        if type_name not in allowed:
            reason = _REFUSED.get((kind, type_name)) or (
                f"type {type_name!r} is not known to run inside a Spin component "
                f"(allowed {kind}s: {', '.join(allowed)})"
            )
            found.errors.append(f"{label}: {reason}")
            continue
        _check_attributes(kind, type_name, cfg, label, reg, found)
        if kind == "source" and type_name == "file":
            _check_file_source(spec, label, mounts, component, found)
    scanned: set[str] = set()
    for i, step in enumerate(spec.steps):
        _check_step(flow, i, step, found, scanned)
    parallelism = spec.runtime.get("parallelism", 1)
    if isinstance(parallelism, int) and parallelism > 1:
        found.warnings.append(
            f"{at}: runtime.parallelism {parallelism}: a component has no processes; "
            "the flow runs with parallelism 1 inside Spin"
        )
    runtime_type = spec.runtime.get("type", "local")
    if runtime_type != "local":
        found.warnings.append(
            f"{at}: runtime.type {runtime_type!r} is ignored inside a component (the engine runs in-process)"
        )
    if spec.state:
        found.warnings.append(
            f"{at}: state {spec.state!r} is not opened inside a component; "
            "checkpoints and state live in the Spin key-value store / SQLite"
        )
    return found


def _check_attributes(kind: str, type_name: str, cfg: Mapping[str, Any], label: str,
                      reg: Registry, found: Findings) -> None:
    try:
        cls = reg.resolve(kind, type_name)
    except (AdfError, ImportError) as exc:
        found.warnings.append(f"{label}: attributes not checked: the type is not installed here ({exc})")
        return
    try:
        cls({k: v for k, v in cfg.items() if k != "type"})
    except ConfigError as exc:
        found.errors.extend(f"{label}: {p}" for p in exc.problems)
    except Exception as exc:
        found.errors.append(f"{label}: {type(exc).__name__}: {exc}")


def _check_file_source(spec: FlowSpec, label: str, mounts: Sequence[Mount] | None,
                       component: str | None, found: Findings) -> None:
    if spec.source.get("watch"):
        found.errors.append(
            f"{label}: watch: true never finishes, and a component serves one event at a time; "
            "run watching file flows on the local or heartbeat target"
        )
    for path in file_source_paths(spec):
        if "://" in path:
            scheme = path.split("://", 1)[0]
            reason = ("S3 needs boto3 (sockets); mount the files through the manifest's files, "
                      "or fetch them with spin_http") if scheme in ("s3", "s3a") else \
                f"{scheme}:// paths need network clients; only local files mounted through the manifest work"
            found.errors.append(f"{label}: path {path!r}: {reason}")
            continue
        if mounts is None:
            continue
        inside = inside_path(glob_prefix(path))
        if not any(m.covers(inside) for m in mounts):
            where = f" of component {component}" if component else ""
            found.errors.append(
                f"{label}: path {path!r} is read at {inside} inside the component, but no files entry{where} "
                f"mounts it; add {{ source = \"<host dir>\", destination = \"{inside}\" }} "
                "(adf spin manifest does this)"
            )


def _check_step(flow: FlowFile, index: int, step: Mapping[str, Any], found: Findings, scanned: set[str]) -> None:
    type_name = str(step.get("type") or "python")
    label = f"flow {flow.name}: steps[{index}] {type_name!r}"
    if type_name not in ALLOWED_STEPS:
        reason = _REFUSED.get(("step", type_name)) or (
            f"step type {type_name!r} is not known to run inside a Spin component "
            f"(allowed steps: {', '.join(ALLOWED_STEPS)})"
        )
        found.errors.append(f"{label}: {reason}")
        return
    function = step.get("function")
    if function is None:
        if type_name == "python":
            found.errors.append(f"{label}: 'function' is required ('module:function')")
        return
    if not isinstance(function, str) or ":" not in function:
        found.errors.append(f"{label}: 'function' must be 'module:function', got {function!r}")
        return
    module, _, attr = function.partition(":")
    label = f"{label} ({function})"
    top = module.split(".")[0]
    if top in DENIED_MODULES:
        found.errors.append(f"{label}: module {module}: {DENIED_MODULES[top][0]}")
        return
    if top in sys.stdlib_module_names or top == OWN_PACKAGE:
        return  # bundled with the component's Python
    search = search_path(flow)
    spec = find_module(module, search)
    if spec is None or (spec.origin is None and not spec.submodule_search_locations):
        found.errors.append(
            f"{label}: module {module!r} not found next to the spec, in python_path or installed; "
            "the component bundles only modules the build can find"
        )
        return
    _scan_module(module, spec, search, label, found, seen=scanned, entry_attr=attr.split(".")[0])


def search_path(flow: FlowFile) -> list[str]:
    """Where step modules import from: the spec's directory, python_path, the working directory, sys.path."""
    paths = [os.path.dirname(flow.path)]
    paths += [os.path.abspath(p) for p in (flow.raw.get("python_path") or []) if isinstance(p, str)]
    paths.append(os.getcwd())
    paths += [p for p in sys.path if p]
    out: list[str] = []
    for p in paths:
        if p not in out:
            out.append(p)
    return out


def find_module(name: str, search: list[str]) -> ModuleSpec | None:
    """Locate a module without importing it (nor its parent packages)."""
    parts = name.split(".")
    try:
        spec = PathFinder.find_spec(parts[0], search)
        for i in range(1, len(parts)):
            if spec is None or not spec.submodule_search_locations:
                return None
            spec = PathFinder.find_spec(".".join(parts[: i + 1]), list(spec.submodule_search_locations))
    except (ImportError, ValueError):
        return None
    return spec


def is_installed_package(path: str) -> bool:
    """Whether ``path`` lies in an installed distribution (``site-packages``/``dist-packages``)."""
    parts = path.replace(os.sep, "/").split("/")
    return "site-packages" in parts or "dist-packages" in parts


def _compiled_files(spec: ModuleSpec) -> list[str]:
    roots = list(spec.submodule_search_locations or [])
    out: list[str] = []
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            out.extend(os.path.join(dirpath, f) for f in files if f.endswith((".so", ".pyd")))
            if len(out) > 3:
                return out
    return out


@dataclass
class _Import:
    module: str
    line: int
    guarded: bool  # inside try/except ImportError
    in_function: bool


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, package: str | None) -> None:
        self.package = package
        self.imports: list[_Import] = []
        self.names: set[str] = set()
        self.star = False
        self._guard = 0
        self._func = 0

    def _add(self, module: str, node: ast.stmt) -> None:
        self.imports.append(_Import(module, node.lineno, self._guard > 0, self._func > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)
            if not self._func:
                self.names.add((alias.asname or alias.name).split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            if not self.package:
                return
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            module = ".".join([*base, node.module] if node.module else base)
            if not node.module:  # from . import x: x may be a submodule
                for alias in node.names:
                    self._add(f"{module}.{alias.name}", node)
            else:
                self._add(module, node)
        elif node.module:
            self._add(node.module, node)
        if not self._func:
            for alias in node.names:
                if alias.name == "*":
                    self.star = True
                self.names.add(alias.asname or alias.name)

    def visit_Try(self, node: ast.Try) -> None:
        guards = any(_catches_import_error(h.type) for h in node.handlers)
        self._guard += guards
        for stmt in node.body:
            self.visit(stmt)
        self._guard -= guards
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(part)

    visit_TryStar = visit_Try  # type: ignore[assignment]

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        if not self._func and not isinstance(node, ast.Lambda):
            self.names.add(node.name)
        self._func += 1
        self.generic_visit(node)
        self._func -= 1

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        if not self._func:
            self.names.add(node.name)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        if not self._func:
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.names.add(target.id)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if not self._func and isinstance(node.target, ast.Name):
            self.names.add(node.target.id)
        self.generic_visit(node)


def _catches_import_error(node: ast.expr | None) -> bool:
    if node is None:
        return True
    names = [node] if not isinstance(node, ast.Tuple) else list(node.elts)
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError", "Exception",
                                                      "BaseException") for n in names)


def _scan_module(name: str, spec: ModuleSpec, search: list[str], label: str, found: Findings,
                 seen: set[str], entry_attr: str | None = None, via: str = "") -> None:
    """Refuse compiled modules and imports of modules that cannot load in a component (recursively
    through the project's own modules; installed packages are checked, not read)."""
    if name in seen and not entry_attr:
        return
    repeated = name in seen  # another step of the flow uses it: only the entry point is new
    seen.add(name)
    tree = _module_tree(name, spec, label, found)
    if tree is None:
        return
    origin = spec.origin or ""
    is_package = os.path.basename(origin) == "__init__.py"
    collector = _ImportCollector(name if is_package else name.rpartition(".")[0] or None)
    collector.visit(tree)
    if entry_attr and entry_attr not in collector.names and not collector.star:
        found.errors.append(f"{label}: module {name} defines no {entry_attr!r}")
    if repeated:
        return
    for imp in collector.imports:
        _check_import(imp, name, search, label, found, seen, via)


def _module_tree(name: str, spec: ModuleSpec, label: str, found: Findings) -> ast.Module | None:
    """The parsed source of a module to scan, or None: a compiled module (refused), an installed
    package (a warning when it holds compiled modules), a namespace package, or a module that
    cannot be read (refused)."""
    origin = spec.origin or ""
    if origin.endswith((".so", ".pyd")):
        found.errors.append(f"{label}: module {name} is a compiled extension ({os.path.basename(origin)}); "
                            "componentize-py can bundle only pure Python")
        return None
    if is_installed_package(origin or next(iter(spec.submodule_search_locations or []), "")):
        compiled = _compiled_files(spec) if spec.submodule_search_locations else []
        if compiled:
            found.warnings.append(
                f"{label}: installed package {name.split('.')[0]} contains compiled extension modules "
                f"({', '.join(os.path.basename(c) for c in compiled[:3])}); the import fails inside a "
                "component unless the package falls back to pure Python"
            )
        return None
    if not origin.endswith(".py"):
        return None  # namespace package: nothing to read
    try:
        with open(origin, encoding="utf-8") as f:
            return ast.parse(f.read(), filename=origin)
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        found.errors.append(f"{label}: cannot read module {name} ({origin}): {exc}")
        return None


def _check_import(imp: _Import, name: str, search: list[str], label: str, found: Findings, seen: set[str],
                  via: str) -> None:
    """One import of module ``name``: denied (an error, or a warning when guarded or lazy), the
    standard library, or a module to scan in turn."""
    top = imp.module.split(".")[0]
    if top == OWN_PACKAGE:
        return
    where = f"module {name}{via} imports {imp.module} (line {imp.line})"
    denied = DENIED_MODULES.get(top)
    if denied:
        reason, fails_on_import = denied
        if fails_on_import and not imp.guarded and not imp.in_function:
            found.errors.append(f"{label}: {where}: {reason}")
        else:
            context = ("inside a try/except ImportError" if imp.guarded else
                       "inside a function" if imp.in_function else "")
            found.warnings.append(f"{label}: {where}{' ' + context if context else ''}: {reason}")
        return
    if top in sys.stdlib_module_names:
        return
    sub = find_module(imp.module, search) or (
        find_module(imp.module.rpartition(".")[0], search) if "." in imp.module else None)
    if sub is None:
        if not imp.guarded:
            msg = f"{label}: {where}: module not found (the build cannot bundle it)"
            (found.warnings if imp.in_function else found.errors).append(msg)
        return
    _scan_module(sub.name, sub, search, label, found, seen, via=f" (imported by {name})")
