"""Prepare the wheels a GPU machine without network lacks, to run ``benchmarks/gpu.py`` there.

GPU machines usually come with PyTorch, torchvision, h5py, numpy, OpenCV, click, tqdm and Pillow,
but not pydantic or hdf5plugin. This downloads, for the GPU machine's Python and platform, the
wheels of what this package needs beyond those (``pip download``, binary wheels only, no
dependencies resolved beyond the list), and builds a wheel of this package:

    python scripts/gpu_wheels.py --out wheels [--python-version 3.12] [--platform ...]

Then, on the GPU machine (see docs/gpu.md):

    python -m pip install --no-index --no-deps --target /tmp/site wheels/*.whl
    export PYTHONPATH=/tmp/site
    python benchmarks/gpu.py --out /tmp/carla-temporal-gpu
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: What a GPU machine usually has (docs/gpu.md), with what these need (``benchmarks/gpu.py``'s
#: ``setup.packages`` must lie within them and :data:`MISSING`; ``tests/benchmarks/test_gpu.py``).
GPU_STACK = ("torch", "torchvision", "h5py", "numpy", "opencv-python", "click", "tqdm", "pillow")
#: What the package imports beyond the GPU machine's usual stack, and their own needs.
MISSING = (
    "pydantic>=2.5",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
    "hdf5plugin>=4.1",
    "blosc>=1.11",  # python-blosc: the writer's and the depth reader's (clipcore.codecs)
)
#: manylinux tags pip matches exactly; the wheels above are built for one of them.
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def pinned(names: tuple[str, ...]) -> list[str]:
    """``names`` at the versions installed here, where they are (a tested combination).

    pydantic-core must be the exact version pydantic was built against; this machine's pair is.
    """
    from importlib import metadata

    out = []
    for spec in names:
        name = spec.split(">=")[0]
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(spec)
    return out


def download(out: Path, python_version: str, platforms: list[str]) -> None:
    """The missing packages' wheels for ``python_version`` on ``platforms`` into ``out``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", python_version, "--implementation", "cp", "-d", str(out)]
    for platform in platforms:
        command += ["--platform", platform]
    subprocess.run([*command, *pinned(MISSING)], check=True)


def package_wheel(out: Path) -> None:
    """A wheel of this package (pure Python) into ``out``, leaving no build folders behind."""
    left = [ROOT / "build", ROOT / "carla_temporal.egg-info"]
    existed = {path for path in left if path.exists()}
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    try:
        subprocess.run([*command, "-w", str(out), str(ROOT)], check=True)
    finally:
        for path in set(left) - existed:
            shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("wheels"))
    parser.add_argument("--python-version", default="3.12", help="The GPU machine's, e.g. 3.12.")
    parser.add_argument(
        "--platform",
        action="append",
        help=f"pip platform tags (repeatable; default {', '.join(PLATFORMS)}).",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    download(args.out, args.python_version, args.platform or list(PLATFORMS))
    package_wheel(args.out)
    for wheel in sorted(args.out.glob("*.whl")):
        print(wheel)


if __name__ == "__main__":
    main()
