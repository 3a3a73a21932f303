"""Smaller pictures from a sequence: :class:`DownscaledReader`, a reader whose frames are another reader's
averaged over ``factor x factor`` blocks (area resampling, the usual way to make a lower resolution without
aliasing much), for the ``downscale`` key of a sequence list.

Downscaling gives content of another scale from the same source: a 1280x720 video halved has the detail
per pixel of 640x360 material (the low-resolution test sequences), a source the 720p frames alone lack.
The frame is first cropped to a multiple of ``2 * factor`` (so that the chroma planes, half the size, shrink
by the same factor and stay 4:2:0), then each plane is averaged with rounding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from codecnn.errors import CodecnnError
from codecnn.yuv.frame import Frame, VideoReader

MAX_DOWNSCALE = 8
MIN_SIZE = 16  # the smallest picture x265 encodes (codecnn.encoders.x265.MIN_SIZE)


def valid_downscale(factor) -> bool:
    """Whether ``factor`` is a downscale this module takes: a whole number (not a bool) from 1 to MAX_DOWNSCALE."""
    return not isinstance(factor, bool) and isinstance(factor, int) and 1 <= factor <= MAX_DOWNSCALE


def downscale_plane(plane: np.ndarray, factor: int) -> np.ndarray:
    """The mean of each ``factor x factor`` block of ``plane`` (a remainder of fewer than ``factor`` rows or
    columns dropped), rounded half up, in the plane's dtype."""
    h, w = plane.shape[0] // factor, plane.shape[1] // factor
    blocks = plane[: h * factor, : w * factor].reshape(h, factor, w, factor).astype(np.int64)
    n = factor * factor
    return ((blocks.sum(axis=(1, 3)) + n // 2) // n).astype(plane.dtype)


class DownscaledReader(VideoReader):
    """``reader``'s frames downscaled by the whole number ``factor`` (see the module's docstring)."""

    def __init__(self, reader: VideoReader, factor: int):
        if not valid_downscale(factor):
            raise CodecnnError(f"downscale {factor!r}: give a whole number from 1 to {MAX_DOWNSCALE}")
        self.source = reader  # the full-size reader
        self.factor = factor
        self.path = reader.path
        self.random_access = reader.random_access
        i = reader.info
        step = 2 * factor
        width, height = i.width // step * 2, i.height // step * 2
        if width < MIN_SIZE or height < MIN_SIZE:
            raise CodecnnError(
                f"{reader.path}: {i.width}x{i.height} downscaled by {factor} is {width}x{height}, under "
                f"{MIN_SIZE}x{MIN_SIZE} (the smallest picture the encoders take): use a smaller downscale"
            )
        self.info = dataclasses.replace(i, width=width, height=height)

    def _shrink(self, frame: Frame) -> Frame:
        f = self.factor
        h, w = self.info.height, self.info.width
        y = downscale_plane(frame.y[: h * f, : w * f], f)
        u = downscale_plane(frame.u[: h * f // 2, : w * f // 2], f)
        v = downscale_plane(frame.v[: h * f // 2, : w * f // 2], f)
        return Frame(y, u, v, frame.bit_depth)

    def read(self, index: int) -> Frame:
        return self._shrink(self.source.read(index))

    def _iter(self, indices: range) -> Iterator[tuple[int, Frame]]:
        for i, frame in self.source._iter(indices):
            yield i, self._shrink(frame)

    def close(self) -> None:
        self.source.close()
