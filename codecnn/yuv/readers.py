"""The three readers behind one interface (:class:`VideoReader`), and :func:`open_video` that picks one."""

from __future__ import annotations

import logging
import mmap
import os
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from codecnn.errors import CodecnnError
from codecnn.yuv.frame import RAW_SUFFIXES, Y4M_SUFFIXES, Frame, VideoInfo, VideoReader, check_bit_depth, sample_peak
from codecnn.yuv.images import IMAGE_SUFFIXES, ImageReader
from codecnn.yuv.names import check_420_geometry, ntsc, parse_name, parse_size

_BYTES = np.dtype(np.uint8)
log = logging.getLogger(__name__)


def _check_range(samples: np.ndarray, bit_depth: int, path: Path, index: int) -> None:
    """Samples stored in 16 bits must fit the bit depth (an 8-bit file read as 10-bit does not)."""
    if samples.dtype.itemsize > 1:
        top = int(samples.max(initial=0))
        if top > sample_peak(bit_depth):
            raise CodecnnError(
                f"{path}: frame {index} holds sample value {top}, above the {bit_depth}-bit maximum "
                f"{sample_peak(bit_depth)}: the file is not {bit_depth}-bit; check --bit-depth (or the name)"
            )


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
        check_420_geometry(self.path, width, height)
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
        _check_range(buf, self.info.bit_depth, self.path, index)
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
        check_420_geometry(self.path, width, height)
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
        _check_range(data, self.info.bit_depth, self.path, index)
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
        check_420_geometry(self.path, width, height)
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
    """Open ``path`` by its suffix: raw YUV, Y4M, a still image (one frame, :mod:`codecnn.yuv.images`), or
    any container PyAV reads.

    For raw YUV, ``size``/``bit_depth``/``fps`` override what the file name says; the size must come
    from one of the two.
    """
    p = Path(path)
    if not p.is_file():
        raise CodecnnError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix in Y4M_SUFFIXES:
        return Y4mReader(p)
    if suffix in IMAGE_SUFFIXES:
        return ImageReader(p, Fraction(fps) if fps is not None else None)
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
    rate = ntsc(Fraction(fps)) if fps is not None else hints.get("fps", Fraction(30))
    return RawYuvReader(p, width, height, depth, rate)
