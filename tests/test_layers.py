"""The package's import graph: no cycles, and every import runs down the layers (docs/design.md).

Walks the source with ``ast`` (nothing is imported). A module's layer is the first entry of
``LAYERS`` that prefixes its name; a module may import its own layer or any lower one. Imports
inside function bodies count like any other, and are allowed only where ``DEFERRED`` says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "learngene"

# Lowest first. Modules of one row may import each other (no cycles); a row imports only rows above it.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "_io", "version", "_cli_args"),
    ("arch",),
    ("stack", "models"),
    ("data",),
    ("train",),
    ("clip",),
    ("artifact",),
    ("registry",),
    ("methods",),
    ("api",),
    ("recipes",),
    ("bench", "demo"),
    ("cli", "__init__", "__main__"),
]

# (importing module, imported module) pairs allowed inside a function body, with the reason.
DEFERRED = {
    ("registry", "methods"): "method registration: importing learngene.methods registers the built-in methods",
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] or ["__init__"]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported learngene module, inside a function?, line) for every import of the package."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" and name != "__init__" else name.split(".")[:-1]
    tree = ast.parse(path.read_text(), str(path))
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[:len(package) - (child.level - 1)] if child.level > 1 else package
                    target = ".".join(base + ([child.module] if child.module else []))
                elif (child.module or "").startswith("learngene"):
                    target = child.module.removeprefix("learngene").lstrip(".")
                else:
                    target = None
                if target is not None:
                    for alias in child.names:  # `from . import methods` imports a module
                        sub = f"{target}.{alias.name}" if target else alias.name
                        found.append((sub if _exists(sub) else target or "__init__", inside, child.lineno))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("learngene."):
                        found.append((alias.name.removeprefix("learngene."), inside, child.lineno))
            visit(child, inside)

    visit(tree, False)
    return found


def _exists(module: str) -> bool:
    base = PACKAGE.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _layer(module: str) -> int:
    for rank, row in enumerate(LAYERS):
        if any(module == top or module.startswith(top + ".") for top in row):
            return rank
    raise AssertionError(f"learngene.{module} is in no layer: add it to LAYERS in {__file__}")


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
EDGES = {name: _imports(path) for name, path in MODULES.items()}


def _top(module: str) -> str:
    return module.split(".")[0]


def test_every_module_has_a_layer():
    for name in MODULES:
        _layer(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_down_the_layers(name):
    wrong = []
    for target, in_function, line in EDGES[name]:
        if in_function and (_top(name), _top(target)) in DEFERRED:
            continue
        if _layer(target) > _layer(name):
            wrong.append(f"line {line} imports learngene.{target}, a higher layer (see LAYERS and docs/design.md)")
        elif in_function:
            wrong.append(f"line {line} imports learngene.{target} inside a function: import it at the top "
                         "(only optional extras and method registration are deferred)")
    assert not wrong, f"learngene.{name}: " + "; ".join(wrong)


def test_no_import_cycles():
    graph = {name: {t for t, in_function, _ in EDGES[name] if t in MODULES and not (
        in_function and (_top(name), _top(t)) in DEFERRED)} for name in MODULES}
    # a package's __init__ is imported with any of its modules: an edge to a submodule implies its parents
    for name in graph:
        graph[name] |= {".".join(t.split(".")[:i]) for t in set(graph[name]) for i in range(1, t.count(".") + 1)
                        if ".".join(t.split(".")[:i]) in MODULES and not name.startswith(".".join(t.split(".")[:i]))}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(f"learngene.{m}" for m in cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
