"""The three layers import one way (raynas -> trials -> search_spaces) and no module imports itself back.

Imports are read from the source (``ast``), lazy ones inside functions included. Imports under
``if TYPE_CHECKING:`` count for the direction of the layers but not as cycles: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"search_spaces": 0, "trials": 1, "raynas": 2}


def modules() -> dict[str, Path]:
    out = {}
    for pkg in LAYERS:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported project module, type-checking only) for every import statement in ``path``."""
    tree = ast.parse(path.read_text())
    typing_only = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: up ``level - 1`` packages from this one
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.append((t, node.lineno in typing_only))
    return found


def graph() -> dict[str, list[tuple[str, bool]]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_no_layer_imports_a_layer_above_it():
    upward = [(a, b) for a, deps in graph().items() for b, _ in deps
              if LAYERS[b.split(".")[0]] > LAYERS[a.split(".")[0]]]
    assert not upward, f"upward imports: {upward}"


def test_no_import_cycles():
    runtime = {a: sorted({b for b, typing_only in deps if not typing_only}) for a, deps in graph().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in runtime[node]:
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(runtime):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_graph_sees_real_imports():
    """The walker is not vacuous: it finds the edges we know exist."""
    g = {a: {b for b, _ in deps} for a, deps in graph().items()}
    assert "trials.bilevel" in g["raynas.trainable"] or "trials.epochs" in g["raynas.trainable"]
    assert "search_spaces.fast" in g["trials.bilevel"]
    assert "trials.registry" in g["trials.pcdarts"]
