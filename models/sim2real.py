"""Sim2real twin VAE with PackNet packing / unpacking layers (Raghavan et al.; Guizilini 2020).

Two encoders (sim ``S``, real ``R``) map an image to a Gaussian over one shared spatial latent
space; two decoders map a latent back to each domain's images; a depth decoder and a
segmentation decoder read the same latent, so whatever they learn on sim latents applies to
real latents. As in UNIT, the encoders' last block and the decoders' first block are shared.
Every change of resolution is a packing block (space-to-depth, a 3D convolution that learns to
expand the folded channels, a 2D convolution) or an unpacking block (the reverse), never a
strided convolution or a pooling layer.

Images are RGB in [0, 1], shape (B, 3, H, W) with H and W multiples of ``2 ** len(channels)``;
the latent is (B, latent_channels, H / 2**n, W / 2**n).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The config and presets live, torch-free, in models.config.
from models.config import SIM2REAL_PRESETS, Sim2RealModelConfig  # noqa: F401


def _norm_act(channels: int) -> list[nn.Module]:
    return [nn.GroupNorm(min(16, channels), channels), nn.ELU(inplace=True)]


class Packing(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, H/r, W/r): space-to-depth, 3D conv, 2D conv."""

    def __init__(self, c_in: int, c_out: int, r: int = 2, depth: int = 4) -> None:
        super().__init__()
        self.r = r
        self.conv3d = nn.Conv3d(1, depth, 3, padding=1)
        self.conv = nn.Sequential(
            nn.Conv2d(c_in * r * r * depth, c_out, 3, padding=1), *_norm_act(c_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H/r, W/r)."""
        x = F.pixel_unshuffle(x, self.r)
        b, _, h, w = x.shape
        x = self.conv3d(x.unsqueeze(1)).reshape(b, -1, h, w)
        return self.conv(x)


class Unpacking(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, rH, rW): 2D conv, 3D conv, depth-to-space."""

    def __init__(self, c_in: int, c_out: int, r: int = 2, depth: int = 4) -> None:
        super().__init__()
        self.r, self.depth = r, depth
        folded = c_out * r * r
        if folded % depth:
            raise ValueError(
                f"unpacking: {c_out} * {r * r} channels must be a multiple of depth {depth}"
            )
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, folded // depth, 3, padding=1), *_norm_act(folded // depth)
        )
        self.conv3d = nn.Conv3d(1, depth, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, rH, rW)."""
        x = self.conv(x)
        b, _, h, w = x.shape
        x = self.conv3d(x.unsqueeze(1)).reshape(b, -1, h, w)
        return F.pixel_shuffle(x, self.r)


class Encoder(nn.Module):
    """Image (B, 3, H, W) -> features (B, channels[-1], H/2**n, W/2**n) via packing blocks."""

    def __init__(self, cfg: Sim2RealModelConfig) -> None:
        super().__init__()
        widths = (cfg.channels[0], *cfg.channels)
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 5, padding=2), *_norm_act(widths[0]))
        self.blocks = nn.Sequential(
            *(
                Packing(widths[i], widths[i + 1], depth=cfg.pack_depth)
                for i in range(len(cfg.channels))
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] -> (B, channels[-1], H/2**n, W/2**n) features."""
        return self.blocks(self.stem(x * 2 - 1))


class Decoder(nn.Module):
    """Latent (B, Z, h, w) -> (B, out_channels, h*2**n, w*2**n) via unpacking blocks."""

    def __init__(
        self, cfg: Sim2RealModelConfig, out_channels: int, shared_first: nn.Module | None = None
    ) -> None:
        super().__init__()
        widths = tuple(reversed(cfg.channels))
        self.first = shared_first if shared_first is not None else _latent_in(cfg)
        self.blocks = nn.Sequential(
            *(
                Unpacking(widths[i], widths[min(i + 1, len(widths) - 1)], depth=cfg.pack_depth)
                for i in range(len(widths))
            )
        )
        self.head = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, Z, h, w) latent -> (B, out_channels, h*2**n, w*2**n)."""
        return self.head(self.blocks(self.first(z)))


def _latent_in(cfg: Sim2RealModelConfig) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(cfg.latent_channels, cfg.channels[-1], 3, padding=1), *_norm_act(cfg.channels[-1])
    )


class TwinVAE(nn.Module):
    """Sim / real encoders and decoders on one shared latent, plus depth and segmentation decoders.

    ``forward(x, domain)`` encodes ``x`` with that domain's encoder and returns ``mu``, ``logvar``,
    ``z`` (a sample in training, ``mu`` in eval), ``recon`` (same-domain reconstruction, [0, 1]),
    ``translated`` (decoded into the other domain), ``depth`` (B, 1, H, W) metres and
    ``seg_logits`` (B, K, H, W).
    """

    DOMAINS = ("sim", "real")

    def __init__(self, cfg: Sim2RealModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        if len(c) < 2:
            raise ValueError("channels needs at least two widths (own blocks, then the shared one)")
        shared_enc = nn.Sequential(
            Packing(c[-2], c[-1], depth=cfg.pack_depth),
            nn.Conv2d(c[-1], 2 * cfg.latent_channels, 3, padding=1),
        )
        shared_dec = _latent_in(cfg)
        # each domain's own blocks go channels[0] -> channels[-2]; the last packing block is shared
        enc_cfg = cfg.model_copy(update={"channels": c[:-1]})
        self.encoders = nn.ModuleDict(
            {d: _DomainEncoder(enc_cfg, shared_enc) for d in self.DOMAINS}
        )
        self.decoders = nn.ModuleDict({d: Decoder(cfg, 3, shared_dec) for d in self.DOMAINS})
        self.depth_decoder = Decoder(cfg, 1)
        self.seg_decoder = Decoder(cfg, cfg.num_classes)

    @staticmethod
    def other(domain: str) -> str:
        """The other domain's name."""
        return "real" if domain == "sim" else "sim"

    def encode(self, x: torch.Tensor, domain: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (B, Z, h, w)."""
        mu, logvar = self.encoders[domain](x).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def sample(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Reparameterised sample in training, the mean in eval."""
        return mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu

    def decode(self, z: torch.Tensor, domain: str) -> torch.Tensor:
        """Latent -> image of ``domain`` in [0, 1]."""
        return torch.sigmoid(self.decoders[domain](z))

    def depth(self, z: torch.Tensor) -> torch.Tensor:
        """Latent -> depth (B, 1, H, W) in metres, in (0, max_depth_m]."""
        return self.cfg.max_depth_m * torch.exp(-F.softplus(self.depth_decoder(z)))

    def log_depth(self, z: torch.Tensor) -> torch.Tensor:
        """Natural log of :meth:`depth` (what the depth loss compares)."""
        return torch.log(torch.tensor(self.cfg.max_depth_m)) - F.softplus(self.depth_decoder(z))

    def forward(self, x: torch.Tensor, domain: str = "real") -> dict[str, torch.Tensor]:
        """Encode ``x`` with ``domain``'s encoder; every output of the class docstring."""
        mu, logvar = self.encode(x, domain)
        z = self.sample(mu, logvar)
        return {
            "mu": mu,
            "logvar": logvar,
            "z": z,
            "recon": self.decode(z, domain),
            "translated": self.decode(z, self.other(domain)),
            "depth": self.depth(z),
            "seg_logits": self.seg_decoder(z),
        }


class _DomainEncoder(nn.Module):
    """A domain's own stem and packing blocks, then the shared block that outputs (mu, logvar)."""

    def __init__(self, cfg: Sim2RealModelConfig, shared: nn.Module) -> None:
        super().__init__()
        self.own = Encoder(cfg)
        self.shared = shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(self.own(x))


def build_sim2real(cfg: Sim2RealModelConfig | str = "tiny") -> TwinVAE:
    """The twin VAE for a config or preset name."""
    if isinstance(cfg, str):
        from clipcore.errors import ConfigError

        if cfg not in SIM2REAL_PRESETS:
            raise ConfigError(
                f"unknown sim2real preset {cfg!r}; choose one of: {', '.join(SIM2REAL_PRESETS)}"
            )
        cfg = SIM2REAL_PRESETS[cfg]
    return TwinVAE(cfg)
