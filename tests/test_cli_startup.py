"""``--help`` and ``--version`` answer without importing torch, and print the package's version."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "tensorboard")


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT
    )


def _help_imports(command: str) -> list[str]:
    """The heavy modules imported by ``train COMMAND --help`` (run in a fresh interpreter)."""
    code = (
        "import sys\n"
        "from carla_temporal.cli import main\n"
        f"try:\n    main({command.split() + ['--help']!r}, prog_name='train')\n"
        "except SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
        f"print('IMPORTED', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert "Usage: train" in done.stdout
    return eval(done.stdout.split("IMPORTED", 1)[1])


def test_importing_the_train_command_does_not_import_torch():
    done = _python(
        "import sys, carla_temporal.cli, train.cli\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "command",
    [
        "",
        "run",
        "run pipeline",
        "run forecast",
        "run sim2real",
        "eval pipeline",
        "eval forecast",
        "eval sim2real",
        "predict pipeline",
        "predict forecast",
        "predict sim2real",
        "models",
        "live",
    ],
)
def test_every_train_help_answers_without_torch(command):
    assert _help_imports(command) == []


@pytest.mark.parametrize("module", ["carla_capture", "carla_temporal", "train"])
def test_version_prints_the_installed_package_version(module):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", module, "--version"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == version("carla-temporal")
    assert "torch" not in done.stderr
