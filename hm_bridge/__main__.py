"""``python -m hm_bridge``: export codecnn networks for HM and measure gains on HM's outputs."""

from __future__ import annotations

import json

import click

from codecnn.cli import CodecnnGroup, UserError
from codecnn.cli import export as codecnn_export
from codecnn.errors import CodecnnError
from codecnn.options import CTU_SIZE, IntChoice


@click.group(cls=CodecnnGroup)
def main():
    """Carry codecnn networks into the HEVC reference software (HM)."""


main.add_command(codecnn_export, "export")  # the same command as `codecnn export`


@main.command()
@click.option("--orig", required=True, type=click.Path(), help="The source YUV HM encoded.")
@click.option("--recon", required=True, type=click.Path(), help="HM's reconstruction (-o).")
@click.option("--log", "log_path", required=True, type=click.Path(), help="HM's encoder log.")
@click.option("--model", required=True, type=click.Path(), help="A .cnnw model.")
@click.option("--size", metavar="WxH", help="Geometry (default: from the file name).")
@click.option("--bit-depth", type=IntChoice((8, 10)), help="Sample bit depth (default: from the file name, else 8).")
@click.option("--ctu", type=CTU_SIZE, default=128, show_default=True, help="CTU size the model filters by.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def gain(orig, recon, log_path, model, size, bit_depth, ctu, as_json):
    """Per-frame and average luma PSNR of HM's recon and of the filtered recon (HM's bits and PSNR)."""
    from hm_bridge.gain import hm_gain

    r = hm_gain(orig, recon, log_path, model, size, bit_depth, ctu)
    if as_json:
        click.echo(json.dumps(r))
        return
    for f in r["frames"]:
        click.echo(
            f"POC {f['poc']:>3} QP {f['qp']}: HM {f['psnr_anchor']:.4f} dB, filtered {f['psnr_filtered']:.4f} "
            f"dB, gain {f['gain']:+.4f} dB"
        )
    a = r["average"]
    click.echo(f"average: HM {a['psnr_anchor']:.4f} dB, filtered {a['psnr_filtered']:.4f} dB, gain {a['gain']:+.4f} dB")


@main.command("patch-hm")
@click.argument("hm_dir", type=click.Path())
def patch_hm_cmd(hm_dir):
    """Insert the codecnn luma filter (after SAO, encoder and decoder) and the options --CnnModel and --CnnFlags
    into an HM checkout; print the command that rebuilds it."""
    from hm_bridge.patch_hm import patch_hm, rebuild_command

    for line in patch_hm(hm_dir):
        click.echo(line)
    click.echo(
        "now rebuild HM (without AVX2, drop -mavx2 -mfma; with AVX-512 VNNI, -march=native in their place runs an "
        "int16 model about twice as fast, same pictures):"
    )
    click.echo(f"  {rebuild_command(hm_dir)}")
    click.echo("then run TAppEncoderStatic and TAppDecoderStatic with --CnnModel=model.cnnw (the same model in both)")


__all__ = ["main", "UserError", "CodecnnError"]

if __name__ == "__main__":
    main()
