"""What ``capture import rosbag`` and ``capture import cityscapes`` accept.

Every option a field, checked like ``capture record``'s (a town name that is no path, finite numbers
in range, an image size a camera can have), so a bad value is one line before anything is read or
written.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from carla_capture.config import MAX_FRAMES, town_name
from clipcore.settings import FrameSize, TextPath

_IMPORT = ConfigDict(extra="forbid", allow_inf_nan=False)


def _out_folder(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a folder (it is created if missing)")
    return out


class RosbagImport(BaseModel):
    """``capture import rosbag``: which topics of a bag become which modality, and how."""

    model_config = _IMPORT
    out: TextPath = Field(description="Dataset folder; the shard goes to <out>/<town>/.")
    town: str = Field(
        description="Town folder to write, e.g. Town01 (picks the split): a town file's name in "
        "town_configs/ or --town-dir."
    )
    town_dir: TextPath | None = Field(
        None, description="Folder of town files; default: the packaged one."
    )
    rgb: str = Field(description="sensor_msgs/Image topic of the colour camera.")
    semantic: str = Field(
        description="sensor_msgs/Image topic of the segmentation camera (CARLA palette colours "
        "or mono8 tags)."
    )
    depth: str | None = Field(
        None, description="sensor_msgs/Image 32FC1 depth topic in metres (optional)."
    )
    camera_info: str | None = Field(
        None, description="sensor_msgs/CameraInfo topic for the intrinsics (optional)."
    )
    frames: int = Field(20, ge=1, le=MAX_FRAMES, description="Frames per clip.")
    tolerance_ms: float = Field(
        10.0,
        ge=0,
        le=1000,
        description="Largest header-stamp difference of a matched rgb/semantic pair, milliseconds.",
    )

    @field_validator("town")
    @classmethod
    def _town(cls, value: str) -> str:
        return town_name(value)

    @field_validator("out")
    @classmethod
    def _out(cls, value: Path) -> Path:
        return _out_folder(value)

    @model_validator(mode="after")
    def _distinct_topics(self) -> RosbagImport:
        roles: dict[str, str] = {}
        for role in ("rgb", "semantic", "depth", "camera_info"):
            topic = getattr(self, role)
            if topic is None:
                continue
            if topic in roles:
                raise ValueError(
                    f"--{roles[topic].replace('_', '-')} and --{role.replace('_', '-')} both "
                    f"name {topic!r}; pass each camera's own topic"
                )
            roles[topic] = role
        return self


class CityscapesImport(BaseModel):
    """``capture import cityscapes``: clip length and image size of the imported clips."""

    model_config = _IMPORT
    out: TextPath = Field(description="Dataset folder; one town folder per city.")
    frames: int = Field(
        30,
        ge=1,
        le=MAX_FRAMES,
        description="Frames per clip cut from leftImg8bit_sequence (a snippet has 30).",
    )
    size: FrameSize | None = Field(
        None,
        description="Resize images (area) and labels (nearest) to H x W pixels [default: as "
        "recorded].",
    )
    sequence: bool = Field(
        True,
        description="Read leftImg8bit_sequence (False: annotated frames only, as one-frame clips).",
    )

    @field_validator("out")
    @classmethod
    def _out(cls, value: Path) -> Path:
        return _out_folder(value)
