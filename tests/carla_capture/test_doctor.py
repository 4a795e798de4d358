"""``capture doctor`` against the server double: its table, its JSON, the server left async."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from carla_capture.cli import main


def test_doctor_checks_the_double_and_prints_its_table(tiny_towns, standin):
    server = standin()
    server.launch()
    result = CliRunner().invoke(
        main,
        [
            "doctor",
            "--port",
            str(server.port),
            "--town",
            "Town03",
            "--town-dir",
            str(tiny_towns),
            "--timeout",
            "2",
            "--json",
        ],
    )
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    names = [
        "client library",
        "server answers",
        "versions",
        "map available",
        "map load",
        "traffic manager",
        "tick rate",
        "latency rgb",
        "latency semantic",
        "latency depth",
        "clip + reprojection",
        "left asynchronous",
    ]
    assert list(checks) == names
    assert all(checks[n]["passed"] for n in names if n != "clip + reprojection"), checks
    # the double's images are test patterns, not a scene: the reprojection check must say so
    assert not checks["clip + reprojection"]["passed"] and checks["clip + reprojection"]["fix"]
    assert result.exit_code == 1
    state = server.state()  # the checks ran in a child process; the server keeps the state
    assert state["map"] == "Town03" and state["sync"] is False and state["tm_sync"] is False
    table = CliRunner().invoke(
        main,
        ["doctor", "--port", str(server.port), "--town", "Town03", "--town-dir", str(tiny_towns)],
    )
    assert table.stdout.splitlines()[0].split()[:2] == ["check", "result"]
    assert "PASS" in table.stdout and "FAIL" in table.stdout


def test_doctor_without_a_server_is_one_failed_check(tiny_towns, server):
    result = CliRunner().invoke(
        main,
        ["doctor", "--port", "2999", "--town-dir", str(tiny_towns), "--timeout", "0.5", "--json"],
    )
    checks = json.loads(result.stdout)
    assert result.exit_code == 1 and [c["passed"] for c in checks] == [True, False]
    assert checks[0]["name"] == "client library"
    assert "no CARLA server answered at 127.0.0.1:2999" in checks[1]["detail"]


def test_doctor_without_the_carla_module_says_how_to_install_it(tiny_towns, monkeypatch):
    """With the [capture] extra only, doctor said the client library "died" talking to a port."""
    monkeypatch.setitem(sys.modules, "carla", None)  # import carla raises ImportError
    result = CliRunner().invoke(main, ["doctor", "--port", "2999", "--town-dir", str(tiny_towns)])
    assert result.exit_code == 1
    assert "client library" in result.stdout and "not installed" in result.stdout
    assert 'pip install "carla-temporal[carla]"' in result.stdout
    assert "died" not in result.stdout and "2999" not in result.stdout


def test_doctor_stops_a_hung_tick_within_the_stall_timeout(tiny_towns, standin):
    """A tick that never returns (CARLA #9172) hung capture doctor for good; it is now a failed
    check, and the server is left asynchronous. In a subprocess, so a hang fails the test."""
    server = standin({"hang": [12]})  # a tick of the tick-rate check, after the setup
    server.launch()
    code = (
        "import sys; from tests import carla_double as d; sys.modules['carla'] = d; "
        f"d.SERVERS[('127.0.0.1', {server.port})] = d.FakeServer(remote=('127.0.0.1', "
        f"{server.port})); from carla_capture.cli import main; main()"
    )
    args = ["doctor", "--port", str(server.port), "--town", "Town03", "--town-dir", str(tiny_towns)]
    args += ["--timeout", "1", "--stall-timeout", "2", "--json"]
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.returncode == 1, done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    assert (
        not checks["stopped"]["passed"]
        and "no answer from the server for 2 s" in (checks["stopped"]["detail"])
    )
    assert checks["left asynchronous"]["passed"], checks
    state = server.state()
    assert state["fired"] == ["12"] and state["sync"] is False
