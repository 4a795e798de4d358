"""``--serve``: the live data listens where the note says, the loopback address unless another is
asked for; the note is truthful about the web viewer, which Rerun binds to every interface."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from clipcore.dashboard import Sink
from clipcore.errors import CaptureError

ROOT = Path(__file__).resolve().parents[2]

#: Serves a dashboard, then prints the listening TCP sockets (hex address, port) as JSON.
SERVE = """
import json, sys, time
from clipcore.dashboard import Sink, open_stream
web, grpc, bind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
stream = open_stream("test", Sink("serve", web_port=web, grpc_port=grpc, bind=bind), False)
found = []
for _ in range(50):
    found = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(name).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                address, port = fields[1].split(":")
                found.append([address, int(port, 16)])
    if {web, grpc} <= {port for _, port in found}:
        break
    time.sleep(0.1)
print(json.dumps(found))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(bind: str) -> tuple[dict[int, set[str]], str, int, int]:
    """Listening addresses by port while a dashboard is served, the note it logged, the ports."""
    web, grpc = _free_port(), _free_port()
    done = subprocess.run(
        [sys.executable, "-c", SERVE, str(web), str(grpc), bind],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    by_port: dict[int, set[str]] = {}
    for address, port in json.loads(done.stdout.splitlines()[-1]):
        by_port.setdefault(port, set()).add(address)
    return by_port, done.stderr, web, grpc


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
def test_served_data_listens_on_loopback_only_by_default():
    pytest.importorskip("rerun")
    by_port, note, web, grpc = _serve("127.0.0.1")
    assert by_port[grpc] == {"0100007F"}  # 127.0.0.1, nothing else
    assert f"live camera data on 127.0.0.1:{grpc} (this machine only)" in note
    # Rerun's web viewer server cannot be bound: the note says so instead of "localhost"
    assert by_port[web] & {"00000000", "00000000000000000000000000000000"}
    assert f"port {web} of every interface" in note and "cannot bind it" in note
    assert f"http://localhost:{web}/?url=rerun%2Bhttp://127.0.0.1:{grpc}/proxy" in note


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
def test_exposing_the_data_is_an_explicit_choice_that_is_said():
    pytest.importorskip("rerun")
    by_port, note, _, grpc = _serve("0.0.0.0")
    assert by_port[grpc] & {"00000000", "00000000000000000000000000000000"}
    assert "reachable from the network WITHOUT authentication" in note


def test_bind_must_be_an_address():
    with pytest.raises(CaptureError, match="--bind localhost: not an IP address"):
        Sink("serve", bind="localhost")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--serve", "--bind", "everywhere"], "--bind everywhere: not an IP address"),
        (["--bind", "0.0.0.0"], "--bind 0.0.0.0 is where --serve listens: pass --serve too"),
    ],
)
def test_live_bad_bind_is_one_line(cli, tmp_path, args, words):
    cli.error(cli.train("live", "--run", tmp_path, *args), words)
