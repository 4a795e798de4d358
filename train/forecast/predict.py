"""``train predict forecast``.

A video of one clip, per target frame: last input RGB | forecast | zero-motion (stage 1 on the last
input) | ground truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from clipcore.errors import CaptureError
from clipcore.folder import load_clip
from clipcore.normalize import to_uint8
from clipcore.pictures import write_video
from dataset.labels import load_label_map
from dataset.windows import make_item
from train.context import resolve_device
from train.forecast.config import ForecastPredict
from train.forecast.data import forecast_samples
from train.forecast.stage import load_forecaster, load_teacher


def predict(cfg: ForecastPredict) -> list[str]:
    """``train predict forecast``: the files written, one line each."""
    if cfg.path is None:
        raise CaptureError("pass PATH (a shard or dataset folder)")
    suffix = ".gif" if cfg.gif else ".mp4"
    device = resolve_device(cfg.device)
    written = predict_forecast(cfg.run, cfg.path, cfg.clip, cfg.out, suffix, device, cfg.variant)
    return [str(path) for path in written]


@torch.no_grad()
def predict_forecast(
    run_dir: Path,
    path: Path,
    clip_id: str | None = None,
    out_dir: Path | None = None,
    video_suffix: str = ".mp4",
    device: str = "cpu",
    variant: str | None = None,
) -> list[Path]:
    """Video of one clip: last input RGB | forecast | zero-motion | ground truth, per target."""
    run_dir = Path(run_dir)
    names = sorted(p.parent.name for p in run_dir.glob("forecast-*/best.pt"))
    variant = variant or (names[0] if names else "forecast-short")
    net, cfg = load_forecaster(run_dir, variant, device)
    teacher = load_teacher(cfg, run_dir).to(device)
    label_map = load_label_map(cfg.data.label_map)
    clip = load_clip(path, clip_id)
    raw = {
        "rgb": clip.stack("rgb"),
        "semantic": clip.stack("semantic"),
        "depth": clip.stack("depth"),
        "cam_to_world": clip.stack("cam_to_world"),
        "intrinsics": clip.intrinsics,
        "frames": clip.stack("frame"),
    }
    item = make_item(raw, label_map, None, cfg.frame_size())
    samples = forecast_samples(len(clip), cfg.forecast.pattern())
    if not samples:
        raise CaptureError(
            f"clip {clip.clip_id} has {len(clip)} frames, fewer than the {cfg.forecast.horizon} "
            f"horizon needs ({cfg.forecast.pattern().history + 1}); pick a shorter horizon"
        )
    panels = []
    for inputs, target in samples:
        rgb = item["rgb"][list(inputs)][None].to(device)
        forecast = net(rgb)["seg_logits"][0].argmax(0).cpu().numpy()
        zero = teacher(rgb[:, -1])["seg_logits"][0].argmax(0).cpu().numpy()
        panels.append(
            np.concatenate(
                [
                    to_uint8(item["rgb"][inputs[-1]]),
                    label_map.colorize(forecast),
                    label_map.colorize(zero),
                    label_map.colorize(item["labels"][target].numpy()),
                ],
                1,
            )
        )
    out_dir = Path(out_dir or run_dir / "predictions")
    out_dir.mkdir(parents=True, exist_ok=True)
    video = out_dir / f"{clip.clip_id}-{variant}{video_suffix}"
    write_video(video, panels, clip.fps)
    return [video]
