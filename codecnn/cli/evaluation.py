"""``codecnn evaluate``, ``evaluate-modes``, ``report`` and ``bd-rate``."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from codecnn.cli.group import cli, command_inputs, echo_lines
from codecnn.errors import CodecnnError
from codecnn.eval.report import REPORT_FILES, summary_lines
from codecnn.files import check_not_input, check_output_dir
from codecnn.options import (
    CTU_SIZE,
    POSITIVE,
    encode_options,
    verbosity,
)


@cli.command()
@click.option("--checkpoint", type=click.Path(), help="A restoration checkpoint (best.pt, last.pt, zoo:NAME).")
@click.option("--yuv", "inputs", multiple=True, type=click.Path(), help="Sequence to encode and evaluate; repeatable.")
@click.option("--list", "seq_list", type=click.Path(), help="A sequence list (datasets/*.toml).")
@click.option("--seq-dir", type=click.Path(), help="Folder holding the files of --list.")
@click.option("--data", type=click.Path(), help="Reuse a dataset's bitstreams instead of encoding.")
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test"]),
    help="Which sequences of --data (default: test) or of --list (default: all of them).",
)
@click.option("--orig", type=click.Path(), help="HM route: the source YUV that HM encoded.")
@click.option(
    "--name", help="The sequence's name in the report, for --orig or one --yuv FILE (default: the file's name)."
)
@click.option("--recon", "recons", multiple=True, type=click.Path(), help="HM route: HM's -o file, one per QP.")
@click.option("--hm-log", "hm_logs", multiple=True, type=click.Path(), help="HM route: HM's log, one per --recon.")
@click.option(
    "--vs-loop-filters",
    is_flag=True,
    help="Post-filter setting (VRCNN, DCAD): the network filters a reconstruction coded with deblocking and SAO "
    "off and is compared with the codec with both on, each at its own rate (encodes both, or reads "
    "--anchor-recon/--anchor-log beside the HM files).",
)
@click.option(
    "--anchor-recon",
    "anchor_recons",
    multiple=True,
    type=click.Path(),
    help="HM route, post-filter: HM's -o with filters on.",
)
@click.option("--anchor-log", "anchor_logs", multiple=True, type=click.Path(), help="HM route, post-filter: its log.")
@encode_options(hm_flag="in_loop")
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
@click.option(
    "--dask",
    metavar="ADDRESS",
    help="Run the fresh encodes (--yuv/--list) on a Dask cluster: a scheduler (tcp://HOST:8786) or local:N worker "
    "processes; the filtering and measuring stay here. A scheduler needs --work-dir on storage every worker sees. "
    "Needs pip install codecnn[cluster].",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False),
    help="Folder for the encodes' files (bitstreams, reconstructions), kept, instead of a temporary folder.",
)
@click.option(
    "--in-loop",
    is_flag=True,
    help="The filter inside HM: your HM patched by hm_bridge encodes every sequence and QP without (anchor) and "
    "with --model, the patched decoder checks each bitstream; needs --hm-bin, --hm-dec, --hm-cfg, --model.",
)
@click.option(
    "--hm-dec",
    type=click.Path(),
    envvar="CODECNN_HM_DEC",
    help="--in-loop: the patched TAppDecoder (or $CODECNN_HM_DEC).",
)
@click.option(
    "--model",
    type=click.Path(),
    help="--in-loop: the .cnnw model HM runs (codecnn export ... --int16), or zoo:NAME's HM export.",
)
@click.option("--jobs", type=POSITIVE, default=1, show_default=True, help="--in-loop: HM runs in parallel.")
@click.option(
    "--signal",
    type=click.Choice(["always", "picture", "ctu"]),
    default="ctu",
    show_default=True,
    help="--in-loop: what the test encoder decides with the rate counted and signals in the slice headers (HM "
    "--CnnSignal): always on; per picture (on/off, a least-squares residual scale); per picture and per CTU.",
)
@click.option("--ctu-flags", is_flag=True, help="--in-loop: the same as --signal ctu (kept for older command lines).")
@click.option(
    "--inter-model",
    help="--in-loop: a second .cnnw model for the P and B pictures (HM --CnnInterModel); zoo:NAME entries that "
    "ship one use it by default.",
)
@click.option(
    "--propagation",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="--in-loop: rho (HM --CnnPropagation): a reference picture's distortion counts 1 + rho x (2^(temporal "
    "layers below it) - 1) times in the encoder's decision, for the pictures that predict from it; 0: each "
    "picture for itself.",
)
@click.option(
    "--before-sao",
    is_flag=True,
    help="--in-loop: the filter runs after deblocking and before SAO (HM --CnnBeforeSao=1; SAO then works on the "
    "filtered picture; the bitstream says so and the decoder follows). Default: after SAO.",
)
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
    name,
    recons,
    hm_logs,
    vs_loop_filters,
    anchor_recons,
    anchor_logs,
    encode,
    ctu,
    batch,
    method,
    psnr_peak,
    device,
    int16,
    calib,
    dask,
    work_dir,
    in_loop,
    hm_dec,
    model,
    jobs,
    signal,
    ctu_flags,
    inter_model,
    propagation,
    before_sao,
    out,
):
    """Measure a restoration network's PSNR gains and BD-rates against the codec's reconstruction.

    Sources (one of): --yuv/--list (encoded now with --encoder), --data (a dataset's stored bitstreams,
    no re-encoding), or HM's own files (--orig, and --recon/--hm-log per QP; rates from HM's log).

    \b
    Examples:
      codecnn evaluate --checkpoint runs/rdn/best.pt --data samples.h5 --split test --out report/
      codecnn evaluate --checkpoint best.pt --yuv BQMall_832x480_60.yuv --frames 8 --out report/
      codecnn evaluate --checkpoint best.pt --list datasets/jctvc.toml --seq-dir /shared/ctc \\
          --dask tcp://head:8786 --work-dir /shared/eval-work --out report/
      codecnn evaluate --checkpoint best.pt --orig orig.yuv --size 176x144 --name carphone \\
          --recon qp22/recon.yuv --hm-log qp22/encoder.log --recon qp27/recon.yuv --hm-log qp27/encoder.log ...
      codecnn evaluate --in-loop --model rdn16.cnnw --hm-bin TAppEncoderStatic --hm-dec TAppDecoderStatic \\
          --hm-cfg encoder_randomaccess_main.cfg --config ra --yuv BQMall_832x480_60.yuv --frames 33 --out report/
    """
    if name is not None and (seq_list or data or len(inputs) > 1):
        raise CodecnnError("--name names the one sequence of --orig or --yuv FILE; --list and --data name theirs")
    if in_loop:
        return _evaluate_in_loop(**locals())
    if model or inter_model or jobs != 1 or ctu_flags or signal != "ctu" or propagation or before_sao:
        raise CodecnnError(  # (--hm-dec: $CODECNN_HM_DEC)
            "--model, --inter-model, --jobs, --signal, --ctu-flags, --propagation and --before-sao belong to "
            "--in-loop: add it, or drop them"
        )
    if not checkpoint:
        raise CodecnnError("give the network to evaluate: --checkpoint best.pt (or zoo:NAME; --in-loop takes --model)")
    from codecnn.eval.report import write_report
    from codecnn.eval.restoration import evaluate_checkpoint
    from codecnn.eval.runs import select_runs

    if (anchor_recons or anchor_logs) and not vs_loop_filters:
        raise CodecnnError("--anchor-recon/--anchor-log are the anchor of --vs-loop-filters: add it, or drop them")
    if vs_loop_filters and not (encode.deblock and encode.sao):
        raise CodecnnError(
            "--vs-loop-filters codes the network's input without deblocking and SAO and the anchor with "
            "both: drop --no-deblock/--no-sao"
        )
    if encode.config != "ai" and not (inputs or seq_list):
        raise CodecnnError(
            f"--config {encode.config} sets up fresh encodes (--yuv/--list); a dataset or HM's files bring their own"
        )
    if dask is not None:
        from codecnn.data.cluster import check_address

        check_address(dask)
        if data or orig or recons or hm_logs:
            raise CodecnnError("--dask runs fresh encodes (--yuv/--list); --data and HM's files have nothing to encode")
        if not dask.startswith("local:") and not work_dir:
            raise CodecnnError(
                f"--dask {dask}: the workers write the encodes into the work folder; give --work-dir on storage "
                "every worker sees (e.g. NFS)"
            )
    if work_dir:
        check_output_dir(work_dir, "--work-dir")
    check_output_dir(out, "--out")
    check_not_input("--out", out, command_inputs("out", "work_dir"), REPORT_FILES)

    def make_runs(workdir):
        if work_dir:
            workdir = Path(work_dir).absolute()
            workdir.mkdir(parents=True, exist_ok=True)
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
            encode=encode,
            vs_loop_filters=vs_loop_filters,
            anchor_recons=anchor_recons,
            anchor_logs=anchor_logs,
            runner=runner,
            name=name,
        )

    runner = None
    with contextlib.ExitStack() as stack:
        if dask is not None:  # connects before any work: an unreachable scheduler fails at once
            from codecnn.data.cluster import DaskRunner

            # what an encode unit imports, imported by each worker as it starts
            preload = ("codecnn.eval.runs", *encode.encoder_class().imports())
            runner = stack.enter_context(DaskRunner(dask, preload=preload))
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
    echo_lines(summary_lines(results, written))


def _evaluate_in_loop(**o) -> None:
    """``evaluate --in-loop``: the options checked, then :func:`codecnn.eval.inloop.evaluate_in_loop`."""

    from codecnn.eval import inloop

    encode = o["encode"]
    other = [
        name
        for name, given in (
            ("--checkpoint", o["checkpoint"]),
            ("--data", o["data"]),
            ("--orig/--recon/--hm-log", o["orig"] or o["recons"] or o["hm_logs"]),
            ("--vs-loop-filters", o["vs_loop_filters"] or o["anchor_recons"] or o["anchor_logs"]),
            ("--int16/--calib", o["int16"] or o["calib"]),
            ("--dask", o["dask"]),
            ("--no-deblock/--no-sao", not (encode.deblock and encode.sao)),
            ("--frame-step", encode.frame_step > 1),
        )
        if given
    ]
    if other:
        raise CodecnnError(f"--in-loop runs HM with --model on fresh encodes (--yuv/--list): drop {', '.join(other)}")
    if not (o["inputs"] or o["seq_list"]):
        raise CodecnnError("--in-loop encodes sequences: give --yuv FILE or --list datasets/NAME.toml")
    if not o["model"]:
        raise CodecnnError("--in-loop needs the model HM runs: --model M.cnnw (codecnn export best.pt --int16 ...)")
    dec, specs = _hm_runs_checked(o, encode)
    with contextlib.ExitStack() as stack:
        work = _work_folder(o, stack, "codecnn-inloop-")
        results = inloop.evaluate_in_loop(
            specs,
            encode,
            dec=dec,
            model=Path(o["model"]),
            workdir=work,
            jobs=o["jobs"],
            method=o["method"],
            signal="ctu" if o["ctu_flags"] else o["signal"],
            inter_model=Path(o["inter_model"]) if o["inter_model"] else None,
            propagation=o["propagation"],
            before_sao=o["before_sao"],
        )
    written = inloop.write_results(results, Path(o["out"]))
    echo_lines(inloop.lines(results) + [f"{k}: {v}" for k, v in written.items()])


def _hm_runs_checked(o: dict, encode):
    """What a command that runs HM on fresh encodes checks before any work (the encoder and cfg, the decoder,
    --out, an --out that names an input) and the sequences it codes: (decoder, sequence specs)."""
    from codecnn.eval import inloop
    from codecnn.sequences import list_sequences, sequence_from_path

    inloop.hm_encoder_files(encode)  # a missing cfg or encoder is refused before --out is made
    dec = inloop.find_hm_decoder(o["hm_dec"])
    check_output_dir(o["out"], "--out")
    check_not_input("--out", o["out"], command_inputs("out", "work_dir"), REPORT_FILES)
    specs = list_sequences(o["seq_list"], o["seq_dir"], o["split"])
    specs += [sequence_from_path(p, encode.size, encode.bit_depth, encode.fps, name=o["name"]) for p in o["inputs"]]
    return dec, specs


def _work_folder(o: dict, stack: contextlib.ExitStack, prefix: str) -> Path:
    """--work-dir (checked, kept) or a temporary folder that the stack removes."""
    import tempfile

    if o["work_dir"]:
        check_output_dir(o["work_dir"], "--work-dir")
        return Path(o["work_dir"]).absolute()
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))


@cli.command("evaluate-modes")
@click.option("--checkpoint", type=click.Path(), help="A mode-network checkpoint (best.pt, zoo:NAME).")
@click.option("--data", type=click.Path(), help="An intra-modes dataset.")
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test"]),
    help="Which blocks of --data (default: test), or which sequences of --list with --in-hm (default: all).",
)
@click.option("--in-hm", is_flag=True, help="Run the mode network inside HM's encoder (patch-hm): EncT and BD-rate.")
@click.option("--model", type=click.Path(), help="--in-hm: the exported mode network (codecnn export best.pt).")
@click.option(
    "--setting",
    "settings",
    multiple=True,
    metavar="K:RD",
    help="--in-hm: a pruned encoder, repeatable: top K modes + MPMs, at most RD full RDs (-:RD: no network; "
    "K:RD:MIN: the network on blocks MIN x MIN and up).",
)
@click.option("--yuv", "inputs", multiple=True, type=click.Path(), help="--in-hm: a sequence to encode; repeatable.")
@click.option("--list", "seq_list", type=click.Path(), help="--in-hm: a sequence list (datasets/*.toml).")
@click.option("--seq-dir", type=click.Path(), help="--in-hm: folder holding the files of --list.")
@click.option("--name", help="--in-hm: the name of a single --yuv sequence in the report.")
@encode_options(hm_flag="in_hm")
@click.option("--hm-dec", type=click.Path(), help="--in-hm: an UNMODIFIED HM TAppDecoder (from a pristine HM).")
@click.option("--work-dir", type=click.Path(), help="--in-hm: keep HM's runs here; a second run resumes.")
@click.option("--jobs", type=POSITIVE, default=1, show_default=True, help="--in-hm: HM runs in parallel.")
@click.option("--method", type=click.Choice(["pchip", "cubic", "akima"]), default="pchip", show_default=True)
@click.option("--out", required=True, type=click.Path(), help="Folder for results.json and report.md.")
def evaluate_modes(checkpoint, data, split, in_hm, out, **o):
    """Top-1/3/8 recall of the best mode and the cost increase of a top-k search, per block size, beside
    HM's rough mode decision and planar+DC+MPM on the same blocks.

    With --in-hm: the patched HM encoder (python -m hm_bridge patch-hm) without and with the network pruning
    its intra search, each --setting K:RD against the anchor: BD-rate Y/U/V, EncT, the network's share of the
    encoder time; every stream decoded by an unmodified HM decoder to the encoder's pictures.

    \b
    Examples:
      codecnn evaluate-modes --checkpoint zoo:modenet-ai --data modes.h5 --out modes_report/
      codecnn evaluate-modes --in-hm --model modes.cnnw --setting 10:4 --setting -:4 --yuv carphone.yuv \\
        --size 176x144 --frames 17 --hm-bin TAppEncoderStatic --hm-cfg encoder_intra_main.cfg \\
        --hm-dec pristine/TAppDecoderStatic --work-dir work/ --out modes_hm/
    """
    if in_hm:
        return _evaluate_modes_in_hm(checkpoint=checkpoint, data=data, out=out, split=split, **o)
    given = [k for k in ("model", "hm_dec", "work_dir", "seq_list") if o[k]] + (["setting"] if o["settings"] else [])
    if given or o["inputs"]:
        raise CodecnnError("--model, --setting, --yuv, --list, --hm-dec and --work-dir belong to --in-hm: add it")
    if not checkpoint or not data:
        raise CodecnnError("give --checkpoint and --data (the dataset's blocks), or --in-hm to run HM")
    from codecnn.eval.intra import evaluate_checkpoint, mode_table_lines, pruned_table_lines

    check_output_dir(out, "--out")
    check_not_input("--out", out, command_inputs("out"), REPORT_FILES)
    r, written = evaluate_checkpoint(checkpoint, data, split or "test", out)
    echo_lines(mode_table_lines(r))
    click.echo("pruned rough mode decision (network top k + MPMs, HM's candidate count):")
    echo_lines(pruned_table_lines(r))
    for name, path in written.items():
        click.echo(f"{name}: {path}")


def _evaluate_modes_in_hm(**o) -> None:
    """``evaluate-modes --in-hm``: the options checked, then :func:`codecnn.eval.modes_hm.evaluate_modes_in_hm`."""

    from codecnn.eval import modes_hm

    encode = o["encode"]
    if o["checkpoint"] or o["data"]:
        raise CodecnnError("--in-hm runs an exported model in HM: give --model M.cnnw, not --checkpoint/--data")
    if not (o["inputs"] or o["seq_list"]):
        raise CodecnnError("--in-hm encodes sequences: give --yuv FILE or --list datasets/NAME.toml")
    if not o["settings"]:
        raise CodecnnError("--in-hm needs at least one --setting K:RD (e.g. --setting 10:4)")
    settings = [modes_hm.parse_setting(t) for t in o["settings"]]
    if any(s.k for s in settings) and not o["model"]:
        raise CodecnnError("--setting K:RD runs the network: give --model M.cnnw (codecnn export of a modenet)")
    dec, specs = _hm_runs_checked(o, encode)
    with contextlib.ExitStack() as stack:
        work = _work_folder(o, stack, "codecnn-modes-hm-")
        results = modes_hm.evaluate_modes_in_hm(
            specs,
            encode,
            dec=dec,
            model=Path(o["model"]) if o["model"] else None,
            settings=settings,
            workdir=work,
            jobs=o["jobs"],
            method=o["method"],
        )
    written = modes_hm.write_results(results, Path(o["out"]))
    echo_lines(modes_hm.lines(results) + [f"{k}: {v}" for k, v in written.items()])


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Folder for report.md, the plots and merged results.")
def report(results, out):
    """Render (and merge) evaluation results: report.md, RD curves and gain-vs-QP plots."""
    from codecnn.eval.report import load_results, write_report

    check_output_dir(out, "--out")
    writes = [w for w in REPORT_FILES if len(results) > 1 or w != "results.json"]  # one file: re-rendered beside
    check_not_input("--out", out, command_inputs("out"), writes)
    merged = load_results(results)
    written = write_report(merged, out, write_json=len(results) > 1)
    echo_lines(summary_lines(merged, written))


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
