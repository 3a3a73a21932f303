"""The CTU restoration task's data as ``make-dataset`` writes it: its HDF5 schema, the writer of a build
unit's shard and the merge of the shards. What training reads it with (the torch dataset, its sampler and
its in-memory cache) is :mod:`codecnn.data.restoration_dataset`.

Sample ``i`` of a file (all arrays share the first axis, in the same order):

=========  ===================  ===========================================================================
key        dtype, shape         meaning
=========  ===================  ===========================================================================
input      u8/u16 (N, S+2c,     reconstructed luma CTU with a ``c``-pixel context border on every side
           S+2c)                (132x132 for CTU 128, context 2); decoded from the real bitstream
target     u8/u16 (N, S, S)     original luma CTU (128x128), aligned with the centre of ``input``
qp         int8 (N,)            QP the picture was coded with (read back from the bitstream or HM's log)
bit_depth  uint8 (N,)           sample bit depth; normalise by ``(1 << bit_depth) - 1``
seq        int16 (N,)           index into the ``sequences`` attribute (name, source, split, geometry)
frame      int32 (N,)           frame index in the source sequence
pos        int32 (N, 2)         (y, x) of the CTU's top-left luma sample in the picture
valid      int16 (N, 2)         (h, w): rows/columns of ``target`` inside the picture
split      uint8 (N,)           0 train, 1 val, 2 test (the sequence's split: never mixed within a sequence)
slice_type uint8 (N,)           the picture's slice type: 0 B, 1 P, 2 I (H.265 Table 7-7)
poc        int32 (N,)           the picture's picture order count, from the bitstream (HM: its log)
layer      uint8 (N,)           depth in the coding hierarchy (random access: 0-3 in the GOP of 8; else 0)
=========  ===================  ===========================================================================

Frames are stored in display order whatever the coding order (``--config ra`` codes B pictures ahead of
time); ``meta/units`` gives each unit's bits per picture in that same display order, with the coding
order, slice types, POCs and temporal ids beside them. Files written before the test conditions existed
lack ``slice_type``/``poc``/``layer``: readers take them as all-intra (I, POC 0, layer 0).

Picture edges: CTUs on the right and bottom edges, and every context border that crosses the picture
edge, are **padded by edge replication** (what a codec's padding and a filter's inference both do).
Only ``target[:valid_h, :valid_w]`` is real picture; losses and metrics must use :func:`valid_mask`.

Samples are stored in their native integer type (uint8 for 8-bit, uint16 if any sequence is deeper),
chunked one sample a chunk (random access for training) and gzip-compressed with byte shuffling.

File attributes: ``schema_version``, ``kind`` (``"ctu-restoration"``), ``ctu``, ``context``,
``codecnn_version``, ``created``. Group ``meta`` holds JSON strings (scalar datasets, no size limit):
``sequences`` (name, source, fingerprint, split, geometry, frames used), ``encoder`` (name, version,
settings), ``units`` (one entry per sequence and QP: bits per frame, kbps, coded QPs, the encoder's
PSNR, timings, ``sample_range``) and ``build`` (the build options). Group ``bitstreams`` holds every
encode's HEVC bitstream (``<seq>_qp<QP>``, uint8), so a reconstruction can always be re-decoded.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from codecnn.data import schema
from codecnn.data.ctu import ctu_positions, cut_ctus
from codecnn.data.schema import SPLIT_CODES, compression, set_attrs
from codecnn.files import atomic_h5

KIND = schema.RESTORATION_KIND

PER_SAMPLE = {  # name -> (dtype, trailing shape)
    "qp": ("i1", ()),
    "bit_depth": ("u1", ()),
    "seq": ("i2", ()),
    "frame": ("i4", ()),
    "pos": ("i4", (2,)),
    "valid": ("i2", (2,)),
    "split": ("u1", ()),
    "slice_type": ("u1", ()),
    "poc": ("i4", ()),
    "layer": ("u1", ()),
}
INTER_COLUMNS = ("slice_type", "poc", "layer")  # optional on read (all intra before they existed)
ALL_INTRA = {"slice_type": 2, "poc": 0, "layer": 0}


def read_column(f, name: str) -> np.ndarray:
    """A per-sample array of an open dataset; the inter columns of an older all-intra file as constants."""
    if name in INTER_COLUMNS and name not in f:
        dt, _ = PER_SAMPLE[name]
        return np.full(f["qp"].shape[0], ALL_INTRA[name], np.dtype(dt))
    return f[name][()]


SAMPLE_DTYPES = (np.dtype(np.uint8), np.dtype("<u2"))


@schema.layout_check(KIND)
def check_layout(f, path: Path, attrs: dict, meta: dict) -> tuple[int, np.dtype]:
    """Check an open CTU dataset against the schema above (attributes, every array, their lengths and
    dtypes, the split codes, the sequence indices and the units' sample ranges); returns (samples, dtype)."""
    from codecnn.data.ctu import CTU_SIZES

    try:
        ctu, context = int(attrs["ctu"]), int(attrs["context"])
    except (KeyError, TypeError, ValueError):
        raise schema.damaged(path, "the ctu/context attributes are missing") from None
    if ctu not in CTU_SIZES or not 0 <= context <= ctu // 2:
        raise schema.damaged(path, f"CTU {ctu} with context {context} is not a layout codecnn writes")
    side = ctu + 2 * context
    present = {k: v for k, v in PER_SAMPLE.items() if k not in INTER_COLUMNS or k in f}
    columns = {"input": (None, (side, side)), "target": (None, (ctu, ctu)), **present}
    n = schema.check_columns(f, path, columns)
    dtype = f["target"].dtype
    if dtype not in SAMPLE_DTYPES or f["input"].dtype != dtype:
        raise schema.damaged(path, f"samples are {f['input'].dtype}/{dtype}, expected uint8 or uint16 for both")
    split = f["split"][()]
    if split.size and not np.isin(split, list(SPLIT_CODES.values())).all():
        raise schema.damaged(path, "array split holds codes other than 0, 1, 2")
    seq = f["seq"][()]
    if seq.size and (seq.min() < 0 or seq.max() >= len(meta["sequences"])):
        raise schema.damaged(path, f"array seq points past the {len(meta['sequences'])} sequences of meta/sequences")
    for u in meta["units"]:
        a, b = u.get("sample_range", (0, 0))
        if not 0 <= a <= b <= n:
            raise schema.damaged(path, f"unit {u['seq']} QP{u.get('qp')} claims samples {a}..{b} of {n}")
    return n, dtype


def create_datasets(h5, ctu: int, context: int, dtype: np.dtype, n: int = 0) -> None:
    """Create the sample datasets (resizable, chunked one sample a chunk) in an open h5py file."""
    side = ctu + 2 * context
    h5.create_dataset(
        "input", (n, side, side), dtype=dtype, maxshape=(None, side, side), chunks=(1, side, side), **compression(dtype)
    )
    h5.create_dataset(
        "target", (n, ctu, ctu), dtype=dtype, maxshape=(None, ctu, ctu), chunks=(1, ctu, ctu), **compression(dtype)
    )
    for name, (dt, shape) in PER_SAMPLE.items():
        h5.create_dataset(
            name, (n, *shape), dtype=dt, maxshape=(None, *shape), chunks=(4096, *shape) if shape else (4096,)
        )


def encode_chunk(sample: np.ndarray) -> bytes:
    """One sample compressed exactly as HDF5's shuffle + deflate filters would store it."""
    data = np.ascontiguousarray(sample)
    raw = data.tobytes()
    if data.dtype.itemsize > 1:  # HDF5's shuffle filter: all first bytes, then all second bytes, ...
        raw = np.frombuffer(raw, np.uint8).reshape(-1, data.dtype.itemsize).T.tobytes()
    return schema.deflate(raw)


def write_samples(dataset, start: int, samples: np.ndarray, pool) -> None:
    """Write ``samples`` (one chunk each) at ``start``, compressed in the thread ``pool`` (zlib releases
    the GIL), through HDF5's direct chunk write. The file is an ordinary gzip-filtered dataset."""
    for i, chunk in enumerate(pool.map(encode_chunk, samples)):
        dataset.id.write_direct_chunk((start + i, 0, 0), chunk)


def valid_mask(valid: np.ndarray, ctu: int) -> np.ndarray:
    """Boolean (N, S, S) mask of the real (non-padded) target pixels from the ``valid`` (N, 2) array."""
    valid = np.asarray(valid)
    r = np.arange(ctu)
    return (r[None, :, None] < valid[:, 0, None, None]) & (r[None, None, :] < valid[:, 1, None, None])


def write_unit(h5, u, src, recon, res, bar) -> int:
    """The restoration samples of one unit: CTUs of the reconstruction with context, and the originals."""
    ctu, ctx = u.options.ctu, u.options.context
    per_frame = len(ctu_positions(u.info.height, u.info.width, ctu))
    total = per_frame * len(u.read_indices)
    columns = {name: np.zeros((total, *shape), dt) for name, (dt, shape) in PER_SAMPLE.items()}
    layers = res.layers()
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        create_datasets(h5, ctu, ctx, np.dtype(u.dtype), total)
        d_in, d_t = h5["input"], h5["target"]
        for j, (i, fi) in enumerate(zip(u.read_indices, u.frame_indices, strict=False)):
            inputs, targets, pos, valid = cut_ctus(recon.read(j).y, src.read(i).y, ctu, ctx)
            n = j * per_frame
            write_samples(d_in, n, inputs.astype(u.dtype, copy=False), pool)
            write_samples(d_t, n, targets.astype(u.dtype, copy=False), pool)
            rows = slice(n, n + per_frame)
            columns["pos"][rows], columns["valid"][rows] = pos, valid
            columns["qp"][rows], columns["frame"][rows] = res.coded_qp[j], fi
            columns["slice_type"][rows], columns["poc"][rows] = res.slice_type[j], res.poc[j]
            columns["layer"][rows] = layers[j]
            bar.update(1)
    columns["bit_depth"][:], columns["seq"][:], columns["split"][:] = u.info.bit_depth, u.seq_index, u.split
    for name, arr in columns.items():
        h5[name][:] = arr
    return total


def merge_shards(shards: list[str], out: Path, options, dtype: np.dtype, seq_meta: list, encoder: dict) -> list[dict]:
    """Concatenate the shards into ``out`` (written through :func:`atomic_h5`); compressed chunks are
    copied as they are."""
    import h5py

    records = []
    with atomic_h5(out) as dst:
        sizes = []
        for path in shards:
            with h5py.File(path, "r") as src:
                sizes.append(src["target"].shape[0])
        create_datasets(dst, options.ctu, options.context, dtype, sum(sizes))
        streams = dst.create_group("bitstreams")
        n = 0
        for path, k in zip(shards, sizes, strict=False):
            with h5py.File(path, "r") as src:
                rec = json.loads(src.attrs["unit"])
                for name in ("input", "target"):
                    s, d = src[name].id, dst[name].id
                    for i in range(k):
                        mask, chunk = s.read_direct_chunk((i, 0, 0))
                        d.write_direct_chunk((n + i, 0, 0), chunk, mask)
                for name in PER_SAMPLE:
                    dst[name][n : n + k] = src[name][()]
                streams.create_dataset(f"{rec['seq']}_qp{rec['qp']}", data=src["bitstream"][()])
                rec["sample_range"] = [n, n + k]
                records.append(rec)
                n += k
        if records:  # the encodes themselves know the encoder's version
            encoder = records[0]["encoder"]
        set_attrs(
            dst,
            KIND,
            ctu=options.ctu,
            context=options.context,
            sequences=seq_meta,
            encoder=encoder,
            units=records,
            build=options.to_json(),
        )
    return records
