"""Writing frames as raw YUV or Y4M, always through a temporary file renamed when complete."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

from codecnn.yuv.frame import Y4M_SUFFIXES, Frame, check_bit_depth


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


def stage_frames(reader, selection: range, path: Path) -> str:
    """Decode the selected frames of a reader once into a raw file that encoders then read (containers
    cannot be read twice cheaply); an existing file is reused. Returns its path."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with YuvWriter(path, reader.info.bit_depth) as w:
            for _, frame in reader.frames(selection.start, len(selection), selection.step):
                w.write(frame)
    return str(path)
