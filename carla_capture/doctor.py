"""``capture doctor``: the first command to run against a CARLA server.

Checks, in order, stopping at the first one the rest depend on: the server answers (asked from a
child process, see :mod:`carla_capture.preflight`); client and server versions; the town's map is
on the server; how long loading it takes; ticks per second in synchronous mode with the capture's
cameras and the Traffic Manager in synchronous mode; latency of each camera; one short clip
recorded and checked like ``capture verify`` does (reprojection included); the server left
asynchronous. Each check carries the fix for its failure.

The checks that talk to the world run in a child process watched like a recording worker: it
beats once per tick, and when no beat comes for ``stall_timeout`` seconds (a tick hung in C++,
CARLA #9172, where no signal reaches) it is killed, the table says where it stopped, and another
child destroys its actors and leaves the server asynchronous.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from dataclasses import asdict, dataclass

from carla_capture import heartbeat
from carla_capture.config import CaptureConfig, VerifyConfig
from carla_capture.preflight import INSTALL_CLIENT, client_missing, preflight
from clipcore.errors import CaptureError

SUPPORTED = "0.9.16"


@dataclass
class Check:
    """One line of the doctor's table."""

    name: str
    passed: bool
    detail: str
    fix: str = ""


def run_doctor(cfg: CaptureConfig, ticks: int = 20) -> list[Check]:
    """Every check against ``cfg.carla`` host:port for ``cfg.town``; leaves the server async.

    The first check is that the ``carla`` client module imports: without it, that one failed
    check and how to install it.
    """
    s, checks = cfg.carla, []
    missing = client_missing()
    if missing:
        return [Check("client library", False, missing, INSTALL_CLIENT)]
    checks.append(Check("client library", True, "the carla module imports"))
    try:
        info = preflight(s.host, s.port, s.timeout)
    except CaptureError as exc:
        fix = "start the server, or fix --host/--port"
        return [*checks, Check("server answers", False, str(exc), fix)]
    checks.append(Check("server answers", True, f"{s.host}:{s.port}"))
    versions = f"client {info['client_version']}, server {info['server_version']}"
    same = info["client_version"] == info["server_version"] == SUPPORTED
    checks.append(
        Check(
            "versions",
            same,
            versions,
            "" if same else f"run a CARLA {SUPPORTED} server with the carla=={SUPPORTED} client",
        )
    )
    town = cfg.town_config()
    has_map = town.carla_map in info["maps"]
    checks.append(
        Check(
            "map available",
            has_map,
            f"{town.carla_map} among {len(info['maps'])} maps",
            "" if has_map else f"pick --town from {', '.join(info['maps'])}, or install the map",
        )
    )
    if not has_map:
        return checks
    return checks + _supervised_live_checks(cfg, ticks)


class _Sender:
    """A list-like ``append`` that sends each check to the parent as soon as it is made."""

    def __init__(self, conn: object) -> None:
        self.conn = conn

    def append(self, check: Check) -> None:
        self.conn.send(check)


def _live_child(cfg: CaptureConfig, ticks: int, beat: object, conn: object) -> None:
    heartbeat.attach(beat, cfg.carla.stall_timeout)
    try:
        _live_checks(cfg, _Sender(conn), ticks)
    except (CaptureError, RuntimeError) as exc:
        conn.send(
            Check("stopped", False, str(exc), "fix the failure above and run capture doctor again")
        )
    conn.send(None)


def _supervised_live_checks(cfg: CaptureConfig, ticks: int) -> list[Check]:
    """:func:`_live_checks` in a child process, killed when its heartbeat stops."""
    from carla_capture.backends.carla.session import leave_server
    from carla_capture.preflight import cleanup_in_child

    s, ctx, checks = cfg.carla, mp.get_context("fork"), []
    beat = ctx.Value("d", time.monotonic() + s.stall_timeout + 30.0, lock=False)
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_live_child, args=(cfg, ticks, beat, send), name="carla-doctor")
    child.start()
    send.close()
    while True:
        try:
            if receive.poll(0.1):
                item = receive.recv()
                if item is None:
                    break
                checks.append(item)
                continue
        except EOFError:
            pass
        if not child.is_alive():
            checks.append(
                Check("stopped", False, f"the check process died (exit code {child.exitcode})",
                      "run the server of the carla==0.9.16 client, then capture doctor again")
            )  # fmt: skip
            break
        if time.monotonic() > beat.value:
            child.kill()
            child.join()
            after = checks[-1].name if checks else "map available"
            checks.append(
                Check(
                    "stopped",
                    False,
                    f"no answer from the server for {s.stall_timeout:g} s after '{after}' (a "
                    "hung tick or server call, CARLA #9172); the check was stopped",
                    "restart the server, then run capture doctor again",
                )
            )
            problem = cleanup_in_child(leave_server, cfg, s.timeout + 10.0)
            checks.append(
                Check(
                    "left asynchronous",
                    problem is None,
                    problem or "the check's actors destroyed, synchronous_mode=False",
                    "restart the server before recording" if problem else "",
                )
            )
            break
    child.join(5.0)
    return checks


def _live_checks(cfg: CaptureConfig, checks: list[Check] | _Sender, ticks: int) -> None:
    from carla_capture.backends.carla import CarlaBackend
    from carla_capture.backends.carla.session import _load_town, await_world
    from carla_capture.verify import verify_clip

    s, town = cfg.carla, cfg.town_config()
    backend = CarlaBackend(cfg, town)
    client = backend.carla.Client(s.host, s.port)
    client.set_timeout(s.timeout)
    started = time.monotonic()
    heartbeat.expect(2 * s.map_timeout + s.timeout + 10.0)
    world = await_world(client, s.map_timeout, s.timeout)
    _load_town(client, world, town.carla_map, s.map_timeout, s.timeout)
    seconds = time.monotonic() - started
    checks.append(
        Check(
            "map load",
            True,
            f"{town.carla_map} ready in {seconds:.1f} s (--map-timeout {s.map_timeout:g} s)",
        )
    )
    with backend:
        backend._open()
        session = backend.session
        checks.append(Check("traffic manager", True, f"synchronous on port {session.tm_port}"))
        started = time.monotonic()
        frames = [session.tick() for _ in range(ticks)]
        rate = ticks / (time.monotonic() - started)
        checks.append(
            Check(
                "tick rate",
                rate >= 2.0,
                f"{rate:.1f} ticks/s in synchronous mode with 3 cameras",
                "" if rate >= 2.0 else "use a GPU server, smaller images, or -quality-level=Low",
            )
        )
        for name, (_, inbox) in session.sensors.items():
            waits = [
                inbox.arrivals[f] - session.tick_started[f]
                for f in frames
                if f in inbox.arrivals and f in session.tick_started
            ]
            ok = len(waits) >= ticks // 2 and statistics.median(waits) < s.sensor_timeout
            detail = (
                f"median {statistics.median(waits) * 1000:.0f} ms after the tick"
                if waits
                else "no images"
            )
            checks.append(
                Check(
                    f"latency {name}",
                    ok,
                    detail,
                    "" if ok else "raise --sensor-timeout; check the GPU",
                )
            )
        clip = backend.record_clip(0)
        heartbeat.expect(120.0)  # the checks of capture verify: no ticks
        report = verify_clip(clip, "doctor", VerifyConfig())
        checks.append(
            Check(
                "clip + reprojection",
                report.passed,
                f"{len(clip)} frames; " + ("; ".join(report.failures) or "all verify checks pass"),
                "" if report.passed else "see docs/carla.md (conventions, sensor settings)",
            )
        )
    settings = client.get_world().get_settings()
    left = not settings.synchronous_mode
    checks.append(
        Check(
            "left asynchronous",
            left,
            f"synchronous_mode={settings.synchronous_mode}",
            "" if left else "another client holds the server in synchronous mode",
        )
    )


def format_table(checks: list[Check]) -> str:
    """A fixed-width table: check, PASS/FAIL, detail, fix."""
    rows = [("check", "result", "detail", "fix")] + [
        (c.name, "PASS" if c.passed else "FAIL", c.detail, c.fix) for c in checks
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip()
        for r in rows
    )


def as_json(checks: list[Check]) -> list[dict]:
    """The checks as plain dicts (``--json``, for bug reports)."""
    return [asdict(c) for c in checks]
