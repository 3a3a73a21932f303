"""Intra-mode labels for every block of a frame: 35 predictions, their costs, the best mode and ranks.

Blocks of size N sit on the N x N grid (those wholly inside the picture). A block's neighbours are
available as in an HM encoder that split every CTU down to N: a neighbouring sample must lie inside
the picture and be coded before the block, i.e. lie in an earlier CTU (raster order) or earlier in
the z-scan of the same CTU (the rule behind HM's ``isAboveRightAvailable``/``isBelowLeftAvailable``).
References come from the reconstruction (closed loop, what an encoder predicts from) or from the
original (open loop). Costs: :func:`codecnn.intra.transform_costs` (DCT-SATD by default).

Work is chunked over blocks so memory stays bounded (a 1080p frame at N = 4 has 129,600 blocks). The
residuals of all 35 modes come from a compiled kernel (:mod:`codecnn._intra_kernel`, the same formulas as
:func:`codecnn.intra.predict_all`), the DCTs from large float64 GEMMs. Costs are rounded to 1e-6 before
ranking, so modes with equal predictions tie exactly and ties go to the lower mode number.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from codecnn.intra import (NUM_MODES, _angular_tables, check_block, dct_matrix, hadamard_satd_blocks, smooth, substitute,
                           transform_costs, uses_filtered)

HM_CTU = 64
CHUNK_SAMPLES = 1 << 21  # predicted samples per chunk (x 35 modes x 8 bytes ~ a few hundred MB at most)


def block_positions(height: int, width: int, n: int) -> np.ndarray:
    """(B, 2) top-left (y, x) of the N x N blocks wholly inside the picture, raster order."""
    ys, xs = np.mgrid[0 : height - n + 1 : n, 0 : width - n + 1 : n]
    return np.stack([ys.ravel(), xs.ravel()], 1)


def _morton(uy: np.ndarray, ux: np.ndarray) -> np.ndarray:
    z = np.zeros(np.broadcast(uy, ux).shape, np.int64)
    for b in range(8):
        z |= ((ux >> b) & 1) << (2 * b)
        z |= ((uy >> b) & 1) << (2 * b + 1)
    return z


def _coding_order(y: np.ndarray, x: np.ndarray, width: int, ctu: int) -> tuple[np.ndarray, np.ndarray]:
    """(CTU raster index, z-scan index of the 4x4 unit) of luma positions."""
    ctus_w = -(-width // ctu)
    return (y // ctu) * ctus_w + x // ctu, _morton((y % ctu) >> 2, (x % ctu) >> 2)


def reference_coords(pos: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, 4N+1) row and column of every reference sample, in the linear order of :mod:`codecnn.intra`."""
    k = np.arange(2 * n)
    y0, x0 = pos[:, 0:1], pos[:, 1:2]
    ys = np.concatenate([y0 + k[::-1], y0 - 1, np.broadcast_to(y0 - 1, (len(pos), 2 * n))], 1)
    xs = np.concatenate([np.broadcast_to(x0 - 1, (len(pos), 2 * n)), x0 - 1, x0 + k], 1)
    return ys, xs


def availability(pos: np.ndarray, n: int, height: int, width: int, ctu: int = HM_CTU) -> np.ndarray:
    """(B, 4N+1) availability of each reference sample (picture bounds and coding order)."""
    ys, xs = reference_coords(pos, n)
    inside = (ys >= 0) & (xs >= 0) & (ys < height) & (xs < width)
    c_ref, z_ref = _coding_order(np.clip(ys, 0, None), np.clip(xs, 0, None), width, ctu)
    c_blk, z_blk = _coding_order(pos[:, 0:1], pos[:, 1:2], width, ctu)
    return inside & ((c_ref < c_blk) | ((c_ref == c_blk) & (z_ref < z_blk)))


def neighbours(ref: np.ndarray, pos: np.ndarray, n: int, ctu: int = HM_CTU):
    """Raw ``top``, ``left`` (B, 2N), ``corner`` (B,) from the reference picture, and the availability."""
    h, w = ref.shape
    ys, xs = reference_coords(pos, n)
    avail = availability(pos, n, h, w, ctu)
    lin = ref[np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)].astype(np.int32)
    lin = np.where(avail, lin, -1)
    return lin[:, 2 * n + 1 :], lin[:, : 2 * n][:, ::-1], lin[:, 2 * n], avail


@lru_cache(maxsize=None)
def _kron_dct(n: int) -> np.ndarray:
    c = dct_matrix(n)
    return np.ascontiguousarray(np.kron(c, c).T)  # vec(C D C^T) = (C kron C) vec(D), row-major vec


def dct_satd_batch(diff: np.ndarray) -> np.ndarray:
    """Sum of |orthonormal 2-D DCT| of residuals (M, N, N), float64, as large GEMMs: one with the
    Kronecker matrix for N <= 8, else row and column passes with one transpose between them."""
    from codecnn._intra_kernel import abs_row_sums

    m, n, _ = diff.shape
    if n <= 8:
        y = diff.reshape(m, n * n) @ _kron_dct(n)
    else:
        c = dct_matrix(n)
        x = (diff.reshape(m * n, n) @ c.T).reshape(m, n, n)  # D C^T
        y = np.ascontiguousarray(x.transpose(0, 2, 1)).reshape(m * n, n) @ c.T  # (C D C^T)^T
        y = y.reshape(m, n * n)
    out = np.empty(m)
    abs_row_sums(y, out)
    return out


@dataclass
class BlockLabels:
    """Labels of all N x N blocks of one frame."""

    n: int
    pos: np.ndarray  # (B, 2) int32
    costs: np.ndarray  # (B, 35) float32, the label cost
    best: np.ndarray  # (B,) int8, argmin of costs (lowest mode on ties)
    rank: np.ndarray  # (B, 35) int8, rank of every mode (0 = best)
    hadamard: np.ndarray  # (B, 35) int32, HM's Hadamard SATD (the rough-mode-decision baseline)
    top: np.ndarray  # (B, 2N) raw neighbours, -1 unavailable
    left: np.ndarray
    corner: np.ndarray


def label_blocks(orig: np.ndarray, ref: np.ndarray, n: int, bit_depth: int = 8, cost: str = "dct",
                 ctu: int = HM_CTU, with_hadamard: bool = True) -> BlockLabels:
    """Label every N x N block of ``orig`` with references taken from ``ref`` (same size)."""
    check_block(n, bit_depth)
    if orig.shape != ref.shape:
        raise ValueError(f"orig {orig.shape} and reference {ref.shape} differ")
    h, w = orig.shape
    pos = block_positions(h, w, n)
    top, left, corner, avail = neighbours(ref, pos, n, ctu)
    from codecnn._intra_kernel import residuals

    b = len(pos)
    lin = np.concatenate([left[:, ::-1], corner[:, None], top], 1).astype(np.int64)
    sub = substitute(lin, avail, bit_depth).astype(np.int32)
    filt = smooth(sub, n, bit_depth) if n > 4 else sub
    i0, i1, f = _angular_tables(n)
    use_f = np.array([uses_filtered(m, n) for m in range(NUM_MODES)])
    plane = np.ascontiguousarray(orig, np.int32)
    pos64 = pos.astype(np.int64)
    costs = np.empty((b, NUM_MODES), np.float64)
    had = np.zeros((b, NUM_MODES), np.int32)
    step = max(1, CHUNK_SAMPLES // (n * n * NUM_MODES))
    buf = np.empty((min(step, b), NUM_MODES, n, n), np.float64)
    for s in range(0, b, step):
        k = min(step, b - s)
        diff = buf[:k]
        residuals(plane, pos64[s : s + k], sub[s : s + k], filt[s : s + k], i0, i1, f, use_f, n, (1 << bit_depth) - 1,
                  diff)
        flat = diff.reshape(k * NUM_MODES, n, n)
        costs[s : s + k] = (dct_satd_batch(flat) if cost == "dct" else transform_costs(flat, cost)).reshape(k, NUM_MODES)
        if with_hadamard:
            had[s : s + k] = hadamard_satd_blocks(flat.astype(np.int64)).reshape(k, NUM_MODES)
    costs = np.round(costs, 6)  # equal predictions tie exactly; ties go to the lower mode number
    best = np.argmin(costs, axis=1).astype(np.int8)
    rank = np.argsort(np.argsort(costs, axis=1, kind="stable"), axis=1, kind="stable").astype(np.int8)
    return BlockLabels(n, pos.astype(np.int32), costs.astype(np.float32), best, rank, had, top, left, corner)
