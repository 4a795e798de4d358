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
    """(name, has_default) of each parameter, after self, for each overload in a Boost.Python docstring."""
    out = []
    for match in _SIGNATURE.finditer(doc or ""):
        params = re.findall(r"\((\w+)\)(\w+)(=[^,\]\[]*)?", match.group(1))
        out.append([(name, bool(default)) for _, name, default in params][1:])
    return out


def _fits(params: list[tuple[str, bool]], use: Use) -> bool:
    required = sum(not has_default for _, has_default in params)
    names = [name for name, _ in params]
    given = use.args + len(use.kwargs)
    return required <= given <= len(params) and all(k in names[use.args:] for k in use.kwargs)


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

    declared = {u.owner.split(".")[0] or u.member for u in CONTRACT} | {u.member for u in CONTRACT if u.owner == ""}
    source = "".join(p.read_text() for p in Path(backend.__file__).parent.glob("*.py") if p.name != "contract.py")
    member = r"carla\.([A-Z]\w*|command)\b"
    used = set(re.findall(r"(?<![\w.])" + member, source)) | set(re.findall(r"self\." + member, source))
    assert used and used <= declared, used - declared
