"""The int16 fixed-point network and its integer Python twin (the definition of the exact output).

An in-loop filter must give the same picture in the encoder and the decoder on any machine, so the
int16 variant is defined in integers only, in the manner of JVET's SADL:

* every tensor of samples ("activation") is int16 with a power-of-two scale: value = a / 2^q, one q per
  graph node; nodes that are concatenated share their q (it is chosen for the group);
* weights are int16 with a per-tensor q_w; biases int32 at scale q_w + q_in;
* a convolution accumulates ``bias + sum(w * a)`` in **int32 with two's-complement wrap-around** (the
  sum is then independent of the order of the terms, so any loop order gives the same bits), then
  rescales to its output q by :func:`shift_round` and saturates to int16;
* ``shift_round(v, s)`` = ``(v + 2^(s-1)) >> s`` (arithmetic shift, computed in 64 bits) for s > 0,
  ``v << -s`` for s <= 0; saturation clamps to [-32768, 32767];
* the input sample s (bit depth b, peak P = 2^b - 1) enters as ``(s * 2^q_in + P // 2) // P``; the
  output sample is ``clip((v * P + 2^(q_in-1)) >> q_in, 0, P)`` with ``v = centre + residual`` at q_in.

The C++ side (``hm_bridge/cpp/cnnw.h``, precision 1) implements the same rules; the tests hold the two
equal sample for sample. Scales come from calibration on real CTUs (:func:`quantise_graph`).
"""

from __future__ import annotations

import numpy as np

from codecnn.data.ctu import tile_plane
from codecnn.errors import CodecnnError
from codecnn.hevc import QP_SCALE
from codecnn.yuv import sample_peak
from hm_bridge.format import ADD, CONCAT, CONV2D, CROP, INPUT, QP_PLANE, RELU, Graph, run_graph

I16_MIN, I16_MAX = -32768, 32767
HEADROOM = 1.5  # calibrated range x this must fit in int16
MAX_Q = 14


def shift_round(v: np.ndarray, s: int) -> np.ndarray:
    """Rescale integers by 2^-s with round-half-up (see the module docstring); int64 in, int64 out."""
    v = np.asarray(v, np.int64)
    if s > 0:
        return (v + (1 << (s - 1))) >> s
    return v << (-s)


def sat16(v: np.ndarray) -> np.ndarray:
    return np.clip(v, I16_MIN, I16_MAX).astype(np.int16)


def q_for(max_abs: float, limit: int = I16_MAX) -> int:
    """The most fractional bits that keep ``max_abs * HEADROOM`` inside ``limit``."""
    if max_abs <= 0:
        return MAX_Q
    return int(max(0, min(MAX_Q, np.floor(np.log2(limit / (max_abs * HEADROOM))))))


# --------------------------------------------------------------------------------------------------
# choosing the scales


def calibrate(g: Graph, tiles: np.ndarray, qps) -> list[float]:
    """Max |value| of every node over float runs of the graph on calibration tiles (N x side x side)."""
    peaks = [0.0] * len(g.nodes)

    def record(i, v):
        peaks[i] = max(peaks[i], float(v.abs().max()))

    for tile, qp in zip(tiles, qps, strict=False):
        run_graph(g, np.asarray(tile, np.float32)[None], qp, on_node=record)
    return peaks


def _groups(g: Graph) -> list[int]:
    """Union-find of the nodes that must share a scale (concat members, ReLU/crop/QP plane and input)."""
    parent = list(range(len(g.nodes)))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a, b):
        parent[find(a)] = find(b)

    for i, n in enumerate(g.nodes):
        if n.op in (CONCAT,):
            for k in n.inputs:
                union(i, k)
        elif n.op in (RELU, CROP, QP_PLANE):
            union(i, n.inputs[0])
    return [find(i) for i in range(len(g.nodes))]


def quantise_graph(g: Graph, tiles: np.ndarray, qps) -> Graph:
    """An int16 graph: weights, biases and per-node scales from calibration tiles of real CTUs."""
    peaks = calibrate(g, tiles, qps)
    groups = _groups(g)
    group_q: dict[int, int] = {}
    for i, root in enumerate(groups):
        group_q[root] = min(group_q.get(root, MAX_Q), q_for(peaks[i]))
    node_q = [group_q[groups[i]] for i in range(len(g.nodes))]
    q = Graph(dict(g.header, precision="int16"))
    q.tensor_q = []  # type: ignore[attr-defined]
    for i, n in enumerate(g.nodes):
        params = list(n.params)
        if n.op == CONV2D:
            w, b = g.tensors[params[0]], g.tensors[params[1]]
            qw = q_for(float(np.abs(w).max()), I16_MAX)
            qin = node_q[n.inputs[0]]
            wq = np.clip(np.rint(w * 2.0**qw), I16_MIN, I16_MAX).astype(np.int16)
            bq = np.clip(np.rint(b.astype(np.float64) * 2.0 ** (qw + qin)), -(2**31), 2**31 - 1).astype(np.int32)
            params[0], params[1] = _add_tensor(q, wq, qw), _add_tensor(q, bq, qw + qin)
        q.nodes.append(type(n)(n.op, list(n.inputs), params + [node_q[i]]))
    return q


def _add_tensor(g: Graph, t: np.ndarray, frac: int) -> int:
    g.tensors.append(t)
    g.tensor_q.append(frac)  # type: ignore[attr-defined]
    return len(g.tensors) - 1


# --------------------------------------------------------------------------------------------------
# the integer twin


def _conv_int(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int, groups: int) -> np.ndarray:
    """int32 wrap-around convolution: (Cin, H, W) int16, (Cout, Cin/g, k, k) int16 -> (Cout, H', W') int32."""
    cin, h, wd = x.shape
    cout, cg, k, _ = w.shape
    xp = np.pad(x.astype(np.int32), ((0, 0), (pad, pad), (pad, pad)))
    oh, ow = h + 2 * pad - k + 1, wd + 2 * pad - k + 1
    out = np.empty((cout, oh, ow), np.int32)
    og = cout // groups
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))  # (Cin, oh, ow, k, k)
    with np.errstate(over="ignore"):
        for gi in range(groups):
            cols = win[gi * cg : (gi + 1) * cg].transpose(1, 2, 0, 3, 4).reshape(oh * ow, cg * k * k)
            wm = w[gi * og : (gi + 1) * og].reshape(og, cg * k * k).astype(np.int32)
            acc = cols @ wm.T  # int32 matmul: modular arithmetic, order-independent
            out[gi * og : (gi + 1) * og] = (acc + b[gi * og : (gi + 1) * og].astype(np.int32)).T.reshape(og, oh, ow)
    return out


def run_int_graph(g: Graph, samples: np.ndarray, bit_depth: int, qp: int = 0) -> np.ndarray:
    """The exact output samples of an int16 graph on one tile of integer samples (side x side)."""
    peak = sample_peak(bit_depth)
    tq = g.tensor_q  # type: ignore[attr-defined]
    vals: list[np.ndarray] = []
    qs: list[int] = []
    for n in g.nodes:
        qo = n.params[-1]
        ins = [vals[k] for k in n.inputs]
        if n.op == INPUT:
            v = sat16((np.asarray(samples, np.int64)[None] * (1 << qo) + peak // 2) // peak)
        elif n.op == QP_PLANE:
            v = np.full_like(ins[0][:1], sat16(np.array((qp * (1 << qo) + QP_SCALE // 2) // QP_SCALE)))
        elif n.op == CONCAT:
            v = np.concatenate(ins, 0)
        elif n.op == CONV2D:
            wi, bi, pad, groups = n.params[:4]
            acc = _conv_int(ins[0], g.tensors[wi], g.tensors[bi], pad, groups)
            v = sat16(shift_round(acc, tq[wi] + qs[n.inputs[0]] - qo))
        elif n.op == RELU:
            v = np.maximum(ins[0], 0).astype(np.int16)
        elif n.op == ADD:
            a = shift_round(ins[0], qs[n.inputs[0]] - qo)
            b = shift_round(ins[1], qs[n.inputs[1]] - qo)
            v = sat16(a + b)
        elif n.op == CROP:
            k = n.params[0]
            v = ins[0][:, k:-k, k:-k]
        else:  # pragma: no cover
            raise CodecnnError(f"unknown op {n.op}")
        vals.append(v)
        qs.append(qo)
    c = int(g.header["context"])
    q_in = qs[0]
    centre = vals[0][0, c : -c or None, c : -c or None].astype(np.int64)
    res = shift_round(vals[-1][0], qs[-1] - q_in)
    v = centre + res
    return np.clip((v * peak + (1 << (q_in - 1))) >> q_in, 0, peak)


def filter_plane_int(g: Graph, plane: np.ndarray, bit_depth: int, qp: int = 0, ctu: int = 128) -> np.ndarray:
    """An int16 graph on a luma plane, CTU by CTU with edge-replicated context (as ``cnnw.h``)."""
    return tile_plane(
        plane, ctu, int(g.header["context"]), lambda tiles: [run_int_graph(g, t, bit_depth, qp) for t in tiles]
    )
