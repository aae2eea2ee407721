"""The layers point one way: {cli, api} -> stages -> {remote, condensation, methods, nn, data} -> store,
and no module of yoco_cli imports itself through others (no import circle, lazy imports included).

Every import of a yoco_cli module (lazy ones inside functions included) is read from the AST
and checked against the allowed edges of ARCHITECTURE.md. A new edge is a design decision:
make it in ARCHITECTURE.md and here together, or move the code to where it belongs.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "yoco_cli"
# shared leaves any layer may use (they import nothing above `store`)
LEAVES = {"errors", "progress", "files", "tensors", "limits", "_version", "__init__"}
ALLOWED = {
    "cli": {"api", "stages", "executors", "remote", "condensation", "methods", "nn", "data", "store"},
    "api": {"stages", "executors", "remote", "condensation", "methods", "nn", "data", "store"},
    "stages": {"executors", "remote", "condensation", "methods", "nn", "data", "store"},
    "executors": {"nn"},  # workers set their threads and malloc with nn.device; no store (one writer)
    "condensation": {"nn", "data"},
    "remote": set(),
    "methods": set(),
    "nn": set(),
    "data": set(),
    "store": set(),
    "tensors": {"store"},  # it reads the store's verified Blobs; nothing but store and the leaves
    "__main__": {"cli"},
    "__init__": {"api"},  # the package's public functions (api.py imports the stages lazily)
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 or parts[1] == "__version__" else parts[1]


def _imports(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module) of every yoco_cli import in one file, lazy imports included."""
    rel = path.relative_to(package.parent).with_suffix("")
    here = list(rel.parts)
    base = here[:-1]  # the package a relative import starts from (the same for __init__.py)
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            start = base[:len(base) - (node.level - 1)]
            if node.module:
                out.append((node.lineno, ".".join(start + [node.module])))
            else:
                out += [(node.lineno, ".".join(start + [a.name])) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("yoco_cli"):
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("yoco_cli")]
    return out


def violations(package: Path = PACKAGE) -> list[str]:
    bad = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        src = _layer(".".join(rel.parts))
        for line, target in _imports(path, package):
            dst = _layer(target)
            if dst == src or dst in LEAVES:
                continue
            if dst not in ALLOWED.get(src, set()):
                bad.append(f"{rel}.py:{line} ({src}) imports {target} ({dst})")
    return bad


def test_imports_point_one_way():
    assert violations() == []


@pytest.mark.parametrize("layer,target", [("stages", "cli"), ("remote", "cli"), ("methods", "cli"), ("nn", "cli"),
                                          ("data", "cli"), ("store", "cli"), ("data", "remote"),
                                          ("data", "stages"), ("methods", "nn"), ("store", "data"),
                                          ("stages", "api"), ("api", "cli")])
def test_the_check_catches_an_upward_import(tmp_path, layer, target):
    pkg = tmp_path / "yoco_cli"
    (pkg / layer).mkdir(parents=True)
    (pkg / layer / "mod.py").write_text(f"def f():\n    from ..{target} import something  # lazy\n")
    assert violations(pkg) == [f"yoco_cli/{layer}/mod.py:2 ({layer}) imports yoco_cli.{target} ({target})"]


def test_importing_the_package_does_not_import_torch():
    code = "import yoco_cli, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- import circles -------------------------------------------------------------------------------
def _module_names(package: Path) -> dict[str, Path]:
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the yoco_cli modules it imports; `from pkg import name` counts as importing pkg.name
    when that is a module, else pkg itself (whose __init__ runs)."""
    names = _module_names(package)
    graph: dict[str, set[str]] = {m: set() for m in names}
    for mod, path in names.items():
        for _line, target in _imports(path, package):
            while target not in names and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in names and target != mod:
                graph[mod].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_the_circle_check_catches_a_lazy_circle_through_three_modules(tmp_path):
    pkg = tmp_path / "yoco_cli"
    (pkg / "stages").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "stages" / "__init__.py").write_text("")
    (pkg / "stages" / "a.py").write_text("from .b import f\n")
    (pkg / "stages" / "b.py").write_text("def f():\n    from . import c  # lazy\n")
    (pkg / "stages" / "c.py").write_text("def g():\n    from .a import f\n")
    (pkg / "stages" / "d.py").write_text("from .a import f\n")  # imports the circle, is not in it
    assert circles(import_graph(pkg)) == [["yoco_cli.stages.a", "yoco_cli.stages.b", "yoco_cli.stages.c"]]
