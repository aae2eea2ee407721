"""The layers point one way: {cli, api} -> stages -> {remote, condensation, methods, nn, data} -> store.

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
LEAVES = {"errors", "progress", "files", "tensors", "limits", "__init__"}
ALLOWED = {
    "cli": {"api", "stages", "executors", "remote", "condensation", "methods", "nn", "data", "store"},
    "api": {"stages", "executors", "remote", "condensation", "methods", "nn", "data", "store"},
    "stages": {"executors", "remote", "condensation", "methods", "nn", "data", "store"},
    "executors": {"nn"},  # workers set their threads and malloc with nn.device; no store (one writer)
    "condensation": {"nn", "data", "store"},
    "remote": {"store"},
    "methods": {"store"},
    "nn": {"store"},
    "data": {"store"},
    "store": set(),
    "tensors": {"store"},
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
