"""The ``.cnnw`` weight file: a trained network as a small graph of operations, for HM's C++.

The C++ reader is ``hm_bridge/cpp/cnnw.h``; both sides must change together (the op enum and the
field order below are mirrored there, and each file points at the other). Little-endian throughout.

File layout (version 2; version 3 is the same layout, for the mode network's ops)::

    char[4]  magic "CNNW"
    u32      version (2 restoration, 3 mode network)
    u32      CRC-32 of every byte after this field (file offset 12 to the end): zlib's CRC-32 (polynomial
             0xEDB88320 reflected, as ``zlib.crc32``), checked by both readers before anything else is read
    u32      precision: 0 = float32, 1 = int16 fixed point (the rules: hm_bridge/fixed.py; a mode network's
             own steps, normalisation, pooling and side inputs in integers: hm_bridge/modenet.py)
    u32      header length H, then H bytes of UTF-8 JSON: {"arch", "config", "context", "codecnn_version"}
    u32      tensor count T, then T tensors:
               u32 ndim, u32 dims[ndim], then
               float32: prod(dims) float32 values
               int16:   i32 frac (power-of-two scale), u32 dtype (1 int16, 2 int32), prod(dims) values
    u32      node count K, then K nodes:
               u32 op, u32 n_inputs, u32 inputs[n_inputs] (earlier node ids), u32 n_params, i32 params[n_params]

In int16 files every node has one more parameter, last: the fractional bits of its output.

The checksum covers the header, every tensor and every node, so a file altered or truncated after export
(a flipped bit in a weight included: CRC-32 detects every 1-bit error, every burst up to 32 bits and all
but 1 in 2^32 others) is refused as damaged by ``read_cnnw`` and by ``cnnw.h``, instead of filtering with
wrong weights. The checksum is exposed (``Graph.crc32`` here, ``Model::checksum()`` in C++, printed by
``cnnw_tool`` and by HM's glue at load) so the encoder's and the decoder's model can be compared.

Version 3 (``MODES_VERSION``) is version 2's layout holding a mode network (``arch`` "modenet", ops 7-11,
:mod:`hm_bridge.modenet`): a reader of version 2 refuses it by its version, so a mode network given as a luma
filter (or a luma filter as a mode network) is refused with one line that says which it is.
A mode network is float32 or int16 (precision 1, ``codecnn export --int16``); a reader that runs float32 mode
networks only refuses an int16 one by its precision field with one line.

Version 1 is version 2 without the checksum field (precision follows the version). Both readers still
read it, with a warning that names the file and asks to re-export it; the writer writes version 2 only.

Node 0 is always INPUT (the reconstructed luma tile in [0, 1], 1 x (S+2c) x (S+2c)). The last node is the
residual (1 x S x S); the filtered tile is ``clip(round((centre + residual) * peak))``, with ``centre``
the input cropped by ``context``.

Ops and their params:

=========  ==  =====================================================================================
INPUT      0   ()
QP_PLANE   1   ()                      a 1-channel plane of QP / 51, the size of its input node
CONCAT     2   ()                      inputs concatenated along channels
CONV2D     3   (weight, bias, pad, groups)   tensor ids of weight (Cout, Cin/groups, k, k) and bias
                                        (Cout,); zero padding ``pad`` on every side; stride 1
RELU       4   ()
ADD        5   ()                      two inputs of equal shape
CROP       6   (border,)               removes ``border`` samples on every side
NORMALISE  7   ()                      mode network: the canvas normalised (``modenet.normalise_canvas``)
AVG_POOL   8   (size,)                 adaptive average pooling to size x size (when larger)
SPP_MAX    9   (levels...)             adaptive max pooling to each level, flattened and concatenated
DENSE      10  (weight, bias, side)    fully connected; side 1: the side inputs appended to its input
HEADS      11  (w4, b4, w8, b8, w16, b16, w32, b32)   one DENSE with side inputs per block size 4..32
=========  ==  =====================================================================================

Ops 7-11 appear only in version 3 files (the mode network: node 0 is its canvas, 3 x (2N+1) x (2N+1),
the last node its 35 logits; see :mod:`hm_bridge.modenet`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from codecnn.errors import CodecnnError
from codecnn.files import atomic_write_bytes
from codecnn.hevc import QP_SCALE

log = logging.getLogger(__name__)

MAGIC = b"CNNW"
VERSION = 2  # written for restoration networks; read: VERSION, MODES_VERSION and LEGACY_VERSIONS
MODES_VERSION = 3  # written for mode networks (ops NORMALISE..HEADS); version 2's layout
LEGACY_VERSIONS = (1,)  # read with a warning (no checksum)
CHECKED_FROM = 12  # the CRC-32 (at offset 8) covers the bytes from this offset to the end
FLOAT32, INT16 = 0, 1

# op enum: mirrored in hm_bridge/cpp/cnnw_format.h (enum Op)
INPUT, QP_PLANE, CONCAT, CONV2D, RELU, ADD, CROP, NORMALISE, AVG_POOL, SPP_MAX, DENSE, HEADS = range(12)
OP_NAMES = (
    *("INPUT", "QP_PLANE", "CONCAT", "CONV2D", "RELU", "ADD", "CROP"),
    *("NORMALISE", "AVG_POOL", "SPP_MAX", "DENSE", "HEADS"),
)
MODE_OPS = (NORMALISE, AVG_POOL, SPP_MAX, DENSE, HEADS)
MAX_DIMS, MAX_TENSOR_VALUES, MAX_NODES, MAX_HEADER = 4, 1 << 26, 1 << 16, 1 << 20


@dataclass
class Node:
    op: int
    inputs: list[int] = field(default_factory=list)
    params: list[int] = field(default_factory=list)


@dataclass
class Graph:
    """A network as tensors and nodes (see the module docstring). ``version`` and ``crc32`` are those of the
    file it was read from or last written to (``crc32`` None: a version 1 file, or a graph never written)."""

    header: dict
    tensors: list[np.ndarray] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    version: int = VERSION
    crc32: int | None = None

    def add_tensor(self, t) -> int:
        self.tensors.append(np.ascontiguousarray(np.asarray(t, np.float32)))
        return len(self.tensors) - 1

    def add(self, op: int, inputs=(), params=()) -> int:
        self.nodes.append(Node(op, list(inputs), [int(p) for p in params]))
        return len(self.nodes) - 1


def graph_from_rdn(model) -> Graph:
    """The graph of a :class:`codecnn.models.RDN` (the order the C++ side evaluates it in)."""
    from torch import nn

    from codecnn import __version__

    cfg = model.config
    g = Graph({"arch": "rdn", "config": dict(cfg.__dict__), "context": model.context, "codecnn_version": __version__})

    def conv(x: int, m: nn.Module) -> int:
        if isinstance(m, nn.Sequential):  # separable: depthwise then pointwise
            for sub in m:
                x = conv(x, sub)
            return x
        w = g.add_tensor(m.weight.detach().cpu().numpy())
        b = g.add_tensor(m.bias.detach().cpu().numpy())
        return g.add(CONV2D, [x], [w, b, m.padding[0], m.groups])

    x = g.add(INPUT)
    if cfg.qp_map:
        x = g.add(CONCAT, [x, g.add(QP_PLANE, [x])])
    f1 = conv(x, model.sfe1)
    h = conv(f1, model.sfe2)
    outs = []
    for block in model.blocks:
        feats = [h]
        for layer in block.layers:
            cat = feats[0] if len(feats) == 1 else g.add(CONCAT, feats)
            feats.append(g.add(RELU, [conv(cat, layer[0])]))
        fused = conv(g.add(CONCAT, feats), block.fusion)
        h = g.add(ADD, [h, fused])
        outs.append(h)
    gff = conv(conv(g.add(CONCAT, outs), model.gff[0]), model.gff[1])
    skip = g.add(CROP, [f1], [model.head_crop]) if model.head_crop else f1
    conv(g.add(ADD, [gff, skip]), model.last)  # the global residual, then the last convolution
    return g


def write_cnnw(graph: Graph, path: str | os.PathLike) -> Path:
    """Write ``graph`` as a version 2 ``.cnnw`` file (version 3 when it holds the mode network's ops), float32
    or (a graph from ``fixed.quantise_graph``) int16, via a temporary file and a rename; sets
    ``graph.version`` and ``graph.crc32`` to the file's."""
    p = Path(path)
    buf = io.BytesIO()  # everything after the checksum field
    fixed = hasattr(graph, "tensor_q")
    head = json.dumps(graph.header, sort_keys=True).encode()
    buf.write(struct.pack("<II", INT16 if fixed else FLOAT32, len(head)) + head)
    buf.write(struct.pack("<I", len(graph.tensors)))
    for i, t in enumerate(graph.tensors):
        buf.write(struct.pack(f"<I{t.ndim}I", t.ndim, *t.shape))
        if fixed:
            code = 1 if t.dtype == np.int16 else 2
            buf.write(struct.pack("<iI", graph.tensor_q[i], code))
            buf.write(t.astype("<i2" if code == 1 else "<i4").tobytes())
        else:
            buf.write(t.astype("<f4").tobytes())
    buf.write(struct.pack("<I", len(graph.nodes)))
    for n in graph.nodes:
        buf.write(struct.pack(f"<II{len(n.inputs)}I", n.op, len(n.inputs), *n.inputs))
        buf.write(struct.pack(f"<I{len(n.params)}i", len(n.params), *n.params))
    payload = buf.getvalue()
    crc = zlib.crc32(payload)
    version = MODES_VERSION if any(n.op in MODE_OPS for n in graph.nodes) else VERSION
    out = atomic_write_bytes(p, MAGIC + struct.pack("<II", version, crc) + payload)
    graph.version, graph.crc32 = version, crc
    return out


class _Reader:
    def __init__(self, data: bytes, path: str):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise CodecnnError(f"{self.path}: truncated .cnnw file (needs {n} bytes at offset {self.pos})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self, count: int = 1):
        v = struct.unpack(f"<{count}I", self.take(4 * count))
        return v[0] if count == 1 else list(v)


def read_cnnw(path: str | os.PathLike) -> Graph:
    """Read and check a ``.cnnw`` file: the checksum first (a mismatch: the file is damaged), then every
    count and index, as in the C++ reader. A version 1 file (no checksum) is read with a logged warning."""
    p = Path(path)
    if not p.is_file():
        raise CodecnnError(f"{p}: no such model file")
    data = p.read_bytes()
    r = _Reader(data, str(p))
    if r.take(4) != MAGIC:
        raise CodecnnError(f"{p}: not a .cnnw file (bad magic)")
    version = r.u32()
    if version not in (VERSION, MODES_VERSION) and version not in LEGACY_VERSIONS:
        known = ", ".join(map(str, (*LEGACY_VERSIONS, VERSION, MODES_VERSION)))
        raise CodecnnError(f"{p}: .cnnw version {version}; this reader knows versions {known}")
    crc = None
    if version >= 2:
        crc = r.u32()
        actual = zlib.crc32(data[CHECKED_FROM:])
        if actual != crc:
            raise CodecnnError(
                f"{p}: the file is damaged: its CRC-32 is {actual:#010x} but {crc:#010x} was written with it "
                "(altered or truncated after export); export the model again or copy it again"
            )
    precision, hlen = r.u32(2)
    if precision not in (FLOAT32, INT16):
        raise CodecnnError(f"{p}: precision {precision} is not supported by this reader")
    if hlen > MAX_HEADER:
        raise CodecnnError(f"{p}: header length {hlen} is out of range")
    try:
        header = json.loads(r.take(hlen).decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CodecnnError(f"{p}: damaged header") from None
    arch = header.get("arch") if isinstance(header, dict) else None
    if (version == MODES_VERSION) != (arch == "modenet"):
        held = f"version {MODES_VERSION} holds mode networks" if version == MODES_VERSION else f"version {version}"
        raise CodecnnError(f"{p}: .cnnw {held}, but this file holds {arch!r}: damaged or mislabelled")
    g = Graph(header, version=version, crc32=crc)
    if precision == INT16:
        g.tensor_q = []  # type: ignore[attr-defined]
    for _ in range(r.u32()):
        ndim = r.u32()
        if not 1 <= ndim <= MAX_DIMS:
            raise CodecnnError(f"{p}: tensor with {ndim} dimensions")
        dims = [r.u32()] if ndim == 1 else r.u32(ndim)
        count = int(np.prod(dims, dtype=np.int64))
        if count > MAX_TENSOR_VALUES:
            raise CodecnnError(f"{p}: tensor of {count} values is out of range")
        if precision == INT16:
            frac, code = struct.unpack("<iI", r.take(8))
            if code not in (1, 2) or not -32 <= frac <= 62:
                raise CodecnnError(f"{p}: bad int16 tensor record")
            size, dt = (2, "<i2") if code == 1 else (4, "<i4")
            g.tensors.append(np.frombuffer(r.take(size * count), dt).reshape(dims).astype(dt[1:]))
            g.tensor_q.append(frac)  # type: ignore[attr-defined]
        else:
            g.tensors.append(np.frombuffer(r.take(4 * count), "<f4").reshape(dims).astype(np.float32))
    k = r.u32()
    if k > MAX_NODES:
        raise CodecnnError(f"{p}: {k} nodes is out of range")
    for i in range(k):
        op, ni = r.u32(2)
        if op >= len(OP_NAMES) or ni > MAX_NODES or (op in MODE_OPS and version != MODES_VERSION):
            raise CodecnnError(f"{p}: node {i} has an unknown op {op}")
        ins = ([r.u32()] if ni == 1 else r.u32(ni)) if ni else []
        if any(j >= i for j in ins):
            raise CodecnnError(f"{p}: node {i} reads a node that is not before it")
        npar = r.u32()
        params = list(struct.unpack(f"<{npar}i", r.take(4 * npar))) if npar else []
        g.nodes.append(Node(op, ins, params))
    if r.pos != len(data):
        raise CodecnnError(f"{p}: trailing bytes after the last node")
    if version in LEGACY_VERSIONS:
        log.warning(
            "%s: .cnnw version %d has no checksum, so damage to its weights cannot be detected; re-export it "
            "(codecnn export) to write version %d",
            p,
            version,
            VERSION,
        )
    return g


def run_graph(g: Graph, x: np.ndarray, qp: float = 0.0, on_node=None) -> np.ndarray:
    """Evaluate a float graph on one tile (C x H x W) - the readable reference of the C++ loop.
    ``on_node(i, value)`` sees every node's output (calibration uses it)."""
    import torch
    import torch.nn.functional as F

    vals: list = []
    for n in g.nodes:
        ins = [vals[i] for i in n.inputs]
        if n.op == INPUT:
            v = torch.from_numpy(np.asarray(x, np.float32))[None]
        elif n.op == QP_PLANE:
            v = torch.full_like(ins[0][:, :1], qp / QP_SCALE)
        elif n.op == CONCAT:
            v = torch.cat(ins, 1)
        elif n.op == CONV2D:
            w, b, pad, groups = n.params
            v = F.conv2d(
                ins[0], torch.from_numpy(g.tensors[w]), torch.from_numpy(g.tensors[b]), padding=pad, groups=groups
            )
        elif n.op == RELU:
            v = torch.relu(ins[0])
        elif n.op == ADD:
            v = ins[0] + ins[1]
        elif n.op == CROP:
            k = n.params[0]
            v = ins[0][:, :, k:-k, k:-k]
        else:  # pragma: no cover - rejected by the reader
            raise CodecnnError(f"unknown op {n.op}")
        vals.append(v)
        if on_node is not None:
            on_node(len(vals) - 1, v)
    return vals[-1][0].numpy()
