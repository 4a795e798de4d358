"""ImageNet normalisation of RGB tensors: what every dataset item holds and every model expects.

The one place for the mean and std. Written on the tensor's own methods (no torch import), so
the ground floor stays installable without torch.
"""

from __future__ import annotations

from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(rgb: Any) -> Any:
    """(..., 3, H, W) torch tensor of RGB in [0, 1] -> ImageNet-normalised.

    Same shape and dtype, contiguous and new (``rgb`` is left alone).

    One allocation, then in-place arithmetic on contiguous memory: on a (6, 3, 256, 512) window
    from a channels-last array this is about 20x faster than ``(rgb - mean) / std`` (whose two
    fresh buffers and strided reads dominated the data loader's time).
    """
    mean = rgb.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = rgb.new_tensor(IMAGENET_STD).view(3, 1, 1)
    out = rgb.contiguous()
    if out.data_ptr() == rgb.data_ptr():  # already contiguous: copy, never change the caller's
        out = out.clone()
    return out.sub_(mean).div_(std)


def denormalize(x: Any) -> Any:
    """Inverse of :func:`normalize`: (..., 3, H, W) normalised -> RGB in [0, 1] (unclamped, new)."""
    mean = x.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return x.mul(std).add_(mean)


def to_uint8(rgb: Any) -> Any:
    """(3, H, W) normalised torch tensor -> (H, W, 3) uint8 numpy picture (RGB clamped)."""
    return (denormalize(rgb.float().cpu()).clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(
        "uint8"
    )
