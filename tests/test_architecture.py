"""The layering rules, read from the source: the library imports no executor or front end, inference does not reach
into training, and no package has an import cycle among its modules (lazy imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("smartmask", "flows", "tasks", "dashboards")


def _modules() -> dict[str, Path]:
    out = {}
    for top in PACKAGES:
        for p in (REPO / top).rglob("*.py"):
            parts = list(p.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every module name imported anywhere in the file (top level or inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:  # `from pkg import module` depends on the module; `from mod import name` on mod
                sub = f"{node.module}.{a.name}"
                names.add(sub if sub in MODULES else node.module)
    return names


def _internal(name: str) -> str | None:
    """The project module an imported name refers to (the longest existing prefix), or None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in MODULES:
            return cand
    return None


def test_the_walk_sees_the_library():
    assert {"smartmask.inference.pipeline", "smartmask.training.loop", "flows.cli", "tasks.train"} <= set(MODULES)
    assert "smartmask.inference.pipeline" in {_internal(n) for n in _imports(MODULES["flows.cli_inference"])}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.split(".")[0] == "smartmask"))
def test_library_imports_no_executor_or_front_end(module):
    forbidden = {"prefect", "ray", "typer", "flows", "tasks"}
    bad = sorted(n for n in _imports(MODULES[module]) if n.split(".")[0] in forbidden)
    assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.split(".")[0] == "dashboards"))
def test_dashboards_import_no_executor(module):
    """The dashboard generator reads the lake (DuckDB) and the library; flows and tasks call it, not the reverse."""
    forbidden = {"prefect", "ray", "flows", "tasks"}
    bad = sorted(n for n in _imports(MODULES[module]) if n.split(".")[0] in forbidden)
    assert not bad, f"{module} imports {bad}"


def test_inference_does_not_import_training():
    bad = {m: sorted(n for n in _imports(p) if n.startswith("smartmask.training"))
           for m, p in MODULES.items() if m.startswith("smartmask.inference")}
    assert not {m: v for m, v in bad.items() if v}


def _package(module: str) -> str:
    p = MODULES[module]
    return ".".join(p.relative_to(REPO).parent.parts)


def test_no_import_cycle_inside_a_package():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m, p in MODULES.items():
        for n in _imports(p):
            t = _internal(n)
            if t and t != m and _package(t) == _package(m):
                graph[m].add(t)
    cycles = []
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles
