"""SegmentationModel: DeepLabv3 (torchvision) or a light head on a small backbone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from models.common import Backbone, build_backbone
from models.config import ModelConfig
from models.unet import build_unet


def light_head(in_channels: int, num_classes: int, width: int = 64) -> nn.Sequential:
    """3x3 conv + BN + ReLU, then 1x1 conv to class logits."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, num_classes, 1),
    )


class SegmentationModel(nn.Module):
    """Single-frame segmentation.

    Input (B, 3, H, W) ImageNet-normalised; output ``{"seg_logits": (B, K, H, W)}``.
    """

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) normalised frames -> ``{"seg_logits": (B, K, H, W)}``."""
        logits = self.head(self.backbone(x)["out"])
        return {
            "seg_logits": F.interpolate(
                logits, size=x.shape[-2:], mode="bilinear", align_corners=False
            )
        }


def _deeplabv3_resnet50(cfg: ModelConfig) -> nn.Module:
    """Torchvision's DeepLabv3-ResNet50 of ``cfg.num_classes`` outputs and the requested weights."""
    seg = torchvision.models.segmentation
    if cfg.pretrained == "coco":
        model = seg.deeplabv3_resnet50(
            weights=seg.DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1, aux_loss=False
        )
        model.classifier[4] = nn.Conv2d(256, cfg.num_classes, 1)
        return model
    backbone_weights = (
        torchvision.models.ResNet50_Weights.IMAGENET1K_V1 if cfg.pretrained == "imagenet" else None
    )
    return seg.deeplabv3_resnet50(
        weights=None, weights_backbone=backbone_weights, num_classes=cfg.num_classes, aux_loss=False
    )


def build_segmentation(cfg: ModelConfig) -> SegmentationModel:
    """Stage-1 model for ``cfg``.

    DeepLabv3-ResNet50 (``paper``, ``small``), a light model (``tiny``), or the UNet when
    ``cfg.seg_model`` is ``unet`` (``lowres``).
    """
    if cfg.seg_model == "unet":
        return build_unet(cfg)
    if cfg.backbone == "resnet50" and cfg.seg_head == "deeplab":
        deeplab = _deeplabv3_resnet50(cfg)
        body = deeplab.backbone
        body.return_layers = {"layer1": "low", "layer4": "out"}
        return SegmentationModel(Backbone(body, 2048, 256, 8), deeplab.classifier)
    backbone = build_backbone(cfg)
    head = (
        DeepLabHead(backbone.channels, cfg.num_classes)
        if cfg.seg_head == "deeplab"
        else light_head(backbone.channels, cfg.num_classes)
    )
    return SegmentationModel(backbone, head)
