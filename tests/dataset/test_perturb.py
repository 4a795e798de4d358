"""Per-frame corruptions: independent across frames, a function of the window's key alone (so a
resumed run sees the same draws), and honest about where they hide the image."""

from __future__ import annotations

import torch

from clipcore.normalize import denormalize, normalize
from dataset.config import Perturbation
from dataset.perturb import corrupt


def _windows(batch: int = 2, frames: int = 6) -> torch.Tensor:
    """Normalised windows of a smooth, frame-constant image (B, T, 3, 48, 96)."""
    ramp = torch.linspace(0.2, 0.8, 96).expand(3, 48, 96)
    return normalize(ramp.expand(batch, frames, 3, 48, 96).contiguous())


def test_occluders_and_flicker_differ_from_frame_to_frame():
    p = Perturbation(noise_sigma=0.0)
    rgb = _windows(1)
    out, hidden = corrupt(rgb, p, [(0, 0, 7)])
    masks = hidden[0]
    for k in range(1, masks.shape[0]):
        assert not torch.equal(masks[k], masks[0]), "an occluder sits on the same pixels"
    seen = denormalize(out[0])
    visible = ~hidden[0]
    # the brightness factor of the visible pixels changes from frame to frame
    ratios = [
        float((seen[k][:, visible[k]] / denormalize(rgb[0, k])[:, visible[k]]).mean())
        for k in range(seen.shape[0])
    ]
    assert max(ratios) - min(ratios) > 0.05, ratios


def test_the_same_key_gives_the_same_corruption_and_another_key_another():
    p = Perturbation(moving_occluders=1, dropout_p=0.2)
    rgb = _windows()
    a, mask_a = corrupt(rgb, p, [(3, 1, 0), (3, 1, 1)])
    b, mask_b = corrupt(rgb, p, [(3, 1, 0), (3, 1, 1)])  # as after a resume
    assert torch.equal(a, b) and torch.equal(mask_a, mask_b)
    c, _ = corrupt(rgb, p, [(3, 2, 0), (3, 2, 1)])  # the next epoch
    assert not torch.equal(a, c)
    # one window's draw does not depend on its neighbours in the batch
    alone, _ = corrupt(rgb[1:], p, [(3, 1, 1)])
    assert torch.equal(alone[0], a[1])


def test_hidden_marks_exactly_the_painted_pixels():
    p = Perturbation(noise_sigma=0.0, flicker=0.0, occluders=2, moving_occluders=1)
    rgb = _windows(1)
    out, hidden = corrupt(rgb, p, [(5,)])
    changed = (denormalize(out) - denormalize(rgb)).abs().amax(2) > 1e-4
    # an occluder can match the image's colour by chance: every change is hidden, most hidden
    # pixels changed
    assert not (changed & ~hidden).any()
    assert (changed & hidden).sum() > 0.9 * hidden.sum() > 0


def test_moving_occluders_keep_their_size_and_move():
    p = Perturbation(noise_sigma=0.0, flicker=0.0, occluders=0, moving_occluders=1)
    _, hidden = corrupt(_windows(1, 8), p, [(11,)])
    sizes = hidden[0].sum((1, 2))
    assert (sizes == sizes[0]).all() and sizes[0] > 0
    assert not torch.equal(hidden[0, 0], hidden[0, -1])


def test_dropped_frames_are_black_and_wholly_hidden():
    p = Perturbation(dropout_p=1.0)
    out, hidden = corrupt(_windows(1), p, [(0,)])
    assert hidden.all()
    torch.testing.assert_close(denormalize(out), torch.zeros_like(out))


def test_windows_left_clean_are_untouched():
    rgb = _windows()
    out, hidden = corrupt(rgb, Perturbation(window_p=0.0, dropout_p=0.5), [(0,), (1,)])
    torch.testing.assert_close(out, rgb)
    assert not hidden.any()
