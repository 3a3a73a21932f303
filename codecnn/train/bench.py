"""Where training time goes: the data pipeline alone, the model step alone, and the full loop."""

from __future__ import annotations

import time

import torch

from codecnn.data.cache import resolve_cache
from codecnn.data.restoration_dataset import CTUCache, CTUDataset, StepSampler, cache_nbytes
from codecnn.models import build_model
from codecnn.models.complexity import count_macs


def _rate(n_samples: int, fn, warmup: int = 1, reps: int = 3) -> float:
    for _ in range(warmup):
        fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return n_samples * reps / (time.perf_counter() - t)


def timed(fn, reps: int) -> float:
    """Seconds per call of ``fn`` (after one warm-up call)."""
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def matmul_rate(n: int = 2048, device: str = "cpu") -> float:
    """FLOP/s of a large fp32 matrix multiply: the device's practical peak."""
    dev = torch.device(device)
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)

    def mm():
        a @ b
        if dev.type == "cuda":
            torch.cuda.synchronize()

    return 2 * n**3 / timed(mm, 5)


def peak_rss_bytes() -> int | None:  # ru_maxrss would carry a parent's peak across exec
    """Peak resident memory of this process (VmHWM), None where /proc does not say."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return None


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
    cache: str = "auto",
) -> dict:
    """Samples per second of (1) loading batches (from the in-memory cache, or the DataLoader when the cache
    is off), (2) a training step on synthetic tensors, (3) both; the model step's FLOP rate against a large
    fp32 matmul on the same device, and the bottleneck."""
    dev = torch.device(device)
    ds = CTUDataset(data, "train", patch=patch)
    mode, why = resolve_cache(cache, cache_nbytes(ds), device=dev)
    sampler = StepSampler(ds, batch, 0, steps=None)
    cached = None
    if mode == "off":
        loader = torch.utils.data.DataLoader(
            ds, batch_size=batch, num_workers=workers, sampler=sampler, persistent_workers=workers > 0
        )
        it = iter(loader)
    else:
        base = peak_rss_bytes()
        t = time.perf_counter()
        cached = CTUCache.for_mode(ds, mode, dev)
        load_s = time.perf_counter() - t
        it = cached.batches(sampler)
    data_rate = _rate(batch * steps, lambda: [next(it) for _ in range(steps)], reps=3 if cached is None else 30)

    model = build_model(arch, config).to(dev)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    c = model.context
    x = torch.rand(batch, 1, patch + 2 * c, patch + 2 * c, device=dev).contiguous(memory_format=fmt)
    t = torch.rand(batch, 1, patch, patch, device=dev)
    q = torch.full((batch,), 32, device=dev)
    flops = 6 * count_macs(model, x, q) * batch  # forward 2 x MACs, backward 4 x MACs

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
    gemm = matmul_rate(device=str(dev))
    achieved = flops * model_rate / batch
    if data_rate < model_rate:
        bottleneck = "data pipeline"
    else:
        bottleneck = f"model step ({achieved / gemm:.0%} of the fp32 GEMM rate: " + (
            "compute-bound convolutions)" if achieved >= 0.4 * gemm else "memory/overhead-bound small convolutions)"
        )
    r = {
        "data": data_rate,
        "model": model_rate,
        "loop": loop_rate,
        "bottleneck": bottleneck,
        "cache": mode,
        "cache_why": why,
        "model_flops": achieved,
        "gemm_flops": gemm,
    }
    if cached is not None:
        r.update(cache_bytes=cached.nbytes, cache_load_s=load_s, peak_rss=peak_rss_bytes(), base_rss=base)
    return r
