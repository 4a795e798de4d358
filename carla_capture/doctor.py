"""``capture doctor``: the first command to run against a CARLA server.

Checks, in order, stopping at the first one the rest depend on: the server answers (asked from a
child process, see :mod:`carla_capture.preflight`); client and server versions; the town's map is
on the server; how long loading it takes; ticks per second in synchronous mode with the capture's
cameras and the Traffic Manager in synchronous mode; latency of each camera; one short clip
recorded and checked like ``capture verify`` does (reprojection included); the server left
asynchronous. Each check carries the fix for its failure.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

from carla_capture.config import CaptureConfig, VerifyConfig
from carla_capture.preflight import preflight
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
    """Every check against ``cfg.carla`` host:port for ``cfg.town``; leaves the server async."""
    s, checks = cfg.carla, []
    try:
        info = preflight(s.host, s.port, s.timeout)
    except CaptureError as exc:
        return [Check("server answers", False, str(exc), "start the server, or fix --host/--port")]
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
    try:
        _live_checks(cfg, checks, ticks)
    except (CaptureError, RuntimeError) as exc:
        checks.append(
            Check("stopped", False, str(exc), "fix the failure above and run capture doctor again")
        )
    return checks


def _live_checks(cfg: CaptureConfig, checks: list[Check], ticks: int) -> None:
    from carla_capture.backends.carla import CarlaBackend
    from carla_capture.backends.carla.session import _load_town
    from carla_capture.verify import verify_clip

    s, town = cfg.carla, cfg.town_config()
    backend = CarlaBackend(cfg, town)
    client = backend.carla.Client(s.host, s.port)
    client.set_timeout(s.timeout)
    started = time.monotonic()
    _load_town(client, client.get_world(), town.carla_map, s.map_timeout, s.timeout)
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
