"""The torchloom package imports without cycles (STYLE.md rule 18).

The graph is read from the source with `ast`, never by importing, so a cycle that only bites on
one import order, or one hidden in a function body, is found all the same. An import inside a
function counts: it is the same dependency, only paid for later. An import under
`if TYPE_CHECKING:` does not: it never runs.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "torchloom"

HINT = (
    "hint: the module lower in the stack should not need the upper one; move the shared name "
    "into a module both can import (STYLE.md rule 18)"
)


def find_modules(package_dir: Path) -> dict[str, Path]:
    """Map every module's dotted name under `package_dir` to its file."""
    root = package_dir.parent
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST):
    """Yield every import statement that can run, skipping `if TYPE_CHECKING:` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve_base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    # A package's own __init__ is its package; a plain module's package is its parent.
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    if node.module:
        parts.append(node.module)
    return ".".join(parts)


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Edges module -> {imported internal module: first line number}.

    `from pkg import name` is an edge to `pkg.name` when that is a module, else to `pkg`.
    Importing `pkg.sub` is an edge to `pkg.sub` only, not to `pkg`: a submodule does not depend on
    its parent package merely by living in it.
    """
    graph: dict[str, dict[str, int]] = {module: {} for module in modules}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _runtime_imports(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve_base(module, is_package, node)
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    targets.append(candidate if candidate in modules else base)
            for target in targets:
                if target in modules and target != module:
                    graph[module].setdefault(target, node.lineno)
    return graph


def strongly_connected_components(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative so a deep graph cannot hit the recursion limit."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = lowlink[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = lowlink[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    advanced = True
                    break
                if successor in on_stack:
                    lowlink[node] = min(lowlink[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                lowlink[parent] = min(lowlink[parent], lowlink[node])
            if lowlink[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _shortest_path(graph, source: str, target: str, allowed: set[str]) -> list[str]:
    previous = {source: None}
    queue = deque([source])
    while queue:
        node = queue.popleft()
        if node == target:
            path = []
            while node is not None:
                path.append(node)
                node = previous[node]
            return path[::-1]
        for successor in sorted(graph[node]):
            if successor in allowed and successor not in previous:
                previous[successor] = node
                queue.append(successor)
    raise AssertionError(f"no path {source} -> {target} inside its component")


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Cycles, each a list of modules starting and ending with the same one.

    Every edge inside a strongly connected component lies on at least one cycle listed, so each
    import that holds a cycle together is named.
    """
    cycles = []
    for component in strongly_connected_components(graph):
        if len(component) < 2:
            continue
        members = set(component)
        covered: set[tuple[str, str]] = set()
        for source in component:
            for target in sorted(graph[source]):
                if target not in members or (source, target) in covered:
                    continue
                cycle = [source, *_shortest_path(graph, target, source, members)]
                covered.update(zip(cycle, cycle[1:], strict=False))
                cycles.append(cycle)
    return cycles


def describe(cycle: list[str], graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> str:
    where = ", ".join(
        f"{modules[source].relative_to(PACKAGE_DIR.parent)}:{graph[source][target]}"
        for source, target in zip(cycle, cycle[1:], strict=False)
    )
    return f"{' -> '.join(cycle)}\n    {HINT}; imports at {where}"


def test_torchloom_has_no_import_cycles():
    modules = find_modules(PACKAGE_DIR)
    graph = import_graph(modules)
    cycles = find_cycles(graph)
    report = "\n".join(describe(cycle, graph, modules) for cycle in cycles)
    assert not cycles, f"{len(cycles)} import cycle(s) in torchloom:\n{report}"


def test_graph_sees_the_package_internal_imports():
    # A checker that read no edges would pass trivially; these are imports the code must have.
    graph = import_graph(find_modules(PACKAGE_DIR))
    assert "torchloom.commands" in graph["torchloom.cli"]
    assert "torchloom.data.sources" in graph["torchloom.data"]


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


def test_checker_finds_a_cycle_through_a_function_level_and_a_relative_import(tmp_path):
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/upper.py": "from pkg.sub import lower\n",
            "pkg/sub/__init__.py": "",
            # Relative, and inside a function: still an edge back to pkg.upper.
            "pkg/sub/lower.py": "def helper():\n    from .. import upper\n    return upper\n",
            "pkg/alone.py": "import pkg.upper\n",
        },
    )
    graph = import_graph(find_modules(package))
    assert find_cycles(graph) == [["pkg.sub.lower", "pkg.upper", "pkg.sub.lower"]]


def test_checker_ignores_type_checking_imports_and_parent_packages(tmp_path):
    package = _write(
        tmp_path,
        {
            # The package imports its submodule; the submodule living in it is no edge back.
            "pkg/__init__.py": "from pkg.child import name\n",
            "pkg/child.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from pkg import other\n"
                "name = 1\n"
            ),
            "pkg/other.py": "from pkg.child import name\n",
        },
    )
    graph = import_graph(find_modules(package))
    assert graph["pkg.child"] == {}
    assert find_cycles(graph) == []


def test_from_package_import_name_resolves_to_the_package_unless_a_module(tmp_path):
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "value = 1\n",
            "pkg/a.py": "from pkg import value, b\n",
            "pkg/b.py": "from . import a\n",
        },
    )
    graph = import_graph(find_modules(package))
    assert set(graph["pkg.a"]) == {"pkg", "pkg.b"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]
