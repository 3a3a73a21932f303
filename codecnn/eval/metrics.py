"""Quality metrics. The PSNR peak comes from the bit depth, never a literal.

Two peak conventions exist above 8 bits, and papers mix them up:

* ``"max"`` (default): ``(1 << bit_depth) - 1``, e.g. 1023 at 10 bits (BasicSR, CompressAI, ffmpeg);
* ``"hm"``: ``255 << (bit_depth - 8)``, e.g. 1020 at 10 bits, what HM's encoder log and x265's PSNR
  use (HM ``TEncGOP::xCalculateAddPSNR``). At 10 bits the two differ by 0.0255 dB.

Both are identical at 8 bits. To reproduce an HM or x265 log, pass ``convention="hm"``.
"""

from __future__ import annotations

import numpy as np

from codecnn.yuv import sample_peak

PEAK_CONVENTIONS = ("max", "hm")


def peak(bit_depth: int, convention: str = "max") -> int:
    """The PSNR peak for ``bit_depth`` under ``convention`` (see the module docstring)."""
    if convention == "max":
        return sample_peak(bit_depth)
    if convention == "hm":
        return ((1 << 8) - 1) << (bit_depth - 8)
    raise ValueError(f"unknown PSNR peak convention {convention!r}; use one of {PEAK_CONVENTIONS}")


def mse(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared error between two sample arrays (optionally only where ``mask`` is true)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if mask is not None:
        d = d[np.broadcast_to(mask, d.shape)]
    return float(np.mean(d * d))


def standard_error(values) -> float:
    """The standard error of the mean of ``values`` (sample standard deviation over sqrt(n)): the noise of a
    mean gain over frames, or of a mean paired difference. 0.0 for fewer than two values."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def psnr_from_mse(mse_value: float, peak_value: float = 1.0) -> float:
    """``10 log10(peak^2 / mse)`` in dB; ``inf`` for a zero error."""
    return float("inf") if mse_value <= 0 else 10.0 * float(np.log10(peak_value * peak_value / mse_value))


def psnr(
    a: np.ndarray, b: np.ndarray, bit_depth: int = 8, mask: np.ndarray | None = None, convention: str = "max"
) -> float:
    """PSNR in dB of one plane, ``inf`` for identical arrays."""
    return psnr_from_mse(mse(a, b, mask), peak(bit_depth, convention))


def psnr_yuv(ref, test, bit_depth: int = 8, convention: str = "max") -> tuple[float, float, float]:
    """(Y, U, V) PSNR of two :class:`codecnn.yuv.Frame` objects."""
    return tuple(psnr(r, t, bit_depth, convention=convention) for r, t in zip(ref.planes, test.planes, strict=False))


# --------------------------------------------------------------------------------------------------
# Bjontegaard delta

BD_METHODS = ("pchip", "cubic", "akima")
# points per curve a BD figure is computed from, for every method: the CTC's four QPs (22, 27, 32, 37). With
# fewer, the interpolation would still return a number (two points: a straight line), not a CTC figure.
BD_MIN_POINTS = dict.fromkeys(BD_METHODS, 4)


class BDError(ValueError):
    """RD points a BD figure cannot honestly be computed from (too few, non-monotonic, no overlap)."""


def _curve(points, name: str) -> tuple[np.ndarray, np.ndarray]:
    pts = sorted((float(r), float(p)) for r, p in points)
    rate, q = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    if not np.all(np.isfinite(rate)) or not np.all(np.isfinite(q)) or np.any(rate <= 0):
        raise BDError(f"{name} curve has a non-positive or non-finite point: {pts}")
    if np.any(np.diff(rate) <= 0) or np.any(np.diff(q) <= 0):
        raise BDError(f"{name} curve is not monotonic (quality must rise strictly with rate): {pts}")
    return rate, q


def bd_rate(anchor, test, method: str = "pchip") -> dict:
    """BD-rate (%) and BD-PSNR (dB) of ``test`` against ``anchor``, each a list of (rate, psnr) points.

    Computed by the ``bjontegaard`` package (PCHIP matches the JVET CTC Excel sheet; ``cubic`` is
    VCEG-M33, ``akima`` is also offered). Points are sorted by rate; a curve with fewer than four points
    (:data:`BD_MIN_POINTS`, the CTC's four QPs), a non-monotonic curve, or curves that do not overlap raise
    :class:`BDError` rather than giving a number. The result records the method, the implementation and
    version, and the points.
    """
    import warnings

    import bjontegaard

    if method not in BD_METHODS:
        raise BDError(f"unknown BD interpolation {method!r}; use one of {', '.join(BD_METHODS)}")
    need = BD_MIN_POINTS[method]
    if len(anchor) < need or len(test) < need:
        raise BDError(
            f"BD-rate with {method} needs at least {need} RD points per curve, the CTC's four QPs "
            f"(anchor has {len(anchor)}, test {len(test)}): encode more QPs"
        )
    ra, qa = _curve(anchor, "anchor")
    rt, qt = _curve(test, "test")
    if min(qa.max(), qt.max()) <= max(qa.min(), qt.min()):
        raise BDError("the anchor and test curves do not overlap in quality; BD-rate is undefined")
    if min(ra.max(), rt.max()) <= max(ra.min(), rt.min()):
        raise BDError("the anchor and test curves do not overlap in rate; BD-PSNR is undefined")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rate = float(bjontegaard.bd_rate(ra, qa, rt, qt, method, require_matching_points=False, min_overlap=0))
        dpsnr = float(bjontegaard.bd_psnr(ra, qa, rt, qt, method, require_matching_points=False, min_overlap=0))
    return {
        "bd_rate": rate,
        "bd_psnr": dpsnr,
        "method": method,
        "implementation": f"bjontegaard {bjontegaard.__version__}",
        "anchor": [[float(r), float(q)] for r, q in zip(ra, qa, strict=False)],
        "test": [[float(r), float(q)] for r, q in zip(rt, qt, strict=False)],
    }


def psnr_yuv_weighted(y: float, u: float, v: float, weights: tuple[int, int, int] = (6, 1, 1)) -> float:
    """Weighted YUV PSNR (JCT-VC/JVET CTC commonly 6:1:1) of per-plane PSNRs."""
    return (weights[0] * y + weights[1] * u + weights[2] * v) / sum(weights)


def read_rd_csv(path) -> list[tuple[float, float]]:
    """RD points from a CSV file with a header ``rate,psnr`` (one point a row)."""
    import csv
    import io
    from pathlib import Path

    from codecnn.errors import CodecnnError
    from codecnn.files import read_text_input

    p = Path(path)
    rows = list(csv.DictReader(io.StringIO(read_text_input(p, "a CSV file with the header 'rate,psnr'"), newline="")))
    try:
        return [(float(r["rate"]), float(r["psnr"])) for r in rows]
    except (KeyError, TypeError, ValueError):
        raise CodecnnError(f"{p}: expected a CSV with the header 'rate,psnr' and numbers below it") from None
