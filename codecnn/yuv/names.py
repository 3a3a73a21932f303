"""Geometry from file names (``Name_1920x1080_50.yuv``) and ``WxH`` options."""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from pathlib import Path

from codecnn.errors import CodecnnError
from codecnn.yuv.frame import RAW_SUFFIXES

log = logging.getLogger(__name__)

_SIZE_RE = re.compile(r"(?<![0-9])(\d{2,5})x(\d{2,5})(?![0-9])")
_FPS_RE = re.compile(r"(?<![0-9a-z])(\d{1,3}(?:\.\d+)?)(?:fps|hz|p)?(?![0-9a-z])", re.I)
_BITS_RE = re.compile(r"(?<![0-9])(\d{1,2})[-_]?b(?:it)?s?(?![a-z])", re.I)
_CHROMA_RE = re.compile(r"(?<![0-9a-z])p?(400|420|422|444)(?:p)?(?:\d{0,2})?(?![0-9])", re.I)


def parse_name(name: str) -> dict:
    """Geometry hints from a JCT-VC/JVET style file name.

    >>> parse_name("BasketballDrive_1920x1080_50.yuv")
    {'width': 1920, 'height': 1080, 'fps': Fraction(50, 1)}
    >>> parse_name("Tango2_3840x2160_60fps_10bit_420.yuv")["bit_depth"]
    10
    """
    stem = Path(name).name
    for suffix in RAW_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    out: dict = {}
    m = _SIZE_RE.search(stem)
    if m:
        out["width"], out["height"] = int(m.group(1)), int(m.group(2))
        rest = stem[m.end() :]
        fm = _FPS_RE.search(rest)
        if (
            fm
            and fm.group(1) not in ("400", "420", "422", "444")
            and not re.match(r"\d+[-_]?b", rest[fm.start() :], re.I)
        ):
            out["fps"] = ntsc(Fraction(fm.group(1)))
    bm = _BITS_RE.search(stem)
    if bm:
        out["bit_depth"] = int(bm.group(1))
    cm = _CHROMA_RE.search(stem[m.end() :] if m else stem)
    if cm:
        out["chroma"] = cm.group(1)
    return out


def ntsc(fps: Fraction) -> Fraction:
    """29.97 -> 30000/1001 (likewise 23.976, 59.94, 119.88); other rates unchanged."""
    for base in (24, 30, 60, 120):
        if fps != base and abs(fps - Fraction(base * 1000, 1001)) < Fraction(1, 100):
            return Fraction(base * 1000, 1001)
    return fps


def parse_size(text: str) -> tuple[int, int]:
    """``'1920x1080'`` -> ``(1920, 1080)``."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise CodecnnError(f"bad size {text!r}: give it as WIDTHxHEIGHT, e.g. --size 1920x1080")
    return int(m.group(1)), int(m.group(2))


def name_disagreements(path, size: str | tuple[int, int] | None, bit_depth: int | None) -> list[tuple[str, str, str]]:
    """``(option, named, given)`` for each of the size and the bit depth that a raw YUV file's name states
    otherwise than ``size``/``bit_depth`` (None: not given); e.g. ``[("--size", "176x144", "352x288")]``."""
    if Path(path).suffix.lower() not in RAW_SUFFIXES:
        return []  # a header (Y4M, a container) describes the file, not its name
    hints = parse_name(Path(path).name)
    out = []
    if size is not None and "width" in hints:
        w, h = parse_size(size) if isinstance(size, str) else size
        if (w, h) != (hints["width"], hints["height"]):
            out.append(("--size", f"{hints['width']}x{hints['height']}", f"{w}x{h}"))
    if bit_depth is not None and "bit_depth" in hints and bit_depth != hints["bit_depth"]:
        out.append(("--bit-depth", f"{hints['bit_depth']}-bit", f"{bit_depth}-bit"))
    return out


def warn_name_disagreement(path, size: str | tuple[int, int] | None, bit_depth: int | None) -> None:
    """A warning on the log (stderr) for each way a raw YUV file's name contradicts the ``--size`` or
    ``--bit-depth`` the user gave; the option is what is read."""
    for option, named, given in name_disagreements(path, size, bit_depth):
        log.warning("%s: the name says %s but %s says %s; reading it as %s", path, named, option, given, given)


def check_420_geometry(path: Path, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise CodecnnError(f"{path}: bad size {width}x{height}")
    if width % 2 or height % 2:
        raise CodecnnError(
            f"{path}: {width}x{height} has an odd width or height, which 4:2:0 cannot hold; "
            "crop the source to even dimensions"
        )
