"""Filtering whole pictures with a CTU network, CTU by CTU, as a codec's in-loop filter would.

The plane is cut exactly as the datasets are (:func:`codecnn.data.ctu.cut_ctus`: CTUs with a context
border, edge-replicated at the picture edges), the CTUs go through the network ``batch`` at a time
(memory bounded by the batch, not the picture: 4K frames filter in the same memory as 720p ones), and
the output is rounded and clipped to the bit depth as a codec stores it. The result does not depend on
``batch``: filtering in tiles equals filtering all CTUs in one piece.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from codecnn.data.ctu import ctu_positions, pad_for_ctus


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
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    device = torch.device(device)
    c = getattr(model, "context", 0)
    peak = float((1 << bit_depth) - 1)
    h, w = plane.shape
    padded = pad_for_ctus(plane, ctu, c)
    out = np.empty((h + -h % ctu, w + -w % ctu), plane.dtype)
    positions = ctu_positions(h, w, ctu)
    side = ctu + 2 * c
    for start in range(0, len(positions), batch):
        pos = positions[start : start + batch]
        tiles = np.stack([padded[y : y + side, x : x + side] for y, x in pos]).astype(np.float32) / peak
        x = torch.from_numpy(tiles)[:, None].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        qps = torch.full((len(pos),), qp if qp is not None else 0, device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            y = model(x, qps)
        y = torch.round(y.float().clamp(0, 1) * peak).to(torch.int32).cpu().numpy()[:, 0]
        for (py, px), tile in zip(pos, y, strict=False):
            out[py : py + ctu, px : px + ctu] = tile
    return out[:h, :w]
