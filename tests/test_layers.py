"""The package's layers, read off the folder names: ``utils`` < ``data`` < ``models`` <
``attacks``, ``defenses`` < ``experiment``. A module may import its own package and the layers
below its own, never a layer above nor its neighbour in the same layer (attacks never import
defenses: an attack that runs a defense gets it through its threat context). Every import
statement counts — module level or inside a function — as does ``importlib.import_module`` /
``__import__`` of a literal name. The import graph has no cycle, between packages or between
modules.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

LAYERS = (("utils",), ("data",), ("models",), ("attacks", "defenses"), ("experiment",))
RANK = {package: n for n, layer in enumerate(LAYERS) for package in layer}
# Entry points and test code sit above every layer: no package module may import them.
ABOVE_ALL = ("main", "benchmarks", "tests")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str, root: Path) -> bool:
    base = root.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(source: str, module: str, is_package: bool, root: Path) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import in ``source`` (nested ones included).
    ``from X import y`` names module ``X.y`` when that is a module under ``root``, else ``X``;
    relative imports are resolved against ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if is_module(sub, root) else base, node.lineno))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                found.append((node.args[0].value, node.lineno))
    return found


def import_graph(root: Path) -> dict[str, list[tuple[str, int, str]]]:
    """Module → ``(imported module, line, file)`` for every ``.py`` of the layered packages."""
    graph = {}
    for package in RANK:
        for path in sorted((root / package).rglob("*.py")):
            name = module_name(path, root)
            source = path.read_text(encoding="utf-8")
            rel = str(path.relative_to(root))
            graph[name] = [(target, line, rel) for target, line in
                           imports_of(source, name, path.name == "__init__.py", root)]
    return graph


def layer_violations(graph: dict) -> list[str]:
    bad = []
    for module, edges in graph.items():
        own = module.split(".")[0]
        for target, line, file in edges:
            top = target.split(".")[0]
            if top in ABOVE_ALL or (top in RANK and top != own and RANK[top] >= RANK[own]):
                bad.append(f"{file}:{line} imports {target} ({own} may not import {top})")
    return sorted(set(bad))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (or with a self-loop), each
    sorted: Tarjan's algorithm, iterative."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, ()):
                    out.append(sorted(component))
    return out


def package_edges(graph: dict) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, targets in graph.items():
        own = module.split(".")[0]
        edges.setdefault(own, set()).update(
            t.split(".")[0] for t, _, _ in targets if t.split(".")[0] in RANK
            and t.split(".")[0] != own)
    return edges


def module_edges(graph: dict) -> dict[str, set[str]]:
    return {module: {t for t, _, _ in targets if t in graph and t != module}
            for module, targets in graph.items()}


@pytest.fixture(scope="module")
def graph():
    return import_graph(REPO)


def test_no_package_imports_a_layer_above_or_beside_its_own(graph):
    bad = layer_violations(graph)
    assert not bad, "layer violations:\n" + "\n".join(bad)


def test_no_import_cycle_between_packages(graph):
    found = cycles(package_edges(graph))
    assert not found, f"package import cycles: {found}"


def test_no_import_cycle_between_modules(graph):
    found = cycles(module_edges(graph))
    assert not found, f"module import cycles: {found}"


def test_the_check_sees_nested_relative_and_dynamic_imports(tmp_path):
    """The checker itself: an import hidden in a function, a relative import reaching into a
    registry module, and importlib all count; an allowed import does not."""
    for package in RANK:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "defenses" / "base.py").write_text("")
    (tmp_path / "utils" / "config.py").write_text(
        "def load():\n    from attacks import ATTACKS\n    return ATTACKS\n")
    (tmp_path / "attacks" / "adaptive.py").write_text(
        "import importlib\nfrom utils.config import load\n\n"
        "def run():\n    return importlib.import_module('defenses.base')\n")
    (tmp_path / "attacks" / "__init__.py").write_text("from .adaptive import run\n")
    (tmp_path / "data" / "loaders.py").write_text("from ..models import x\n")
    found = layer_violations(import_graph(tmp_path))
    assert found == ["attacks/adaptive.py:5 imports defenses.base (attacks may not import "
                     "defenses)",
                     "data/loaders.py:1 imports models (data may not import models)",
                     "utils/config.py:2 imports attacks (utils may not import attacks)"]
    assert cycles(package_edges(import_graph(tmp_path))) == [["attacks", "utils"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]] and cycles({"a": {"b"}, "b": set()}) == []
