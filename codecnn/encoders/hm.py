"""The HEVC reference encoder HM (``TAppEncoder``), a binary the user supplies.

codecnn runs it with the sequence's geometry, bit depths, frame count and QP on top of the user's
configuration file (e.g. HM's ``cfg/encoder_intra_main.cfg``), then parses its log: one line per
picture (``POC ... ( I-SLICE, nQP 32 QP 32 ) 12144 bits [Y 35.3890 dB U ... V ...]``) and the
``SUMMARY`` table. The reconstruction is HM's ``-o`` file. Format checked on HM 16.20 logs, all intra,
random access and low delay (HM prints the pictures in coding order; codecnn keeps that order as
``coding_index`` and sorts by POC, the display order).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from codecnn.encoders._capture import tail
from codecnn.encoders.base import SLICE_LETTERS, Encoder, EncodeResult, check_config, check_qp, check_structure
from codecnn.errors import CodecnnError, EncoderError
from codecnn.yuv import Frame, VideoInfo, YuvWriter

HM_BIN_ENV = "CODECNN_HM_BIN"
HM_CFG_ENV = "CODECNN_HM_CFG"
FILTER_INPUT = "filter_input.yuv"  # --CnnRecordInput: the pictures as the in-loop filter received them
LOG_PSNR_TOLERANCE = 5.1e-5  # HM logs PSNR with 4 decimals: a figure recomputed here matches within this

_FLOAT = r"([-+]?(?:\d+\.?\d*|nan|inf))"
_POC_RE = re.compile(
    r"^POC\s+(\d+)\s+TId:\s*(\d+)\s*\(\s*([IPB])-SLICE,\s*nQP\s+(-?\d+)\s+QP\s+(-?\d+)\s*\)\s+(\d+)\s+bits\s*"
    rf"\[Y\s+{_FLOAT}\s*dB\s+U\s+{_FLOAT}\s*dB\s+V\s+{_FLOAT}\s*dB\]",
    re.M,
)
_SUMMARY_RE = re.compile(
    rf"SUMMARY\s*-+\s*\n[^\n]*\n\s*(\d+)\s+a\s+{_FLOAT}\s+{_FLOAT}\s+{_FLOAT}\s+{_FLOAT}\s+{_FLOAT}", re.M
)
_VERSION_RE = re.compile(r"Encoder Version \[([^\]]+)\]")
_BYTES_RE = re.compile(r"Bytes written to file:\s*(\d+)")
_FRAME_RATE_RE = re.compile(r"Real\s+Format\s*:\s*(\d+)x(\d+)\s+(\d+)Hz")


@dataclass(frozen=True)
class HMPicture:
    """One ``POC`` line of an HM encoder log."""

    poc: int
    tid: int
    slice_type: str
    nqp: int
    qp: int
    bits: int
    psnr_y: float
    psnr_u: float
    psnr_v: float
    coding_index: int = 0

    @property
    def slice_code(self) -> int:
        """0 (B), 1 (P) or 2 (I), as H.265's slice_type."""
        return SLICE_LETTERS.index(self.slice_type)


@dataclass(frozen=True)
class HMSummary:
    """The ``SUMMARY`` row (all slices): frames, bitrate in kbps, and the averaged PSNRs."""

    frames: int
    kbps: float
    psnr_y: float
    psnr_u: float
    psnr_v: float
    psnr_yuv: float


@dataclass(frozen=True)
class HMLog:
    """Everything codecnn reads from an HM encoder log. ``pictures`` is sorted by POC (display order);
    each one's ``coding_index`` is its place in the log (coding order)."""

    version: str | None
    pictures: tuple[HMPicture, ...]
    summary: HMSummary | None
    bytes_written: int | None
    frame_rate: int | None
    size: tuple[int, int] | None

    @property
    def bits(self) -> list[int]:
        return [p.bits for p in self.pictures]


def parse_hm_log(text: str) -> HMLog:
    """Parse an HM (16.x) encoder log; raise :class:`CodecnnError` if it has no picture line."""
    pics = [
        HMPicture(int(m[1]), int(m[2]), m[3], int(m[4]), int(m[5]), int(m[6]), float(m[7]), float(m[8]), float(m[9]), k)
        for k, m in enumerate(_POC_RE.finditer(text))
    ]
    if not pics:
        raise CodecnnError("not an HM encoder log: no 'POC ... bits [Y ... dB ...]' line found")
    pics.sort(key=lambda p: p.poc)
    s = _SUMMARY_RE.search(text)
    summary = HMSummary(int(s[1]), *(float(s[i]) for i in range(2, 7))) if s else None
    v, b, fr = _VERSION_RE.search(text), _BYTES_RE.search(text), _FRAME_RATE_RE.search(text)
    return HMLog(
        v[1] if v else None,
        tuple(pics),
        summary,
        int(b[1]) if b else None,
        int(fr[3]) if fr else None,
        (int(fr[1]), int(fr[2])) if fr else None,
    )


def read_hm_log(path: str | os.PathLike) -> HMLog:
    p = Path(path)
    if not p.is_file():
        raise CodecnnError(f"{p}: no such HM log file")
    try:
        return parse_hm_log(p.read_text(errors="replace"))
    except CodecnnError as e:
        raise CodecnnError(f"{p}: {e}") from None


def find_hm_binary(path: str | os.PathLike | None = None) -> Path:
    """The HM encoder binary from ``path``, ``$CODECNN_HM_BIN``, or the PATH; a clear error if none."""
    cand = path or os.environ.get(HM_BIN_ENV) or shutil.which("TAppEncoderStatic") or shutil.which("TAppEncoder")
    if not cand:
        raise EncoderError(
            f"HM encoder not found: build HM (TAppEncoderStatic) and pass --hm-bin PATH or set {HM_BIN_ENV}=PATH"
        )
    p = Path(cand)
    if not p.is_file() or not os.access(p, os.X_OK):
        raise EncoderError(f"HM encoder {p} is not an executable file: fix --hm-bin or {HM_BIN_ENV}")
    return p


class HMEncoder(Encoder):
    """A user-supplied HM ``TAppEncoder`` with a configuration file.

    Args:
        binary: path of ``TAppEncoderStatic`` (else ``$CODECNN_HM_BIN``, else the PATH).
        cfg: HM configuration, e.g. ``encoder_intra_main.cfg`` (else ``$CODECNN_HM_CFG``).
        deblock, sao: ``False`` adds ``--LoopFilterDisable=1`` / ``--SAO=0``.
        args: extra HM command-line options, appended last.
        config: the test condition ``cfg`` codes (``ai``, ``ra``, ``ldb``, ``ldp``); every encode is checked
            against it (slice types, coding order), so a mismatched cfg is an error, not a dataset.
        loop_model: an int16 .cnnw filter for a patched HM's loop (``--CnnModel``); the encode's
            reconstruction is then the picture that filter receives (``--CnnRecordInput``, after SAO, its
            references filtered): closed-loop training data. The bitstream needs the patched decoder.
    """

    name = "hm"

    def __init__(
        self,
        binary: str | os.PathLike | None = None,
        cfg: str | os.PathLike | None = None,
        deblock: bool = True,
        sao: bool = True,
        args: tuple[str, ...] = (),
        config: str = "ai",
        loop_model: str | os.PathLike | None = None,
    ):
        self.config = check_config(config)
        self.loop_model = None
        if loop_model is not None:
            self.loop_model = Path(loop_model).resolve()
            if not self.loop_model.is_file():
                raise EncoderError(f"--loop-model {loop_model}: no such file")
        self.binary = find_hm_binary(binary)
        cfg = cfg or os.environ.get(HM_CFG_ENV)
        if not cfg:
            raise EncoderError(
                f"the HM encoder needs a configuration: pass --hm-cfg (e.g. HM's cfg/encoder_intra_main.cfg) "
                f"or set {HM_CFG_ENV}"
            )
        self.cfg = Path(cfg).resolve()
        if not self.cfg.is_file():
            raise EncoderError(f"HM configuration {self.cfg}: no such file")
        self.deblock, self.sao, self.args = deblock, sao, tuple(args)
        self._version: str | None = None

    def argv(self, info: VideoInfo, qp: int, frames: int) -> list[str]:
        bd = info.bit_depth
        fps = round(float(info.fps))
        a = [
            str(self.binary),
            "-c",
            str(self.cfg),
            "-i",
            "orig.yuv",
            "-b",
            "stream.bin",
            "-o",
            "recon.yuv",
            f"--SourceWidth={info.width}",
            f"--SourceHeight={info.height}",
            f"--FrameRate={fps}",
            f"--FramesToBeEncoded={frames}",
            "--InputChromaFormat=420",
            f"--InputBitDepth={bd}",
            f"--InternalBitDepth={bd}",
            f"--OutputBitDepth={bd}",
            f"--QP={qp}",
        ]
        if not self.deblock:
            a.append("--LoopFilterDisable=1")
        if not self.sao:
            a.append("--SAO=0")
        if self.loop_model is not None:
            a += [f"--CnnModel={self.loop_model}", f"--CnnRecordInput={FILTER_INPUT}"]
        return a + list(self.args)

    def describe(self) -> dict:
        return {
            "encoder": self.name,
            "version": self._version,
            "binary": str(self.binary),
            "cfg": str(self.cfg),
            "config": self.config,
            "deblock": self.deblock,
            "sao": self.sao,
            "args": list(self.args),
            "loop_model": str(self.loop_model) if self.loop_model else None,
        }

    def encode(self, frames: Iterable[Frame], info: VideoInfo, qp: int, workdir: str | os.PathLike) -> EncodeResult:
        check_qp(qp)
        work = Path(workdir)
        work.mkdir(parents=True, exist_ok=True)
        with YuvWriter(work / "orig.yuv", info.bit_depth) as w:
            for f in frames:
                w.write(f)
        n = w.frames_written
        log_path = work / "encoder.log"
        t0 = time.perf_counter()
        with open(log_path, "wb") as logf:
            try:
                rc = subprocess.run(self.argv(info, qp, n), cwd=work, stdout=logf, stderr=subprocess.STDOUT).returncode
            except OSError as e:
                raise EncoderError(f"cannot run HM encoder {self.binary}: {e}") from None
        seconds = time.perf_counter() - t0
        if rc != 0:
            raise EncoderError(f"HM encoder exited with status {rc}; it said: {tail(log_path)}")
        log = read_hm_log(log_path)
        self._version = log.version
        if len(log.pictures) != n:
            raise EncoderError(f"HM logged {len(log.pictures)} pictures for {n} frames; it said: {tail(log_path)}")
        coding = sorted(log.pictures, key=lambda p: p.coding_index)
        check_structure(self.config, [p.slice_code for p in coding], [p.poc for p in coding], "HM")
        (work / "orig.yuv").unlink()
        recon = work / "recon.yuv"
        if self.loop_model is not None:  # the pictures as the in-loop filter received them
            recon = work / FILTER_INPUT
            if not recon.is_file() or recon.stat().st_size != (work / "recon.yuv").stat().st_size:
                raise EncoderError(
                    f"HM did not record the filter's input ({FILTER_INPUT}): --loop-model needs an HM patched by "
                    "this codecnn (python -m hm_bridge patch-hm HM_DIR, then rebuild HM)"
                )
        return EncodeResult(
            self.name,
            qp,
            info,
            work / "stream.bin",
            recon,
            log.bits,
            [p.qp for p in log.pictures],
            [(p.psnr_y, p.psnr_u, p.psnr_v) for p in log.pictures],
            seconds,
            self.describe(),
            log_path,
            [p.slice_code for p in log.pictures],
            [p.poc for p in log.pictures],
            [p.tid for p in log.pictures],
            [p.coding_index for p in log.pictures],
            self.config,
        )
