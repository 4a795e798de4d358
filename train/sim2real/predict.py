"""``train predict sim2real``: what a trained twin VAE makes of a few images.

One PNG, one row per image: input | translation to the other domain | reconstruction | depth
(log colour map, 1 m .. far plane) | segmentation (in the run's label map's palette).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from clipcore.errors import ConfigError
from clipcore.pictures import depth_to_rgb
from dataset.labels import load_label_map
from dataset.target_images import IMAGE_SUFFIXES, TargetImages, _resize
from train.context import resolve_device
from train.sim2real.config import Sim2RealPredict
from train.sim2real.stage import load_sim2real


def _images(path: Path, size: tuple[int, int], rows: int) -> torch.Tensor:
    """Up to ``rows`` images (B, 3, H, W) in [0, 1] from an image or a folder (images or shards)."""
    if path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ConfigError(f"{path} is not a JPG/PNG image; pass an image or a folder of them")
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ConfigError(f"{path} is not a readable image; convert it to PNG or JPG")
        return _resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size)[None]
    ds = TargetImages(path, size)
    picks = np.linspace(0, len(ds) - 1, min(rows, len(ds))).round().astype(int)
    return torch.stack([ds[int(i)]["rgb"] for i in picks])


def _uint8(img: torch.Tensor) -> np.ndarray:
    return (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def predict(cfg: Sim2RealPredict) -> list[str]:
    """``train predict sim2real``: the PNG written."""
    if cfg.path is None:
        raise ConfigError("pass PATH (an image, or a folder of images or shards)")
    device = resolve_device(cfg.device)
    return [str(predict_sim2real(cfg.run, cfg.path, cfg.out, cfg.domain, cfg.rows, device))]


@torch.no_grad()
def predict_sim2real(
    run_dir: Path,
    path: Path,
    out: Path | None = None,
    domain: str = "real",
    rows: int = 4,
    device: str = "cpu",
) -> Path:
    """Write ``<out>/sim2real-<domain>.png`` for images of ``domain`` under ``path``; returns it.

    The run's sim2real-tasks model, else (only stage 1 trained) its sim2real-vae model.
    """
    run_dir = Path(run_dir)
    stage = "sim2real-tasks" if _trained(run_dir, "sim2real-tasks") else "sim2real-vae"
    model, cfg = load_sim2real(run_dir, stage)
    x = _images(Path(path), cfg.frame_size(), rows)
    pred = {k: v.float().cpu() for k, v in model.to(device)(x.to(device), domain).items()}
    palette = load_label_map(cfg.data.label_map)
    panels = []
    for i in range(len(x)):
        seg = palette.colorize(pred["seg_logits"][i].argmax(0).numpy().astype(np.uint8))
        depth = depth_to_rgb(pred["depth"][i, 0].numpy())
        row = [_uint8(x[i]), _uint8(pred["translated"][i]), _uint8(pred["recon"][i]), depth, seg]
        panels.append(np.concatenate(row, axis=1))
    image = np.concatenate(panels, axis=0)
    folder = Path(out) if out else run_dir / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"sim2real-{domain}.png"
    scale = max(1, 512 // image.shape[1] + 1) if image.shape[1] < 512 else 1
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    if not cv2.imwrite(str(target), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise ConfigError(f"could not write {target}; check that the folder is writable")
    return target


def _trained(run_dir: Path, stage: str) -> bool:
    folder = run_dir / stage
    return (folder / "best.pt").exists() or (folder / "model.pt").exists()
