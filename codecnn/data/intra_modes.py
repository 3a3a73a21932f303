"""The HDF5 schema and writer of an intra-mode dataset (``make-dataset --task intra-modes``).

One group per block size, ``n4``, ``n8``, ``n16``, ``n32``; in each, sample ``i`` of every array is one
N x N block on the N grid of a frame:

=========  ======================  =========================================================================
key        dtype, shape            meaning
=========  ======================  =========================================================================
orig       u8/u16 (B, 2N+1, 2N+1)  the original around the block: rows y-1..y+2N-1, columns x-1..x+2N-1
                                   (the area of the 2N+1 top and 2N left reference samples); the block is
                                   at [1:N+1, 1:N+1]; samples outside the picture are edge-replicated
ref        int16 (B, 4N+1)         the raw reference samples the labels used, linear order: left column
                                   bottom to top, corner, top row left to right; -1 = unavailable
costs      float32 (B, 35)         the label cost of every mode (DCT-SATD unless ``cost`` says otherwise)
best       int8 (B,)               the mode of lowest cost (ties: the lowest mode number)
rank       int8 (B, 35)            the rank of every mode (0 = best)
hadamard   int32 (B, 35)           HM's Hadamard SATD (for the rough-mode-decision baseline)
qp         int8 (B,)               QP of the reconstruction the references came from (-1: open loop)
frame      int32 (B,)              frame index in the source
pos        int32 (B, 2)            (y, x) of the block
seq        int16 (B,)              index into ``meta/sequences``
split      uint8 (B,)              0 train, 1 val, 2 test (by sequence)
bit_depth  uint8 (B,)
=========  ======================  =========================================================================

File attributes as the CTU datasets (:mod:`codecnn.data.schema`) with ``kind = "intra-modes"``, plus
``cost``, ``loop`` (closed: references from the decoded reconstruction; open: from the original),
``block_sizes``, ``num_samples``, ``sample_dtype``; the same ``meta`` group and ``bitstreams``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from codecnn.data import schema

KIND = "intra-modes"
COLUMNS = {  # name -> (dtype, trailing shape as a function of N)
    "ref": ("i2", lambda n: (4 * n + 1,)),
    "costs": ("f4", lambda n: (35,)),
    "best": ("i1", lambda n: ()),
    "rank": ("i1", lambda n: (35,)),
    "hadamard": ("i4", lambda n: (35,)),
    "qp": ("i1", lambda n: ()),
    "frame": ("i4", lambda n: ()),
    "pos": ("i4", lambda n: (2,)),
    "seq": ("i2", lambda n: ()),
    "split": ("u1", lambda n: ()),
    "bit_depth": ("u1", lambda n: ()),
}


def _append(group, name: str, data: np.ndarray) -> None:
    if name not in group:
        group.create_dataset(
            name,
            data=data,
            maxshape=(None, *data.shape[1:]),
            chunks=(min(4096, max(1, len(data))), *data.shape[1:]),
            compression="gzip",
            compression_opts=1,
            shuffle=data.dtype.itemsize > 1,
        )
    else:
        d = group[name]
        n = d.shape[0]
        d.resize(n + len(data), axis=0)
        d[n:] = data


def context_patches(plane: np.ndarray, pos: np.ndarray, n: int) -> np.ndarray:
    """(B, 2N+1, 2N+1) patches at (y-1, x-1), edge-replicated outside the picture."""
    h, w = plane.shape
    k = np.arange(-1, 2 * n)
    ys = np.clip(pos[:, 0:1] + k, 0, h - 1)
    xs = np.clip(pos[:, 1:2] + k, 0, w - 1)
    return plane[ys[:, :, None], xs[:, None, :]]


def write_frame_labels(
    h5, orig: np.ndarray, ref: np.ndarray, bit_depth: int, qp: int, frame: int, seq: int, split: int, options
) -> int:
    """Label every block of every size of one frame and append the rows to the shard ``h5``."""
    from codecnn.intra_labels import label_blocks

    total = 0
    for n in options.block_sizes:
        lab = label_blocks(orig, ref, n, bit_depth, options.intra_cost)
        b = len(lab.pos)
        if b == 0:
            continue
        g = h5.require_group(f"n{n}")
        rows = {
            "ref": lab.ref.astype(np.int16),
            "costs": lab.costs,
            "best": lab.best,
            "rank": lab.rank,
            "hadamard": lab.hadamard,
            "qp": np.full(b, qp, np.int8),
            "frame": np.full(b, frame, np.int32),
            "pos": lab.pos,
            "seq": np.full(b, seq, np.int16),
            "split": np.full(b, split, np.uint8),
            "bit_depth": np.full(b, bit_depth, np.uint8),
        }
        _append(g, "orig", context_patches(orig, lab.pos, n))
        for name, (dt, _) in COLUMNS.items():
            _append(g, name, rows[name].astype(dt, copy=False))
        total += b
    return total


def merge_shards(shards: list[str], out: Path, options, seq_meta: list, encoder: dict) -> list[dict]:
    """Concatenate the shards' groups into ``out`` (via ``out.tmp``); returns the unit records."""
    import h5py

    tmp = out.with_name(out.name + ".tmp")
    records, counts = [], {}
    dtype = "u1"
    try:
        with h5py.File(tmp, "w") as dst:
            streams = dst.create_group("bitstreams")
            for path in shards:
                with h5py.File(path, "r") as src:
                    rec = json.loads(src.attrs["unit"])
                    for name in src:
                        if name.startswith("n") and isinstance(src[name], h5py.Group):
                            g = dst.require_group(name)
                            for key in src[name]:
                                _append(g, key, src[name][key][()])
                            counts[name] = g["best"].shape[0]
                            dtype = src[name]["orig"].dtype.str
                    if "bitstream" in src:
                        streams.create_dataset(f"{rec['seq']}_qp{rec['qp']}", data=src["bitstream"][()])
                    records.append(rec)
            if records and "encoder" in records[0]:
                encoder = records[0]["encoder"]
            schema.set_attrs(
                dst, 64, 0, kind=KIND, sequences=seq_meta, encoder=encoder, units=records, build=options.to_json()
            )
            dst.attrs["cost"] = options.intra_cost
            dst.attrs["loop"] = options.intra_loop
            dst.attrs["block_sizes"] = list(options.block_sizes)
            dst.attrs["num_samples"] = int(sum(counts.values()))
            dst.attrs["sample_dtype"] = dtype
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return records
