"""How sequences are encoded, as one object (:class:`EncodeSettings`): the sources' raw geometry, the frames
chosen, the QPs, and the encoder with its settings.

The command line builds it once from its options (:func:`codecnn.options.encode_options`, shared by every
command that encodes) and it travels whole: to the dataset build (:class:`codecnn.data.build.BuildOptions`),
to the evaluation (:func:`codecnn.eval.runs.select_runs`, :func:`codecnn.eval.inloop.evaluate_in_loop`) and,
as itself, to the Dask workers. It is checked where it is made, the rules between options included, so
every command refuses the same things with the same words.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from codecnn.encoders.base import STANDARD_QPS, Encoder, check_config, check_qp
from codecnn.encoders.x265 import check_x265_config
from codecnn.errors import CodecnnError


@dataclass(frozen=True)
class EncodeSettings:
    """The encode options of ``make-dataset`` and ``evaluate`` (one field per option, the same defaults).

    ``size``, ``bit_depth``, ``fps``: a raw source's geometry (None: from the file name or header).
    ``frames``, ``start``, ``frame_step``: the frames chosen (``frames`` None: all).
    ``qps``: the QPs given; ``()`` means :data:`STANDARD_QPS` for a fresh encode (:attr:`encode_qps`) and
    every QP a dataset or HM's files hold when those are read.
    ``encoder``: ``x265`` or ``hm``; ``preset`` and ``tune`` are x265's, ``hm_bin`` and ``hm_cfg`` HM's;
    ``config`` the CTC test condition (ai, ra, ldb, ldp); ``deblock`` and ``sao`` the in-loop filters.
    ``threads``: x265 worker threads (None: x265 decides), no command-line option (scripts set it).
    ``loop_model``: HM only, an int16 .cnnw filter HM runs in its loop (a patched HM), and each encode's
    reconstruction is the picture that filter receives: closed-loop training data (make-dataset's
    ``--loop-model``; not a shared option).
    """

    size: str | None = None
    bit_depth: int | None = None
    fps: float | None = None
    frames: int | None = None
    start: int = 0
    frame_step: int = 1
    qps: tuple[int, ...] = ()
    encoder: str = "x265"
    preset: str = "medium"
    tune: str = "psnr"
    config: str = "ai"
    deblock: bool = True
    sao: bool = True
    hm_bin: str | None = None
    hm_cfg: str | None = None
    threads: int | None = None
    loop_model: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "qps", tuple(self.qps))
        for qp in self.qps:
            check_qp(qp)
        if self.frames is not None and self.frames < 1:
            raise CodecnnError(f"--frames {self.frames}: use 1 or more")
        if self.start < 0:
            raise CodecnnError(f"--start {self.start}: use 0 or more")
        if self.frame_step < 1:
            raise CodecnnError(f"--frame-step {self.frame_step}: use 1 or more")
        self.encoder_class()  # an unknown encoder is refused here
        check_config(self.config)
        # the rules between options
        if self.config != "ai" and self.frame_step > 1:
            raise CodecnnError(
                f"--frame-step {self.frame_step} with --config {self.config}: inter coding needs consecutive "
                "frames; drop --frame-step (or use --config ai)"
            )
        if self.encoder == "x265":
            check_x265_config(self.config)
        elif self.threads is not None:
            raise CodecnnError(f"threads={self.threads} is an x265 setting; the {self.encoder} encoder has none")
        if self.loop_model is not None and self.encoder != "hm":
            raise CodecnnError(
                "--loop-model runs a filter inside HM's loop: add --encoder hm with a patched HM "
                "(python -m hm_bridge patch-hm HM_DIR)"
            )

    @property
    def encode_qps(self) -> tuple[int, ...]:
        """The QPs a fresh encode codes: those given, else :data:`STANDARD_QPS`."""
        return self.qps or STANDARD_QPS

    def encoder_class(self) -> type[Encoder]:
        from codecnn.encoders import encoder_class

        return encoder_class(self.encoder)

    def encoder_options(self) -> tuple[tuple[str, object], ...]:
        """The keyword options of :func:`codecnn.encoders.make_encoder` (sorted (name, value) pairs; a dataset
        stores them as its ``encoder_options``)."""
        common = {"deblock": self.deblock, "sao": self.sao, "config": self.config}
        if self.encoder == "hm":
            common.update(binary=self.hm_bin, cfg=self.hm_cfg)
            if self.loop_model is not None:
                common["loop_model"] = self.loop_model
        else:
            common.update(preset=self.preset, tune=self.tune)
            if self.threads is not None:
                common["threads"] = self.threads
        return tuple(sorted(common.items()))

    def make_encoder(self) -> Encoder:
        """The encoder these settings describe (an HM binary or cfg that is missing fails here)."""
        from codecnn.encoders import make_encoder

        return make_encoder(self.encoder, **dict(self.encoder_options()))

    def portable(self) -> EncodeSettings:
        """These settings with the files they name made absolute (a Dask worker's current folder is not ours):
        the HM cfg, and the HM binary when given as a path rather than a name found on the PATH."""
        hm_cfg = os.path.abspath(self.hm_cfg) if self.hm_cfg else self.hm_cfg
        hm_bin = os.path.abspath(self.hm_bin) if self.hm_bin and os.sep in self.hm_bin else self.hm_bin
        loop_model = os.path.abspath(self.loop_model) if self.loop_model else self.loop_model
        return dataclasses.replace(self, hm_cfg=hm_cfg, hm_bin=hm_bin, loop_model=loop_model)
