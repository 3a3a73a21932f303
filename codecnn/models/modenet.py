"""A CNN that ranks the 35 HEVC intra modes of a 4x4..32x32 luma block.

One network for all block sizes: convolutions over a (2N+1) x (2N+1) canvas, then spatial pyramid
pooling (He et al., "Spatial Pyramid Pooling in Deep Convolutional Networks", TPAMI 2015; as in the
SPP module of stereo-matching networks) to a fixed-size vector whatever N is, then fully connected
layers into which the block size and the QP are concatenated inside ``forward`` (side information as
an input, not baked in). No BatchNorm.

Input canvas, N x 3 x (2N+1) x (2N+1), samples divided by the bit depth's peak:
channel 0 the original block at [1:N+1, 1:N+1] (0 elsewhere); channel 1 the reference samples at their
positions (row 0: corner and 2N top samples; column 0: 2N left samples; 0 where unavailable);
channel 2 the availability of those reference samples (1/0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from codecnn.errors import CodecnnError
from codecnn.hevc import QP_SCALE
from codecnn.models.registry import register_model

NUM_MODES = 35


@dataclass(frozen=True)
class ModeNetConfig:
    channels: int = 32
    depth: int = 4
    hidden: int = 128
    spp_levels: tuple[int, ...] = (1, 2, 4)

    def __post_init__(self):
        if self.channels < 1 or self.depth < 1 or self.hidden < 1 or not self.spp_levels:
            raise CodecnnError("--channels, --depth and --hidden must be positive")
        object.__setattr__(self, "spp_levels", tuple(self.spp_levels))


def side_info(block_size: torch.Tensor, qp: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 2): log2(N)/5 and QP/51 (QP -1, open-loop labels, becomes -1/51)."""
    return torch.stack([torch.log2(block_size.to(dtype)) / 5.0, qp.to(dtype) / QP_SCALE], 1)


@register_model("modenet", ModeNetConfig)
class ModeNet(nn.Module):
    """Intra-mode classifier over 35 modes for blocks of any size 4..32 (see the module docstring)."""

    def __init__(self, channels: int = 32, depth: int = 4, hidden: int = 128, spp_levels=(1, 2, 4)):
        super().__init__()
        self.config = ModeNetConfig(channels, depth, hidden, tuple(spp_levels))
        layers = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        pooled = channels * sum(k * k for k in self.config.spp_levels)
        self.fc1 = nn.Linear(pooled + 2, hidden)
        self.fc2 = nn.Linear(hidden + 2, NUM_MODES)

    def forward(self, x: torch.Tensor, block_size: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        """Logits (B, 35) for canvases ``x`` (B, 3, 2N+1, 2N+1) of one block size."""
        f = self.features(x)
        spp = torch.cat([F.adaptive_max_pool2d(f, k).flatten(1) for k in self.config.spp_levels], 1)
        side = side_info(block_size, qp, x.dtype)
        h = F.relu(self.fc1(torch.cat([spp, side], 1)))
        return self.fc2(torch.cat([h, side], 1))
