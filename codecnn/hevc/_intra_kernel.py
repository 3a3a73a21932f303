"""Compiled inner loop of the intra labeller (numba): references, predictions, residuals, costs and
ranks, fused block by block.

Per block, in cache: the 4N+1 reference samples with HM's availability (picture bounds and coding
order), substitution and smoothing; the 35 residuals ``orig - pred``, each transformed and summed as
soon as it is formed; the rounded costs' best mode and ranks. Nothing of size (blocks x 35 x N x N)
ever reaches memory: the labeller was memory-bound when it did.

The formulas are those of :mod:`codecnn.hevc.intra` (``substitute``, ``smooth``, ``predict_all``), which stay
the readable reference; the tests hold the two equal and both equal to HM. Two reorganisations:

* Angular modes predict along rows from a "main reference" array (H.265 8.4.4.2.6's ``ref[]``), so the
  inner loops are contiguous and vectorise. Horizontal modes (2..17) are formed transposed, against the
  transposed original block: every cost here (DCT, the HEVC transform, Hadamard) is the same for a
  residual and its transpose.
* The orthonormal 2-D DCT is separable and each 1-D pass is an even/odd butterfly recursion (the
  factorisation behind HEVC's partial butterflies, in float64): at each level the ``s`` inputs fold
  into ``s/2`` sums, which carry on as an ``s/2``-point DCT, and ``s/2`` differences, which give the odd
  coefficients through one dense ``s/2 x s/2`` matrix. A 32-point pass costs 341 multiply-adds instead
  of 1024. Passes run over whole rows (all columns at once); the block is transposed between them.

Blocks run on all cores: the kernel releases the GIL and Python threads take ranges of blocks.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
from numba import njit

from codecnn.hevc.intra import INTRA_PRED_ANGLE, INV_ANGLE, NUM_MODES

COST_DCT, COST_DENSE, COST_HADAMARD = 0, 1, 2
ANGLES = np.array([INTRA_PRED_ANGLE.get(m, 0) for m in range(NUM_MODES)], np.int32)  # intraPredAngle by mode
INV_ANGLES = np.array([INV_ANGLE.get(m, 0) for m in range(NUM_MODES)], np.int32)  # invAngle by mode


@cache
def odd_matrices(n: int) -> np.ndarray:
    """(levels, N/2, N/2) odd-part matrices of the butterfly recursion, orthonormal scaling folded in:
    level ``l`` has ``s = N >> l`` inputs and ``M[l, k, j] = sqrt(2/N) cos(pi (2j+1)(2k+1) / (2s))``."""
    levels = n.bit_length() - 1
    out = np.zeros((levels, n // 2, n // 2))
    for lv in range(levels):
        s = n >> lv
        k, j = np.mgrid[0 : s // 2, 0 : s // 2]
        out[lv, : s // 2, : s // 2] = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * j + 1) * (2 * k + 1) / (2 * s))
    return out


@njit(inline="always")
def _spread(v):  # pragma: no cover - compiled
    v &= 0xFF  # bits b -> 2b
    v = (v | (v << 4)) & 0x0F0F
    v = (v | (v << 2)) & 0x3333
    return (v | (v << 1)) & 0x5555


@njit(inline="always")
def _morton(uy, ux):  # pragma: no cover - compiled
    """z-scan index of the 4x4 unit (uy, ux) in its CTU."""
    return _spread(ux) | (_spread(uy) << 1)


@njit(inline="always")
def _references(ref, y0, x0, n, ctu, bit_depth, raw, s, p):  # pragma: no cover - compiled
    """Raw (-1 = unavailable), substituted ``s`` and smoothed ``p`` linear references of one block
    (the order of :mod:`codecnn.hevc.intra`: left column bottom to top, corner, top row left to right)."""
    h, w = ref.shape
    sh = 0  # CTU sizes are powers of two: shifts and masks, no divisions
    while (1 << sh) < ctu:
        sh += 1
    mask = ctu - 1
    ctus_w = (w + mask) >> sh
    c_blk = (y0 >> sh) * ctus_w + (x0 >> sh)
    z_blk = _morton((y0 & mask) >> 2, (x0 & mask) >> 2)
    size = 4 * n + 1
    first = -1
    for i in range(size):
        if i < 2 * n:
            ry, rx = y0 + 2 * n - 1 - i, x0 - 1
        elif i == 2 * n:
            ry, rx = y0 - 1, x0 - 1
        else:
            ry, rx = y0 - 1, x0 + i - 2 * n - 1
        ok = ry >= 0 and rx >= 0 and ry < h and rx < w
        if ok:
            c = (ry >> sh) * ctus_w + (rx >> sh)
            ok = c < c_blk or (c == c_blk and _morton((ry & mask) >> 2, (rx & mask) >> 2) < z_blk)
        raw[i] = ref[ry, rx] if ok else -1
        if ok and first < 0:
            first = raw[i]
    cur = first if first >= 0 else 1 << (bit_depth - 1)  # 8.4.4.2.2 substitution
    for i in range(size):
        if raw[i] >= 0:
            cur = raw[i]
        s[i] = cur
    p[0] = s[0]  # 8.4.4.2.3 [1 2 1] smoothing, ends kept
    p[size - 1] = s[size - 1]
    for i in range(1, size - 1):
        p[i] = (s[i - 1] + 2 * s[i] + s[i + 1] + 2) >> 2
    if n == 32:  # strong (bilinear) smoothing where the references are flat enough
        c, bl, tr = s[2 * n], s[0], s[4 * n]
        thr = 1 << (bit_depth - 5)
        if abs(c + tr - 2 * s[3 * n]) < thr and abs(c + bl - 2 * s[n]) < thr:
            for k in range(2 * n - 1):
                p[2 * n + 1 + k] = ((63 - k) * c + (k + 1) * tr + 32) >> 6
                p[2 * n - 1 - k] = ((63 - k) * c + (k + 1) * bl + 32) >> 6
            p[2 * n] = c


@njit(inline="always")
def _angular(m, n, s, p, use_f, lines, src, main, peak, a, g):  # pragma: no cover - compiled
    """Residual of angular mode ``m`` into ``a[:, g, :]``: for vertical modes ``src`` is the block, for horizontal
    modes its transpose (and the residual comes out transposed). ``lines[k]``: the block's references as
    float64, k = 2 * smoothed + horizontal, reversed for horizontal modes, with a zero pad at the end."""
    vertical = m >= 18
    angle = ANGLES[m]
    line = lines[2 * int(use_f[m]) + (0 if vertical else 1)]
    last = (n * angle) >> 5
    if last < -1:  # main[n + k] = ref[k], k = -N..2N (8.4.4.2.6), side references projected for k < 0
        r = p if use_f[m] else s
        for k in range(2 * n + 2):
            main[n + k] = line[2 * n + k]
        inv = INV_ANGLES[m]
        for k in range(last, 0):
            j = -1 + ((k * inv + 128) >> 8)
            main[n + k] = r[2 * n - 1 - j] if vertical else r[2 * n + 1 + j]
        ref = main
    else:
        ref = line[n:]  # no projection: ref[k] is the line itself
    for i in range(n):  # in float64, exact: small integers, and >> 5 is floor(/ 32)
        pos = (i + 1) * angle
        base = n + (pos >> 5) + 1
        w1 = float(pos & 31)
        w0 = 32.0 - w1
        row, si, m0, m1 = a[i, g], src[i], ref[base : base + n], ref[base + 1 : base + n + 1]
        for j in range(n):
            row[j] = si[j] - np.floor((w0 * m0[j] + w1 * m1[j] + 16.0) * 0.03125)
    if angle == 0 and n < 32:  # modes 10 and 26: the edge filter on the first column (transposed: row)
        c = s[2 * n]
        top = s[2 * n + 1] if vertical else s[2 * n - 1]
        for i in range(n):
            side = s[2 * n - 1 - i] if vertical else s[2 * n + 1 + i]
            v = min(max(top + ((side - c) >> 1), 0), peak)
            a[i, g, 0] = src[i, 0] - v


@njit(inline="always")
def _planar_dc(m, n, log2n, s, p, use_f, blk, a, g):  # pragma: no cover - compiled
    if m == 0:  # in float64, exact (see _angular)
        q = p if use_f[0] else s
        tr = float(q[3 * n + 1])
        bl = float(q[n - 1])
        inv = 1.0 / (1 << (log2n + 1))
        for y in range(n):
            left = float(q[2 * n - 1 - y])
            row, by = a[y, g], blk[y]
            for x in range(n):
                v = ((n - 1 - x) * left + (x + 1) * tr + (n - 1 - y) * float(q[2 * n + 1 + x]) + (y + 1) * bl + n) * inv
                row[x] = by[x] - np.floor(v)
        return
    acc = n
    for k in range(n):
        acc += s[2 * n + 1 + k] + s[2 * n - 1 - k]
    dc = acc >> (log2n + 1)
    for y in range(n):
        for x in range(n):
            a[y, g, x] = blk[y, x] - dc
    if n < 32:
        for x in range(1, n):
            a[0, g, x] = blk[0, x] - ((s[2 * n + 1 + x] + 3 * dc + 2) >> 2)
        for y in range(1, n):
            a[y, g, 0] = blk[y, 0] - ((s[2 * n - 1 - y] + 3 * dc + 2) >> 2)
        a[0, g, 0] = blk[0, 0] - ((s[2 * n - 1] + 2 * dc + s[2 * n + 1] + 2) >> 2)


@njit(inline="always")
def _dct_columns(a, out, o, mats, n, width):  # pragma: no cover - compiled
    """Orthonormal N-point DCT down each of the ``width`` columns of ``a`` (N x width, destroyed) into
    ``out``; ``o``: scratch. Odd rows: four matrix columns per pass over a row (fewer loads and stores)."""
    s = n
    step = 1
    lv = 0
    while s > 1:
        h = s // 2
        for j in range(h):
            ra, rb, ro = a[j], a[s - 1 - j], o[j]
            for x in range(width):
                u, v = ra[x], rb[x]
                ro[x] = u - v
                ra[x] = u + v
        for k in range(h):
            r = out[(2 * k + 1) * step]
            mk = mats[lv, k]
            if h >= 4:
                c0, c1, c2, c3 = mk[0], mk[1], mk[2], mk[3]
                o0, o1, o2, o3 = o[0], o[1], o[2], o[3]
                for x in range(width):
                    r[x] = c0 * o0[x] + c1 * o1[x] + c2 * o2[x] + c3 * o3[x]
                for j in range(4, h, 4):
                    c0, c1, c2, c3 = mk[j], mk[j + 1], mk[j + 2], mk[j + 3]
                    o0, o1, o2, o3 = o[j], o[j + 1], o[j + 2], o[j + 3]
                    for x in range(width):
                        r[x] += c0 * o0[x] + c1 * o1[x] + c2 * o2[x] + c3 * o3[x]
            else:
                c0, o0 = mk[0], o[0]
                for x in range(width):
                    r[x] = c0 * o0[x]
                for j in range(1, h):
                    c0, o0 = mk[j], o[j]
                    for x in range(width):
                        r[x] += c0 * o0[x]
        s = h
        step *= 2
        lv += 1
    scale = 1.0 / np.sqrt(n)
    r, a0 = out[0], a[0]
    for x in range(width):
        r[x] = a0[x] * scale


@njit(inline="always")
def _dct_satd_group(a, b, o, mats, n, acc):  # pragma: no cover - compiled
    """``acc[g]`` = sum of |orthonormal 2-D DCT-II| of the residuals ``a[:, g, :]`` (``a``, ``b``, ``o``:
    (N, G, N); ``a`` destroyed). Both passes run over all G x N columns at once."""
    groups = a.shape[1]
    width = groups * n
    a2, b2, o2 = a.reshape(n, width), b.reshape(n, width), o.reshape(n, width)
    _dct_columns(a2, b2, o2, mats, n, width)
    for g in range(groups):  # transpose each residual, in 4 x 4 tiles (cache-friendly for N = 32)
        for k0 in range(0, n, 4):
            for x0 in range(0, n, 4):
                for k in range(k0, k0 + 4):
                    for x in range(x0, x0 + 4):
                        a[x, g, k] = b[k, g, x]
    _dct_columns(a2, b2, o2, mats, n, width)
    for g in range(groups):
        acc[g] = 0.0
    for k in range(n):
        for g in range(groups):
            t = 0.0
            for x in range(n):
                t += abs(b[k, g, x])
            acc[g] += t


@njit(inline="always")
def _dense_cost(a, mat, b, row, n):  # pragma: no cover - compiled
    """Sum of |M R M^T| for a dense transform matrix M (the HEVC integer core transform; exact in float64);
    ``b`` (N x N) and ``row`` (N) are scratch."""
    for y in range(n):
        for k in range(n):
            b[y, k] = 0.0
        for x in range(n):
            v = a[y, x]
            for k in range(n):
                b[y, k] += v * mat[k, x]  # b = R M^T
    acc = 0.0
    for k in range(n):
        for x in range(n):
            row[x] = 0.0
        for y in range(n):
            c = mat[k, y]
            for x in range(n):
                row[x] += c * b[y, x]
        for x in range(n):
            acc += abs(row[x])
    return acc


@njit(inline="always")
def _hadamard_satd(a, t, n):  # pragma: no cover - compiled
    """HM's ``xGetHADs`` of the residual in ``a``: for N = 4, ``(sum|H4 R H4| + 1) >> 1``; else per 8x8
    sub-block ``(sum|H8 R H8| + 2) >> 2``. Fast Walsh-Hadamard butterflies: the sum of absolute values
    does not depend on the order of the coefficients."""
    k = 4 if n == 4 else 8
    total = 0
    for by in range(0, n, k):
        for bx in range(0, n, k):
            for y in range(k):
                for x in range(k):
                    t[y, x] = int(a[by + y, bx + x])
            h = 1
            while h < k:
                for i in range(0, k, 2 * h):
                    for j in range(i, i + h):
                        for x in range(k):
                            u = t[j, x]
                            v = t[j + h, x]
                            t[j, x] = u + v
                            t[j + h, x] = u - v
                        for y in range(k):
                            u = t[y, j]
                            v = t[y, j + h]
                            t[y, j] = u + v
                            t[y, j + h] = u - v
                h *= 2
            s = 0
            for y in range(k):
                for x in range(k):
                    s += abs(t[y, x])
            total += (s + 1) >> 1 if k == 4 else (s + 2) >> 2
    return total


@njit(inline="always")
def _label_range(
    lo, hi, orig, ref, pos, n, bit_depth, ctu, use_f, kind, mats, dense, raw, costs, best, rank, hads
):  # pragma: no cover - compiled
    log2n = 0
    while (1 << log2n) < n:
        log2n += 1
    peak = (1 << bit_depth) - 1
    scale = 1.0 / (4096.0 * n) if kind == COST_DENSE else 1.0
    want_had = hads.shape[0] == pos.shape[0]
    group = 35 if n <= 16 else 7  # modes transformed together (divides 35; N = 32 stays in L2)
    s = np.empty(4 * n + 1, np.int32)
    p = np.empty(4 * n + 1, np.int32)
    main = np.empty(3 * n + 2)
    lines = np.zeros((4, 4 * n + 2))
    blk = np.empty((n, n))  # the original block and its transpose, as float64
    blk_t = np.empty((n, n))
    a = np.empty((n, group, n))
    b = np.empty((n, group, n))
    o = np.empty((n, group, n))
    t = np.empty((8, 8), np.int32)
    acc = np.empty(group)
    dense_b = np.empty((n, n))
    row = np.empty(n)
    c = np.empty(35)
    order = np.empty(35, np.int64)
    for bi in range(lo, hi):
        y0, x0 = pos[bi, 0], pos[bi, 1]
        _references(ref, y0, x0, n, ctu, bit_depth, raw[bi], s, p)
        for k in range(4 * n + 1):
            lines[0, k] = s[k]
            lines[1, k] = s[4 * n - k]
            lines[2, k] = p[k]
            lines[3, k] = p[4 * n - k]
        for y in range(n):
            for x in range(n):
                v = orig[y0 + y, x0 + x]
                blk[y, x] = v
                blk_t[x, y] = v
        for m0 in range(0, 35, group):
            for g in range(group):
                m = m0 + g
                if m < 2:
                    _planar_dc(m, n, log2n, s, p, use_f, blk, a, g)
                else:
                    _angular(m, n, s, p, use_f, lines, blk if m >= 18 else blk_t, main, peak, a, g)
                if want_had or kind != COST_DCT:
                    r = a[:, g, :]
                    hd = _hadamard_satd(r, t, n)
                    if want_had:
                        hads[bi, m] = hd
                    c[m] = _dense_cost(r, dense, dense_b, row, n) if kind == COST_DENSE else float(hd)
            if kind == COST_DCT:
                _dct_satd_group(a, b, o, mats, n, acc)
                for g in range(group):
                    c[m0 + g] = acc[g]
        for m in range(35):
            c[m] = np.rint(c[m] * scale * 1e6) / 1e6  # as np.round(., 6): equal predictions tie exactly
        for m in range(35):  # stable insertion sort: ties go to the lower mode number
            j = m
            while j > 0 and c[order[j - 1]] > c[m]:
                order[j] = order[j - 1]
                j -= 1
            order[j] = m
        for r in range(35):
            rank[bi, order[r]] = r
            costs[bi, r] = c[r]
        best[bi] = order[0]


FASTMATH = {"contract", "reassoc", "nsz"}  # FMAs and vectorised sums; no reciprocal tricks in the rounding


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _label_range_any(
    lo, hi, orig, ref, pos, n, bit_depth, ctu, use_f, kind, mats, dense, raw, costs, best, rank, hads
):  # pragma: no cover - compiled
    _label_range(lo, hi, orig, ref, pos, n, bit_depth, ctu, use_f, kind, mats, dense, raw, costs, best, rank, hads)


def _specialised(n):
    @njit(nogil=True, cache=True, fastmath=FASTMATH)
    def label_range(
        lo, hi, orig, ref, pos, n_, bit_depth, ctu, use_f, kind, mats, dense, raw, costs, best, rank, hads
    ):  # pragma: no cover - compiled
        # N a compile-time constant: the many short loops of small blocks unroll
        _label_range(lo, hi, orig, ref, pos, n, bit_depth, ctu, use_f, kind, mats, dense, raw, costs, best, rank, hads)

    return label_range


_KERNELS = {4: _specialised(4), 8: _specialised(8)}  # measured: 1.4-1.7x faster there, nothing at 16 and 32


def label_frame(
    orig,
    ref,
    pos,
    n,
    bit_depth,
    ctu,
    use_f,
    kind,
    mats,
    dense,
    raw,
    costs,
    best,
    rank,
    hads,
    threads: int | None = None,
) -> None:
    """Label the N x N blocks at ``pos`` (B, 2) of ``orig`` with references from ``ref``, on ``threads``
    threads (default: all cores).

    Outputs (B rows each): ``raw`` (B, 4N+1) raw linear references, -1 unavailable; ``costs`` (B, 35)
    float32 by ``kind`` (COST_DCT with the butterfly matrices ``mats``, COST_DENSE with the matrix ``dense`` scaled
    by 1 / (4096 N), COST_HADAMARD), rounded to 1e-6; ``best`` and ``rank`` (lowest mode on ties); and,
    when ``hads`` has B rows, HM's Hadamard SATD.
    """
    kernel = _KERNELS.get(n, _label_range_any)
    args = (orig, ref, pos, n, bit_depth, ctu, use_f, kind, mats, dense, raw, costs, best, rank, hads)
    nb = len(pos)
    threads = threads or os.cpu_count() or 1
    if threads == 1 or nb < 64:
        kernel(0, nb, *args)
        return
    cuts = np.linspace(0, nb, 4 * threads + 1).astype(int)  # a few pieces per thread evens out the load
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda k: kernel(cuts[k], cuts[k + 1], *args), range(len(cuts) - 1)))


def warm_up() -> None:
    """Compile (or load from the cache) the kernels of every block size on a tiny input."""
    z = np.zeros((32, 32), np.int32)
    for n in (4, 8, 16, 32):
        label_frame(
            z,
            z,
            np.zeros((1, 2), np.int64),
            n,
            8,
            64,
            np.zeros(35, np.bool_),
            COST_DCT,
            odd_matrices(n),
            np.zeros((n, n)),
            np.empty((1, 4 * n + 1), np.int32),
            np.empty((1, 35), np.float32),
            np.empty(1, np.int8),
            np.empty((1, 35), np.int8),
            np.empty((1, 35), np.int32),
        )
