"""Command-line options shared by several commands, defined once (as rasterio's ``rio/options.py``)."""

from __future__ import annotations

import functools

import click

from codecnn.encoders import STANDARD_QPS
from codecnn.encoders.x265 import PRESETS, TUNES


def _stack(*decorators):
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


geometry_options = _stack(
    click.option("--size", metavar="WxH", help="Raw YUV geometry, e.g. 1920x1080 (default: from the file name)."),
    click.option("--bit-depth", type=click.Choice(["8", "10"]), callback=lambda c, p, v: int(v) if v else None,
                 help="Raw YUV bit depth (default: from the file name, else 8)."),
    click.option("--fps", type=float, help="Frame rate (default: from the file name or header, else 30)."),
)

frame_options = _stack(
    click.option("--frames", type=click.IntRange(min=1), help="Number of frames to use (default: all)."),
    click.option("--start", type=click.IntRange(min=0), default=0, show_default=True, help="First frame."),
    click.option("--frame-step", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Use every N-th frame (all-intra: only those frames are encoded)."),
)

encoder_options = _stack(
    click.option("--qp", "qps", type=int, multiple=True, metavar="QP",
                 help=f"QP, repeatable (default: {' '.join(map(str, STANDARD_QPS))})."),
    click.option("--encoder", type=click.Choice(["x265", "hm"]), default="x265", show_default=True,
                 help="x265: libx265 bundled with PyAV; hm: your HM TAppEncoder."),
    click.option("--preset", type=click.Choice(PRESETS), default="medium", show_default=True, help="x265 preset."),
    click.option("--tune", type=click.Choice(TUNES), default="psnr", show_default=True,
                 help="x265 tuning (psnr: no psycho-visual tools)."),
    click.option("--no-deblock", is_flag=True, help="Switch the deblocking filter off."),
    click.option("--no-sao", is_flag=True, help="Switch SAO off."),
    click.option("--hm-bin", type=click.Path(), envvar="CODECNN_HM_BIN",
                 help="HM TAppEncoder binary (or $CODECNN_HM_BIN)."),
    click.option("--hm-cfg", type=click.Path(), envvar="CODECNN_HM_CFG",
                 help="HM configuration file, e.g. encoder_intra_main.cfg (or $CODECNN_HM_CFG)."),
)


def encoder_settings(encoder: str, preset: str, tune: str, no_deblock: bool, no_sao: bool,
                     hm_bin: str | None, hm_cfg: str | None) -> tuple[tuple[str, object], ...]:
    """The keyword options of :func:`codecnn.encoders.make_encoder` from the CLI's encoder options."""
    common = {"deblock": not no_deblock, "sao": not no_sao}
    if encoder == "hm":
        common.update(binary=hm_bin, cfg=hm_cfg)
    else:
        common.update(preset=preset, tune=tune)
    return tuple(sorted(common.items()))


def verbosity(f):
    @click.option("-v", "--verbose", count=True, help="More log output (-vv: debug).")
    @click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
    @functools.wraps(f)
    def wrapper(*args, verbose: int, quiet: bool, **kwargs):
        import logging

        level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
        logging.basicConfig(level=level, format="codecnn: %(message)s", force=True)
        return f(*args, **kwargs)

    return wrapper
