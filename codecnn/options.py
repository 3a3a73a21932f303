"""Command-line options shared by several commands, defined once (as rasterio's ``rio/options.py``)."""

from __future__ import annotations

import functools
import math

import click

from codecnn.data.ctu import CTU_SIZES
from codecnn.encoders import CONFIGS, STANDARD_QPS, EncodeSettings
from codecnn.encoders.base import SLICE_LETTERS
from codecnn.encoders.x265 import PRESETS, TUNES
from codecnn.hevc import MAX_QP
from codecnn.train.config import CACHES, LOSSES, SCHEDULES, TrainConfig


class Real(click.FloatRange):
    """A finite float (NaN and infinity refused) in an optional range, stated in ``--help``."""

    name = "number"

    def convert(self, value, param, ctx):
        v = super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


class IntChoice(click.ParamType):
    """One of a few integers (e.g. the CTU sizes), listed in ``--help``."""

    name = "integer"

    def __init__(self, values):
        self.values = tuple(values)

    def get_metavar(self, param, ctx=None):
        return "[" + "|".join(map(str, self.values)) + "]"

    def convert(self, value, param, ctx):
        try:
            v = int(value)
        except (TypeError, ValueError):
            v = None
        if v not in self.values:
            self.fail(f"{value!r} is not one of {', '.join(map(str, self.values))}", param, ctx)
        return v


POSITIVE = click.IntRange(min=1)
COUNT = click.IntRange(min=0)
QP = click.IntRange(0, MAX_QP)
CTU_SIZE = IntChoice(CTU_SIZES)


def _stack(*decorators):
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


_ENCODE_OPTIONS = _stack(
    # the sources' geometry
    click.option("--size", metavar="WxH", help="Raw YUV geometry, e.g. 1920x1080 (default: from the file name)."),
    click.option(
        "--bit-depth",
        type=click.Choice(["8", "10"]),
        callback=lambda c, p, v: int(v) if v else None,
        help="Raw YUV bit depth (default: from the file name, else 8).",
    ),
    click.option(
        "--fps", type=Real(min=0, min_open=True), help="Frame rate (default: from the file name or header, else 30)."
    ),
    # the frames
    click.option("--frames", type=POSITIVE, help="Number of frames to use (default: all)."),
    click.option("--start", type=COUNT, default=0, show_default=True, help="First frame."),
    click.option(
        "--frame-step",
        type=POSITIVE,
        default=1,
        show_default=True,
        help="Use every N-th frame (all-intra: only those frames are encoded).",
    ),
    # the QPs, the encoder and its settings
    click.option(
        "--qp",
        "qps",
        type=QP,
        multiple=True,
        metavar="QP",
        help=f"QP, repeatable (default: {' '.join(map(str, STANDARD_QPS))}).",
    ),
    click.option(
        "--encoder",
        type=click.Choice(["x265", "hm"]),
        default="x265",
        show_default=True,
        help="x265: libx265 bundled with PyAV; hm: your HM TAppEncoder.",
    ),
    click.option("--preset", type=click.Choice(PRESETS), default="medium", show_default=True, help="x265 preset."),
    click.option(
        "--tune",
        type=click.Choice(TUNES),
        default="psnr",
        show_default=True,
        help="x265 tuning (psnr: no psycho-visual tools).",
    ),
    click.option(
        "--config",
        "test_config",
        type=click.Choice(CONFIGS),
        default="ai",
        show_default=True,
        help="CTC test condition: ai all intra, ra random access, ldb low delay B (HM only), ldp low delay P.",
    ),
    click.option("--no-deblock", is_flag=True, help="Switch the deblocking filter off."),
    click.option("--no-sao", is_flag=True, help="Switch SAO off."),
    click.option(
        "--hm-bin", type=click.Path(), envvar="CODECNN_HM_BIN", help="HM TAppEncoder binary (or $CODECNN_HM_BIN)."
    ),
    click.option(
        "--hm-cfg",
        type=click.Path(),
        envvar="CODECNN_HM_CFG",
        help="HM configuration file, e.g. encoder_intra_main.cfg (or $CODECNN_HM_CFG).",
    ),
)


def encode_options(f=None, *, hm_flag: str | None = None):
    """The options of every command that encodes (the sources' geometry, the frames, the QPs, the encoder and
    its settings), given to the command as one :class:`codecnn.encoders.EncodeSettings`, the parameter
    ``encode``, built (and so checked, the rules between options included) before the command runs.

    ``hm_flag``: the name of a flag of the command under which HM encodes whatever --encoder says
    (``evaluate --in-loop``)."""
    if f is None:
        return functools.partial(encode_options, hm_flag=hm_flag)

    @_ENCODE_OPTIONS
    @functools.wraps(f)
    def wrapper(
        *args,
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
        test_config,
        no_deblock,
        no_sao,
        hm_bin,
        hm_cfg,
        **kwargs,
    ):
        encode = EncodeSettings(
            size=size,
            bit_depth=bit_depth,
            fps=fps,
            frames=frames,
            start=start,
            frame_step=frame_step,
            qps=qps,
            encoder="hm" if hm_flag is not None and kwargs.get(hm_flag) else encoder,
            preset=preset,
            tune=tune,
            config=test_config,
            deblock=not no_deblock,
            sao=not no_sao,
            hm_bin=hm_bin,
            hm_cfg=hm_cfg,
        )
        return f(*args, encode=encode, **kwargs)

    return wrapper


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


rdn_options = _stack(
    click.option("--blocks", type=click.IntRange(1, 64), default=4, show_default=True, help="Residual dense blocks."),
    click.option(
        "--layers", type=click.IntRange(1, 32), default=6, show_default=True, help="Dense conv layers per block."
    ),
    click.option(
        "--growth", type=click.IntRange(1, 256), default=24, show_default=True, help="Growth rate (channels per layer)."
    ),
    click.option("--features", type=click.IntRange(1, 512), default=32, show_default=True, help="Feature channels."),
    click.option("--qp-map", is_flag=True, help="QP as an extra input plane (one model for all QPs)."),
    click.option("--separable", is_flag=True, help="Depthwise 3x3 + pointwise 1x1 in place of each inner 3x3."),
    click.option(
        "--head",
        type=click.Choice(["3x3", "5x5"]),
        default="3x3",
        show_default=True,
        help="Unpadded head: two 3x3 convs (lab notes) or one 5x5.",
    ),
)


def rdn_config(blocks: int, layers: int, growth: int, features: int, qp_map: bool, separable: bool, head: str):
    from codecnn.models import RDNConfig

    return RDNConfig(
        num_blocks=blocks,
        num_layers=layers,
        growth=growth,
        num_features=features,
        qp_map=qp_map,
        separable=separable,
        head=head,
    )


train_options = _stack(
    click.option("--data", required=True, type=click.Path(), help="Dataset from codecnn make-dataset."),
    click.option("--out", required=True, type=click.Path(), help="Run folder: checkpoints, log.jsonl, curves.png."),
    click.option("--steps", type=POSITIVE, help="Training steps (or --epochs, not both)."),
    click.option("--epochs", type=Real(min=0, min_open=True), help="Epochs over the train split (or --steps)."),
    click.option(
        "--time-limit",
        type=Real(min=0, min_open=True),
        metavar="SECONDS",
        help="Training time budget: the learning-rate schedule runs over it and the run stops (with a checkpoint) "
        "when it is spent; counted across --resume.",
    ),
    click.option("--batch", type=POSITIVE, default=16, show_default=True, help="Global batch size."),
    click.option("--lr", type=Real(min=0, min_open=True), default=2e-4, show_default=True, help="Adam learning rate."),
    click.option("--schedule", type=click.Choice(SCHEDULES), default="cosine", show_default=True),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--val-every", type=POSITIVE, default=500, show_default=True),
    click.option("--log-every", type=POSITIVE, default=10, show_default=True),
    click.option(
        "--ema",
        type=Real(min=0, max=1, max_open=True),
        default=0.0,
        show_default=True,
        help="EMA decay of the weights (0: off).",
    ),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N."),
    click.option("--no-amp", is_flag=True, help="No bf16 autocast on CUDA."),
    click.option(
        "--no-channels-last", is_flag=True, help="Keep NCHW tensors (channels_last is faster on GPU and CPU)."
    ),
    click.option("--compile", "compile_", is_flag=True, help="torch.compile the model."),
    click.option("--workers", type=COUNT, default=2, show_default=True, help="DataLoader workers."),
    click.option(
        "--cache",
        type=click.Choice(CACHES),
        default="auto",
        show_default=True,
        help="Decompress the train split once into memory (ram; device: on the GPU) and crop batches from it; "
        "auto: ram when it fits in 25% of physical memory, else off (read through the DataLoader).",
    ),
    click.option("--qp", "qps", type=QP, multiple=True, help="Train on these QPs only (a per-QP model)."),
    click.option("--resume", is_flag=True, help="Continue the run in --out from last.pt."),
    click.option(
        "--init",
        type=click.Path(),
        help="Start from the weights of this checkpoint (same architecture and config): fine-tuning.",
    ),
)

restoration_train_options = _stack(
    click.option(
        "--patch",
        type=COUNT,
        default=64,
        show_default=True,
        help="Random crops of this size, a multiple of 8 (0: whole CTUs).",
    ),
    click.option(
        "--loss",
        type=click.Choice(LOSSES),
        default="l1",
        show_default=True,
        help="gain: minus the per-patch PSNR gain over the reconstruction (balances QPs).",
    ),
    click.option("--no-augment", is_flag=True, help="No random flips."),
    click.option(
        "--repeat",
        multiple=True,
        callback=lambda ctx, param, v: parse_repeat(v),
        metavar="NAME=N",
        help="Take the train samples of the sequences named NAME (a pattern: '*' any) N times an epoch, e.g. "
        "--repeat '*=6' --repeat bigbuckbunny=1 weighs the photographs against the video (the last matching "
        "NAME wins; 0 leaves a sequence out).",
    ),
    click.option(
        "--slice-types",
        callback=lambda ctx, param, v: parse_slice_types(v),
        metavar="I,P,B",
        help="Train on pictures of these slice types only, e.g. I or B,P (datasets of --config ra/ldb/ldp).",
    ),
)


def parse_repeat(values) -> tuple[tuple[str, int], ...]:
    """``("*=6", "bigbuckbunny=1")`` -> ``(("*", 6), ("bigbuckbunny", 1))``."""
    out = []
    for v in values or ():
        name, sep, count = v.rpartition("=")
        if not sep or not name or not count.strip().isdigit():
            raise click.BadParameter(f"{v!r}: give NAME=N, a sequence name (or pattern) and a count, e.g. photos*=4")
        out.append((name, int(count)))
    return tuple(out)


def parse_slice_types(text: str | None) -> tuple[int, ...]:
    """``"B,P"`` -> ``(0, 1)`` (H.265 slice_type codes); None -> ()."""
    if not text:
        return ()
    letters = [t.strip().upper() for t in text.split(",") if t.strip()]
    if not letters or any(t not in SLICE_LETTERS for t in letters):
        raise click.BadParameter(f"{text!r}: give slice types among I, P, B separated by commas, e.g. B,P")
    return tuple(sorted({SLICE_LETTERS.index(t) for t in letters}))


def train_config(
    *, no_amp: bool, no_channels_last: bool, compile_: bool, qps, no_augment: bool = False, repeat=(), **kw
):
    """A :class:`codecnn.train.config.TrainConfig` from the training options (keywords only)."""
    return TrainConfig(
        amp=not no_amp,
        channels_last=not no_channels_last,
        compile=compile_,
        qps=tuple(qps),
        repeat=tuple(repeat),
        augment=not no_augment,
        **kw,
    )
