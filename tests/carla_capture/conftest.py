"""Fixtures of the CARLA backend tests: the server double registered as the ``carla`` module."""

from __future__ import annotations

import contextlib
import json
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

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


STANDIN = Path(__file__).resolve().parents[1] / "carla_standin.py"


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def standin(fresh_client, tmp_path):
    """``standin(faults, scene=False, threaded=False)``: a stand-in server process
    (tests/carla_standin.py) that holds what must outlive a capture worker, registered with the
    double. Its ``server_cmd`` lets ``--server-cmd`` launch it; ``launch()`` starts it here (for
    runs without ``--server-cmd``); ``state()`` reads its state file."""
    procs = []

    def make(faults: dict | None = None, scene: bool = False, threaded: bool = False):
        port, state = free_port(), tmp_path / f"standin-{len(procs)}.json"
        cmd = (
            f"{shlex.quote(sys.executable)} {shlex.quote(str(STANDIN))} --port {{port}} "
            f"--state {shlex.quote(str(state))} --faults {shlex.quote(json.dumps(faults or {}))}"
        )
        double.SERVERS[("127.0.0.1", port)] = double.FakeServer(
            remote=("127.0.0.1", port), scene=scene, threaded=threaded
        )

        def launch() -> None:
            proc = subprocess.Popen(shlex.split(cmd.replace("{port}", str(port))))
            procs.append(proc)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    return
                time.sleep(0.05)
            raise RuntimeError("the stand-in server did not start")

        return SimpleNamespace(
            port=port,
            state=lambda: json.loads(state.read_text()),
            server_cmd=cmd,
            launch=launch,
        )

    yield make
    for proc in procs:
        proc.kill()
        proc.wait()
    double.SERVERS.clear()
