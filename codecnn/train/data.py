"""Training data: CTU samples from a codecnn HDF5 dataset, and a deterministic, rank-aware sampler.

The HDF5 file is opened lazily in each DataLoader worker (an h5py handle must not cross a fork), as
BasicSR's file client does. Augmentation is a function of ``(seed, step, position in the global
batch)`` only, so a resumed run and a multi-process (DDP) run see exactly the samples and crops a
single uninterrupted run sees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from codecnn.data.schema import SPLIT_CODES, open_dataset_info
from codecnn.errors import CodecnnError

GRID = 8  # HEVC's deblocking grid: crops keep block edges where they were


@dataclass(frozen=True)
class CropSpec:
    """Where a training patch comes from: sample index, 8-aligned offset and flips."""

    index: int
    y: int = 0
    x: int = 0
    flip_h: bool = False
    flip_v: bool = False


class CTUDataset(Dataset):
    """CTU samples of one split (and optionally some QPs) of a restoration dataset.

    Items are dicts of tensors: ``input`` 1 x (P+2c) x (P+2c) and ``target`` 1 x P x P in [0, 1]
    (divided by the sample's peak), ``mask`` 1 x P x P (1 where the target is picture, 0 on padding),
    ``qp``, ``bit_depth``, ``seq``, ``frame``. ``P`` is the patch size (the whole CTU for ``patch=0``).
    Indexed by :class:`CropSpec` (from :class:`StepSampler`) or by a plain int (the whole CTU).
    """

    def __init__(
        self, path: str | os.PathLike, split: str | None = "train", qps: tuple[int, ...] | None = None, patch: int = 0
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
            self.indices = np.flatnonzero(keep)
            self.valid = f["valid"][()][self.indices]
            self.qp = f["qp"][()][self.indices]
            self.seq = f["seq"][()][self.indices]
            self.frame = f["frame"][()][self.indices]
            self.pos = f["pos"][()][self.indices]
        self._h5 = None
        self._pid = None

    def __len__(self) -> int:
        return len(self.indices)

    def _file(self):
        import h5py

        if self._h5 is None or self._pid != os.getpid():
            self._h5 = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._h5

    def __getitem__(self, item) -> dict:
        spec = item if isinstance(item, CropSpec) else CropSpec(int(item))
        f = self._file()
        i = int(self.indices[spec.index])
        p, c = self.patch, self.context
        bd = int(f["bit_depth"][i])
        peak = float((1 << bd) - 1)
        inp = f["input"][i, spec.y : spec.y + p + 2 * c, spec.x : spec.x + p + 2 * c].astype(np.float32) / peak
        tgt = f["target"][i, spec.y : spec.y + p, spec.x : spec.x + p].astype(np.float32) / peak
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


class StepSampler(Sampler):
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
