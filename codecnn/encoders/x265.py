"""libx265 through PyAV: the embedded default encoder.

All-intra (``config="ai"``) at a constant QP: ``keyint=1`` makes every frame an IRAP picture, ``qp=Q``
selects constant-QP rate control (which also switches adaptive quantisation off), and ``ipratio=1``
removes the I-frame QP offset that x265 otherwise applies (``qp - 6*log2(ipratio)``). The QP actually
coded is read back from the slice headers (:mod:`codecnn.hevc.syntax`) and checked. ``info=0`` keeps
x265's settings SEI (~2 kbit on the first frame) out of the stream so the rate is the pictures' alone.

The other test conditions follow HM's CTC configurations as closely as x265 can express them
(:data:`CONFIG_PARAMS`; the README lists what differs):

- **ra** (random access): an 8-picture mini-GOP of hierarchical B pictures (``bframes=7``, ``b-adapt=0``,
  ``b-pyramid``), an intra period of about one second rounded to whole GOPs (32 at 30 fps, as the CTC),
  open GOP (CRA pictures after the first), 4 references, no scene-cut decisions. QP for base QP Q: the I
  picture at Q-3 (HM's IntraQPOffset), the GOP's anchor at Q+1, x265's one reference B level at Q+4 and
  the other B pictures at Q+7. HM 16.20's cfg: a GOP of 16 on five temporal layers (B anchor at Q+1,
  then about Q+1..+4, +4..+7, +5..+8, +7..+9 depending on Q); x265 codes the anchor as a P picture and
  references only one B level.
- **ldp** (low delay P): the first picture intra, every other one P in display order (``keyint=-1``,
  ``bframes=0``), 4 references, I at Q-1, every P at Q+4. HM 16.20 varies the P pictures' QP over a GOP
  of 4 (about +5, +4, +5, +1 at QP 22; +8, +7, +8, +1 at QP 37).
- **ldb** (low delay B) is refused: its B pictures reference only past pictures (HM's generalised P/B),
  which x265 cannot code. Use HM (``--encoder hm`` with ``encoder_lowdelay_main.cfg``).

The reconstruction is the decoded bitstream (PyAV's HEVC decoder), written to a raw YUV file frame by
frame as packets come out, so memory does not grow with the sequence length.
"""

from __future__ import annotations

import csv
import fractions
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

from codecnn.encoders._capture import capture_fd2, tail
from codecnn.encoders.base import RA_GOP, Encoder, EncodeResult, check_config, check_qp, check_structure
from codecnn.errors import CodecnnError, EncoderError
from codecnn.hevc import MAX_QP
from codecnn.hevc.syntax import SLICE_I, access_units, display_order
from codecnn.yuv import Frame, VideoInfo, YuvWriter

PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
TUNES = ("none", "psnr", "ssim", "grain", "zerolatency", "fastdecode")


def _pix_fmt(bit_depth: int) -> str:
    return "yuv420p" if bit_depth == 8 else "yuv420p10le"


MIN_SIZE = 16  # libx265 refuses smaller pictures (avcodec_open2 fails with EINVAL)
# QP offsets, as close to HM 16.20's CTC cfg files as x265's constant-QP mode allows: x265's ``qp`` is the
# P pictures' QP, the I picture's is ``qp - 6*log2(ipratio)``, the non-reference B pictures' ``qp +
# 6*log2(pbratio)`` and x265's one level of reference B pictures halfway between P and B.
P_OFFSET = {"ra": 1, "ldp": 4}  # P (the GOP's anchor) above the base QP given
I_OFFSET = {"ra": -3, "ldp": -1}  # HM's IntraQPOffset
B_ABOVE_P = 6  # ra: non-reference B at base+7, reference B at base+4 (HM: +4..+9 over its four B levels)
CONFIG_PARAMS = {
    "ai": ("keyint=1", "min-keyint=1", "ipratio=1"),
    "ra": (
        "scenecut=0",
        "bframes=7",
        "b-adapt=0",
        "rc-lookahead=16",  # x265 wants more than bframes (ultrafast has 5)
        "b-pyramid=1",
        "open-gop=1",
        "ref=4",
        f"ipratio={2 ** ((P_OFFSET['ra'] - I_OFFSET['ra']) / 6):.6f}",
        f"pbratio={2 ** (B_ABOVE_P / 6):.6f}",
    ),
    "ldp": (
        "keyint=-1",
        "scenecut=0",
        "bframes=0",
        "ref=4",
        f"ipratio={2 ** ((P_OFFSET['ldp'] - I_OFFSET['ldp']) / 6):.6f}",
    ),
}


def intra_period(fps: float) -> int:
    """The random-access intra period: about one second in whole GOPs of 8 (32 at 30 fps, 24 at 25, 64 at 60)."""
    return max(RA_GOP, int(fps / RA_GOP + 0.5) * RA_GOP)


def check_x265_config(config: str) -> str:
    """``config`` if x265 can code that test condition: all but low delay B."""
    check_config(config)
    if config == "ldb":
        raise EncoderError(
            "x265 cannot code low delay B (B pictures that reference only past pictures, HM's generalised "
            "P/B): use --config ldp with x265, or --encoder hm with HM's encoder_lowdelay_main.cfg"
        )
    return config


class X265Encoder(Encoder):
    """libx265 (bundled with PyAV), constant QP, in one of the test conditions.

    Args:
        config: ``ai`` (all intra), ``ra`` (random access) or ``ldp`` (low delay P); ``ldb`` is refused.
        preset: x265 speed preset.
        tune: x265 tuning; ``psnr`` (default) turns psycho-visual optimisations off, as PSNR studies need.
        deblock: in-loop deblocking filter on (HEVC default) or off.
        sao: sample adaptive offset on (HEVC default) or off.
        threads: x265 worker threads (``None``: x265 decides).
        params: extra ``key=value`` x265 parameters, appended last.
    """

    modules = ("av",)

    name = "x265"

    def __init__(
        self,
        preset: str = "medium",
        tune: str = "psnr",
        deblock: bool = True,
        sao: bool = True,
        threads: int | None = None,
        params: tuple[str, ...] = (),
        config: str = "ai",
    ):
        self.config = check_x265_config(config)
        if preset not in PRESETS:
            raise EncoderError(f"unknown x265 preset {preset!r}; choose one of {', '.join(PRESETS)}")
        if tune not in TUNES:
            raise EncoderError(f"unknown x265 tune {tune!r}; choose one of {', '.join(TUNES)}")
        self.preset, self.tune, self.deblock, self.sao = preset, tune, deblock, sao
        self.threads, self.params = threads, tuple(params)
        self._version: str | None = None

    def x265_params(self, qp: int, csv_path: str | None = None, fps: float = 30.0) -> str:
        """x265's parameters; ``qp`` is the I pictures' QP (the CTC's base QP), the others follow."""
        p = list(CONFIG_PARAMS[self.config])
        if self.config == "ra":
            k = intra_period(fps)
            p[:0] = [f"keyint={k}", f"min-keyint={k}"]
        p += [f"qp={qp + P_OFFSET.get(self.config, 0)}", "info=0", "log-level=info"]
        p.append("deblock=1" if self.deblock else "no-deblock=1")
        p.append("sao=1" if self.sao else "no-sao=1")
        if self.threads:
            p.append(f"pools={self.threads}")
            p.append("frame-threads=1")
        if csv_path:
            p += ["psnr=1", f"csv={csv_path}", "csv-log-level=1"]
        p += list(self.params)
        return ":".join(p)

    def describe(self) -> dict:
        import av

        return {
            "encoder": self.name,
            "version": self._version,
            "pyav": av.__version__,
            "config": self.config,
            "preset": self.preset,
            "tune": self.tune,
            "deblock": self.deblock,
            "sao": self.sao,
            "params": list(self.params),
        }

    def encode(self, frames: Iterable[Frame], info: VideoInfo, qp: int, workdir: str | os.PathLike) -> EncodeResult:
        import av

        check_qp(qp)
        top = MAX_QP - P_OFFSET.get(self.config, 0)
        if qp > top or qp + I_OFFSET.get(self.config, 0) < 0:
            raise EncoderError(
                f"QP {qp} with --config {self.config}: the pictures are coded at offsets from the base QP; "
                f"use --qp from {-I_OFFSET.get(self.config, 0)} to {top}"
            )
        if min(info.width, info.height) < MIN_SIZE:
            raise EncoderError(
                f"x265 cannot encode {info.width}x{info.height} pictures: width and height must be at least "
                f"{MIN_SIZE}; use a larger source (or pad it)"
            )
        work = Path(workdir)
        work.mkdir(parents=True, exist_ok=True)
        stream_path, recon_path = work / "stream.hevc", work / "recon.yuv"
        log_path, csv_path = work / "x265.log", work / "x265.csv"
        csv_path.unlink(missing_ok=True)
        log_path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        bits: list[int] = []
        pix = _pix_fmt(info.bit_depth)
        with capture_fd2(str(log_path)), open(stream_path, "wb") as bs, YuvWriter(recon_path, info.bit_depth) as recon:
            try:
                enc = av.CodecContext.create("libx265", "w")
                enc.width, enc.height, enc.pix_fmt = info.width, info.height, pix
                enc.time_base = fractions.Fraction(1, 1) / info.fps
                enc.framerate = info.fps
                opts = {"x265-params": self.x265_params(qp, str(csv_path), float(info.fps)), "preset": self.preset}
                if self.tune != "none":
                    opts["tune"] = self.tune
                enc.options = opts
                enc.open()
                dec = av.CodecContext.create("hevc", "r")
            except av.FFmpegError as e:
                raise EncoderError(f"x265 failed to start ({e}); x265 said: {tail(log_path)}") from None

            def drain(packets, dec) -> None:
                for pkt in packets:
                    data = bytes(pkt)
                    bs.write(data)
                    bits.append(8 * len(data))
                    for vf in dec.decode(av.Packet(data)):
                        recon.write(Frame.from_i420(vf.to_ndarray(format=pix), info.bit_depth))

            try:
                for i, frame in enumerate(frames):
                    vf = av.VideoFrame.from_ndarray(frame.to_i420(), format=pix)
                    vf.pts = i
                    drain(enc.encode(vf), dec)
                drain(enc.encode(None), dec)
                for vf in dec.decode(None):
                    recon.write(Frame.from_i420(vf.to_ndarray(format=pix), info.bit_depth))
            except av.FFmpegError as e:
                raise EncoderError(f"x265 failed ({e}); x265 said: {tail(log_path)}") from None
            n_recon = recon.frames_written
            del enc, dec
        seconds = time.perf_counter() - t0
        if n_recon != len(bits):
            raise EncoderError(
                f"x265: {len(bits)} access units decoded to {n_recon} frames; x265 said: {tail(log_path)}"
            )
        m = re.search(r"HEVC encoder version (\S+)", log_path.read_text(errors="replace"))
        self._version = m.group(1) if m else None
        coding = access_units(stream_path.read_bytes())
        if len(coding) != n_recon:
            raise EncoderError(f"x265: the stream holds {len(coding)} pictures for {n_recon} decoded frames")
        check_structure(self.config, [a.slice_type for a in coding], [a.poc for a in coding], "x265")
        shown = display_order(coding)
        coded = [a.qp for a in shown]
        intra = {a.qp for a in shown if a.slice_type == SLICE_I}
        delta = any(a.cu_qp_delta_enabled for a in shown)
        want = qp + I_OFFSET.get(self.config, 0)
        if delta or intra != {want} or (self.config == "ai" and set(coded) != {qp}):
            raise EncoderError(
                f"x265 coded QPs {sorted(set(coded))} (cu_qp_delta on: {delta}), not the constant QP {want} "
                f"requested for its intra pictures"
            )
        psnr = _read_csv_psnr(csv_path)
        return EncodeResult(
            self.name,
            qp,
            info,
            stream_path,
            recon_path,
            [8 * a.nbytes for a in shown],
            coded,
            [psnr[a.coding_index] for a in shown] if psnr and len(psnr) == len(shown) else None,
            seconds,
            self.describe(),
            log_path,
            [a.slice_type for a in shown],
            [a.poc for a in shown],
            [a.temporal_id for a in shown],
            [a.coding_index for a in shown],
            self.config,
        )


def _read_csv_psnr(path: Path) -> list[tuple[float, float, float]] | None:
    """Per-frame (Y, U, V) PSNR from x265's CSV log, in encode (coding) order."""
    if not path.exists():
        return None
    with open(path, newline="") as f:
        rows = [{k.strip(): v.strip() for k, v in r.items() if k} for r in csv.DictReader(f)]
    try:
        rows.sort(key=lambda r: int(r["Encode Order"]))
        return [(float(r["Y PSNR"]), float(r["U PSNR"]), float(r["V PSNR"])) for r in rows]
    except (KeyError, ValueError):
        return None


def decode_hevc(bitstream: bytes | str | os.PathLike, bit_depth: int, name: str = "the HEVC bitstream"):
    """Decode an Annex-B HEVC stream (bytes or a file) with PyAV; yield the pictures as frames. A stream that
    does not decode raises :class:`CodecnnError` naming it (``name``)."""
    import io

    import av

    data = bitstream if isinstance(bitstream, bytes) else Path(bitstream).read_bytes()
    try:
        with av.open(io.BytesIO(data), format="hevc") as c:
            for vf in c.decode(video=0):
                yield Frame.from_i420(vf.to_ndarray(format=_pix_fmt(bit_depth)), bit_depth)
    except (av.FFmpegError, ValueError) as e:
        raise CodecnnError(f"{name} does not decode ({e}); the file holding it is damaged") from None
