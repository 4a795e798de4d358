"""The house: which top-level package may import which (every import, lazy ones included).

clipcore (format and shared modules) is the ground floor; carla_capture writes through it; dataset
reads through it; models stand on it alone; train reads through dataset and builds models; the
roof, carla_temporal (``train live``: a capture backend driving a trained model), may use them all.
"""

from __future__ import annotations

import ast
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
