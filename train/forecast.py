"""``train run forecast``: the fifth stage, future segmentation from past RGB.

The forecaster (``models/forecast.py``) sees the frames of a horizon's pattern (e.g. the four
frames before the target) and predicts the target frame's segmentation. Loss: cross-entropy to
the target's labels plus ``distill_weight`` (lambda, 100) times the distillation loss to the frozen
stage-1 model's output on the target frame. Stage 1 also initialises the encoder and decoder.
Checkpoints go to ``<run>/<forecast-horizon[-stack][-nodistill]>/`` (``best.pt`` by val mIoU).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from clipcore.fsutil import atomic_copy, atomic_write
from clipcore.manifest import load_manifest
from dataset import ClipWindows, DataConfig
from dataset.labels import IGNORE_INDEX
from models.forecast import Forecaster, build_forecaster
from models.segmentation import SegmentationModel, build_segmentation
from train.config import TrainConfig
from train.engine import seed_everything, setup
from train.forecast_config import HorizonConfig
from train.metrics import ConfusionMatrix
from train.run_folder import load_checkpoint, load_component, refuse_overwrite

log = logging.getLogger(__name__)


def forecast_samples(num_frames: int, horizon: HorizonConfig) -> list[tuple[tuple[int, ...], int]]:
    """(input frame indices, target index) of every target with enough history in a clip of
    ``num_frames`` frames: the horizon's pattern slid along the clip (none if it is too short)."""
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


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the student's and the teacher's softmax probabilities,
    (B, K, H, W)
    each, averaged over pixels and classes (0 when the student copies the teacher)."""
    return F.mse_loss(student_logits.float().softmax(1), teacher_logits.float().softmax(1))


def forecast_loss(
    logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None, weight: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy to the target labels plus ``weight`` x distillation; total and parts."""
    ce = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)
    parts = {"ce": float(ce.detach())}
    if teacher_logits is None or weight == 0:
        return ce, parts
    distill = distillation_loss(logits, teacher_logits)
    parts["distill"] = float(distill.detach())
    return ce + weight * distill, parts


def load_teacher(cfg: TrainConfig, run_dir: Path) -> SegmentationModel:
    """Stage 1's segmentation model from ``run_dir``, frozen, in eval mode."""
    teacher = build_segmentation(cfg.model)
    teacher.load_state_dict(load_component(run_dir, "stage1", "segmentation"))
    return teacher.requires_grad_(False).eval()


def load_forecaster(
    run_dir: Path, name: str, device: str | torch.device = "cpu"
) -> tuple[Forecaster, TrainConfig]:
    """A trained forecaster variant (``forecast-short``, ...) of a run, and its config."""
    from clipcore.errors import CaptureError

    path = Path(run_dir) / name / "best.pt"
    if not path.exists():
        raise CaptureError(
            f"{path} does not exist: train it first (train run forecast --out {run_dir} ...)"
        )
    state = load_checkpoint(path)
    cfg = TrainConfig.model_validate(state["config"])
    net = build_forecaster(
        cfg.model, len(cfg.forecast.pattern().inputs), cfg.forecast.temporal, cfg.forecast.width
    )
    net.load_state_dict(state["components"]["forecaster"])
    return net.to(device).eval(), cfg


def _loader(cfg: TrainConfig, split: str, training: bool, epoch: int) -> DataLoader:
    fc = cfg.forecast
    ds = ForecastWindows(
        cfg.data, split, fc.pattern(), training=training, seed=cfg.seed, size=cfg.frame_size()
    )
    ds.set_epoch(epoch)
    sampler = (
        RandomSampler(ds, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        if training
        else SequentialSampler(ds)
    )
    return DataLoader(
        ds,
        batch_size=fc.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        drop_last=training and len(ds) > fc.batch_size,
    )


def train_epoch(
    net: Forecaster,
    teacher: SegmentationModel,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """One pass (at most ``forecast.max_steps`` steps); mean losses and samples per second."""
    net.train()
    fc, sums, steps, start = cfg.forecast, {}, 0, time.perf_counter()
    for batch in loader:
        if fc.max_steps is not None and steps >= fc.max_steps:
            break
        rgb, labels = batch["rgb"].to(device), batch["labels"].to(device)
        with torch.no_grad():
            teacher_logits = (
                teacher(batch["target_rgb"].to(device))["seg_logits"] if fc.distill_weight else None
            )
        loss, parts = forecast_loss(
            net(rgb)["seg_logits"], labels, teacher_logits, fc.distill_weight
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        for k, v in {"loss": float(loss.detach()), **parts}.items():
            sums[k] = sums.get(k, 0.0) + v
    result = {k: v / max(steps, 1) for k, v in sums.items()}
    result["samples_per_s"] = steps * fc.batch_size / max(time.perf_counter() - start, 1e-9)
    return result


@torch.no_grad()
def validate(
    net: Forecaster, loader: DataLoader, num_classes: int, device: torch.device
) -> dict[str, float]:
    """Forecast mIoU and cross-entropy over a split."""
    net.eval()
    confusion, ce_sum, count = ConfusionMatrix(num_classes), 0.0, 0
    for batch in loader:
        logits = net(batch["rgb"].to(device))["seg_logits"]
        labels = batch["labels"].to(device)
        ce_sum += float(F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)) * len(
            labels
        )
        count += len(labels)
        confusion.update(logits.argmax(1).cpu(), labels.cpu())
    return {"ce": ce_sum / max(count, 1), "miou": confusion.result()["miou"]}


def _save(
    path: Path,
    net: Forecaster,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    best: float | None,
    history: list[dict],
    cfg: TrainConfig,
) -> None:
    state = {
        "components": {"forecaster": net.state_dict()},
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "best": best,
        "history": history,
        "config": cfg.model_dump(mode="json"),
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def train_forecast(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train the forecaster of ``cfg.forecast`` into ``<out>/<run_name>/``; returns ``best.pt``."""
    from train.run import save_config

    load_manifest(cfg.data.root)
    fc, out = cfg.forecast, Path(cfg.out) / cfg.forecast.run_name()
    if not resume:
        refuse_overwrite(Path(cfg.out), (fc.run_name(),))
    ctx = setup(cfg)
    save_config(cfg)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    teacher = load_teacher(cfg, Path(cfg.out)).to(ctx.device)
    net = build_forecaster(cfg.model, len(fc.pattern().inputs), fc.temporal, fc.width, teacher).to(
        ctx.device
    )
    net.requires_grad_(True)
    optimizer = torch.optim.Adam(net.parameters(), lr=fc.lr)
    start, best, history = 0, None, []
    if resume and (out / "last.pt").exists():
        state = load_checkpoint(out / "last.pt", ctx.device)
        net.load_state_dict(state["components"]["forecaster"])
        optimizer.load_state_dict(state["optimizer"])
        start, best, history = state["epoch"] + 1, state["best"], state["history"]
    for epoch in range(start, fc.epochs):
        seed_everything(cfg.seed * 1000 + epoch)
        train = train_epoch(
            net,
            teacher,
            _loader(cfg, cfg.data.train_split, True, epoch),
            optimizer,
            cfg,
            ctx.device,
        )
        val = validate(
            net, _loader(cfg, cfg.data.val_split, False, epoch), cfg.model.num_classes, ctx.device
        )
        history.append({"epoch": epoch, "train": train, "val": val})
        log.info("%s epoch %d: train %s | val %s", out.name, epoch + 1, train, val)
        improved = best is None or val["miou"] > best
        best = val["miou"] if improved else best
        _save(out / "last.pt", net, optimizer, epoch, best, history, cfg)
        if improved:
            atomic_copy(out / "last.pt", out / "best.pt")
    return out / "best.pt"
