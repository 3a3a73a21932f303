"""The intra-mode task's data (``make-dataset --task intra-modes``): its HDF5 schema, the writer of a build
unit's shard and the merge of the shards, and the dataset and sampler that training reads it with (for
PyTorch's DataLoader; PyTorch is imported where they make tensors, so building a dataset does not load it).

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
from codecnn.data.schema import SPLIT_CODES, LazyH5, open_dataset_info
from codecnn.errors import CodecnnError
from codecnn.files import atomic_h5
from codecnn.yuv import sample_peak

KIND = schema.INTRA_KIND
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


@schema.layout_check(KIND)
def check_layout(f, path: Path, attrs: dict, meta: dict) -> tuple[int, np.dtype]:
    """Check an open intra-modes dataset against the schema above (every block-size group, its arrays,
    their shapes, dtypes and lengths); returns (blocks, sample dtype)."""
    total, dtypes = 0, set()
    for name in _size_groups(f):
        n = int(name[1:])
        columns = {"orig": (None, (2 * n + 1, 2 * n + 1))}
        columns.update({k: (dt, shape(n)) for k, (dt, shape) in COLUMNS.items()})
        total += schema.check_columns(f[name], path, columns, prefix=f"{name}/")
        dtypes.add(f[name]["orig"].dtype)
    if len(dtypes) > 1 or not dtypes <= {np.dtype(np.uint8), np.dtype("<u2")}:
        raise schema.damaged(path, f"block samples are {sorted(map(str, dtypes))}, expected one of uint8, uint16")
    return total, (dtypes.pop() if dtypes else np.dtype(np.uint8))


def _append(group, name: str, data: np.ndarray) -> None:
    if name not in group:
        group.create_dataset(
            name,
            data=data,
            maxshape=(None, *data.shape[1:]),
            chunks=(min(4096, max(1, len(data))), *data.shape[1:]),
            **schema.compression(data.dtype),
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
    from codecnn.hevc.intra_labels import label_blocks

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


def _size_groups(h5) -> list[str]:
    import h5py

    return [k for k in h5 if k.startswith("n") and k[1:].isdigit() and isinstance(h5[k], h5py.Group)]


MERGE_ROWS = 65536  # rows copied at a time by the merge: bounds its memory whatever the dataset's size


def merge_shards(shards: list[str], out: Path, options, dtype, seq_meta: list, encoder: dict) -> list[dict]:
    """Concatenate the shards' groups into ``out`` (written through :func:`atomic_h5`); returns the unit
    records. Every array is created once at its final size and filled shard by shard in blocks of
    :data:`MERGE_ROWS` rows, so memory stays bounded. (Unlike the CTU datasets' one-sample chunks, the
    shards' chunks do not line up with the merged file's, so the rows are recompressed.)"""
    import h5py

    records, sizes, layout = [], {}, {}
    for path in shards:
        with h5py.File(path, "r") as src:
            records.append(json.loads(src.attrs["unit"]))
            for name in _size_groups(src):
                sizes[name] = sizes.get(name, 0) + src[name]["best"].shape[0]
                for key, d in src[name].items():
                    layout[name, key] = (d.dtype, d.shape[1:])
    with atomic_h5(out) as dst:
        for (name, key), (dt, shape) in layout.items():
            n = sizes[name]
            dst.require_group(name).create_dataset(
                key, (n, *shape), dtype=dt, chunks=(min(4096, max(1, n)), *shape), **schema.compression(dt)
            )
        streams = dst.create_group("bitstreams")
        offsets = dict.fromkeys(sizes, 0)
        for path, rec in zip(shards, records, strict=True):
            with h5py.File(path, "r") as src:
                for name in _size_groups(src):
                    k, n = src[name]["best"].shape[0], offsets[name]
                    for key, d in src[name].items():
                        for a in range(0, k, MERGE_ROWS):
                            b = min(k, a + MERGE_ROWS)
                            dst[name][key][n + a : n + b] = d[a:b]
                    offsets[name] += k
                if "bitstream" in src:
                    streams.create_dataset(f"{rec['seq']}_qp{rec['qp']}", data=src["bitstream"][()])
        if records and "encoder" in records[0]:
            encoder = records[0]["encoder"]
        schema.set_attrs(dst, KIND, sequences=seq_meta, encoder=encoder, units=records, build=options.to_json())
        dst.attrs["cost"] = options.intra_cost
        dst.attrs["loop"] = options.intra_loop
        dst.attrs["block_sizes"] = list(options.block_sizes)
        dst.attrs["num_samples"] = int(sum(sizes.values()))
        dst.attrs["sample_dtype"] = next((dt.str for (_, key), (dt, _) in layout.items() if key == "orig"), "u1")
    return records


def write_unit(h5, u, src, recon, res, bar) -> int:
    """The intra-mode samples of one build unit: every block of every selected frame, labelled."""
    total = 0
    for j, (i, fi) in enumerate(zip(u.read_indices, u.frame_indices, strict=False)):
        orig = src.read(i).y
        ref = recon.read(j).y if recon is not None else orig
        qp = res.coded_qp[j] if res is not None else -1
        total += write_frame_labels(h5, orig, ref, u.info.bit_depth, qp, fi, u.seq_index, u.split, u.options)
        bar.update(1 if res is not None else 2)
    return total


def read_rows(dataset, rows: np.ndarray) -> np.ndarray:
    """``dataset[rows]`` for sorted row indices, read run by run of consecutive rows (a split's rows are a
    few long runs, since splits go by sequence): never the whole array of every split."""
    if len(rows) == 0:
        return np.empty((0, *dataset.shape[1:]), dataset.dtype)
    runs = np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1)
    return np.concatenate([dataset[int(run[0]) : int(run[-1]) + 1] for run in runs])


def canvas(orig: np.ndarray, ref: np.ndarray, n: int, peak) -> np.ndarray:
    """The (..., 3, 2N+1, 2N+1) network input of blocks (see :mod:`codecnn.models.modenet`) from their
    ``orig`` patches (..., 2N+1, 2N+1), linear references ``ref`` (..., 4N+1) and sample peaks."""
    lead = orig.shape[:-2]
    peak = np.asarray(peak, np.float32).reshape(*lead, *([1] * (1 if lead else 0))) if lead else float(peak)
    c = np.zeros((*lead, 3, 2 * n + 1, 2 * n + 1), np.float32)
    c[..., 0, 1 : n + 1, 1 : n + 1] = orig[..., 1 : n + 1, 1 : n + 1] / (peak[..., None] if lead else peak)
    avail = ref >= 0
    vals = np.where(avail, ref, 0) / peak
    # linear order: left (bottom to top), corner, top (left to right)
    c[..., 1, 1 : 2 * n + 1, 0] = vals[..., : 2 * n][..., ::-1]
    c[..., 1, 0, 0] = vals[..., 2 * n]
    c[..., 1, 0, 1:] = vals[..., 2 * n + 1 :]
    c[..., 2, 1 : 2 * n + 1, 0] = avail[..., : 2 * n][..., ::-1]
    c[..., 2, 0, 0] = avail[..., 2 * n]
    c[..., 2, 0, 1:] = avail[..., 2 * n + 1 :]
    return c


class IntraModeDataset(LazyH5):
    """Blocks of one split of an intra-modes dataset, indexed by ``(block_size, row)``."""

    def __init__(self, path: str | os.PathLike, split: str | None = "train", qps: tuple[int, ...] | None = None):
        import h5py

        self.info = open_dataset_info(path, kind=KIND)
        self.path = str(self.info.path)
        self.rows: dict[int, np.ndarray] = {}
        with h5py.File(self.path, "r") as f:
            for g in f:
                if g.startswith("n") and g[1:].isdigit():
                    keep = np.ones(f[g]["best"].shape[0], bool)
                    if split is not None:
                        keep &= f[g]["split"][()] == SPLIT_CODES[split]
                    if qps:
                        keep &= np.isin(f[g]["qp"][()], list(qps))
                    if keep.any():
                        self.rows[int(g[1:])] = np.flatnonzero(keep)

    def __len__(self) -> int:
        return int(sum(len(r) for r in self.rows.values()))

    def __getitem__(self, item) -> dict:
        import torch

        n, k = item
        i = int(self.rows[n][k])
        g = f"n{n}/"
        peak = float(sample_peak(int(self.read(g + "bit_depth", i))))
        return {
            "input": torch.from_numpy(canvas(self.read(g + "orig", i), self.read(g + "ref", i), n, peak)),
            "block_size": torch.tensor(n),
            "qp": torch.tensor(int(self.read(g + "qp", i))),
            "best": torch.tensor(int(self.read(g + "best", i))),
            "costs": torch.from_numpy(self.read(g + "costs", i).astype(np.float32)),
        }

    def inputs(self, n: int) -> dict:
        """Network inputs of all blocks of size ``n``, read in bulk (for evaluation)."""
        import torch

        g = self._file()[f"n{n}"]
        r = self.rows[n]
        peak = sample_peak(read_rows(g["bit_depth"], r).astype(np.int64))
        return {
            "input": torch.from_numpy(canvas(read_rows(g["orig"], r), read_rows(g["ref"], r), n, peak)),
            "block_size": torch.full((len(r),), n),
            "qp": torch.from_numpy(read_rows(g["qp"], r).astype(np.int64)),
        }

    def arrays(self, n: int) -> dict:
        """The label arrays of the blocks of size ``n`` (for metrics)."""
        g = self._file()[f"n{n}"]
        r = self.rows[n]
        picture = np.stack([read_rows(g[k], r).astype(np.int64) for k in ("seq", "frame", "qp")], 1)
        return {
            "costs": read_rows(g["costs"], r),
            "best": read_rows(g["best"], r).astype(np.int64),
            "hadamard": read_rows(g["hadamard"], r),
            "pos": read_rows(g["pos"], r),
            "key": np.unique(picture, axis=0, return_inverse=True)[1].reshape(-1),  # one id per picture
        }


class BlockSizeStepSampler:
    """Step ``s`` draws a global batch of one block size (sizes in turn), from that size's epoch
    permutations seeded by ``(seed, size, epoch)``; rank r of W takes its slice. Resume- and DDP-exact
    like :class:`codecnn.data.restoration_dataset.StepSampler`."""

    def __init__(
        self,
        ds: IntraModeDataset,
        global_batch: int,
        seed: int = 0,
        start_step: int = 0,
        rank: int = 0,
        world: int = 1,
        steps: int | None = None,
    ):
        if global_batch % world:
            raise CodecnnError(f"--batch {global_batch} must be a multiple of the number of processes ({world})")
        if not ds.rows:
            raise CodecnnError("the training split holds no block")
        self.ds, self.batch, self.seed = ds, global_batch, seed
        self.start, self.rank, self.world, self.steps = start_step, rank, world, steps
        self.sizes = sorted(ds.rows)

    def batch_items(self, step: int) -> list[tuple[int, int]]:
        n = self.sizes[step % len(self.sizes)]
        count = len(self.ds.rows[n])
        local = self.batch // self.world
        out = []
        for k in range(self.rank * local, (self.rank + 1) * local):
            p = (step // len(self.sizes)) * self.batch + k
            out.append((n, int(self._permutation(n, p // count, count)[p % count])))
        return out

    def _permutation(self, n: int, epoch: int, count: int) -> np.ndarray:
        """Size ``n``'s permutation of ``epoch``, drawn once (a batch may straddle two epochs: two kept per size)."""
        cache = self.__dict__.setdefault("_perms", {})
        key = (n, epoch)
        if key not in cache:
            for old in [k for k in cache if k[0] == n and k[1] < epoch - 1]:
                del cache[old]
            cache[key] = np.random.default_rng([self.seed, n, epoch]).permutation(count)
        return cache[key]

    def __iter__(self):
        step = self.start
        while self.steps is None or step < self.steps:
            yield from self.batch_items(step)
            step += 1

    def __len__(self) -> int:
        return (self.steps - self.start) * (self.batch // self.world)


CACHED = ("orig", "ref", "qp", "best", "costs", "bit_depth")


def block_cache_nbytes(ds: IntraModeDataset) -> int:
    """Bytes the split's blocks take in a :class:`BlockCache` (the arrays training reads, native types)."""
    g = ds._file()
    total = 0
    for n, rows in ds.rows.items():
        for k in CACHED:
            d = g[f"n{n}"][k]
            total += d.dtype.itemsize * int(np.prod(d.shape[1:], dtype=np.int64)) * len(rows)
    return total


class BlockCache:
    """A split's blocks read once into memory, size by size (the arrays training needs, native types), with one
    vectorised :meth:`batch` per step: what the DataLoader would collate from ``ds[(n, row)]`` item by item
    (the same canvases, to the bit), without an HDF5 read per block."""

    def __init__(self, ds: IntraModeDataset):
        g = ds._file()
        self.arrays = {n: {k: read_rows(g[f"n{n}"][k], rows) for k in CACHED} for n, rows in ds.rows.items()}
        self.nbytes = sum(a.nbytes for per in self.arrays.values() for a in per.values())

    def __len__(self) -> int:
        return sum(len(per["best"]) for per in self.arrays.values())

    def batch(self, items: list[tuple[int, int]]) -> dict:
        import torch

        sizes = {n for n, _ in items}
        if len(sizes) != 1:
            raise CodecnnError("a cached batch holds blocks of one size")
        n = sizes.pop()
        a = self.arrays[n]
        k = np.array([i for _, i in items], np.int64)
        peak = sample_peak(a["bit_depth"][k].astype(np.int64)).astype(np.float32)
        return {
            "input": torch.from_numpy(canvas(a["orig"][k], a["ref"][k], n, peak)),
            "block_size": torch.full((len(k),), n, dtype=torch.int64),
            "qp": torch.from_numpy(a["qp"][k].astype(np.int64)),
            "best": torch.from_numpy(a["best"][k].astype(np.int64)),
            "costs": torch.from_numpy(a["costs"][k].astype(np.float32)),
        }

    def batches(self, sampler: BlockSizeStepSampler):
        """The batches of the sampler's steps, in order (what a DataLoader over ``sampler`` would yield)."""
        step = sampler.start
        while sampler.steps is None or step < sampler.steps:
            yield self.batch(sampler.batch_items(step))
            step += 1
