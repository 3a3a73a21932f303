"""``codecnn export``: a checkpoint to a ``.cnnw`` file for HM (or ONNX)."""

from __future__ import annotations

import click

from codecnn.cli.group import cli, command_inputs
from codecnn.errors import CodecnnError
from codecnn.files import check_not_input, check_output_file


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="The .cnnw file to write.")
@click.option(
    "--int16",
    is_flag=True,
    help="int16 fixed point (bit-exact across machines), calibrated on real CTUs (a mode network: real blocks).",
)
@click.option(
    "--calib",
    type=click.Path(),
    help="Dataset to calibrate --int16 on (default: the training data); a mode network's: an intra-modes dataset.",
)
@click.option("--onnx", "as_onnx", is_flag=True, help="Write ONNX instead (checked against PyTorch with onnxruntime).")
def export(checkpoint, out, int16, calib, as_onnx):
    """Export a checkpoint for HM: a versioned .cnnw file read by hm_bridge/cpp/cnnw.h (a restoration network,
    the luma filter) or by hm_bridge/cpp/cnnw_modenet.h (a mode network, for HM's intra search), float32 or int16."""
    from codecnn.train.checkpoint import load_checkpoint
    from hm_bridge.export import MAX_LOSS_DB, export_checkpoint, export_onnx
    from hm_bridge.modenet import export_modenet

    if as_onnx and int16:
        raise CodecnnError("--onnx writes a float ONNX model and --int16 an int16 .cnnw file: give one of them")
    check_output_file(out, "--out")
    check_not_input("--out", out, command_inputs("out"))
    if load_checkpoint(checkpoint).get("arch") == "modenet":
        if as_onnx:
            raise CodecnnError("a mode network exports as a .cnnw file only (float32 or --int16): drop --onnx")
        p, g, rep = export_modenet(checkpoint, out, int16, calib)
        kind = "int16" if int16 else "float32"
        click.echo(f"wrote {p} ({p.stat().st_size} bytes, {kind} mode network, .cnnw version {g.version})")
        if rep:
            click.echo(
                f"int16 against float on {rep['blocks']} real blocks (not those calibrated on): top-1 the same on "
                f"{100 * rep['top1_agree']:.1f}%, float top-1 in the int16 top 10 on "
                f"{100 * rep['float_top1_in_int_top10']:.1f}%, top-10 overlap {100 * rep['top10_overlap']:.1f}%"
            )
        return
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
