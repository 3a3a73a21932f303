"""HEVC luma intra prediction (H.265 clause 8.4.4.2) and the costs that rank its 35 modes.

Bit-exact with HM 16.20 (checked against HM's own predictions in the tests): reference sample
substitution (8.4.4.2.2), [1 2 1] smoothing and 32x32 strong bilinear smoothing with the per-mode,
per-size filter decision (8.4.4.2.3), planar (8.4.4.2.5), DC with its edge filter and angular with the
inverse-angle projection and the mode 10/26 edge filters for blocks below 32 (8.4.4.2.6).

Everything works on many blocks of one size at once. Reference samples are held in one linear array
per block, the order of the standard's substitution process::

    lin[0 .. 2N-1] = p[-1][2N-1] .. p[-1][0]     (left column, bottom to top)
    lin[2N]        = p[-1][-1]                   (corner)
    lin[2N+1 .. 4N] = p[0][-1] .. p[2N-1][-1]    (top row, left to right)

in which substitution is a forward fill and [1 2 1] smoothing a 1-D filter. Each mode is then a fixed
pair of gather indices and weights into that array (cached per block size), so all 35 predictions of
all blocks are a few vectorised numpy operations.

Arrays: predictions are ``[..., mode, y, x]`` (row y, column x), as in the HM fixtures.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from codecnn.errors import CodecnnError
from codecnn.yuv import sample_peak

NUM_MODES = 35
PLANAR, DC, HOR, VER = 0, 1, 10, 26
BLOCK_SIZES = (4, 8, 16, 32)
BIT_DEPTHS = (8, 10)
INTRA_PRED_ANGLE = {
    m: a
    for m, a in zip(
        range(2, 35),
        [
            32,
            26,
            21,
            17,
            13,
            9,
            5,
            2,
            0,
            -2,
            -5,
            -9,
            -13,
            -17,
            -21,
            -26,
            -32,
            -26,
            -21,
            -17,
            -13,
            -9,
            -5,
            -2,
            0,
            2,
            5,
            9,
            13,
            17,
            21,
            26,
            32,
        ],
        strict=False,
    )
}
INV_ANGLE = {
    11: -4096,
    12: -1638,
    13: -910,
    14: -630,
    15: -482,
    16: -390,
    17: -315,
    18: -256,
    19: -315,
    20: -390,
    21: -482,
    22: -630,
    23: -910,
    24: -1638,
    25: -4096,
}
FILTER_THRESHOLD = {8: 7, 16: 1, 32: 0}  # intraHorVerDistThres[nTbS]


def check_block(n: int, bit_depth: int = 8) -> None:
    if n not in BLOCK_SIZES:
        raise CodecnnError(f"block size {n}: HEVC luma intra prediction covers {', '.join(map(str, BLOCK_SIZES))}")
    if bit_depth not in BIT_DEPTHS:
        raise CodecnnError(f"bit depth {bit_depth}: intra labels support 8 and 10 bits")


def check_mode(mode: int) -> None:
    if not 0 <= int(mode) < NUM_MODES:
        raise CodecnnError(f"intra mode {mode}: HEVC luma has modes 0..34 (0 planar, 1 DC, 2..34 angular)")


def uses_filtered(mode: int, n: int) -> bool:
    """Does ``mode`` predict from the smoothed references at block size ``n`` (8.4.4.2.3)?"""
    if mode == DC or n == 4:
        return False
    return min(abs(mode - VER), abs(mode - HOR)) > FILTER_THRESHOLD[n]


# --------------------------------------------------------------------------------------------------
# reference samples


def to_linear(top: np.ndarray, left: np.ndarray, corner: np.ndarray) -> np.ndarray:
    """(B, 2N) top, (B, 2N) left, (B,) corner -> (B, 4N+1) linear reference array (see module doc)."""
    return np.concatenate([left[:, ::-1], np.asarray(corner)[:, None], top], axis=1)


def substitute(lin: np.ndarray, avail: np.ndarray, bit_depth: int) -> np.ndarray:
    """8.4.4.2.2: unavailable samples take the nearest available one before them in the linear order
    (the first ones take the first available); with none available, all are ``1 << (bit_depth - 1)``."""
    n = lin.shape[1]
    pos = np.where(avail, np.arange(n), -1)
    np.maximum.accumulate(pos, axis=1, out=pos)
    first = np.argmax(avail, axis=1)
    pos = np.where(pos < 0, first[:, None], pos)
    out = np.take_along_axis(lin, pos, axis=1)
    none = ~avail.any(axis=1)
    out[none] = 1 << (bit_depth - 1)
    return out


def smooth(lin: np.ndarray, n: int, bit_depth: int, strong: bool = True) -> np.ndarray:
    """8.4.4.2.3: [1 2 1] filtering of the linear array (end samples kept), or for N = 32 with
    ``strong`` the bilinear interpolation where the references are flat enough."""
    out = lin.copy()
    out[:, 1:-1] = (lin[:, :-2] + 2 * lin[:, 1:-1] + lin[:, 2:] + 2) >> 2
    if strong and n == 32:
        c, bl, tr = lin[:, 2 * n], lin[:, 0], lin[:, 4 * n]
        left_mid, top_mid = lin[:, n], lin[:, 3 * n]  # p[-1][N-1], p[N-1][-1]
        thr = 1 << (bit_depth - 5)
        flat = (np.abs(c + tr - 2 * top_mid) < thr) & (np.abs(c + bl - 2 * left_mid) < thr)
        if flat.any():
            k = np.arange(63)
            top = ((63 - k) * c[flat, None] + (k + 1) * tr[flat, None] + 32) >> 6  # pF[x][-1], x = 0..62
            left = ((63 - k) * c[flat, None] + (k + 1) * bl[flat, None] + 32) >> 6  # pF[-1][y], y = 0..62
            rows = out[flat]
            rows[:, 2 * n + 1 : 4 * n] = top
            rows[:, 1 : 2 * n] = left[:, ::-1]
            rows[:, 2 * n] = c[flat]  # the corner stays unfiltered
            out[flat] = rows
    return out


# --------------------------------------------------------------------------------------------------
# predictions


@cache
def _angular_tables(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per angular mode: gather indices i0, i1 into the linear array and weights f, each (33, N, N)."""
    i0 = np.zeros((33, n, n), np.int64)
    i1 = np.zeros((33, n, n), np.int64)
    f = np.zeros((33, n, n), np.int64)
    yy, xx = np.mgrid[0:n, 0:n]
    for m in range(2, 35):
        angle = INTRA_PRED_ANGLE[m]
        vertical = m >= 18
        # main reference ref[k], k = -N..2N, as indices into the linear array
        ks = np.arange(-n, 2 * n + 1)
        if vertical:
            ref = 2 * n + ks  # k >= 0: p[-1+k][-1]
        else:
            ref = 2 * n - ks  # k >= 0: p[-1][-1+k]
        if angle < 0 and (n * angle) >> 5 < -1:
            neg = np.arange((n * angle) >> 5, 0)
            j = -1 + ((neg * INV_ANGLE[m] + 128) >> 8)  # projected index on the side reference
            side = 2 * n + 1 + j if not vertical else 2 * n - 1 - j
            ref[neg + n] = side
        # along the prediction direction: the position (row for vertical, column for horizontal)
        along, across = (yy, xx) if vertical else (xx, yy)
        pos = (along + 1) * angle
        idx, frac = pos >> 5, pos & 31
        a = across + idx + 1
        b = np.minimum(a + 1, 2 * n)  # unused (weight 0) where it would leave the array
        i0[m - 2], i1[m - 2], f[m - 2] = ref[a + n], ref[b + n], frac
    return i0, i1, f


def predict_all(
    top: np.ndarray,
    left: np.ndarray,
    corner: np.ndarray,
    bit_depth: int = 8,
    strong_smoothing: bool = True,
    avail: np.ndarray | None = None,
) -> np.ndarray:
    """All 35 luma predictions of B blocks of one size.

    Args:
        top, left: (B, 2N) raw neighbours (``top[x] = p[x][-1]``, ``left[y] = p[-1][y]``); -1 marks an
            unavailable sample unless ``avail`` is given.
        corner: (B,) raw ``p[-1][-1]``.
        avail: optional (B, 4N+1) availability in linear order (else derived from the -1 markers).

    Returns:
        (B, 35, N, N) predictions, dtype int32.
    """
    top = np.asarray(top, np.int64)
    left = np.asarray(left, np.int64)
    corner = np.asarray(corner, np.int64).reshape(-1)
    if top.ndim != 2 or top.shape != left.shape or top.shape[1] % 2:
        raise CodecnnError(f"top and left must both be (blocks, 2N); got {top.shape} and {left.shape}")
    n = top.shape[1] // 2
    check_block(n, bit_depth)
    lin = to_linear(top, left, corner)
    if avail is None:
        avail = lin >= 0
    sub = substitute(lin, avail, bit_depth)
    filt = smooth(sub, n, bit_depth, strong_smoothing) if n > 4 else sub
    b = lin.shape[0]
    peak = sample_peak(bit_depth)
    pred = np.empty((b, NUM_MODES, n, n), np.int32)

    log2n = n.bit_length() - 1
    # planar (always from the filtered references for N >= 8)
    p = filt if uses_filtered(PLANAR, n) else sub
    yy, xx = np.mgrid[0:n, 0:n]
    left_y = p[:, 2 * n - 1 - yy]  # p[-1][y]
    top_x = p[:, 2 * n + 1 + xx]  # p[x][-1]
    top_right = p[:, 3 * n + 1, None, None]  # p[N][-1]
    bottom_left = p[:, n - 1, None, None]  # p[-1][N]
    pred[:, PLANAR] = (
        (n - 1 - xx) * left_y + (xx + 1) * top_right + (n - 1 - yy) * top_x + (yy + 1) * bottom_left + n
    ) >> (log2n + 1)

    # DC (never filtered), with the edge filter below 32
    s = sub
    dc = (s[:, 2 * n + 1 : 3 * n + 1].sum(1) + s[:, n : 2 * n].sum(1) + n) >> (log2n + 1)
    block = np.broadcast_to(dc[:, None, None], (b, n, n)).copy()
    if n < 32:
        block[:, 0, 1:] = (s[:, 2 * n + 2 : 3 * n + 1] + 3 * dc[:, None] + 2) >> 2  # row 0: p[x][-1]
        block[:, 1:, 0] = (s[:, 2 * n - 2 : n - 1 : -1] + 3 * dc[:, None] + 2) >> 2  # column 0: p[-1][y]
        block[:, 0, 0] = (s[:, 2 * n - 1] + 2 * dc + s[:, 2 * n + 1] + 2) >> 2
    pred[:, DC] = block

    # angular
    i0, i1, f = _angular_tables(n)
    use_f = np.array([uses_filtered(m, n) for m in range(2, 35)])
    for refs, sel in ((filt, use_f), (sub, ~use_f)):
        if sel.any():
            a = refs[:, i0[sel]]
            c = refs[:, i1[sel]]
            w = f[sel]
            pred[:, 2:][:, sel] = ((32 - w) * a + w * c + 16) >> 5
    if n < 32:
        corner_s = sub[:, 2 * n, None]
        # mode 26: column 0 = clip(p[0][-1] + ((p[-1][y] - p[-1][-1]) >> 1))
        col = sub[:, 2 * n + 1, None] + ((sub[:, 2 * n - 1 - np.arange(n)] - corner_s) >> 1)
        pred[:, VER, :, 0] = np.clip(col, 0, peak)
        # mode 10: row 0 = clip(p[-1][0] + ((p[x][-1] - p[-1][-1]) >> 1))
        row = sub[:, 2 * n - 1, None] + ((sub[:, 2 * n + 1 + np.arange(n)] - corner_s) >> 1)
        pred[:, HOR, 0, :] = np.clip(row, 0, peak)
    return pred


def intra_predictions(top, left, corner, bit_depth: int = 8, strong_smoothing: bool = True) -> np.ndarray:
    """All 35 predictions of one block from raw neighbours in the HM fixtures' convention.

    ``top`` and ``left`` have 2N samples (``top[x] = p[x][-1]``, ``left[y] = p[-1][y]``), ``corner`` is
    ``p[-1][-1]``; -1 marks an unavailable sample. Strong intra smoothing is on, as in HM's main
    configurations (``strong_smoothing=False`` turns it off). Returns (35, N, N).
    """
    top = np.asarray(top)
    left = np.asarray(left)
    if top.ndim != 1 or top.shape != left.shape:
        raise CodecnnError(f"top and left must be 1-D of equal length 2N; got {top.shape} and {left.shape}")
    return predict_all(top[None], left[None], np.asarray([corner]), bit_depth, strong_smoothing)[0]


# --------------------------------------------------------------------------------------------------
# costs


def _hadamard(n: int) -> np.ndarray:
    h = np.array([[1]], np.int64)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


H4, H8 = _hadamard(4), _hadamard(8)


def hadamard_satd_blocks(diff: np.ndarray) -> np.ndarray:
    """HM's Hadamard SATD (``TComRdCost::xGetHADs``) of residuals (..., N, N): for N = 4,
    ``(sum|H4 D H4| + 1) >> 1``; for N >= 8, the sum over 8x8 sub-blocks of ``(sum|H8 D H8| + 2) >> 2``."""
    d = np.asarray(diff, np.int64)
    n = d.shape[-1]
    if n == 4:
        return (np.abs(H4 @ d @ H4).sum((-2, -1)) + 1) >> 1
    k = n // 8
    sub = d.reshape(*d.shape[:-2], k, 8, k, 8).swapaxes(-3, -2)
    return ((np.abs(H8 @ sub @ H8).sum((-2, -1)) + 2) >> 2).sum((-2, -1))


def hadamard_satd(orig: np.ndarray, pred: np.ndarray) -> int:
    """HM's Hadamard SATD of one N x N block (the distortion of HM's rough mode decision)."""
    o, p = np.asarray(orig, np.int64), np.asarray(pred, np.int64)
    if o.shape != p.shape or o.ndim != 2 or o.shape[0] != o.shape[1]:
        raise CodecnnError(f"orig and pred must be equal N x N blocks; got {o.shape} and {p.shape}")
    check_block(o.shape[0])
    return int(hadamard_satd_blocks(o - p))


@cache
def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix C (rows = basis functions): coefficients are ``C @ D @ C.T``."""
    k, x = np.mgrid[0:n, 0:n]
    c = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    c[0] /= np.sqrt(2.0)
    return c


_HEVC_COS = [
    0,
    90,
    90,
    90,
    89,
    88,
    87,
    85,
    83,
    82,
    80,
    78,
    75,
    73,
    70,
    67,
    64,
    61,
    57,
    54,
    50,
    46,
    43,
    38,
    36,
    31,
    25,
    22,
    18,
    13,
    9,
    4,
    0,
]  # 64 * sqrt(2) * cos(pi * m / 64), m = 0..32, as the standard rounds them


@cache
def hevc_transform_matrix(n: int) -> np.ndarray:
    """HEVC's integer core transform (H.265 8.6.4.2) for N = 4..32: rows ``k * 32 / N`` of the 32-point
    matrix, whose entries are ``64`` (row 0) or +-``_HEVC_COS`` of ``k (2x + 1) mod 128``."""
    k32 = np.arange(32)[:, None]
    m = (k32 * (2 * np.arange(32)[None, :] + 1)) % 128
    val = np.select(
        [m <= 32, m <= 64, m <= 96],
        [
            np.take(_HEVC_COS, np.minimum(m, 32)),
            -np.take(_HEVC_COS, np.clip(64 - m, 0, 32)),
            -np.take(_HEVC_COS, np.clip(m - 64, 0, 32)),
        ],
        np.take(_HEVC_COS, np.clip(128 - m, 0, 32)),
    )
    val[0] = 64
    return val[:: 32 // n, :n].astype(np.int64)


COSTS = ("dct", "hevc", "hadamard")


def transform_costs(diff: np.ndarray, kind: str = "dct") -> np.ndarray:
    """Cost of residuals (..., N, N) by ``kind``:

    * ``dct``: sum of |orthonormal 2-D DCT-II coefficients| (the default label cost: what HEVC codes
      with, unlike the Hadamard approximation; a pure DC residual ``d`` costs ``N * |d|``);
    * ``hevc``: the same with HEVC's integer core transform, scaled by ``1 / (4096 N)`` to DCT units;
    * ``hadamard``: HM's Hadamard SATD (integers, exactly HM's rough-mode-decision distortion).
    """
    n = diff.shape[-1]
    if kind == "hadamard":
        return hadamard_satd_blocks(diff).astype(np.float64)
    if kind == "dct":
        c = dct_matrix(n)
        d = np.asarray(diff, np.float64)
        return np.abs(c @ d @ c.T).sum((-2, -1))
    if kind == "hevc":
        t = hevc_transform_matrix(n)
        d = np.asarray(diff, np.int64)
        return np.abs(t @ d @ t.T).sum((-2, -1)) / (4096.0 * n)
    raise CodecnnError(f"unknown cost {kind!r}; use one of {', '.join(COSTS)}")
