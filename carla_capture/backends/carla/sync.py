"""Matching sensor measurements to simulator ticks by frame number.

Each sensor's ``listen`` callback puts measurements into a :class:`SensorQueue`. For a tick,
:meth:`SensorQueue.get` returns the measurement whose ``frame`` equals the tick's: older ones
are dropped (stale), newer ones are kept for their own tick (reordering), and nothing within
the timeout raises :class:`SensorTimeout`. A mismatched frame is never returned.
"""

from __future__ import annotations

import logging
import queue
import time

from clipcore.errors import RetryClip

log = logging.getLogger(__name__)


class SensorTimeout(RetryClip):
    """A sensor's measurement of a tick did not arrive in time."""


class SensorQueue:
    """Thread-safe inbox of one sensor, used as its ``listen`` callback."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._inbox: queue.Queue = queue.Queue()
        self._early: dict[int, object] = {}
        self.dropped = 0
        #: frame -> monotonic time its measurement arrived (the last 64; for ``capture doctor``)
        self.arrivals: dict[int, float] = {}

    def __call__(self, measurement: object) -> None:
        """Take a sensor measurement (CARLA's listen callback, on its thread)."""
        self.arrivals[measurement.frame] = time.monotonic()
        if len(self.arrivals) > 64:
            self.arrivals.pop(next(iter(self.arrivals)))
        self._inbox.put(measurement)

    def get(self, frame: int, timeout: float) -> object:
        """The measurement of ``frame``, waiting at most ``timeout`` seconds."""
        for stale in [f for f in self._early if f < frame]:
            del self._early[stale]
            self.dropped += 1
        if frame in self._early:
            return self._early.pop(frame)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._inbox.get(timeout=max(remaining, 0.0))
                    if remaining > 0
                    else self._inbox.get_nowait()
                )
            except queue.Empty:
                raise SensorTimeout(
                    f"{self.name} sent no measurement of frame {frame} within {timeout:g} s"
                ) from None
            if item.frame == frame:
                return item
            if item.frame < frame:
                self.dropped += 1
            else:
                self._early[item.frame] = item

    def clear(self) -> None:
        """Forget everything received so far."""
        self._early.clear()
        while True:
            try:
                self._inbox.get_nowait()
            except queue.Empty:
                return
