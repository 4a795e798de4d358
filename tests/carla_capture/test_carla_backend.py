"""The CARLA backend against the in-process server double (tests/carla_double.py)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from carla_capture.backends.carla import session
from carla_capture.backends.carla.decode import decode_depth, decode_rgb, decode_semantic
from carla_capture.config import CaptureConfig
from carla_capture.record import record, shard_paths
from clipcore.errors import BackendUnavailableError, CaptureError, ConfigError, FreshProcess
from clipcore.shards import ShardReader
from tests import carla_double as double

PORT = 2000


def _cfg(tmp_path, towns, **carla) -> CaptureConfig:
    settings = {
        "warmup_ticks": 2,
        "sensor_timeout": 0.3,
        "restart_backoff_s": 0.0,
        "vehicles": 3,
        "walkers": 2,
        "timeout": 1.0,
        "port": PORT,
        **carla,
    }
    return CaptureConfig(
        backend="carla",
        town="Town03",
        clips=3,
        frames=4,
        out=tmp_path,
        town_dir=towns,
        carla=settings,
    )


def _clips(tmp_path):
    clips = []
    for path in shard_paths(tmp_path / "Town03"):
        with ShardReader(path) as reader:
            clips += [reader.read_clip(cid) for cid in reader.clip_ids()]
    return clips


def _assert_good(clips, n=3):
    """n clips, every frame's images decoded from that very frame, poses from the image itself."""
    assert len(clips) == n
    for clip in clips:
        steps = np.diff([f.frame for f in clip.frames])
        assert np.all(steps == 1)
        for f in clip.frames:
            h, w = f.semantic.shape
            np.testing.assert_allclose(f.depth, double.expected_depth(h, w, f.frame), atol=1e-4)
            assert np.array_equal(f.semantic, double.expected_tags(h, w, f.frame))
            assert f.rgb[0, 1, 0] == (3 + f.frame) % 256  # red channel of pixel (0, 1)


def _assert_clean_exit(server):
    assert server.actors == {}, "every actor destroyed"
    stops = {a for e, a in server.events if e == "stop"}
    for i, (event, actor) in enumerate(server.events):
        if event == "destroy" and actor in stops:
            assert ("stop", actor) in server.events[:i], (
                "sensors are stopped before they are destroyed"
            )
    assert server.settings.synchronous_mode is False and server.tm_sync is False, (
        "settings restored"
    )


def test_records_synchronized_clips_and_cleans_up(tmp_path, tiny_towns, server):
    summary = record(_cfg(tmp_path, tiny_towns))
    assert summary.recorded == 3
    _assert_good(_clips(tmp_path))
    assert server.loads == 1 and server.map_name == "Town03"
    # synchronous mode at 1/fps applied after load_world reset the settings, then restored
    assert server.settings_log[0] == (True, 0.05) and server.settings_log[-1] == (False, None)
    assert server.tm_seed == 0 and server.pedestrians_seed == 0
    assert server.weather is not None and server.weather["cloudiness"] >= 0
    _assert_clean_exit(server)
    clip = _clips(tmp_path)[0]
    assert (
        clip.backend == "carla"
        and clip.attrs["simulator"] == "CARLA 0.9.16"
        and clip.attrs["map"] == "Town03"
    )
    np.testing.assert_allclose(
        clip.frames[0].carla_transform[3], -3.0
    )  # the rig's pitch, from the image's transform


def test_reordered_and_stale_measurements_are_matched_by_frame(tmp_path, tiny_towns, server):
    server.reorder = True
    record(_cfg(tmp_path, tiny_towns))
    _assert_good(_clips(tmp_path))


def test_delayed_measurements_are_waited_for(tmp_path, tiny_towns, server):
    server.delay_s = {"depth": 0.05}
    record(_cfg(tmp_path, tiny_towns, sensor_timeout=1.0))
    _assert_good(_clips(tmp_path))


def test_a_dropped_measurement_means_a_retried_clip(tmp_path, tiny_towns, server, caplog):
    server.drop = {("depth", 1014)}  # a frame of the second clip
    with caplog.at_level(logging.WARNING):
        record(_cfg(tmp_path, tiny_towns))
    assert "sent no measurement of frame 1014" in caplog.text
    _assert_good(_clips(tmp_path))
    _assert_clean_exit(server)


def test_a_pose_that_disagrees_with_the_ego_means_a_retried_clip(
    tmp_path, tiny_towns, server, caplog
):
    server.glitch = {1008: 3.0}
    with caplog.at_level(logging.WARNING):
        record(_cfg(tmp_path, tiny_towns))
    assert "from the ego's mount point" in caplog.text
    _assert_good(_clips(tmp_path))


def test_a_sensor_that_never_answers_fails_cleanly(tmp_path, tiny_towns, server):
    server.delay_s = {"semantic_segmentation": 5.0}
    with pytest.raises(CaptureError, match="failed 2 times"):
        record(_cfg(tmp_path, tiny_towns, sensor_timeout=0.1, clip_attempts=2))
    _assert_clean_exit(server)


def test_a_process_that_lost_its_server_resumes_only_from_a_new_process(
    tmp_path, tiny_towns, server, caplog
):
    """Unsupervised, a lost server ends the run with one line (the process keeps the lost
    server's Traffic Manager); running the same command again, as a new process, resumes with
    exactly N clips."""
    server.crash_at_ticks = {12, 24}
    for _ in range(2):
        with pytest.raises(FreshProcess, match="holds the lost server's Traffic Manager"):
            record(_cfg(tmp_path, tiny_towns, supervise=False))
        double.reset_process()  # what a new process starts with
        session._TM_PORTS.clear()
    record(_cfg(tmp_path, tiny_towns, supervise=False))
    assert server.epoch == 2 and "reconnecting" not in caplog.text
    _assert_good(_clips(tmp_path))
    _assert_clean_exit(server)


def test_a_setup_that_fails_before_any_traffic_manager_reconnects_in_process(
    tmp_path, tiny_towns, server, caplog
):
    server.map_name = "Town03"
    original, calls = double.Client.get_world, {"n": 0}

    def lost_once(self):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("time-out of 1000ms while waiting for the simulator")
        return original(self)

    with caplog.at_level(logging.WARNING), pytest.MonkeyPatch.context() as patch:
        patch.setattr(double.Client, "get_world", lost_once)
        record(_cfg(tmp_path, tiny_towns))
    assert "reconnecting (1 of 3)" in caplog.text
    _assert_good(_clips(tmp_path))


def test_ctrl_c_restores_settings_and_destroys_actors(tmp_path, tiny_towns, server, monkeypatch):
    calls = {"n": 0}
    original = double.World.tick

    def interrupted(self, seconds=10.0):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return original(self, seconds)

    monkeypatch.setattr(double.World, "tick", interrupted)
    with pytest.raises(KeyboardInterrupt):
        record(_cfg(tmp_path, tiny_towns))
    _assert_clean_exit(server)


def test_version_mismatch_warns_with_both_versions(tmp_path, tiny_towns, server, caplog):
    server.version = "0.9.15"
    with caplog.at_level(logging.WARNING):
        record(_cfg(tmp_path, tiny_towns))
    assert "0.9.16" in caplog.text and "0.9.15" in caplog.text


def test_unknown_map_lists_the_servers_maps(tmp_path, tiny_towns, server):
    server.maps = ("Town01", "Town02")
    with pytest.raises(ConfigError, match="available maps: Town01, Town02"):
        record(_cfg(tmp_path, tiny_towns))


def test_no_server_names_the_address(tmp_path, tiny_towns, server):
    with pytest.raises(
        BackendUnavailableError, match="no CARLA server answered at 127.0.0.1:2999.*CarlaUE4.sh"
    ):
        record(_cfg(tmp_path, tiny_towns, port=2999))


def test_town10_is_town10hd(tiny_towns, caplog):
    with caplog.at_level(logging.WARNING):
        assert CaptureConfig(town="Town10", town_dir=tiny_towns).town == "Town10HD"
    assert "no Town10" in caplog.text


class _Image:
    def __init__(self, bgra: list[list[tuple[int, int, int, int]]]) -> None:
        arr = np.array(bgra, dtype=np.uint8)
        self.raw_data, self.height, self.width = arr.tobytes(), arr.shape[0], arr.shape[1]


def test_decoding_against_hand_computed_encodings():
    # depth: (B, G, R) = (0, 0, 1) is one code step;
    # 12.345 m is code 207115 = 3 * 65536 + 41 * 256 + 11
    img = _Image([[(0, 0, 1, 255), (3, 41, 11, 255), (255, 255, 255, 255), (0, 1, 0, 255)]])
    np.testing.assert_allclose(
        decode_depth(img)[0],
        [1000 / 16777215, 207115 / 16777215 * 1000, 1000.0, 256 / 16777215 * 1000],
        rtol=1e-6,
    )
    assert abs(decode_depth(img)[0, 1] - 12.345) < 6e-5
    # semantic: the tag is the red channel (index 2 of BGRA)
    assert decode_semantic(_Image([[(9, 9, 14, 255), (0, 0, 28, 255)]])).tolist() == [[14, 28]]
    # rgb: BGRA -> RGB
    assert decode_rgb(_Image([[(10, 20, 30, 255)]])).tolist() == [[[30, 20, 10]]]


def test_servers_option_runs_the_servers_as_tasks_of_one_plan(tmp_path, tiny_towns):
    from carla_capture.servers import parse_servers, server_commands

    cfg = CaptureConfig(
        town="Town03",
        clips=5,
        seed=7,
        out=tmp_path,
        town_dir=tiny_towns,
        carla={"servers": ("127.0.0.1:2000", "10.0.0.2:2002")},
    )
    commands = dict(server_commands(cfg))
    assert list(commands) == ["127.0.0.1:2000", "10.0.0.2:2002"]
    first, second = (" ".join(c) for c in commands.values())
    for k, line in enumerate((first, second)):  # same plan: seed and clips; task k of 2
        assert "clips=5" in line and "seed=7" in line and f"--task-index {k} --num-tasks 2" in line
    assert '"tm_port":8000' in first and '"port":2002' in second and '"tm_port":8001' in second
    with pytest.raises(ConfigError, match="host:port"):
        parse_servers(("nohost",))


def test_servers_on_one_host_closer_than_their_ports_are_refused():
    """A server on RPC port P also binds P+1 (streaming) and P+2 (secondary)."""
    from carla_capture.servers import parse_servers

    with pytest.raises(ConfigError, match="also binds P\\+1 and P\\+2.*2000, 2004"):
        parse_servers(("127.0.0.1:2000", "127.0.0.1:2002"))
    assert parse_servers(("127.0.0.1:2000", "127.0.0.1:2004", "10.0.0.2:2001")) == [
        ("127.0.0.1", 2000),
        ("127.0.0.1", 2004),
        ("10.0.0.2", 2001),
    ]


def test_servers_inside_an_array_task_are_sub_tasks(tmp_path, tiny_towns, monkeypatch):
    from carla_capture.servers import server_commands

    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    cfg = CaptureConfig(
        town="Town03",
        out=tmp_path,
        town_dir=tiny_towns,
        carla={"servers": ("2",), "server_cmd": "CarlaUE4.sh -carla-rpc-port={port}"},
    )
    lines = [" ".join(c) for _, c in server_commands(cfg)]
    assert [True, True] == [
        "--task-index 2 --num-tasks 6" in lines[0],
        "--task-index 3 --num-tasks 6" in lines[1],
    ]


def test_every_server_list_in_the_docs_and_help_keeps_ports_4_apart(cli):
    """A server on RPC port P also binds P+1 and P+2: documented second servers on P+2 collided."""
    import itertools
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    texts = {p.name: p.read_text() for p in [root / "README.md", *(root / "docs").glob("*.md")]}
    texts["capture record --help"] = cli.capture("record", "--help").output
    texts["capture.sbatch"] = (root / "scripts/slurm/capture.sbatch").read_text()
    lists = 0
    for name, text in texts.items():
        for spec in re.findall(r"--servers ((?:[\w.]+:\d+,?)+)", text):
            ports = [int(p) for p in re.findall(r":(\d+)", spec)]
            lists += 1
            assert all(b - a >= 4 for a, b in itertools.pairwise(ports)), (name, spec)
        launched = [int(p) for p in re.findall(r"-carla-rpc-port=(\d+)", text)]
        assert (
            len(set(launched)) < 2
            or min(abs(a - b) for a in set(launched) for b in set(launched) if a != b) >= 4
        ), (name, launched)
    assert lists >= 2
    assert "4 * TASK" in texts["capture.sbatch"]
