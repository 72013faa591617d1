"""Import layering of the model side: the model stages, the cost leaf and the decoders never
import the glue above them (training, the Lightning module, evaluation, export, the cost
command), and the package has no import circle among module-level imports.

Checked twice: statically (every ``import`` statement, also the ones inside functions) and by
importing every model/decoding module in one fresh interpreter and looking at ``sys.modules``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "emg2qwerty_ssm"

#: modules above the model side: a stage, the cost leaf or a decoder importing one is a defect
GLUE = (
    "emg2qwerty_ssm.cost",
    "emg2qwerty_ssm.train",
    "emg2qwerty_ssm.lightning_module",
    "emg2qwerty_ssm.scoring",
    "emg2qwerty_ssm.export",
    "emg2qwerty_ssm.stream",
    "emg2qwerty_ssm.datamodule",
    "emg2qwerty_ssm.validation",
)
#: the leaves (floors) whose imports must stay below them
LEAF_PACKAGES = ("models", "decoding")
#: entry points inside the leaves that compose configs; they may import the model builder
#: but still nothing of GLUE
ENTRY_POINTS = ("emg2qwerty_ssm.models.card", "emg2qwerty_ssm.models.summary")


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """Project modules imported by ``path`` (``from a import b`` counts ``a`` and ``a.b``).

    ``top_level_only=False`` also counts imports inside functions (lazy imports are still
    dependencies); imports under ``if TYPE_CHECKING:`` are skipped (they never run).
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()

    def walk(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                walk(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            nested = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            if nested and top_level_only:
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    walk(
                        [c for c in children if isinstance(c, ast.stmt | ast.excepthandler)],
                    )

    walk(tree.body)
    return {m for m in found if m.startswith("emg2qwerty_ssm")}


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_glue(module: str) -> bool:
    return any(module == g or module.startswith(g + ".") for g in GLUE)


@pytest.mark.parametrize("floor", LEAF_PACKAGES)
def test_leaves_never_import_the_glue(floor: str) -> None:
    offenders = {
        name: sorted(m for m in _imports(path, top_level_only=False) if _is_glue(m))
        for name, path in _modules().items()
        if name.startswith(f"emg2qwerty_ssm.{floor}")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_cost_leaf_imports_nothing_of_the_project() -> None:
    path = PACKAGE / "models" / "cost.py"
    assert _imports(path, top_level_only=False) == set()


def test_no_import_circle_on_the_model_side() -> None:
    """No circle through the model side, counting lazy (in-function) imports: a package
    re-exporting its own submodule is not a circle."""
    modules = _modules()
    graph = {
        name: {
            m
            for m in _imports(path, top_level_only=False)
            if m in modules and m != name and not _related(m, name)
        }
        for name, path in modules.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    mine = [c for c in cycles if any(_is_model_side(m) for m in c)]
    assert mine == []


def _related(a: str, b: str) -> bool:
    """One is a package containing the other."""
    return a.startswith(b + ".") or b.startswith(a + ".")


def _is_model_side(module: str) -> bool:
    return module.startswith(
        ("emg2qwerty_ssm.models", "emg2qwerty_ssm.decoding", "emg2qwerty_ssm.cost")
    ) or module in ("emg2qwerty_ssm.scoring", "emg2qwerty_ssm.metrics")


def test_importing_every_model_module_loads_no_glue() -> None:
    names = [
        n
        for n in _modules()
        if n.startswith(("emg2qwerty_ssm.models", "emg2qwerty_ssm.decoding"))
        and n not in ENTRY_POINTS
    ]
    code = (
        "import importlib, sys\n"
        f"for n in {names!r}: importlib.import_module(n)\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('emg2qwerty_ssm'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    ).stdout.split()
    assert [m for m in out if _is_glue(m)] == []
