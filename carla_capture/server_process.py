"""A CARLA server that capture starts, relaunches and stops itself (``--server-cmd``).

The command is a template with ``{port}`` (and optionally ``{gpu}``), e.g.
``"/opt/carla/CarlaUE4.sh -RenderOffScreen -nosound -carla-rpc-port={port}"``. It runs in its
own process group (CarlaUE4.sh starts the real binary as a child), so stopping it kills the
whole group: SIGTERM, then SIGKILL after ``grace_s``.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import subprocess
import time

from clipcore.errors import BackendUnavailableError, ConfigError

log = logging.getLogger(__name__)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ServerProcess:
    """One server process on ``port``; :meth:`start`, :meth:`relaunch`, :meth:`stop`."""

    def __init__(
        self, template: str, host: str, port: int, gpu: int = 0, grace_s: float = 10.0
    ) -> None:
        if "{port}" not in template:
            raise ConfigError(
                f"--server-cmd {template!r} has no {{port}}; add it where the server takes its RPC "
                'port, e.g. "./CarlaUE4.sh -RenderOffScreen -carla-rpc-port={port}"'
            )
        try:
            self.argv = shlex.split(
                template.replace("{port}", str(port)).replace("{gpu}", str(gpu))
            )
        except ValueError as exc:
            raise ConfigError(
                f"--server-cmd {template!r} is not a command line ({exc}); check its quotes"
            ) from None
        self.host, self.port, self.grace_s = host, port, grace_s
        self.proc: subprocess.Popen | None = None
        self.launches = 0

    def start(self) -> None:
        """Launch the command in a new process group."""
        try:
            self.proc = subprocess.Popen(
                self.argv, start_new_session=True, stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            raise ConfigError(
                f"--server-cmd could not start {self.argv[0]}: {exc.strerror}; "
                "check the path to CarlaUE4.sh"
            ) from None
        self.launches += 1
        log.info("started the CARLA server (pid %d): %s", self.proc.pid, " ".join(self.argv))

    def alive(self) -> bool:
        """Whether the launched process is still running."""
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float) -> None:
        """Wait until the server accepts connections; one line if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if not self.alive():
                code = self.proc.returncode if self.proc else None
                raise BackendUnavailableError(
                    f"the server started with --server-cmd exited (code {code}) before "
                    f"it answered on port {self.port}; run the command by hand to see why"
                )
            if time.monotonic() > deadline:
                raise BackendUnavailableError(
                    f"the server started with --server-cmd did not answer on port "
                    f"{self.port} within {timeout:g} s; raise --server-wait"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Kill the process group: SIGTERM, then SIGKILL after ``grace_s``."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, self.grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc = None

    def relaunch(self, reason: str, wait_s: float) -> None:
        """Stop (if needed), start again and wait until it answers."""
        log.warning("relaunching the CARLA server on port %d: %s", self.port, reason)
        self.stop()
        self.start()
        self.wait_ready(wait_s)
