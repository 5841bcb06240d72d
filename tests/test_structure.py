"""Package layout rules, checked on the source (no imports run).

A method folder (``learngene/methods/<name>/``) imports only shared modules
(``methods/_*.py``, ``learngene.stack``, ``learngene.train``, ``learngene.data``...), never a
sibling method: what two methods share lives in a shared module, and the shared modules
import no method.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

METHODS = Path(__file__).resolve().parents[1] / "src" / "learngene" / "methods"
# Shared packages are underscored like shared modules (methods/_stitching/).
METHOD_FOLDERS = sorted(p.name for p in METHODS.iterdir()
                        if p.is_dir() and (p / "__init__.py").is_file() and not p.name.startswith("_"))


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, a module of ``package``;
    ``from X import a`` gives X and X.a (``from .. import peg`` imports a module)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def method_of(module: str) -> str | None:
    """The method folder ``module`` lies in (``learngene.methods.peg.maps`` -> ``peg``), else None."""
    parts = module.split(".")
    if parts[:2] == ["learngene", "methods"] and len(parts) > 2 and parts[2] in METHOD_FOLDERS:
        return parts[2]
    return None


def test_the_walk_sees_every_method_folder_and_every_kind_of_import():
    assert {"peg", "tleg", "cluster_learngene", "weight_selection", "auto_learngene"} <= set(METHOD_FOLDERS)
    source = ("from ..peg.maps import along\nfrom .. import tleg\nfrom ... import stack\n"
              "import learngene.methods.mimetic.method\nfrom .._common import pack\nfrom .config import X\n")
    methods = {method_of(m) for _, m in imported_modules(source, "learngene.methods.cluster_learngene")}
    assert methods == {"peg", "tleg", "mimetic", "cluster_learngene", None}


@pytest.mark.parametrize("folder", METHOD_FOLDERS)
def test_a_method_folder_imports_no_sibling_method(folder):
    crossings = set()
    for path in sorted((METHODS / folder).rglob("*.py")):
        package = ".".join(("learngene",) + path.relative_to(METHODS.parent).parts[:-1])
        for line, module in imported_modules(path.read_text(), package):
            other = method_of(module)
            if other is not None and other != folder:
                crossings.add(f"{path.relative_to(METHODS)}:{line} imports from {other}")
    assert not crossings, ("a method imports a sibling method; move what they share to a shared module "
                           "(methods/_*.py, learngene.stack, learngene.data...):\n  " + "\n  ".join(sorted(crossings)))


@pytest.mark.parametrize("path", sorted(p for p in METHODS.glob("_*.py") if p.name != "__init__.py"),
                         ids=lambda p: p.name)
def test_a_shared_method_module_imports_no_method(path):
    """``methods/_*.py`` serve every method, so they depend on none."""
    crossings = {f"{path.name}:{line} imports from {method_of(module)}"
                 for line, module in imported_modules(path.read_text(), "learngene.methods") if method_of(module)}
    assert not crossings, "\n".join(sorted(crossings))
