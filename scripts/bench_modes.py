"""Benchmark: does the mode network pay for itself in an encoder? Its inference time per block (batched,
one CPU thread; and CUDA when present) against the time of the Hadamard SATD evaluations a pruned rough
mode decision saves, at the labeller's measured cost per block and mode.

The SATD cost per block-mode comes from ``label_blocks(..., cost="hadamard")`` on a real 1080p frame
(bigbuckbunny's first frame scaled up): it predicts all 35 modes and takes their Hadamard SATD, which is
exactly the work of HM's rough mode decision. A pruned RMD evaluates the network's top k plus the MPMs,
at most k + 3 modes, so it saves at least 35 - (k + 3) evaluations per block; the network is worth running
only if its time per block is below that saving.

    python scripts/bench_modes.py [--checkpoint zoo:modenet-ai | runs/modenet/best.pt] [--blocks 4096]
    python scripts/bench_modes.py --channels 16 --depth 3 --hidden 64 --normalise --pool-to 9   # a shape, untrained
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_intra_labels import frame_1080p  # noqa: E402

from codecnn.data.intra import canvas  # noqa: E402
from codecnn.hevc._intra_kernel import warm_up  # noqa: E402
from codecnn.hevc.intra_labels import label_blocks  # noqa: E402
from codecnn.models import ModeNetConfig, build_model  # noqa: E402
from codecnn.train.checkpoint import load_model  # noqa: E402

SIZES = (4, 8, 16, 32)
KS = (1, 2, 3, 4, 6, 8, 10, 12)


def satd_seconds_per_block_mode(y: np.ndarray) -> dict[int, float]:
    """Seconds per (block, mode) of references + prediction + Hadamard SATD, per block size, on one core."""
    warm_up()
    out = {}
    for n in SIZES:
        label_blocks(y[:256, :256], y[:256, :256], n, cost="hadamard", threads=1)  # compiled and warm
        t = time.perf_counter()
        lab = label_blocks(y, y, n, cost="hadamard", threads=1)
        out[n] = (time.perf_counter() - t) / (len(lab.pos) * 35)
    return out


def network_seconds_per_block(model, y: np.ndarray, blocks: int, device: torch.device) -> dict[int, float]:
    """Seconds per block of the network's forward pass on real blocks of the frame, in batches of ``blocks``."""
    out = {}
    for n in SIZES:
        lab = label_blocks(y[: 8 * 64, : 8 * 64], y[: 8 * 64, : 8 * 64], n, cost="hadamard", threads=1)
        rows = np.resize(np.arange(len(lab.pos)), blocks)
        k = np.arange(-1, 2 * n)
        ys = np.clip(lab.pos[rows, 0:1] + k, 0, y.shape[0] - 1)
        xs = np.clip(lab.pos[rows, 1:2] + k, 0, y.shape[1] - 1)
        patches = y[ys[:, :, None], xs[:, None, :]]
        x = torch.from_numpy(canvas(patches, lab.ref[rows], n, np.full(blocks, 255.0))).to(device)
        size, qp = torch.full((blocks,), n, device=device), torch.full((blocks,), 32, device=device)
        with torch.no_grad():
            model(x, size, qp)  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(3):
                model(x, size, qp)
            if device.type == "cuda":
                torch.cuda.synchronize()
        out[n] = (time.perf_counter() - t) / (3 * blocks)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="a modenet checkpoint (default: an untrained default ModeNet)")
    ap.add_argument("--blocks", type=int, default=4096, help="blocks per network call")
    ap.add_argument("--channels", type=int, default=32, help="without --checkpoint: the untrained network's shape")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--normalise", action="store_true")
    ap.add_argument("--pool-to", type=int, default=0)
    ap.add_argument("--size-heads", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.checkpoint:
        model = load_model(a.checkpoint, task="intra-modes")[0]
    else:
        shape = {k: getattr(a, k) for k in ("channels", "depth", "hidden", "normalise", "pool_to", "size_heads")}
        model = build_model("modenet", ModeNetConfig(**shape))
    model.eval()
    y = frame_1080p()
    satd = satd_seconds_per_block_mode(y)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"ModeNet {model.config}; SATD time per block-mode from label_blocks(cost='hadamard'), one thread")
    for dev in devices:
        net = network_seconds_per_block(model.to(dev), y, a.blocks, dev)
        name = "CPU, one thread" if dev.type == "cpu" else torch.cuda.get_device_name(dev)
        print(f"\nnetwork on {name}, batches of {a.blocks} blocks")
        print(f"{'N':>3} {'SATD/mode':>10} {'net/block':>10} " + " ".join(f"{'saved@k=' + str(k):>11}" for k in KS))
        for n in SIZES:
            saved = [(35 - (k + 3)) * satd[n] for k in KS]
            print(
                f"{n:>3} {satd[n] * 1e9:>8.0f}ns {net[n] * 1e6:>8.2f}us "
                + " ".join(f"{s * 1e6:>9.2f}us" if s > net[n] else f"{s * 1e6:>8.2f}us-" for s in saved)
            )
        print("(saved = the SATD time of 35 - (k + 3) modes; '-' marks where the network costs more than it saves)")


if __name__ == "__main__":
    main()
