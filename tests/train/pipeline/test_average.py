"""The running averages of the frame model's logits or frames (the learning benchmark's
references)."""

from __future__ import annotations

import pytest
import torch

from train.pipeline.average import RunningAverage, level_of

T, K, H, W = 5, 3, 8, 16
FX = 8.0


class Fixed(torch.nn.Module):
    """A frame model that returns given logits, depth and motion whatever it sees."""

    def __init__(self, logits: torch.Tensor, depth=None, rel_pose=None) -> None:
        super().__init__()
        self.logits = logits
        self.depth = torch.ones(1, T, 1, H, W) if depth is None else depth
        self.rel_pose = torch.eye(4).expand(1, T, 4, 4) if rel_pose is None else rel_pose

    def forward(self, window: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"seg_logits": self.logits, "depth": self.depth, "rel_pose": self.rel_pose}


def geometry(shift_px: float, depth_m: float = 10.0):
    """Intrinsics, a flat depth and poses of a camera that moves sideways by ``shift_px`` pixels a
    frame (a point of frame t lies ``shift_px`` to the right in frame t-1)."""
    K_ = torch.tensor([[[FX, 0, W / 2], [0, FX, H / 2], [0, 0, 1.0]]])
    depth = torch.full((1, T, 1, H, W), depth_m)
    pose = torch.eye(4).repeat(1, T, 1, 1)
    pose[0, 1:, 0, 3] = shift_px * depth_m / FX  # rel_pose maps frame t's points into t-1's
    return K_, depth, pose


def sliding_scene(shift: int) -> torch.Tensor:
    """Logits (1, T, K, H, W) of one scene seen by a camera that moves ``shift`` pixels a frame:
    frame t shows at u what frame 0 shows at u + shift * t."""
    pattern = torch.randn(K, H, W + shift * T)
    return torch.stack([pattern[..., shift * t : shift * t + W] for t in range(T)])[None]


def window() -> torch.Tensor:
    return torch.zeros(1, T, 3, H, W)


@pytest.mark.parametrize("alignment", ["none", "estimated", "ground_truth"])
def test_rate_zero_is_the_frame_model(alignment):
    logits = torch.randn(1, T, K, H, W)
    out = RunningAverage(Fixed(logits), 0.0, alignment)(window(), *geometry(0.0))
    torch.testing.assert_close(out["seg_logits"], logits)


@pytest.mark.parametrize("alignment", ["none", "ground_truth"])
def test_a_still_camera_gives_the_running_average(alignment):
    logits, rate = torch.randn(1, T, K, H, W), 0.75
    out = RunningAverage(Fixed(logits), rate, alignment)(window(), *geometry(0.0))
    expected = logits[:, 0]
    for t in range(1, T):
        expected = (1 - rate) * logits[:, t] + rate * expected
    torch.testing.assert_close(out["seg_logits"][:, -1], expected)


def test_the_unaligned_average_does_not_follow_the_camera():
    logits, rate = sliding_scene(2), 0.75
    out = RunningAverage(Fixed(logits), rate, "none")(window(), *geometry(2.0))
    expected = logits[:, 0]
    for t in range(1, T):
        expected = (1 - rate) * logits[:, t] + rate * expected
    torch.testing.assert_close(out["seg_logits"][:, -1], expected)


def test_a_moving_camera_is_followed_by_the_true_geometry():
    """Averaged by the true motion every frame of a sliding scene stays sharp (where its past
    stayed in view); averaged at fixed pixels it would blur."""
    shift = 2
    logits = sliding_scene(shift)
    inside = slice(0, W - shift * (T - 1))
    out = RunningAverage(Fixed(logits), 0.8, "ground_truth")(window(), *geometry(shift))
    torch.testing.assert_close(
        out["seg_logits"][0, -1, ..., inside], logits[0, -1, ..., inside], atol=1e-4, rtol=0
    )
    still = RunningAverage(Fixed(logits), 0.8, "ground_truth")(window(), *geometry(0.0))
    assert (still["seg_logits"][0, -1, ..., inside] - logits[0, -1, ..., inside]).abs().max() > 0.1


def test_the_estimated_alignment_reads_the_frame_models_depth_and_motion_not_the_truth():
    shift = 2
    logits = sliding_scene(shift)
    K_, depth, pose = geometry(shift)
    inside = slice(0, W - shift * (T - 1))
    right = RunningAverage(Fixed(logits, depth, pose), 0.8, "estimated")
    # the truth handed in says the camera stood still; the frame model's estimate is right
    out = right(window(), *geometry(0.0))
    torch.testing.assert_close(
        out["seg_logits"][0, -1, ..., inside], logits[0, -1, ..., inside], atol=1e-4, rtol=0
    )
    # a frame model that estimates no motion blurs, whatever the truth says
    wrong = RunningAverage(Fixed(logits, depth), 0.8, "estimated")(window(), K_, depth, pose)
    assert (wrong["seg_logits"][0, -1, ..., inside] - logits[0, -1, ..., inside]).abs().max() > 0.1


def test_the_depth_and_motion_are_the_frame_models():
    logits = torch.randn(1, T, K, H, W)
    frame = Fixed(logits)
    out = RunningAverage(frame, 0.5, "ground_truth")(window(), *geometry(1.0))
    torch.testing.assert_close(out["depth"], frame.depth)
    torch.testing.assert_close(out["rel_pose"], frame.rel_pose)


class Echo(torch.nn.Module):
    """A frame model whose logits are the frames it reads (K = 3), depth and motion fixed."""

    def __init__(self, depth=None, rel_pose=None) -> None:
        super().__init__()
        self.fixed = Fixed(None, depth, rel_pose)
        self.seen: list[torch.Tensor] = []

    def forward(self, window: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen.append(window)
        return {**self.fixed(window), "seg_logits": window * 2.0, "depth": window[:, :, :1] + 5}


def test_the_image_level_averages_the_frames_the_frame_model_reads():
    """``level="image"``: the frame model runs a second time, on the averaged frames (its depth is
    theirs); its motion stays the one it estimated on the frames as they are."""
    scene, rate = sliding_scene(2), 0.75
    frame = Echo(rel_pose=torch.eye(4).expand(1, T, 4, 4) * 3)
    out = RunningAverage(frame, rate, "none", level="image")(scene, *geometry(2.0))
    expected = scene[:, 0]
    for t in range(1, T):
        expected = (1 - rate) * scene[:, t] + rate * expected
    assert len(frame.seen) == 2 and frame.seen[0] is scene
    torch.testing.assert_close(frame.seen[1][:, -1], expected)
    torch.testing.assert_close(out["seg_logits"][:, -1], 2 * expected)
    torch.testing.assert_close(out["depth"][:, -1], expected[:, :1] + 5)
    torch.testing.assert_close(out["rel_pose"], frame.fixed.rel_pose)
    # followed by the true geometry, the averaged frames stay sharp where the past stayed in view
    inside = slice(0, W - 2 * (T - 1))
    aligned = RunningAverage(Echo(), 0.8, "ground_truth", level="image")(scene, *geometry(2.0))
    torch.testing.assert_close(
        aligned["seg_logits"][0, -1, ..., inside], 2 * scene[0, -1, ..., inside], atol=1e-4, rtol=0
    )


def test_the_chained_level_averages_the_frames_then_the_logits_of_what_the_model_saw():
    """``level="image+scores"``: the logits of the averaged frames are averaged in turn."""
    scene, rate = sliding_scene(2), 0.5
    frame = Echo()
    out = RunningAverage(frame, rate, "none", level="image+scores")(scene, *geometry(2.0))
    frames = [scene[:, 0]]
    for t in range(1, T):
        frames.append((1 - rate) * scene[:, t] + rate * frames[-1])
    logits = [2 * frames[0]]
    for t in range(1, T):
        logits.append((1 - rate) * 2 * frames[t] + rate * logits[-1])
    torch.testing.assert_close(frame.seen[1], torch.stack(frames, 1))
    torch.testing.assert_close(out["seg_logits"], torch.stack(logits, 1))
    torch.testing.assert_close(out["depth"][:, -1], frames[-1][:, :1] + 5)  # of the frames seen


@pytest.mark.parametrize(
    ("rate", "alignment", "level", "message"),
    [
        (-0.1, "estimated", "scores", "rate must lie in"),
        (1.0, "estimated", "scores", "rate must lie in"),
        (0.5, "truth", "scores", "alignment must be one of"),
        (0.5, "none", "features", "level must be one of"),
    ],
)
def test_a_bad_rate_alignment_or_level_is_refused(rate, alignment, level, message):
    with pytest.raises(ValueError, match=message):
        RunningAverage(Fixed(torch.zeros(1, T, K, H, W)), rate, alignment, level)


def test_each_memory_is_compared_with_an_average_at_its_own_level():
    assert level_of("image") == "image"
    assert level_of("image+scores") == "image+scores"
    assert {level_of(f) for f in ("scores", "bottleneck", "off")} == {"scores"}
