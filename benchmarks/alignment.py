"""How well the frame model's geometry places a memory: figures for ``benchmarks/learning.py``.

A memory aligned by the estimated geometry is warped from frame t-1 into frame t by the
frame model's single-frame depth of frame t and its ego-motion t-1 -> t, with the rotation
refined photometrically (``model.pose_refine_iterations``, ``models/pose_refine.py``). Per
consecutive pair of the test clips, on the frames as the model sees them (clean or corrupted):

- the pose error against the truth: rotation (degrees) and translation (metres), of the
  ego-motion filter's pose (``estimated``) and of the refined one (``refined``), beside the true
  rotation's own size (what assuming no rotation would err by);
- the photometric error: the mean absolute difference, over the valid pixels, between the clean
  frame t and the clean frame t-1 warped into it by the frame model's depth and each pose (no
  motion, estimated, refined, true), and by the true depth and pose (the floor: what is left is
  the sampling and the disocclusions). Lower is better; normalised RGB units.
"""

from __future__ import annotations

import torch

from dataset.config import Perturbation
from dataset.perturb import corrupt
from models.common import so3_log
from models.pose_refine import photometric_error, refine_window


def _rotation_deg(pose: torch.Tensor) -> torch.Tensor:
    """Rotation angle (N,) of poses (N, 4, 4), degrees."""
    return torch.rad2deg(so3_log(pose[:, :3, :3].double()).norm(dim=-1)).float()


@torch.no_grad()
def alignment_figures(
    frame: torch.nn.Module, ds, iterations: int, perturbation: Perturbation | None = None
) -> dict:
    """The figures above over every window of ``ds`` (corrupted by ``perturbation`` if given).

    ``frame``: :class:`~train.pipeline.trained.FrameModel`; ``iterations``: the refinement's
    Gauss-Newton steps.
    """
    sums: dict[str, float] = {}
    pairs = 0

    def add(key: str, values: torch.Tensor) -> None:
        sums[key] = sums.get(key, 0.0) + float(values.sum())

    for index in range(len(ds)):
        item = ds[index]
        clean = item["rgb"][None].float()
        seen = clean if perturbation is None else corrupt(clean, perturbation, [(index,)])[0]
        out = frame(seen)
        refined = refine_window(
            seen, out["depth"], item["intrinsics"][None, 0], out["rel_pose"], iterations
        )
        t = clean.shape[1]
        K = item["intrinsics"][None, 0].float().expand(t - 1, 3, 3)
        truth = item["rel_pose"][1:].float()
        poses = {
            "no_motion": torch.eye(4).expand(t - 1, 4, 4),
            "estimated": out["rel_pose"][0, 1:].float(),
            "refined": refined[0, 1:].float(),
            "truth_pose": truth,
        }
        prev, cur = clean[0, :-1], clean[0, 1:]
        depth = out["depth"][0, 1:].float()
        for name, pose in poses.items():
            add(f"photometric/{name}", photometric_error(prev, cur, depth, K, pose))
        true_depth = item["depth"][1:].float()
        add("photometric/truth", photometric_error(prev, cur, true_depth, K, truth))
        for name in ("estimated", "refined"):
            pose = poses[name]
            add(f"rotation_error_deg/{name}", _rotation_deg(torch.linalg.inv(pose) @ truth))
            add(f"translation_error_m/{name}", (pose[:, :3, 3] - truth[:, :3, 3]).norm(dim=-1))
        add("true_rotation_deg", _rotation_deg(truth))
        add("refined_share", (poses["refined"] != poses["estimated"]).flatten(1).any(1).float())
        pairs += t - 1
    out: dict = {"pairs": pairs}
    for key, total in sums.items():
        group, _, name = key.partition("/")
        value = total / max(pairs, 1)
        if name:
            out.setdefault(group, {})[name] = value
        else:
            out[group] = value
    return out
