"""The code's shape, read with ``ast`` (nothing is imported or run): no import cycle between the modules of
``roicurate/`` or of ``roicurate_plugins/`` (imports inside functions count too: a cycle is a strongly connected
component of more than one module), and no function longer than 80 lines (decorators excluded)."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80
PACKAGES = ("roicurate", "roicurate_plugins")


def module_names(root):
    """{dotted module name: path} of every .py file under the package folder ``root``."""
    names = {}
    for path in sorted((REPO / root).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imported_modules(name, path, known):
    """The modules of ``known`` that module ``name`` imports anywhere in its file: ``import a.b``, ``from a import
    b`` (b a module or a name in a), relative imports; ``from a.b import c`` also counts as importing the package
    ``a.b`` (its ``__init__`` runs first)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:          # ``import a.b.c`` of a name: the closest module that exists
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def import_graph(root):
    known = module_names(root)
    return known, {name: {m for m in imported_modules(name, path, known) if m.split(".")[0] == root}
                   for name, path in known.items()}


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        work = [(v, iter(sorted(graph[v])))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.add(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def long_functions(root):
    """'path:line name (N lines)' of every function or method over MAX_FUNCTION_LINES lines."""
    out = []
    for name, path in module_names(root).items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_the_checks_can_fail():
    """The checks read what they claim to: a made-up cycle and a made-up long function are found."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    known, graph = import_graph("roicurate")
    assert len(known) > 50
    assert "roicurate.scale" in graph["roicurate.curation"]                   # a function-level import
    assert "roicurate.training.fit" in graph["roicurate.training.train"]      # a top-level import
    assert "roicurate.cli.common" in graph["roicurate.cli.apply"]
    assert "roicurate.report" in graph["roicurate.api.applying"]              # the package, from a function
    _, plugin_graph = import_graph("roicurate_plugins")
    suite2p = [m for m in plugin_graph if m.startswith("roicurate_plugins.suite2p")]   # modules or a package
    assert any(set(plugin_graph[m]) & set(suite2p) for m in suite2p)          # the Suite2p family's own imports
    code = "def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES
    node = ast.parse(code).body[0]
    assert node.end_lineno - node.lineno + 1 == MAX_FUNCTION_LINES + 1


@pytest.mark.parametrize("root", PACKAGES)
def test_no_import_cycle(root):
    known, graph = import_graph(root)
    assert sum(len(v) for v in graph.values()) > len(known)       # it read edges, not an empty graph
    assert cycles(graph) == []


@pytest.mark.parametrize("root", PACKAGES)
def test_no_function_over_80_lines(root):
    assert long_functions(root) == []
