"""The models: paper sizes, shapes for every preset, streaming == window, identity at init."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from models import MODELS, PRESETS
from models.common import BN_MOMENTUM, pose_from_vector, pose_to_vector, so3_exp, so3_log
from models.config import ModelConfig
from models.summary import count_parameters
from train.cli import main as train_main

PAPER_MILLIONS = {
    "segmentation": 39.6,
    "depth": 30.7,
    "geometry_filter": 273.4,
    "ego_motion": 40.5,
    "pipeline": 313.9,
}


@pytest.mark.parametrize("name", sorted(PAPER_MILLIONS))
def test_paper_parameter_counts_match_the_reference(name):
    with torch.device("meta"):
        model = MODELS[name](PRESETS["paper"])
    assert count_parameters(model) / 1e6 == pytest.approx(PAPER_MILLIONS[name], rel=0.005)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_registry_builds_every_family_from_its_config(name):
    """The forecaster and the sim2real twin VAE are families of the registry like the rest."""
    cfg = {"sim2real": "tiny", "unet": PRESETS["lowres"]}.get(name, PRESETS["tiny"])
    with torch.device("meta"):
        model = MODELS[name](cfg)
    assert count_parameters(model) > 0
    assert {"forecaster", "sim2real", "unet", "pipeline"} <= set(MODELS)


def _intrinsics(batch: int, height: int, width: int) -> torch.Tensor:
    """A 90-degree pinhole camera for frames of ``height`` x ``width`` (docs/conventions.md)."""
    K = torch.tensor([[width / 2, 0, width / 2], [0, width / 2, height / 2], [0, 0, 1]])
    return K.expand(batch, 3, 3)


def _small_input(cfg: ModelConfig) -> ModelConfig:
    return cfg.model_copy(update={"input_size": (64, 128)})


@pytest.mark.parametrize("preset", ["tiny", "small", "lowres"])
@pytest.mark.parametrize("name", ["segmentation", "depth"])
def test_single_frame_shapes(preset, name):
    torch.manual_seed(0)
    model = MODELS[name](PRESETS[preset]).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 128))
    if name == "segmentation":
        assert out["seg_logits"].shape == (2, 22, 64, 128)
    else:
        assert out["depth"].shape == (2, 1, 64, 128) and out["depth"].min() >= 0


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_pipeline_window_shapes(preset):
    model = MODELS["pipeline"](PRESETS[preset]).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 3, 64, 128), _intrinsics(2, 64, 128))
    assert out["seg_logits"].shape == (2, 3, 22, 64, 128)
    assert out["depth"].shape == (2, 3, 1, 64, 128)
    assert out["rel_pose"].shape == (2, 3, 4, 4) and out["cam_to_world"].shape == (2, 3, 4, 4)
    torch.testing.assert_close(out["rel_pose"][:, 0], torch.eye(4).expand(2, 4, 4))


def test_paper_pipeline_shapes_on_meta():
    with torch.device("meta"):
        model = MODELS["pipeline"](PRESETS["paper"]).eval()
        out = model(torch.empty(1, 2, 3, 256, 512), torch.empty(1, 3, 3))
        state = model.init_state(1, 256, 512)
    assert out["seg_logits"].shape == (1, 2, 22, 256, 512)
    assert state.memory.shape == (1, 2048, 32, 64)  # ConvGRU at the bottleneck, 32x64 at 256x512


def _train_briefly(model: torch.nn.Module, *geometry: torch.Tensor) -> None:
    """A few optimiser steps so that no parameter is still at its identity initialisation."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(2):
        truth = (g[:, :3] for g in geometry)
        out = model(torch.randn(2, 3, 3, 64, 128), _intrinsics(2, 64, 128), *truth)
        loss = sum(v.float().pow(2).mean() for v in out.values())
        opt.zero_grad()
        loss.backward()
        opt.step()


def _geometry(batch: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth (B, T, 1, 64, 128) metres and a forward-moving, turning rel_pose (B, T, 4, 4)."""
    depth = torch.rand(batch, frames, 1, 64, 128) * 30 + 2
    motion = torch.tensor([0.1, 0.0, 1.0, 0.0, 0.05, 0.0]).expand(batch, frames, 6)
    rel = pose_from_vector(motion).clone()
    rel[:, 0] = torch.eye(4)
    return depth, rel


FUSIONS = ["bottleneck", "scores", "image", "image+scores", "off"]
MEMORIES = ["bottleneck", "scores", "image", "image+scores"]


def _flat(memory: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """A memory's state as one vector (the chain's is a pair of tensors)."""
    parts = memory if isinstance(memory, tuple) else (memory,)
    return torch.cat([m.flatten() for m in parts])


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("alignment", ["none", "estimated", "ground_truth"])
def test_step_over_frames_equals_forward_over_window(alignment, fusion):
    torch.manual_seed(0)
    cfg = PRESETS["tiny"].model_copy(
        update={"memory_alignment": alignment, "memory_fusion": fusion}
    )
    model = MODELS["pipeline"](cfg)
    depth, rel = _geometry(2, 4)
    K = _intrinsics(2, 64, 128)
    _train_briefly(model, depth, rel)
    model.eval()
    window = torch.randn(2, 4, 3, 64, 128)
    with torch.no_grad():
        full = model(window, K, depth, rel)
        state = model.init_state(2, 64, 128)
        for t in range(4):
            out, state = model.step(window[:, t], state, K, depth[:, t], rel[:, t])
            torch.testing.assert_close(
                out["seg_logits"], full["seg_logits"][:, t], rtol=1e-4, atol=1e-4
            )
            torch.testing.assert_close(out["depth"], full["depth"][:, t], rtol=1e-4, atol=1e-4)
            if t:
                torch.testing.assert_close(
                    out["rel_pose"], full["rel_pose"][:, t], rtol=1e-4, atol=1e-5
                )
                torch.testing.assert_close(
                    out["cam_to_world"], full["cam_to_world"][:, t], rtol=1e-4, atol=1e-5
                )
            else:
                assert "rel_pose" not in out


def _open(memory: torch.nn.Module) -> None:
    """Open a memory's zero-initialised way out, as after sequence training."""
    if memory.fusion == "image+scores":
        _open(memory.image), _open(memory.scores)
    elif memory.fusion == "bottleneck":
        torch.nn.init.normal_(memory.up.weight, std=0.5)
    else:
        torch.nn.init.constant_(memory.strength, 1.0)
        torch.nn.init.constant_(memory.gate[-1].bias, 5.0)  # the gates open


@pytest.mark.parametrize("fusion", MEMORIES)
def test_alignment_changes_what_the_memory_reads(fusion):
    torch.manual_seed(0)
    outs = {}
    depth, rel = _geometry(1, 3)
    window = torch.randn(1, 3, 3, 64, 128)
    weights = None
    for alignment in ("none", "ground_truth"):
        cfg = PRESETS["tiny"].model_copy(
            update={"memory_alignment": alignment, "memory_fusion": fusion}
        )
        model = MODELS["pipeline"](cfg)
        if weights is None:  # heads whose outputs vary over the image, then the memory opened
            _train_briefly(model, depth, rel)
            _open(model.geometry.memory)
            weights = model.state_dict()
        model.load_state_dict(weights)  # the same weights, aligned two ways
        K = _intrinsics(1, 64, 128)
        with torch.no_grad():
            out = model.eval()(window, K, depth, rel)
            state = model.init_state(1, 64, 128)
            for t in range(3):
                _, state = model.step(window[:, t], state, K, depth[:, t], rel[:, t])
        outs[alignment] = out["seg_logits"], _flat(state.memory)
    # nothing to align on the first frame
    torch.testing.assert_close(outs["none"][0][:, 0], outs["ground_truth"][0][:, 0])
    assert (outs["none"][1] - outs["ground_truth"][1]).abs().max() > 1e-3
    if fusion != "image":  # (the briefly trained network barely reads its fused input frames)
        assert (outs["none"][0][:, 2] - outs["ground_truth"][0][:, 2]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="intrinsics"):
        MODELS["pipeline"](PRESETS["tiny"])(window)


@pytest.mark.parametrize("fusion", ["bottleneck", "scores", "image"])
def test_memory_carries_history_once_open(fusion):
    torch.manual_seed(0)
    cfg = PRESETS["tiny"].model_copy(update={"memory_fusion": fusion})
    memory = MODELS["geometry_filter"](cfg).memory
    _open(memory)  # as after sequence training
    channels = {"bottleneck": 576, "scores": cfg.num_classes + 7, "image": 3}[fusion]
    f0, f1, f2 = torch.randn(3, 1, channels, 4, 8)
    stride = memory.stride
    with torch.no_grad():
        _, h = memory(f0, memory.init_state(1, 4 * stride, 8 * stride))
        after_0, _ = memory(f1, h)
        _, h = memory(f2, memory.init_state(1, 4 * stride, 8 * stride))
        after_2, _ = memory(f1, h)
    assert (after_0 - after_2).abs().max() > 1e-2


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("preset", ["tiny", "small", "lowres"])
def test_geometry_filter_is_identity_around_memory_at_init(preset, fusion):
    """Both heads: the stage-4 model starts as stage 1's segmentation and stage 2's depth."""
    torch.manual_seed(0)
    cfg = PRESETS[preset].model_copy(update={"memory_fusion": fusion})
    seg, depth = MODELS["segmentation"](cfg), MODELS["depth"](cfg)
    _train_briefly_single(seg, depth)
    seg.eval(), depth.eval()
    # stage 2 trains on stage 1's backbone
    depth.backbone.load_state_dict(seg.backbone.state_dict())
    geometry = MODELS["geometry_filter"](cfg, segmentation=seg, depth=depth).eval()
    pipeline = MODELS["pipeline"](cfg, geometry).eval()
    window = torch.randn(1, 3, 3, 64, 96)
    with torch.no_grad():
        full = pipeline(window, _intrinsics(1, 64, 96))
        state = pipeline.init_state(1, 64, 96)
        for t in range(3):
            out, state = pipeline.step(window[:, t], state, _intrinsics(1, 64, 96))
            for got in (out, {k: v[:, t] for k, v in full.items()}):
                torch.testing.assert_close(got["seg_logits"], seg(window[:, t])["seg_logits"])
                torch.testing.assert_close(got["depth"], depth(window[:, t])["depth"])
        # the memory runs, it just does not change the outputs yet
        assert _flat(state.memory).abs().sum() > 0 or fusion == "off"


def _train_briefly_single(*models: torch.nn.Module) -> None:
    """One optimiser step each, so that no head is still at its initialisation (e.g. uniform
    depth)."""
    for model in models:
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        out = model(torch.randn(2, 3, 64, 96))
        sum(v.float().pow(2).mean() for v in out.values()).backward()
        opt.step()


def test_paper_memory_gate_starts_closed():
    with torch.device("meta"):
        geometry = MODELS["geometry_filter"](PRESETS["paper"])
    assert geometry.memory.gate.shape == (1, 2048, 1, 1)
    assert (
        isinstance(geometry.memory.cell.gates, torch.nn.Conv2d)
        and geometry.memory.cell.gates.bias is None
    )


@pytest.mark.parametrize(
    "omega,expected",
    [
        ((0.0, 0.0, math.pi / 2), [[0, -1, 0], [1, 0, 0], [0, 0, 1]]),
        ((math.pi / 2, 0.0, 0.0), [[1, 0, 0], [0, 0, -1], [0, 1, 0]]),
        ((0.0, math.pi, 0.0), [[-1, 0, 0], [0, 1, 0], [0, 0, -1]]),
        ((0.0, 0.0, 0.0), [[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
    ],
)
def test_axis_angle_to_matrix_hand_worked(omega, expected):
    rot = so3_exp(torch.tensor(omega, dtype=torch.float64))
    torch.testing.assert_close(rot, torch.tensor(expected, dtype=torch.float64), atol=1e-12, rtol=0)


def test_axis_angle_round_trip_and_small_angles():
    torch.manual_seed(0)
    omega = torch.randn(100, 3, dtype=torch.float64)
    omega = omega / omega.norm(dim=-1, keepdim=True) * torch.rand(100, 1, dtype=torch.float64) * 3.0
    torch.testing.assert_close(so3_log(so3_exp(omega)), omega, atol=1e-7, rtol=1e-7)
    tiny = torch.tensor([[1e-9, -2e-9, 3e-9]], dtype=torch.float64, requires_grad=True)
    rot = so3_exp(tiny)
    rot.sum().backward()
    assert torch.isfinite(tiny.grad).all()
    vec = torch.tensor([0.5, -1.0, 2.0, 0.1, 0.2, -0.3], dtype=torch.float64)
    pose = pose_from_vector(vec)
    torch.testing.assert_close(pose_to_vector(pose), vec)
    torch.testing.assert_close(pose[:3, :3] @ pose[:3, :3].T, torch.eye(3, dtype=torch.float64))


def test_tiny_forward_and_backward_reach_every_trainable_part():
    """One tiny window at 128x256 through the whole pipeline and back (its speed is measured by
    benchmarks, never by a test)."""
    torch.manual_seed(0)
    model = MODELS["pipeline"](PRESETS["tiny"])
    window, K = torch.randn(2, 3, 3, 128, 256), _intrinsics(2, 128, 256)
    out = model(window, K)
    sum(v.float().mean() for v in out.values()).backward()
    assert all(
        p.grad is not None
        for n, p in model.named_parameters()
        if "ego_motion" in n or "memory" in n
    )


def test_train_models_command():
    result = CliRunner().invoke(train_main, ["models", "--preset", "paper", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["model"]: r for r in json.loads(result.stdout)["models"]}
    assert rows["Full pipeline"]["parameters"] / 1e6 == pytest.approx(313.9, rel=0.005)
    assert (
        rows["GeometryFilter"]["gflops_per_frame"]
        > rows["SegmentationModel"]["gflops_per_frame"]
        > 0
    )
    text = CliRunner().invoke(train_main, ["models", "--preset", "tiny"]).stdout
    assert "preset tiny, input 128x256" in text and "EgoMotionFilter" in text


def test_backbone_batchnorm_statistics_follow_a_cpu_sized_run():
    """torchvision's MobileNetV3 keeps BatchNorm statistics with momentum 0.01 (ImageNet's 600k
    steps): after a few hundred steps two thirds of the initial statistics were left and the tiny
    models were near-useless in eval mode. Every backbone BatchNorm uses momentum 0.1."""
    for preset in ("tiny", "paper"):
        backbone = MODELS["segmentation"](PRESETS[preset]).backbone
        momenta = {
            layer.momentum
            for layer in backbone.modules()
            if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm)
        }
        assert momenta == {BN_MOMENTUM}, (preset, momenta)


def test_image_memory_averages_out_noise_that_differs_per_frame():
    """Open at half strength on a still scene, the fused frame is the running average: sensor
    noise drawn per frame shrinks (to about 1/3 of its variance), the scene stays."""
    torch.manual_seed(0)
    memory = MODELS["geometry_filter"](
        PRESETS["tiny"].model_copy(update={"memory_fusion": "image"})
    ).memory
    torch.nn.init.constant_(memory.strength, 1.0)
    torch.nn.init.zeros_(memory.gate[-1].bias)  # gates at sigmoid(0) = 1/2 everywhere
    scene = torch.rand(1, 3, 32, 64)
    h = memory.init_state(1, 32, 64)
    with torch.no_grad():
        for t in range(12):
            frame = scene + 0.3 * torch.randn_like(scene)
            fused, h = memory(frame, h, torch.full_like(scene[:, :1], float(t > 0)))
    assert (fused - scene).pow(2).mean() < 0.5 * (frame - scene).pow(2).mean()
    torch.testing.assert_close(fused.mean(), scene.mean(), atol=0.05, rtol=0)
