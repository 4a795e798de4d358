"""Pieces every model shares: the backbones' builder and SO(3) maps.

ImageNet normalisation lives in :mod:`clipcore.normalize`; the ``Backbone`` type in
:mod:`models.backbone`.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter

from models.backbone import Backbone
from models.config import ModelConfig
from models.unet import unet_encoder

#: BatchNorm momentum of every backbone layer (PyTorch's default; see :func:`build_backbone`).
BN_MOMENTUM = 0.1


def build_backbone(cfg: ModelConfig, resnet: nn.Module | None = None) -> Backbone:
    """The encoder named by ``cfg.backbone``, or the UNet's when ``cfg.seg_model`` is unet.

    ``resnet`` is wrapped if given (e.g. DeepLab's own).
    """
    if cfg.seg_model == "unet":
        return unet_encoder(cfg)
    if cfg.backbone == "resnet50":
        if resnet is None:
            weights = (
                torchvision.models.ResNet50_Weights.IMAGENET1K_V1
                if cfg.pretrained != "none"
                else None
            )
            resnet = torchvision.models.resnet50(
                weights=weights, replace_stride_with_dilation=[False, True, True]
            )
        body = IntermediateLayerGetter(resnet, {"layer1": "low", "layer4": "out"})
        return Backbone(body, 2048, 256, 8)
    weights = (
        torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1
        if cfg.pretrained != "none"
        else None
    )
    features = torchvision.models.mobilenet_v3_small(weights=weights, dilated=True).features
    for layer in features.modules():
        if isinstance(layer, nn.BatchNorm2d):
            # torchvision's 0.01 suits ImageNet's 600k steps; after a few hundred steps it leaves
            # the running statistics far from the data, and eval mode unusable
            layer.momentum = BN_MOMENTUM
    return Backbone(IntermediateLayerGetter(features, {"1": "low", "12": "out"}), 576, 16, 16)


def _hat(v: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros_like(v[..., 0])
    return torch.stack(
        [
            torch.stack([zero, -v[..., 2], v[..., 1]], -1),
            torch.stack([v[..., 2], zero, -v[..., 0]], -1),
            torch.stack([-v[..., 1], v[..., 0], zero], -1),
        ],
        -2,
    )


def so3_exp(omega: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) radians -> rotation (..., 3, 3), Rodrigues' formula (exact near 0)."""
    theta2 = (omega * omega).sum(-1, keepdim=True).unsqueeze(-1)
    theta = theta2.clamp_min(1e-12).sqrt()
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-12))
    k = _hat(omega)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def so3_log(rot: torch.Tensor) -> torch.Tensor:
    """Rotation (..., 3, 3) -> axis-angle (..., 3), for angles below pi."""
    cos = ((rot.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1 + 1e-7, 1 - 1e-7)
    theta = torch.acos(cos)
    vee = torch.stack(
        [
            rot[..., 2, 1] - rot[..., 1, 2],
            rot[..., 0, 2] - rot[..., 2, 0],
            rot[..., 1, 0] - rot[..., 0, 1],
        ],
        -1,
    )
    scale = torch.where(theta < 1e-4, 0.5 + theta**2 / 12, theta / (2 * torch.sin(theta)))
    return vee * scale.unsqueeze(-1)


def pose_from_vector(vec: torch.Tensor) -> torch.Tensor:
    """(..., 6) = translation (m) then axis-angle (rad) -> (..., 4, 4) rigid transform."""
    out = torch.zeros(*vec.shape[:-1], 4, 4, dtype=vec.dtype, device=vec.device)
    out[..., :3, :3] = so3_exp(vec[..., 3:])
    out[..., :3, 3] = vec[..., :3]
    out[..., 3, 3] = 1
    return out


def pose_to_vector(pose: torch.Tensor) -> torch.Tensor:
    """(..., 4, 4) rigid transform -> (..., 6) translation then axis-angle."""
    return torch.cat([pose[..., :3, 3], so3_log(pose[..., :3, :3])], -1)
