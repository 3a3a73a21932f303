"""The intra-mode task: train a mode-ranking CNN on an intra-modes dataset through the shared trainer."""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from codecnn.data.cache import resolve_cache
from codecnn.data.intra import KIND, BlockCache, BlockSizeStepSampler, IntraModeDataset, block_cache_nbytes
from codecnn.errors import CodecnnError
from codecnn.eval.intra import mode_metrics
from codecnn.train.checkpoint import dataset_fingerprint
from codecnn.train.config import TrainConfig

log = logging.getLogger("codecnn")
TARGETS = ("best", "soft")
SOFT_TAU = 0.1


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

    def cached_batches(self, train_ds, sampler, cfg: TrainConfig, info):
        """The step batches from the split read once into memory (``--cache``, as for restoration: ``auto`` is
        ``ram`` when it fits in a quarter of physical memory; ``device`` keeps host memory here), or None."""
        copies = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        mode, why = resolve_cache(cfg.cache, block_cache_nbytes(train_ds), copies, device="cpu")
        if info.main:
            log.info("train data cache: %s (%s)", mode, why)
        if mode == "off":
            return None
        cache = BlockCache(train_ds)
        if info.main:
            log.info("cached %d train blocks: %.0f MiB", len(cache), cache.nbytes / 2**20)
        return cache.batches(sampler)

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
