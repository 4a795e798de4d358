"""``capture record --servers host:port,...``: one capture process per CARLA server.

With ``--server-cmd``, ``--servers N`` launches N servers itself, on ports port, port + 4, ... and
GPUs 0..N-1 (the ``{gpu}`` placeholder), each started, relaunched and stopped by its process.

Process k talks to server k with seed ``seed + k`` (so its clip ids and staging folder are its
own) and Traffic Manager port ``tm_port + k``, and records its share of ``--clips``. All write
into the same dataset folder; shard numbers are claimed with exclusive file creation, so the
shards are disjoint. Re-running the same command resumes every process.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from carla_capture.config import CaptureConfig
from clipcore.errors import CaptureError, ConfigError

log = logging.getLogger(__name__)


def parse_servers(spec: tuple[str, ...]) -> list[tuple[str, int]]:
    """``("host:port", ...)`` -> [(host, port), ...]; a malformed entry is a ConfigError."""
    out = []
    for item in spec:
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"--servers entry {item!r} is not host:port, e.g. 127.0.0.1:2000")
        out.append((host, int(port)))
    return out


#: Ports between two servers capture launches (CARLA uses the RPC port, +1 streaming, +2 secondary).
PORT_STEP = 4


def expand_servers(cfg: CaptureConfig) -> list[tuple[str, int]]:
    """``--servers N`` with ``--server-cmd``: N servers on ports port, port + 4, ...; else the
    host:port list."""
    spec = cfg.carla.servers
    if len(spec) == 1 and spec[0].strip().isdigit():
        if not cfg.carla.server_cmd:
            raise ConfigError(
                "--servers N needs --server-cmd to launch the N servers; without it list them as "
                "host:port,host:port"
            )
        return [(cfg.carla.host, cfg.carla.port + PORT_STEP * k) for k in range(int(spec[0]))]
    return parse_servers(spec)


def server_commands(cfg: CaptureConfig) -> list[tuple[str, list[str]]]:
    """(``host:port``, ``capture record`` command line) of each server's process."""
    servers = expand_servers(cfg)
    share, extra = divmod(cfg.clips, len(servers))
    commands = []
    for k, (host, port) in enumerate(servers):
        clips = share + (1 if k < extra else 0)
        if clips == 0:
            continue
        carla = cfg.carla.model_copy(
            update={
                "host": host,
                "port": port,
                "tm_port": cfg.carla.tm_port + k,
                "servers": (),
                "server_gpu": k,
            }
        )
        data = cfg.model_copy(update={"clips": clips, "seed": cfg.seed + k, "carla": carla})
        settings = json.loads(data.model_dump_json(exclude={"out", "town_dir", "carla"}))
        cmd = [sys.executable, "-m", "carla_capture", "record", "--out", str(cfg.out)]
        if cfg.town_dir is not None:
            cmd += ["--town-dir", str(cfg.town_dir)]
        for key, value in settings.items():
            cmd += ["--set", f"{key}={json.dumps(value)}"]
        cmd += ["--set", f"carla={carla.model_dump_json()}"]
        commands.append((f"{host}:{port}", cmd))
    return commands


def record_on_servers(cfg: CaptureConfig) -> None:
    """Run one capture process per server, concurrently; raise if any of them failed."""
    procs = [(address, subprocess.Popen(cmd)) for address, cmd in server_commands(cfg)]
    failed = [address for address, proc in procs if proc.wait() != 0]
    if failed:
        raise CaptureError(
            f"the capture processes of {', '.join(failed)} failed (see their messages above); "
            "run the same command again to resume them"
        )
