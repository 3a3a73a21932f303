"""``codecnn train rdn|modenet``, ``model-info`` and ``bench-train``."""

from __future__ import annotations

import sys

import click

from codecnn.cli.group import cli, echo_lines
from codecnn.options import (
    COUNT,
    POSITIVE,
    rdn_config,
    rdn_options,
    restoration_train_options,
    train_config,
    train_options,
    verbosity,
)
from codecnn.train.config import CACHES


@cli.group()
def train():
    """Train a network (on GPU when present; several GPUs through torchrun)."""


@train.command("rdn")
@train_options
@restoration_train_options
@rdn_options
@verbosity
def train_rdn(blocks, layers, growth, features, qp_map, separable, head, **kw):
    """Train the RDN luma restoration network on a CTU dataset.

    \b
    Examples:
      codecnn train rdn --data samples.h5 --out runs/rdn --blocks 4 --growth 24 --steps 20000
      torchrun --nproc-per-node 4 -m codecnn train rdn --data ctc.h5 --out runs/rdn4 --batch 64 --epochs 50
    """
    from codecnn.models import build_model
    from codecnn.models.complexity import describe_complexity
    from codecnn.train.restoration import RestorationTask
    from codecnn.train.trainer import train as run

    config = rdn_config(blocks, layers, growth, features, qp_map, separable, head)
    cfg = train_config(**kw, progress=sys.stderr.isatty())
    c = describe_complexity(build_model("rdn", config))
    click.echo(f"rdn {config}: {c['params']} parameters, {c['macs_per_pixel'] / 1e3:.1f} kMAC/pixel")
    result = run(RestorationTask(config.context), "rdn", config, cfg)
    if result.last_val is not None:
        val = result.last_val
        click.echo(f"validation: {val.get('frames')} frames, {val.get('ctus')} CTUs (the val split)")
        for qp, v in val["per_qp"].items():
            click.echo(
                f"  val QP{qp}: input {v['psnr_in']:.3f} dB, output {v['psnr_out']:.3f} dB, gain {v['gain']:+.3f} "
                f"+- {v.get('gain_se', 0):.3f} dB"
            )
        click.echo(f"  mean gain {val['score']:+.4f} +- {val.get('score_se', 0):.4f} dB (standard error)")
    best = f"{result.best_score:+.4f} dB" if result.best_score is not None else "n/a (no val split)"
    click.echo(f"stopped at step {result.step} ({result.stopped}); best val gain {best}; checkpoints in {result.out}")


@train.command("modenet")
@train_options
@click.option("--channels", type=click.IntRange(1, 512), default=32, show_default=True, help="Conv channels.")
@click.option("--depth", type=click.IntRange(1, 32), default=4, show_default=True, help="Conv layers.")
@click.option("--hidden", type=click.IntRange(1, 4096), default=128, show_default=True, help="Fully connected width.")
@click.option(
    "--target",
    type=click.Choice(["best", "soft"]),
    default="best",
    show_default=True,
    help="Cross-entropy on the best mode, or on a softmin over the 35 costs.",
)
@click.option(
    "--normalise",
    is_flag=True,
    help="Shift and scale each block and its references by the references' mean and their joint deviation "
    "(the best mode does not depend on brightness or contrast).",
)
@click.option(
    "--pool-to",
    type=click.IntRange(0, 65),
    default=0,
    show_default=True,
    help="Area-average canvases wider than this (16x16 and 32x32 blocks) down to it first: 0 off, e.g. 17.",
)
@click.option("--size-heads", is_flag=True, help="One output layer per block size.")
@verbosity
def train_modenet(channels, depth, hidden, target, normalise, pool_to, size_heads, **kw):
    """Train the intra-mode CNN on an intra-modes dataset (make-dataset --task intra-modes).

    The same trainer as `train rdn`: checkpoints, --resume, logs and curves, torchrun/DDP, AMP. The
    validation score (best.pt) is the top-3 recall of the label's best mode.
    """
    from codecnn.models import ModeNetConfig, build_model
    from codecnn.models.complexity import count_params
    from codecnn.train.intra import IntraTask
    from codecnn.train.trainer import train as run

    config = ModeNetConfig(
        channels=channels, depth=depth, hidden=hidden, normalise=normalise, pool_to=pool_to, size_heads=size_heads
    )
    cfg = train_config(**kw, patch=0, progress=sys.stderr.isatty())  # whole blocks: no crops, flips or loss choice
    click.echo(f"modenet {config}: {count_params(build_model('modenet', config))} parameters")
    result = run(IntraTask(target), "modenet", config, cfg)
    if result.last_val is not None:
        from codecnn.eval.intra import mode_table_lines

        echo_lines(mode_table_lines(result.last_val))
    click.echo(f"stopped at step {result.step} ({result.stopped}); checkpoints in {result.out}")


@cli.command("model-info")
@click.argument("arch", type=click.Choice(["rdn"]))
@rdn_options
@click.option(
    "--size", type=click.IntRange(1, 4096), default=128, show_default=True, help="Output block size for the MAC count."
)
def model_info(arch, blocks, layers, growth, features, qp_map, separable, head, size):
    """Print a network's parameters and MACs per pixel, counted from its modules."""
    import torch

    from codecnn.models import build_model
    from codecnn.models.complexity import describe_complexity

    config = rdn_config(blocks, layers, growth, features, qp_map, separable, head)
    with torch.device("meta"):  # shapes only: no memory for the weights
        model = build_model(arch, config)
    c = describe_complexity(model, size)
    click.echo(f"{arch} {config}")
    click.echo(f"parameters: {c['params']}")
    click.echo(
        f"complexity: {c['macs_per_pixel'] / 1e3:.2f} kMAC/pixel ({c['macs_per_pixel']:.0f} MAC per output "
        f"pixel on a {size}x{size} block with a {model.context}-pixel context)"
    )


@cli.command("bench-train")
@click.option("--data", required=True, type=click.Path(), help="A CTU dataset (its train split is read).")
@rdn_options
@click.option("--batch", type=POSITIVE, default=16, show_default=True)
@click.option("--patch", type=COUNT, default=64, show_default=True, help="Crop size, a multiple of 8 (0: whole CTUs).")
@click.option("--workers", type=COUNT, default=2, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--steps", type=POSITIVE, default=4, show_default=True, help="Timed steps per measurement.")
@click.option(
    "--cache",
    type=click.Choice(CACHES),
    default="auto",
    show_default=True,
    help="Crop batches from the train split in memory (as train --cache), or read through the DataLoader (off).",
)
def bench_train_cmd(
    data, blocks, layers, growth, features, qp_map, separable, head, batch, patch, workers, device, steps, cache
):
    """Measure samples/s of the data pipeline alone, the model step alone, and the full loop."""
    from codecnn.train.bench import bench_train
    from codecnn.train.dist import pick_device

    config = rdn_config(blocks, layers, growth, features, qp_map, separable, head)
    dev = pick_device(device)
    r = bench_train(data, "rdn", config, batch, patch, workers, str(dev), steps=steps, cache=cache)
    pipeline = f"{workers} workers" if r["cache"] == "off" else f"cache {r['cache']}"
    click.echo(f"device {dev}, batch {batch}, patch {patch}, {pipeline} ({r['cache_why']})")
    click.echo(f"data pipeline alone : {r['data']:8.1f} samples/s")
    click.echo(f"model step alone    : {r['model']:8.1f} samples/s")
    click.echo(f"full loop           : {r['loop']:8.1f} samples/s   ({r['loop'] / r['model']:.1%} of the model step)")
    ratio = r["model_flops"] / r["gemm_flops"]
    click.echo(
        f"model step          : {r['model_flops'] / 1e12:8.4f} TFLOP/s, {ratio:.2f} of the fp32 GEMM rate "
        f"({r['gemm_flops'] / 1e12:.3f} TFLOP/s, 2048^3 matmul)"
    )
    if "cache_bytes" in r:
        cache_mib = r["cache_bytes"] / 2**20
        line = f"cache               : {cache_mib:8.0f} MiB, decompressed in {r['cache_load_s']:.1f} s"
        if r["peak_rss"] is not None and r["base_rss"] is not None:
            peak = r["peak_rss"] / 2**20
            base = r["base_rss"] / 2**20
            line += (
                f"; peak host memory {peak:.0f} MiB = cache + {peak - cache_mib:.0f} MiB overhead "
                f"({base:.0f} MiB before the cache: interpreter, torch, h5py)"
            )
        click.echo(line)
    click.echo(f"bottleneck: {r['bottleneck']}")
