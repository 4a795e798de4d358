"""``benchmarks/gpu.py --smoke``: every part of the GPU run (record, speed, loader, learning,
forecasting, sim2real) runs on the CPU at tiny sizes and writes its JSON and page, so the script
never rots while no GPU is at hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
