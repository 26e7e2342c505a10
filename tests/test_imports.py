"""Imports run one way: lake <- packers <- loaders <- training <- entry points, with no circles at all.

An AST check over every module of the four packages (imports inside functions included): no module imports a
package later in the order, except the ``lake`` facade's lazy hooks listed in ``FACADE_HOOKS`` by function;
the module import graph (those hooks left out) has no cycle; and ``import lake`` loads neither torch nor ray.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["lake", "packers", "loaders", "training"]  # each may import only the ones before it (and itself)
ENTRY_POINTS = ("lake.cli", "lake.demo", "lakeview")  # lakeview: the `lake serve` web app
ENTRY = len(ORDER)  # entry points stand on top of everything; nothing imports them

# (module, function qualname) -> packages that function may import lazily although they stand above it
FACADE_HOOKS = {
    ("lake._lake", "Lake.pack"): {"packers"},
    ("lake._lake", "Lake.stream"): {"loaders"},
    ("lake._lake", "Lake.serve"): {"lakeview"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in ORDER:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _layer(module: str) -> int:
    if any(module == e or module.startswith(e + ".") for e in ENTRY_POINTS):
        return ENTRY
    top = module.split(".")[0]
    return ORDER.index(top) if top in ORDER else -1  # -1: third-party / stdlib


def _imports(module: str, path: Path):
    """(imported module, enclosing function qualname or "") for every import statement in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def targets(node):
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(anchor + ([base] if base else []))
        subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
        return subs if len(subs) == len(node.names) else [base, *subs]  # `from pkg import submodule` hits only it

    def walk(node, scope):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                yield from walk(child, f"{scope}.{child.name}" if scope else child.name)
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                for t in targets(child):
                    yield t, scope
            else:
                yield from walk(child, scope)

    yield from walk(tree, "")


def _allowed(module: str, scope: str, target: str) -> bool:
    allowed = FACADE_HOOKS.get((module, scope), set())
    return any(target == a or target.startswith(a + ".") for a in allowed)


def _edges():
    for module, path in MODULES.items():
        for target, scope in _imports(module, path):
            if _layer(target) >= 0 and not _allowed(module, scope, target):
                yield module, target, scope


def test_no_package_imports_one_later_in_the_order():
    bad = [f"{m} ({s or 'module level'}) imports {t}" for m, t, s in _edges() if _layer(t) > _layer(m)]
    assert not bad, "imports against lake <- packers <- loaders <- training <- entry points:\n" + "\n".join(bad)


def test_the_module_import_graph_has_no_circle():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m, t, _ in _edges():
        while t and t not in MODULES:  # `import lake.x.y` of a name, not a module: its module
            t = t.rpartition(".")[0]
        if t and t != m:
            graph[m].add(t)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_facade_hooks_are_real_and_the_only_way_up():
    """Each allowance names a function that exists (a stale entry would silently widen the rule)."""
    tree = ast.parse(MODULES["lake._lake"].read_text())
    lake_cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Lake")
    methods = {f"Lake.{n.name}" for n in lake_cls.body if isinstance(n, ast.FunctionDef)}
    assert {"Lake.pack", "Lake.stream"} <= methods
    ups = {(m, s) for m, t, s in ((m, t, s) for m, p in MODULES.items() for t, s in _imports(m, p))
           if _layer(t) > _layer(m) and _layer(t) >= 0}
    assert ups <= set(FACADE_HOOKS), ups


def test_import_lake_loads_neither_torch_nor_ray():
    code = "import sys, lake; print(sorted(m for m in ('torch', 'ray', 'packers', 'loaders', 'training') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
