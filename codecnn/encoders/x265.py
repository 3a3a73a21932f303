"""libx265 through PyAV: the embedded default encoder.

All-intra at a constant QP: ``keyint=1`` makes every frame an IRAP picture, ``qp=Q`` selects constant-QP
rate control (which also switches adaptive quantisation off), and ``ipratio=1`` removes the I-frame QP
offset that x265 otherwise applies (``qp - 6*log2(ipratio)``). The QP actually coded is read back from
the slice headers (:mod:`codecnn.hevc.syntax`) and checked. ``info=0`` keeps x265's settings
SEI (~2 kbit on the first frame) out of the stream so the rate is the pictures' alone.

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
from codecnn.encoders.base import Encoder, EncodeResult, check_qp
from codecnn.errors import CodecnnError, EncoderError
from codecnn.hevc.syntax import slice_qps
from codecnn.yuv import Frame, VideoInfo, YuvWriter

PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
TUNES = ("none", "psnr", "ssim", "grain", "zerolatency", "fastdecode")


def _pix_fmt(bit_depth: int) -> str:
    return "yuv420p" if bit_depth == 8 else "yuv420p10le"


MIN_SIZE = 16  # libx265 refuses smaller pictures (avcodec_open2 fails with EINVAL)


class X265Encoder(Encoder):
    """libx265 (bundled with PyAV), all-intra, constant QP.

    Args:
        preset: x265 speed preset.
        tune: x265 tuning; ``psnr`` (default) turns psycho-visual optimisations off, as PSNR studies need.
        deblock: in-loop deblocking filter on (HEVC default) or off.
        sao: sample adaptive offset on (HEVC default) or off.
        threads: x265 worker threads (``None``: x265 decides).
        params: extra ``key=value`` x265 parameters, appended last.
    """

    name = "x265"

    def __init__(
        self,
        preset: str = "medium",
        tune: str = "psnr",
        deblock: bool = True,
        sao: bool = True,
        threads: int | None = None,
        params: tuple[str, ...] = (),
    ):
        if preset not in PRESETS:
            raise EncoderError(f"unknown x265 preset {preset!r}; choose one of {', '.join(PRESETS)}")
        if tune not in TUNES:
            raise EncoderError(f"unknown x265 tune {tune!r}; choose one of {', '.join(TUNES)}")
        self.preset, self.tune, self.deblock, self.sao = preset, tune, deblock, sao
        self.threads, self.params = threads, tuple(params)
        self._version: str | None = None

    def x265_params(self, qp: int, csv_path: str | None = None) -> str:
        p = ["keyint=1", "min-keyint=1", f"qp={qp}", "ipratio=1", "info=0", "log-level=info"]
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
            "preset": self.preset,
            "tune": self.tune,
            "deblock": self.deblock,
            "sao": self.sao,
            "params": list(self.params),
        }

    def encode(self, frames: Iterable[Frame], info: VideoInfo, qp: int, workdir: str | os.PathLike) -> EncodeResult:
        import av

        check_qp(qp)
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
                opts = {"x265-params": self.x265_params(qp, str(csv_path)), "preset": self.preset}
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
        slices = [s for s in slice_qps(stream_path.read_bytes()) if s.first_in_picture]
        coded = [s.qp for s in slices]
        if any(s.cu_qp_delta_enabled for s in slices) or coded != [qp] * len(bits):
            raise EncoderError(
                f"x265 coded QPs {sorted(set(coded))} (cu_qp_delta on: "
                f"{any(s.cu_qp_delta_enabled for s in slices)}), not the constant QP {qp} requested"
            )
        return EncodeResult(
            self.name,
            qp,
            info,
            stream_path,
            recon_path,
            bits,
            coded,
            _read_csv_psnr(csv_path),
            seconds,
            self.describe(),
            log_path,
        )


def _read_csv_psnr(path: Path) -> list[tuple[float, float, float]] | None:
    """Per-frame (Y, U, V) PSNR from x265's CSV log, in encode order (= display order all-intra)."""
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
