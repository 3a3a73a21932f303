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

Options (all off by default, as the networks trained before them):

- ``normalise``: a mode is about structure, not brightness or contrast. Every HEVC intra predictor is an
  affine-preserving weighted average of the references, so the DCT-SATD best mode does not change (up to
  clipping and rounding) when the block and its references are shifted and scaled together. The canvas is
  brought to that invariant form inside ``forward``: the mean of the available references subtracted from the
  block and the references, both divided by their joint standard deviation (at least ``MIN_DEVIATION``, two
  8-bit sample steps); the log of that deviation is given to the fully connected layers as a third side input
  (flat blocks favour planar and DC).
- ``pool_to``: canvases wider than this (the 33x33 of 16x16 blocks, the 65x65 of 32x32) are area-averaged
  down to ``pool_to`` x ``pool_to`` before the convolutions, so a large block costs what a small one does.
- ``size_heads``: one output layer per block size (4, 8, 16, 32) instead of one shared; a batch then holds
  blocks of one size (as the trainer and the evaluation give it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from codecnn.errors import CodecnnError
from codecnn.hevc import QP_SCALE
from codecnn.models.registry import register_model
from codecnn.yuv.frame import sample_peak

NUM_MODES = 35


@dataclass(frozen=True)
class ModeNetConfig:
    channels: int = 32
    depth: int = 4
    hidden: int = 128
    spp_levels: tuple[int, ...] = (1, 2, 4)
    normalise: bool = False
    pool_to: int = 0
    size_heads: bool = False

    def __post_init__(self):
        if self.channels < 1 or self.depth < 1 or self.hidden < 1 or not self.spp_levels:
            raise CodecnnError("--channels, --depth and --hidden must be positive")
        if self.pool_to and self.pool_to < max(self.spp_levels):
            raise CodecnnError(f"--pool-to {self.pool_to}: use 0 (off) or at least {max(self.spp_levels)}")
        object.__setattr__(self, "spp_levels", tuple(self.spp_levels))


BLOCK_SIZES = (4, 8, 16, 32)
# The deviation side input is counted in 8-bit sample steps whatever the data's bit depth (canvases are in
# [0, 1]): a fixed unit of the network's input, not the peak of the samples.
DEVIATION_SCALE = float(sample_peak(8))
MIN_DEVIATION = 2.0 / DEVIATION_SCALE


def normalise_canvas(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The canvas shifted by its available references' mean and divided by the joint standard deviation of the
    block and those references (see the module docstring); returns (canvas, deviation (B,))."""
    n = (x.shape[-1] - 1) // 2
    block, ref, avail = x[:, 0], x[:, 1], x[:, 2]
    count = avail.sum((1, 2))
    mean = torch.where(count > 0, (ref * avail).sum((1, 2)) / count.clamp_min(1), torch.full_like(count, 0.5))
    mask = torch.zeros_like(block[:1])
    mask[:, 1 : n + 1, 1 : n + 1] = 1
    m = mean[:, None, None]
    db, dr = (block - m) * mask, (ref - m) * avail
    dev = (((db * db).sum((1, 2)) + (dr * dr).sum((1, 2))) / (n * n + count)).sqrt().clamp_min(MIN_DEVIATION)
    d = dev[:, None, None]
    return torch.stack([db / d, dr / d, avail], 1), dev


def side_info(block_size: torch.Tensor, qp: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 2): log2(N)/5 and QP/51 (QP -1, open-loop labels, becomes -1/51)."""
    return torch.stack([torch.log2(block_size.to(dtype)) / 5.0, qp.to(dtype) / QP_SCALE], 1)


@register_model("modenet", ModeNetConfig)
class ModeNet(nn.Module):
    """Intra-mode classifier over 35 modes for blocks of any size 4..32 (see the module docstring)."""

    def __init__(
        self,
        channels: int = 32,
        depth: int = 4,
        hidden: int = 128,
        spp_levels=(1, 2, 4),
        normalise: bool = False,
        pool_to: int = 0,
        size_heads: bool = False,
    ):
        super().__init__()
        self.config = ModeNetConfig(channels, depth, hidden, tuple(spp_levels), normalise, pool_to, size_heads)
        layers = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        pooled = channels * sum(k * k for k in self.config.spp_levels)
        side = 3 if normalise else 2
        self.fc1 = nn.Linear(pooled + side, hidden)
        if size_heads:
            self.heads = nn.ModuleList(nn.Linear(hidden + side, NUM_MODES) for _ in BLOCK_SIZES)
        else:
            self.fc2 = nn.Linear(hidden + side, NUM_MODES)

    def forward(self, x: torch.Tensor, block_size: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        """Logits (B, 35) for canvases ``x`` (B, 3, 2N+1, 2N+1) of one block size."""
        c = self.config
        side = side_info(block_size, qp, x.dtype)
        if c.normalise:
            x, dev = normalise_canvas(x)
            side = torch.cat([side, (torch.log2(dev * DEVIATION_SCALE) / 8.0)[:, None]], 1)
        if c.pool_to and x.shape[-1] > c.pool_to:
            x = F.adaptive_avg_pool2d(x, c.pool_to)
        f = self.features(x)
        spp = torch.cat([F.adaptive_max_pool2d(f, k).flatten(1) for k in c.spp_levels], 1)
        h = torch.cat([F.relu(self.fc1(torch.cat([spp, side], 1))), side], 1)
        if not c.size_heads:
            return self.fc2(h)
        sizes = block_size.unique()
        if len(sizes) != 1:
            raise CodecnnError("a ModeNet with size heads takes blocks of one size per batch")
        n = int(sizes[0])
        if n not in BLOCK_SIZES:
            raise CodecnnError(f"block size {n}: ModeNet's size heads cover {BLOCK_SIZES}")
        return self.heads[BLOCK_SIZES.index(n)](h)
