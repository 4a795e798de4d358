"""What every capture backend provides: clips, one at a time, by index."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from carla_capture.config import CaptureConfig, TownConfig
from clipcore.records import Clip, Frame

FrameCallback = Callable[[Frame], None]


def clip_id(town: str, seed: int, index: int) -> str:
    """The dataset-wide unique id of clip ``index`` recorded in ``town`` with ``seed``."""
    return f"{town}-{seed}-{index:06d}"


class Backend(Protocol):
    """A source of clips. Used as a context manager so it can release simulator resources.

    ``record_clip(index, on_frame)`` must be deterministic in (town config, seed, index)
    where the simulator allows it, must raise rather than return a clip with mismatched
    frames, and calls ``on_frame`` with each frame as soon as it exists (so the writer can
    encode while the simulator works on the next one).
    """

    name: str

    def __init__(self, config: CaptureConfig, town: TownConfig) -> None: ...

    def __enter__(self) -> Backend: ...

    def __exit__(self, *exc: object) -> None: ...

    def record_clip(self, index: int, on_frame: FrameCallback | None = None) -> Clip:
        """Record clip ``index`` of the plan, calling ``on_frame`` with each frame as it arrives."""
        ...

    def restart(self, attempt: int = 1) -> None:
        """Reconnect after :class:`ServerLost`.

        ``attempt`` counts from 1; backends without a server never raise it.
        """
