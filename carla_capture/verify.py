"""``capture verify``: structure, content and quality checks of a dataset; never raises.

Per dataset: clip ids unique across shards (a copied shard). Per shard: readable HDF5,
``carla-clips``, a known format version, a ``town`` attribute naming the folder it is in; per
clip: its ``town`` attribute that of its shard, the completion
marker and the structure of :func:`~clipcore.schema.structure_faults` (shapes, frame counts,
channels, dtypes, chunking), the content of :func:`~clipcore.schema.content_faults` (NaN /
inf, depth range, rigid poses, frame order), then quality with thresholds from
:class:`VerifyConfig`: frame numbers consecutive at the recorded stride and timestamps that match;
no black, saturated or frozen RGB (a stalled camera, told apart from a stationary ego or a view
blocked by a vehicle by whether the tags changed); the sky at the far plane; and geometric
consistency (static pixels inside faces reprojected into the next frame agree in depth and tag);
the camera path in timestamp order (no step turning back against the one before). Checks of a
modality a clip does not have are skipped.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from carla_capture.config import VerifyConfig
from carla_capture.consistency import reprojection_agreement
from clipcore.errors import CaptureError
from clipcore.folder import QUARANTINE, find_shards
from clipcore.geometry import FAR_PLANE_M
from clipcore.manifest import MANIFEST_NAME, load_manifest
from clipcore.records import Clip
from clipcore.schema import content_faults
from clipcore.shards import ShardFormatError, ShardReader
from clipcore.tags import NUM_TAGS, TAG_ID, TAG_NAMES

log = logging.getLogger(__name__)

#: ``clip_id`` of the report of a shard that could not be opened at all.
WHOLE_SHARD = "(whole shard)"


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


Arrays = dict[str, Any]


def _all(arrays: Arrays, *names: str) -> np.ndarray | None:
    """(T,) frames that carry every modality of ``names``, or None if the clip lacks one."""
    if any(n not in arrays for n in names):
        return None
    return np.logical_and.reduce([arrays[f"{n}_valid"] for n in names])


def _check_timing(arrays: Arrays, cfg: VerifyConfig, report: ClipReport) -> None:
    stride, fps = int(arrays["attrs"]["frame_stride"]), float(arrays["attrs"]["fps"])
    steps = np.diff(arrays["frame"])
    if np.any(steps != stride):
        report.failures.append(
            f"frames not consecutive at stride {stride}: steps {sorted(set(steps.tolist()))}"
        )
    dt = np.diff(arrays["timestamp"])
    if np.any(np.abs(dt - stride / fps) > cfg.timestamp_tolerance_s):
        report.failures.append(
            f"timestamp steps {np.round(dt, 4).tolist()[:6]} do not match frame_stride / fps"
        )


def _scene_change(arrays: Arrays, a: int, b: int) -> float | None:
    """Share of pixels whose tag changed from frame a to b (None without tags on both).

    Edges move in the tags when the scene moves in view; a view filled by one object (a truck
    ahead, a wall) keeps its tags even when its depth changes, and may keep its colours.
    """
    if "semantic" in arrays and arrays["semantic_valid"][[a, b]].all():
        return float((arrays["semantic"][a] != arrays["semantic"][b]).mean())
    return None


def _check_rgb(arrays: Arrays, cfg: VerifyConfig, report: ClipReport) -> None:
    rgb = arrays["rgb"]
    n = len(rgb)
    means = rgb.reshape(n, -1).mean(axis=1)
    white = np.all(rgb == 255, axis=-1).reshape(n, -1).mean(axis=1)
    report.metrics["rgb_mean_min"] = float(means.min())
    if np.any(means < cfg.black_mean):
        report.failures.append(f"black RGB frames {np.nonzero(means < cfg.black_mean)[0].tolist()}")
    if np.any(white > cfg.saturated_share):
        report.failures.append(
            f"saturated RGB frames {np.nonzero(white > cfg.saturated_share)[0].tolist()}"
        )
    if n < 2:
        return
    diff = np.abs(np.diff(rgb.astype(np.int16), axis=0)).reshape(n - 1, -1).mean(axis=1)
    poses = _all(arrays, "cam_to_world")
    stalled, blocked = [], []
    for k in np.nonzero(diff < cfg.frozen_mean_diff)[0]:
        moved = (
            poses is not None
            and poses[[k, k + 1]].all()
            and np.linalg.norm(
                arrays["cam_to_world"][k + 1, :3, 3] - arrays["cam_to_world"][k, :3, 3]
            )
            > cfg.frozen_min_motion_m
        )
        if not moved:
            continue  # a stationary ego sees the same picture
        change = _scene_change(arrays, k, k + 1)
        (blocked if change is not None and change < cfg.frozen_scene_change else stalled).append(
            int(k + 1)
        )
    if blocked:
        report.metrics["blocked_view_frames"] = len(blocked)
    if stalled:
        report.failures.append(
            f"frozen RGB: frames {stalled} repeat the previous frame while the camera moved "
            "and the tags changed (a stalled camera)"
        )


def _check_depth_and_tags(arrays: Arrays, cfg: VerifyConfig, report: ClipReport) -> None:
    if "semantic" in arrays:
        tags = arrays["semantic"][arrays["semantic_valid"]]
        hist = np.bincount(tags.ravel(), minlength=NUM_TAGS)[:NUM_TAGS] / max(tags.size, 1)
        report.class_histogram = {
            TAG_NAMES[i]: round(float(h), 6) for i, h in enumerate(hist) if h > 0
        }
    both = _all(arrays, "semantic", "depth")
    if both is None or not both.any():
        return
    depth, tags = arrays["depth"][both], arrays["semantic"][both]
    sky, far = tags == TAG_ID["Sky"], depth >= FAR_PLANE_M * (1 - 1e-6)
    union = (sky | far).reshape(len(depth), -1).sum(axis=1)
    inter = (sky & far).reshape(len(depth), -1).sum(axis=1)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    report.metrics["sky_far_iou_min"] = float(iou.min())
    if iou.min() < cfg.sky_far_iou:
        report.failures.append(
            f"sky is not at the far plane: IoU(sky, depth = {FAR_PLANE_M:g} m) {iou.min():.3f} "
            f"< {cfg.sky_far_iou}"
        )


def _check_geometry(arrays: Arrays, cfg: VerifyConfig, report: ClipReport) -> None:
    ok = _all(arrays, "semantic", "depth", "cam_to_world")
    if ok is None or arrays["intrinsics"] is None:
        return
    depth_agree, label_agree = [], []
    d, s, c2w = arrays["depth"], arrays["semantic"], arrays["cam_to_world"]
    for a in np.nonzero(ok[:-1] & ok[1:])[0]:
        agree = reprojection_agreement(
            d[a],
            s[a],
            c2w[a],
            d[a + 1],
            s[a + 1],
            c2w[a + 1],
            arrays["intrinsics"],
            rel_tol=cfg.geometry_rel_tol,
            interior_only=True,  # edge pixels make the share depend on the resolution
        )
        if agree.in_view >= cfg.min_static_pixels:
            depth_agree.append(agree.depth_agree)
            label_agree.append(agree.label_agree)
    report.metrics["geometry_pairs"] = len(depth_agree)
    if not depth_agree:
        return
    report.metrics.update(
        depth_agree=float(np.mean(depth_agree)), label_agree=float(np.mean(label_agree))
    )
    if report.metrics["depth_agree"] < cfg.min_depth_agree:
        report.failures.append(
            f"geometry: reprojected depth agrees for {report.metrics['depth_agree']:.1%} "
            f"< {cfg.min_depth_agree:.0%} of static pixels"
        )
    if report.metrics["label_agree"] < cfg.min_label_agree:
        report.failures.append(
            f"geometry: reprojected tags agree for {report.metrics['label_agree']:.1%} "
            f"< {cfg.min_label_agree:.0%}"
        )


def _check_trajectory(arrays: Arrays, cfg: VerifyConfig, report: ClipReport) -> None:
    """The camera path taken in timestamp order never turns back.

    A step against the one before (both longer than ``trajectory_min_step_m``) means frames
    reordered with their poses.

    Only the direction is judged, not the speed: the embedded simulator's camera jumps sideways
    where its route turns (it rides 1.5 m ahead of a heading that changes per route vertex), so a
    bound on acceleration or on speed changes would fail clean clips at high frame rates.
    """
    ok = _all(arrays, "cam_to_world")
    if ok is None or ok.sum() < 3:
        return
    idx = np.nonzero(ok)[0]
    steps = np.diff(arrays["cam_to_world"][idx, :3, 3], axis=0)
    length = np.linalg.norm(steps, axis=1)
    moving = length >= max(cfg.trajectory_min_step_m, 1e-9)
    cosine = np.einsum("ij,ij->i", steps[1:], steps[:-1]) / np.maximum(
        length[1:] * length[:-1], 1e-12
    )
    back = moving[1:] & moving[:-1] & (cosine < 0)
    if back.any():
        report.failures.append(
            f"trajectory out of time order: the camera turns back at frames "
            f"{idx[1:-1][back].tolist()[:6]} (frames reordered with their poses?)"
        )


def _check_town(arrays: Arrays, cfg: VerifyConfig, report: ClipReport) -> None:
    town = arrays["attrs"].get("town")
    if town is not None and str(town) != report.town:
        report.failures.append(
            f"clip town attribute is {town}, the shard holds {report.town}: the clip was "
            "copied into another town's shard"
        )


CHECKS = (
    _check_town,
    _check_timing,
    _check_trajectory,
    _check_rgb,
    _check_depth_and_tags,
    _check_geometry,
)


def verify_arrays(
    arrays: Arrays, clip_id: str, shard: str, town: str, cfg: VerifyConfig
) -> ClipReport:
    """Content and quality checks of one clip read with ``ShardReader.read_arrays(check=False)``."""
    report = ClipReport(clip_id, shard, town)
    report.failures += content_faults(arrays)
    if report.failures:  # quality checks assume sane values
        return report
    for check in CHECKS:
        check(arrays, cfg, report)
    return report


def verify_clip(clip: Clip, shard: str, cfg: VerifyConfig) -> ClipReport:
    """Every check on a :class:`Clip` in memory (e.g. straight from a backend)."""
    return verify_arrays(clip.arrays(), clip.clip_id, shard, clip.town, cfg)


def _verify_clip(reader: ShardReader, cid: str, rel: str, cfg: VerifyConfig) -> ClipReport:
    faults = reader.faults(cid)
    if faults:
        return ClipReport(cid, rel, reader.town, failures=list(faults))
    try:
        report = verify_arrays(reader.read_arrays(cid, check=False), cid, rel, reader.town, cfg)
        report.failures += reader.checksum_faults(cid)
        return report
    except ShardFormatError as exc:
        return ClipReport(cid, rel, reader.town, failures=[str(exc)])
    except Exception as exc:  # noqa: BLE001 - verify reports every fault and carries on
        log.debug("checking %s in %s failed", cid, rel, exc_info=True)
        return ClipReport(
            cid, rel, reader.town, failures=[f"could not be checked ({type(exc).__name__}: {exc})"]
        )


def _town_faults(reader: ShardReader, path: Path) -> list[str]:
    """The shard's root ``town`` attribute is there and names the folder the shard is in."""
    town = reader.root_attrs().get("town")
    if town is None:
        return [
            f"the shard has no town attribute (its folder says {path.parent.name}): it was not "
            "written by capture; re-record or re-import it"
        ]
    if str(town) != path.parent.name:
        return [
            f"a shard of {town} in folder {path.parent.name}/: move it to {town}/ (a shard of "
            "another town in a town folder)"
        ]
    return []


def verify_shard(path: Path, rel: str, cfg: VerifyConfig) -> list[ClipReport]:
    """Reports of every clip of one shard.

    And a :data:`WHOLE_SHARD` report when the shard itself is faulty (it cannot be opened, its
    ``town`` attribute is missing or names another folder than the one it is in).
    """
    try:
        reader = ShardReader(path)
    except ShardFormatError as exc:
        return [ClipReport(WHOLE_SHARD, rel, "?", failures=[str(exc)])]
    with reader:
        faults = _town_faults(reader, Path(path))
        reports = [ClipReport(WHOLE_SHARD, rel, reader.town, failures=faults)] if faults else []
        reports += [
            ClipReport(
                cid, rel, reader.town, failures=["no completion marker: writing it never finished"]
            )
            for cid in reader.incomplete_ids()
        ]
        return reports + [_verify_clip(reader, cid, rel, cfg) for cid in reader.clip_ids()]


def _duplicates(reports: list[ClipReport]) -> None:
    """A clip id in two shards (a copied shard): each later copy fails, naming the first."""
    first: dict[str, str] = {}
    for report in reports:
        if report.clip_id in (WHOLE_SHARD, MANIFEST_NAME):
            continue
        if report.clip_id in first and first[report.clip_id] != report.shard:
            report.failures.append(
                f"the same clip id is in {first[report.clip_id]}: remove one copy (a copied shard?)"
            )
        first.setdefault(report.clip_id, report.shard)


def verify_dataset(
    data_dir: Path,
    cfg: VerifyConfig,
    progress: Callable[[str], None] | None = None,
    shards: list[Path] | None = None,
) -> list[ClipReport]:
    """Check every clip of every shard under ``data_dir``.

    Then the dataset as a whole (clip ids unique across shards); a manifest whose shards changed is
    reported (as clip ``split.json``), and verify carries on.

    Args:
        data_dir: The dataset folder.
        cfg: The thresholds.
        progress: Called with each shard's path relative to ``data_dir`` once it is checked.
        shards: The shards to check [default: every shard under ``data_dir``].
    """
    data_dir = Path(data_dir)
    reports = []
    if (data_dir / MANIFEST_NAME).exists():
        try:
            load_manifest(data_dir, verify_checksums=True)
        except CaptureError as exc:
            reports.append(ClipReport(MANIFEST_NAME, MANIFEST_NAME, "-", failures=[str(exc)]))
    for path in find_shards(data_dir) if shards is None else shards:
        rel = str(path.relative_to(data_dir)) if path.is_relative_to(data_dir) else str(path)
        reports += verify_shard(path, rel, cfg)
        if progress:
            progress(rel)
    _duplicates(reports)
    return reports


def quarantine(data_dir: Path, reports: list[ClipReport]) -> list[str]:
    """Move each shard holding a failing clip, or unreadable, to ``quarantine/``.

    The shard keeps its path relative to ``<data_dir>/quarantine/`` (``.2``, ``.3``, ... appended if
    a file of that name is already there).
    """
    moved = []
    for rel in sorted({r.shard for r in reports if not r.passed and r.shard != MANIFEST_NAME}):
        src, dst = Path(data_dir) / rel, Path(data_dir) / QUARANTINE / rel
        if not src.exists():
            continue
        n = 1
        while dst.exists():  # never overwrite an earlier quarantined file
            n += 1
            dst = Path(data_dir) / QUARANTINE / f"{rel}.{n}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(src, dst)
        moved.append(rel)
    return moved


def report_json(
    data_dir: Path, reports: list[ClipReport], cfg: VerifyConfig, moved: list[str]
) -> dict[str, Any]:
    """The JSON report: thresholds, one entry per clip, totals, quarantined shards."""
    return {
        "data_dir": str(data_dir),
        "thresholds": cfg.model_dump(),
        "clips": [{**asdict(r), "passed": r.passed} for r in reports],
        "passed": sum(r.passed for r in reports),
        "failed": sum(not r.passed for r in reports),
        "quarantined": moved,
    }


def report_table(reports: list[ClipReport]) -> str:
    """One row per clip, then the reasons of every failure."""
    lines = [f"{'clip':<22} {'rgb min':>7} {'sky IoU':>7} {'depth ok':>8} {'tags ok':>7}  result"]
    for r in reports:
        m = r.metrics
        geo = (
            f"{m['depth_agree']:>8.1%} {m['label_agree']:>7.1%}"
            if "depth_agree" in m
            else f"{'-':>8} {'-':>7}"
        )
        rgb = f"{m['rgb_mean_min']:>7.1f}" if "rgb_mean_min" in m else f"{'-':>7}"
        sky = f"{m['sky_far_iou_min']:>7.3f}" if "sky_far_iou_min" in m else f"{'-':>7}"
        lines.append(f"{r.clip_id:<22} {rgb} {sky} {geo}  {'PASS' if r.passed else 'FAIL'}")
    for r in reports:
        lines += [f"FAIL {r.clip_id} ({r.shard}): {why}" for why in r.failures]
    lines.append(
        f"{sum(r.passed for r in reports)} passed, {sum(not r.passed for r in reports)} failed"
    )
    return "\n".join(lines)
