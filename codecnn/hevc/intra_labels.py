"""Intra-mode labels for every block of a frame: 35 predictions, their costs, the best mode and ranks.

Blocks of size N sit on the N x N grid (those wholly inside the picture). A block's neighbours are
available as in an HM encoder that split every CTU down to N: a neighbouring sample must lie inside
the picture and be coded before the block, i.e. lie in an earlier CTU (raster order) or earlier in
the z-scan of the same CTU (the rule behind HM's ``isAboveRightAvailable``/``isBelowLeftAvailable``).
References come from the reconstruction (closed loop, what an encoder predicts from) or from the
original (open loop). Costs: :func:`codecnn.hevc.intra.transform_costs` (DCT-SATD by default).

References (availability, substitution, smoothing), predictions, residuals and costs all come from one
compiled kernel, block by block in cache (:mod:`codecnn.hevc._intra_kernel`, the same formulas as
:mod:`codecnn.hevc.intra`), so memory holds only the per-block outputs.
Costs are rounded to 1e-6 before ranking, so modes with equal predictions tie exactly and ties go to
the lower mode number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codecnn.errors import CodecnnError
from codecnn.hevc import HM_CTU
from codecnn.hevc.intra import COSTS, NUM_MODES, check_block, hevc_transform_matrix, uses_filtered


def block_positions(height: int, width: int, n: int) -> np.ndarray:
    """(B, 2) top-left (y, x) of the N x N blocks wholly inside the picture, raster order."""
    ys, xs = np.mgrid[0 : height - n + 1 : n, 0 : width - n + 1 : n]
    return np.stack([ys.ravel(), xs.ravel()], 1)


@dataclass
class BlockLabels:
    """Labels of all N x N blocks of one frame."""

    n: int
    pos: np.ndarray  # (B, 2) int32
    costs: np.ndarray  # (B, 35) float32, the label cost
    best: np.ndarray  # (B,) int8, argmin of costs (lowest mode on ties)
    rank: np.ndarray  # (B, 35) int8, rank of every mode (0 = best)
    hadamard: np.ndarray  # (B, 35) int32, HM's Hadamard SATD (the rough-mode-decision baseline), or zeros
    ref: np.ndarray  # (B, 4N+1) int32 raw linear references (see codecnn.hevc.intra), -1 unavailable

    @property
    def top(self) -> np.ndarray:
        return self.ref[:, 2 * self.n + 1 :]

    @property
    def left(self) -> np.ndarray:
        return self.ref[:, : 2 * self.n][:, ::-1]

    @property
    def corner(self) -> np.ndarray:
        return self.ref[:, 2 * self.n]


def label_blocks(
    orig: np.ndarray,
    ref: np.ndarray,
    n: int,
    bit_depth: int = 8,
    cost: str = "dct",
    ctu: int = HM_CTU,
    with_hadamard: bool = True,
    threads: int | None = None,
) -> BlockLabels:
    """Label every N x N block of ``orig`` with references taken from ``ref`` (same size), on ``threads``
    threads (default: all cores)."""
    from codecnn.hevc import _intra_kernel as kern

    check_block(n, bit_depth)
    if orig.shape != ref.shape:
        raise ValueError(f"orig {orig.shape} and reference {ref.shape} differ")
    if cost not in COSTS:
        raise CodecnnError(f"unknown cost {cost!r}; use one of {', '.join(COSTS)}")
    pos = block_positions(*orig.shape, n)
    b = len(pos)
    raw = np.empty((b, 4 * n + 1), np.int32)
    costs = np.empty((b, NUM_MODES), np.float32)
    best = np.empty(b, np.int8)
    rank = np.empty((b, NUM_MODES), np.int8)
    had = np.zeros((b, NUM_MODES), np.int32)  # left zero without Hadamard (the kernel skips a 0-row array)
    kind = {"dct": kern.COST_DCT, "hevc": kern.COST_DENSE, "hadamard": kern.COST_HADAMARD}[cost]
    use_f = np.array([uses_filtered(m, n) for m in range(NUM_MODES)])
    kern.label_frame(
        np.ascontiguousarray(orig, np.int32),
        np.ascontiguousarray(ref, np.int32),
        pos.astype(np.int64),
        n,
        bit_depth,
        ctu,
        use_f,
        kind,
        kern.odd_matrices(n),
        hevc_transform_matrix(n).astype(np.float64),
        raw,
        costs,
        best,
        rank,
        had if with_hadamard else had[:0],
        threads=threads,
    )
    return BlockLabels(n, pos.astype(np.int32), costs, best, rank, had, raw)
