"""Reading and writing video as planar 4:2:0 frames.

Three sources, one interface (:class:`VideoReader`):

* raw planar YUV 4:2:0 (``.yuv``), 8-bit (one byte a sample) or 10-bit (16-bit little-endian samples),
  geometry from arguments or from the usual file names (``BasketballDrive_1920x1080_50.yuv``,
  ``Tango2_3840x2160_60fps_10bit_420.yuv``), read frame by frame through an mmap whose pages are
  released after each frame (memory stays flat however long the sequence);
* YUV4MPEG2 (``.y4m``), header parsed (``W H F I C``), progressive 4:2:0 8/10-bit only;
* container video (mp4, mkv, ...) decoded through PyAV.

Frames are :class:`Frame` objects holding three numpy planes of dtype uint8 (8-bit) or uint16
(10-bit); the luma plane is ``height x width`` and each chroma plane ``height/2 x width/2``.
Nothing reads a whole sequence into memory.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np

from codecnn.errors import CodecnnError

_BYTES = np.dtype(np.uint8)
log = logging.getLogger(__name__)

SUPPORTED_BIT_DEPTHS = (8, 10)
RAW_SUFFIXES = (".yuv", ".raw")
Y4M_SUFFIXES = (".y4m",)


def sample_dtype(bit_depth: int) -> np.dtype:
    """numpy dtype that stores samples of ``bit_depth`` bits (uint8 up to 8 bits, else uint16 LE)."""
    check_bit_depth(bit_depth)
    return np.dtype(np.uint8) if bit_depth <= 8 else np.dtype("<u2")


def check_bit_depth(bit_depth: int) -> None:
    if bit_depth not in SUPPORTED_BIT_DEPTHS:
        raise CodecnnError(
            f"unsupported bit depth {bit_depth}: codecnn reads 8- and 10-bit 4:2:0 video; "
            "convert the source or pass --bit-depth 8 or 10"
        )


@dataclass(frozen=True)
class VideoInfo:
    """Geometry of a 4:2:0 sequence."""

    width: int
    height: int
    bit_depth: int = 8
    fps: Fraction = Fraction(30)
    num_frames: int = 0

    @property
    def dtype(self) -> np.dtype:
        return sample_dtype(self.bit_depth)

    @property
    def peak(self) -> int:
        return (1 << self.bit_depth) - 1

    @property
    def frame_samples(self) -> int:
        return self.width * self.height * 3 // 2

    @property
    def frame_bytes(self) -> int:
        return self.frame_samples * self.dtype.itemsize

    def describe(self) -> str:
        return f"{self.width}x{self.height} {self.bit_depth}-bit 4:2:0"


@dataclass
class Frame:
    """One 4:2:0 picture: luma ``y`` (H x W) and chroma ``u``, ``v`` (H/2 x W/2), uint8 or uint16."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    bit_depth: int = 8

    @property
    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.y, self.u, self.v

    @property
    def width(self) -> int:
        return self.y.shape[1]

    @property
    def height(self) -> int:
        return self.y.shape[0]

    def tobytes(self) -> bytes:
        dt = sample_dtype(self.bit_depth)
        return b"".join(np.ascontiguousarray(p, dtype=dt).tobytes() for p in self.planes)

    @classmethod
    def from_buffer(cls, buf: np.ndarray, width: int, height: int, bit_depth: int) -> Frame:
        """Split a flat array of ``width*height*3/2`` samples (Y, then U, then V) into planes."""
        n = width * height
        c = n // 4
        y = buf[:n].reshape(height, width)
        u = buf[n : n + c].reshape(height // 2, width // 2)
        v = buf[n + c : n + 2 * c].reshape(height // 2, width // 2)
        return cls(y, u, v, bit_depth)

    @classmethod
    def from_i420(cls, arr: np.ndarray, bit_depth: int) -> Frame:
        """From the (H*3/2) x W array that PyAV's ``to_ndarray(format='yuv420p')`` returns."""
        h = arr.shape[0] * 2 // 3
        w = arr.shape[1]
        return cls.from_buffer(np.ascontiguousarray(arr).reshape(-1), w, h, bit_depth)

    def to_i420(self) -> np.ndarray:
        """The (H*3/2) x W array that PyAV's ``VideoFrame.from_ndarray(..., 'yuv420p')`` takes."""
        return np.concatenate([self.y.reshape(-1), self.u.reshape(-1), self.v.reshape(-1)]).reshape(
            self.height * 3 // 2, self.width
        )


# --------------------------------------------------------------------------------------------------
# geometry from file names

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
            out["fps"] = _ntsc(Fraction(fm.group(1)))
    bm = _BITS_RE.search(stem)
    if bm:
        out["bit_depth"] = int(bm.group(1))
    cm = _CHROMA_RE.search(stem[m.end() :] if m else stem)
    if cm:
        out["chroma"] = cm.group(1)
    return out


def _ntsc(fps: Fraction) -> Fraction:
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


def _check_420_geometry(path: Path, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise CodecnnError(f"{path}: bad size {width}x{height}")
    if width % 2 or height % 2:
        raise CodecnnError(
            f"{path}: {width}x{height} has an odd width or height, which 4:2:0 cannot hold; "
            "crop the source to even dimensions"
        )


# --------------------------------------------------------------------------------------------------
# readers


class VideoReader:
    """A sequence of 4:2:0 frames. Subclasses implement :meth:`read` or :meth:`_iter`."""

    path: Path
    info: VideoInfo
    random_access = True

    def read(self, index: int) -> Frame:
        raise NotImplementedError

    def _iter(self, indices: range) -> Iterator[tuple[int, Frame]]:
        for i in indices:
            yield i, self.read(i)

    def select(self, start: int = 0, count: int | None = None, step: int = 1) -> range:
        """Frame indices ``start, start+step, ...``: at most ``count`` of them, within the file."""
        n = self.info.num_frames
        if start < 0 or step < 1:
            raise CodecnnError(f"bad frame selection start={start} step={step}: both must be >= 0 / >= 1")
        if start >= n:
            raise CodecnnError(
                f"{self.path}: --start {start} is beyond the end: the file has {n} frame(s) (indices 0..{n - 1})"
            )
        if count is not None and count < 1:
            raise CodecnnError(f"--frames must be at least 1 (got {count})")
        stop = n if count is None else min(n, start + count * step)
        return range(start, stop, step)

    def frames(self, start: int = 0, count: int | None = None, step: int = 1) -> Iterator[tuple[int, Frame]]:
        """Yield ``(index, frame)`` for the selected frames, reading one frame at a time."""
        return self._iter(self.select(start, count, step))

    def close(self) -> None:
        pass

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _MappedFile:
    """A read-only mmap of a file that hands out copies and then drops the pages it read.

    Reading a long sequence through a plain memmap leaves every page it touched resident, so the
    process's memory grows with the sequence length; releasing each frame's pages keeps it flat.
    """

    def __init__(self, path: Path):
        with open(path, "rb") as f:
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def read(self, start: int, nbytes: int, dtype: np.dtype = _BYTES) -> np.ndarray:
        out = np.frombuffer(self._mm, np.uint8, nbytes, start).view(dtype).copy()
        if hasattr(self._mm, "madvise"):
            page = start - start % mmap.PAGESIZE
            self._mm.madvise(mmap.MADV_DONTNEED, page, start + nbytes - page)
        return out

    def close(self) -> None:
        self._mm.close()


class RawYuvReader(VideoReader):
    """Raw planar I420 through an mmap; frame ``i`` starts at byte ``i * frame_bytes``."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, bit_depth: int = 8, fps: Fraction | int = 30):
        self.path = Path(path)
        if not self.path.is_file():
            raise CodecnnError(f"{self.path}: no such file")
        check_bit_depth(bit_depth)
        _check_420_geometry(self.path, width, height)
        info = VideoInfo(width, height, bit_depth, Fraction(fps))
        size = self.path.stat().st_size
        n, rem = divmod(size, info.frame_bytes)
        if rem or n == 0:
            raise CodecnnError(
                f"{self.path}: size {size} bytes is not a whole number of {info.describe()} frames "
                f"({info.frame_bytes} bytes each, {rem if n else size} bytes left over); "
                "check --size and --bit-depth"
            )
        self.info = VideoInfo(width, height, bit_depth, Fraction(fps), n)
        self._file = _MappedFile(self.path)

    def read(self, index: int) -> Frame:
        if not 0 <= index < self.info.num_frames:
            raise IndexError(index)
        nb = self.info.frame_bytes
        buf = self._file.read(index * nb, nb, self.info.dtype)
        return Frame.from_buffer(buf, self.info.width, self.info.height, self.info.bit_depth)

    def close(self) -> None:
        self._file.close()


_Y4M_CHROMA = {"420": 8, "420jpeg": 8, "420paldv": 8, "420mpeg2": 8, "420p10": 10}


class Y4mReader(VideoReader):
    """YUV4MPEG2: progressive 4:2:0, 8 or 10 bits; every frame header must be a bare ``FRAME``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise CodecnnError(f"{self.path}: no such file")
        with open(self.path, "rb") as f:
            header = f.readline(4096)
        if not header.startswith(b"YUV4MPEG2") or not header.endswith(b"\n"):
            raise CodecnnError(f"{self.path}: not a YUV4MPEG2 file (no 'YUV4MPEG2' header line)")
        fields = {}
        for tok in header[9:].decode("ascii", "replace").split():
            fields.setdefault(tok[0], tok[1:])
        try:
            width, height = int(fields["W"]), int(fields["H"])
        except (KeyError, ValueError):
            raise CodecnnError(f"{self.path}: Y4M header lacks W or H") from None
        chroma = fields.get("C", "420jpeg").lower()
        if chroma not in _Y4M_CHROMA:
            raise CodecnnError(
                f"{self.path}: unsupported Y4M chroma format C{chroma}: codecnn reads 4:2:0 at 8 or 10 "
                "bits (C420, C420jpeg, C420paldv, C420p10); convert the source first"
            )
        inter = fields.get("I", "p")
        if inter not in ("p", "?"):
            raise CodecnnError(
                f"{self.path}: interlaced Y4M (I{inter}) is not supported; deinterlace to progressive first"
            )
        fps = Fraction(30)
        if "F" in fields:
            num, _, den = fields["F"].partition(":")
            fps = Fraction(int(num), int(den or 1))
        bit_depth = _Y4M_CHROMA[chroma]
        _check_420_geometry(self.path, width, height)
        base = VideoInfo(width, height, bit_depth, fps)
        self._offset = len(header)
        self._stride = len(b"FRAME\n") + base.frame_bytes
        size = self.path.stat().st_size - self._offset
        n, rem = divmod(size, self._stride)
        if rem:
            raise CodecnnError(
                f"{self.path}: {size} bytes after the header are not a whole number of {base.describe()} "
                f"frames ({self._stride} bytes each with the FRAME line, {rem} left over); "
                "the file is truncated or its frame headers carry parameters"
            )
        if n == 0:
            raise CodecnnError(f"{self.path}: the Y4M file holds no frame")
        self.info = VideoInfo(width, height, bit_depth, fps, n)
        self._file = _MappedFile(self.path)

    def read(self, index: int) -> Frame:
        if not 0 <= index < self.info.num_frames:
            raise IndexError(index)
        start = self._offset + index * self._stride
        if self._file.read(start, 6).tobytes() != b"FRAME\n":
            raise CodecnnError(f"{self.path}: frame {index} does not start with a bare 'FRAME' line")
        data = self._file.read(start + 6, self.info.frame_bytes, self.info.dtype)
        return Frame.from_buffer(data, self.info.width, self.info.height, self.info.bit_depth)

    def close(self) -> None:
        self._file.close()


class ContainerReader(VideoReader):
    """Container video (mp4, mkv, ...) decoded by PyAV; sequential access, converted to I420.

    Sources with more than 8 bits are delivered as 10-bit; other chroma formats are converted to 4:2:0
    by libswscale (logged).
    """

    random_access = False

    def __init__(self, path: str | os.PathLike):
        import av

        self.path = Path(path)
        if not self.path.is_file():
            raise CodecnnError(f"{self.path}: no such file")
        try:
            with av.open(str(self.path)) as c:
                if not c.streams.video:
                    raise CodecnnError(f"{self.path}: the container has no video stream")
                s = c.streams.video[0]
                width, height = s.codec_context.width, s.codec_context.height
                pix = s.codec_context.pix_fmt or "yuv420p"
                fps = Fraction(s.average_rate) if s.average_rate else Fraction(30)
                n = s.frames
                if not n:
                    n = sum(1 for p in c.demux(s) if p.size)
        except av.FFmpegError as e:
            raise CodecnnError(f"{self.path}: cannot read it as video ({e})") from None
        bit_depth = 10 if re.search(r"p1[0-6]", pix) else 8
        if not pix.startswith(("yuv420p", "yuvj420p")):
            log.info("%s: converting %s to 4:2:0 %d-bit", self.path, pix, bit_depth)
        self._fmt = "yuv420p10le" if bit_depth == 10 else "yuv420p"
        _check_420_geometry(self.path, width, height)
        self.info = VideoInfo(width, height, bit_depth, fps, n)

    def _iter(self, indices: range) -> Iterator[tuple[int, Frame]]:
        import av

        if not indices:
            return
        with av.open(str(self.path)) as c:
            for i, vf in enumerate(c.decode(video=0)):
                if i >= indices.stop:
                    break
                if i in indices:
                    yield i, Frame.from_i420(vf.to_ndarray(format=self._fmt), self.info.bit_depth)


def open_video(
    path: str | os.PathLike,
    size: str | tuple[int, int] | None = None,
    bit_depth: int | None = None,
    fps: float | Fraction | None = None,
) -> VideoReader:
    """Open ``path`` by its suffix: raw YUV, Y4M, or any container PyAV reads.

    For raw YUV, ``size``/``bit_depth``/``fps`` override what the file name says; the size must come
    from one of the two.
    """
    p = Path(path)
    if not p.is_file():
        raise CodecnnError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix in Y4M_SUFFIXES:
        return Y4mReader(p)
    if suffix not in RAW_SUFFIXES:
        return ContainerReader(p)
    hints = parse_name(p.name)
    if hints.get("chroma", "420") != "420":
        raise CodecnnError(
            f"{p}: the name says 4:{hints['chroma'][1]}:{hints['chroma'][2]} chroma; codecnn reads 4:2:0 "
            "raw YUV only: convert the source first"
        )
    if size is not None:
        width, height = parse_size(size) if isinstance(size, str) else size
    elif "width" in hints:
        width, height = hints["width"], hints["height"]
    else:
        raise CodecnnError(
            f"{p}: no geometry: give --size WIDTHxHEIGHT (and --bit-depth if not 8), or name the file "
            "like Name_1920x1080_50.yuv"
        )
    depth = bit_depth if bit_depth is not None else hints.get("bit_depth", 8)
    rate = _ntsc(Fraction(fps)) if fps is not None else hints.get("fps", Fraction(30))
    return RawYuvReader(p, width, height, depth, rate)


# --------------------------------------------------------------------------------------------------
# writers


class YuvWriter:
    """Writes frames as raw I420 (8-bit bytes, or 16-bit little-endian samples above 8 bits).

    Written to ``path + '.tmp'`` and renamed on :meth:`close`, so a crash never leaves a short file
    under the final name; :meth:`abort` removes the temporary file.
    """

    def __init__(self, path: str | os.PathLike, bit_depth: int = 8, header: bytes = b"", frame_header: bytes = b""):
        check_bit_depth(bit_depth)
        self.path = Path(path)
        self.bit_depth = bit_depth
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._f: BinaryIO | None = open(self._tmp, "wb")
        self._f.write(header)
        self._frame_header = frame_header
        self.frames_written = 0

    def write(self, frame: Frame) -> None:
        if frame.bit_depth != self.bit_depth:
            raise ValueError(f"frame is {frame.bit_depth}-bit, writer is {self.bit_depth}-bit")
        self._f.write(self._frame_header)
        self._f.write(frame.tobytes())
        self.frames_written += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
            os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> YuvWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def y4m_writer(
    path: str | os.PathLike, width: int, height: int, bit_depth: int = 8, fps: Fraction = Fraction(30)
) -> YuvWriter:
    """A :class:`YuvWriter` that writes YUV4MPEG2 (``C420jpeg`` or ``C420p10``)."""
    fps = Fraction(fps)
    chroma = "420jpeg" if bit_depth == 8 else "420p10"
    header = f"YUV4MPEG2 W{width} H{height} F{fps.numerator}:{fps.denominator} Ip A1:1 C{chroma}\n"
    return YuvWriter(path, bit_depth, header.encode("ascii"), b"FRAME\n")


def write_video(path: str | os.PathLike, frames, bit_depth: int, fps: Fraction = Fraction(30)) -> int:
    """Write an iterable of frames as raw YUV, or as Y4M when ``path`` ends in ``.y4m``."""
    frames = iter(frames)
    first = next(frames)
    if Path(path).suffix.lower() in Y4M_SUFFIXES:
        w = y4m_writer(path, first.width, first.height, bit_depth, fps)
    else:
        w = YuvWriter(path, bit_depth)
    with w:
        w.write(first)
        for f in frames:
            w.write(f)
    return w.frames_written
