"""EgoMotionFilter: camera motion between consecutive frames from their embeddings.

The 6 outputs are the motion from frame t-1 to frame t in frame t-1's camera coordinates
(the dataset's ``rel_pose``): a translation in metres and an axis-angle rotation in
radians, mapped to a 4x4 transform by the exponential map.
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import pose_from_vector
from models.config import ModelConfig


class MotionEstimator(nn.Module):
    """Motion features of two frames' embeddings.

    [emb_{t-1}, emb_t] (B, 2C, h, w) -> three stride-2 3x3 convs -> average pool -> Linear + BN1d.
    """

    def __init__(self, in_channels: int, channels: tuple[int, int, int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in channels:
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            cin = cout
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(cin, cin), nn.BatchNorm1d(cin))
        self.out_features = cin

    def forward(self, prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        """Embeddings of frames t-1 and t (B, C, h, w) each -> motion features (B, F)."""
        x = self.convs(torch.cat([prev, cur], 1)).mean(dim=(-2, -1))
        return self.fc(x)


class CameraHead(nn.Module):
    """Two linear layers to 6 values (translation, axis-angle); the last starts at zero."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 6)
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, hidden) -> (B, 6): translation (metres), then axis-angle (radians)."""
        return self.net(h)


class EgoMotionFilter(nn.Module):
    """MotionEstimator + GRU cell + CameraHead, stepped once per frame pair."""

    def __init__(self, embed_channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.estimator = MotionEstimator(2 * embed_channels, cfg.motion_channels)
        self.gru = nn.GRUCell(self.estimator.out_features, cfg.motion_hidden)
        self.head = CameraHead(cfg.motion_hidden)
        self.hidden_size = cfg.motion_hidden

    def init_state(
        self,
        batch: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Zero GRU state (B, hidden)."""
        return torch.zeros(batch, self.hidden_size, device=device, dtype=dtype)

    def step(
        self, prev: torch.Tensor, cur: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One step: embeddings of frames t-1 and t (B, C, h, w) -> motion, new state.

        The motion is ``{"motion": (B, 6), "rel_pose": (B, 4, 4)}``.
        """
        hidden = self.gru(self.estimator(prev, cur), hidden)
        motion = self.head(hidden)
        return {"motion": motion, "rel_pose": pose_from_vector(motion)}, hidden

    def forward(self, embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, T, C, h, w) -> motion (B, T-1, 6) and rel_pose (B, T-1, 4, 4) for frames 1..T-1."""
        b, t = embeddings.shape[:2]
        feats = self.estimator(
            embeddings[:, :-1].flatten(0, 1), embeddings[:, 1:].flatten(0, 1)
        ).view(b, t - 1, -1)
        hidden = self.init_state(b, embeddings.device, embeddings.dtype)
        states = []
        for k in range(t - 1):
            hidden = self.gru(feats[:, k], hidden)
            states.append(hidden)
        motion = self.head(torch.stack(states, 1))
        return {"motion": motion, "rel_pose": pose_from_vector(motion)}


def build_ego_motion(cfg: ModelConfig, embed_channels: int | None = None) -> EgoMotionFilter:
    """Stage-3 model; ``embed_channels`` defaults to the backbone's output width."""
    channels = embed_channels or (2048 if cfg.backbone == "resnet50" else 576)
    return EgoMotionFilter(channels, cfg)
