"""Decoding of CARLA 0.9.16 sensor buffers (``image.raw_data`` is BGRA, 8 bits per channel)."""

from __future__ import annotations

import numpy as np

from clipcore.schema import decode_depth as depth_from_code


def bgra(image: object) -> np.ndarray:
    """(H, W, 4) uint8 view of an image's BGRA buffer."""
    return np.frombuffer(image.raw_data, dtype=np.uint8).reshape(image.height, image.width, 4)


def decode_rgb(image: object) -> np.ndarray:
    """RGB camera -> (H, W, 3) uint8 in RGB order."""
    return np.ascontiguousarray(bgra(image)[..., 2::-1])


def decode_semantic(image: object) -> np.ndarray:
    """Semantic camera -> (H, W) uint8 tag ids (the red channel)."""
    return np.ascontiguousarray(bgra(image)[..., 2])


def decode_depth(image: object) -> np.ndarray:
    """Depth camera -> (H, W) float32 planar depth in metres.

    1000 * (R + G*256 + B*256^2) / (256^3 - 1) (the shards store that 24-bit code, so this is
    lossless).
    """
    px = bgra(image).astype(np.uint32)
    return depth_from_code(px[..., 2] | (px[..., 1] << 8) | (px[..., 0] << 16))


def transform_to_array(transform: object) -> np.ndarray:
    """A ``carla.Transform`` -> (6,) float64 ``x, y, z, pitch, yaw, roll`` (metres, degrees)."""
    loc, rot = transform.location, transform.rotation
    return np.array([loc.x, loc.y, loc.z, rot.pitch, rot.yaw, rot.roll], dtype=np.float64)
