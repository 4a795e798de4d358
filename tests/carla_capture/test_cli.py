"""The capture CLI: worked examples run, and bad input gets one line, exit 2, no traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from carla_capture.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def assert_clean_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [
        ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("recording")
    ]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def _record(out: Path, towns: Path, *extra: str):
    return run(
        "record",
        "--backend",
        "synthetic",
        "--town",
        "Town01",
        "--clips",
        "1",
        "--frames",
        "3",
        "--out",
        str(out),
        "--town-dir",
        str(towns),
        *extra,
    )


def test_record_and_inspect(tmp_path, tiny_towns):
    result = _record(tmp_path, tiny_towns, "--set", "clips=2")
    assert result.exit_code == 0, result.output
    assert "Town01: 2/2 clips" in result.stdout
    info = json.loads(run("inspect", str(tmp_path), "--json").stdout)
    assert info["clips"] == 2 and info["frames"] == 6 and info["towns"]["Town01"]["clips"] == 2
    assert info["resolution"] == ["96x48"] and info["codec"] == ["lz4hc"]
    assert abs(sum(info["class_histogram"].values()) - 1.0) < 1e-3
    text = run("inspect", str(tmp_path)).stdout
    assert "Town01" in text and "Roads" in text
    sheet = tmp_path / "sheet.png"
    assert run("inspect", str(tmp_path), "--sheet", str(sheet), "--rows", "3").exit_code == 0
    assert cv2.imread(str(sheet)).shape == (3 * 48, 3 * 96, 3)


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--town", "Town99"], ["unknown town 'Town99'", "Town01"]),
        (["--town", "../T/Town01"], ["is a path, not a town name", "--town-dir"]),
        (["--town", ""], ["town", "empty"]),
        (["--clips", "0"], ["clips", "at least 1"]),
        (["--frames", "-3"], ["frames", "at least 1"]),
        (["--fps", "5"], ["fps", "0.1 s"]),
        (["--fps", "nan"], ["fps", "finite"]),
        (["--fps", "inf"], ["fps", "finite"]),
        (["--frames", "99999999999"], ["frames", "at most 100,000"]),
        (["--vehicles", "-3"], ["--vehicles", "-3", "x>=0"]),  # a field's bounds: click's range
        (["--set", "carla.vehicles=-3"], ["carla.vehicles", "got -3", "--set carla.vehicles="]),
        (["--seed", "-1"], ["seed", "--seed N"]),
        (["--set", "nosuch=1"], ["unknown key 'nosuch'"]),
        (["--set", "frames"], ["KEY=VALUE"]),
        (["--timeout", "inf"], ["--timeout", "finite number"]),
        (["--server-wait", "nan"], ["--server-wait", "finite number"]),
        (["--set", "carla.restart_backoff_s=inf"], ["restart_backoff_s", "finite number"]),
        (["--out", "o\udcff\udcfe"], ["--out", "o\\xff\\xfe is not UTF-8 text"]),
        (["--set", "out=o\udcff"], ["out: o\\xff is not UTF-8 text"]),
    ],
)
def test_record_bad_options(tmp_path, tiny_towns, args, needles):
    assert_clean_error(_record(tmp_path, tiny_towns, *args), *needles)


def test_unknown_town_points_to_town_dir_not_the_installed_package(tmp_path):
    """A pip user was told to add a file inside site-packages."""
    result = run("record", "--backend", "synthetic", "--town", "Town99", "--out", str(tmp_path))
    assert_clean_error(result, "unknown town 'Town99'", "Town01", "--town-dir FOLDER")
    assert "town_configs" not in result.stderr and "site-packages" not in result.stderr


def test_config_file_that_is_not_utf8(tmp_path, tiny_towns):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe frames = 3")
    assert_clean_error(_record(tmp_path, tiny_towns, "--config", str(bad)), "not UTF-8")


def test_record_out_is_a_file(tmp_path, tiny_towns):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    assert_clean_error(_record(target, tiny_towns), "is a file")
    assert target.read_text() == "keep me"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_carla_server_is_a_clean_error_within_the_timeout(tmp_path, tiny_towns):
    pytest.importorskip("carla")  # the real client, talking to a port where nothing listens
    import time

    port = _free_port()
    start = time.monotonic()
    result = run(
        "record",
        "--town",
        "Town01",
        "--clips",
        "1",
        "--out",
        str(tmp_path),
        "--town-dir",
        str(tiny_towns),
        "--port",
        str(port),
        "--timeout",
        "1",
    )
    assert time.monotonic() - start < 8
    assert_clean_error(
        result,
        f"no CARLA server answered at 127.0.0.1:{port} within 1 s",
        "CarlaUE4.sh",
        "--backend synthetic",
    )


def test_bad_town_file_names_file_and_key(tmp_path, tiny_towns):
    towns = tmp_path / "towns"
    shutil.copytree(tiny_towns, towns)
    path = towns / "Town01.toml"
    path.write_text(path.read_text().replace("hfov = 90.0", "hfov = 400.0"))
    assert_clean_error(_record(tmp_path / "out", towns), "Town01.toml", "camera.hfov")


@pytest.mark.parametrize("kind", ["foreign", "truncated", "future"])
def test_damaged_shard_in_dataset(tmp_path, tiny_towns, kind):
    assert _record(tmp_path, tiny_towns).exit_code == 0
    shard = tmp_path / "Town01" / "Town01-s0-00001.h5"
    if kind == "foreign":
        shard = tmp_path / "Town01" / "Town01-00002.h5"
        with h5py.File(shard, "w") as h5:
            h5["x"] = np.arange(3)
    elif kind == "truncated":
        shard.write_bytes(shard.read_bytes()[:1000])
    else:
        with h5py.File(shard, "a") as h5:
            h5.attrs["format_version"] = 9
    before = {p: p.read_bytes() for p in (tmp_path / "Town01").glob("*.h5")}
    assert_clean_error(run("inspect", str(tmp_path)), str(shard.name))
    if kind == "foreign":  # a shard of no writer (an importer's name) is read at every start
        assert_clean_error(_record(tmp_path, tiny_towns, "--clips", "2"), str(shard.name))
    else:  # a writer's own shards are indexed, not opened: the damage is verify's to find
        assert _record(tmp_path, tiny_towns, "--clips", "2").exit_code == 0
    assert {p: p.read_bytes() for p in before} == before


def test_inspect_missing_and_empty(tmp_path):
    assert_clean_error(run("inspect", str(tmp_path / "nope")), "does not exist")
    assert_clean_error(run("inspect", str(tmp_path)), "no .h5 shards")


def test_console_script_help():
    exe = shutil.which("capture", path=os.path.dirname(sys.executable))
    assert exe, "the capture console script is installed"
    out = subprocess.run(
        [exe, "record", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "Examples:" in out and "--backend synthetic" in out


@pytest.mark.parametrize(
    "program, args, needle",
    [
        ("capture", ["record", "--bogus"], "No such option '--bogus'"),
        ("capture", ["split", "README.md"], "is a file"),
        ("train", ["run", "pipeline", "--stage", "stage9"], "'stage9' is not one of"),
        ("train", ["run", "stage1"], "train run stage1 is now: train run pipeline --stage stage1"),
        ("train", ["run", "pipeline", "--preset", "huge"], "huge"),
        ("train", ["run", "sim2real", "--preset", "lowres"], "'lowres' is not one of"),
        ("train", ["run", "forecast", "--lr", "nan"], "not a finite"),
        ("train", ["run", "forecast", "--width", "2"], "x>=4"),
        (
            "train",
            ["predict", "pipeline", "--run", "r", "--video", "v.mp4", "--hfov", "nan"],
            "not a finite",
        ),
        (
            "train",
            ["predict", "pipeline", "--run", "r", "--video", "v.mp4", "--hfov", "-10"],
            "5.0<x<170.0",
        ),
        (
            "train",
            ["predict", "pipeline", "--run", "r", "--video", "v.mp4", "--hfov", "inf"],
            "not a finite",
        ),
        ("train", ["predict", "sim2real", "--run", "r", "p", "--rows", "0"], "1<=x<=64"),
        ("train", ["live", "--run", "r", "--web-port", "0"], "1<=x<=65535"),
        ("train", ["eval", "--run", "r"], "name the task first"),
        ("train", ["eval", "pipeline", "--run", "r\udcff"], "r\\xff is not UTF-8 text"),
        ("capture", ["verify", "d\udcff"], "d\\xff is not UTF-8 text"),
        ("capture", ["inspect", "d", "--rows", "0"], "1<=x<=20"),
    ],
)
def test_usage_errors_are_one_line_with_the_help_to_read(cli, program, args, needle):
    line = cli.error(getattr(cli, program)(*args), needle)
    assert line.endswith("--help)"), line
