"""The HDF5 schema of a codecnn CTU restoration dataset (one module: names, dtypes, version).

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
=========  ===================  ===========================================================================

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
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codecnn.errors import CodecnnError

SCHEMA_VERSION = 1
KIND = "ctu-restoration"
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
PER_SAMPLE = {  # name -> (dtype, trailing shape)
    "qp": ("i1", ()),
    "bit_depth": ("u1", ()),
    "seq": ("i2", ()),
    "frame": ("i4", ()),
    "pos": ("i4", (2,)),
    "valid": ("i2", (2,)),
    "split": ("u1", ()),
}
META = ("sequences", "encoder", "units", "build")
GZIP_LEVEL = 1
try:  # ISA-L's deflate: zlib-format streams (HDF5's gzip filter reads them), ~3.5x faster than zlib
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the same format, slower
    _deflate = zlib


def compression(dtype: np.dtype) -> dict:
    """HDF5 filters of the sample datasets: byte shuffle (multi-byte samples only), then deflate."""
    return {"compression": "gzip", "compression_opts": GZIP_LEVEL, "shuffle": np.dtype(dtype).itemsize > 1}


def sample_dtype_for(bit_depths) -> np.dtype:
    return np.dtype(np.uint8) if max(bit_depths) <= 8 else np.dtype("<u2")


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
    return _deflate.compress(raw, GZIP_LEVEL)


def write_samples(dataset, start: int, samples: np.ndarray, pool) -> None:
    """Write ``samples`` (one chunk each) at ``start``, compressed in the thread ``pool`` (zlib releases
    the GIL), through HDF5's direct chunk write. The file is an ordinary gzip-filtered dataset."""
    for i, chunk in enumerate(pool.map(encode_chunk, samples)):
        dataset.id.write_direct_chunk((start + i, 0, 0), chunk)


def set_attrs(h5, ctu: int, context: int, kind: str = KIND, version: int = SCHEMA_VERSION, **meta) -> None:
    import datetime

    from codecnn import __version__

    h5.attrs["schema_version"] = version
    h5.attrs["kind"] = kind
    h5.attrs["ctu"] = ctu
    h5.attrs["context"] = context
    h5.attrs["codecnn_version"] = __version__
    h5.attrs["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    group = h5.require_group("meta")
    for k, v in meta.items():
        group.create_dataset(k, data=json.dumps(v))


def valid_mask(valid: np.ndarray, ctu: int) -> np.ndarray:
    """Boolean (N, S, S) mask of the real (non-padded) target pixels from the ``valid`` (N, 2) array."""
    valid = np.asarray(valid)
    r = np.arange(ctu)
    return (r[None, :, None] < valid[:, 0, None, None]) & (r[None, None, :] < valid[:, 1, None, None])


@dataclass(frozen=True)
class DatasetInfo:
    """The header of a CTU dataset file, validated."""

    path: Path
    num_samples: int
    ctu: int
    context: int
    dtype: np.dtype
    sequences: list
    encoder: dict
    units: list
    build: dict
    attrs: dict


KINDS = (KIND, "intra-modes")


def open_dataset_info(path: str | os.PathLike, kind: str | None = KIND) -> DatasetInfo:
    """Read and check a dataset's header; a clear error for a missing, foreign or newer file.
    ``kind=None`` accepts any codecnn dataset kind."""
    import h5py

    p = Path(path)
    if not p.is_file():
        raise CodecnnError(f"{p}: no such dataset file; build one with codecnn make-dataset")
    try:
        f = h5py.File(p, "r")
    except OSError:
        raise CodecnnError(f"{p}: not an HDF5 file (or it is damaged); rebuild it with codecnn make-dataset") from None
    with f:
        attrs = dict(f.attrs)
        if attrs.get("kind") != kind and not (kind is None and attrs.get("kind") in KINDS):
            raise CodecnnError(
                f"{p}: not a codecnn {kind or 'dataset'} dataset (kind={attrs.get('kind')!r}); "
                "build one with codecnn make-dataset"
            )
        version = int(attrs.get("schema_version", 0))
        if version > SCHEMA_VERSION:  # both kinds are at version 1
            raise CodecnnError(
                f"{p}: schema version {version} is newer than this codecnn reads ({SCHEMA_VERSION}); upgrade codecnn"
            )
        meta = f.get("meta", {})
        loaded = {k: json.loads(meta[k][()]) if k in meta else None for k in META}
        if "target" in f:
            n, dtype = int(f["target"].shape[0]), f["target"].dtype
        else:
            n, dtype = int(attrs.get("num_samples", 0)), np.dtype(attrs.get("sample_dtype", "u1"))
        return DatasetInfo(
            p,
            n,
            int(attrs["ctu"]),
            int(attrs["context"]),
            dtype,
            loaded["sequences"] or [],
            loaded["encoder"] or {},
            loaded["units"] or [],
            loaded["build"] or {},
            attrs,
        )
