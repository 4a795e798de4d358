"""The forecasting task.

Future segmentation from past frames, in a pipeline run (``train run forecast``).
"""

from __future__ import annotations

from models.config import PRESETS
from train.forecast.config import ForecastEval, ForecastPredict, ForecastRunConfig
from train.task import RUN_FIELDS, Task, deferred

TASK = Task(
    name="forecast",
    summary="A forecaster of future segmentation, taught by the run's stage 1.",
    config=ForecastRunConfig,
    run_fields=(
        *RUN_FIELDS,
        "data.val_split",
        "forecast.horizon",
        "forecast.temporal",
        "forecast.width",
        "forecast.distill_weight",
        "forecast.epochs",
        "forecast.batch_size",
        "forecast.lr",
        "forecast.max_steps",
    ),
    presets=tuple(PRESETS),
    resolve=deferred("train.forecast.stage", "resolve_config"),
    stages=(),
    train=deferred("train.forecast.stage", "train"),
    eval_config=ForecastEval,
    evaluate=deferred("train.forecast.evaluate", "evaluate"),
    to_markdown=deferred("train.forecast.evaluate", "to_markdown"),
    report_name="forecast_eval",
    predict_config=ForecastPredict,
    predict=deferred("train.forecast.predict", "predict"),
    examples={
        "run": """
  train run forecast --data data/demo --out runs/demo --horizon mid
  train run forecast --data data --out runs/r1 --horizon mid --temporal stack   # ablation
  train run forecast --data data --out runs/r1 --horizon long --distill-weight 0""",
        "eval": """
  train eval forecast --run runs/demo
  train eval forecast --run runs/demo --split val --json""",
        "predict": """
  train predict forecast --run runs/demo data/demo/Town02 --variant forecast-mid --gif""",
    },
)
