"""What every codecnn dataset file shares (both kinds: CTU restoration and intra modes): the schema version,
the split codes, the file attributes and the ``meta`` group of JSON strings, the deflate filter of the
sample chunks, and the validated header :class:`DatasetInfo`.

Each kind's own arrays, writer and torch Dataset are in :mod:`codecnn.data.restoration` and
:mod:`codecnn.data.intra`.

File attributes: ``schema_version``, ``kind``, ``codecnn_version``, ``created``, and for CTU datasets
``ctu`` and ``context``. Group ``meta`` holds JSON strings (scalar datasets, no size limit):
``sequences`` (name, source, fingerprint, split, geometry, frames used), ``encoder`` (name, version,
settings), ``units`` (one entry per sequence and QP: bits per frame, kbps, coded QPs, the encoder's PSNR,
timings) and ``build`` (the build options). Group ``bitstreams`` holds every encode's HEVC bitstream
(``<seq>_qp<QP>``, uint8), so a reconstruction can always be re-decoded.
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
RESTORATION_KIND = "ctu-restoration"
INTRA_KIND = "intra-modes"
KINDS = (RESTORATION_KIND, INTRA_KIND)
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
META = ("sequences", "encoder", "units", "build")
GZIP_LEVEL = 1
try:  # ISA-L's deflate: zlib-format streams (HDF5's gzip filter reads them), ~3.5x faster than zlib
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the same format, slower
    _zlib = zlib


def deflate(raw: bytes) -> bytes:
    """``raw`` compressed as HDF5's gzip filter at :data:`GZIP_LEVEL` stores it."""
    return _zlib.compress(raw, GZIP_LEVEL)


def compression(dtype: np.dtype) -> dict:
    """HDF5 filters of the sample datasets: byte shuffle (multi-byte samples only), then deflate."""
    return {"compression": "gzip", "compression_opts": GZIP_LEVEL, "shuffle": np.dtype(dtype).itemsize > 1}


def set_attrs(
    h5, kind: str, *, ctu: int | None = None, context: int | None = None, version: int = SCHEMA_VERSION, **meta
) -> None:
    """The file attributes (``ctu`` and ``context`` only where the kind has them) and the ``meta`` JSON."""
    import datetime

    from codecnn import __version__

    h5.attrs["schema_version"] = version
    h5.attrs["kind"] = kind
    if ctu is not None:
        h5.attrs["ctu"] = ctu
        h5.attrs["context"] = context
    h5.attrs["codecnn_version"] = __version__
    h5.attrs["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    group = h5.require_group("meta")
    for k, v in meta.items():
        group.create_dataset(k, data=json.dumps(v))


@dataclass(frozen=True)
class DatasetInfo:
    """The header of a CTU dataset file, validated."""

    path: Path
    num_samples: int
    ctu: int | None  # None for intra-modes datasets
    context: int | None
    dtype: np.dtype
    sequences: list
    encoder: dict
    units: list
    build: dict
    attrs: dict


def open_dataset_info(path: str | os.PathLike, kind: str | None = RESTORATION_KIND) -> DatasetInfo:
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
            int(attrs["ctu"]) if "ctu" in attrs else None,
            int(attrs["context"]) if "context" in attrs else None,
            dtype,
            loaded["sequences"] or [],
            loaded["encoder"] or {},
            loaded["units"] or [],
            loaded["build"] or {},
            attrs,
        )


class LazyH5:
    """Mixin for torch Datasets over a dataset file (``self.path``): :meth:`_file` opens it on first use
    in each process, since an h5py handle must not cross a fork (as BasicSR's file client does)."""

    path: str
    _h5 = None
    _pid = None

    def _file(self):
        import h5py

        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._h5
