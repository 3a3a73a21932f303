"""The encoder interface: frames in, a bitstream, rates and a reconstruction out."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from codecnn.errors import CodecnnError, EncoderError, InvalidQPError
from codecnn.hevc import MAX_QP
from codecnn.yuv import Frame, RawYuvReader, VideoInfo

STANDARD_QPS = (22, 27, 32, 37)  # JCT-VC common test conditions

# The four test conditions of the JCT-VC CTC (JCTVC-L1100): all intra, random access, low delay B, low delay P
CONFIGS = ("ai", "ra", "ldb", "ldp")
CONFIG_NAMES = {"ai": "all intra", "ra": "random access", "ldb": "low delay B", "ldp": "low delay P"}
RA_GOP = 8  # x265's random-access mini-GOP (hierarchical B); HM 16.20's cfg uses 16 and signals TemporalIds
SLICE_LETTERS = "BPI"  # slice_type 0, 1, 2 (H.265 Table 7-7)


def check_config(config: str) -> str:
    if config not in CONFIGS:
        raise CodecnnError(f"--config {config!r}: use one of {', '.join(CONFIGS)} ({', '.join(CONFIG_NAMES.values())})")
    return config


def hierarchy_layer(config: str, poc: int) -> int:
    """A picture's depth in the coding hierarchy when the stream signals no temporal layers (x265): in
    random access its dyadic level in the GOP of 8 (0 for POC 0, 8, 16, ...; 1 for 4, 12, ...; 2 for the
    even rest; 3 for the odd POCs); 0 in all intra and low delay, whose pictures all sit on one level."""
    if config != "ra":
        return 0
    k = poc % RA_GOP
    if k == 0:
        return 0
    return (RA_GOP.bit_length() - 1) - ((k & -k).bit_length() - 1)


def check_structure(config: str, slice_types: list[int], coding_pocs: list[int], who: str) -> None:
    """Refuse an encode whose pictures are not the structure ``config`` asks for: all intra has only I
    slices; low delay codes pictures in display order with P (ldp) or B (ldb) slices after the first; random
    access codes B pictures out of display order. ``coding_pocs`` are the POCs in coding order."""
    types = "".join(SLICE_LETTERS[t] for t in slice_types)
    bad = None
    if config == "ai" and set(types) != {"I"}:
        bad = "slices other than I"
    elif config in ("ldb", "ldp"):
        want = "P" if config == "ldp" else "B"
        if types[:1] != "I" or set(types[1:]) - {want}:
            bad = f"slices other than I then {want}"
        elif coding_pocs != sorted(coding_pocs):
            bad = "pictures coded out of display order"
    elif config == "ra" and len(types) > 2 and ("B" not in types or coding_pocs == sorted(coding_pocs)):
        bad = "no hierarchical B pictures coded out of display order"
    if bad:
        raise EncoderError(
            f"{who} coded {bad} ({types}), not the {CONFIG_NAMES[config]} structure of --config {config}: "
            "check the encoder configuration (with HM, --hm-cfg must be the matching cfg file)"
        )


def check_qp(qp: int) -> int:
    """Return ``qp`` if it is a valid HEVC QP (0..51 at 8 bits), else raise :class:`InvalidQPError`."""
    if not isinstance(qp, int) or not 0 <= qp <= MAX_QP:
        raise InvalidQPError(f"QP {qp} is outside 0..{MAX_QP}; pass --qp values in that range (CTC: 22 27 32 37)")
    return qp


@dataclass
class EncodeResult:
    """One encode of one sequence at one QP.

    Every per-picture list is in display order (the order of the frames given and of ``recon``), whatever
    the coding order: ``bits[i]`` is the size of the access unit of frame ``i`` (parameter sets included,
    as HM counts them), ``coded_qp[i]`` the QP its slices were coded with, ``encoder_psnr[i]`` the
    encoder's own (Y, U, V) PSNR where it reports one, ``slice_type[i]`` 0 (B), 1 (P) or 2 (I), ``poc[i]``
    its picture order count, ``temporal_id[i]`` its NAL unit's TemporalId and ``coding_index[i]`` its
    place in coding order. ``recon`` is a raw I420 file of the decoded reconstruction, in the sequence's
    bit depth.
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
    slice_type: list[int] = field(default_factory=list)
    poc: list[int] = field(default_factory=list)
    temporal_id: list[int] = field(default_factory=list)
    coding_index: list[int] = field(default_factory=list)
    config: str = "ai"

    def layers(self) -> list[int]:
        """Each picture's depth in the coding hierarchy: its TemporalId where the stream signals temporal
        layers (HM's random access: 0-4), else :func:`hierarchy_layer`."""
        if any(self.temporal_id):
            return list(self.temporal_id)
        return [hierarchy_layer(self.config, p) for p in self.poc]

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
    modules: tuple[str, ...] = ()  # what an encode imports on first use (Dask workers import them as they start)

    @classmethod
    def imports(cls) -> tuple[str, ...]:
        """What an encode with this encoder imports: its own module and ``modules`` (Dask workers preload them)."""
        return (cls.__module__, *cls.modules)

    @abstractmethod
    def encode(self, frames: Iterable[Frame], info: VideoInfo, qp: int, workdir: str | os.PathLike) -> EncodeResult:
        """Encode ``frames`` at base QP ``qp`` in the encoder's test condition into ``workdir``."""

    @abstractmethod
    def describe(self) -> dict:
        """Name, version and settings, stored as provenance in datasets and results."""
