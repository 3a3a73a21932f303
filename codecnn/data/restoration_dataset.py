"""What training reads a CTU restoration dataset (:mod:`codecnn.data.restoration`) with: the map-style
:class:`CTUDataset`, the deterministic, rank-aware :class:`StepSampler` for PyTorch's DataLoader, and
:class:`CTUCache`, the split decompressed into memory once (``--cache``). PyTorch is imported where they make
tensors.

The HDF5 file is opened lazily in each DataLoader worker (an h5py handle must not cross a fork), as
BasicSR's file client does. Augmentation is a function of ``(seed, step, position in the global
batch)`` only, so a resumed run and a multi-process (DDP) run see exactly the samples and crops a
single uninterrupted run sees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

from codecnn.data.restoration import read_column
from codecnn.data.schema import SPLIT_CODES, LazyH5, open_dataset_info
from codecnn.errors import CodecnnError
from codecnn.yuv import sample_peak

GRID = 8  # HEVC's deblocking grid: crops keep block edges where they were


@dataclass(frozen=True)
class CropSpec:
    """Where a training patch comes from: sample index, 8-aligned offset and flips."""

    index: int
    y: int = 0
    x: int = 0
    flip_h: bool = False
    flip_v: bool = False


def repeat_counts(info, seq: np.ndarray, repeat: tuple[tuple[str, int], ...]) -> np.ndarray:
    """How many times each sample (by its sequence index) is taken: the count of the last (pattern, n) in
    ``repeat`` whose pattern matches the sequence's name, else 1. A pattern that matches no sequence is an
    error (a misspelt name would silently weigh nothing)."""
    from fnmatch import fnmatchcase

    names = [s["name"] for s in info.sequences]
    per_seq = np.ones(len(names), np.int64)
    for pattern, n in repeat:
        hit = [i for i, name in enumerate(names) if fnmatchcase(name, pattern)]
        if not hit:
            raise CodecnnError(f"--repeat {pattern}={n}: no sequence of {info.path} is named so (codecnn info)")
        per_seq[hit] = n
    return per_seq[seq]


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
        repeat: tuple[tuple[str, int], ...] = (),
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
            seq = f["seq"][()]
            if repeat:
                self.indices = np.repeat(self.indices, repeat_counts(self.info, seq[self.indices], repeat))
            self.valid = f["valid"][()][self.indices]
            self.qp = f["qp"][()][self.indices]
            self.seq = seq[self.indices]
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


def cache_nbytes(ds: CTUDataset) -> int:
    """Bytes the split's CTUs (input and target, in their native integer type) take once decompressed."""
    import h5py

    with h5py.File(ds.path, "r") as f:
        per = f["input"].dtype.itemsize * (int(np.prod(f["input"].shape[1:])) + int(np.prod(f["target"].shape[1:])))
    return per * len(ds)


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
