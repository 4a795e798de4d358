"""Helpers shared by every config tree: TOML loading, ``--set a.b=c`` overrides, error text.

Pydantic validation errors are turned into one-line :class:`ConfigError` messages that
name the source file, the key and the fix.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ValidationError

from clipcore.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

M = TypeVar("M", bound=BaseModel)


#: Smallest and largest side (pixels) of a frame size: what frames are resized to.
FRAME_SIDE_RANGE = (8, 4096)


def _frame_size(value: tuple[int, int]) -> tuple[int, int]:
    low, high = FRAME_SIDE_RANGE
    if not all(low <= side <= high for side in value):
        raise ValueError(f"must be (H, W) of {low} to {high} pixels each, got {list(value)}")
    return value


#: A config field holding an image size (H, W) in pixels, each 8 to 4096.
FrameSize = Annotated[tuple[int, int], AfterValidator(_frame_size)]


def unencodable(path: object) -> str | None:
    r"""None when ``path`` is UTF-8 text.

    Else the path shown with its raw bytes escaped (a name that is not UTF-8, e.g. ``o\xff\xfe``,
    arrives from the command line as surrogates, which no JSON config, report or message can hold).
    """
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(str(path)).decode("utf-8", "backslashreplace")
    return None


def _utf8_path(value: Path) -> Path:
    shown = unencodable(value)
    if shown is not None:
        raise ValueError(f"{shown} is not UTF-8 text; rename it or choose another path")
    return value


#: A config field holding a path: UTF-8 text (configs and reports store it as JSON).
TextPath = Annotated[Path, AfterValidator(_utf8_path)]


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error becomes a :class:`ConfigError` naming the file."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist: check the path") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}): fix the syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text: save it as UTF-8 TOML") from None


def validation_message(exc: ValidationError, source: str, options: bool = False) -> str:
    """One line naming the first invalid key of ``exc`` and what pydantic expected.

    The fix is ``--set key=...``, or ``--key ...`` with ``options`` (a model whose fields are
    options).
    """
    first = exc.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key; remove it or check its spelling"
    elif first["type"] != "value_error":  # pydantic's own words say what, not how to fix it
        got = first.get("input")
        shown = "" if isinstance(got, (dict, list)) else f", got {got!r}"
        fix = f"--{key.replace('_', '-')} ..." if options else f"--set {key}=..."
        msg = f"{msg}{shown}; give another value ({fix})"
    else:
        msg = msg.removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    where = f"{key}: " if key else ""  # a check of the whole model names its options itself
    return f"{source}: {where}{msg}{more}"


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in, key by key at every depth (a new dict; inputs untouched).

    A table in a config file changes only the keys it names: ``[stages.stage1] epochs = 2``
    keeps the rest of stage 1, and ``[model] motion_hidden = 32`` the rest of the preset's model.
    """
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def build(model: type[M], data: dict[str, Any], source: str, options: bool = False) -> M:
    """Validate ``data`` as ``model``.

    Errors become a one-line :class:`ConfigError` (see :func:`validation_message` for ``options``).
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, source, options)) from None


def parse_value(text: str) -> Any:
    """Read an override value.

    A JSON or TOML literal (``3``, ``0.5``, ``true``, ``[1,2]``, an inline table ``{ce=2.0}``) or
    else the text itself as a string.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    return value if isinstance(value, (dict, list, bool, int, float)) else text


def _child(annotation: Any, key: str, node: dict[str, Any], path: str) -> Any:
    """The annotation of ``key`` under ``annotation`` (a pydantic model, or a dict of them)."""
    models = [a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    if get_origin(annotation) in (Union, UnionType) and len(models) == 1:
        annotation = models[0]  # an optional section (``AugmentConfig | None``)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if key not in annotation.model_fields:
            known = ", ".join(sorted(annotation.model_fields))
            raise ConfigError(f"--set {path}: unknown key {key!r}; known keys here: {known}")
        return annotation.model_fields[key].annotation
    if get_origin(annotation) is dict:
        if key not in node:
            raise ConfigError(
                f"--set {path}: unknown key {key!r}; known keys here: "
                f"{', '.join(sorted(node)) or '(none)'}"
            )
        return get_args(annotation)[1]
    raise ConfigError(f"--set {path}: {key!r} is inside a value that has no keys")


def apply_overrides(model: type[M], data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides to a config dict, refusing keys ``model`` does not have."""
    data = json.loads(json.dumps(data, default=str))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set camera.width=640")
        key, _, raw = item.partition("=")
        parts = key.strip().split(".")
        annotation: Any = model
        node = data
        for i, part in enumerate(parts):
            annotation = _child(annotation, part, node, key)
            if i == len(parts) - 1:
                node[part] = parse_value(raw)
            else:
                node = node.setdefault(part, {})
    return data
