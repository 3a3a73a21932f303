"""Cutting a luma picture into CTUs with a context border (edge-replicated at picture edges)."""

from __future__ import annotations

import numpy as np


def ctu_positions(height: int, width: int, ctu: int) -> list[tuple[int, int]]:
    """Top-left (y, x) of every CTU in raster order; the last row/column may stick out of the picture."""
    return [(y, x) for y in range(0, height, ctu) for x in range(0, width, ctu)]


def pad_for_ctus(plane: np.ndarray, ctu: int, context: int) -> np.ndarray:
    """Pad by edge replication: ``context`` on top/left, up to a whole CTU plus ``context`` on bottom/right."""
    h, w = plane.shape
    return np.pad(plane, ((context, -h % ctu + context), (context, -w % ctu + context)), mode="edge")


def cut_ctus(recon: np.ndarray, orig: np.ndarray, ctu: int = 128, context: int = 2):
    """Cut one picture pair into CTU samples.

    Args:
        recon: reconstructed luma plane (H x W), the network input.
        orig: original luma plane (H x W), the target.

    Returns:
        ``inputs`` (n, ctu+2c, ctu+2c), ``targets`` (n, ctu, ctu), ``pos`` (n, 2) as (y, x) and
        ``valid`` (n, 2) as (rows, cols) inside the picture; native dtypes kept.
    """
    if recon.shape != orig.shape:
        raise ValueError(f"recon {recon.shape} and orig {orig.shape} differ in size")
    h, w = orig.shape
    pos = ctu_positions(h, w, ctu)
    pr = pad_for_ctus(recon, ctu, context)
    po = pad_for_ctus(orig, ctu, 0)
    side = ctu + 2 * context
    inputs = np.empty((len(pos), side, side), recon.dtype)
    targets = np.empty((len(pos), ctu, ctu), orig.dtype)
    for i, (y, x) in enumerate(pos):
        inputs[i] = pr[y : y + side, x : x + side]
        targets[i] = po[y : y + ctu, x : x + ctu]
    p = np.asarray(pos, np.int32).reshape(-1, 2)
    valid = np.stack([np.minimum(ctu, h - p[:, 0]), np.minimum(ctu, w - p[:, 1])], 1).astype(np.int16)
    return inputs, targets, p, valid
