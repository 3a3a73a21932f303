"""The intra-mode task: train a mode-ranking CNN on an intra-modes dataset through the shared trainer."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Sampler

from codecnn.data.intra_modes import KIND
from codecnn.data.schema import SPLIT_CODES, open_dataset_info
from codecnn.errors import CodecnnError
from codecnn.train.checkpoint import dataset_fingerprint
from codecnn.train.trainer import TrainConfig

TARGETS = ("best", "soft")
SOFT_TAU = 0.1
VAL_BATCH = 256


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


class IntraModeDataset(Dataset):
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
        self._h5, self._pid = None, None

    def __len__(self) -> int:
        return int(sum(len(r) for r in self.rows.values()))

    def _file(self):
        import h5py

        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._h5

    def __getitem__(self, item) -> dict:
        n, k = item
        g = self._file()[f"n{n}"]
        i = int(self.rows[n][k])
        peak = float((1 << int(g["bit_depth"][i])) - 1)
        return {
            "input": torch.from_numpy(canvas(g["orig"][i], g["ref"][i], n, peak)),
            "block_size": torch.tensor(n),
            "qp": torch.tensor(int(g["qp"][i])),
            "best": torch.tensor(int(g["best"][i])),
            "costs": torch.from_numpy(g["costs"][i].astype(np.float32)),
        }

    def inputs(self, n: int) -> dict:
        """Network inputs of all blocks of size ``n``, read in bulk (for evaluation)."""
        g = self._file()[f"n{n}"]
        r = self.rows[n]
        peak = (1 << g["bit_depth"][()][r].astype(np.int64)) - 1
        return {
            "input": torch.from_numpy(canvas(g["orig"][()][r], g["ref"][()][r], n, peak)),
            "block_size": torch.full((len(r),), n),
            "qp": torch.from_numpy(g["qp"][()][r].astype(np.int64)),
        }

    def arrays(self, n: int) -> dict:
        """The label arrays of the blocks of size ``n`` (for metrics)."""
        g = self._file()[f"n{n}"]
        r = self.rows[n]
        key = g["seq"][()][r].astype(np.int64) * 1_000_000 + g["frame"][()][r] * 100 + g["qp"][()][r] + 1
        return {
            "costs": g["costs"][()][r],
            "best": g["best"][()][r].astype(np.int64),
            "hadamard": g["hadamard"][()][r],
            "pos": g["pos"][()][r],
            "key": key,
        }


class BlockSizeStepSampler(Sampler):
    """Step ``s`` draws a global batch of one block size (sizes in turn), from that size's epoch
    permutations seeded by ``(seed, size, epoch)``; rank r of W takes its slice. Resume- and DDP-exact
    like :class:`codecnn.train.data.StepSampler`."""

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
            perm = np.random.default_rng([self.seed, n, p // count]).permutation(count)
            out.append((n, int(perm[p % count])))
        return out

    def __iter__(self):
        step = self.start
        while self.steps is None or step < self.steps:
            yield from self.batch_items(step)
            step += 1

    def __len__(self) -> int:
        return (self.steps - self.start) * (self.batch // self.world)


def soft_targets(costs: torch.Tensor, tau: float = SOFT_TAU) -> torch.Tensor:
    """Softmin over the 35 costs, on a per-block scale: ``softmax(-(c - min) / (tau * (mean - min)))``."""
    lo = costs.min(1, keepdim=True).values
    scale = (costs.mean(1, keepdim=True) - lo).clamp_min(1e-6)
    return torch.softmax(-(costs - lo) / (tau * scale), 1)


class IntraTask:
    """Training and validation of a mode-ranking network (``modenet``) on an intra-modes dataset."""

    kind = KIND

    def __init__(self, target: str = "best"):
        if target not in TARGETS:
            raise CodecnnError(f"--target must be one of {', '.join(TARGETS)}")
        self.target = target

    def datasets(self, cfg: TrainConfig):
        train = IntraModeDataset(cfg.data, "train", cfg.qps or None)
        if len(train) == 0:
            raise CodecnnError(f"{cfg.data}: no training blocks (split train)")
        val = IntraModeDataset(cfg.data, "val", cfg.qps or None)
        return train, (val if len(val) else None), dataset_fingerprint(train.info)

    def sampler(self, train_ds, cfg: TrainConfig, start_step: int, steps: int, info):
        return BlockSizeStepSampler(train_ds, cfg.batch, cfg.seed, start_step, info.rank, info.world, steps)

    def loss(self, model: nn.Module, batch: dict, cfg: TrainConfig) -> torch.Tensor:
        logits = model(batch["input"], batch["block_size"], batch["qp"]).float()
        if self.target == "best":
            return F.cross_entropy(logits, batch["best"])
        return -(soft_targets(batch["costs"]) * F.log_softmax(logits, 1)).sum(1).mean()

    @torch.no_grad()
    def validate(self, model: nn.Module, val_ds: IntraModeDataset, device: torch.device, cfg: TrainConfig) -> dict:
        r = mode_metrics(model, val_ds, device)
        o = r["overall"]["network"]
        r.update(
            score=o["top3"],
            curves={f"top{k}": o[f"top{k}"] for k in (1, 3, 8)},
            curve_label="val recall of the best mode",
        )
        return r


@torch.no_grad()
def mode_metrics(model: nn.Module, ds: IntraModeDataset, device: torch.device) -> dict:
    """Network and baseline metrics on every block of ``ds`` (see :mod:`codecnn.intra_metrics`)."""
    from codecnn.intra_metrics import evaluate_rankings

    model.eval()
    scores, data = {}, {}
    for n in sorted(ds.rows):
        b = ds.inputs(n)
        out = []
        for s in range(0, len(b["qp"]), VAL_BATCH):
            sl = slice(s, s + VAL_BATCH)
            out.append(
                model(b["input"][sl].to(device), b["block_size"][sl].to(device), b["qp"][sl].to(device)).float().cpu()
            )
        scores[n] = torch.cat(out).numpy()
        data[n] = ds.arrays(n)
    model.train()
    return evaluate_rankings(scores, data)
