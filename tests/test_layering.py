"""Imports flow one way (ARCHITECTURE.md): the bottom layer (spec, tasks, data, checkpoint,
metrics), the models, the training loop, the planner, analysis, the tools on top of them
(bench, status, workflow glue), and the CLI. Every import of an fpt module counts, a lazy
one inside a function too: a cycle hidden in a function is still a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "fpt"

# Module name prefix -> layer; the longest matching prefix decides. A module may import
# only from its own layer or below.
LAYERS = {
    "fpt": 0,  # the package's __init__ (version only)
    "fpt.spec": 0,
    "fpt.data": 0,
    "fpt.tasks": 0,
    "fpt.checkpoint": 0,
    "fpt.metrics": 0,
    "fpt.files": 0,
    "fpt.precision": 0,
    "fpt.early_stop": 0,
    "fpt.protocol": 0,
    "fpt.schema": 0,
    "fpt.runlock": 0,
    "fpt.attempt_log": 0,
    "fpt.rng": 0,
    "fpt.gpu_lease": 0,
    "fpt.tracking": 0,
    "fpt.models": 1,
    "fpt.train": 2,
    "fpt.features": 2,
    "fpt.fused": 2,
    "fpt.packs": 2,
    "fpt.grid": 3,
    "fpt.analysis": 4,
    "fpt.bench": 5,
    "fpt.status": 5,
    "fpt.workflow_support": 5,
    "fpt.plan": 5,
    "fpt.cli_args": 5,
    "fpt.cli": 6,
    "fpt.__main__": 6,
}
NAMES = {0: "bottom", 1: "models", 2: "loop", 3: "planner", 4: "analysis", 5: "tools", 6: "CLI"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(name: str) -> str:
    """The fpt module an imported name lives in: `fpt.models.build_for_spec` -> fpt.models."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports_of(name: str, source: str | None = None) -> set[str]:
    """The fpt modules `name` imports (its file, or `source` as if it were that file)."""
    tree = ast.parse(MODULES[name].read_text() if source is None else source)
    base = name if _is_package(name) else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {_resolve(a.name) for a in node.names if a.name.split(".")[0] == "fpt"}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:  # relative import
                anchor = base.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                mod = ".".join(anchor + ([mod] if mod else []))
            if mod.split(".")[0] != "fpt":
                continue
            for a in node.names:  # `from fpt import checkpoint` imports a module
                out.add(_resolve(f"{mod}.{a.name}"))
    # Importing fpt.tasks.listops_gen runs fpt/tasks/__init__.py first: the packages above an
    # imported module are imported too (except those above the importer, already loaded).
    for m in list(out):
        parts = m.split(".")
        for i in range(2, len(parts)):
            parent = ".".join(parts[:i])
            if not (name == parent or name.startswith(parent + ".")):
                out.add(parent)
    out.discard(name)
    return out


def layer(name: str) -> int:
    # "fpt" itself matches only the package's __init__, so a new top-level module has no layer
    matches = [p for p in LAYERS if name == p or (p != "fpt" and name.startswith(p + "."))]
    best = max(matches, key=len, default=None)
    if best is None:
        raise AssertionError(f"{name} has no layer: add it to LAYERS (and to ARCHITECTURE.md)")
    return LAYERS[best]


GRAPH = {name: imports_of(name) for name in MODULES}


def test_every_module_has_a_layer():
    for name in MODULES:
        layer(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_flow_down(name):
    up = sorted(m for m in GRAPH[name] if layer(m) > layer(name))
    assert not up, f"{name} ({NAMES[layer(name)]}) imports from layers above it: " + ", ".join(
        f"{m} ({NAMES[layer(m)]})" for m in up
    )


def test_the_planner_and_the_loop_never_import_analysis_or_the_cli():
    for name in MODULES:
        if layer(name) in (LAYERS["fpt.train"], LAYERS["fpt.grid"]):
            bad = [m for m in GRAPH[name] if layer(m) >= LAYERS["fpt.analysis"]]
            assert not bad, f"{name} imports {bad}"


def test_no_import_cycle():
    """Depth-first search for a back edge; the message shows the cycle."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(GRAPH[n]):
            if state.get(m) == 1:
                cycle = stack[stack.index(m) :] + [m]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(GRAPH):
        if n not in state:
            visit(n)


def test_the_checker_sees_lazy_relative_and_package_imports():
    """The checker itself can fail: imports inside functions, relative imports and names
    imported from a package's __init__ are all found."""
    src = (
        "import torch\n"
        "from . import precision\n"
        "from .models import build_for_spec\n"
        "def f():\n"
        "    from fpt.cli import main\n"
        "    import fpt.analysis.stats\n"
    )
    assert imports_of("fpt.train", src) == {
        "fpt.precision",
        "fpt.models",
        "fpt.cli",
        "fpt.analysis.stats",
        "fpt.analysis",  # the package above it runs first
    }
