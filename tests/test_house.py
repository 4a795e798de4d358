"""The house: which top-level package may import which (every import, lazy ones included).

clipcore (format and shared modules) is the ground floor; carla_capture writes through it; dataset
reads through it; models stand on it alone; train reads through dataset and builds models; the
roof, carla_temporal (``train live``: a capture backend driving a trained model), may use them all.
Inside train, the engine and every shared module stand below the task packages (one per task,
no flat task-prefixed files), and no two modules of the project import each other.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("clipcore", "carla_capture", "dataset", "models", "train", "carla_temporal")
#: package -> the project packages it may import
ALLOWED = {
    "clipcore": set(),
    "carla_capture": {"clipcore"},
    "dataset": {"clipcore"},
    "models": {"clipcore"},
    "train": {"clipcore", "dataset", "models"},
    "carla_temporal": {"clipcore", "carla_capture", "dataset", "models", "train"},
}


def imported_packages(path: Path) -> dict[str, int]:
    """Project packages ``path`` imports (at any depth of the module) -> first line."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES:
                found.setdefault(top, node.lineno)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_the_floors_below_it(package):
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {other}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for other, line in imported_packages(path).items()
        if other != package and other not in ALLOWED[package]
    ]
    assert not wrong, "\n".join(wrong)


def test_no_test_module_imports_another():
    """Shared helpers live in conftest.py (fixtures) and carla_double.py, never in a test module."""
    wrong = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            if any(part.startswith("test_") for n in names for part in n.split(".")):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not wrong, wrong


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imported_modules(path: Path) -> set[str]:
    """Project modules ``path`` imports, at any depth (``from a import b``: ``a.b`` if that is a
    module, else ``a``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in MODULES}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in MODULES else node.module)
    return found & set(MODULES)


def test_no_two_modules_import_each_other():
    """No import cycle, however long, lazy imports included (models/common.py and models/unet.py
    once imported each other)."""
    graph = {m: imported_modules(p) - {m} for m, p in MODULES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


TASK_PACKAGES = ("pipeline", "forecast", "sim2real")


def test_train_is_one_engine_and_one_package_per_task():
    """No flat task-prefixed file (``train/forecast_eval.py``): each task is a package with a
    ``task.py`` that the registry lists."""
    from train.tasks import TASKS

    assert set(TASKS) == set(TASK_PACKAGES)
    flat = [
        p.name
        for p in (ROOT / "train").glob("*.py")
        if any(p.stem.startswith(task) for task in TASK_PACKAGES)
    ]
    assert not flat, flat
    for task in TASK_PACKAGES:
        assert (ROOT / "train" / task / "task.py").exists(), task


def test_the_engine_and_the_shared_modules_import_no_task():
    """The engine (and config, run folder, metrics, ...) know no task: tasks stand on them. Only
    the registry and the command line list the tasks."""
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / "train").glob("*.py"))
        if path.name not in ("tasks.py", "cli.py")
        for name in imported_modules(path)
        if name.split(".")[:2] in (["train", task] for task in TASK_PACKAGES)
    ]
    assert not wrong, wrong
