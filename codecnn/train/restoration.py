"""The restoration task: reconstructed luma CTU -> restored CTU, trained on valid (non-padded) pixels.

Validation measures what a codec user reads off a paper's table: per QP, the mean over frames of the
frame Y-PSNR of the reconstruction (the network's input) and of the restored output, both against the
original, with the output rounded and clipped to the bit depth as a codec would store it; the gain is
their difference. The score that picks the best checkpoint is the mean gain over the QPs.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from codecnn.data.schema import KIND
from codecnn.metrics import psnr_from_mse
from codecnn.train.checkpoint import dataset_fingerprint
from codecnn.train.data import CTUDataset, StepSampler
from codecnn.train.trainer import TrainConfig

LOSSES = ("l1", "l2", "gain")
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


def quantise(x: torch.Tensor, bit_depth: torch.Tensor) -> torch.Tensor:
    """Round [0, 1] samples to the integer grid of each sample's bit depth and clip, back in [0, 1]."""
    peak = ((1 << bit_depth.long()) - 1).to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return torch.round(x.clamp(0, 1) * peak) / peak


class RestorationTask:
    """Training and validation of a luma restoration network (e.g. ``rdn``) on a CTU dataset."""

    kind = KIND

    def __init__(self, context: int):
        self.context = context

    def datasets(self, cfg: TrainConfig):
        from codecnn.errors import CodecnnError

        train = CTUDataset(cfg.data, "train", cfg.qps or None, cfg.patch)
        if train.context != self.context:
            raise CodecnnError(
                f"{cfg.data}: CTUs carry a {train.context}-pixel context, the network consumes "
                f"{self.context}; rebuild the dataset with --context {self.context}"
            )
        if len(train) == 0:
            raise CodecnnError(
                f"{cfg.data}: no training samples (split train{', QP ' + str(list(cfg.qps)) if cfg.qps else ''})"
            )
        val = CTUDataset(cfg.data, "val", cfg.qps or None, 0)
        return train, (val if len(val) else None), dataset_fingerprint(train.info)

    def sampler(self, train_ds, cfg: TrainConfig, start_step: int, steps: int, info):
        return StepSampler(train_ds, cfg.batch, cfg.seed, start_step, info.rank, info.world, cfg.augment, steps)

    def loss(self, model: nn.Module, batch: dict, cfg: TrainConfig) -> torch.Tensor:
        out = model(batch["input"], batch["qp"])
        c = self.context
        centre = batch["input"][:, :1, c:-c, c:-c] if c else batch["input"][:, :1]
        return masked_loss(out, batch["target"], batch["mask"], cfg.loss, centre)

    @torch.no_grad()
    def validate(self, model: nn.Module, val_ds: CTUDataset, device: torch.device, cfg: TrainConfig) -> dict:
        return restoration_metrics(model, val_ds, device, amp=cfg.amp)


@torch.no_grad()
def restoration_metrics(model: nn.Module, ds: CTUDataset, device: torch.device, amp: bool = True) -> dict:
    """Per-QP mean frame Y-PSNR of input and output against the target, and the gain (see module doc)."""
    model.eval()
    c = ds.context
    sse = defaultdict(lambda: [0.0, 0.0, 0])  # (seq, frame, qp) -> [sse_in, sse_out, pixels]
    loader = torch.utils.data.DataLoader(ds, batch_size=VAL_BATCH, shuffle=False, num_workers=0)
    for batch in loader:
        x = batch["input"].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and amp):
            out = model(x, batch["qp"].to(device))
        bd = batch["bit_depth"].to(device)
        out = quantise(out.float(), bd)
        centre = x[:, :, c:-c, c:-c] if c else x
        t, m = batch["target"].to(device), batch["mask"].to(device)
        e_in = (((centre - t) ** 2) * m).flatten(1).sum(1).double().cpu()
        e_out = (((out - t) ** 2) * m).flatten(1).sum(1).double().cpu()
        n = m.flatten(1).sum(1).cpu()
        for k in range(x.shape[0]):
            key = (int(batch["seq"][k]), int(batch["frame"][k]), int(batch["qp"][k]))
            acc = sse[key]
            acc[0] += float(e_in[k])
            acc[1] += float(e_out[k])
            acc[2] += int(n[k])
    per_qp = defaultdict(lambda: [[], []])
    for (_, _, qp), (a, b, n) in sse.items():
        per_qp[qp][0].append(psnr_from_mse(a / n))  # samples are in [0, 1]: the peak is 1
        per_qp[qp][1].append(psnr_from_mse(b / n))
    table = {}
    for qp in sorted(per_qp):
        pin, pout = per_qp[qp]
        mi, mo = sum(pin) / len(pin), sum(pout) / len(pout)
        table[str(qp)] = {"psnr_in": mi, "psnr_out": mo, "gain": mo - mi, "frames": len(pin)}
    score = sum(v["gain"] for v in table.values()) / max(1, len(table))
    model.train()
    return {
        "score": score,
        "per_qp": table,
        "curves": {f"QP{q}": v["gain"] for q, v in table.items()},
        "curve_label": "val Y-PSNR gain (dB)",
    }
