"""Exporting a trained codecnn checkpoint to a ``.cnnw`` file for HM (see :mod:`hm_bridge.format`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from codecnn.errors import CodecnnError
from hm_bridge.format import Graph, graph_from_rdn, read_cnnw, run_graph, write_cnnw

GRAPH_BUILDERS = {"rdn": graph_from_rdn}


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the (EMA, where kept) weights of a restoration checkpoint as a float32 ``.cnnw`` file."""
    from codecnn.train.checkpoint import load_model

    model, ckpt = load_model(checkpoint, task="ctu-restoration")
    builder = GRAPH_BUILDERS.get(ckpt["arch"])
    if builder is None:
        raise CodecnnError(f"{checkpoint}: no .cnnw export for architecture {ckpt['arch']!r}")
    g = builder(model)
    g.header["checkpoint_step"] = ckpt.get("step")
    return write_cnnw(g, out)


def filter_plane_cnnw(graph: Graph, plane: np.ndarray, bit_depth: int, qp: int = 0, ctu: int = 128) -> np.ndarray:
    """The float ``.cnnw`` network on a luma plane, CTU by CTU, exactly as ``cnnw.h``'s ``filterPlane``
    (edge-replicated context, round half to even, clip); the Python reference of the C++ path."""
    c = int(graph.header["context"])
    peak = np.float32((1 << bit_depth) - 1)
    h, w = plane.shape
    out = np.empty_like(plane)
    ys = np.arange(-c, ctu + c)
    for y0 in range(0, h, ctu):
        for x0 in range(0, w, ctu):
            tile = plane[np.clip(y0 + ys, 0, h - 1)[:, None], np.clip(x0 + ys, 0, w - 1)[None, :]]
            tile = tile.astype(np.float32) / peak
            res = run_graph(graph, tile[None], qp)[0]
            v = np.clip(tile[c:-c or None, c:-c or None] + res, 0, 1) * peak
            hh, ww = min(ctu, h - y0), min(ctu, w - x0)
            out[y0 : y0 + hh, x0 : x0 + ww] = np.rint(v[:hh, :ww]).astype(plane.dtype)
    return out


def load_cnnw(path: str | os.PathLike) -> Graph:
    return read_cnnw(path)
