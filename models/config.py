"""Model configuration: ``ModelConfig`` and its presets (paper, small, tiny, lowres)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clipcore.settings import FrameSize


class ModelConfig(BaseModel):
    """Sizes and variants of the four models.

    A preset fills every field (the preset's name is ``TrainConfig.preset``, the one place it is
    kept).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    backbone: Literal["resnet50", "mobilenet_v3_small"] = Field(
        "mobilenet_v3_small", description="Image encoder."
    )
    seg_model: Literal["segmentation", "unet"] = Field(
        "segmentation",
        description="Stage-1 architecture, a name in models.MODELS: 'segmentation' (backbone + "
        "seg_head) or 'unet' (whose encoder then replaces the backbone in every stage).",
    )
    unet_width: int = Field(
        16, ge=4, description="UNet channels at full resolution (x2 per level)."
    )
    num_classes: int = Field(22, ge=2, description="Segmentation classes (the label map's size).")
    input_size: FrameSize = Field(
        (128, 256), description="(H, W) the preset is sized for; FLOPs are reported at it."
    )
    seg_head: Literal["deeplab", "light"] = Field(
        "light", description="DeepLabv3 ASPP head, or a 2-conv head."
    )
    decoder: Literal["paper", "skip"] = Field(
        "skip", description="Depth decoder: the reference's, or a lighter one with a skip."
    )
    decoder_channels: int = Field(64, ge=8, description="Width of the depth decoder.")
    memory_channels: int | None = Field(
        64, description="ConvGRU width; None runs it on the full bottleneck (paper)."
    )
    memory_fusion: Literal["off", "bottleneck", "scores", "image", "image+scores"] = Field(
        "image+scores",
        description="Where the memory fuses (models/memory.py): a ConvGRU on the backbone's "
        "bottleneck (the reference's), the heads' score and depth maps at 1/score_stride of the "
        "frame (GRFP-like), a gated running average of the frames themselves before the "
        "backbone (image), both of the last two in a chain (image+scores: the network reads the "
        "fused frames, a score memory corrects its outputs), or off (no memory: the matched "
        "control of the ablation).",
    )
    score_stride: int = Field(
        4, ge=1, description="The scores memory's resolution, 1/this of the frame."
    )
    score_memory_channels: int = Field(
        32, ge=1, description="The scores memory: width of the conv net of its update gate."
    )
    image_memory_channels: int = Field(
        8,
        ge=1,
        description="The image memory: width of the conv net of its update gate (it runs at "
        "full resolution).",
    )
    memory_alignment: Literal["none", "estimated", "ground_truth"] = Field(
        "estimated",
        description="Warp the memory into each new frame by depth and pose: the model's own "
        "estimates, ground truth (an oracle for ablations), or none (fixed pixel positions).",
    )
    pose_refine_iterations: int = Field(
        10,
        ge=0,
        description="Gauss-Newton steps that refine the ego-motion's rotation photometrically "
        "(models/pose_refine.py) before the estimated alignment warps the memory; 0: the "
        "ego-motion filter's pose as it is.",
    )
    motion_channels: tuple[int, int, int] = Field(
        (128, 64, 64), description="MotionEstimator conv widths."
    )
    motion_hidden: int = Field(64, ge=4, description="Ego-motion GRU hidden size.")
    max_depth_m: float = Field(
        1000.0, gt=0, description="Predicted depth is clamped to this, metres."
    )
    depth_scale_m: float = Field(
        10.0, gt=0, description="Depth head output unit: 1.0 means this many metres."
    )
    pretrained: Literal["none", "imagenet", "coco"] = Field(
        "none",
        description="torchvision weights to load (needs network access once; never used by tests).",
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_old_preset_name(cls, data: Any) -> Any:
        """Runs saved before the preset name moved to TrainConfig carry ``model.preset``."""
        if isinstance(data, dict) and "preset" in data:
            data = {k: v for k, v in data.items() if k != "preset"}
        return data


PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(
        backbone="resnet50",
        input_size=(256, 512),
        seg_head="deeplab",
        decoder="paper",
        decoder_channels=384,
        memory_channels=None,
        motion_channels=(1024, 256, 128),
        motion_hidden=128,
        memory_fusion="bottleneck",  # the reference's architecture
    ),
    "small": ModelConfig(
        backbone="resnet50",
        input_size=(256, 512),
        seg_head="deeplab",
        decoder="skip",
        decoder_channels=128,
        memory_channels=256,
        motion_channels=(256, 128, 128),
        motion_hidden=128,
    ),
    "tiny": ModelConfig(),
    # A UNet at 64x128 (or 128x256 with --size 128,256): stage 1 in minutes on a CPU.
    "lowres": ModelConfig(
        seg_model="unet",
        unet_width=16,
        input_size=(64, 128),
        decoder="skip",
        decoder_channels=32,
        memory_channels=32,
        motion_channels=(64, 32, 32),
        motion_hidden=32,
    ),
}


def preset(name: str) -> ModelConfig:
    """The named preset; unknown names list the known ones."""
    from clipcore.errors import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


class Sim2RealModelConfig(BaseModel):
    """Sizes of the twin VAE and its task decoders."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    preset: str = Field("tiny", description="Name of the preset these values came from.")
    input_size: tuple[int, int] = Field(
        (64, 128), description="(H, W) images are resized to; multiples of 2**n."
    )
    channels: tuple[int, ...] = Field(
        (16, 32, 64), description="Width after each packing block (n blocks)."
    )
    latent_channels: int = Field(32, ge=1, description="Channels of the shared latent.")
    pack_depth: int = Field(
        4, ge=1, description="Output channels of the 3D convolution in (un)packing blocks."
    )
    num_classes: int = Field(12, ge=2, description="Segmentation classes (common12).")
    max_depth_m: float = Field(
        80.0, gt=0, description="Depth is predicted as log-depth up to this, metres."
    )


SIM2REAL_PRESETS: dict[str, Sim2RealModelConfig] = {
    # the paper's 256 x 256 images and PackNet-like widths
    "paper": Sim2RealModelConfig(
        preset="paper",
        input_size=(256, 256),
        channels=(64, 128, 256, 512),
        latent_channels=256,
        pack_depth=8,
    ),
    "small": Sim2RealModelConfig(
        preset="small",
        input_size=(128, 256),
        channels=(32, 64, 128),
        latent_channels=64,
        pack_depth=8,
    ),
    "tiny": Sim2RealModelConfig(preset="tiny"),
}
