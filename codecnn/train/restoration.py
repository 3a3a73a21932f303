"""The restoration task: reconstructed luma CTU -> restored CTU, trained on valid (non-padded) pixels.

Validation (:func:`codecnn.eval.restoration.restoration_metrics`) measures what a codec user reads off a
paper's table: per QP, the mean frame Y-PSNR gain of the restored output over the reconstruction. The
score is the mean gain over the pictures; ``best.pt`` moves when the paired per-picture difference beats its
standard error.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from codecnn.data.cache import resolve_cache
from codecnn.data.restoration import KIND
from codecnn.data.restoration_dataset import CTUCache, CTUDataset, StepSampler, cache_nbytes
from codecnn.eval.restoration import restoration_metrics
from codecnn.train.checkpoint import dataset_fingerprint
from codecnn.train.config import LOSSES, TrainConfig

log = logging.getLogger(__name__)

VAL_BATCH = 16


GAIN_EPS = 1e-10  # in [0, 1]^2 units: keeps log(MSE) finite on perfectly coded patches


def masked_loss(
    out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str = "l1", reference: torch.Tensor | None = None
) -> torch.Tensor:
    """Loss on the pixels where ``mask`` is 1 (picture, not padding), in fp32, per sample then averaged
    over samples (every sample weighs the same, so the mean of the per-rank losses of a DDP run is
    exactly the single-process loss of the same global batch).

    ``l1``/``l2``: mean absolute / squared error. ``gain``: minus the PSNR gain in dB of the output over
    ``reference`` (the reconstruction), ``10 log10(MSE_out / MSE_ref)``: every patch counts by its
    relative improvement, so low-QP patches (small errors) are not drowned by high-QP ones as with L2.
    """
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; use one of {', '.join(LOSSES)}")
    d = out.float() - target.float()
    e = d.abs() if kind == "l1" else d * d
    n = mask.flatten(1).sum(1).clamp_min(1.0)
    per_sample = (e * mask).flatten(1).sum(1) / n
    if kind == "gain":
        if reference is None:
            raise ValueError("the gain loss needs the reference (the reconstruction)")
        r = reference.float() - target.float()
        ref_mse = (r * r * mask).flatten(1).sum(1) / n
        return (10.0 * (torch.log10(per_sample + GAIN_EPS) - torch.log10(ref_mse + GAIN_EPS))).mean()
    return per_sample.mean()


class RestorationTask:
    """Training and validation of a luma restoration network (e.g. ``rdn``) on a CTU dataset."""

    kind = KIND

    def __init__(self, context: int):
        self.context = context

    def datasets(self, cfg: TrainConfig):
        from codecnn.errors import CodecnnError

        train = CTUDataset(cfg.data, "train", cfg.qps or None, cfg.patch, cfg.slice_types or None, cfg.repeat)
        if train.context != self.context:
            raise CodecnnError(
                f"{cfg.data}: CTUs carry a {train.context}-pixel context, the network consumes "
                f"{self.context}; rebuild the dataset with --context {self.context}"
            )
        if len(train) == 0:
            raise CodecnnError(
                f"{cfg.data}: no training samples (split train{', QP ' + str(list(cfg.qps)) if cfg.qps else ''}"
                f"{', slice types ' + ','.join('BPI'[t] for t in cfg.slice_types) if cfg.slice_types else ''}): "
                "check --qp and --slice-types against the dataset (codecnn info)"
            )
        val = CTUDataset(cfg.data, "val", cfg.qps or None, 0, cfg.slice_types or None)
        return train, (val if len(val) else None), dataset_fingerprint(train.info)

    def sampler(self, train_ds, cfg: TrainConfig, start_step: int, steps: int, info):
        return StepSampler(train_ds, cfg.batch, cfg.seed, start_step, info.rank, info.world, cfg.augment, steps)

    def cached_batches(self, train_ds, sampler, cfg: TrainConfig, info):
        """The step batches cropped from the split decompressed in memory (``--cache``), or None (DataLoader).

        Under torchrun every rank caches the whole split, not a shard: :class:`StepSampler` deals the
        positions of one global permutation to the ranks, so any rank may need any sample at any step, and
        sharding the data would change which samples a step sees (a DDP run would no longer equal the
        single-process run). The ``auto`` memory rule counts one copy per process on this host.
        """
        copies = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        mode, why = resolve_cache(cfg.cache, cache_nbytes(train_ds), copies, device=info.device)
        if info.main:
            log.info("train data cache: %s (%s)", mode, why)
        if mode == "off":
            return None
        cache = CTUCache.for_mode(train_ds, mode, info.device)
        if info.main:
            log.info("cached %d train CTUs: %.0f MiB", len(cache), cache.nbytes / 2**20)
        return cache.batches(sampler)

    def loss(self, model: nn.Module, batch: dict, cfg: TrainConfig) -> torch.Tensor:
        out = model(batch["input"], batch["qp"])
        c = self.context
        centre = batch["input"][:, :1, c:-c, c:-c] if c else batch["input"][:, :1]
        return masked_loss(out, batch["target"], batch["mask"], cfg.loss, centre)

    @torch.no_grad()
    def validate(self, model: nn.Module, val_ds: CTUDataset, device: torch.device, cfg: TrainConfig) -> dict:
        return restoration_metrics(model, val_ds, device, amp=cfg.amp)
