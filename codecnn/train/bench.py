"""Where training time goes: the data pipeline alone, the model step alone, and the full loop."""

from __future__ import annotations

import time

import torch

from codecnn.data.restoration import CTUDataset, StepSampler
from codecnn.models import build_model


def _rate(n_samples: int, fn, warmup: int = 1, reps: int = 3) -> float:
    for _ in range(warmup):
        fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return n_samples * reps / (time.perf_counter() - t)


def bench_train(
    data: str,
    arch: str,
    config,
    batch: int = 16,
    patch: int = 64,
    workers: int = 2,
    device: str = "cpu",
    channels_last: bool = True,
    steps: int = 4,
) -> dict:
    """Samples per second of (1) loading batches, (2) a training step on synthetic tensors, (3) both."""
    dev = torch.device(device)
    ds = CTUDataset(data, "train", patch=patch)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch,
        num_workers=workers,
        sampler=StepSampler(ds, batch, 0, steps=None),
        persistent_workers=workers > 0,
    )
    it = iter(loader)
    data_rate = _rate(batch * steps, lambda: [next(it) for _ in range(steps)])

    model = build_model(arch, config).to(dev)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    c = model.context
    x = torch.rand(batch, 1, patch + 2 * c, patch + 2 * c, device=dev).contiguous(memory_format=fmt)
    t = torch.rand(batch, 1, patch, patch, device=dev)
    q = torch.full((batch,), 32, device=dev)

    def step(inp=x, tgt=t, qp=q):
        loss = (model(inp, qp) - tgt).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    model_rate = _rate(batch, step, warmup=2, reps=steps)

    def full():
        b = next(it)
        step(b["input"].to(dev).contiguous(memory_format=fmt), b["target"].to(dev), b["qp"].to(dev))

    loop_rate = _rate(batch, full, warmup=2, reps=steps)
    bottleneck = "data pipeline" if data_rate < model_rate else "model step"
    return {"data": data_rate, "model": model_rate, "loop": loop_rate, "bottleneck": bottleneck}
