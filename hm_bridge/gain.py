"""PSNR gains of a ``.cnnw`` network measured on HM's own outputs (source, ``-o`` recon, log)."""

from __future__ import annotations

import numpy as np

from codecnn.encoders.hm import LOG_PSNR_TOLERANCE, read_hm_log
from codecnn.errors import CodecnnError
from codecnn.eval.metrics import psnr
from hm_bridge.export import filter_plane_cnnw
from hm_bridge.format import read_cnnw


def hm_gain(
    orig: str, recon: str, log: str, model: str, size: str | None = None, bit_depth: int | None = None, ctu: int = 128
) -> dict:
    """Per-frame and average luma PSNR of HM's recon and of the filtered recon, with HM's bits.
    The files are opened and checked against each other by :func:`codecnn.eval.runs.hm_runs`."""
    from codecnn.eval.runs import hm_runs
    from codecnn.yuv.names import warn_name_disagreement

    warn_name_disagreement(orig, size, bit_depth)
    run = next(hm_runs(orig, [recon], [log], size, bit_depth, None))
    hm = read_hm_log(log)
    graph = read_cnnw(model)
    bd = run.sequence["bit_depth"]
    frames = []
    for (poc, o, r), p in zip(run.frames, hm.pictures, strict=False):
        anchor = psnr(o.y, r.y, bd, convention="hm")
        if abs(anchor - p.psnr_y) > LOG_PSNR_TOLERANCE:
            raise CodecnnError(
                f"{recon} does not match {log}: POC {poc} Y-PSNR {anchor:.4f} here, {p.psnr_y:.4f} in HM's log"
            )
        filtered = psnr(o.y, filter_plane_cnnw(graph, r.y, bd, p.qp, ctu), bd, convention="hm")
        frames.append(
            {
                "poc": poc,
                "qp": p.qp,
                "bits": p.bits,
                "psnr_anchor": anchor,
                "psnr_filtered": filtered,
                "gain": filtered - anchor,
            }
        )
    avg = {k: float(np.mean([f[k] for f in frames])) for k in ("psnr_anchor", "psnr_filtered", "gain")}
    return {
        "model": str(model),
        "orig": str(orig),
        "recon": str(recon),
        "log": str(log),
        "hm_version": hm.version,
        "psnr_peak": "hm",
        "kbps": hm.summary.kbps if hm.summary else None,
        "frames": frames,
        "average": avg,
    }
