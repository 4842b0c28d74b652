"""The package's import graph: one way, no circles (imports inside functions included), and the core never imports
the benchmark or the command line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sinco"
#: Packages the codecs and compression must not import: they sit above the core.
UPPER = ("sinco.benchmark", "sinco.cli")
CORE = ("sinco.codec", "sinco.compression", "sinco.classical", "sinco.regularizer", "sinco.seg", "sinco.data", "sinco.metrics",
        "sinco.utils", "sinco.errors", "sinco.version")  # fmt: skip


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Every sinco module ``path`` imports, wherever the import statement is (module level or inside a function).

    ``from package import submodule`` counts as an import of the submodule; ``from module import name`` of the module.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("sinco"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("sinco"):
                continue
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle_even_through_imports_inside_functions():
    graph = _graph()
    assert len(graph) > 40  # the walk found the package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_a_planted_cycle_is_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("core", CORE)
def test_the_core_never_imports_the_benchmark_or_the_cli(core):
    graph = _graph()
    offenders = {(m, i) for m, imported in graph.items() if m == core or m.startswith(core + ".") for i in imported
                 if i.startswith(UPPER)}  # fmt: skip
    assert not offenders


def test_every_family_package_has_the_same_rooms():
    """A reader who knows one family package knows the others: spec, config, networks, training, payload, family."""
    rooms = {"spec", "config", "networks", "training", "payload", "family"}
    for family in ("inr", "grid", "grid3d"):
        present = {p.stem for p in (PACKAGE / "codec" / family).glob("*.py")}
        assert rooms <= present, (family, rooms - present)
