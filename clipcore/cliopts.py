"""Click options generated from pydantic config fields, so a command's options, their help and
their defaults cannot drift from the config they fill.

Each option is named after its field (``clips_per_shard`` -> ``--clips-per-shard``; a nested field
``carla.host`` -> ``--host``), takes its type (``Literal`` -> a choice, ``bool`` -> a flag,
``tuple[str, ...]`` -> a comma-separated list), its help from the field's description and shows
the field's default. The option's value is None unless given, so an option only overrides what
the preset or the config file set; :func:`nest` turns the given values into a nested dict for
:func:`~clipcore.settings.deep_merge`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from clipcore.clitools import TextPathType

_SEP = "__"  # joins the parts of a nested field's path in the click parameter name


def _field(model: type[BaseModel], path: str) -> FieldInfo:
    *parents, leaf = path.split(".")
    for name in parents:
        model = model.model_fields[name].annotation
    return model.model_fields[leaf]


def _strip_optional(annotation: Any) -> Any:
    """The type under ``X | None`` and ``Annotated[X, validators]``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            annotation = args[0]
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _split_list(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> list[str] | None:
    return None if value is None else [part for part in value.split(",") if part]


def _click_kwargs(info: FieldInfo) -> dict[str, Any]:
    """click.option keyword arguments (type, flag, callback, help) of one pydantic field."""
    annotation = _strip_optional(info.annotation)
    default = info.get_default(call_default_factory=True)
    hidden = default is None or default is False or default == ()
    shown = "" if hidden else f" [default: {default}]"
    kwargs: dict[str, Any] = {"default": None, "help": (info.description or "") + shown}
    if typing.get_origin(annotation) is Literal:
        kwargs["type"] = click.Choice([str(a) for a in typing.get_args(annotation)])
    elif annotation is bool:
        kwargs["is_flag"] = True
    elif typing.get_origin(annotation) is tuple:
        kwargs.update(callback=_split_list, metavar="A,B,...")
    elif annotation in (int, float, str):
        kwargs["type"] = annotation
    elif annotation is Path:
        kwargs["type"] = TextPathType()
    else:
        raise TypeError(f"no click option for a field of type {annotation!r}")
    return kwargs


def config_options(
    model: type[BaseModel], paths: Iterable[str], **tweaks: dict[str, Any]
) -> Callable[[Callable], Callable]:
    """A decorator adding one click option per field path of ``model`` (``"frames"``,
    ``"carla.host"``); ``tweaks`` (by leaf name) adds or replaces click.option keyword arguments,
    e.g. ``town_dir={"type": TextPathType(file_okay=False)}``, and ``"flag"``
    renames the option (``root={"flag": "--data"}``)."""
    paths = list(paths)

    def decorate(command: Callable) -> Callable:
        for path in reversed(paths):
            leaf = path.rsplit(".", 1)[-1]
            info = _field(model, path)
            kwargs = {**_click_kwargs(info), **tweaks.get(leaf, {})}
            if kwargs.get("required") and "help" not in tweaks.get(leaf, {}):
                kwargs["help"] = info.description or ""  # a required option shows no default
            flag = kwargs.pop("flag", "--" + leaf.replace("_", "-"))
            command = click.option(flag, path.replace(".", _SEP), **kwargs)(command)
        return command

    return decorate


def nest(options: dict[str, Any]) -> dict[str, Any]:
    """The given (not None) option values of :func:`config_options` as a nested config dict."""
    data: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        *parents, leaf = key.split(_SEP)
        node = data
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return data


def file_and_set_options(what: str, example: str) -> Callable[[Callable], Callable]:
    """``--config FILE`` (a TOML file of ``what``) and ``--set KEY=VALUE`` (repeatable, e.g.
    ``example``): the two options every command with a config tree takes, passed as ``config``
    and ``overrides``."""

    def decorate(command: Callable) -> Callable:
        command = click.option(
            "--set",
            "overrides",
            multiple=True,
            metavar="KEY=VALUE",
            help=f"Override any field, e.g. {example}.",
        )(command)
        return click.option(
            "--config",
            type=TextPathType(dir_okay=False),
            help=f"TOML file with {what}.",
        )(command)

    return decorate
