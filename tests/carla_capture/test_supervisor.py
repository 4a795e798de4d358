"""``capture record`` against a stand-in server process that hangs, crashes and stays down:
the supervisor restarts the worker on a stalled heartbeat, relaunches the server through
``--server-cmd``, and the run ends with exactly the requested clips."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from carla_capture.cli import main
from carla_capture.record import record, shard_paths
from carla_capture.supervisor import terminate_like_interrupt
from clipcore.shards import ShardReader
from tests import carla_double as double
from tests.conftest import write_towns

STANDIN = Path(__file__).resolve().parents[1] / "carla_standin.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clip_frames(out: Path, scene: bool = False) -> list[list[int]]:
    """Frame numbers of every clip, after checking that each frame's semantic and depth images are
    the ones the double sent at that frame (with ``scene``: rendered from that frame's pose)."""
    clips = []
    for path in shard_paths(out / "Town03"):
        with ShardReader(path) as reader:
            for cid in reader.clip_ids():
                clip = reader.read_clip(cid)
                for f in clip.frames:
                    h, w = f.semantic.shape
                    if scene:
                        x, y, z, pitch, yaw, roll = f.carla_transform
                        pose = double.Transform(
                            double.Location(x, y, z), double.Rotation(pitch, yaw, roll)
                        )
                        _, tags, metres = double.Scene("Town03").render(
                            w, h, clip.camera["hfov"], pose
                        )
                    else:
                        tags, metres = (
                            double.expected_tags(h, w, f.frame),
                            double.expected_depth(h, w, f.frame),
                        )
                    assert np.array_equal(f.semantic, tags), "mismatched frame"
                    np.testing.assert_allclose(f.depth, metres, atol=1e-4)
                clips.append([f.frame for f in clip.frames])
    return clips


def test_long_run_survives_a_hung_tick_and_two_crashes(tmp_path, monkeypatch, caplog):
    towns = write_towns(tmp_path / "towns", 128, 64)  # verify needs some pixels
    port, state = _free_port(), tmp_path / "standin.json"
    # tick 30 hangs forever; tick 60 crashes the server for 5 s; tick 100 kills it for good
    faults = json.dumps({"hang": [30], "crash": {"60": 5, "100": -1}})
    server_cmd = (
        f"{shlex.quote(sys.executable)} {shlex.quote(str(STANDIN))} --port {{port}} "
        f"--state {shlex.quote(str(state))} --faults {shlex.quote(faults)}"
    )
    monkeypatch.setitem(sys.modules, "carla", double)
    monkeypatch.setitem(
        double.SERVERS,
        ("127.0.0.1", port),
        double.FakeServer(remote=("127.0.0.1", port), threaded=True, scene=True),
    )
    out = tmp_path / "data"
    result = CliRunner().invoke(
        main,
        [
            "record",
            "--town",
            "Town03",
            "--clips",
            "30",
            "--frames",
            "3",
            "--warmup-ticks",
            "1",
            "--out",
            str(out),
            "--town-dir",
            str(towns),
            "--port",
            str(port),
            "--vehicles",
            "2",
            "--walkers",
            "1",
            "--timeout",
            "1",
            "--sensor-timeout",
            "1",
            "--stall-timeout",
            "1.5",
            "--server-wait",
            "15",
            "--max-restarts",
            "4",
            "--server-cmd",
            server_cmd,
            "--set",
            "carla.restart_backoff_s=0",
            "--set",
            "clips_per_shard=10",
        ],
    )
    assert result.exit_code == 0, result.output
    clips = _clip_frames(out, scene=True)
    assert len(clips) == 30 and all(np.all(np.diff(f) == 1) for f in clips)
    final = json.loads(state.read_text())
    assert final["launches"] == 2, "relaunched once through --server-cmd"
    assert sorted(final["fired"]) == ["100", "30", "60"], final
    assert final["sync"] is False and final["delta"] is None and final["tm_sync"] is False, (
        "left asynchronous"
    )
    # three worker restarts: the hung tick; the 5 s outage, waited out by a new worker (the old
    # one's client keeps the lost server's Traffic Manager); the server that exited, relaunched
    assert caplog.text.count("restarting the recording worker") == 3
    assert caplog.text.count("(reconnecting from a new worker)") == 1
    assert "no simulator tick for 1.5 s" in caplog.text
    assert "relaunching the CARLA server" in caplog.text
    from carla_capture.config import VerifyConfig
    from carla_capture.verify import verify_dataset

    # The double renders the embedded simulator's town from each camera's true pose: every check
    # of capture verify applies (sync, timing, sky at the far plane, reprojection, frozen sensors).
    reports = verify_dataset(out, VerifyConfig())
    assert len(reports) == 30
    failed = {r.clip_id: r.failures for r in reports if r.failures}
    assert failed == {}, failed


def test_sigterm_cleans_up_like_ctrl_c(tmp_path, tiny_towns, server, monkeypatch):
    original, calls = double.World.tick, {"n": 0}

    def terminated(self, seconds=10.0):
        calls["n"] += 1
        if calls["n"] == 9:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, seconds)

    monkeypatch.setattr(double.World, "tick", terminated)
    from carla_capture.config import CaptureConfig

    cfg = CaptureConfig(
        backend="carla",
        town="Town03",
        clips=3,
        frames=4,
        out=tmp_path,
        town_dir=tiny_towns,
        carla={"warmup_ticks": 2, "vehicles": 1, "walkers": 0, "timeout": 1.0},
    )
    with pytest.raises(KeyboardInterrupt), terminate_like_interrupt():
        record(cfg)
    assert (
        server.actors == {}
        and server.settings.synchronous_mode is False
        and server.tm_sync is False
    )


def test_servers_n_launches_n_servers_on_distinct_ports_and_gpus(tmp_path, tiny_towns):
    from carla_capture.config import CaptureConfig
    from carla_capture.servers import server_commands
    from clipcore.errors import ConfigError

    cmd = "CarlaUE4.sh -RenderOffScreen -carla-rpc-port={port} -graphicsadapter={gpu}"
    cfg = CaptureConfig(
        town="Town03",
        clips=4,
        out=tmp_path,
        town_dir=tiny_towns,
        carla={"servers": ("2",), "server_cmd": cmd},
    )
    commands = server_commands(cfg)
    assert [address for address, _ in commands] == ["127.0.0.1:2000", "127.0.0.1:2004"]
    carla = [json.loads(c[c.index("--set", len(c) - 2) + 1].split("=", 1)[1]) for _, c in commands]
    assert [(c["port"], c["tm_port"], c["server_gpu"], c["server_cmd"]) for c in carla] == [
        (2000, 8000, 0, cmd),
        (2004, 8001, 1, cmd),
    ]
    with pytest.raises(ConfigError, match="needs --server-cmd"):
        server_commands(
            cfg.model_copy(update={"carla": cfg.carla.model_copy(update={"server_cmd": None})})
        )


def test_a_worker_that_dies_is_restarted_and_resumes(
    tmp_path, tiny_towns, server, monkeypatch, caplog
):
    """A C++ abort (exit 134) in the worker, once: the supervisor restarts it; exactly N clips."""
    from carla_capture.config import CaptureConfig
    from carla_capture.supervisor import supervised_record

    marker, original, calls = tmp_path / "died", double.World.tick, {"n": 0}

    def abort_once(self, seconds=10.0):
        calls["n"] += 1
        if calls["n"] == 15 and not marker.exists():
            marker.touch()
            os._exit(134)
        return original(self, seconds)

    monkeypatch.setattr(double.World, "tick", abort_once)
    cfg = CaptureConfig(
        backend="carla",
        town="Town03",
        clips=4,
        frames=3,
        out=tmp_path / "data",
        town_dir=tiny_towns,
        carla={"warmup_ticks": 1, "vehicles": 1, "walkers": 0, "timeout": 1.0},
    )
    (summary,) = supervised_record(cfg)
    assert "the worker died (exit code 134)" in caplog.text and marker.exists()
    assert summary.existing + summary.recorded == 4 and len(_clip_frames(tmp_path / "data")) == 4


def test_giving_up_after_a_killed_worker_still_leaves_the_server_async(tmp_path, monkeypatch):
    towns = write_towns(tmp_path / "towns", 64, 32)
    port, state = _free_port(), tmp_path / "standin.json"
    server_cmd = (
        f"{shlex.quote(sys.executable)} {shlex.quote(str(STANDIN))} --port {{port}} "
        f"--state {shlex.quote(str(state))} --faults {shlex.quote(json.dumps({'hang': [8]}))}"
    )
    monkeypatch.setitem(sys.modules, "carla", double)
    monkeypatch.setitem(
        double.SERVERS, ("127.0.0.1", port), double.FakeServer(remote=("127.0.0.1", port))
    )
    result = CliRunner().invoke(
        main,
        [
            "record",
            "--town",
            "Town03",
            "--clips",
            "5",
            "--frames",
            "3",
            "--warmup-ticks",
            "1",
            "--out",
            str(tmp_path / "data"),
            "--town-dir",
            str(towns),
            "--port",
            str(port),
            "--vehicles",
            "1",
            "--walkers",
            "0",
            "--timeout",
            "1",
            "--stall-timeout",
            "1",
            "--max-restarts",
            "0",
            "--server-cmd",
            server_cmd,
        ],
    )
    assert result.exit_code == 2 and "gave up after 0 restarts" in result.stderr, result.output
    final = json.loads(state.read_text())
    assert final["fired"] == ["8"] and final["sync"] is False and final["delta"] is None
