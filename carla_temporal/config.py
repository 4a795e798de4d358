"""``train live``'s config: importable without torch, so ``train --help`` stays fast."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from carla_capture.config import CaptureConfig
from clipcore.dashboard import LOOPBACK, Sink
from clipcore.settings import TextPath
from train.config import Device

#: What ``train live`` drives unless told otherwise (a capture config's own defaults record
#: with CARLA): the embedded simulator, two clips of 100 frames.
LIVE_CAPTURE = {"backend": "synthetic", "town": "Town02", "clips": 2, "frames": 100}


class LiveConfig(BaseModel):
    """``train live``.

    The run, the simulator it drives (clips x frames, a capture config) and where the dashboard
    goes.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    run: TextPath = Field(description="Run folder trained through stage 4.")
    device: Device = Field(
        "auto", description="auto (cuda when a GPU is visible), cpu, cuda or cuda:N."
    )
    capture: CaptureConfig = Field(
        default_factory=lambda: CaptureConfig(**LIVE_CAPTURE),
        description="The simulator: backend, town, clips of frames (the model's memory and the "
        "trajectories restart with each clip).",
    )
    max_frames: int | None = Field(
        None, ge=1, description="Stop after N frames in all [default: clips x frames]."
    )
    spawn: bool = Field(False, description="Open the Rerun viewer (the default).")
    serve: bool = Field(
        False,
        description="Serve the Rerun web viewer and keep serving; the live data listens on "
        "--bind only.",
    )
    bind: str = Field(
        LOOPBACK,
        description="Address the served live data listens on: 127.0.0.1 is this machine only; "
        "another (0.0.0.0: every interface) exposes the live camera images to the network, "
        "without authentication.",
    )
    save: TextPath | None = Field(None, description="Write the dashboard to FILE.rrd.")
    web_port: int = Field(9090, ge=1, le=65535, description="Port of the web viewer (--serve).")

    @model_validator(mode="after")
    def _one_sink(self) -> LiveConfig:
        if self.spawn + self.serve + (self.save is not None) > 1:
            raise ValueError("choose one of --spawn, --serve and --save FILE.rrd")
        if self.bind != LOOPBACK and not self.serve:
            raise ValueError(f"--bind {self.bind} is where --serve listens: pass --serve too")
        return self

    def frames(self) -> int:
        """Frames to drive in all."""
        total = self.capture.clips * self.capture.frames
        return min(total, self.max_frames) if self.max_frames else total

    def sink(self) -> Sink:
        """Where the dashboard goes."""
        if self.save is not None:
            return Sink("save", self.save)
        if self.serve:
            return Sink("serve", web_port=self.web_port, bind=self.bind)
        return Sink("spawn")
