"""Frames and their geometry: :class:`Frame` (three planes of one 4:2:0 picture), :class:`VideoInfo`,
the sample type of a bit depth, and :class:`VideoReader`, the interface every reader (raw YUV, Y4M,
containers in :mod:`codecnn.yuv.readers`, still images in :mod:`codecnn.yuv.images`) implements."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from codecnn.errors import CodecnnError

SUPPORTED_BIT_DEPTHS = (8, 10)
RAW_SUFFIXES = (".yuv", ".raw")
Y4M_SUFFIXES = (".y4m",)


def sample_dtype(bit_depth: int) -> np.dtype:
    """numpy dtype that stores samples of ``bit_depth`` bits (uint8 up to 8 bits, else uint16 LE)."""
    check_bit_depth(bit_depth)
    return np.dtype(np.uint8) if bit_depth <= 8 else np.dtype("<u2")


def sample_peak(bit_depth):
    """The largest sample value of ``bit_depth`` bits, ``(1 << bit_depth) - 1`` (255, 1023): the one place
    this is written. Works on ints, numpy arrays and torch tensors of bit depths."""
    return (1 << bit_depth) - 1


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
        if count is None:
            return range(start, n, step)
        last = start + (count - 1) * step
        if last >= n:
            fit = (n - 1 - start) // step + 1
            raise CodecnnError(
                f"{self.path}: {count} frame(s) from frame {start} every {step} need frame {last}, but the file has "
                f"{n} (indices 0..{n - 1}); ask for at most --frames {fit}"
            )
        return range(start, last + 1, step)

    def frames(self, start: int = 0, count: int | None = None, step: int = 1) -> Iterator[tuple[int, Frame]]:
        """Yield ``(index, frame)`` for the selected frames, reading one frame at a time."""
        return self._iter(self.select(start, count, step))

    def close(self) -> None:
        pass

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
