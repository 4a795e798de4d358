"""First contact with a CARLA server from a child process.

The ``carla`` client library speaks msgpack-RPC in C++; a peer on the port that is not a CARLA
0.9.16 server (another program, another CARLA version) can make it abort the whole process
(``clmdep_msgpack::v1::type_error``, ``std::bad_cast``, SIGABRT, exit code 134) without naming
the address. Asking for the server's version in a forked child turns that into a one-line error.
"""

from __future__ import annotations

import faulthandler
import importlib
import multiprocessing as mp
import os
import signal
from collections.abc import Callable

from clipcore.errors import BackendUnavailableError

HOW_TO_START = (
    "start one with ./CarlaUE4.sh -RenderOffScreen -carla-rpc-port={port} (docs/carla.md), "
    "or record with --backend synthetic"
)
#: What to do when the ``carla`` client module cannot be imported.
INSTALL_CLIENT = (
    'pip install "carla-temporal[carla]" (the carla==0.9.16 client, Python 3.10-3.12 on Linux '
    "x86-64 or Windows), or record with --backend synthetic"
)


def client_missing() -> str | None:
    """Why the ``carla`` client module cannot be imported here, or None when it can."""
    try:
        importlib.import_module("carla")
    except ImportError as exc:
        return f"the CARLA client library (the carla module) is not installed ({exc})"
    return None


def _child(conn: object, host: str, port: int, timeout: float) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # the C++ "terminate called ..." lines; the parent prints one line instead
    faulthandler.disable()
    try:
        carla = importlib.import_module("carla")
    except ImportError as exc:
        conn.send(("missing", str(exc)))
        return
    client = carla.Client(host, port)
    client.set_timeout(timeout)
    try:
        server = client.get_server_version()
    except RuntimeError as exc:
        conn.send(("silent", str(exc)))
        return
    conn.send(
        (
            "ok",
            {
                "server_version": server,
                "client_version": client.get_client_version(),
                "maps": sorted(m.rsplit("/", 1)[-1] for m in client.get_available_maps()),
            },
        )
    )


class NoAnswer(BackendUnavailableError):
    """Nothing answered at the address within the timeout."""


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


def _cleanup_child(conn: object, cleanup: Callable[[object, object], None], cfg: object) -> None:
    try:
        cleanup(importlib.import_module("carla"), cfg)
        conn.send(("ok", None))
    except RuntimeError as exc:
        conn.send(("failed", str(exc)))


def cleanup_in_child(
    cleanup: Callable[[object, object], None], cfg: object, timeout: float
) -> str | None:
    """Run ``cleanup(carla_module, cfg)`` (the backend's ``leave_server``) in a child process.

    None when it worked, else why not.
    """
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(
        target=_cleanup_child, args=(send, cleanup, cfg), name="carla-cleanup", daemon=True
    )
    child.start()
    send.close()
    outcome = ("failed", f"no answer within {timeout:g} s")
    try:
        if receive.poll(timeout):
            outcome = receive.recv()
    except EOFError:
        outcome = ("failed", "the client library died")
    if child.is_alive():
        child.kill()
    child.join()
    return None if outcome[0] == "ok" else outcome[1]


def preflight(host: str, port: int, timeout: float) -> dict:
    """Server and client versions and the maps of ``host:port``, asked from a child process.

    Raises :class:`BackendUnavailableError` naming the address when nothing answers within
    ``timeout`` seconds or when the client library dies talking to it.
    """
    ctx = mp.get_context("fork")  # the child sees the same ``carla`` module as this process
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(
        target=_child, args=(send, host, port, timeout), name="carla-preflight", daemon=True
    )
    child.start()
    send.close()
    kind, value = None, None
    try:
        if receive.poll(timeout + 10.0):
            kind, value = receive.recv()
    except EOFError:
        pass
    child.join(2.0)
    if child.is_alive():
        child.kill()
        child.join()
    if kind == "ok":
        return value
    if kind == "missing":
        raise BackendUnavailableError(
            f"the CARLA client library (the carla module) is not installed ({value}): "
            + INSTALL_CLIENT
        )
    if kind == "silent" or child.exitcode == -signal.SIGKILL:
        raise NoAnswer(
            f"no CARLA server answered at {host}:{port} within {timeout:g} s; "
            + HOW_TO_START.format(port=port)
        )
    raise BackendUnavailableError(
        f"the CARLA client library died ({_death(child.exitcode)}) talking to {host}:{port}: that "
        "port is not a CARLA 0.9.16 server (another program, or another CARLA version); check "
        "--host and --port, and run the server of the carla==0.9.16 client"
    )
