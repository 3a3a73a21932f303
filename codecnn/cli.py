"""The ``codecnn`` command line: thin commands over the library (each docstring is its ``--help``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from codecnn import __version__
from codecnn.errors import CodecnnError
from codecnn.eval.report import summary_lines
from codecnn.files import check_output_dir, check_output_file
from codecnn.options import (
    COUNT,
    CTU_SIZE,
    POSITIVE,
    encoder_options,
    encoder_settings,
    frame_options,
    geometry_options,
    rdn_config,
    rdn_options,
    restoration_train_options,
    train_config,
    train_options,
    verbosity,
)


class UserError(click.ClickException):
    """A one-line message and exit code 2, no traceback."""

    exit_code = 2


class CodecnnGroup(click.Group):
    """A click group whose commands turn :class:`CodecnnError` and click's own usage errors (a bad option
    value, a missing option) into :class:`UserError` (exit 2, one line), and Ctrl-C into exit 130 with a
    word on ``--resume``; its subgroups are of the same class; ``python -m hm_bridge`` uses it too."""

    group_class = type  # subgroups (``train``) behave the same

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CodecnnError as e:
            raise UserError(str(e)) from None
        except click.UsageError as e:
            if isinstance(e, UserError):
                raise
            where = e.ctx.command_path if e.ctx is not None else ctx.command_path
            raise UserError(f"{e.format_message()} ({where} --help lists the options)") from None
        except KeyboardInterrupt:
            click.echo("codecnn: interrupted; finished work is kept: rerun with --resume to continue", err=True)
            sys.exit(130)


def _echo(lines) -> None:
    for line in lines:
        click.echo(line)


@click.group(cls=CodecnnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="codecnn")
def cli():
    """codecnn: CNN restoration and intra-mode prediction inside an HEVC codec."""


@cli.command("make-dataset")
@click.option(
    "--yuv",
    "inputs",
    multiple=True,
    type=click.Path(),
    help="Input sequence (raw .yuv, .y4m, or a container such as .mp4); repeatable.",
)
@click.option("--list", "seq_list", type=click.Path(), help="A sequence list, e.g. datasets/samples.toml.")
@click.option("--seq-dir", type=click.Path(), help="Folder holding the files of --list (e.g. the JCT-VC YUVs).")
@geometry_options
@frame_options
@encoder_options
@click.option("--ctu", type=CTU_SIZE, default=128, show_default=True, help="CTU size.")
@click.option(
    "--context", type=COUNT, default=2, show_default=True, help="Context border around each input CTU (pixels)."
)
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test", "auto"]),
    default="train",
    show_default=True,
    help="Split of the --yuv sequences (auto: seeded, by sequence).",
)
@click.option("--out", type=click.Path(), help="Output .h5 (default: NAME.h5 in the current folder).")
@click.option("--jobs", type=POSITIVE, default=1, show_default=True, help="Encodes run in parallel.")
@click.option("--resume", is_flag=True, help="Continue an interrupted build of the same --out.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --split auto.")
@click.option(
    "--task",
    type=click.Choice(["restoration", "intra-modes"]),
    default="restoration",
    show_default=True,
    help="CTU restoration samples, or intra-mode labels of every 4..32 block.",
)
@click.option(
    "--cost",
    "intra_cost",
    type=click.Choice(["dct", "hevc", "hadamard"]),
    default="dct",
    show_default=True,
    help="intra-modes: label cost (DCT-SATD, HEVC integer transform, Hadamard).",
)
@click.option(
    "--loop",
    "intra_loop",
    type=click.Choice(["closed", "open"]),
    default="closed",
    show_default=True,
    help="intra-modes: reference samples from the reconstruction (closed) or the original (open).",
)
@verbosity
def make_dataset(
    inputs,
    seq_list,
    seq_dir,
    size,
    bit_depth,
    fps,
    frames,
    start,
    frame_step,
    qps,
    encoder,
    preset,
    tune,
    no_deblock,
    no_sao,
    hm_bin,
    hm_cfg,
    ctu,
    context,
    split,
    out,
    jobs,
    resume,
    seed,
    task,
    intra_cost,
    intra_loop,
):
    """Encode sequences all-intra at each QP and cut CTU samples into an HDF5 dataset.

    Each sample is the reconstructed luma CTU with its context border (132x132 for CTU 128, context 2)
    and the original 128x128 luma target, with QP, bit depth, sequence, frame and position. With
    --task intra-modes, each sample is a 4..32 block with its context and the 35 HEVC intra predictions'
    costs (DCT-SATD by default), best mode and ranks.

    \b
    Examples:
      codecnn make-dataset --yuv BasketballDrive_1920x1080_50.yuv
      codecnn make-dataset --list datasets/samples.toml --frames 8 --out samples.h5
      codecnn make-dataset --list datasets/jctvc.toml --seq-dir /data/ctc --jobs 2
    """
    from codecnn.data.build import BuildOptions, build_dataset
    from codecnn.encoders import STANDARD_QPS
    from codecnn.sequences import assign_auto_splits, load_sequence_list, sequence_from_path

    if not inputs and not seq_list:
        raise CodecnnError("no input: give --yuv FILE (repeatable) or --list datasets/NAME.toml")
    specs = load_sequence_list(seq_list, seq_dir) if seq_list else []
    specs += [sequence_from_path(p, size, bit_depth, fps, "train" if split == "auto" else split) for p in inputs]
    if split == "auto":
        specs = assign_auto_splits(specs, seed)
    if out is None:
        if len(inputs) == 1 and not seq_list:
            out = Path(inputs[0]).name.rsplit(".", 1)[0] + ".h5"
        elif seq_list and not inputs:
            out = Path(seq_list).stem + ".h5"
        else:
            raise CodecnnError("several inputs: name the output with --out FILE.h5")
    check_output_file(out, "--out")
    options = BuildOptions(
        qps=tuple(qps) or STANDARD_QPS,
        encoder=encoder,
        encoder_options=encoder_settings(encoder, preset, tune, no_deblock, no_sao, hm_bin, hm_cfg),
        start=start,
        frames=frames,
        frame_step=frame_step,
        ctu=ctu,
        context=context,
        seed=seed,
        task=task,
        intra_cost=intra_cost,
        intra_loop=intra_loop,
    )
    summary = build_dataset(specs, out, options, jobs=jobs, resume=resume, progress=sys.stderr.isatty())
    for line in summary.lines():
        click.echo(line)


@cli.command()
@click.argument("dataset", type=click.Path())
@click.option(
    "--verify",
    is_flag=True,
    help="Also read every chunk and re-decode every stored bitstream (CTU inputs compared with the decode).",
)
def info(dataset, verify):
    """Print a dataset's summary: shapes, splits, QPs, sequences, encoder and rates.

    Opening checks the header and the layout (every array present, of one length, the right dtypes, the
    meta JSON); --verify reads the whole file and exits with 2 if anything in it is damaged."""
    from codecnn.data.inspect import describe_dataset, verify_dataset

    _echo(describe_dataset(dataset))
    if verify:
        lines, problems = verify_dataset(dataset, progress=sys.stderr.isatty())
        _echo(lines)
        if problems:
            _echo(f"damaged: {p}" for p in problems[:20])
            more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
            raise CodecnnError(f"{dataset}: {len(problems)} problem(s){more}; rebuild it with codecnn make-dataset")
        click.echo("no problem found")


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
        for qp, v in result.last_val["per_qp"].items():
            click.echo(
                f"  val QP{qp}: input {v['psnr_in']:.3f} dB, output {v['psnr_out']:.3f} dB, gain {v['gain']:+.3f} dB"
            )
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
@verbosity
def train_modenet(channels, depth, hidden, target, **kw):
    """Train the intra-mode CNN on an intra-modes dataset (make-dataset --task intra-modes).

    The same trainer as `train rdn`: checkpoints, --resume, logs and curves, torchrun/DDP, AMP. The
    validation score (best.pt) is the top-3 recall of the label's best mode.
    """
    from codecnn.models import ModeNetConfig, build_model
    from codecnn.models.complexity import count_params
    from codecnn.train.intra import IntraTask
    from codecnn.train.trainer import train as run

    config = ModeNetConfig(channels=channels, depth=depth, hidden=hidden)
    cfg = train_config(**kw, patch=0, progress=sys.stderr.isatty())  # whole blocks: no crops, flips or loss choice
    click.echo(f"modenet {config}: {count_params(build_model('modenet', config))} parameters")
    result = run(IntraTask(target), "modenet", config, cfg)
    if result.last_val is not None:
        from codecnn.eval.intra import mode_table_lines

        _echo(mode_table_lines(result.last_val))
    click.echo(f"stopped at step {result.step} ({result.stopped}); checkpoints in {result.out}")


@cli.command("evaluate-modes")
@click.option("--checkpoint", required=True, type=click.Path())
@click.option("--data", required=True, type=click.Path(), help="An intra-modes dataset.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--out", required=True, type=click.Path(), help="Folder for results.json and report.md.")
def evaluate_modes(checkpoint, data, split, out):
    """Top-1/3/8 recall of the best mode and the cost increase of a top-k search, per block size, beside
    HM's rough mode decision and planar+DC+MPM on the same blocks."""
    from codecnn.eval.intra import evaluate_checkpoint, mode_table_lines

    check_output_dir(out, "--out")
    r, written = evaluate_checkpoint(checkpoint, data, split, out)
    _echo(mode_table_lines(r))
    for name, path in written.items():
        click.echo(f"{name}: {path}")


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


@cli.command()
@click.option("--checkpoint", required=True, type=click.Path(), help="A restoration checkpoint (best.pt, last.pt).")
@click.option("--yuv", "inputs", multiple=True, type=click.Path(), help="Sequence to encode and evaluate; repeatable.")
@click.option("--list", "seq_list", type=click.Path(), help="A sequence list (datasets/*.toml).")
@click.option("--seq-dir", type=click.Path(), help="Folder holding the files of --list.")
@click.option("--data", type=click.Path(), help="Reuse a dataset's bitstreams instead of encoding.")
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test"]),
    default="test",
    show_default=True,
    help="Which sequences of --data.",
)
@click.option("--orig", type=click.Path(), help="HM route: the source YUV that HM encoded.")
@click.option("--recon", "recons", multiple=True, type=click.Path(), help="HM route: HM's -o file, one per QP.")
@click.option("--hm-log", "hm_logs", multiple=True, type=click.Path(), help="HM route: HM's log, one per --recon.")
@geometry_options
@frame_options
@encoder_options
@click.option("--ctu", type=CTU_SIZE, help="CTU size for filtering and switching (default: the training data's).")
@click.option("--batch", type=POSITIVE, default=2, show_default=True, help="CTUs per network call (raise it on a GPU).")
@click.option(
    "--method",
    type=click.Choice(["pchip", "cubic", "akima"]),
    default="pchip",
    show_default=True,
    help="BD interpolation (pchip = JVET CTC sheet, cubic = VCEG-M33).",
)
@click.option(
    "--psnr-peak",
    type=click.Choice(["max", "hm"]),
    default="max",
    show_default=True,
    help="PSNR peak above 8 bits: (1<<bd)-1, or HM's 255<<(bd-8).",
)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--int16",
    is_flag=True,
    help="Filter with the int16 fixed-point network HM runs (hm_bridge), "
    "calibrated on --calib or the training data, instead of PyTorch float.",
)
@click.option("--calib", type=click.Path(), help="Dataset to calibrate --int16 on (default: the training data).")
@click.option("--out", required=True, type=click.Path(), help="Report folder: results.json, report.md, PNGs.")
@verbosity
def evaluate(
    checkpoint,
    inputs,
    seq_list,
    seq_dir,
    data,
    split,
    orig,
    recons,
    hm_logs,
    size,
    bit_depth,
    fps,
    frames,
    start,
    frame_step,
    qps,
    encoder,
    preset,
    tune,
    no_deblock,
    no_sao,
    hm_bin,
    hm_cfg,
    ctu,
    batch,
    method,
    psnr_peak,
    device,
    int16,
    calib,
    out,
):
    """Measure a restoration network's PSNR gains and BD-rates against the codec's reconstruction.

    Sources (one of): --yuv/--list (encoded now with --encoder), --data (a dataset's stored bitstreams,
    no re-encoding), or HM's own files (--orig, and --recon/--hm-log per QP; rates from HM's log).

    \b
    Examples:
      codecnn evaluate --checkpoint runs/rdn/best.pt --data samples.h5 --split test --out report/
      codecnn evaluate --checkpoint best.pt --yuv BQMall_832x480_60.yuv --frames 8 --out report/
      codecnn evaluate --checkpoint best.pt --orig orig.yuv --size 176x144 \\
          --recon qp22/recon.yuv --hm-log qp22/encoder.log --recon qp27/recon.yuv --hm-log qp27/encoder.log ...
    """
    from codecnn.encoders import make_encoder
    from codecnn.eval.report import write_report
    from codecnn.eval.restoration import evaluate_checkpoint
    from codecnn.eval.runs import select_runs

    settings = encoder_settings(encoder, preset, tune, no_deblock, no_sao, hm_bin, hm_cfg)
    check_output_dir(out, "--out")

    def make_runs(workdir):
        return select_runs(
            workdir,
            inputs=inputs,
            seq_list=seq_list,
            seq_dir=seq_dir,
            data=data,
            split=split,
            orig=orig,
            recons=recons,
            hm_logs=hm_logs,
            size=size,
            bit_depth=bit_depth,
            fps=fps,
            frames=frames,
            start=start,
            frame_step=frame_step,
            qps=qps,
            encoder=make_encoder(encoder, **dict(settings)) if inputs or seq_list else None,
        )

    results = evaluate_checkpoint(
        checkpoint,
        make_runs,
        ctu=ctu,
        method=method,
        convention=psnr_peak,
        device=device,
        batch=batch,
        int16=int16,
        calib=calib,
        progress=sys.stderr.isatty(),
    )
    rep = results.get("int16_export")
    if rep:
        click.echo(f"int16 network: {rep['loss_db']:+.4f} dB against float on {rep['ctus']} calibration CTUs")
    written = write_report(results, out)
    _echo(summary_lines(results, written))


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Folder for report.md, the plots and merged results.")
def report(results, out):
    """Render (and merge) evaluation results: report.md, RD curves and gain-vs-QP plots."""
    from codecnn.eval.report import load_results, write_report

    check_output_dir(out, "--out")

    merged = load_results(results)
    written = write_report(merged, out, write_json=len(results) > 1)
    _echo(summary_lines(merged, written))


@cli.command("bd-rate")
@click.argument("anchor", type=click.Path())
@click.argument("test", type=click.Path())
@click.option("--method", type=click.Choice(["pchip", "cubic", "akima"]), default="pchip", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (bd_rate, bd_psnr, method, ...).")
def bd_rate_cmd(anchor, test, method, as_json):
    """BD-rate (%) and BD-PSNR (dB) of TEST against ANCHOR: CSV files with a header `rate,psnr`."""
    import json

    from codecnn.eval.metrics import BDError, bd_rate, read_rd_csv

    try:
        r = bd_rate(read_rd_csv(anchor), read_rd_csv(test), method)
    except BDError as e:
        raise CodecnnError(str(e)) from None
    if as_json:
        click.echo(json.dumps(r))
    else:
        click.echo(f"BD-rate {r['bd_rate']:+.4f} %  BD-PSNR {r['bd_psnr']:+.4f} dB  ({method}, {r['implementation']})")


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="The .cnnw file to write.")
@click.option("--int16", is_flag=True, help="int16 fixed point (bit-exact across machines), calibrated on real CTUs.")
@click.option("--calib", type=click.Path(), help="Dataset to calibrate --int16 on (default: the training data).")
@click.option("--onnx", "as_onnx", is_flag=True, help="Write ONNX instead (checked against PyTorch with onnxruntime).")
def export(checkpoint, out, int16, calib, as_onnx):
    """Export a restoration checkpoint for HM: a versioned .cnnw file read by hm_bridge/cpp/cnnw.h."""
    from hm_bridge.export import MAX_LOSS_DB, export_checkpoint, export_onnx

    if as_onnx and int16:
        raise CodecnnError("--onnx writes a float ONNX model and --int16 an int16 .cnnw file: give one of them")
    check_output_file(out, "--out")
    if as_onnx:
        r = export_onnx(checkpoint, out)
        click.echo(
            f"wrote {r['path']} (ONNX; onnxruntime {r['onnxruntime']} vs PyTorch: max |diff| {r['max_abs_diff']:.2e})"
        )
        return
    p, report = export_checkpoint(checkpoint, out, int16, calib)
    click.echo(f"wrote {p} ({p.stat().st_size} bytes, {'int16' if int16 else 'float32'})")
    if not report:
        return
    if int16:
        click.echo(
            f"on {report['ctus']} real CTUs: float {report['psnr_float']:.4f} dB, int16 "
            f"{report['psnr_int16']:.4f} dB, loss {report['loss_db']:+.4f} dB"
        )
        if report["loss_db"] > MAX_LOSS_DB:
            click.echo(
                f"warning: the int16 model loses {report['loss_db']:.4f} dB against the float one (> {MAX_LOSS_DB} dB)",
                err=True,
            )
    click.echo(f"largest change the network makes to a sample on {report['ctus']} CTUs: {report['max_change']}")
    if report["identity"]:
        click.echo(
            "warning: the network changes no sample (an untrained or identity network): encoder/decoder checks "
            "with it pass trivially",
            err=True,
        )


@cli.command("bench-train")
@click.option("--data", required=True, type=click.Path(), help="A CTU dataset (its train split is read).")
@rdn_options
@click.option("--batch", type=POSITIVE, default=16, show_default=True)
@click.option("--patch", type=COUNT, default=64, show_default=True, help="Crop size, a multiple of 8 (0: whole CTUs).")
@click.option("--workers", type=COUNT, default=2, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--steps", type=POSITIVE, default=4, show_default=True, help="Timed steps per measurement.")
def bench_train_cmd(
    data, blocks, layers, growth, features, qp_map, separable, head, batch, patch, workers, device, steps
):
    """Measure samples/s of the data pipeline alone, the model step alone, and the full loop."""
    from codecnn.train.bench import bench_train
    from codecnn.train.dist import pick_device

    config = rdn_config(blocks, layers, growth, features, qp_map, separable, head)
    dev = pick_device(device)
    r = bench_train(data, "rdn", config, batch, patch, workers, str(dev), steps=steps)
    click.echo(f"device {dev}, batch {batch}, patch {patch}, {workers} workers")
    click.echo(f"data pipeline alone : {r['data']:8.1f} samples/s")
    click.echo(f"model step alone    : {r['model']:8.1f} samples/s")
    click.echo(f"full loop           : {r['loop']:8.1f} samples/s")
    click.echo(f"bottleneck: {r['bottleneck']}")


def main() -> None:
    cli(prog_name="codecnn")
