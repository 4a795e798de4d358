"""``benchmarks/gpu.py --smoke``: every part of the GPU run (record, speed, loader, learning,
forecasting, sim2real) runs on the CPU at tiny sizes and writes its JSON and page, so the script
never rots while no GPU is at hand."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Imported where present, never needed: python-blosc's test module imports psutil.
OPTIONAL = {"psutil"}


def test_the_gpu_benchmark_runs_every_part_in_smoke_mode(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--out", tmp_path],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads((tmp_path / "gpu.json").read_text())
    parts = payload["parts"]
    assert set(parts) == {"record", "speed", "loader", "learning", "forecast", "sim2real"}
    assert not any("error" in p or "skipped" in p for p in parts.values())
    assert payload["setup"]["torch"] and payload["setup"]["date"]
    speed = parts["speed"]
    assert {"stage1/fp32", "stage4/fp32"} <= set(speed["train"])
    assert all(r["frames_per_s"] > 0 for r in speed["train"].values())
    assert all(r["frames_per_s"] > 0 for r in speed["stream"].values())
    assert parts["loader"]["frames_per_s"] > 0 and parts["record"]["frames"] > 0
    for name in ("learning", "forecast", "sim2real"):
        verdict = parts[name]["verdict"]
        assert verdict, name
    head = parts["learning"]["headline"]
    assert {"memory_off", "unaligned", "aligned_estimated", "aligned_truth"} <= set(
        head["corrupted"]
    )
    assert set(parts["forecast"]["verdict"]) == {"mid"}  # the smoke run's one horizon
    assert "beats_zero_motion" in json.dumps(parts["forecast"]["verdict"])
    page = (tmp_path / "gpu.md").read_text()
    assert "smoke" in page and "benchmarks/gpu.py --out" in page and "--no-index" in page
    # a GPU machine has its usual stack and the wheels scripts/gpu_wheels.py carries: enough
    lacking = set(map(_name, payload["setup"]["packages"])) - _carried_or_usual() - OPTIONAL
    assert not lacking, f"add {sorted(lacking)} to scripts/gpu_wheels.py MISSING"


def _name(dist: str) -> str:
    """A distribution's normalised name; every OpenCV build counts as opencv-python."""
    name = re.sub(r"[-_.]+", "-", dist).lower()
    return "opencv-python" if name.startswith("opencv-python") else name


def _carried_or_usual() -> set[str]:
    """scripts/gpu_wheels.py's MISSING, its GPU_STACK and what those need (as installed here)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    spec = importlib.util.spec_from_file_location("gpu_wheels", ROOT / "scripts" / "gpu_wheels.py")
    wheels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wheels)
    todo = [Requirement(r).name for r in (*wheels.GPU_STACK, *wheels.MISSING)]
    seen: set[str] = set()
    while todo:
        name = _name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            installed = "opencv-python-headless" if name == "opencv-python" else name
            requires = metadata.requires(installed)
        except metadata.PackageNotFoundError:
            continue
        for line in requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen
