"""The CARLA 0.9.16 backend (not implemented yet; see issue "The CARLA 0.9.16 backend")."""

from __future__ import annotations

from carla_capture.config import CaptureConfig, TownConfig
from carla_capture.errors import BackendUnavailableError
from carla_capture.records import Clip


class CarlaBackend:
    """Placeholder that refuses to run until the CARLA backend lands."""

    name = "carla"

    def __init__(self, config: CaptureConfig, town: TownConfig) -> None:
        raise BackendUnavailableError(
            "the CARLA backend is not available in this version yet; "
            "record with the embedded simulator instead: capture record --backend synthetic ..."
        )

    def __enter__(self) -> "CarlaBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def record_clip(self, index: int, on_frame: object = None) -> Clip:  # pragma: no cover - never constructed
        raise NotImplementedError
