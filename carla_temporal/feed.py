"""Frames from a capture backend, produced in a thread a few frames ahead of their consumer.

``train live`` runs the simulator in this thread while the model works on the previous frame,
so on two cores simulating and inferring overlap (the renderer and torch release the GIL for
their heavy work). The thread stops at the first frame it cannot hand over after
:meth:`FrameFeed.close`; a backend error reaches the consumer, raised from its loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from clipcore.errors import RetryClip, ServerLost
from clipcore.records import Frame

log = logging.getLogger(__name__)


class ClipSource(Protocol):
    """What the feed needs of a capture backend (``carla_capture.backends``)."""

    def record_clip(self, index: int, on_frame: Callable[[Frame], None]) -> Any:
        """Simulate clip ``index``, calling ``on_frame`` with each frame as it exists."""

    def restart(self, attempt: int) -> None:
        """Reconnect after :class:`ServerLost` (``attempt`` counts from 1)."""


class _Stopped(Exception):
    """The consumer closed the feed."""


class FrameFeed:
    """Iterate to get clip starts and their frames until :meth:`close`.

    ``("clip", index)`` when a clip starts, then ``("frame", Frame)`` for each of its frames, clip
    after clip.

    A clip the backend retries (:class:`RetryClip`) is skipped with a warning after the frames
    it gave; a lost server (:class:`ServerLost`) is reconnected up to ``max_restarts`` times.
    ``simulate_s`` is the wall time the thread spent inside the backend.
    """

    def __init__(self, backend: ClipSource, max_restarts: int = 0, ahead: int = 2) -> None:
        self.backend, self.max_restarts = backend, max_restarts
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=ahead)
        self.stopping = threading.Event()
        self.simulate_s = 0.0
        self._mark = time.perf_counter()
        self._started = False
        self.thread = threading.Thread(target=self._run, name="frame-feed", daemon=True)

    def _put(self, item: tuple[str, Any]) -> None:
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _on_frame(self, frame: Frame) -> None:
        self.simulate_s += time.perf_counter() - self._mark
        self._put(("frame", frame))
        self._mark = time.perf_counter()

    def _record(self, index: int, restarts: int) -> int:
        """Record clip ``index`` into the queue; returns the restarts used so far."""
        self._put(("clip", index))
        self._mark = time.perf_counter()
        try:
            self.backend.record_clip(index, on_frame=self._on_frame)
        except RetryClip as exc:
            log.warning("clip %d: %s; going on with the next clip", index, exc)
        except ServerLost as exc:
            if restarts >= self.max_restarts:
                raise
            log.warning("%s; reconnecting (%d of %d)", exc, restarts + 1, self.max_restarts)
            self.backend.restart(restarts + 1)
            return restarts + 1
        return restarts

    def _run(self) -> None:
        index = restarts = 0
        try:
            while not self.stopping.is_set():
                restarts = self._record(index, restarts)
                index += 1
        except _Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            try:
                self._put(("error", exc))
            except _Stopped:
                pass

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        if not self._started:
            self._started = True
            self.thread.start()
        while True:
            kind, value = self.queue.get()
            if kind == "error":
                raise value
            yield kind, value

    def close(self) -> None:
        """Stop the thread (it finishes the frame it is rendering) and wait for it."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join()
