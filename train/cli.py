"""``train``: ``train run TASK``, ``train eval TASK``, ``train predict TASK`` and ``train models``.

One command per task of the registry (:mod:`train.tasks`) under each of ``run``, ``eval`` and
``predict``, each with the options of that task's configs, generated from their fields
(:mod:`clipcore.cliopts`): an option shown is a field the task reads, and ``--set`` reaches every
other field of its config. Commands stay thin: parse options, build the config, call the task's
one library function, print.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel

from clipcore.cliopts import config_options, file_and_set_options, nest
from clipcore.clitools import ErrorGroup, TextPathType, version_option
from clipcore.settings import build
from dataset.labels import available_label_maps
from models.config import PRESETS
from train.run_folder import write_report
from train.task import Task
from train.tasks import TASKS

_DIR = {"type": TextPathType(file_okay=False)}
#: The command forms of earlier releases, and what they are now.
_EARLIER = {
    **{s: f"train run pipeline --stage {s}" for s in ("stage1", "stage2", "stage3", "stage4")},
    "all": "train run pipeline",
    "sim2real-vae": "train run sim2real --stage sim2real-vae",
    "sim2real-tasks": "train run sim2real --stage sim2real-tasks",
}


class TaskGroup(click.Group):
    """``train run|eval|predict``.

    One command per task; a form of an earlier release (``train run stage1``, ``train eval --task
    forecast``) is refused with its new form.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Refuse an option before the task, and an earlier release's stage name.

        ``--task NAME``, ``--run RUN`` with no task, ``train run stage1``: each is one line with the
        form to type now.
        """
        tasks = "|".join(TASKS)
        if "--task" in args:
            at = args.index("--task")
            task = args[at + 1] if at + 1 < len(args) else tasks
            raise click.UsageError(
                f"--task is gone: name the task first, {ctx.command_path} {task} ...", ctx
            )
        if args and args[0] in _EARLIER and ctx.info_name == "run":
            raise click.UsageError(f"train run {args[0]} is now: {_EARLIER[args[0]]}", ctx)
        if args and args[0].startswith("-") and args[0] != "--help":
            raise click.UsageError(f"name the task first: {ctx.command_path} {tasks} ...", ctx)
        return super().parse_args(ctx, args)


@click.group(cls=ErrorGroup)
@version_option()
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Train and evaluate the temporal perception models on recorded clips."""
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2), format="%(levelname)s %(name)s: %(message)s"
    )


@main.group(cls=TaskGroup)
def run() -> None:
    """Train a task (its stages, in order) into a run folder; the resolved config is saved there.

    \b
    Tasks:
      pipeline  stages 1-4 of the temporal perception pipeline
      forecast  a forecaster of future segmentation, in a pipeline run (after its stage 1)
      sim2real  the sim2real twin VAE
    """


@main.group("eval", cls=TaskGroup)
def evaluate() -> None:
    """Score a task's trained models on a split; writes RUN/<report>.json and .md."""


@main.group(cls=TaskGroup)
def predict() -> None:
    """Write a task's predictions: videos, point clouds, pictures."""


def _help(text: str, examples: str | None) -> str:
    return text + (f"\n\n\b\nExamples:{examples}" if examples else "")


def _run_command(task: Task) -> click.Command:
    """``train run TASK``.

    Options of the task's config fields, ``--config``, ``--set``, ``--resume`` and (a task of
    several stages) ``--stage``.
    """

    def command(
        config: Path | None,
        overrides: tuple[str, ...],
        resume: bool,
        stage: str | None = None,
        **options: Any,
    ) -> None:
        current = TASKS[task.name]
        given = nest(options)
        preset = given.pop("preset", None)
        cfg = current.resolve(preset, given, config, overrides)
        for path in current.train(cfg, stage or "all", resume):
            click.echo(f"best checkpoint: {path}")

    command = click.option("--resume", is_flag=True, help="Continue each stage from its last.pt.")(
        command
    )
    if task.stages:
        command = click.option(
            "--stage",
            type=click.Choice([*task.stages, "all"]),
            default="all",
            show_default=True,
            help="The stage to train (all: every one, in order).",
        )(command)
    command = file_and_set_options(
        f"{task.config.__name__} fields (any section: [data], [model], ...)",
        "--set data.augment.flip_p=0 or --set seed=3",
    )(command)
    command = config_options(
        task.config,
        task.run_fields,
        root={
            "flag": "--data",
            "required": True,
            **_DIR,
            "help": "Dataset folder with split.json.",
        },
        out={"required": True, **_DIR},
        preset={"type": click.Choice(list(task.presets))},
        size={"metavar": "H,W"},
        label_map={"type": click.Choice(available_label_maps())},
        target=_DIR,
    )(command)
    text = (
        f"{task.summary} Every option is a field of {task.config.__name__} (any other: --set); "
        "the resolved config is saved in OUT."
    )
    return click.command(task.name, help=_help(text, task.examples.get("run")))(command)


def _build(model: type[BaseModel], options: dict[str, Any]) -> Any:
    """The eval or predict config of the given options (one line for a bad value)."""
    return build(model, nest(options), f"train options ({model.__name__})", options=True)


def _eval_command(task: Task) -> click.Command:
    """``train eval TASK``: options of the task's EvalConfig, and ``--json``."""

    def command(as_json: bool, **options: Any) -> None:
        current = TASKS[task.name]
        cfg = _build(current.eval_config, options)
        report = current.evaluate(cfg)
        js, md = write_report(report, Path(cfg.run), current.report_name, current.to_markdown)
        click.echo(json.dumps(report, indent=2) if as_json else current.to_markdown(report))
        click.echo(f"-> {js}, {md}", err=True)

    command = click.option(
        "--json", "as_json", is_flag=True, help="Print JSON instead of the Markdown table."
    )(command)
    command = config_options(
        task.eval_config, tuple(task.eval_config.model_fields), run=_DIR, data=_DIR
    )(command)
    text = (
        f"Score the {task.name} task's trained models of RUN on SPLIT; writes "
        f"RUN/{task.report_name}.json and .md."
    )
    return click.command(task.name, help=_help(text, task.examples.get("eval")))(command)


def _predict_command(task: Task) -> click.Command:
    """``train predict TASK [PATH]``: options of the task's PredictConfig."""
    fields = task.predict_config.model_fields
    needs_path = "video" not in fields  # the pipeline predicts on a video file instead

    def command(path: Path | None, **options: Any) -> None:
        current = TASKS[task.name]
        cfg = _build(current.predict_config, {**options, "path": path})
        for line in current.predict(cfg):
            click.echo(f"-> {line}")

    command = config_options(
        task.predict_config, tuple(f for f in fields if f != "path"), run=_DIR
    )(command)
    command = click.argument("path", type=TextPathType(exists=True), required=needs_path)(command)
    what = fields["path"].description or ""
    path = what[:1].lower() + what[1:]
    text = f"Predict with the {task.name} task's trained model of RUN. PATH: {path}"
    return click.command(task.name, help=_help(text, task.examples.get("predict")))(command)


for _task in TASKS.values():
    run.add_command(_run_command(_task))
    evaluate.add_command(_eval_command(_task))
    predict.add_command(_predict_command(_task))


@main.command()
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    default="paper",
    show_default=True,
    help="Model sizes to describe.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def models(preset: str, as_json: bool) -> None:
    """Print each model's parameter count and FLOPs per frame at the preset's input size.

    \b
    Examples:
      train models --preset paper
      train models --preset tiny --json
    """
    from models.summary import format_rows, summarize

    cfg = PRESETS[preset]
    rows = summarize(cfg, preset)
    if as_json:
        click.echo(
            json.dumps(
                {"preset": preset, "input_size": list(cfg.input_size), "models": rows}, indent=2
            )
        )
    else:
        click.echo(format_rows(preset, cfg, rows))
