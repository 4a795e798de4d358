"""Fixtures of the CARLA backend tests: the server double registered as the ``carla`` module."""

from __future__ import annotations

import sys

import pytest

from tests import carla_double as double


@pytest.fixture
def server(monkeypatch):
    """A :class:`FakeServer` on 127.0.0.1:2000, with the double in ``sys.modules["carla"]``."""
    monkeypatch.setitem(sys.modules, "carla", double)
    fake = double.FakeServer()
    double.SERVERS.clear()
    double.SERVERS[("127.0.0.1", 2000)] = fake
    yield fake
    double.SERVERS.clear()
