"""The UNet: shapes at any size, gradients everywhere, the lowres preset's stage 1 end to end."""

from __future__ import annotations

import pytest
import torch

from models import MODELS, PRESETS
from models.segmentation import build_segmentation
from models.unet import UNet


@pytest.mark.parametrize("size", [(64, 128), (128, 256), (36, 50)])
def test_forward_backward_shapes(size):
    torch.manual_seed(0)
    cfg = PRESETS["lowres"].model_copy(update={"num_classes": 19, "unet_width": 4})
    net = MODELS["unet"](cfg)
    x = torch.randn(2, 3, *size)
    feats = net.backbone(x)
    assert feats["out"].shape[1] == net.backbone.channels == 64
    assert feats["low"].shape[1] == net.backbone.low_channels == 16
    assert feats["out"].shape[-2:] == tuple(-(-s // 16) for s in size)  # ceil: pooling keeps edges
    logits = net(x)["seg_logits"]
    assert logits.shape == (2, 19, *size)
    logits.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_lowres_preset_builds_a_unet_everywhere():
    cfg = PRESETS["lowres"]
    assert isinstance(build_segmentation(cfg), UNet)
    depth = MODELS["depth"](cfg)
    assert type(depth.backbone.body).__name__ == "UNetEncoder"  # stage 2 can share stage 1's
    assert cfg.input_size == (64, 128)


def test_decoder_alone_refuses_a_bottleneck():
    net = MODELS["unet"](PRESETS["lowres"].model_copy(update={"unet_width": 4}))
    with pytest.raises(Exception, match="skip features"):
        net.head(torch.zeros(1, 64, 4, 8))
