"""``capture record`` against CARLA: a recording worker process watched through a heartbeat.

The worker runs :func:`carla_capture.record.record` and beats once per simulator tick
(:mod:`carla_capture.heartbeat`). The supervisor (the CLI process) restarts it when

- no beat arrives for ``stall_timeout`` seconds (a tick hung in C++, CARLA #9172, where no
  Python signal reaches): the worker gets SIGTERM, then SIGKILL;
- the worker dies (a C++ abort, the OOM killer) or stops because the server stayed away;
- the server process it launched (``--server-cmd``) exits: that is relaunched first;
- the worker lost the server after it bound a Traffic Manager: CARLA's client library keeps one
  Traffic Manager per port for the life of the process (``world.tick()`` ticks them all), so a
  process that reconnected would drive the new server with the dead one's; the supervisor starts a
  new worker after a back-off (2, 4, 8 ... s) instead, which waits up to ``server_wait`` for the
  server.

Each restart counts against ``max_restarts`` and is logged with its reason. A restarted worker
resumes from the staged clips (resume is crash-safe), and its session removes what a killed one
left on the server. SIGTERM and SIGHUP are handled like Ctrl-C, in the worker and here.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import signal
import time
from collections.abc import Callable, Iterator

from carla_capture import heartbeat
from carla_capture.config import CaptureConfig
from carla_capture.plan import Task, resolve_task
from carla_capture.server_process import ServerProcess
from clipcore.errors import CaptureError, ServerGone, ServerLost

log = logging.getLogger(__name__)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: cleaned up like Ctrl-C."""


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def terminate_like_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` (a KeyboardInterrupt)."""
    previous = {
        sig: signal.signal(sig, _raise_terminated) for sig in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker(cfg: CaptureConfig, task: Task, beat: object, conn: object) -> None:
    from carla_capture.record import record_plan

    heartbeat.attach(beat, cfg.carla.stall_timeout)
    signal.signal(
        signal.SIGINT, signal.SIG_IGN
    )  # Ctrl-C reaches the supervisor, which sends SIGTERM once

    def progress(cid: str) -> None:
        heartbeat.beat()
        conn.send(("clip", cid))

    try:
        with terminate_like_interrupt():
            outcome = ("done", record_plan(cfg, progress=progress, task=task))
    except CaptureError as exc:
        outcome = ("error", exc)
    except KeyboardInterrupt:
        outcome = ("interrupted", None)
    try:
        conn.send(outcome)
    except OSError:  # the supervisor is gone: nobody to tell
        pass


class Supervisor:
    """Runs workers until the recording is done; owns the server process of ``--server-cmd``."""

    def __init__(
        self,
        cfg: CaptureConfig,
        progress: Callable[[str], None] | None = None,
        task: Task | None = None,
    ) -> None:
        self.cfg, self.progress, self.restarts, self.killed = cfg, progress, 0, False
        self.task = task or resolve_task(cfg)
        self.ctx = mp.get_context(
            "fork"
        )  # the worker inherits the loaded modules; the parent never imports carla
        s = cfg.carla
        self.server = (
            ServerProcess(s.server_cmd, s.host, s.port, s.server_gpu) if s.server_cmd else None
        )
        self.proc: mp.process.BaseProcess | None = None

    def run(self) -> object:
        """The worker's :class:`RecordSummary`; a :class:`CaptureError` when it cannot finish."""
        with terminate_like_interrupt():
            try:
                if self.server is not None:
                    self.server.start()
                    self.server.wait_ready(max(self.cfg.carla.server_wait, 1.0))
                while True:
                    outcome, value = self._one_worker()
                    if outcome == "done":
                        return value
                    self._count(value)
            except KeyboardInterrupt:
                self._stop_worker(
                    grace_s=30.0
                )  # let it stop its sensors and leave the server asynchronous
                self._leave_server()
                raise
            except BaseException:
                self._stop_worker()
                self._leave_server()
                raise
            finally:
                self._stop_worker()
                if self.server is not None:
                    self.server.stop()

    def _leave_server(self) -> None:
        """After a killed worker: its actors destroyed, the server asynchronous (from a child)."""
        if not self.killed or (self.server is not None and not self.server.alive()):
            return
        from carla_capture.backends.carla.session import leave_server
        from carla_capture.preflight import cleanup_in_child

        problem = cleanup_in_child(leave_server, self.cfg, self.cfg.carla.timeout + 10.0)
        if problem:
            log.warning(
                "could not leave the server at %s:%d asynchronous (%s); restart it before the "
                "next run",
                self.cfg.carla.host,
                self.cfg.carla.port,
                problem,
            )

    def _count(self, reason: str) -> None:
        self.restarts += 1
        limit = self.cfg.carla.max_restarts
        if self.restarts > limit:
            raise CaptureError(
                f"{reason}; gave up after {limit} restarts. Finished clips are kept: check the "
                "server and run the same command again"
            )
        log.warning("restarting the recording worker (%d of %d): %s", self.restarts, limit, reason)

    def _one_worker(self) -> tuple[str, object]:
        """Run one worker to its end: ("done", summary) or ("restart", reason)."""
        stall = self.cfg.carla.stall_timeout
        beat = self.ctx.Value("d", time.monotonic() + stall + 30.0, lock=False)  # + start-up
        cfg = self.cfg
        if self.restarts:  # the server may be on its way back: the first contact waits for it
            cfg = cfg.model_copy(
                update={
                    "carla": cfg.carla.model_copy(update={"contact_wait": cfg.carla.server_wait})
                }
            )
        receive, send = self.ctx.Pipe(duplex=False)
        self.proc = self.ctx.Process(
            target=_worker, args=(cfg, self.task, beat, send), name="capture-worker"
        )
        self.proc.start()
        send.close()
        while True:
            message = self._receive(receive)
            if message is not None:
                kind, value = message
                if kind == "clip" and self.progress is not None:
                    self.progress(value)
                elif kind == "done":
                    self.proc.join()
                    return "done", value
                elif kind == "interrupted":
                    raise KeyboardInterrupt
                elif kind == "error":
                    return "restart", self._after_error(value)
                continue
            if self.server is not None and not self.server.alive():
                self._stop_worker()
                self.server.relaunch(
                    "the server process exited", max(self.cfg.carla.server_wait, 1.0)
                )
                return "restart", "the server process exited and was relaunched"
            if not self.proc.is_alive():
                self.killed = True
                return "restart", f"the worker died (exit code {self.proc.exitcode})"
            if time.monotonic() > beat.value:
                self._stop_worker()
                return "restart", f"no simulator tick for {stall:g} s (a hung tick or server call)"

    def _receive(self, conn: object) -> tuple[str, object] | None:
        try:
            if conn.poll(0.1):
                return conn.recv()
        except (EOFError, OSError):
            time.sleep(0.1)
        return None

    def _after_error(self, exc: CaptureError) -> str:
        """A worker's error.

        Re-raised unless a (relaunched) server or a fresh worker process may fix it. A lost server
        is reconnected from a new worker, after a back-off: the old one's CARLA client keeps the
        lost server's Traffic Manager.
        """
        self.proc.join(10.0)  # it exits right after telling
        server = self.server
        lost = isinstance(exc, ServerLost) and server is not None and not server.alive()
        if server is not None and (isinstance(exc, ServerGone) or lost):
            server.relaunch(str(exc), max(self.cfg.carla.server_wait, 1.0))
            return f"{getattr(exc, 'lost', exc)} (server relaunched)"
        if isinstance(exc, ServerLost):  # a server process that exited is relaunched by run()
            time.sleep(self.cfg.carla.restart_backoff_s * 2**self.restarts)
            return f"{getattr(exc, 'lost', exc)} (reconnecting from a new worker)"
        raise exc

    def _stop_worker(self, grace_s: float = 3.0) -> None:
        """SIGTERM (the worker cleans up like Ctrl-C), then SIGKILL when it is stuck in C++."""
        proc, self.proc = self.proc, None
        if proc is None or not proc.is_alive():
            return
        proc.terminate()
        proc.join(grace_s)
        if proc.is_alive():
            proc.kill()
            proc.join()
        self.killed = True


def supervised_record(
    cfg: CaptureConfig,
    progress: Callable[[str], None] | None = None,
    task: Task | None = None,
) -> object:
    """:func:`carla_capture.record.record_plan` in a supervised worker (see the module docstring).

    The list of each town's :class:`~carla_capture.record.RecordSummary`.
    """
    return Supervisor(cfg, progress, task).run()
