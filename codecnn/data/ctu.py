"""Cutting a luma picture into CTUs with a context border (edge-replicated at picture edges): the one
place this rule is written in Python. Datasets (:func:`cut_ctus`), PyTorch inference and the hm_bridge
twins (:func:`tile_plane`) all cut pictures here; ``hm_bridge/cpp/cnnw.h`` mirrors it in C++."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

CTU_SIZES = (16, 32, 64, 128, 256)  # what the datasets, inference and cnnw.h accept


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


def tile_plane(
    plane: np.ndarray, ctu: int, context: int, fn: Callable[[np.ndarray], np.ndarray], batch: int = 1
) -> np.ndarray:
    """Apply a CTU filter to a whole plane: ``fn(tiles)`` maps ``(B, ctu+2c, ctu+2c)`` tiles (the CTUs with
    their edge-replicated context, native samples) to ``(B, ctu, ctu)`` output samples; ``batch`` CTUs at
    a time, in raster order, so memory is bounded by the batch, not the picture. Returns the plane's shape
    and dtype (outputs outside the picture are dropped)."""
    h, w = plane.shape
    padded = pad_for_ctus(plane, ctu, context)
    positions = ctu_positions(h, w, ctu)
    side = ctu + 2 * context
    out = np.empty((h + -h % ctu, w + -w % ctu), plane.dtype)
    for start in range(0, len(positions), batch):
        pos = positions[start : start + batch]
        tiles = np.stack([padded[y : y + side, x : x + side] for y, x in pos])
        for (y, x), tile in zip(pos, fn(tiles), strict=True):
            out[y : y + ctu, x : x + ctu] = tile
    return out[:h, :w]
