"""Benchmark: codecnn's trainer against a plain PyTorch loop, same data, same network, same budget.

The plain loop is what a researcher writes in forty lines: random 8-aligned 64x64 crops with flips from
the train split, Adam, MSE, a cosine schedule over the budget, no EMA, no masking subtleties beyond the
picture mask. Both networks are then measured by the same validation (``restoration_metrics``: per-QP
mean frame Y-PSNR gain on the val split, with its standard error). codecnn must do at least as well; a
difference above the validation noise is a defect to explain.

The budget is wall-clock seconds (``--seconds``, the default) or a number of steps for both (``--steps``:
the per-step comparison, free of the two loops' speeds). ``--same-crops`` makes the plain loop draw its
crops from codecnn's sampler (the same CTUs, crops and flips at every step), so that what remains between
the two is the trainer alone. ``--codecnn-args`` appends options to codecnn's run (e.g. its own recipe:
``--codecnn-args "--loss gain --ema 0.999"``); given several times, it trains one codecnn run per value, each
compared with the same plain loop. ``--parallel`` runs them all at once, one process and one thread each
(the same load on every run, whatever the number of cores).

    python scripts/bench_recipe.py --data samples.h5 --seconds 300 [--blocks 2 --layers 4 --growth 16]
    python scripts/bench_recipe.py --data samples.h5 --steps 1500 --same-crops --parallel
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import shlex
import tempfile
import time

import numpy as np
import torch
from click.testing import CliRunner

from codecnn.cli import cli
from codecnn.data.restoration_dataset import CTUDataset, StepSampler
from codecnn.eval.metrics import standard_error
from codecnn.eval.restoration import restoration_metrics
from codecnn.models import RDNConfig, build_model
from codecnn.train.checkpoint import load_model


def plain_loop(
    data: str,
    config: RDNConfig,
    seconds: float | None,
    lr: float,
    batch: int,
    seed: int = 0,
    steps: int | None = None,
    same_crops: bool = False,
):
    """The forty-line reference: crops, flips, Adam, MSE on the picture pixels, cosine over the budget (the
    time budget, or ``steps``). ``same_crops``: the crops of codecnn's sampler instead of its own draws."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ds = CTUDataset(data, "train", patch=64)
    sampler = StepSampler(ds, batch, seed) if same_crops else None
    model = build_model("rdn", config)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t0, step = time.perf_counter(), 0
    while (spent := time.perf_counter() - t0) < (math.inf if steps else seconds) and step < (steps or math.inf):
        done = step / steps if steps else spent / seconds
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
        if sampler is not None:
            specs = sampler.batch_specs(step)
        else:
            specs = [ds.crop(int(i), rng) for i in rng.integers(0, len(ds), batch)]
        items = [ds[s] for s in specs]
        x = torch.stack([it["input"] for it in items])
        t = torch.stack([it["target"] for it in items])
        m = torch.stack([it["mask"] for it in items])
        qp = torch.stack([it["qp"] for it in items])
        loss = (((model(x, qp) - t) ** 2) * m).sum() / m.sum().clamp_min(1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
    return model, step


def codecnn_run(a, config: RDNConfig, extra: str):
    """codecnn's ``train rdn`` with the same network, loss, learning rate, batch, seed and budget."""
    argv = ["train", "rdn", "--data", a.data, "--blocks", str(a.blocks), "--layers", str(a.layers)]
    argv += ["--growth", str(a.growth), "--features", str(a.features), "--qp-map", "--loss", "l2"]
    argv += ["--lr", str(a.lr), "--batch", str(a.batch), "--val-every", "1000000", "--workers", "0"]
    argv += ["--seed", str(a.seed)]
    argv += ["--steps", str(a.steps)] if a.steps else ["--time-limit", str(a.seconds)]
    argv += shlex.split(extra)
    with tempfile.TemporaryDirectory() as d:
        r = CliRunner().invoke(cli, [*argv, "--out", f"{d}/run"])
        if r.exit_code:
            raise SystemExit(r.output)
        model, ck = load_model(f"{d}/run/last.pt")  # the EMA weights where the run kept them
        return model, ck["step"]


def run_arm(arm: str | None, a, threads: int | None = None):
    """One arm (None: the plain loop, else codecnn with these extra options): its validation metrics and steps."""
    if threads:
        torch.set_num_threads(threads)
    config = RDNConfig(num_blocks=a.blocks, num_layers=a.layers, growth=a.growth, num_features=a.features, qp_map=True)
    if arm is None:
        model, steps = plain_loop(a.data, config, a.seconds, a.lr, a.batch, a.seed, a.steps, a.same_crops)
    else:
        model, steps = codecnn_run(a, config, arm)
    return restoration_metrics(model, CTUDataset(a.data, "val", patch=0), torch.device("cpu")), steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--steps", type=int, default=None, help="a step budget for both instead of --seconds")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--growth", type=int, default=16)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0, help="both runs' seed (the run-to-run spread: try several)")
    ap.add_argument("--same-crops", action="store_true", help="the plain loop takes codecnn's sampler's crops")
    ap.add_argument("--parallel", action="store_true", help="all runs at once, one process and one thread each")
    ap.add_argument(
        "--codecnn-args", action="append", help="options appended to codecnn's train command (repeat: one run each)"
    )
    a = ap.parse_args()
    arms = [None, *(a.codecnn_args or [""])]
    if a.parallel:
        with multiprocessing.get_context("spawn").Pool(len(arms)) as pool:
            jobs = [pool.apply_async(run_arm, (arm, a, 1)) for arm in arms]
            results = [j.get() for j in jobs]
    else:
        results = [run_arm(arm, a) for arm in arms]
    budget = f"{a.steps} steps" if a.steps else f"{a.seconds:.0f} s"
    (plain, _), side = results[0], f" side by side, one thread each ({len(arms)} runs)" if a.parallel else ""
    print(
        f"{budget} each{side} on {a.data} (val: {plain['frames']} frames, {plain['ctus']} CTUs), RDN {a.blocks}x"
        f"{a.layers} growth {a.growth}, L2 at lr {a.lr}, batch {a.batch}, seed {a.seed}"
        + (", same crops" if a.same_crops else "")
    )
    for arm, (m, n) in zip(arms, results, strict=True):
        name = "plain loop" if arm is None else f"codecnn train {arm}".strip()
        print(
            f"{name:14} gain {m['score']:+.4f} +- {m['score_se']:.4f} dB  "
            + " ".join(f"QP{q} {v['gain']:+.4f}" for q, v in m["per_qp"].items())
            + f"  {n} steps"
        )
    for arm, (m, _) in zip(arms[1:], results[1:], strict=True):
        diff = np.asarray(m["frame_gains"]) - np.asarray(plain["frame_gains"])
        se = standard_error(diff) if len(diff) > 1 else float("nan")
        name = f"codecnn {arm}".strip()
        print(f"{name} - plain: {diff.mean():+.4f} dB per frame (paired standard error {se:.4f})")


if __name__ == "__main__":
    main()
