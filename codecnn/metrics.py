"""Quality metrics. The PSNR peak comes from the bit depth, never a literal.

Two peak conventions exist above 8 bits, and papers mix them up:

* ``"max"`` (default): ``(1 << bit_depth) - 1``, e.g. 1023 at 10 bits (BasicSR, CompressAI, ffmpeg);
* ``"hm"``: ``255 << (bit_depth - 8)``, e.g. 1020 at 10 bits, what HM's encoder log and x265's PSNR
  use (HM ``TEncGOP::xCalculateAddPSNR``). At 10 bits the two differ by 0.0255 dB.

Both are identical at 8 bits. To reproduce an HM or x265 log, pass ``convention="hm"``.
"""

from __future__ import annotations

import numpy as np

PEAK_CONVENTIONS = ("max", "hm")


def peak(bit_depth: int, convention: str = "max") -> int:
    """The PSNR peak for ``bit_depth`` under ``convention`` (see the module docstring)."""
    if convention == "max":
        return (1 << bit_depth) - 1
    if convention == "hm":
        return ((1 << 8) - 1) << (bit_depth - 8)
    raise ValueError(f"unknown PSNR peak convention {convention!r}; use one of {PEAK_CONVENTIONS}")


def mse(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared error between two sample arrays (optionally only where ``mask`` is true)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if mask is not None:
        d = d[np.broadcast_to(mask, d.shape)]
    return float(np.mean(d * d))


def psnr_from_mse(mse_value: float, peak_value: float = 1.0) -> float:
    """``10 log10(peak^2 / mse)`` in dB; ``inf`` for a zero error."""
    return float("inf") if mse_value <= 0 else 10.0 * float(np.log10(peak_value * peak_value / mse_value))


def psnr(a: np.ndarray, b: np.ndarray, bit_depth: int = 8, mask: np.ndarray | None = None,
         convention: str = "max") -> float:
    """PSNR in dB of one plane, ``inf`` for identical arrays."""
    return psnr_from_mse(mse(a, b, mask), peak(bit_depth, convention))


def psnr_yuv(ref, test, bit_depth: int = 8, convention: str = "max") -> tuple[float, float, float]:
    """(Y, U, V) PSNR of two :class:`codecnn.yuv.Frame` objects."""
    return tuple(psnr(r, t, bit_depth, convention=convention) for r, t in zip(ref.planes, test.planes))
