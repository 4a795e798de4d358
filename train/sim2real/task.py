"""The sim2real task.

A twin VAE that carries depth and segmentation from sim to real (``train run sim2real``).
"""

from __future__ import annotations

from models.config import SIM2REAL_PRESETS
from train.sim2real.config import (
    SIM2REAL_STAGES,
    Sim2RealConfig,
    Sim2RealEval,
    Sim2RealPredict,
)
from train.task import RUN_FIELDS, Task, deferred

TASK = Task(
    name="sim2real",
    summary="The sim2real twin VAE: sim frames with labels, unlabelled target images.",
    config=Sim2RealConfig,
    run_fields=(*RUN_FIELDS, "data.val_split", "target"),
    presets=tuple(SIM2REAL_PRESETS),
    resolve=deferred("train.sim2real.stage", "resolve_config"),
    stages=SIM2REAL_STAGES,
    train=deferred("train.sim2real.stage", "train"),
    eval_config=Sim2RealEval,
    evaluate=deferred("train.sim2real.evaluate", "evaluate"),
    to_markdown=deferred("train.sim2real.evaluate", "to_markdown"),
    report_name="sim2real-eval",
    predict_config=Sim2RealPredict,
    predict=deferred("train.sim2real.predict", "predict"),
    examples={
        "run": """
  train run sim2real --data data --target photos/ --out runs/s2r
  train run sim2real --stage sim2real-tasks --data data --out runs/s2r \\
    --set stages.sim2real-tasks.losses.mmd=0 --resume""",
        "eval": """
  train eval sim2real --run runs/s2r --data data_b --split test
  train eval sim2real --run runs/s2r --images kitti/img --depth-png kitti/depth""",
        "predict": """
  train predict sim2real --run runs/s2r photos/
  train predict sim2real --run runs/s2r data/Town02 --domain sim --rows 8""",
    },
)
