"""Benchmark: codecnn's trainer against a plain PyTorch loop, same data, same network, same wall-clock budget.

The plain loop is what a researcher writes in forty lines: random 8-aligned 64x64 crops with flips from
the train split, Adam, MSE, a cosine schedule over the budget, no EMA, no masking subtleties beyond the
picture mask. Both networks are then measured by the same validation (``restoration_metrics``: per-QP
mean frame Y-PSNR gain on the val split, with its standard error). codecnn must do at least as well; a
difference above the validation noise is a defect to explain.

    python scripts/bench_recipe.py --data samples.h5 --seconds 300 [--blocks 2 --layers 4 --growth 16]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import numpy as np
import torch
from click.testing import CliRunner

from codecnn.cli import cli
from codecnn.data.restoration import CTUDataset
from codecnn.eval.restoration import restoration_metrics
from codecnn.models import RDNConfig, build_model
from codecnn.train.checkpoint import load_model


def plain_loop(data: str, config: RDNConfig, seconds: float, lr: float, batch: int, seed: int = 0):
    """The forty-line reference: crops, flips, Adam, MSE on the picture pixels, cosine over the time budget."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ds = CTUDataset(data, "train", patch=64)
    model = build_model("rdn", config)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t0, steps = time.perf_counter(), 0
    while (spent := time.perf_counter() - t0) < seconds:
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(1.0, spent / seconds)))
        items = [ds[ds.crop(int(i), rng)] for i in rng.integers(0, len(ds), batch)]
        x = torch.stack([it["input"] for it in items])
        t = torch.stack([it["target"] for it in items])
        m = torch.stack([it["mask"] for it in items])
        qp = torch.stack([it["qp"] for it in items])
        loss = (((model(x, qp) - t) ** 2) * m).sum() / m.sum().clamp_min(1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    return model, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--growth", type=int, default=16)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0, help="both runs' seed (the run-to-run spread: try several)")
    a = ap.parse_args()
    config = RDNConfig(num_blocks=a.blocks, num_layers=a.layers, growth=a.growth, num_features=a.features, qp_map=True)
    val = CTUDataset(a.data, "val", patch=0)
    device = torch.device("cpu")

    model, steps = plain_loop(a.data, config, a.seconds, a.lr, a.batch, a.seed)
    plain = restoration_metrics(model, val, device)
    with tempfile.TemporaryDirectory() as d:
        argv = [
            "train",
            "rdn",
            "--data",
            a.data,
            "--out",
            f"{d}/run",
            "--blocks",
            str(a.blocks),
            "--layers",
            str(a.layers),
            "--growth",
            str(a.growth),
            "--features",
            str(a.features),
            "--qp-map",
            "--loss",
            "l2",
            "--lr",
            str(a.lr),
            "--batch",
            str(a.batch),
            "--time-limit",
            str(a.seconds),
            "--val-every",
            "1000000",
            "--workers",
            "0",
            "--seed",
            str(a.seed),
        ]
        r = CliRunner().invoke(cli, argv)
        if r.exit_code:
            raise SystemExit(r.output)
        ours_model, ck = load_model(f"{d}/run/last.pt")
        ours, ours_steps = restoration_metrics(ours_model, val, device), ck["step"]
    print(f"{a.seconds:.0f} s each on {a.data} (val: {plain['frames']} frames, {plain['ctus']} CTUs), RDN {config}")
    for name, m, extra in (("plain loop", plain, f"{steps} steps"), ("codecnn train", ours, f"{ours_steps} steps")):
        print(
            f"{name:14} gain {m['score']:+.4f} +- {m['score_se']:.4f} dB  "
            + " ".join(f"QP{q} {v['gain']:+.4f}" for q, v in m["per_qp"].items())
            + f"  {extra}"
        )
    diff = np.asarray(ours["frame_gains"]) - np.asarray(plain["frame_gains"])
    se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    print(f"codecnn - plain: {diff.mean():+.4f} dB per frame (paired standard error {se:.4f})")


if __name__ == "__main__":
    main()
