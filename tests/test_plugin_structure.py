"""The layout rules of the plugins and the Source contract, read from the source code with ``ast``: no import cycle
among the plugin modules, the core never imports a plugin, no ``hasattr`` probe of a Source method outside
``Source`` (every method a caller may use is declared there), and no function over 80 lines or module over 400
lines in roicurate_plugins/."""
import ast
from pathlib import Path

from roicurate.sources import Source

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "roicurate_plugins"


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(*folders):
    """{dotted name: (path, ast tree)} of every .py file under ``folders`` (relative to the repository)."""
    return {module_name(p): (p, ast.parse(p.read_text(), str(p)))
            for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))}


def imported(name, path, tree, known):
    """The modules of ``known`` that module ``name`` imports anywhere in its code (lazy imports included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {m for m in out if m in known and m != name}


def find_cycle(graph):
    """One import cycle [a, b, ..., a] of ``graph`` ({module: imported modules}), or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = "done"
        stack.pop()
        return None
    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle_among_the_plugin_modules():
    mods = modules("roicurate_plugins")
    graph = {name: imported(name, path, tree, mods) for name, (path, tree) in mods.items()}
    assert graph["roicurate_plugins.nwb.write"] == {"roicurate_plugins.nwb.shared"}   # the graph is really read
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_core_never_imports_a_plugin():
    plugin_modules = set(modules("roicurate_plugins"))
    found = []
    for name, (path, tree) in modules("roicurate").items():
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names if n.split(".")[0] == "roicurate_plugins"]
    assert plugin_modules and not found, found


def source_methods():
    return {name for name, value in vars(Source).items() if callable(value) and not name.startswith("__")}


def probes(tree, names):
    """(line, call) of every ``hasattr(x, NAME)`` / ``getattr(x, NAME, default)`` whose NAME is in ``names``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr") \
                and len(node.args) >= 2 + (node.func.id == "getattr") and isinstance(node.args[1], ast.Constant) \
                and node.args[1].value in names:
            out.append((node.lineno, ast.unparse(node)))
    return out


def test_no_hasattr_probe_of_a_source_method_outside_source():
    names = source_methods()
    assert {"backup_path", "find", "finish_batch", "check_writable", "write", "revert"} <= names
    found = []
    for folder in ("roicurate", "roicurate_plugins", "benchmarks", "examples"):
        for name, (path, tree) in modules(folder).items():
            if name != "roicurate.sources":
                found += [f"{path.relative_to(ROOT)}:{line}: {call}" for line, call in probes(tree, names)]
    assert not found, found


def test_the_probe_check_sees_a_probe():
    tree = ast.parse("b = src.backup_path(u) if hasattr(src, 'backup_path') else None\nf = getattr(s, 'find', None)")
    assert [call for _, call in sorted(probes(tree, source_methods()))] == ["hasattr(src, 'backup_path')",
                                                                   "getattr(s, 'find', None)"]


def test_every_source_method_is_documented_for_plugin_authors():
    undocumented = [name for name in source_methods() if not (getattr(Source, name).__doc__ or "").strip()]
    assert not undocumented, undocumented


def test_built_in_sources_override_only_declared_methods():
    from roicurate.plugins import sources
    declared = source_methods()
    for src in sources().values():
        own = {n for k in type(src).__mro__[:-1] if k is not Source and issubclass(k, Source)
               for n, v in vars(k).items() if callable(v) and not n.startswith("_")}
        extra = own - declared
        assert not extra, f"{src.name}: methods callers cannot know of: {sorted(extra)}"


def test_functions_and_modules_stay_small():
    too_long = []
    for name, (path, tree) in modules("roicurate_plugins").items():
        lines = len(path.read_text().splitlines())
        if lines > 400:
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines")
        too_long += [f"{path.relative_to(ROOT)}:{f.lineno} {f.name}: {f.end_lineno - f.lineno + 1} lines"
                     for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                     and f.end_lineno - f.lineno + 1 > 80]
    assert len(modules("roicurate_plugins")) > 20 and not too_long, too_long
