"""``train``: models, training stages, evaluation and predictions.

Commands stay thin: parse options, build the config, call one library function, print.
"""

from __future__ import annotations

import json

import click

from carla_capture.clitools import ErrorGroup


@click.group(cls=ErrorGroup)
def main() -> None:
    """Train and evaluate the temporal perception models on recorded clips."""


@main.command()
@click.option("--preset", type=click.Choice(["paper", "small", "tiny"]), default="paper", show_default=True,
              help="Model sizes to describe.")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def models(preset: str, as_json: bool) -> None:
    """Print each model's parameter count and FLOPs per frame at the preset's input size.

    \b
    Examples:
      train models --preset paper
      train models --preset tiny --json
    """
    from models.config import PRESETS
    from models.summary import format_rows, summarize

    cfg = PRESETS[preset]
    rows = summarize(cfg)
    if as_json:
        click.echo(json.dumps({"preset": preset, "input_size": list(cfg.input_size), "models": rows}, indent=2))
    else:
        click.echo(format_rows(cfg, rows))
