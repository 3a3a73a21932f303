"""What every codecnn dataset file shares (both kinds: CTU restoration and intra modes): the schema version,
the split codes, the file attributes and the ``meta`` group of JSON strings, the deflate filter of the
sample chunks, and the validated header :class:`DatasetInfo`.

Each kind's own arrays, writer and torch Dataset are in :mod:`codecnn.data.restoration` (with
:mod:`codecnn.data.restoration_dataset`) and :mod:`codecnn.data.intra`; :mod:`codecnn.data.cache` decides how
much of a split training may hold in memory.

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


# kind -> the check of an open file's layout, (h5 file, path, attrs, meta) -> (samples, sample dtype);
# codecnn.data.restoration and codecnn.data.intra register theirs (codecnn/data/__init__.py imports both)
LAYOUT_CHECKS: dict = {}


def layout_check(kind: str):
    """Register a dataset kind's layout check (a decorator), so this module needs no import of the kinds."""

    def register(check):
        if kind in LAYOUT_CHECKS:
            raise ValueError(f"a layout check for {kind!r} is registered already")
        LAYOUT_CHECKS[kind] = check
        return check

    return register


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
                f"{p}: not a codecnn {kind + ' ' if kind else ''}dataset (kind={attrs.get('kind')!r}); "
                "build one with codecnn make-dataset"
            )
        version = int(attrs.get("schema_version", 0))
        if version > SCHEMA_VERSION:  # both kinds are at version 1
            raise CodecnnError(
                f"{p}: schema version {version} is newer than this codecnn reads ({SCHEMA_VERSION}); upgrade codecnn"
            )
        loaded = _read_meta(f, p)
        n, dtype = LAYOUT_CHECKS[attrs["kind"]](f, p, attrs, loaded)
        return DatasetInfo(
            p,
            n,
            int(attrs["ctu"]) if "ctu" in attrs else None,
            int(attrs["context"]) if "context" in attrs else None,
            dtype,
            loaded["sequences"],
            loaded["encoder"],
            loaded["units"],
            loaded["build"],
            attrs,
        )


def damaged(path: Path, what: str) -> CodecnnError:
    """The error for a dataset file that opens but does not hold what its schema says."""
    return CodecnnError(
        f"{path}: {what}: the file is damaged or was not written by codecnn; rebuild it with codecnn make-dataset"
    )


def _read_meta(f, path: Path) -> dict:
    """The ``meta`` JSON strings, each present and of the expected shape."""
    import h5py

    meta = f.get("meta")
    if not isinstance(meta, h5py.Group):
        raise damaged(path, "no meta group")
    out = {}
    for k in META:
        if k not in meta:
            raise damaged(path, f"meta/{k} is missing")
        try:
            raw = meta[k][()]
            v = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
        except (ValueError, TypeError, UnicodeDecodeError, OSError):
            raise damaged(path, f"meta/{k} is not valid JSON") from None
        want = dict if k in ("encoder", "build") else list
        if not isinstance(v, want) or (want is list and not all(isinstance(x, dict) for x in v)):
            raise damaged(path, f"meta/{k} is not a JSON {'object' if want is dict else 'list of objects'}")
        out[k] = v
    for k, key in (("sequences", "name"), ("units", "seq")):
        if any(key not in x for x in out[k]):
            raise damaged(path, f"an entry of meta/{k} has no {key!r}")
    return out


def check_columns(group, path: Path, columns: dict, prefix: str = "") -> int:
    """Every per-sample array of ``columns`` (name -> (dtype, trailing shape)) present in ``group``, of
    that dtype and shape, all of one length; returns the length."""
    import h5py

    lengths = {}
    for name, (dt, shape) in columns.items():
        d = group.get(name)
        if not isinstance(d, h5py.Dataset):
            raise damaged(path, f"array {prefix}{name} is missing")
        if d.ndim < 1 or tuple(d.shape[1:]) != tuple(shape) or (dt is not None and d.dtype != np.dtype(dt)):
            raise damaged(path, f"array {prefix}{name} is {d.dtype}{tuple(d.shape)}, expected {dt} (N, {shape})")
        lengths[name] = d.shape[0]
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{prefix}{k} {v}" for k, v in lengths.items())
        raise damaged(path, f"per-sample arrays differ in length ({desc})")
    return next(iter(lengths.values()), 0)


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

    def read(self, name: str, index: int, *where):
        """``file[name][index, *where]``; a failed read (e.g. a corrupt compressed chunk) becomes a one-line
        error naming the file, the array and the sample."""
        try:
            return self._file()[name][(index, *where)]
        except (OSError, ValueError, KeyError) as e:
            detail = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise CodecnnError(
                f"{self.path}: cannot read sample {index} of array {name} ({detail}): the file is damaged; "
                "codecnn info --verify lists every bad sample, codecnn make-dataset rebuilds it"
            ) from None
