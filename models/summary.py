"""Parameter counts and FLOPs per frame of every model of a preset (``train models``).

FLOPs are counted by running one frame through each model on PyTorch's ``meta`` device
(shapes only, no arithmetic), so even the ``paper`` preset is summarised in seconds on a CPU.
One multiply-add counts as 2 FLOPs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from models.config import ModelConfig
from models.depth import build_depth
from models.ego_motion import build_ego_motion
from models.geometry_filter import build_geometry_filter
from models.pipeline import build_pipeline
from models.segmentation import build_segmentation


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def _flops(fn) -> int:  # noqa: ANN001 - a zero-argument callable
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def summarize(cfg: ModelConfig, preset: str | None = None) -> list[dict[str, Any]]:
    """One row per model: name, parameters, GFLOPs for one frame at ``cfg.input_size``."""
    h, w = cfg.input_size
    rows = []
    with torch.device("meta"), torch.no_grad():
        frame = torch.empty(1, 3, h, w)
        seg, depth = build_segmentation(cfg).eval(), build_depth(cfg).eval()
        geometry = build_geometry_filter(cfg).eval()
        ego = build_ego_motion(cfg, geometry.backbone.channels).eval()
        pipeline = build_pipeline(cfg, geometry, ego).eval()
        memory = geometry.init_state(1, h, w)
        embedding = geometry.backbone(frame)["out"]
        K = torch.empty(1, 3, 3)  # shapes only: the meta device computes nothing
        state = pipeline.step(frame, pipeline.init_state(1, h, w), K)[1]
        runs = {
            "SegmentationModel": (seg, lambda: seg(frame)),
            "DepthEstimationModel": (depth, lambda: depth(frame)),
            "GeometryFilter": (geometry, lambda: geometry.step(frame, memory)),
            "EgoMotionFilter": (ego, lambda: ego.step(embedding, embedding, ego.init_state(1))),
            "Full pipeline": (pipeline, lambda: pipeline.step(frame, state, K)),
        }
        for name, (model, run) in runs.items():
            rows.append(
                {
                    "model": name,
                    "parameters": count_parameters(model),
                    "gflops_per_frame": _flops(run) / 1e9,
                }
            )
        if preset is not None:  # the sim2real twin VAE of the same-named preset
            rows.append(_sim2real_row(preset))
    return rows


def _sim2real_row(preset: str) -> dict[str, Any]:
    """The sim2real twin VAE of the same-named preset (else ``tiny``), at its own input size."""
    from models.sim2real import SIM2REAL_PRESETS, build_sim2real

    s2r = SIM2REAL_PRESETS.get(preset, SIM2REAL_PRESETS["tiny"])
    model = build_sim2real(s2r).eval()
    image = torch.empty(1, 3, *s2r.input_size)
    return {
        "model": "Sim2Real twin VAE",
        "parameters": count_parameters(model),
        "gflops_per_frame": _flops(lambda: model(image, "real")) / 1e9,
        "input_size": list(s2r.input_size),
    }


def format_rows(name: str, cfg: ModelConfig, rows: list[dict[str, Any]]) -> str:
    """A text table of :func:`summarize`'s rows of preset ``name``."""
    h, w = cfg.input_size
    lines = [
        f"preset {name}, input {h}x{w}",
        f"{'model':<22} {'parameters':>12} {'GFLOPs/frame':>13}",
    ]
    lines += [
        f"{r['model']:<22} {r['parameters'] / 1e6:>11.2f}M {r['gflops_per_frame']:>13.2f}"
        for r in rows
    ]
    lines += [
        f"(Sim2Real twin VAE at its own input {r['input_size'][0]}x{r['input_size'][1]}: "
        "parameters of both encoders and all decoders; FLOPs of one encoder, both image, "
        "depth and seg decoders)"
        for r in rows
        if "input_size" in r
    ]
    lines.append(
        "(EgoMotionFilter excludes the backbone it reads; the full pipeline's FLOPs are for a "
        "frame after the first)"
    )
    return "\n".join(lines)
