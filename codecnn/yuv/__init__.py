"""Reading and writing video as planar 4:2:0 frames: :mod:`.frame` (frames and geometry), :mod:`.names`
(geometry from file names), :mod:`.readers` and :mod:`.writers`.

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

from codecnn.yuv.frame import (
    RAW_SUFFIXES,
    SUPPORTED_BIT_DEPTHS,
    Y4M_SUFFIXES,
    Frame,
    VideoInfo,
    check_bit_depth,
    sample_dtype,
    sample_peak,
)
from codecnn.yuv.images import IMAGE_SUFFIXES, ImageReader, rgb_to_yuv420  # noqa: E402  (after readers)
from codecnn.yuv.names import parse_name, parse_size
from codecnn.yuv.readers import ContainerReader, RawYuvReader, VideoReader, Y4mReader, open_video
from codecnn.yuv.writers import YuvWriter, stage_frames, write_video, y4m_writer

__all__ = [
    "RAW_SUFFIXES",
    "SUPPORTED_BIT_DEPTHS",
    "Y4M_SUFFIXES",
    "ContainerReader",
    "IMAGE_SUFFIXES",
    "ImageReader",
    "Frame",
    "RawYuvReader",
    "VideoInfo",
    "VideoReader",
    "Y4mReader",
    "YuvWriter",
    "check_bit_depth",
    "open_video",
    "parse_name",
    "parse_size",
    "rgb_to_yuv420",
    "sample_dtype",
    "sample_peak",
    "stage_frames",
    "write_video",
    "y4m_writer",
]
