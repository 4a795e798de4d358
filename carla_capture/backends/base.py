"""What every capture backend provides: clips, one at a time, by index."""

from __future__ import annotations

from typing import Protocol

from carla_capture.config import CaptureConfig, TownConfig
from carla_capture.records import Clip


def clip_id(town: str, seed: int, index: int) -> str:
    """The dataset-wide unique id of clip ``index`` recorded in ``town`` with ``seed``."""
    return f"{town}-{seed}-{index:06d}"


class Backend(Protocol):
    """A source of clips. Used as a context manager so it can release simulator resources.

    ``record_clip(index)`` must be deterministic in (town config, seed, index) where the
    simulator allows it, and must raise rather than return a clip with mismatched frames.
    """

    name: str

    def __init__(self, config: CaptureConfig, town: TownConfig) -> None: ...

    def __enter__(self) -> "Backend": ...

    def __exit__(self, *exc: object) -> None: ...

    def record_clip(self, index: int) -> Clip: ...
