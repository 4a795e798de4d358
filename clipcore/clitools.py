"""What every click command of the project shares: domain errors and OS faults become one line
and exit 2."""

from __future__ import annotations

import sys
from typing import Any

import click

from clipcore.errors import CaptureError
from clipcore.fsutil import os_error_message


class ErrorGroup(click.Group):
    """A click group that turns :class:`CaptureError` and OS faults (full disk, permission, ...)
    into ``error: <message>`` and exit code 2, and Ctrl-C into a one-line hint and exit code 130
    (no traceback either way)."""

    interrupt_hint = "interrupted"

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CaptureError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except (OSError, RuntimeError) as exc:
            message = os_error_message(exc)
            if message is None:
                raise
            click.echo(f"error: {message}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo(self.interrupt_hint, err=True)
            sys.exit(130)
