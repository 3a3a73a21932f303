"""Benchmark: what each lever of the restoration recipe is worth, one lever at a time, same data and time budget.

A base recipe is trained with ``codecnn train rdn`` for ``--seconds`` (the learning rate annealed over that
budget), then each variant changes one lever and trains for the same wall-clock time: learning rate, L1 /
L2 / gain loss, batch and patch size at the same pixels per step, a per-QP model (QP 37 only, compared at
QP 37), EMA of the weights, fewer distinct CTUs (frames per sequence) and the network size. Every run is measured by
the same validation (``restoration_metrics`` on the val split: mean frame Y-PSNR gain over the QPs, its
standard error over the frames) and against the base frame by frame (paired difference and its standard
error). The standard errors are the validation set's noise only: one seed per run, so differences smaller
than a run-to-run spread (not measured here) say nothing.

    python scripts/bench_levers.py --data mixed.h5 --seconds 240 --out levers.json [--only base,lr-low]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time

import h5py
import numpy as np
import torch
from click.testing import CliRunner

from codecnn.cli import cli
from codecnn.data.restoration_dataset import CTUDataset
from codecnn.data.schema import SPLIT_CODES
from codecnn.eval.metrics import standard_error
from codecnn.eval.restoration import restoration_metrics
from codecnn.files import atomic_write_text
from codecnn.train.checkpoint import load_model

BASE = {
    "--blocks": "2",
    "--layers": "4",
    "--growth": "16",
    "--features": "32",
    "--loss": "gain",
    "--lr": "5e-4",
    "--batch": "16",
    "--patch": "64",
    "--ema": "0",
}

# name -> (what changes, options replacing the base's, extra flags)
VARIANTS = {
    "base": ("the base recipe", {}, []),
    "lr-low": ("learning rate 2e-4", {"--lr": "2e-4"}, []),
    "lr-high": ("learning rate 1.5e-3", {"--lr": "1.5e-3"}, []),
    "l1": ("L1 loss", {"--loss": "l1"}, []),
    "l2": ("L2 (MSE) loss", {"--loss": "l2"}, []),
    "patch-128": ("batch 4 of 128x128 (same pixels per step)", {"--batch": "4", "--patch": "128"}, []),
    "patch-32": ("batch 64 of 32x32 (same pixels per step)", {"--batch": "64", "--patch": "32"}, []),
    "ema": ("EMA of the weights, decay 0.999", {"--ema": "0.999"}, []),
    "per-qp-37": ("a QP 37 model (compared at QP 37)", {}, ["--qp", "37"]),
    "frames-10": ("10 frames per video sequence (fewer distinct CTUs)", {}, []),
    "size-small": ("1 block (23 k parameters)", {"--blocks": "1"}, []),
    "size-large": ("3 blocks of 6 layers (lab notes' +0.15 dB shape)", {"--blocks": "3", "--layers": "6"}, []),
}


def fewer_frames(src: str, dst: str, frames: int) -> int:
    """Copy ``src`` with the train split cut to frames < ``frames`` of each sequence; the rest become test
    rows of the copy (never read here). Returns the train CTUs left."""
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        split, frame = f["split"][:], f["frame"][:]
        drop = (split == SPLIT_CODES["train"]) & (frame >= frames)
        split[drop] = SPLIT_CODES["test"]
        f["split"][:] = split
        return int((split == SPLIT_CODES["train"]).sum())


def train(data: str, out: str, seconds: float, options: dict, extra: list) -> None:
    argv = ["train", "rdn", "--data", data, "--out", out, "--qp-map", "--time-limit", str(seconds)]
    argv += ["--val-every", "100000000", "--workers", "0"]
    for k, v in {**BASE, **options}.items():
        argv += [k, v]
    r = CliRunner().invoke(cli, argv + extra)
    if r.exit_code:
        raise SystemExit(r.output)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--seconds", type=float, default=240)
    ap.add_argument("--out", required=True, help="JSON file for the results")
    ap.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    a = ap.parse_args()
    names = [n for n in a.only.split(",") if n] or list(VARIANTS)
    if "base" not in names:
        names.insert(0, "base")
    val = CTUDataset(a.data, "val", patch=0)
    results = {}
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            what, options, extra = VARIANTS[name]
            data, train_ctus = a.data, None
            if name == "frames-10":
                data = f"{d}/frames10.h5"
                train_ctus = fewer_frames(a.data, data, 10)
            t0 = time.perf_counter()
            train(data, f"{d}/{name}", a.seconds, options, extra)
            model, ck = load_model(f"{d}/{name}/last.pt")
            m, steps = restoration_metrics(model, val, torch.device("cpu")), ck["step"]
            results[name] = {
                "lever": what,
                "options": {**BASE, **options},
                "extra": extra,
                "steps": steps,
                "seconds": time.perf_counter() - t0,
                "train_ctus": train_ctus,
                "score": m["score"],
                "score_se": m["score_se"],
                "per_qp": m["per_qp"],
                "frame_gains": list(map(float, m["frame_gains"])),
            }
            print(f"{name:11} {m['score']:+.4f} +- {m['score_se']:.4f} dB  {steps} steps  ({what})", flush=True)
    base = results["base"]
    for name, r in results.items():
        if name == "per-qp-37":
            ref, se = base["per_qp"]["37"], r["per_qp"]["37"]
            r["vs_base"] = se["gain"] - ref["gain"]
            r["vs_base_se"] = float(np.hypot(se["gain_se"], ref["gain_se"]))  # unpaired: one QP of the base
        else:
            diff = np.asarray(r["frame_gains"]) - np.asarray(base["frame_gains"])
            r["vs_base"] = float(diff.mean())
            r["vs_base_se"] = standard_error(diff)
    summary = {
        "data": a.data,
        "seconds": a.seconds,
        "val": {"frame_qps": len(base["frame_gains"]), "ctus": len(val)},
        "base": BASE,
        "results": results,
    }
    atomic_write_text(a.out, json.dumps(summary, indent=1))
    print(f"\n{a.seconds:.0f} s each on {a.data}; val {len(val)} CTUs, {len(base['frame_gains'])} frame-QPs")
    print("| lever | steps | val gain (dB) | vs base (paired) |")
    print("|---|---|---|---|")
    for name, r in results.items():
        gain = f"{r['score']:+.4f} ± {r['score_se']:.4f}"
        if name == "per-qp-37":
            gain = f"QP37 {r['per_qp']['37']['gain']:+.4f} (base {base['per_qp']['37']['gain']:+.4f})"
        print(f"| {r['lever']} | {r['steps']} | {gain} | {r['vs_base']:+.4f} ± {r['vs_base_se']:.4f} |")


if __name__ == "__main__":
    main()
