"""The CARLA backend against a double that fails like a real 0.9.16 server: slow map loads, a
server that stays down, sync mode and actors left by a dead run, a taken Traffic Manager port,
hung ticks and stale poses (see /docs/carla.md, "Server trouble")."""

from __future__ import annotations

import logging
import socket

import numpy as np
import pytest

from carla_capture.backends.carla import session
from carla_capture.config import CaptureConfig
from carla_capture.record import record, shard_paths
from clipcore.errors import FreshProcess, ServerGone
from clipcore.shards import ShardReader
from tests import carla_double as double


def _cfg(tmp_path, towns, **carla) -> CaptureConfig:
    settings = {
        "warmup_ticks": 2,
        "sensor_timeout": 0.3,
        "restart_backoff_s": 0.0,
        "vehicles": 3,
        "walkers": 2,
        "timeout": 1.0,
        "port": 2000,
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


def _frames(tmp_path) -> list[list[int]]:
    out = []
    for path in shard_paths(tmp_path / "Town03"):
        with ShardReader(path) as reader:
            out += [[f.frame for f in reader.read_clip(cid).frames] for cid in reader.clip_ids()]
    return out


def _assert_done(tmp_path, server, n=3):
    frames = _frames(tmp_path)
    assert len(frames) == n and all(np.all(np.diff(f) == 1) for f in frames)
    assert server.actors == {}
    assert server.settings.synchronous_mode is False and server.settings.fixed_delta_seconds is None
    assert server.tm_sync is False


def test_a_slow_map_load_gets_its_own_timeout(tmp_path, tiny_towns, server):
    server.load_s = 30.0  # longer than the 1 s client timeout, shorter than --map-timeout
    record(_cfg(tmp_path, tiny_towns, map_timeout=60.0))
    assert server.loads == 1 and server.map_name == "Town03"
    _assert_done(tmp_path, server)


def test_a_failed_setup_is_retried_like_a_lost_server(tmp_path, tiny_towns, server, caplog):
    server.load_s = 30.0  # longer than --map-timeout: the first setup fails, the load goes on
    with caplog.at_level(logging.WARNING):
        record(_cfg(tmp_path, tiny_towns, map_timeout=20.0))
    assert "while setting up" in caplog.text and "reconnecting (1 of 3)" in caplog.text
    assert server.loads == 1  # the retry finds the map loaded and does not load it again
    _assert_done(tmp_path, server)


def test_a_server_loading_a_map_stalls_every_call_and_is_waited_for(
    tmp_path, tiny_towns, server, caplog
):
    """While CARLA loads a map its game thread serves no call but the version and the map list:
    each one waits the client's timeout and fails. The retry must give the load its
    --map-timeout, not treat every stalled call as another lost server."""
    server.load_s = 30.0  # 20 s spent by load_world, 10 s left for the retry to wait out
    with caplog.at_level(logging.WARNING):
        record(_cfg(tmp_path, tiny_towns, map_timeout=20.0, timeout=1.0))
    assert "reconnecting (1 of 3)" in caplog.text and "reconnecting (2 of 3)" not in caplog.text
    assert server.loads == 1 and server.stalls == 1  # only load_world's own wait timed out
    _assert_done(tmp_path, server)


def test_a_loaded_map_is_not_loaded_again(tmp_path, tiny_towns, server):
    server.map_name = "Town03"
    record(_cfg(tmp_path, tiny_towns))
    assert server.loads == 0


def _supervised(tmp_path, towns, port, **carla) -> list:
    from carla_capture.supervisor import supervised_record

    return supervised_record(_cfg(tmp_path, towns, port=port, stall_timeout=3.0, **carla))


def test_a_lost_server_is_reconnected_from_a_new_worker(tmp_path, tiny_towns, standin, caplog):
    """CARLA's client keeps one Traffic Manager per port for the life of the process, bound to the
    server it was made for, and ``world.tick()`` ticks every one: a process that reconnects after
    a crash drives the new server with the dead one's (vehicles stop, the tick hangs). The
    reconnect must come from a new worker process, without a stall."""
    server = standin({"crash": {"12": 1.5}})  # down for 1.5 s at the 12th tick
    server.launch()
    with caplog.at_level(logging.WARNING):
        _supervised(tmp_path, tiny_towns, server.port, server_wait=20.0)
    assert "no simulator tick" not in caplog.text
    assert caplog.text.count("restarting the recording worker") == 1
    assert "(reconnecting from a new worker)" in caplog.text
    assert len(_frames(tmp_path)) == 3 and all(np.all(np.diff(f) == 1) for f in _frames(tmp_path))
    state = server.state()
    assert state["fired"] == ["12"] and state["sync"] is False and state["tm_sync"] is False


def test_a_server_that_stays_down_stops_with_one_line(tmp_path, tiny_towns, standin):
    server = standin({"crash": {"12": -1}})  # gone for good, and nobody relaunches it
    server.launch()
    with pytest.raises(
        ServerGone, match="did not answer for 0.5 s after it was lost.*--server-cmd"
    ):
        _supervised(tmp_path, tiny_towns, server.port, server_wait=0.5)
    assert len(_frames(tmp_path)) + len(list((tmp_path / "Town03").glob(".writer-s0/*.h5"))) >= 1


def _leftovers(server: double.FakeServer) -> None:
    """What a run killed with -9 leaves: sync mode, its ego on a spawn point, sensors, NPCs."""
    server.map_name = "Town03"
    server.settings = double.WorldSettings(True, 0.05)
    world, library = double.World(server), double.BlueprintLibrary()
    points = double.Map("Town03").get_spawn_points()
    ego_bp = library.find("vehicle.lincoln.mkz_2020")
    ego_bp.set_attribute("role_name", "hero")
    ego = world.spawn_actor(ego_bp, points[0])
    for i, bp_id in ((1, "vehicle.audi.a2"), (None, "sensor.camera.rgb")):
        bp = library.find(bp_id)
        bp.set_attribute("role_name", "carla_capture")
        world.spawn_actor(bp, points[i] if i else double.Transform(), None if i else ego)
    other = library.find("vehicle.audi.a2")
    other.set_attribute("role_name", "someone_else")
    return world.spawn_actor(other, points[5])


def test_a_dead_runs_sync_mode_and_actors_are_cleaned_up(tmp_path, tiny_towns, server, caplog):
    foreign = _leftovers(server)
    with caplog.at_level(logging.WARNING):
        record(_cfg(tmp_path, tiny_towns))
    assert "removing 3 actors a previous capture run left" in caplog.text
    assert list(server.actors) == [foreign.id]  # only what another program spawned is left
    server.actors.clear()
    _assert_done(tmp_path, server)


def test_keep_settings_restores_what_was_found(tmp_path, tiny_towns, server):
    server.map_name, server.settings = "Town03", double.WorldSettings(True, 0.1)
    record(_cfg(tmp_path, tiny_towns, keep_settings=True))
    assert (server.settings.synchronous_mode, server.settings.fixed_delta_seconds) == (True, 0.1)


def test_a_taken_traffic_manager_port_moves_and_leaves_the_server_async(
    tmp_path, tiny_towns, server, caplog
):
    with socket.socket() as taken:
        taken.bind(("", 0))
        port = taken.getsockname()[1]
        with caplog.at_level(logging.WARNING):
            record(_cfg(tmp_path, tiny_towns, tm_port=port))
    assert f"Traffic Manager port {port} is taken" in caplog.text
    _assert_done(tmp_path, server)


def test_a_tick_that_times_out_is_a_lost_server(tmp_path, tiny_towns, server):
    """Unsupervised, the run stops with one line (the process holds a Traffic Manager); the same
    command run again resumes."""
    server.hang_at_ticks = {14}
    with pytest.raises(FreshProcess, match="tick failed.*run the same command again"):
        record(_cfg(tmp_path, tiny_towns, timeout=0.2, supervise=False))
    double.reset_process()
    session._TM_PORTS.clear()
    record(_cfg(tmp_path, tiny_towns, timeout=0.2, supervise=False))
    _assert_done(tmp_path, server)


def test_a_pose_one_tick_stale_is_detected_and_the_clip_retried(
    tmp_path, tiny_towns, server, caplog
):
    server.threaded, server.stale_frames = True, {1010}  # 0.4 m per tick: 8 m/s, an urban speed
    with caplog.at_level(logging.WARNING):
        record(_cfg(tmp_path, tiny_towns))
    assert "frame 1010: camera pose is 400 mm from the ego's mount point" in caplog.text
    assert all(1010 not in f for f in _frames(tmp_path))
    _assert_done(tmp_path, server)


def test_weather_starts_from_a_carla_preset_with_every_field(tmp_path, tiny_towns, server):
    from carla_capture.config import WEATHER_FIELDS

    record(_cfg(tmp_path, tiny_towns))
    assert set(server.weather) == set(WEATHER_FIELDS)
    for path in shard_paths(tmp_path / "Town03"):
        with ShardReader(path) as reader:
            for cid in reader.clip_ids():
                weather = reader.read_clip(cid).weather
                preset = double._PRESET_VALUES[weather["preset"]]
                assert set(WEATHER_FIELDS) <= set(weather)
                for name in (
                    "fog_falloff",
                    "fog_distance",
                    "wind_intensity",
                    "scattering_intensity",
                    "mie_scattering_scale",
                    "precipitation_deposits",
                ):
                    assert weather[name] == pytest.approx(
                        preset[double.WEATHER_FIELDS.index(name)]
                    ), name
                assert weather["fog_falloff"] > 0  # 0 would fog the whole scene
    assert server.weather == {
        k: pytest.approx(weather[k]) for k in WEATHER_FIELDS
    }  # the last clip's, all sent


def test_walkers_get_a_new_destination_when_they_arrive(tmp_path, tiny_towns, server):
    server.nav_extent_m = 3.0  # destinations a few metres away: walkers arrive within ~70 ticks
    record(_cfg(tmp_path, tiny_towns, walkers=2, warmup_ticks=20))
    assert server.destinations >= 2 * 3  # each of the 2 walkers was sent on at least twice more


def test_the_ego_respawns_only_on_a_free_spawn_point(tmp_path, tiny_towns, server):
    server.speed_m = 0.0  # 30 parked vehicles on 40 spawn points
    record(_cfg(tmp_path, tiny_towns, vehicles=30, respawn_every=1))
    assert len(server.teleports) == 3 and min(server.teleports) > 5.0


def test_a_port_that_is_not_a_carla_server_is_one_line_naming_it(tmp_path, tiny_towns):
    """The real client aborts (std::bad_cast, SIGABRT) on a peer speaking another protocol."""
    pytest.importorskip("carla")
    import threading

    from click.testing import CliRunner

    from carla_capture.cli import main

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" * 3)
                conn.close()
            except OSError:
                return

    threading.Thread(target=serve, daemon=True).start()
    try:
        result = CliRunner().invoke(
            main,
            [
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
                "2",
            ],
        )
    finally:
        listener.close()
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error")]
    assert (
        len(lines) == 1
        and f"127.0.0.1:{port}" in lines[0]
        and "not a CARLA 0.9.16 server" in lines[0]
    ), lines


def _record_cli(cli, tmp_path, towns, *extra):
    return cli.capture(
        "record", "--town", "Town03", "--clips", "2", "--frames", "3", "--out", tmp_path,
        "--town-dir", towns, "--timeout", "1", "--warmup-ticks", "1", *extra,
    )  # fmt: skip


def test_occupied_spawn_points_are_one_line_naming_the_fix_not_a_lost_server(
    cli, tmp_path, tiny_towns, server, caplog
):
    server.map_name = "Town03"
    world, library = double.World(server), double.BlueprintLibrary()
    for point in double.Map("Town03").get_spawn_points():  # another client's parked vehicles
        bp = library.find("vehicle.audi.a2")
        bp.set_attribute("role_name", "someone_else")
        world.spawn_actor(bp, point)
    with caplog.at_level(logging.WARNING):
        result = _record_cli(cli, tmp_path, tiny_towns)
    line = cli.error(result, "all 40 spawn points of Town03", "are occupied", "fewer --vehicles")
    assert "gave up" not in line and "restarting the recording worker" not in caplog.text


def test_an_unknown_ego_blueprint_is_one_line_naming_the_fix(
    cli, tmp_path, tiny_towns, server, caplog
):
    server.map_name = "Town03"
    with caplog.at_level(logging.WARNING):
        result = _record_cli(
            cli, tmp_path, tiny_towns, "--set", "carla.ego_blueprint=vehicle.tesla.cybertruk"
        )
    line = cli.error(result, "no blueprint 'vehicle.tesla.cybertruk'", "--set carla.ego_blueprint=")
    assert "gave up" not in line and "restarting the recording worker" not in caplog.text
    assert "Traceback" not in result.stderr
