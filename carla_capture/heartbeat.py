"""A heartbeat per simulator tick, watched by the supervisor (:mod:`carla_capture.supervisor`).

The recording worker process calls :func:`attach` with a shared double; every :func:`beat`
stores the current monotonic time in it. Outside a supervised worker :func:`beat` does nothing.
"""

from __future__ import annotations

import time

_SHARED = None


def attach(shared: object | None) -> None:
    """Beat into ``shared`` (a ``multiprocessing.Value('d')``) from now on; None detaches."""
    global _SHARED
    _SHARED = shared


def beat() -> None:
    """Signal progress (called once per tick and once per finished clip)."""
    if _SHARED is not None:
        _SHARED.value = time.monotonic()
