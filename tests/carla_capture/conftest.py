"""Fixtures of the CARLA backend tests: the server double registered as the ``carla`` module."""

from __future__ import annotations

import sys

import pytest

from tests import carla_double as double


@pytest.fixture
def fresh_client(monkeypatch):
    """The double in ``sys.modules["carla"]``, with no client-library state of earlier tests:
    each test runs like a new process (no Traffic Manager held)."""
    from carla_capture.backends.carla import session

    monkeypatch.setitem(sys.modules, "carla", double)
    monkeypatch.setattr(session, "_TM_PORTS", set())
    double.reset_process()
    yield double
    double.reset_process()


@pytest.fixture
def server(fresh_client):
    """A :class:`FakeServer` on 127.0.0.1:2000, with the double in ``sys.modules["carla"]``."""
    fake = double.FakeServer()
    double.SERVERS.clear()
    double.SERVERS[("127.0.0.1", 2000)] = fake
    yield fake
    double.SERVERS.clear()
