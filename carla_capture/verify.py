"""``capture verify``: per-clip quality checks of a dataset, with thresholds from :class:`VerifyConfig`.

Checks per clip: frame numbers consecutive at the recorded stride and timestamps that match;
no black, saturated or frozen RGB; depth finite in (0, 1000] m with the sky at the far plane;
tags inside the schema; poses that are proper rigid transforms; and geometric consistency
(static pixels reprojected into the next frame agree in depth and tag).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from carla_capture.config import VerifyConfig
from carla_capture.consistency import reprojection_agreement
from carla_capture.errors import CaptureError
from carla_capture.geometry import FAR_PLANE_M
from carla_capture.inspect import QUARANTINE, find_shards
from carla_capture.records import Clip
from carla_capture.shards import ShardReader
from carla_capture.split import MANIFEST_NAME, load_manifest
from carla_capture.tags import NUM_TAGS, TAG_ID, TAG_NAMES

log = logging.getLogger(__name__)


@dataclass
class ClipReport:
    """Outcome of the checks of one clip."""

    clip_id: str
    shard: str
    town: str
    failures: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    class_histogram: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when no check failed."""
        return not self.failures


def _check_timing(clip: Clip, cfg: VerifyConfig, report: ClipReport) -> None:
    frames = clip.stack("frame")
    steps = np.diff(frames)
    if np.any(steps != clip.frame_stride):
        report.failures.append(f"frames not consecutive at stride {clip.frame_stride}: steps {sorted(set(steps.tolist()))}")
    dt = np.diff(clip.stack("timestamp"))
    if np.any(np.abs(dt - clip.frame_stride / clip.fps) > cfg.timestamp_tolerance_s):
        report.failures.append(f"timestamp steps {np.round(dt, 4).tolist()} do not match frame_stride / fps")


def _check_rgb(clip: Clip, cfg: VerifyConfig, report: ClipReport) -> None:
    rgb = clip.stack("rgb")
    means = rgb.reshape(len(rgb), -1).mean(axis=1)
    white = np.all(rgb == 255, axis=-1).reshape(len(rgb), -1).mean(axis=1)
    report.metrics["rgb_mean_min"] = float(means.min())
    if np.any(means < cfg.black_mean):
        report.failures.append(f"black RGB frames {np.nonzero(means < cfg.black_mean)[0].tolist()}")
    if np.any(white > cfg.saturated_share):
        report.failures.append(f"saturated RGB frames {np.nonzero(white > cfg.saturated_share)[0].tolist()}")
    poses = clip.stack("cam_to_world")
    moved = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    diff = np.abs(np.diff(rgb.astype(np.int16), axis=0)).reshape(len(rgb) - 1, -1).mean(axis=1) if len(rgb) > 1 else np.zeros(0)
    frozen = np.nonzero((diff < cfg.frozen_mean_diff) & (moved > cfg.frozen_min_motion_m))[0]
    if frozen.size:
        report.failures.append(f"frozen RGB: frames {(frozen + 1).tolist()} repeat the previous frame while the camera moved")


def _check_depth_and_tags(clip: Clip, cfg: VerifyConfig, report: ClipReport) -> None:
    depth, tags = clip.stack("depth"), clip.stack("semantic")
    if not np.all(np.isfinite(depth)) or depth.min() <= 0 or depth.max() > FAR_PLANE_M * (1 + 1e-6):
        report.failures.append(f"depth outside (0, {FAR_PLANE_M:g}] m: range {np.nanmin(depth):.4g} .. {np.nanmax(depth):.4g}")
    sky, far = tags == TAG_ID["Sky"], depth >= FAR_PLANE_M * (1 - 1e-6)
    union = (sky | far).reshape(len(depth), -1).sum(axis=1)
    inter = (sky & far).reshape(len(depth), -1).sum(axis=1)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    report.metrics["sky_far_iou_min"] = float(iou.min())
    if iou.min() < cfg.sky_far_iou:
        report.failures.append(f"sky is not at the far plane: IoU(sky, depth = {FAR_PLANE_M:g} m) {iou.min():.3f} < {cfg.sky_far_iou}")
    if int(tags.max()) >= NUM_TAGS:
        report.failures.append(f"tag {int(tags.max())} outside the carla-0.9.16 schema (0..{NUM_TAGS - 1})")
    hist = np.bincount(tags.ravel(), minlength=NUM_TAGS)[:NUM_TAGS] / tags.size
    report.class_histogram = {TAG_NAMES[i]: round(float(h), 6) for i, h in enumerate(hist) if h > 0}


def _check_geometry(clip: Clip, cfg: VerifyConfig, report: ClipReport) -> None:
    poses = clip.stack("cam_to_world")
    rot = poses[:, :3, :3]
    orthonormal = np.allclose(rot @ np.swapaxes(rot, 1, 2), np.eye(3), atol=1e-5)
    if not orthonormal or np.any(np.linalg.det(rot) < 0) or not np.allclose(poses[:, 3], [0, 0, 0, 1]):
        report.failures.append("cam_to_world is not a rigid transform with a proper rotation (a flipped axis?)")
        return
    depth_agree, label_agree = [], []
    for a, b in zip(clip.frames, clip.frames[1:]):
        agree = reprojection_agreement(a.depth, a.semantic, a.cam_to_world, b.depth, b.semantic, b.cam_to_world,
                                       clip.intrinsics, rel_tol=cfg.geometry_rel_tol)
        if agree.in_view >= cfg.min_static_pixels:
            depth_agree.append(agree.depth_agree)
            label_agree.append(agree.label_agree)
    if not depth_agree:
        report.metrics["geometry_pairs"] = 0
        return
    report.metrics.update(geometry_pairs=len(depth_agree), depth_agree=float(np.mean(depth_agree)),
                          label_agree=float(np.mean(label_agree)))
    if report.metrics["depth_agree"] < cfg.min_depth_agree:
        report.failures.append(f"geometry: reprojected depth agrees for {report.metrics['depth_agree']:.1%} < {cfg.min_depth_agree:.0%} of static pixels")
    if report.metrics["label_agree"] < cfg.min_label_agree:
        report.failures.append(f"geometry: reprojected tags agree for {report.metrics['label_agree']:.1%} < {cfg.min_label_agree:.0%}")


CHECKS = (_check_timing, _check_rgb, _check_depth_and_tags, _check_geometry)


def verify_clip(clip: Clip, shard: str, cfg: VerifyConfig) -> ClipReport:
    """Run every check on one clip."""
    report = ClipReport(clip.clip_id, shard, clip.town)
    for check in CHECKS:
        check(clip, cfg, report)
    return report


def verify_dataset(data_dir: Path, cfg: VerifyConfig) -> list[ClipReport]:
    """Check every clip of every shard under ``data_dir`` (its manifest first, if there is one)."""
    data_dir = Path(data_dir)
    if (data_dir / MANIFEST_NAME).exists():
        load_manifest(data_dir, verify_checksums=True)
    reports = []
    for path in find_shards(data_dir):
        rel = str(path.relative_to(data_dir)) if path.is_relative_to(data_dir) else str(path)
        with ShardReader(path) as reader:
            for cid in reader.clip_ids():
                reports.append(verify_clip(reader.read_clip(cid), rel, cfg))
    return reports


def quarantine(data_dir: Path, reports: list[ClipReport]) -> list[str]:
    """Move each shard holding a failing clip to ``<data_dir>/quarantine/`` (same relative path)."""
    moved = []
    for rel in sorted({r.shard for r in reports if not r.passed}):
        src, dst = Path(data_dir) / rel, Path(data_dir) / QUARANTINE / rel
        if dst.exists():
            raise CaptureError(f"{dst} already exists; move it away, then run verify --quarantine again")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(src, dst)
        moved.append(rel)
    return moved


def report_json(data_dir: Path, reports: list[ClipReport], cfg: VerifyConfig, moved: list[str]) -> dict[str, Any]:
    """The JSON report: thresholds, one entry per clip, totals, quarantined shards."""
    return {
        "data_dir": str(data_dir), "thresholds": cfg.model_dump(),
        "clips": [{**asdict(r), "passed": r.passed} for r in reports],
        "passed": sum(r.passed for r in reports), "failed": sum(not r.passed for r in reports),
        "quarantined": moved,
    }


def report_table(reports: list[ClipReport]) -> str:
    """One row per clip, then the reasons of every failure."""
    lines = [f"{'clip':<22} {'rgb min':>7} {'sky IoU':>7} {'depth ok':>8} {'tags ok':>7}  result"]
    for r in reports:
        m = r.metrics
        geo = (f"{m['depth_agree']:>8.1%} {m['label_agree']:>7.1%}" if "depth_agree" in m else f"{'-':>8} {'-':>7}")
        lines.append(f"{r.clip_id:<22} {m.get('rgb_mean_min', 0):>7.1f} {m.get('sky_far_iou_min', 0):>7.3f} {geo}  {'PASS' if r.passed else 'FAIL'}")
    for r in reports:
        lines += [f"FAIL {r.clip_id} ({r.shard}): {why}" for why in r.failures]
    lines.append(f"{sum(r.passed for r in reports)} passed, {sum(not r.passed for r in reports)} failed")
    return "\n".join(lines)
