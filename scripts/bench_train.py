"""Benchmark: how close training and inference of the default RDN come to this CPU's matmul rate.

In one run:
1. the FLOP rate of a large fp32 matrix multiply (the machine's practical peak);
2. the achieved FLOP rate of a training step of the default RDN (32 features, 4 RDBs, 6 layers, growth
   24), batch 16, 64x64 patches, channels_last as the trainer runs it (FLOPs = 6 x MACs: forward 2,
   backward 4, MACs counted from the modules), and its ratio to (1) (target >= 0.40);
3. inference of a 1920x1080 luma frame in CTU tiles (codecnn.eval.inference.filter_plane, one thread as
   well as all threads), FLOPs = 2 x MACs of the CTUs processed, ratio to (1) (target >= 0.50);
4. peak memory of that inference for a 1080p and a 2160p frame, each in a fresh process (target: the
   larger frame costs only its own sample buffers, not more activations).

    python scripts/bench_train.py
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch

from codecnn.eval.inference import filter_plane
from codecnn.models import RDN
from codecnn.models.complexity import count_macs
from codecnn.train.bench import matmul_rate, timed  # shared with codecnn bench-train

MEMORY_CHILD = r"""
def vmhwm_mib():  # peak RSS of this process image (ru_maxrss carries the parent's across exec)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
import json, sys, numpy as np, torch
from codecnn.eval.inference import filter_plane
from codecnn.models import RDN
w, h = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
m = RDN()
plane = np.random.default_rng(0).integers(0, 1024, (h, w)).astype(np.uint16)
filter_plane(m, plane, 10)
print(json.dumps({"peak_mib": vmhwm_mib(),
                  "plane_mib": plane.nbytes / 2**20}))
"""


def train_rate(batch: int = 16, patch: int = 64, reps: int = 4) -> float:
    torch.manual_seed(0)
    model = RDN().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.rand(batch, 1, patch + 4, patch + 4).contiguous(memory_format=torch.channels_last)
    t = torch.rand(batch, 1, patch, patch)
    macs = count_macs(model, x) * batch

    def step():
        loss = (model(x) - t).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return 6 * macs / timed(step, reps)


def inference_rate(threads: int | None) -> tuple[float, float]:
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = RDN().eval()
        plane = np.random.default_rng(0).integers(0, 256, (1080, 1920)).astype(np.uint8)
        ctus = 15 * 9
        macs = count_macs(model, torch.zeros(1, 1, 132, 132)) * ctus
        seconds = timed(lambda: filter_plane(model, plane, 8), 1)
        return 2 * macs / seconds, seconds
    finally:
        torch.set_num_threads(saved)


def peak_memory(w: int, h: int) -> dict:
    r = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(w), str(h)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    threads = torch.get_num_threads()
    mm = matmul_rate()
    print(f"torch {torch.__version__}, {threads} threads")
    print(f"fp32 matmul 2048^3            : {mm / 1e9:7.1f} GFLOP/s")
    tr = train_rate()
    print(f"RDN training step (b16, 64x64): {tr / 1e9:7.1f} GFLOP/s   ratio {tr / mm:.2f}  (target >= 0.40)")
    inf, sec = inference_rate(None)
    print(
        f"RDN 1080p inference, tiles    : {inf / 1e9:7.1f} GFLOP/s   ratio {inf / mm:.2f}  (target >= 0.50)"
        f"   {sec:.2f} s/frame"
    )
    inf1, sec1 = inference_rate(1)
    mm1 = None
    torch.set_num_threads(1)
    mm1 = matmul_rate()
    torch.set_num_threads(threads)
    print(
        f"  one thread                  : {inf1 / 1e9:7.1f} GFLOP/s   ratio {inf1 / mm1:.2f} of one-thread "
        f"matmul ({mm1 / 1e9:.1f} GFLOP/s)   {sec1:.2f} s/frame"
    )
    a, b = peak_memory(1920, 1080), peak_memory(3840, 2160)
    extra = b["peak_mib"] - a["peak_mib"]
    buffers = 4 * (b["plane_mib"] - a["plane_mib"])  # plane, padded copy, float tile stack, output
    print(
        f"peak memory 1080p {a['peak_mib']:.0f} MiB, 2160p {b['peak_mib']:.0f} MiB: +{extra:.0f} MiB for 4x the "
        f"pixels (sample buffers alone: ~{buffers:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
