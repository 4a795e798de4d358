"""A heartbeat per simulator tick, watched by the supervisor (:mod:`carla_capture.supervisor`).

The recording worker process calls :func:`attach` with a shared double that holds a deadline
(monotonic seconds): every :func:`beat` moves it ``stall_s`` ahead; :func:`expect` moves it
further ahead before a call that may rightly take long (a map load, waiting for a lost server).
The supervisor restarts the worker once the deadline passes. Outside a supervised worker both
do nothing.
"""

from __future__ import annotations

import time

_SHARED = None
_STALL_S = 60.0


def attach(shared: object | None, stall_s: float = 60.0) -> None:
    """Beat into ``shared`` (a ``multiprocessing.Value('d')``) from now on; None detaches."""
    global _SHARED, _STALL_S
    _SHARED, _STALL_S = shared, stall_s


def beat() -> None:
    """Signal progress (called once per tick and once per finished clip)."""
    if _SHARED is not None:
        _SHARED.value = time.monotonic() + _STALL_S


def expect(seconds: float) -> None:
    """The next beat may take up to ``seconds`` (or the stall timeout, if longer)."""
    if _SHARED is not None:
        _SHARED.value = time.monotonic() + max(seconds, _STALL_S)
