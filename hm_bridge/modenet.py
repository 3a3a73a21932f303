"""The mode network (:class:`codecnn.models.modenet.ModeNet`) as a ``.cnnw`` graph for HM's intra search.

A version 3 file (:data:`hm_bridge.format.MODES_VERSION`): node 0 is the canvas of one block
(3 x (2N+1) x (2N+1), as :func:`codecnn.data.intra.canvas` makes it), then a chain::

    INPUT -> [NORMALISE] -> [AVG_POOL pool_to] -> (CONV2D, RELU) x depth -> SPP_MAX levels
          -> DENSE (fc1, side inputs appended) -> RELU -> HEADS (one per block size) or DENSE (fc2, side)

The side inputs are ``log2(N) / 5``, ``QP / 51`` and, with NORMALISE, ``log2(deviation * sample_peak(8)) / 8``
(:func:`codecnn.models.modenet.side_info`). The last node gives the 35 logits. The C++ reader is
``hm_bridge/cpp/cnnw_modenet.h``; it accepts this chain only (the shape every ModeNet exports to).
"""

from __future__ import annotations

import numpy as np

from codecnn.errors import CodecnnError
from hm_bridge.format import (
    AVG_POOL,
    CONV2D,
    DENSE,
    HEADS,
    INPUT,
    NORMALISE,
    RELU,
    SPP_MAX,
    Graph,
)


def graph_from_modenet(model) -> Graph:
    """The graph of a :class:`codecnn.models.modenet.ModeNet` (the chain of the module docstring)."""
    from torch import nn

    from codecnn import __version__

    cfg = model.config
    g = Graph({"arch": "modenet", "config": dict(cfg.__dict__), "context": 0, "codecnn_version": __version__})
    g.header["config"]["spp_levels"] = list(cfg.spp_levels)

    def dense(x: int, m: nn.Linear, side: int = 1) -> int:
        return g.add(DENSE, [x], [g.add_tensor(m.weight.detach().numpy()), g.add_tensor(m.bias.detach().numpy()), side])

    x = g.add(INPUT)
    if cfg.normalise:
        x = g.add(NORMALISE, [x])
    if cfg.pool_to:
        x = g.add(AVG_POOL, [x], [cfg.pool_to])
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            w, b = g.add_tensor(m.weight.detach().numpy()), g.add_tensor(m.bias.detach().numpy())
            x = g.add(CONV2D, [x], [w, b, m.padding[0], m.groups])
        else:
            x = g.add(RELU, [x])
    x = g.add(SPP_MAX, [x], list(cfg.spp_levels))
    x = g.add(RELU, [dense(x, model.fc1)])
    if cfg.size_heads:
        params = []
        for h in model.heads:
            params += [g.add_tensor(h.weight.detach().numpy()), g.add_tensor(h.bias.detach().numpy())]
        g.add(HEADS, [x], params)
    else:
        dense(x, model.fc2)
    return g


def run_modenet_graph(g: Graph, canvas: np.ndarray, n: int, qp: int) -> np.ndarray:
    """The 35 logits of one block's canvas (3 x (2N+1) x (2N+1)) through a mode-network graph: the readable
    reference of the C++ (``cnnw_modenet.h``), tested equal to PyTorch."""
    import torch
    import torch.nn.functional as F

    from codecnn.models.modenet import BLOCK_SIZES, DEVIATION_SCALE, normalise_canvas, side_info

    if g.header.get("arch") != "modenet":
        raise CodecnnError(f"a {g.header.get('arch')!r} graph is not a mode network")
    t = lambda i: torch.from_numpy(g.tensors[i])  # noqa: E731
    x = torch.from_numpy(np.asarray(canvas, np.float32))[None]
    side = side_info(torch.tensor([n]), torch.tensor([qp]), torch.float32)
    for node in g.nodes:
        p = node.params
        if node.op == INPUT:
            continue
        if node.op == NORMALISE:
            x, dev = normalise_canvas(x)
            side = torch.cat([side, (torch.log2(dev * DEVIATION_SCALE) / 8.0)[:, None]], 1)
        elif node.op == AVG_POOL:
            x = F.adaptive_avg_pool2d(x, p[0]) if x.shape[-1] > p[0] else x
        elif node.op == CONV2D:
            x = F.conv2d(x, t(p[0]), t(p[1]), padding=p[2], groups=p[3])
        elif node.op == RELU:
            x = torch.relu(x)
        elif node.op == SPP_MAX:
            x = torch.cat([F.adaptive_max_pool2d(x, k).flatten(1) for k in p], 1)
        elif node.op == DENSE:
            x = F.linear(torch.cat([x, side], 1) if p[2] else x, t(p[0]), t(p[1]))
        elif node.op == HEADS:
            if n not in BLOCK_SIZES:
                raise CodecnnError(f"block size {n}: the heads cover {BLOCK_SIZES}")
            i = BLOCK_SIZES.index(n)
            x = F.linear(torch.cat([x, side], 1), t(p[2 * i]), t(p[2 * i + 1]))
        else:
            raise CodecnnError(f"op {node.op} is not part of a mode network")
    return x[0].numpy()


def export_modenet(checkpoint, out) -> tuple:
    """Write a mode-network checkpoint (``task`` intra-modes) as a version 3 float32 ``.cnnw`` file; returns
    ``(path, graph)``."""
    from codecnn.train.checkpoint import load_model
    from hm_bridge.format import write_cnnw

    model, ckpt = load_model(checkpoint, task="intra-modes")
    if ckpt["arch"] != "modenet":
        raise CodecnnError(f"{checkpoint}: no .cnnw export for architecture {ckpt['arch']!r}")
    g = graph_from_modenet(model)
    g.header["checkpoint_step"] = ckpt.get("step")
    return write_cnnw(g, out), g


# The flags HM is built with (patch_hm.RELEASE_CPPFLAGS less the warnings): the C++ timed as HM runs it.
BENCH_FLAGS = ("-std=c++11", "-O3", "-mavx2", "-mfma", "-ffp-contract=off")


def bench_cpp(model, sizes=(4, 8, 16, 32), reps: int = 20000, cxx: str = "g++", build_dir=None) -> dict:
    """Time ``cnnw_modenet.h`` on one thread: builds ``cnnw_modenet_tool`` with HM's flags and runs its
    ``bench``; returns ``{N: {"wall_us", "cpu_us", "macs"}}`` per block (CPU time: the process's own, which
    excludes the time a loaded machine gives other processes)."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    if shutil.which(cxx) is None:
        raise CodecnnError(f"{cxx} is not installed: the C++ benchmark needs a compiler")
    cpp = Path(__file__).resolve().parent / "cpp"
    with tempfile.TemporaryDirectory(dir=build_dir) as d:
        exe = Path(d) / "cnnw_modenet_tool"
        subprocess.run([cxx, *BENCH_FLAGS, "-o", str(exe), str(cpp / "cnnw_modenet_tool.cpp")], check=True)
        out = {}
        for n in sizes:
            r = subprocess.run([str(exe), "bench", str(model), str(n), str(reps)], capture_output=True, text=True)
            if r.returncode:
                raise CodecnnError(r.stderr.strip() or f"cnnw_modenet_tool failed ({r.returncode})")
            _, wall, cpu, macs = r.stdout.split()[:4]
            out[n] = {"wall_us": float(wall), "cpu_us": float(cpu), "macs": int(macs)}
    return out
