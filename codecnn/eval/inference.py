"""Filtering whole pictures with a CTU network, CTU by CTU, as a codec's in-loop filter would.

The plane is cut exactly as the datasets are (:func:`codecnn.data.ctu.tile_plane`: CTUs with a context
border, edge-replicated at the picture edges), the CTUs go through the network ``batch`` at a time
(memory bounded by the batch, not the picture: 4K frames filter in the same memory as 720p ones), and
the output is rounded and clipped to the bit depth as a codec stores it. The result does not depend on
``batch``: filtering in tiles equals filtering all CTUs in one piece.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from codecnn.data.ctu import tile_plane
from codecnn.yuv import sample_peak


@torch.no_grad()
def filter_plane(
    model: nn.Module,
    plane: np.ndarray,
    bit_depth: int,
    qp: int | None = None,
    ctu: int = 128,
    batch: int = 2,
    device: str | torch.device = "cpu",
    channels_last: bool = True,
    amp: bool = False,
) -> np.ndarray:
    """Restore a luma plane (H x W, uint8/uint16) with ``model``; returns the same shape and dtype.

    ``amp`` runs CUDA bf16 autocast (off by default: reported gains are measured in fp32). Small batches
    are fastest on CPUs (the activations stay in cache); raise ``batch`` on a GPU.
    """
    device = torch.device(device)
    if channels_last:  # a channels_last copy: the caller's model is left as it was
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    peak = float(sample_peak(bit_depth))
    fill = qp if qp is not None else 0

    def run(tiles: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(tiles.astype(np.float32) / peak)[:, None].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        qps = torch.full((len(tiles),), fill, device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            y = model(x, qps)
        return torch.round(y.float().clamp(0, 1) * peak).to(torch.int32).cpu().numpy()[:, 0]

    try:
        return tile_plane(plane, ctu, getattr(model, "context", 0), run, batch)
    finally:
        model.train(was_training)
