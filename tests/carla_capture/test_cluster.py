"""One dataset plan recorded three ways gives the same dataset: in one process; as 3 tasks run
concurrently, one of them killed mid-clip and run again; through the SLURM job array of
scripts/slurm/capture.sbatch on a real single-node cluster (the embedded simulator records)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from clipcore.folder import find_shards
from clipcore.shards import ShardReader

ROOT = Path(__file__).resolve().parents[2]
TOWNS, CLIPS, SEED = ("Town01", "Town02"), 6, 3
#: the plan: towns, clips per town, seed, and the settings that change the data
PLAN = ["--backend", "synthetic", "--towns", ",".join(TOWNS), "--clips", str(CLIPS)]
PLAN += ["--seed", str(SEED), "--frames", "6"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _capture(out: Path, towns: Path, *extra: str) -> subprocess.Popen:
    args = [*PLAN, "--clips-per-shard", "2", "--out", str(out), "--town-dir", str(towns), *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "carla_capture", "record", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_env(),
    )


def _finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out.decode()[-3000:]


def _crcs(data: Path) -> dict[str, list[list[int]]]:
    """Clip id -> per-frame CRC-32s (rgb, semantic, depth) of every clip in the dataset; a clip
    id found twice fails."""
    out: dict[str, list[list[int]]] = {}
    for shard in find_shards(data):
        with ShardReader(shard) as reader:
            for cid in reader.clip_ids():
                assert cid not in out, f"{cid} is in the dataset twice"
                out[cid] = reader.group(cid)["crc32"][()].tolist()
    return out


def _tasks_with_one_killed_mid_clip(out: Path, towns: Path) -> None:
    procs = [_capture(out, towns, "--task-index", str(k), "--num-tasks", "3") for k in range(3)]
    staging = out / TOWNS[0] / ".writer-s3-t1of3"
    deadline, partial = time.monotonic() + 120, []
    while time.monotonic() < deadline and procs[1].poll() is None:
        partial = list(staging.glob("*.h5.partial"))
        if partial:
            break
        time.sleep(0.002)
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait()
    assert partial and partial[0].exists(), "task 1 was killed while it recorded a clip"
    procs[1] = _capture(out, towns, "--task-index", "1", "--num-tasks", "3")
    for proc in procs:
        _finish(proc)
    assert not partial[0].exists(), "the task run again removed its own unfinished clip"


def _slurm_array(out: Path, towns: Path, cluster, logs: Path) -> None:
    env = {
        **cluster.env,
        **_env(),
        "OUT": str(out),
        "TOWNS": ",".join(TOWNS),
        "CLIPS": str(CLIPS),
        "SEED": str(SEED),
        "BACKEND": "synthetic",
        "CAPTURE": f"{sys.executable} -m carla_capture",
    }
    cmd = ["sbatch", "--wait", "--array=0-2", "--gres=none", "--cpus-per-task=1"]
    cmd += [f"--output={logs}/capture-%a.log", str(ROOT / "scripts/slurm/capture.sbatch")]
    cmd += ["--frames", "6", "--clips-per-shard", "2", "--town-dir", str(towns)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    texts = "\n".join(p.read_text() for p in sorted(logs.glob("capture-*.log")))
    assert done.returncode == 0, done.stderr + texts
    for k in range(3):
        assert f"(task {k} of 3)" in texts, texts


def test_one_plan_recorded_three_ways_gives_the_same_clips(
    tmp_path, tiny_towns, slurm_cluster, cli
):
    one, tasks, array = tmp_path / "one", tmp_path / "tasks", tmp_path / "array"
    _finish(_capture(one, tiny_towns))
    _tasks_with_one_killed_mid_clip(tasks, tiny_towns)
    logs = tmp_path / "logs"
    logs.mkdir()
    _slurm_array(array, tiny_towns, slurm_cluster, logs)

    expected = {f"{town}-{SEED}-{i:06d}" for town in TOWNS for i in range(CLIPS)}
    datasets = [_crcs(one), _crcs(tasks), _crcs(array)]
    for crcs in datasets:
        assert set(crcs) == expected  # nothing lost, nothing else (and _crcs: nothing twice)
    assert datasets[0] == datasets[1] == datasets[2], "the same clips, frame by frame"
    for data in (one, tasks, array):
        assert cli.capture("split", data).exit_code == 0
        verified = cli.capture("verify", data)
        assert verified.exit_code == 0, verified.output
        assert not list(data.rglob("*.partial")) and not list(data.glob("*/.writer-*/*.h5"))
    shards = {p.name for p in find_shards(tasks)}
    assert any("-s3-t1of3-" in name for name in shards), "each task wrote its own shards"
