"""Residual dense network (RDN) for in-loop luma restoration of HEVC reconstructions.

After Zhang et al., "Residual Dense Network for Image Super-Resolution", CVPR 2018, adapted for a
codec (lab notes in the project's references):

* the input is a reconstructed luma CTU with a context border (132x132 for a 128x128 CTU and a
  2-pixel context); the shallow feature extraction uses **unpadded** convolutions, two 3x3 (the
  default: ``head="3x3"``) or one 5x5 (``head="5x5"``; the notes found it much worse), so the body
  works on exactly the CTU;
* every residual dense block (RDB) keeps its local residual;
* global feature fusion (1x1 over all RDB outputs, then 3x3) and the **global residual** from the first
  shallow features, before the last convolution (without it the notes saw no gain);
* the output is a residual added to the centre of the input; the last convolution is zero-initialised
  so an untrained network is exactly the identity;
* no BatchNorm.

Tensor conventions: ``x`` is N x C x (S+4) x (S+4), channel 0 the reconstructed luma in [0, 1] (divided
by the bit depth's peak), channel 1 (``qp_map=True``) the QP plane QP/51; the output is N x 1 x S x S in
the same [0, 1] units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from codecnn.errors import CodecnnError
from codecnn.hevc import QP_SCALE
from codecnn.models.registry import register_model

HEADS = ("3x3", "5x5")


@dataclass(frozen=True)
class RDNConfig:
    """Hyperparameters of :class:`RDN`; the defaults are the lab notes' larger configuration (+0.20 dB)."""

    num_blocks: int = 4
    num_layers: int = 6
    growth: int = 24
    num_features: int = 32
    qp_map: bool = False
    separable: bool = False
    head: str = "3x3"

    def __post_init__(self):
        for name in ("num_blocks", "num_layers", "growth", "num_features"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                flag = {
                    "num_blocks": "--blocks",
                    "num_layers": "--layers",
                    "growth": "--growth",
                    "num_features": "--features",
                }[name]
                raise CodecnnError(f"{flag} must be a positive integer (got {v})")
        if self.head not in HEADS:
            raise CodecnnError(f"--head must be one of {', '.join(HEADS)} (got {self.head!r})")

    @property
    def in_channels(self) -> int:
        return 2 if self.qp_map else 1

    @property
    def context(self) -> int:
        """Pixels of context the unpadded head consumes on each side."""
        return 2


def conv3x3(cin: int, cout: int, separable: bool = False) -> nn.Module:
    """A padded 3x3 convolution, or its separable variant (depthwise 3x3 then pointwise 1x1)."""
    if separable:
        return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin), nn.Conv2d(cin, cout, 1))
    return nn.Conv2d(cin, cout, 3, padding=1)


class RDB(nn.Module):
    """Residual dense block: ``num_layers`` densely connected conv3x3+ReLU layers of ``growth`` channels,
    a 1x1 local feature fusion back to ``num_features`` and the local residual."""

    def __init__(self, num_features: int, growth: int, num_layers: int, separable: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(conv3x3(num_features + i * growth, growth, separable), nn.ReLU(inplace=True))
            for i in range(num_layers)
        )
        self.fusion = nn.Conv2d(num_features + num_layers * growth, num_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1)))
        return x + self.fusion(torch.cat(feats, 1))


@register_model("rdn", RDNConfig)
class RDN(nn.Module):
    """Residual dense network over a CTU with context; see the module docstring."""

    def __init__(
        self,
        num_blocks: int = 4,
        num_layers: int = 6,
        growth: int = 24,
        num_features: int = 32,
        qp_map: bool = False,
        separable: bool = False,
        head: str = "3x3",
    ):
        super().__init__()
        self.config = RDNConfig(num_blocks, num_layers, growth, num_features, qp_map, separable, head)
        f, cin = num_features, self.config.in_channels
        if head == "3x3":  # 132 -> 130 -> 128; the global residual is the 130x130 features' centre
            self.sfe1 = nn.Conv2d(cin, f, 3)
            self.sfe2 = nn.Conv2d(f, f, 3)
            self.head_crop = 1
        else:  # one unpadded 5x5: 132 -> 128, then a padded 3x3
            self.sfe1 = nn.Conv2d(cin, f, 5)
            self.sfe2 = nn.Conv2d(f, f, 3, padding=1)
            self.head_crop = 0
        self.blocks = nn.ModuleList(RDB(f, growth, num_layers, separable) for _ in range(num_blocks))
        self.gff = nn.Sequential(nn.Conv2d(num_blocks * f, f, 1), conv3x3(f, f, separable))
        self.last = nn.Conv2d(f, 1, 3, padding=1)
        nn.init.zeros_(self.last.weight)
        nn.init.zeros_(self.last.bias)

    @property
    def context(self) -> int:
        return self.config.context

    def forward(self, x: torch.Tensor, qp: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: N x 1 x (S+4) x (S+4) luma in [0, 1]; ``qp``: N QPs (needed with ``qp_map``)."""
        c = self.context
        centre = x[:, :1, c:-c, c:-c]
        if self.config.qp_map:
            if qp is None:
                raise ValueError("this RDN was built with qp_map=True: pass the QPs")
            plane = (qp.to(x.dtype) / QP_SCALE).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])
            x = torch.cat([x[:, :1], plane], 1)
        f1 = self.sfe1(x)
        h = self.sfe2(f1)
        outs = []
        for block in self.blocks:
            h = block(h)
            outs.append(h)
        k = self.head_crop
        g = self.gff(torch.cat(outs, 1)) + (f1[:, :, k:-k, k:-k] if k else f1)
        return centre + self.last(g)
