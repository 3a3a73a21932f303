"""The CTU restoration task's data: its HDF5 schema, the writer of a build unit's shard and the merge
of the shards, and the dataset and sampler that training reads it with (a map-style dataset and a sampler
for PyTorch's DataLoader; PyTorch is imported where they make tensors, so building a dataset, e.g. on a Dask
worker, does not load it).

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

Training reads CTU samples through :class:`CTUDataset` and a deterministic, rank-aware :class:`StepSampler`.
The HDF5 file is opened lazily in each DataLoader worker (an h5py handle must not cross a fork), as
BasicSR's file client does. Augmentation is a function of ``(seed, step, position in the global
batch)`` only, so a resumed run and a multi-process (DDP) run see exactly the samples and crops a
single uninterrupted run sees.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

from codecnn.data import schema
from codecnn.data.ctu import ctu_positions, cut_ctus
from codecnn.data.schema import SPLIT_CODES, LazyH5, compression, open_dataset_info, set_attrs
from codecnn.errors import CodecnnError
from codecnn.files import atomic_h5
from codecnn.train.config import CACHES
from codecnn.yuv import sample_peak

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


GRID = 8  # HEVC's deblocking grid: crops keep block edges where they were


@dataclass(frozen=True)
class CropSpec:
    """Where a training patch comes from: sample index, 8-aligned offset and flips."""

    index: int
    y: int = 0
    x: int = 0
    flip_h: bool = False
    flip_v: bool = False


class CTUDataset(LazyH5):
    """CTU samples of one split (and optionally some QPs) of a restoration dataset.

    Items are dicts of tensors: ``input`` 1 x (P+2c) x (P+2c) and ``target`` 1 x P x P in [0, 1]
    (divided by the sample's peak), ``mask`` 1 x P x P (1 where the target is picture, 0 on padding),
    ``qp``, ``bit_depth``, ``seq``, ``frame``. ``P`` is the patch size (the whole CTU for ``patch=0``).
    Indexed by :class:`CropSpec` (from :class:`StepSampler`) or by a plain int (the whole CTU).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str | None = "train",
        qps: tuple[int, ...] | None = None,
        patch: int = 0,
        slice_types: tuple[int, ...] | None = None,
    ):
        import h5py

        self.info = open_dataset_info(path)
        self.path = str(self.info.path)
        self.ctu, self.context = self.info.ctu, self.info.context
        if patch and (patch % GRID or not 0 < patch <= self.ctu):
            raise CodecnnError(f"--patch {patch}: use a multiple of {GRID} up to the CTU size {self.ctu}, or 0")
        self.patch = patch or self.ctu
        with h5py.File(self.path, "r") as f:
            keep = np.ones(f["qp"].shape[0], bool)
            if split is not None:
                keep &= f["split"][()] == SPLIT_CODES[split]
            if qps:
                keep &= np.isin(f["qp"][()], list(qps))
            if slice_types:
                keep &= np.isin(read_column(f, "slice_type"), list(slice_types))
            self.indices = np.flatnonzero(keep)
            self.valid = f["valid"][()][self.indices]
            self.qp = f["qp"][()][self.indices]
            self.seq = f["seq"][()][self.indices]
            self.frame = f["frame"][()][self.indices]
            self.pos = f["pos"][()][self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item) -> dict:
        import torch

        spec = item if isinstance(item, CropSpec) else CropSpec(int(item))
        i = int(self.indices[spec.index])
        p, c = self.patch, self.context
        bd = int(self.read("bit_depth", i))
        peak = float(sample_peak(bd))
        inp = self.read("input", i, slice(spec.y, spec.y + p + 2 * c), slice(spec.x, spec.x + p + 2 * c))
        tgt = self.read("target", i, slice(spec.y, spec.y + p), slice(spec.x, spec.x + p))
        inp, tgt = inp.astype(np.float32) / peak, tgt.astype(np.float32) / peak
        vh, vw = (int(v) for v in self.valid[spec.index])
        mask = np.zeros((p, p), np.float32)
        mask[: max(0, vh - spec.y), : max(0, vw - spec.x)] = 1.0
        if spec.flip_h:
            inp, tgt, mask = inp[:, ::-1], tgt[:, ::-1], mask[:, ::-1]
        if spec.flip_v:
            inp, tgt, mask = inp[::-1], tgt[::-1], mask[::-1]
        return {
            "input": torch.from_numpy(np.ascontiguousarray(inp))[None],
            "target": torch.from_numpy(np.ascontiguousarray(tgt))[None],
            "mask": torch.from_numpy(np.ascontiguousarray(mask))[None],
            "qp": torch.tensor(int(self.qp[spec.index])),
            "bit_depth": torch.tensor(bd),
            "seq": torch.tensor(int(self.seq[spec.index])),
            "frame": torch.tensor(int(self.frame[spec.index])),
        }

    def crop(self, index: int, rng: np.random.Generator, flips: bool = True) -> CropSpec:
        """A random patch of sample ``index``, 8-aligned, inside the picture where the CTU allows."""
        p = self.patch
        vh, vw = (int(v) for v in self.valid[index])
        ys = max(0, (min(vh, self.ctu) - p) // GRID)
        xs = max(0, (min(vw, self.ctu) - p) // GRID)
        y = int(rng.integers(0, ys + 1)) * GRID
        x = int(rng.integers(0, xs + 1)) * GRID
        fh, fv = (bool(b) for b in rng.integers(0, 2, 2)) if flips else (False, False)
        return CropSpec(index, y, x, fh, fv)


class StepSampler:
    """Yields the :class:`CropSpec` s of steps ``start_step, start_step+1, ...`` for one rank.

    Global batch ``b`` of step ``s`` is positions ``s*B .. s*B+B-1`` of an endless sequence of
    epoch permutations (seeded by ``(seed, epoch)``); rank ``r`` of ``W`` takes the positions
    ``r*B/W .. (r+1)*B/W - 1`` of each global batch. The crop of each position is drawn from a
    generator seeded by ``(seed, s, position)``. The union over ranks is the single-process batch.
    """

    def __init__(
        self,
        dataset: CTUDataset,
        global_batch: int,
        seed: int = 0,
        start_step: int = 0,
        rank: int = 0,
        world: int = 1,
        augment: bool = True,
        steps: int | None = None,
    ):
        if global_batch % world:
            raise CodecnnError(f"--batch {global_batch} must be a multiple of the number of processes ({world})")
        if len(dataset) == 0:
            raise CodecnnError("the training split is empty: check the dataset's splits and --qp")
        self.ds, self.batch, self.seed = dataset, global_batch, seed
        self.start, self.rank, self.world, self.augment, self.steps = start_step, rank, world, augment, steps
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.ds))}
        return self._perms[epoch]

    def batch_specs(self, step: int) -> list[CropSpec]:
        n, local = len(self.ds), self.batch // self.world
        out = []
        for k in range(self.rank * local, (self.rank + 1) * local):
            pos = step * self.batch + k
            idx = int(self._perm(pos // n)[pos % n])
            rng = np.random.default_rng([self.seed, step, k, 1])
            out.append(self.ds.crop(idx, rng, flips=self.augment))
        return out

    def __iter__(self):
        step = self.start
        while self.steps is None or step < self.steps:
            yield from self.batch_specs(step)
            step += 1

    def __len__(self) -> int:
        if self.steps is None:
            raise TypeError("endless sampler")
        return (self.steps - self.start) * (self.batch // self.world)


CACHE_SHARE = 0.25  # --cache auto: cache the split when it takes at most this share of physical memory


def physical_memory() -> int | None:
    """Bytes of physical memory (os.sysconf, else /proc/meminfo), None where neither says."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cache_nbytes(ds: CTUDataset) -> int:
    """Bytes the split's CTUs (input and target, in their native integer type) take once decompressed."""
    import h5py

    with h5py.File(ds.path, "r") as f:
        per = f["input"].dtype.itemsize * (int(np.prod(f["input"].shape[1:])) + int(np.prod(f["target"].shape[1:])))
    return per * len(ds)


def resolve_cache(
    mode: str, nbytes: int, copies: int = 1, total: int | None = None, device: torch.device | str = "cpu"
) -> tuple[str, str]:
    """The cache mode to use for ``--cache mode`` and why. ``auto`` is ``ram`` when ``copies`` caches of
    ``nbytes`` (one per process on this host) fit in :data:`CACHE_SHARE` of physical memory, else ``off``;
    ``device`` on a CPU ``device`` is ``ram``."""
    import torch

    if mode not in CACHES:
        raise CodecnnError(f"--cache {mode!r}: use one of {', '.join(CACHES)}")
    if mode == "device" and torch.device(device).type != "cuda":
        return "ram", "--cache device on a CPU: the device is host memory"
    if mode != "auto":
        return mode, f"--cache {mode}"
    total = physical_memory() if total is None else total
    need = nbytes * copies
    share = f"{CACHE_SHARE:.0%} of {total / 2**30:.1f} GiB physical memory" if total else ""
    if total and need <= CACHE_SHARE * total:
        return "ram", f"the split's samples ({need / 2**20:.0f} MiB) fit in {share}"
    why = f"more than {share}" if total else "physical memory is unknown"
    return "off", f"the split's samples ({need / 2**20:.0f} MiB x{copies}) are {why}; reading them from the file"


class CTUCache:
    """A split's CTUs decompressed once into one contiguous array each (input, target: native uint8/uint16),
    with batched crops: one :meth:`batch` per step gives what the DataLoader would collate from
    ``ds[spec]`` for the step's :class:`CropSpec` s, bit for bit (integer crops are exact, the division by
    the peak is one correctly rounded fp32 division either way).

    ``device``: where the arrays live (a CUDA device for ``--cache device``; the CPU otherwise, pinned
    when ``pin`` so batches go to the GPU asynchronously).
    """

    @classmethod
    def for_mode(cls, ds: CTUDataset, mode: str, device: torch.device | str) -> CTUCache:
        """The cache of a resolved ``mode`` (``ram`` or ``device``) for training on ``device``: on the device
        itself, or in host memory (pinned when the device is a GPU)."""
        import torch

        device = torch.device(device)
        cuda = device.type == "cuda"
        return cls(ds, device if mode == "device" else "cpu", pin=cuda and mode == "ram")

    def __init__(self, ds: CTUDataset, device: torch.device | str = "cpu", pin: bool = False, block: int = 256):
        import h5py
        import torch

        self.ds, self.patch, self.context = ds, ds.patch, ds.context
        self.device = torch.device(device)
        n = len(ds)
        with h5py.File(ds.path, "r") as f:
            d_in, d_t = f["input"], f["target"]
            inp = np.empty((n, *d_in.shape[1:]), d_in.dtype)
            tgt = np.empty((n, *d_t.shape[1:]), d_t.dtype)
            bd = f["bit_depth"][()][ds.indices]
            # contiguous runs of file indices, read a block at a time (HDF5 decompresses the chunks)
            breaks = np.flatnonzero(np.diff(ds.indices) != 1) + 1
            for run in np.split(np.arange(n), breaks):
                for a in range(0, len(run), block):
                    j0, j1 = int(run[a]), int(run[min(a + block, len(run)) - 1]) + 1
                    i0 = int(ds.indices[j0])
                    try:
                        d_in.read_direct(inp, np.s_[i0 : i0 + j1 - j0], np.s_[j0:j1])
                        d_t.read_direct(tgt, np.s_[i0 : i0 + j1 - j0], np.s_[j0:j1])
                    except (OSError, ValueError) as e:
                        for name in ("input", "target"):  # find the sample and array to name (raises)
                            for i in range(i0, i0 + j1 - j0):
                                ds.read(name, i)
                        raise CodecnnError(
                            f"{ds.path}: cannot read samples {i0}..{i0 + j1 - j0 - 1} ({e}): the file is damaged; "
                            "codecnn info --verify lists every bad sample"
                        ) from None
        self.nbytes = inp.nbytes + tgt.nbytes
        self.input, self.target = torch.from_numpy(inp), torch.from_numpy(tgt)
        if self.device.type != "cpu":
            self.input, self.target = self.input.to(self.device), self.target.to(self.device)
        elif pin:
            self.input, self.target = self.input.pin_memory(), self.target.pin_memory()
        self._np = (self.input.numpy(), self.target.numpy()) if self.device.type == "cpu" else None
        self._peak = sample_peak(bd.astype(np.int64)).astype(np.float32)
        cols = {"qp": ds.qp, "bit_depth": bd, "seq": ds.seq, "frame": ds.frame}
        self._columns = {k: v.astype(np.int64) for k, v in cols.items()}  # as torch.tensor(int) collates them
        self._buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.pin = pin and self.device.type == "cpu"

    def __len__(self) -> int:
        return len(self.ds)

    def _gather_cpu(self, specs: list[CropSpec]) -> tuple[np.ndarray, np.ndarray]:
        """Each sample's crop, flips included, as a strided numpy view copied into one batch array."""
        p, c, b = self.patch, self.context, len(specs)
        s = p + 2 * c
        if b not in self._buffers:
            self._buffers = {b: (np.empty((b, s, s), self._np[0].dtype), np.empty((b, p, p), self._np[1].dtype))}
        bi, bt = self._buffers[b]
        src_i, src_t = self._np
        for k, sp in enumerate(specs):
            v = slice(None, None, -1 if sp.flip_v else 1)
            h = slice(None, None, -1 if sp.flip_h else 1)
            bi[k] = src_i[sp.index, sp.y : sp.y + s, sp.x : sp.x + s][v, h]
            bt[k] = src_t[sp.index, sp.y : sp.y + p, sp.x : sp.x + p][v, h]
        return bi, bt

    def _gather_index(self, specs: list[CropSpec], idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One index gather for the batch (on the cache's device): rows and columns reversed where flipped."""
        import torch

        p, c = self.patch, self.context
        dev = self.device
        y = torch.tensor([sp.y for sp in specs], device=dev)
        x = torch.tensor([sp.x for sp in specs], device=dev)
        fv = torch.tensor([sp.flip_v for sp in specs], device=dev)
        fh = torch.tensor([sp.flip_h for sp in specs], device=dev)

        def lines(off, flip, n):
            r = torch.arange(n, device=dev)
            return off[:, None] + torch.where(flip[:, None], n - 1 - r, r)

        i = idx.to(dev)[:, None, None]
        s = p + 2 * c
        inp = self.input[i, lines(y, fv, s)[:, :, None], lines(x, fh, s)[:, None, :]]
        tgt = self.target[i, lines(y, fv, p)[:, :, None], lines(x, fh, p)[:, None, :]]
        return inp, tgt

    def batch(self, specs: list[CropSpec]) -> dict:
        """The collated batch of ``ds[spec] for spec in specs`` (same keys, dtypes and shapes)."""
        import torch

        p = self.patch
        meta = np.array([(sp.index, sp.y, sp.x, sp.flip_v, sp.flip_h) for sp in specs], np.int64).reshape(-1, 5)
        idx, y, x, fv, fh = meta.T
        # a pixel is picture when its row/column in the CTU is below the valid height/width; flips move it
        r = np.arange(p)
        rows = y[:, None] + np.where(fv[:, None] == 1, p - 1 - r, r)
        cols = x[:, None] + np.where(fh[:, None] == 1, p - 1 - r, r)
        valid = self.ds.valid[idx]
        mask = (rows < valid[:, :1])[:, None, :, None] & (cols < valid[:, 1:])[:, None, None, :]
        pk = self._peak[idx][:, None, None, None]
        if self._np is not None:  # numpy on the CPU: one thread, no torch parallel region to wait on busy cores
            inp, tgt = self._gather_cpu(specs)
            out = {
                "input": np.divide(inp[:, None], pk, dtype=np.float32),
                "target": np.divide(tgt[:, None], pk, dtype=np.float32),
                "mask": mask.astype(np.float32),
            }
            out = {k: torch.from_numpy(v) for k, v in out.items()}
        else:
            inp, tgt = self._gather_index(specs, torch.from_numpy(idx))
            peak = torch.from_numpy(pk).to(self.device)
            out = {
                "input": inp[:, None].float().div_(peak),
                "target": tgt[:, None].float().div_(peak),
                "mask": torch.from_numpy(mask).to(self.device, torch.float32),
            }
        out.update({k: torch.from_numpy(v[idx]) for k, v in self._columns.items()})
        if self.pin:
            out = {k: v.pin_memory() for k, v in out.items()}
        return out

    def batches(self, sampler: StepSampler):
        """The batches of the sampler's steps, in order (what a DataLoader over ``sampler`` would yield)."""
        step = sampler.start
        while sampler.steps is None or step < sampler.steps:
            yield self.batch(sampler.batch_specs(step))
            step += 1
