"""The truth-aligned average of the frame model's logits (the learning benchmark's reference)."""

from __future__ import annotations

import pytest
import torch

from train.pipeline.oracle import TruthAverage

T, K, H, W = 5, 3, 8, 16
FX = 8.0


class Fixed(torch.nn.Module):
    """A frame model that returns given logits whatever it sees."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, window: torch.Tensor) -> dict[str, torch.Tensor]:
        b, t = window.shape[:2]
        return {
            "seg_logits": self.logits,
            "depth": torch.ones(b, t, 1, H, W),
            "rel_pose": torch.eye(4).expand(b, t, 4, 4),
        }


def geometry(shift_px: float, depth_m: float = 10.0):
    """Intrinsics, a flat depth and poses of a camera that moves sideways by ``shift_px`` pixels a
    frame (a point of frame t lies ``shift_px`` to the right in frame t-1)."""
    K_ = torch.tensor([[[FX, 0, W / 2], [0, FX, H / 2], [0, 0, 1.0]]])
    depth = torch.full((1, T, 1, H, W), depth_m)
    pose = torch.eye(4).repeat(1, T, 1, 1)
    pose[0, 1:, 0, 3] = shift_px * depth_m / FX  # rel_pose maps frame t's points into t-1's
    return K_, depth, pose


def test_rate_zero_is_the_frame_model():
    logits = torch.randn(1, T, K, H, W)
    out = TruthAverage(Fixed(logits), 0.0)(torch.zeros(1, T, 3, H, W), *geometry(0.0))
    torch.testing.assert_close(out["seg_logits"], logits)


def test_a_still_camera_gives_the_running_average():
    logits, rate = torch.randn(1, T, K, H, W), 0.75
    out = TruthAverage(Fixed(logits), rate)(torch.zeros(1, T, 3, H, W), *geometry(0.0))
    expected = logits[:, 0]
    for t in range(1, T):
        expected = (1 - rate) * logits[:, t] + rate * expected
    torch.testing.assert_close(out["seg_logits"][:, -1], expected)


def test_a_moving_camera_is_followed_by_the_true_geometry():
    """The same scene seen from a camera that moves 2 pixels a frame: frame t shows at u what
    frame 0 shows at u + 2t. Averaged by the true motion every frame stays sharp (inside the
    image); averaged at fixed pixels it would blur."""
    shift = 2
    pattern = torch.randn(K, H, W + shift * T)
    logits = torch.stack([pattern[..., shift * t : shift * t + W] for t in range(T)])[None]
    out = TruthAverage(Fixed(logits), 0.8)(torch.zeros(1, T, 3, H, W), *geometry(shift))
    # the last frame's pixels whose past stayed in view for every frame
    inside = slice(0, W - shift * (T - 1))
    torch.testing.assert_close(
        out["seg_logits"][0, -1, ..., inside], logits[0, -1, ..., inside], atol=1e-4, rtol=0
    )
    still = TruthAverage(Fixed(logits), 0.8)(torch.zeros(1, T, 3, H, W), *geometry(0.0))
    assert (still["seg_logits"][0, -1, ..., inside] - logits[0, -1, ..., inside]).abs().max() > 0.1


def test_the_depth_and_motion_are_the_frame_models():
    logits = torch.randn(1, T, K, H, W)
    frame = Fixed(logits)
    out = TruthAverage(frame, 0.5)(torch.zeros(1, T, 3, H, W), *geometry(1.0))
    reference = frame(torch.zeros(1, T, 3, H, W))
    torch.testing.assert_close(out["depth"], reference["depth"])
    torch.testing.assert_close(out["rel_pose"], reference["rel_pose"])


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_a_rate_outside_zero_to_one_is_refused(rate):
    with pytest.raises(ValueError, match="rate must lie in"):
        TruthAverage(Fixed(torch.zeros(1, T, K, H, W)), rate)
