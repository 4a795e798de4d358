"""The forecasting samples of a split: every target frame with enough history in every clip."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from dataset import ClipWindows, DataConfig
from train.forecast.config import HorizonConfig


def forecast_samples(num_frames: int, horizon: HorizonConfig) -> list[tuple[tuple[int, ...], int]]:
    """(input frame indices, target index) of every target with enough history.

    In a clip of ``num_frames`` frames: the horizon's pattern slid along the clip (none if it is too
    short).
    """
    return [(tuple(t + o for o in horizon.offsets), t) for t in range(horizon.history, num_frames)]


class ForecastWindows(Dataset):
    """Forecasting samples of a split: every target with enough history in every clip.

    Item: ``rgb`` (T, 3, H, W) input frames; ``target_rgb`` (3, H, W); ``labels`` (H, W) of the
    target; ``last_labels``, ``last_depth`` (H, W) metres and ``last_valid_depth`` of the last
    input;
    ``intrinsics`` (3, 3); ``input_cam_to_world`` (T, 4, 4); ``target_cam_to_world`` (4, 4);
    ``clip_id``. Built on :class:`ClipWindows` windows of
    ``history + 1`` frames at stride 1, of which it keeps the pattern's frames.
    """

    def __init__(
        self,
        data: DataConfig,
        split: str,
        horizon: HorizonConfig,
        *,
        training: bool = False,
        seed: int = 0,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.horizon = horizon
        self.windows = ClipWindows.from_config(
            data, split, horizon.history + 1, training=training, stride=1, seed=seed, size=size
        )
        self.picks = [horizon.history + o for o in horizon.offsets]

    def __len__(self) -> int:
        return len(self.windows)

    def set_epoch(self, epoch: int) -> None:
        """New augmentations for ``epoch``."""
        self.windows.set_epoch(epoch)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item, picks, last = self.windows[i], self.picks, self.picks[-1]
        return {
            "rgb": item["rgb"][picks],
            "target_rgb": item["rgb"][-1],
            "labels": item["labels"][-1],
            "last_labels": item["labels"][last],
            "last_depth": item["depth"][last, 0],
            "last_valid_depth": item["valid_depth"][last, 0],
            "intrinsics": item["intrinsics"][0],
            "input_cam_to_world": item["cam_to_world"][picks],
            "target_cam_to_world": item["cam_to_world"][-1],
            "clip_id": item["clip_id"],
        }
