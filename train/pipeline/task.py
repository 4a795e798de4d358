"""The pipeline task: stages 1-4 of the temporal perception pipeline (``train run pipeline``)."""

from __future__ import annotations

from models.config import PRESETS
from train.pipeline.config import STAGE_ORDER, PipelineEval, PipelinePredict, TrainConfig
from train.task import RUN_FIELDS, Task, deferred

TASK = Task(
    name="pipeline",
    summary="Stages 1-4: segmentation, depth, ego-motion, the temporal model.",
    config=TrainConfig,
    run_fields=(*RUN_FIELDS, "data.val_split"),
    presets=tuple(PRESETS),
    resolve=deferred("train.pipeline.run", "resolve_config"),
    stages=STAGE_ORDER,
    train=deferred("train.pipeline.run", "train"),
    eval_config=PipelineEval,
    evaluate=deferred("train.pipeline.evaluate", "evaluate_pipeline"),
    to_markdown=deferred("train.pipeline.evaluate", "to_markdown"),
    report_name="eval",
    predict_config=PipelinePredict,
    predict=deferred("train.pipeline.predict", "predict"),
    examples={
        "run": """
  train run pipeline --data data/demo --out runs/demo --preset tiny
  train run pipeline --stage stage4 --data data --out runs/paper --preset paper --num-workers 4
  train run pipeline --stage stage1 --data data --out runs/r1 --set stages.stage1.epochs=5 \\
    --resume
  train run pipeline --stage stage1 --data data/cs --out runs/cs --preset lowres \\
    --label-map cityscapes19
  torchrun --nproc-per-node 4 -m train run pipeline --data data --out runs/ddp --preset paper""",
        "eval": """
  train eval pipeline --run runs/demo
  train eval pipeline --run runs/demo --perturbed
  train eval pipeline --run runs/paper --split val --device cuda --json""",
        "predict": """
  train predict pipeline --run runs/demo data/demo/Town02
  train predict pipeline --run runs/demo data/demo --clip Town02-0-000001 --gif
  train predict pipeline --run runs/lowres --video drive.mp4 --out drive-pred.gif""",
    },
)
