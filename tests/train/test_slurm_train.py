"""scripts/slurm/train.sbatch on a real single-node SLURM cluster: torchrun with two CPU
processes (gloo) trains stage 1 through DistributedDataParallel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_train_batch_script_runs_torchrun_under_slurm(tmp_path, split_dataset, slurm_cluster):
    settings = ["stages.stage1.epochs=1", "stages.stage1.max_steps=2"]
    settings += ["stages.stage1.batch_size=1", "data.size=[64, 128]", "tensorboard=false"]
    settings += ['device="cpu"']
    env = {
        **slurm_cluster.env,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "DATA": str(split_dataset),
        "OUT": str(tmp_path / "run"),
        "STAGE": "stage1",
        "GPUS_PER_NODE": "2",
        "MASTER_PORT": str(29500 + os.getpid() % 1000),
        "TORCHRUN": f"{sys.executable} -m torch.distributed.run",
    }
    cmd = ["sbatch", "--wait", "--nodes=1", "--gres=none", f"--cpus-per-task={os.cpu_count()}"]
    cmd += [f"--output={tmp_path}/train-%j.log", str(ROOT / "scripts/slurm/train.sbatch")]
    for item in settings:
        cmd += ["--set", item]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    log = "\n".join(p.read_text() for p in tmp_path.glob("train-*.log"))
    assert done.returncode == 0, done.stderr + log[-3000:]
    assert "1 node(s) x 2 processes" in log and log.count("best checkpoint") == 2, log[-3000:]
    assert (tmp_path / "run" / "stage1" / "best.pt").exists()
