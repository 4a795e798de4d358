"""``train predict pipeline``.

A video and point clouds of a trained temporal model's predictions on one clip (or, with
``--video``, any video file: :mod:`train.pipeline.video`).

The clip runs through the streaming API (``init_state`` / ``step``), frame by frame. The video
shows RGB | predicted segmentation | predicted depth | ground-truth segmentation. The point
clouds (binary PLY) lift depth into 3D in the first frame's camera coordinates (OpenCV axes):
``<clip>-pred.ply`` uses predicted depth placed with the accumulated predicted poses, coloured by
predicted class; ``<clip>-gt.ply`` uses ground-truth depth and poses, coloured by true class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from clipcore.errors import CaptureError
from clipcore.folder import load_clip
from clipcore.geometry import backproject, invert_pose, transform_points
from clipcore.normalize import to_uint8
from clipcore.pictures import depth_to_rgb, write_image, write_video
from clipcore.progress import Progress
from dataset.labels import load_label_map
from dataset.windows import make_item
from train.context import resolve_device
from train.pipeline.config import PipelinePredict, TrainConfig
from train.pipeline.panels import comparison_panel, comparison_sheet
from train.pipeline.trained import FrameModel, load_run, temporal_model
from train.pipeline.video import predict_video

MAX_DEPTH_M = 80.0
STRIDE = 4


def write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Binary little-endian PLY of (N, 3) float32 points and (N, 3) uint8 colours."""
    vertex = np.empty(
        len(xyz),
        dtype=[
            ("x", "<f4"),
            ("y", "<f4"),
            ("z", "<f4"),
            ("red", "u1"),
            ("green", "u1"),
            ("blue", "u1"),
        ],
    )
    vertex["x"], vertex["y"], vertex["z"] = xyz.T.astype(np.float32)
    vertex["red"], vertex["green"], vertex["blue"] = rgb.T
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(xyz)}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    with open(path, "wb") as fh:
        fh.write(header.encode())
        fh.write(vertex.tobytes())


def lift(
    depths: np.ndarray,
    labels: np.ndarray,
    K: np.ndarray,
    poses: np.ndarray,
    palette: np.ndarray,
    valid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Points and colours of every STRIDE-th pixel of every frame (depth below MAX_DEPTH_M)."""
    xyz, rgb = [], []
    for depth, label, pose, ok in zip(depths, labels, poses, valid, strict=True):
        keep = ok & (depth > 0) & (depth < MAX_DEPTH_M) & (label < len(palette))
        keep[1::STRIDE], keep[:, 1::STRIDE] = False, False
        keep[2::STRIDE], keep[:, 2::STRIDE] = False, False
        keep[3::STRIDE], keep[:, 3::STRIDE] = False, False
        xyz.append(transform_points(pose, backproject(depth, K))[keep])
        rgb.append(palette[label[keep]])
    return np.concatenate(xyz), np.concatenate(rgb)


@torch.no_grad()
def predict_clip(
    run_dir: Path,
    path: Path,
    clip_id: str | None = None,
    out_dir: Path | None = None,
    video_suffix: str = ".mp4",
    device: str = "cpu",
    compare: bool = False,
) -> list[Path]:
    """Run the temporal model on one clip; write the video and both point clouds to ``out_dir``.

    With ``compare``, also the frame-by-frame models (stages 1-3) on the same frames, and
    ``<clip>-compare`` video and PNG sheet: input | ground truth | frame-by-frame | temporal,
    segmentation over depth (:func:`~train.pipeline.panels.comparison_panel`).
    """
    cfg = load_run(run_dir)
    label_map = load_label_map(cfg.data.label_map)
    clip = load_clip(path, clip_id)
    out_dir = Path(out_dir or Path(run_dir) / "predictions")
    out_dir.mkdir(parents=True, exist_ok=True)  # before the work: a file in the way fails now
    raw = clip.arrays()  # a modality the clip lacks becomes "no label" / invalid depth in make_item
    raw["frames"] = raw.pop("frame")
    item = make_item(raw, label_map, None, cfg.frame_size())
    labels, depths, poses = _temporal(cfg, run_dir, item, device, f"predicting {clip.clip_id}")
    height, width = item["rgb"].shape[-2:]
    rgbs = [to_uint8(item["rgb"][t]) for t in range(len(clip))]
    panels = [
        np.concatenate(
            [
                rgbs[t],
                label_map.colorize(labels[t]),
                depth_to_rgb(depths[t]),
                label_map.colorize(item["labels"][t].numpy()),
            ],
            1,
        )
        for t in range(len(clip))
    ]
    video = out_dir / f"{clip.clip_id}{video_suffix}"
    write_video(video, panels, clip.fps)
    K = item["intrinsics"][0].numpy()
    valid = np.ones((len(clip), height, width), bool)
    pred_xyz, pred_rgb = lift(
        np.stack(depths), np.stack(labels), K, np.stack(poses), label_map.palette, valid
    )
    gt_poses = invert_pose(item["cam_to_world"][0].numpy()) @ item["cam_to_world"].numpy()
    gt_xyz, gt_rgb = lift(
        item["depth"][:, 0].numpy(),
        item["labels"].numpy(),
        K,
        gt_poses,
        label_map.palette,
        item["valid_depth"][:, 0].numpy(),
    )
    written = [video, out_dir / f"{clip.clip_id}-pred.ply", out_dir / f"{clip.clip_id}-gt.ply"]
    write_ply(written[1], pred_xyz, pred_rgb)
    write_ply(written[2], gt_xyz, gt_rgb)
    if compare:
        stem = out_dir / f"{clip.clip_id}-compare"
        pictures = _comparison(cfg, run_dir, item, (labels, depths), device)
        written += _write_comparison(pictures, stem, video_suffix, clip.fps)
    return written


def _temporal(
    cfg: TrainConfig, run_dir: Path, item: dict, device: str, desc: str
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The temporal model through a clip frame by frame: per frame class ids, depth, pose."""
    model = temporal_model(cfg, run_dir).to(device)
    height, width = item["rgb"].shape[-2:]
    state = model.init_state(1, height, width, device)
    labels, depths, poses = [], [], []
    with Progress(len(item["rgb"]), desc, unit="frame") as bar:
        for t in range(len(item["rgb"])):
            frame = {
                k: item[k][t][None].to(device) for k in ("rgb", "intrinsics", "depth", "rel_pose")
            }
            out, state = model.step(
                frame["rgb"], state, frame["intrinsics"], frame["depth"], frame["rel_pose"]
            )
            labels.append(out["seg_logits"][0].argmax(0).cpu().numpy())
            depths.append(out["depth"][0, 0].float().cpu().numpy())
            poses.append(
                out["cam_to_world"][0].double().cpu().numpy()
                if "cam_to_world" in out
                else np.eye(4)
            )
            bar.update()
    return labels, depths, poses


def _comparison(
    cfg: TrainConfig,
    run_dir: Path,
    item: dict,
    temporal: tuple[list[np.ndarray], list[np.ndarray]],
    device: str,
) -> list[np.ndarray]:
    """Per frame: input | ground truth | frame-by-frame | temporal, segmentation over depth."""
    out = FrameModel(cfg, run_dir).to(device)(item["rgb"][None].to(device))
    frame_labels = out["seg_logits"][0].argmax(1).cpu().numpy()
    frame_depths = out["depth"][0, :, 0].float().cpu().numpy()
    colorize = load_label_map(cfg.data.label_map).colorize
    return [
        comparison_panel(
            to_uint8(item["rgb"][t]),
            (item["labels"][t].numpy(), frame_labels[t], temporal[0][t]),
            (item["depth"][t, 0].numpy(), frame_depths[t], temporal[1][t]),
            colorize,
        )
        for t in range(len(item["rgb"]))
    ]


def _write_comparison(
    panels: list[np.ndarray], stem: Path, video_suffix: str, fps: float
) -> list[Path]:
    """``stem`` + ``video_suffix`` (every frame) and ``stem.png`` (three frames)."""
    video, sheet = stem.with_suffix(video_suffix), stem.with_suffix(".png")
    write_video(video, panels, fps)
    write_image(sheet, comparison_sheet(panels))
    return [video, sheet]


def predict(cfg: PipelinePredict) -> list[str]:
    """``train predict pipeline``: the files written, one line each."""
    device = resolve_device(cfg.device)
    if cfg.video is not None:
        if cfg.out is None:
            raise CaptureError("--video needs --out FILE.mp4 or FILE.gif")
        report = predict_video(cfg.video, cfg.run, cfg.out, device, cfg.hfov, cfg.max_frames)
        return [
            f"{report.out} ({report.frames} frames, {report.model} model, "
            f"{report.size[0]}x{report.size[1]})"
        ]
    if cfg.path is None:
        raise CaptureError("pass PATH (a shard or dataset folder) or --video FILE")
    suffix = ".gif" if cfg.gif else ".mp4"
    written = predict_clip(cfg.run, cfg.path, cfg.clip, cfg.out, suffix, device, cfg.compare)
    return [str(p) for p in written]
