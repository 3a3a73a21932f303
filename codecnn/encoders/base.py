"""The encoder interface: frames in, a bitstream, rates and a reconstruction out."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from codecnn.errors import InvalidQPError
from codecnn.hevc import MAX_QP
from codecnn.yuv import Frame, RawYuvReader, VideoInfo

STANDARD_QPS = (22, 27, 32, 37)  # JCT-VC common test conditions


def check_qp(qp: int) -> int:
    """Return ``qp`` if it is a valid HEVC QP (0..51 at 8 bits), else raise :class:`InvalidQPError`."""
    if not isinstance(qp, int) or not 0 <= qp <= MAX_QP:
        raise InvalidQPError(f"QP {qp} is outside 0..{MAX_QP}; pass --qp values in that range (CTC: 22 27 32 37)")
    return qp


@dataclass
class EncodeResult:
    """One encode of one sequence at one QP.

    ``bits[i]`` is the size of access unit ``i`` (parameter sets included, as HM counts them),
    ``coded_qp[i]`` the QP its slices were coded with, ``encoder_psnr[i]`` the encoder's own
    (Y, U, V) PSNR of frame ``i`` where it reports one. ``recon`` is a raw I420 file of the decoded
    reconstruction, in the sequence's bit depth.
    """

    encoder: str
    qp: int
    info: VideoInfo
    bitstream: Path
    recon: Path
    bits: list[int]
    coded_qp: list[int]
    encoder_psnr: list[tuple[float, float, float]] | None
    seconds: float
    settings: dict = field(default_factory=dict)
    log: Path | None = None

    @property
    def num_frames(self) -> int:
        return len(self.bits)

    def open_recon(self) -> RawYuvReader:
        return RawYuvReader(self.recon, self.info.width, self.info.height, self.info.bit_depth, self.info.fps)

    def kbps(self) -> float:
        """Average rate as HM prints it: bits x frame rate / frames / 1000."""
        return sum(self.bits) * float(self.info.fps) / len(self.bits) / 1000.0


class Encoder(ABC):
    """A real HEVC encoder. Subclasses build the encoder's options, run it and parse what it reports."""

    name: str

    @abstractmethod
    def encode(self, frames: Iterable[Frame], info: VideoInfo, qp: int, workdir: str | os.PathLike) -> EncodeResult:
        """Encode ``frames`` (all-intra, constant ``qp``) into ``workdir``; return the result."""

    @abstractmethod
    def describe(self) -> dict:
        """Name, version and settings, stored as provenance in datasets and results."""
