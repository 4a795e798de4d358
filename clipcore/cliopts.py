"""Click options generated from pydantic config fields.

A command's options, their help and their defaults cannot drift from the config they fill.

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

from clipcore.clitools import FiniteFloat, TextPathType

_SEP = "__"  # joins the parts of a nested field's path in the click parameter name


def _field(model: type[BaseModel], path: str) -> tuple[FieldInfo, Any]:
    """The field at ``path`` (``"data.label_map"``) and its default as ``model`` has it.

    A nested field's default is the one its section's default holds, which may differ from its
    type's (a task whose ``data`` defaults to another label map shows that one).
    """
    *parents, leaf = path.split(".")
    section: Any = None  # the default value of the section walked into, if it has one
    for name in parents:
        info = model.model_fields[name]
        section = (
            getattr(section, name)
            if isinstance(section, BaseModel)
            else info.get_default(call_default_factory=True)
        )
        model = _strip_optional(info.annotation)
    info = model.model_fields[leaf]
    if isinstance(section, BaseModel):
        return info, getattr(section, leaf)
    return info, info.get_default(call_default_factory=True)


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


def _number(kind: type, info: FieldInfo) -> click.ParamType:
    """The click type of a number field: its bounds as a range; a float also finite.

    The field's ``ge``, ``gt``, ``le``, ``lt``, so a value out of range is a usage error where the
    option is parsed.
    """
    bounds: dict[str, Any] = {}
    for rule in info.metadata:
        for name, key, is_open in (("ge", "min", False), ("gt", "min", True)):
            if getattr(rule, name, None) is not None:
                bounds.update({key: getattr(rule, name), f"{key}_open": is_open})
        for name, key, is_open in (("le", "max", False), ("lt", "max", True)):
            if getattr(rule, name, None) is not None:
                bounds.update({key: getattr(rule, name), f"{key}_open": is_open})
    if kind is float:
        return FiniteFloat(**bounds)
    return click.IntRange(**bounds) if bounds else click.INT


def _click_kwargs(info: FieldInfo, default: Any) -> dict[str, Any]:
    """click.option keyword arguments (type, flag, callback, help) of one pydantic field.

    ``default`` is the field's default as its command shows it.
    """
    annotation = _strip_optional(info.annotation)
    hidden = info.is_required() or default is None or default is False or default == ()
    shown = "" if hidden else f" [default: {default}]"
    kwargs: dict[str, Any] = {"default": None, "help": (info.description or "") + shown}
    if info.is_required():
        kwargs["required"] = True
    if typing.get_origin(annotation) is Literal:
        kwargs["type"] = click.Choice([str(a) for a in typing.get_args(annotation)])
    elif annotation is bool:
        kwargs["is_flag"] = True
    elif typing.get_origin(annotation) is tuple:
        kwargs.update(callback=_split_list, metavar="A,B,...")
    elif annotation in (int, float):
        kwargs["type"] = _number(annotation, info)
    elif annotation is str:
        kwargs["type"] = str
    elif annotation is Path:
        kwargs["type"] = TextPathType()
    else:
        raise TypeError(f"no click option for a field of type {annotation!r}")
    return kwargs


def config_options(
    model: type[BaseModel], paths: Iterable[str], **tweaks: dict[str, Any]
) -> Callable[[Callable], Callable]:
    """A decorator adding one click option per field path of ``model``.

    Paths like ``"frames"`` or ``"carla.host"``; ``tweaks`` (by leaf name) adds or replaces
    click.option keyword arguments, e.g. ``town_dir={"type": TextPathType(file_okay=False)}``, and
    ``"flag"`` renames the option (``root={"flag": "--data"}``).
    """
    paths = list(paths)

    def decorate(command: Callable) -> Callable:
        for path in reversed(paths):
            leaf = path.rsplit(".", 1)[-1]
            info, default = _field(model, path)
            tweak = tweaks.get(leaf, {})
            kwargs = {**_click_kwargs(info, default), **tweak}
            if "help" in tweak and "help" in _click_kwargs(info, default):  # keep the default
                shown = _click_kwargs(info, default)["help"].removeprefix(info.description or "")
                kwargs["help"] = tweak["help"] + ("" if kwargs.get("required") else shown)
            elif kwargs.get("required"):
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
    """``--config FILE`` and ``--set KEY=VALUE``: the options of every config tree.

    ``--config`` is a TOML file of ``what``, ``--set`` repeatable (e.g. ``example``); passed to the
    command as ``config`` and ``overrides``.
    """

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
