"""The project's packages import each other without a cycle — lazy imports included.

A cycle hidden by an import inside a function still ties two modules together: neither can be
read, tested or moved without the other. The graph here is every ``import`` / ``from … import``
of a project module anywhere in a file (function bodies too), except those under
``if TYPE_CHECKING:``, which only type checkers run.
"""

from __future__ import annotations

import ast
from pathlib import Path

from package_tree import IMPORT_NAMES

ROOT = Path(__file__).resolve().parent.parent
#: folder -> its import name (pyproject.toml's package-dir): core/ is the package itself
PACKAGES = IMPORT_NAMES
HOSTS = tuple(name for folder, name in PACKAGES.items() if folder != "core")


def _module_name(path: Path) -> str:
    folder, *parts = path.relative_to(ROOT).with_suffix("").parts
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGES[folder], *parts])


def _in_core(name: str) -> bool:
    return not any(name == host or name.startswith(host + ".") for host in HOSTS)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "templates" in path.parts or "__pycache__" in path.parts:
                continue
            found[_module_name(path)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module named by an import in ``tree``, outside ``if TYPE_CHECKING:`` blocks."""
    out: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)  # a submodule imported by name
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py"):
            # the module itself, or the nearest enclosing project module (``active_data_flow.engine.run_flow`` -> active_data_flow.engine)
            candidate = imported
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name and not name.startswith(candidate + "."):
                targets.add(candidate)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def connect(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def _describe(cycle: list[str], graph: dict[str, set[str]]) -> str:
    members = set(cycle)
    edges = [f"{a} -> {b}" for a in cycle for b in sorted(graph[a] & members)]
    return f"{', '.join(cycle)}: " + "; ".join(edges)


def test_the_graph_is_read_from_the_code() -> None:
    graph = _graph()
    assert "active_data_flow.engine.run" in graph and "active_data_flow.engine.coordinator" in graph["active_data_flow.engine.run"]
    assert "active_data_flow.source" in graph["active_data_flow.engine.loop"]
    # a lazy import counts; one under TYPE_CHECKING does not
    assert "active_data_flow.engine" in graph["active_data_flow.flow"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_package_of_the_project_imports_in_a_circle() -> None:
    graph = _graph()
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(_describe(c, graph) for c in cycles)


def test_core_imports_nothing_of_the_hosts() -> None:
    """The engine is a library: the hosts (handlers, Spin, Lambda, Flink) build on it, never the reverse."""
    graph = _graph()
    wrong = sorted(
        f"{name} -> {target}"
        for name, targets in graph.items() if _in_core(name)
        for target in targets if not _in_core(target)
    )
    assert not wrong, wrong


def test_no_module_takes_a_private_name_of_another() -> None:
    """A name with a leading underscore is its module's own: another module that needs it needs a
    public name. (``active_data_flow.spin_app._bundle`` is generated into a component at build time.)"""
    taken = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if node.module.split(".")[0] != "active_data_flow":
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and alias.name != "_bundle":
                    taken.append(f"{name} takes {node.module}.{alias.name}")
    assert not taken, taken
