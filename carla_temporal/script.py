"""The ``train`` console script.

:data:`carla_temporal.cli.main`. Its help needs no torch; a command that does, where torch is
not installed (``pip install "carla-temporal[capture]"`` brings none), ends in one line that names
the extra.
"""

from __future__ import annotations

import sys

import click

TRAINING_PACKAGES = ("torch", "torchvision", "tensorboard")


def main() -> None:
    """Run the ``train`` command."""
    try:
        from carla_temporal.cli import main as train

        train()
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TRAINING_PACKAGES:
            raise
        click.echo(
            f"error: the train command needs {exc.name}, which is not installed: "
            'pip install "carla-temporal[train]"',
            err=True,
        )
        sys.exit(2)
