"""What users install: a wheel (not an editable checkout) in a fresh virtual environment.

The wheel is built from a copy of the source tree and installed with ``--no-deps`` into a new
venv whose dependencies come from the test environment's site-packages (a ``.pth`` line, so
nothing is downloaded); the editable install of this checkout is not visible there.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SKIP = shutil.ignore_patterns(
    ".venv",
    ".git",
    "build",
    "data",
    "runs",
    "*.egg-info",
    "__pycache__",
    "tests",
    "benchmarks",
    ".pytest_cache",
)


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A new venv with the project's wheel installed (not editable)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=_SKIP)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp / "dist").glob("carla_temporal-*.whl"))
    env = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    site = next((env / "lib").glob("python3*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(env / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return env


def _run(env: Path, *args: str, cwd: Path, path: Path | None = None) -> subprocess.CompletedProcess:
    clean = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    if path is not None:
        clean["PYTHONPATH"] = str(path)
    return subprocess.run(
        [str(env / "bin" / args[0]), *args[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean,
    )


def test_wheel_holds_every_package_and_records(fresh_venv, tmp_path, tiny_towns):
    where = _run(
        fresh_venv,
        "python",
        "-c",
        "import carla_capture, carla_capture.backends.carla as b, dataset.label_maps, town_configs;"
        "print(carla_capture.__file__); print(b.__file__)",
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    assert all(str(fresh_venv) in line for line in where.stdout.split()), (
        where.stdout
    )  # not the checkout
    result = _run(
        fresh_venv,
        "capture",
        "record",
        "--backend",
        "synthetic",
        "--town",
        "Town01",
        "--clips",
        "1",
        "--frames",
        "3",
        "--out",
        str(tmp_path / "data"),
        "--town-dir",
        str(tiny_towns),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "data" / "Town01").glob("Town01-*.h5"))


def test_wheel_train_command_has_every_command_and_live(fresh_venv, tmp_path):
    """The ``train`` script of the wheel is the roof's group: training commands and ``live``."""
    result = _run(fresh_venv, "train", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    commands = [
        line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line
    ]
    assert {"run", "eval", "predict", "models", "live"} <= set(commands), result.stdout
    live = _run(fresh_venv, "train", "live", "--help", cwd=tmp_path)
    assert live.returncode == 0 and "--run" in live.stdout, live.stderr


def test_wheel_gives_the_no_server_error_for_a_closed_port(fresh_venv, tmp_path, tiny_towns):
    pytest.importorskip("carla")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = _run(
        fresh_venv,
        "capture",
        "record",
        "--town",
        "Town01",
        "--clips",
        "1",
        "--port",
        str(port),
        "--timeout",
        "1",
        "--out",
        str(tmp_path / "data"),
        "--town-dir",
        str(tiny_towns),
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert f"no CARLA server answered at 127.0.0.1:{port}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "ModuleNotFoundError" not in result.stderr


_NO_TORCH = """
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "tensorboard"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Absent())
"""


def test_capture_needs_no_torch(fresh_venv, tmp_path, tiny_towns):
    """``pip install "carla-temporal[capture]"`` brings no torch, and every capture command works
    in an environment where importing torch, torchvision or tensorboard fails."""
    site = next((fresh_venv / "lib").glob("python3*/site-packages"))
    meta = next(site.glob("carla_temporal-*.dist-info")) / "METADATA"
    requires = [line for line in meta.read_text().splitlines() if line.startswith("Requires-Dist:")]
    heavy = [
        line
        for line in requires
        if line.split()[1].startswith(("torch>", "torchvision", "tensorboard"))
    ]
    assert heavy and all('extra == "train"' in line for line in heavy), requires
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(_NO_TORCH)
    probe = _run(fresh_venv, "python", "-c", "import torch", cwd=tmp_path, path=blocker)
    assert probe.returncode != 0, "the blocker must hide torch"
    data = tmp_path / "data"
    for args in (
        [
            "record",
            "--backend",
            "synthetic",
            "--town",
            "Town01",
            "--clips",
            "1",
            "--frames",
            "3",
            "--out",
            str(data),
            "--town-dir",
            str(tiny_towns),
        ],
        ["verify", str(data)],
        ["split", str(data)],
        ["inspect", str(data / "Town01")],
    ):
        result = _run(fresh_venv, "capture", *args, cwd=tmp_path, path=blocker)
        assert result.returncode == 0, (args, result.stderr)
    assert list((data / "Town01").glob("Town01-*.h5")) and (data / "split.json").exists()
    helped = _run(fresh_venv, "train", "--help", cwd=tmp_path, path=blocker)
    assert helped.returncode == 0 and "Usage:" in helped.stdout, helped.stderr  # no torch needed
    run = ["run", "pipeline", "--data", str(data), "--out", str(tmp_path / "r"), "--preset", "tiny"]
    train = _run(fresh_venv, "train", *run, cwd=tmp_path, path=blocker)
    lines = train.stderr.strip().splitlines()
    assert train.returncode == 2 and len(lines) == 1, train.stderr
    assert "carla-temporal[train]" in lines[0] and "torch" in lines[0], lines[0]
