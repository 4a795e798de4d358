"""What every click command of the project shares.

Domain errors and OS faults become one line and exit 2; path and number types that refuse what no
command can use (a path that is not UTF-8 text, NaN, infinity, a number out of range) where the
option is parsed.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import click

from clipcore.errors import CaptureError
from clipcore.fsutil import os_error_message
from clipcore.settings import unencodable


class TextPathType(click.Path):
    r"""``click.Path`` (as ``pathlib.Path``) that refuses a path that is not UTF-8 text.

    Bytes such as ``o\xff\xfe`` on Linux are refused: configs, reports and manifests store paths as
    JSON text.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(path_type=Path, **kwargs)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The path, or a usage error naming the bytes that are not UTF-8 text."""
        shown = unencodable(value)
        if shown is not None:
            self.fail(f"{shown} is not UTF-8 text; rename it or choose another path", param, ctx)
        return super().convert(value, param, ctx)


class FiniteFloat(click.FloatRange):
    """``click.FloatRange`` that also refuses NaN and infinity (a range alone lets NaN through)."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The number, or a usage error for NaN, infinity or a value out of range."""
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


class ErrorGroup(click.Group):
    """A click group whose every error is one line and a non-zero exit code.

    :class:`CaptureError` and OS faults (full disk, permission, ...) become ``error: <message>`` and
    exit code 2, Ctrl-C a one-line hint and exit code 130 (no traceback either way).
    """

    interrupt_hint = "interrupted"

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """Click's usage errors as one line and exit 2, like every other error.

        An unknown option, a bad value, a missing argument: ``error: ... (see <command> --help)``.
        """
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            message = " ".join(exc.format_message().split())
            click.echo(f"error: {message}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo(self.interrupt_hint, err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a domain error or OS fault is one line and exit code 2."""
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


#: The distribution whose version ``--version`` prints.
DISTRIBUTION = "carla-temporal"


def version_option() -> Any:
    """``--version``: print the installed package's version (``importlib.metadata``) and exit."""
    return click.version_option(package_name=DISTRIBUTION, message="%(prog)s %(version)s")
