"""Every use of the carla module by the backend exists, with a fitting call shape, in the real
carla==0.9.16 client and in the test double."""

from __future__ import annotations

import inspect
import re

import pytest

from carla_capture.backends.carla.contract import CONTRACT, Use
from tests import carla_double

carla = pytest.importorskip("carla")

_SIGNATURE = re.compile(r"^\s*\w+\((.*)\)\s*->", re.M)


def _resolve(module: object, path: str) -> object:
    obj = module
    for part in filter(None, path.split(".")):
        obj = getattr(obj, part)
    return obj


def _boost_overloads(doc: str) -> list[list[tuple[str, bool]]]:
    """(name, has_default) of each parameter after self, per overload of a Boost.Python doc."""
    out = []
    for match in _SIGNATURE.finditer(doc or ""):
        params = re.findall(r"\((\w+)\)(\w+)(=[^,\]\[]*)?", match.group(1))
        out.append([(name, bool(default)) for _, name, default in params][1:])
    return out


def _fits(params: list[tuple[str, bool]], use: Use) -> bool:
    required = sum(not has_default for _, has_default in params)
    names = [name for name, _ in params]
    given = use.args + len(use.kwargs)
    return required <= given <= len(params) and all(k in names[use.args :] for k in use.kwargs)


@pytest.mark.parametrize("use", CONTRACT, ids=lambda u: f"{u.owner or 'carla'}.{u.member}")
def test_real_client_has_it(use):
    owner = _resolve(carla, use.owner)
    assert hasattr(owner, use.member), f"carla.{use.owner}.{use.member} is missing"
    if use.attribute:
        return
    overloads = _boost_overloads(getattr(owner, use.member).__doc__)
    assert overloads, f"no signature in the docstring of {use.owner}.{use.member}"
    assert any(_fits(p, use) for p in overloads), f"{use} fits none of {overloads}"


@pytest.mark.parametrize("use", CONTRACT, ids=lambda u: f"{u.owner or 'carla'}.{u.member}")
def test_double_has_it(use):
    owner = _resolve(carla_double, use.owner)
    assert hasattr(owner, use.member), f"the double lacks {use.owner}.{use.member}"
    if use.attribute:
        return
    signature = inspect.signature(getattr(owner, use.member))
    signature.bind(None, *([None] * use.args), **{k: None for k in use.kwargs})


def test_backend_uses_only_the_contract():
    """Every ``carla.X`` the backend's source names is declared in the contract."""
    from pathlib import Path

    import carla_capture.backends.carla as backend

    declared = {u.owner.split(".")[0] or u.member for u in CONTRACT} | {
        u.member for u in CONTRACT if u.owner == ""
    }
    source = "".join(
        p.read_text() for p in Path(backend.__file__).parent.glob("*.py") if p.name != "contract.py"
    )
    member = r"carla\.([A-Z]\w*|command)\b"
    used = set(re.findall(r"(?<![\w.])" + member, source)) | set(
        re.findall(r"self\." + member, source)
    )
    assert used and used <= declared, used - declared


def test_the_double_refuses_the_package_anything_the_contract_does_not_list(server):
    """The strict double: a member or call shape not in the contract fails for package code."""
    import types

    from carla_capture.backends.carla import (
        session,
    )  # a module of the package: strictness applies to it

    probe = types.FunctionType(
        compile(
            "def uses(carla):\n"
            "    world = carla.Client('127.0.0.1', 2000).get_world()\n"
            "    return world.get_settings().copy\n",
            session.__file__,
            "exec",
        ).co_consts[0],
        {},
    )
    with pytest.raises(AttributeError, match="WorldSettings.copy is not in the contract"):
        probe(carla_double)
    shape = types.FunctionType(
        compile(
            "def uses(carla, bp, transform):\n"
            "    return carla.command.SpawnActor(bp, transform, 7, 'socket')\n",
            session.__file__,
            "exec",
        ).co_consts[0],
        {},
    )
    with pytest.raises(AttributeError, match="SpawnActor.__init__ with 4 arguments"):
        shape(
            carla_double,
            carla_double.ActorBlueprint("walker.pedestrian.0001"),
            carla_double.Transform(),
        )


def test_blueprint_attributes_the_backend_sets_exist_in_the_double():
    import fnmatch

    from carla_capture.backends.carla.contract import BLUEPRINT_ATTRIBUTES

    for pattern, names in BLUEPRINT_ATTRIBUTES.items():
        ids = [i for i in carla_double.BlueprintLibrary.IDS if fnmatch.fnmatch(i, pattern)]
        assert ids, pattern
        for blueprint_id in ids:
            bp = carla_double.ActorBlueprint(blueprint_id)
            assert all(bp.has_attribute(n) for n in names), (blueprint_id, names)
    with pytest.raises(IndexError, match="no attribute 'image_size'"):
        carla_double.ActorBlueprint("sensor.camera.rgb").set_attribute("image_size", "64")


def test_weather_presets_of_the_double_are_the_clients():
    from carla_capture.config import CARLA_PRESETS, WEATHER_FIELDS

    real = sorted(n for n in dir(carla.WeatherParameters) if n[0].isupper())
    assert real == sorted(CARLA_PRESETS)
    assert list(carla_double.WEATHER_FIELDS) == list(WEATHER_FIELDS)
    for name in CARLA_PRESETS:
        mine, theirs = (
            getattr(carla_double.WeatherParameters, name),
            getattr(carla.WeatherParameters, name),
        )
        for f in WEATHER_FIELDS:
            assert getattr(mine, f) == pytest.approx(getattr(theirs, f), abs=1e-5), (name, f)
