"""Compiled inner loop of the intra labeller (numba): residuals ``orig - pred`` of all 35 modes.

It evaluates exactly the formulas of :func:`codecnn.intra.predict_all` (which stays the readable
reference, and the tests hold the two equal), one block per iteration, blocks in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, nogil=True)
def residuals(orig, pos, sub, filt, i0, i1, f, use_f, n, peak, out):  # pragma: no cover - compiled
    """``out[b, m, y, x] = orig[y0 + y, x0 + x] - pred_m[y, x]`` for blocks b at ``pos[b]``.

    ``sub``/``filt``: (B, 4N+1) substituted / smoothed linear references; ``i0``, ``i1``, ``f``: the
    angular gather tables (33, N, N); ``use_f``: per mode, predict from ``filt``.
    """
    log2n = 0
    while (1 << log2n) < n:
        log2n += 1
    for b in prange(pos.shape[0]):
        y0 = pos[b, 0]
        x0 = pos[b, 1]
        s = sub[b]
        # planar
        p = filt[b] if use_f[0] else s
        tr = p[3 * n + 1]
        bl = p[n - 1]
        for y in range(n):
            for x in range(n):
                v = ((n - 1 - x) * p[2 * n - 1 - y] + (x + 1) * tr + (n - 1 - y) * p[2 * n + 1 + x]
                     + (y + 1) * bl + n) >> (log2n + 1)
                out[b, 0, y, x] = orig[y0 + y, x0 + x] - v
        # DC
        acc = n
        for k in range(n):
            acc += s[2 * n + 1 + k] + s[2 * n - 1 - k]
        dc = acc >> (log2n + 1)
        for y in range(n):
            for x in range(n):
                out[b, 1, y, x] = orig[y0 + y, x0 + x] - dc
        if n < 32:
            for x in range(1, n):
                out[b, 1, 0, x] = orig[y0, x0 + x] - ((s[2 * n + 1 + x] + 3 * dc + 2) >> 2)
            for y in range(1, n):
                out[b, 1, y, 0] = orig[y0 + y, x0] - ((s[2 * n - 1 - y] + 3 * dc + 2) >> 2)
            out[b, 1, 0, 0] = orig[y0, x0] - ((s[2 * n - 1] + 2 * dc + s[2 * n + 1] + 2) >> 2)
        # angular
        for m in range(2, 35):
            r = filt[b] if use_f[m] else s
            t = m - 2
            for y in range(n):
                for x in range(n):
                    w = f[t, y, x]
                    v = ((32 - w) * r[i0[t, y, x]] + w * r[i1[t, y, x]] + 16) >> 5
                    out[b, m, y, x] = orig[y0 + y, x0 + x] - v
        if n < 32:
            c = s[2 * n]
            for y in range(n):  # mode 26, column 0
                v = s[2 * n + 1] + ((s[2 * n - 1 - y] - c) >> 1)
                v = min(max(v, 0), peak)
                out[b, 26, y, 0] = orig[y0 + y, x0] - v
            for x in range(n):  # mode 10, row 0
                v = s[2 * n - 1] + ((s[2 * n + 1 + x] - c) >> 1)
                v = min(max(v, 0), peak)
                out[b, 10, 0, x] = orig[y0, x0 + x] - v


@njit(parallel=True, cache=True, nogil=True)
def abs_row_sums(a, out):  # pragma: no cover - compiled
    """``out[i] = sum(|a[i, :]|)`` for a 2-D array."""
    for i in prange(a.shape[0]):
        acc = 0.0
        for j in range(a.shape[1]):
            acc += abs(a[i, j])
        out[i] = acc


def warm_up() -> None:
    """Compile (or load from the cache) both kernels on a tiny input."""
    n = 4
    residuals(np.zeros((8, 8), np.int32), np.zeros((1, 2), np.int64), np.zeros((1, 17), np.int32),
              np.zeros((1, 17), np.int32), np.zeros((33, n, n), np.int64), np.zeros((33, n, n), np.int64),
              np.zeros((33, n, n), np.int64), np.zeros(35, np.bool_), n, (1 << 8) - 1, np.empty((1, 35, n, n)))
    abs_row_sums(np.zeros((2, 2)), np.empty(2))
