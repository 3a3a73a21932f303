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
from codecnn.yuv import sample_peak
from hm_bridge.fixed import I16_MAX, I16_MIN, _add_tensor, _conv_int, q_for, sat16, shift_round
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


def run_modenet_graph(g: Graph, canvas: np.ndarray, n: int, qp: int, on_node=None) -> np.ndarray:
    """The 35 logits of one block's canvas (3 x (2N+1) x (2N+1)) through a float mode-network graph: the
    readable reference of the C++ (``cnnw_modenet.h``), tested equal to PyTorch. ``on_node(i, value)`` sees
    every node's output (int16 calibration uses it)."""
    import torch
    import torch.nn.functional as F

    from codecnn.models.modenet import BLOCK_SIZES, DEVIATION_SCALE, normalise_canvas, side_info

    if g.header.get("arch") != "modenet":
        raise CodecnnError(f"a {g.header.get('arch')!r} graph is not a mode network")
    if hasattr(g, "tensor_q"):
        raise CodecnnError("an int16 mode network runs on integer samples: use run_modenet_int")
    t = lambda i: torch.from_numpy(g.tensors[i])  # noqa: E731
    x = torch.from_numpy(np.asarray(canvas, np.float32))[None]
    side = side_info(torch.tensor([n]), torch.tensor([qp]), torch.float32)
    for i, node in enumerate(g.nodes):
        p = node.params
        if node.op == INPUT:
            pass
        elif node.op == NORMALISE:
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
            h = BLOCK_SIZES.index(n)
            x = F.linear(torch.cat([x, side], 1), t(p[2 * h]), t(p[2 * h + 1]))
        else:
            raise CodecnnError(f"op {node.op} is not part of a mode network")
        if on_node is not None:
            on_node(i, x)
    return x[0].numpy()


def export_modenet(checkpoint, out, int16: bool = False, calib=None) -> tuple:
    """Write a mode-network checkpoint (``task`` intra-modes) as a version 3 ``.cnnw`` file, float32 or (``int16``)
    int16 fixed point; returns ``(path, graph, report)``. An int16 export calibrates on real blocks of a mode
    dataset (``calib``, else the checkpoint's training dataset; val split first; refused without one): half of
    the blocks set the scales, the other half measure the int16 ranking against the float one
    (:func:`agreement`, the report, also kept in the file's header as ``int16_report``). A float export: no
    report (None)."""
    from pathlib import Path

    from codecnn.train.checkpoint import load_model
    from hm_bridge.format import write_cnnw

    model, ckpt = load_model(checkpoint, task="intra-modes")
    if ckpt["arch"] != "modenet":
        raise CodecnnError(f"{checkpoint}: no .cnnw export for architecture {ckpt['arch']!r}")
    g = graph_from_modenet(model)
    g.header["checkpoint_step"] = ckpt.get("step")
    if not int16:
        return write_cnnw(g, out), g, None
    data = calib or (ckpt.get("dataset") or {}).get("path")
    if not data or not Path(data).is_file():
        raise CodecnnError(
            "int16 export of a mode network needs real blocks to calibrate on: pass --calib MODES.h5 "
            "(a dataset of codecnn make-dataset --task intra-modes)"
        )
    blocks = calibration_blocks(data)
    q = quantise_modenet(g, [(fc, n, qp) for _, fc, n, qp, _ in blocks[0::2]])
    report = {**agreement(g, q, blocks[1::2]), "calibration_blocks": len(blocks[0::2]), "calibration": str(data)}
    q.header["int16_report"] = report
    return write_cnnw(q, out), q, report


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


# --------------------------------------------------------------------------------------------------
# int16 fixed point: the integer rules and their numpy twin (hm_bridge/cpp/cnnw_modenet_int16.h gives the same
# logits bit for bit; tests/test_modenet_cpp.py holds the two equal)
#
# The RDN's rules (hm_bridge/fixed.py) where the ops are the same: every node's output is int16 with a
# power-of-two scale q (its last parameter in the file); weights int16 at a per-tensor q_w, biases int32 at
# q_w + q_in; a convolution or dense layer accumulates bias + sum(w * a) in int32 with two's-complement
# wrap-around, then shift_round(acc, q_w + q_in - q_out) and saturation to int16. The mode network's own
# steps, in integers (Python's // is the floor division; round_div(a, b) = (2a + b) // (2b), b > 0):
#
# * input: the canvas of integer samples (channel 0 the block, channel 1 the references, 0 where unavailable;
#   channel 2 the availability, 0/1; codecnn.data.intra.canvas with peak 1), bit depth b, P = 2^b - 1;
# * without NORMALISE: channels 0, 1 as (s * 2^q + P // 2) // P (the RDN's input rule), channel 2 as a * 2^q;
# * NORMALISE: C = the available references' count; the mean is num / den, num = their sum and den = C
#   (C = 0: num = P, den = 2, i.e. P / 2); D = s * den - num for the block's samples and the available
#   references (exact); W = sum D^2 (int64) over both; M = N^2 + C; k = (62 - bitlen(W)) rounded down to
#   even, h = k / 2; r = max(isqrt((W << k) // M), ((2 * den * P) << h) // S), the deviation (clamped at two
#   8-bit steps, MIN_DEVIATION) in units of 2^-h / den samples; g = max(0, bitlen(r) - 32), then r >>= g and
#   h -= g (r of at most 32 bits; only clamped deviations have more); with e = bitlen(r) and the reciprocal
#   R = 2^(e+30) // r, each value becomes shift_round((D << h) * R, e + 30 - q) saturated to int16 (|D| 2^h
#   < 2^31 and R <= 2^30, so every step fits in int64); channel 2 as a * 2^q. The third side
#   input log2(deviation * S) / 8 is L = log2x(r) + log2x(S) - h * 2^16 - log2x(den) - log2x(P) at
#   16 fractional bits (log2x: the integer part from the bit length, then 16 fractional bits by repeated
#   squaring of a 31-bit mantissa, each truncated), given at scale q as shift_round(L, 19 - q);
# * AVG_POOL (adaptive, regions as PyTorch's): round_div(sum of the region, its area), q unchanged;
# * SPP_MAX: maxima, q unchanged; RELU: max(0, v), q unchanged;
# * side inputs at the q of the vector they are appended to: log2(N) / 5 as (log2(N) * 2^(q+1) + 5) // 10,
#   QP / 51 as (QP * 2^(q+1) + 51) // 102;
# * the output: 35 int16 logits at the last node's q (ties rank the lower mode first).

LOG_FRAC = 16  # fractional bits of the integer log2
DEV_SCALE = sample_peak(8)  # S: the float model's DEVIATION_SCALE (codecnn.models.modenet), an 8-bit peak
W_MAX_Q = 24  # weights: at most this many fractional bits (biases must also fit int32)
CALIB_BLOCKS = 128  # per block size: calibration blocks, and as many others to measure the agreement on


def _round_div(a, b):
    return (2 * a + b) // (2 * b)


def log2_fixed(x: int) -> int:
    """log2(x) * 2^16 for an integer x >= 1, each fractional bit by squaring a 31-bit mantissa (truncated)."""
    e = int(x).bit_length() - 1
    m = int(x) << (30 - e) if e <= 30 else int(x) >> (e - 30)
    out = e << LOG_FRAC
    for bit in range(LOG_FRAC - 1, -1, -1):
        m = (m * m) >> 30
        if m >= 1 << 31:
            m >>= 1
            out |= 1 << bit
    return out


def normalise_int(c: np.ndarray, n: int, peak: int, q: int) -> tuple[np.ndarray, int]:
    """NORMALISE in integers (see above): the int16 canvas at scale q and the deviation side input L
    (log2(deviation * DEV_SCALE) / 8 at LOG_FRAC + 3 fractional bits)."""
    import math

    c = np.asarray(c, np.int64)
    side = 2 * n + 1
    av = c[2] != 0
    count = int(av.sum())
    num, den = (int(c[1][av].sum()), count) if count else (peak, 2)
    db = c[0, 1 : n + 1, 1 : n + 1] * den - num
    dr = np.where(av, c[1] * den - num, 0)
    w = sum(int(v) * int(v) for v in db.ravel()) + sum(int(v) * int(v) for v in dr[av])
    k = (62 - w.bit_length()) & ~1
    h = k // 2
    r = max(math.isqrt((w << k) // (n * n + count)), ((2 * den * peak) << h) // DEV_SCALE)
    g = max(0, r.bit_length() - 32)
    r, h = r >> g, h - g
    e = r.bit_length()
    recip = (1 << (e + 30)) // r
    out = np.zeros((3, side, side), np.int16)
    out[0, 1 : n + 1, 1 : n + 1] = sat16(shift_round((db << h) * recip, e + 30 - q))
    out[1] = sat16(shift_round((dr << h) * recip, e + 30 - q))
    out[2] = sat16(av.astype(np.int64) << q)
    dev = log2_fixed(r) + log2_fixed(DEV_SCALE) - (h << LOG_FRAC) - log2_fixed(den) - log2_fixed(peak)
    return out, dev


def side_ints(n: int, qp: int, dev: int | None, q: int) -> list[int]:
    """The side inputs at scale q (see above)."""
    s = [(int(np.log2(n)) * (1 << (q + 1)) + 5) // 10, (qp * (1 << (q + 1)) + 51) // 102]
    if dev is not None:
        s.append(int(shift_round(np.int64(dev), LOG_FRAC + 3 - q)))
    return s


def _regions(size: int, out: int):
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def _wrap32(v: np.ndarray) -> np.ndarray:
    return ((np.asarray(v, np.int64) + (1 << 31)) % (1 << 32)) - (1 << 31)


def _dense_int(x: np.ndarray, w: np.ndarray, b: np.ndarray, shift: int) -> np.ndarray:
    acc = _wrap32(w.astype(np.int64) @ x.astype(np.int64) + b.astype(np.int64))
    return sat16(shift_round(acc, shift))


def run_modenet_int(g: Graph, canvas: np.ndarray, n: int, qp: int, bit_depth: int = 8) -> np.ndarray:
    """The 35 int16 logits of an int16 mode-network graph on one block's integer canvas (3 x (2N+1)^2: samples,
    references, availability; see above): the definition of what ``cnnw_modenet.h`` computes."""
    from codecnn.models.modenet import BLOCK_SIZES
    from codecnn.yuv import sample_peak

    if g.header.get("arch") != "modenet":
        raise CodecnnError(f"a {g.header.get('arch')!r} graph is not a mode network")
    if not hasattr(g, "tensor_q"):
        raise CodecnnError("a float32 mode network: use run_modenet_graph")
    if n not in BLOCK_SIZES:
        raise CodecnnError(f"block size {n}: the mode network covers {BLOCK_SIZES}")
    tq = g.tensor_q
    peak = int(sample_peak(bit_depth))
    c = np.asarray(canvas, np.int64)
    x = None
    dev = None
    q = 0
    for node in g.nodes:
        p, qo = node.params, node.params[-1]
        if node.op == INPUT:
            x = np.zeros(c.shape, np.int16)
            x[:2] = sat16((c[:2] * (1 << qo) + peak // 2) // peak)
            x[2] = sat16((c[2] != 0).astype(np.int64) << qo)
        elif node.op == NORMALISE:
            x, dev = normalise_int(c, n, peak, qo)
        elif node.op == AVG_POOL:
            size = x.shape[-1]
            if size > p[0]:
                rg = _regions(size, p[0])
                x = np.array(
                    [[[_round_div(int(ch[y0:y1, x0:x1].astype(np.int64).sum()), (y1 - y0) * (x1 - x0)) for x0, x1 in rg]
                      for y0, y1 in rg] for ch in x],
                    np.int16,
                )  # fmt: skip
        elif node.op == CONV2D:
            acc = _conv_int(x, g.tensors[p[0]], g.tensors[p[1]], p[2], p[3])
            x = sat16(shift_round(acc, tq[p[0]] + q - qo))
        elif node.op == RELU:
            x = np.maximum(x, 0).astype(np.int16)
        elif node.op == SPP_MAX:
            parts = []
            for lv in p[:-1]:
                rg = _regions(x.shape[-1], lv)
                parts.append(
                    np.array([[x[:, y0:y1, x0:x1].max((1, 2)) for x0, x1 in rg] for y0, y1 in rg]).transpose(2, 0, 1)
                )
            x = np.concatenate([v.reshape(-1) for v in parts]).astype(np.int16)
        elif node.op in (DENSE, HEADS):
            i = 2 * BLOCK_SIZES.index(n) if node.op == HEADS else 0
            side = node.op == HEADS or p[2]
            v = np.concatenate([x, side_ints(n, qp, dev, q)]) if side else x
            x = _dense_int(v, g.tensors[p[i]], g.tensors[p[i + 1]], tq[p[i]] + q - qo)
        else:
            raise CodecnnError(f"op {node.op} is not part of a mode network")
        q = qo
    return x


def int_canvas(orig: np.ndarray, ref: np.ndarray, n: int) -> np.ndarray:
    """The integer canvas (see above) of blocks from a mode dataset's ``orig`` patches and ``ref`` rows."""
    from codecnn.data.intra import canvas

    ones = np.ones(orig.shape[:-2], np.float32) if orig.ndim > 2 else 1.0
    return np.rint(canvas(orig, ref, n, ones)).astype(np.int32)


def _q_weight(w: np.ndarray, b: np.ndarray | None, q_in: int) -> int:
    q = W_MAX_Q
    if np.abs(w).max() > 0:
        q = min(q, int(np.floor(np.log2(I16_MAX / float(np.abs(w).max())))))
    if b is not None and np.abs(b).max() > 0:
        q = min(q, int(np.floor(np.log2((2**31 - 1) / float(np.abs(b).max())))) - q_in)
    return q


def quantise_modenet(g: Graph, blocks) -> Graph:
    """An int16 mode-network graph from a float one: activation scales calibrated on real blocks ``blocks``
    (an iterable of (float canvas, n, qp)), the largest q whose range (x HEADROOM) holds the node's peak; a
    convolution or dense layer followed by a ReLU is scaled for its positive peak (negatives saturate, then
    the ReLU zeroes them). Weights: the most fractional bits that keep them in int16 (at most W_MAX_Q)."""
    peaks = [0.0] * len(g.nodes)

    def record(i, v):
        peaks[i] = max(peaks[i], float(v.abs().max()))

    for x, n, qp in blocks:
        run_modenet_graph(g, x, n, qp, on_node=record)
    nodes = g.nodes
    first = next(i for i, nd in enumerate(nodes) if nd.op == CONV2D)
    canvas_q = q_for(max(peaks[1:first] or peaks[:1]))
    node_q = []
    for i, nd in enumerate(nodes):
        if i < first:
            node_q.append(canvas_q)
        elif nd.op in (CONV2D, DENSE, HEADS):
            node_q.append(q_for(peaks[i + 1] if i + 1 < len(nodes) and nodes[i + 1].op == RELU else peaks[i]))
        else:  # RELU, SPP_MAX: the scale of their input
            node_q.append(node_q[-1])
    q = Graph(dict(g.header, precision="int16"))
    q.tensor_q = []  # type: ignore[attr-defined]
    for i, nd in enumerate(nodes):
        params = list(nd.params)
        if nd.op in (CONV2D, DENSE, HEADS):
            q_in = node_q[i - 1]
            for k in range(0, 2 if nd.op != HEADS else len(params), 2):
                w, b = g.tensors[params[k]], g.tensors[params[k + 1]]
                qw = _q_weight(w, b, q_in)
                wq = np.clip(np.rint(w.astype(np.float64) * 2.0**qw), I16_MIN, I16_MAX).astype(np.int16)
                bq = np.clip(np.rint(b.astype(np.float64) * 2.0 ** (qw + q_in)), -(2**31), 2**31 - 1).astype(np.int32)
                params[k], params[k + 1] = _add_tensor(q, wq, qw), _add_tensor(q, bq, qw + q_in)
        q.nodes.append(type(nd)(nd.op, list(nd.inputs), params + [node_q[i]]))
    return q


def top_modes(logits: np.ndarray, k: int) -> np.ndarray:
    """The k modes of highest logit, ties to the lower mode (as cnnw::topModes)."""
    return np.argsort(-np.asarray(logits, np.float64), kind="stable")[:k]


def calibration_blocks(path, per_size: int = 2 * CALIB_BLOCKS) -> list[tuple]:
    """Up to ``per_size`` blocks of each size (integer canvas, float canvas, n, qp, bit depth) spread over a
    mode dataset's val (else train) split."""
    import h5py

    from codecnn.data.intra import KIND, canvas, read_rows
    from codecnn.data.schema import SPLIT_CODES, open_dataset_info
    from codecnn.yuv import sample_peak

    open_dataset_info(path, kind=KIND)
    out = []
    with h5py.File(path, "r") as f:
        for name in sorted((k for k in f if k.startswith("n") and k[1:].isdigit()), key=lambda k: int(k[1:])):
            n, grp = int(name[1:]), f[name]
            split = grp["split"][()]
            rows = np.flatnonzero(split == SPLIT_CODES["val"])
            if len(rows) == 0:
                rows = np.flatnonzero(split == SPLIT_CODES["train"])
            if len(rows) == 0:
                rows = np.arange(len(split))
            rows = np.unique(rows[np.linspace(0, len(rows) - 1, min(per_size, len(rows))).astype(int)])
            orig, ref = read_rows(grp["orig"], rows), read_rows(grp["ref"], rows)
            qps, bds = read_rows(grp["qp"], rows).astype(int), read_rows(grp["bit_depth"], rows).astype(int)
            ic = int_canvas(orig, ref, n)
            fc = canvas(orig, ref, n, sample_peak(bds).astype(np.float32))
            out += [(ic[i], fc[i], n, int(qps[i]), int(bds[i])) for i in range(len(rows))]
    return out


def agreement(g: Graph, q: Graph, blocks, k: int = 10) -> dict:
    """How the int16 network's ranking agrees with the float one's on ``blocks`` (as calibration_blocks):
    top-1 equal, the float top-1 inside the int16 top-k, and the mean share of common top-k modes."""
    same = inside = 0
    overlap = 0.0
    for ic, fc, n, qp, bd in blocks:
        fl = run_modenet_graph(g, fc, n, qp)
        it = run_modenet_int(q, ic, n, qp, bd)
        tf, ti = top_modes(fl, k), top_modes(it, k)
        same += int(tf[0] == ti[0])
        inside += int(tf[0] in ti)
        overlap += len(set(tf.tolist()) & set(ti.tolist())) / k
    m = max(len(blocks), 1)
    return {"blocks": len(blocks), "top1_agree": same / m, f"float_top1_in_int_top{k}": inside / m,
            f"top{k}_overlap": overlap / m}  # fmt: skip
