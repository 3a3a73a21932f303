"""A camera pan over a sequence: :class:`PannedReader`, a reader whose frame ``t`` is a window of another
reader's frame moved by ``t x (dx, dy)`` pixels, for the ``pan`` key of a sequence list.

A still photograph panned becomes a video whose motion is known and whose content is natural: inter pictures
(P and B, predicted from the frames before and after) of many photographs, where the sample videos give one
cartoon. Combined with ``downscale = N`` (applied after the pan), a pan of ``d`` source pixels a frame moves
the picture by ``d / N`` pixels: sub-pixel motion, interpolated by the encoder as in camera footage.

The window is the source less ``|dx| x (frames - 1)`` columns and ``|dy| x (frames - 1)`` rows; it starts at
the left (top) edge for a positive step and at the right (bottom) edge for a negative one. Steps are even so
that the chroma planes, half the size, move by whole samples too. A one-picture source (an image) gives every
frame from its one picture; a video gives frame ``t`` from its frame ``t``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from codecnn.errors import CodecnnError
from codecnn.yuv.frame import Frame, VideoReader
from codecnn.yuv.scale import MIN_SIZE

MAX_PAN = 64  # source pixels a frame


def valid_pan(pan) -> bool:
    """Whether ``pan`` is a step this module takes: two even whole numbers (not bools), each within +-MAX_PAN."""
    return (
        isinstance(pan, list | tuple)
        and len(pan) == 2
        and all(not isinstance(d, bool) and isinstance(d, int) and d % 2 == 0 and abs(d) <= MAX_PAN for d in pan)
    )


class PannedReader(VideoReader):
    """``frames`` windows of ``reader``'s frames moved by ``pan = (dx, dy)`` a frame (see the module's
    docstring): the pan's length, which sets the window's size, counted from the source's frame 0. It defaults
    to the source's frame count and must be given for a one-picture source (a list entry always gives it)."""

    def __init__(self, reader: VideoReader, pan, frames: int | None = None):
        if not valid_pan(pan):
            raise CodecnnError(f"pan {pan!r}: give two even whole numbers [dx, dy] from -{MAX_PAN} to {MAX_PAN}")
        n = reader.info.num_frames
        if frames is None:
            if n == 1:
                raise CodecnnError(f"{reader.path}: a pan over one picture needs frames = N (how many to make)")
            frames = n
        if frames < 1:
            raise CodecnnError(f"{reader.path}: a pan of {frames} frames: give frames = 1 or more")
        if n > 1 and frames > n:
            raise CodecnnError(
                f"{reader.path}: a pan of {frames} frames needs {frames} source frames; it has {n}: lower frames"
            )
        self.source = reader  # the unpanned reader
        self.pan = (int(pan[0]), int(pan[1]))
        self.path = reader.path
        self.random_access = reader.random_access
        i = reader.info
        dx, dy = self.pan
        width, height = i.width - abs(dx) * (frames - 1), i.height - abs(dy) * (frames - 1)
        if width < MIN_SIZE or height < MIN_SIZE:
            raise CodecnnError(
                f"{reader.path}: {i.width}x{i.height} panned by {dx},{dy} over {frames} frames leaves {width}x"
                f"{height}, under {MIN_SIZE}x{MIN_SIZE}: lower the pan or the entry's frames (the pan's length)"
            )
        self.info = dataclasses.replace(i, width=width, height=height, num_frames=frames)

    def _origin(self, t: int) -> tuple[int, int]:
        """The window's top-left luma sample in frame ``t``."""
        last = self.info.num_frames - 1
        return tuple(t * d if d >= 0 else (last - t) * -d for d in self.pan)

    def _window(self, frame: Frame, t: int) -> Frame:
        x, y = self._origin(t)
        w, h = self.info.width, self.info.height
        return Frame(
            frame.y[y : y + h, x : x + w].copy(),
            frame.u[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2].copy(),
            frame.v[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2].copy(),
            frame.bit_depth,
        )

    def read(self, index: int) -> Frame:
        if not 0 <= index < self.info.num_frames:
            raise IndexError(index)
        return self._window(self.source.read(index if self.source.info.num_frames > 1 else 0), index)

    def _iter(self, indices: range) -> Iterator[tuple[int, Frame]]:
        if self.source.info.num_frames == 1:
            still = self.source.read(0)
            for t in indices:
                yield t, self._window(still, t)
        else:
            for t, frame in self.source._iter(indices):
                yield t, self._window(frame, t)

    def close(self) -> None:
        self.source.close()
