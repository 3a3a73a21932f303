"""PSNR gains of a ``.cnnw`` network measured on HM's own outputs (source, ``-o`` recon, log)."""

from __future__ import annotations

import numpy as np

from codecnn.encoders.hm import read_hm_log
from codecnn.errors import CodecnnError
from codecnn.metrics import psnr
from codecnn.yuv import open_video
from hm_bridge.export import filter_plane_cnnw, load_cnnw


def hm_gain(orig: str, recon: str, log: str, model: str, size: str | None = None, bit_depth: int | None = None,
            ctu: int = 128) -> dict:
    """Per-frame and average luma PSNR of HM's recon and of the filtered recon, with HM's bits."""
    hm = read_hm_log(log)
    graph = load_cnnw(model)
    src = open_video(orig, size, bit_depth)
    rec = open_video(recon, size or f"{src.info.width}x{src.info.height}", src.info.bit_depth)
    if (rec.info.width, rec.info.height) != (src.info.width, src.info.height) or rec.info.num_frames != len(hm.pictures):
        raise CodecnnError(f"{recon} ({rec.info.num_frames} frames) does not match {orig} and {log} "
                           f"({len(hm.pictures)} pictures): check --size")
    bd = src.info.bit_depth
    frames = []
    for p in hm.pictures:
        o, r = src.read(p.poc).y, rec.read(p.poc).y
        anchor = psnr(o, r, bd, convention="hm")
        if abs(anchor - p.psnr_y) > 5.1e-5:
            raise CodecnnError(f"{recon} does not match {log}: POC {p.poc} Y-PSNR {anchor:.4f} here, "
                               f"{p.psnr_y:.4f} in HM's log")
        f = filter_plane_cnnw(graph, r, bd, p.qp, ctu)
        filtered = psnr(o, f, bd, convention="hm")
        frames.append({"poc": p.poc, "qp": p.qp, "bits": p.bits, "psnr_anchor": anchor, "psnr_filtered": filtered,
                       "gain": filtered - anchor})
    avg = {k: float(np.mean([f[k] for f in frames])) for k in ("psnr_anchor", "psnr_filtered", "gain")}
    return {"model": str(model), "orig": str(orig), "recon": str(recon), "log": str(log), "hm_version": hm.version,
            "psnr_peak": "hm", "kbps": hm.summary.kbps if hm.summary else None, "frames": frames, "average": avg}
