"""``codecnn make-dataset`` and ``codecnn info``: building and inspecting datasets."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from codecnn.cli.group import cli, command_inputs, echo_lines
from codecnn.errors import CodecnnError
from codecnn.files import check_not_input, check_output_file
from codecnn.options import (
    COUNT,
    CTU_SIZE,
    POSITIVE,
    encode_options,
    verbosity,
)


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
@encode_options
@click.option("--ctu", type=CTU_SIZE, default=128, show_default=True, help="CTU size.")
@click.option(
    "--context", type=COUNT, default=2, show_default=True, help="Context border around each input CTU (pixels)."
)
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test", "auto"]),
    default="train",
    show_default=True,
    help="Split of the --yuv sequences (auto: seeded, by source file: a sequence and its downscaled copies share one).",
)
@click.option("--out", type=click.Path(), help="Output .h5 (default: NAME.h5 in the current folder).")
@click.option("--jobs", type=POSITIVE, default=1, show_default=True, help="Encodes run in parallel.")
@click.option(
    "--dask",
    metavar="ADDRESS",
    help="Run the encodes on a Dask cluster: a scheduler (tcp://HOST:8786) or local:N worker processes. "
    "--out's folder must be on storage every worker sees. Needs pip install codecnn[cluster].",
)
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
@click.option(
    "--loop-model",
    type=click.Path(),
    help="Closed-loop data (--encoder hm, a patched HM): HM runs this int16 .cnnw filter (or zoo:NAME's HM "
    "export) in its loop, and each input is the picture the filter receives, its references filtered.",
)
@verbosity
def make_dataset(
    inputs,
    seq_list,
    seq_dir,
    encode,
    ctu,
    context,
    split,
    out,
    jobs,
    dask,
    resume,
    seed,
    task,
    intra_cost,
    intra_loop,
    loop_model,
):
    """Encode sequences at each QP (all intra, or --config ra/ldb/ldp) and cut CTU samples into an HDF5 dataset.

    Each sample is the reconstructed luma CTU with its context border (132x132 for CTU 128, context 2)
    and the original 128x128 luma target, with QP, bit depth, sequence, frame and position. With
    --task intra-modes, each sample is a 4..32 block with its context and the 35 HEVC intra predictions'
    costs (DCT-SATD by default), best mode and ranks.

    \b
    Examples:
      codecnn make-dataset --yuv BasketballDrive_1920x1080_50.yuv
      codecnn make-dataset --list datasets/samples.toml --frames 8 --out samples.h5
      codecnn make-dataset --list datasets/samples.toml --frames 17 --config ra --out samples-ra.h5
      codecnn make-dataset --list datasets/jctvc.toml --seq-dir /data/ctc --jobs 2
      codecnn make-dataset --list datasets/jctvc.toml --seq-dir /shared/ctc --out /shared/j.h5 --dask tcp://head:8786
      codecnn make-dataset --list datasets/zoo-rdn-inloop-ra-closed.toml --config ra --encoder hm \\
        --hm-cfg encoder_randomaccess_main.cfg --loop-model zoo:rdn-inloop-ai-v2 --out closed.h5
    """
    from codecnn.data.build import BuildOptions, build_dataset
    from codecnn.sequences import assign_auto_splits, load_sequence_list, sequence_from_path

    if dask is not None and jobs > 1:
        raise CodecnnError("--dask and --jobs run the encodes in different ways: give one of them")
    if encode.config != "ai" and task == "intra-modes":
        raise CodecnnError("--task intra-modes labels all-intra pictures: drop --config (or use --config ai)")
    if not inputs and not seq_list:
        raise CodecnnError("no input: give --yuv FILE (repeatable) or --list datasets/NAME.toml")
    if loop_model is not None:
        import dataclasses

        from codecnn.zoo import resolve

        if task != "restoration":
            raise CodecnnError("--loop-model makes restoration samples: drop --task intra-modes")
        encode = dataclasses.replace(encode, loop_model=str(resolve(loop_model, hm=True)))
    specs = load_sequence_list(seq_list, seq_dir) if seq_list else []
    specs += [
        sequence_from_path(p, encode.size, encode.bit_depth, encode.fps, "train" if split == "auto" else split)
        for p in inputs
    ]
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
    check_not_input("--out", out, command_inputs("out"))
    options = BuildOptions(
        encode,
        ctu=ctu,
        context=context,
        seed=seed,
        task=task,
        intra_cost=intra_cost,
        intra_loop=intra_loop,
    )
    summary = build_dataset(specs, out, options, jobs=jobs, resume=resume, progress=sys.stderr.isatty(), dask=dask)
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

    echo_lines(describe_dataset(dataset))
    if verify:
        lines, problems = verify_dataset(dataset, progress=sys.stderr.isatty())
        echo_lines(lines)
        if problems:
            echo_lines(f"damaged: {p}" for p in problems[:20])
            more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
            raise CodecnnError(f"{dataset}: {len(problems)} problem(s){more}; rebuild it with codecnn make-dataset")
        click.echo("no problem found")
