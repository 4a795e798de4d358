"""``capture doctor`` against the server double: its table, its JSON, the server left async."""

from __future__ import annotations

import json

from click.testing import CliRunner

from carla_capture.cli import main


def test_doctor_checks_the_double_and_prints_its_table(tiny_towns, server):
    server.load_s = 0.5
    result = CliRunner().invoke(
        main,
        [
            "doctor",
            "--port",
            "2000",
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
    assert (
        server.map_name == "Town03"
        and server.settings.synchronous_mode is False
        and server.actors == {}
    )
    table = CliRunner().invoke(
        main, ["doctor", "--port", "2000", "--town", "Town03", "--town-dir", str(tiny_towns)]
    )
    assert table.stdout.splitlines()[0].split()[:2] == ["check", "result"]
    assert "PASS" in table.stdout and "FAIL" in table.stdout


def test_doctor_without_a_server_is_one_failed_check(tiny_towns, server):
    result = CliRunner().invoke(
        main,
        ["doctor", "--port", "2999", "--town-dir", str(tiny_towns), "--timeout", "0.5", "--json"],
    )
    checks = json.loads(result.stdout)
    assert result.exit_code == 1 and len(checks) == 1 and not checks[0]["passed"]
    assert "no CARLA server answered at 127.0.0.1:2999" in checks[0]["detail"]
