"""``capture record --servers host:port,...``: one capture process per CARLA server, as N tasks.

With ``--server-cmd``, ``--servers N`` launches N servers itself, on ports port, port + 4, ... and
GPUs 0..N-1 (the ``{gpu}`` placeholder), each started, relaunched and stopped by its process. A
server on RPC port P also binds P + 1 (streaming) and P + 2 (secondary), so servers on one host are
4 ports apart; a list with servers closer than that is refused.

Process k is task k of N of the same dataset plan (same seed, same --clips per town): it records
clips k, k + N, ... of every town (:mod:`carla_capture.plan`) with Traffic Manager port
``tm_port + k``. Run inside task t of T (a SLURM array, ``--task-index``), process k is task
t * N + k of T * N. Re-running the same command resumes every process.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from carla_capture.config import CaptureConfig
from carla_capture.plan import resolve_task
from clipcore.errors import CaptureError, ConfigError

log = logging.getLogger(__name__)


def parse_servers(spec: tuple[str, ...]) -> list[tuple[str, int]]:
    """``("host:port", ...)`` -> [(host, port), ...].

    A malformed entry, or two servers of one host less than 4 ports apart, is a ConfigError.
    """
    out = []
    for item in spec:
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"--servers entry {item!r} is not host:port, e.g. 127.0.0.1:2000")
        out.append((host, int(port)))
    for i, (host, port) in enumerate(out):
        for other_host, other in out[i + 1 :]:
            if other_host == host and abs(other - port) < 3:
                raise ConfigError(
                    f"--servers {host}:{port} and {host}:{other} overlap: a CARLA server on port "
                    f"P also binds P+1 and P+2; put servers of one host {PORT_STEP} ports apart "
                    f"({port}, {port + PORT_STEP}, ...)"
                )
    return out


#: Ports between two servers capture launches (CARLA uses the RPC port, +1 streaming, +2 secondary).
PORT_STEP = 4


def expand_servers(cfg: CaptureConfig) -> list[tuple[str, int]]:
    """``--servers N`` with ``--server-cmd``.

    N servers on ports port, port + 4, ...; else the host:port list.
    """
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
    parent, n = resolve_task(cfg), len(servers)
    exclude = {"out", "town_dir", "carla", "task_index", "num_tasks"} | (
        {"town"} if cfg.towns else set()
    )
    settings = json.loads(cfg.model_dump_json(exclude=exclude))
    commands = []
    for k, (host, port) in enumerate(servers):
        carla = cfg.carla.model_copy(
            update={
                "host": host,
                "port": port,
                "tm_port": cfg.carla.tm_port + k,
                "servers": (),
                "server_gpu": k,
            }
        )
        cmd = [sys.executable, "-m", "carla_capture", "record", "--out", str(cfg.out)]
        if cfg.town_dir is not None:
            cmd += ["--town-dir", str(cfg.town_dir)]
        cmd += ["--task-index", str(parent.index * n + k), "--num-tasks", str(parent.count * n)]
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
