"""Still images (PNG, and the other formats Pillow reads) as one-picture 4:2:0 sequences.

Lossless photographs are the cleanest training content that installs without a download (scikit-image
ships some in its package data). The conversion is stated, not left to a library default:

* **matrix and range**: ITU-R BT.709, limited ("TV") range, 8 bits: ``Y = 16 + 219 Y'``,
  ``Cb/Cr = 128 + 224 C'`` with ``Y' = 0.2126 R + 0.7152 G + 0.0722 B``, ``C'b = (B - Y') / 1.8556``,
  ``C'r = (R - Y') / 1.5748`` on R, G, B in [0, 1] (the values are taken as they are stored, no
  linearisation);
* **chroma**: 4:2:0 by averaging each 2x2 block of the full-resolution C'b/C'r (chroma sited between the
  four luma samples), then rounding;
* **grey images** (mode ``L``) give the same luma with neutral chroma (128); an alpha channel is dropped;
* **odd sizes**: 4:2:0 needs even dimensions, so an odd last row or column is cropped (``VideoInfo`` gives
  the size actually used).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from codecnn.errors import CodecnnError
from codecnn.yuv.frame import Frame, VideoInfo, VideoReader, sample_peak

IMAGE_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".ppm", ".pgm", ".webp")
KR, KB = 0.2126, 0.0722  # BT.709


def rgb_to_yuv420(rgb: np.ndarray) -> Frame:
    """An 8-bit 4:2:0 :class:`Frame` from an H x W x 3 uint8 RGB array (even H and W), BT.709 limited range."""
    top = sample_peak(8)  # Pillow's 8-bit RGB in, 8-bit 4:2:0 out
    x = rgb.astype(np.float64) / top
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = KR * r + (1.0 - KR - KB) * g + KB * b
    cb = (b - y) / (2.0 * (1.0 - KB))
    cr = (r - y) / (2.0 * (1.0 - KR))

    def sub(c):
        h, w = c.shape
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    def q(v, offset, scale):
        return np.clip(np.rint(offset + scale * v), 0, top).astype(np.uint8)

    return Frame(q(y, 16, 219), q(sub(cb), 128, 224), q(sub(cr), 128, 224))


class ImageReader(VideoReader):
    """One still image as a one-frame sequence of 8-bit 4:2:0 frames (see the module docstring)."""

    random_access = True

    def __init__(self, path: str | os.PathLike, fps: Fraction | None = None):
        from PIL import Image, UnidentifiedImageError

        self.path = Path(path)
        if not self.path.is_file():
            raise CodecnnError(f"{self.path}: no such file")
        try:
            with Image.open(self.path) as im:
                mode = im.mode
                if mode not in ("L", "RGB", "RGBA", "P", "LA"):
                    raise CodecnnError(
                        f"{self.path}: image mode {mode} (e.g. 16-bit or CMYK) is not read; convert it to "
                        "8-bit RGB or grey first"
                    )
                self._rgb = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
            raise CodecnnError(f"{self.path}: not a readable image ({e})") from None
        h, w = self._rgb.shape[:2]
        h2, w2 = h - h % 2, w - w % 2
        if h2 < 2 or w2 < 2:
            raise CodecnnError(f"{self.path}: {w}x{h} is too small for 4:2:0")
        self._rgb = self._rgb[:h2, :w2]
        self.cropped = (w2, h2) != (w, h)
        self.info = VideoInfo(w2, h2, 8, Fraction(fps) if fps else Fraction(1), 1)

    def read(self, index: int) -> Frame:
        if index != 0:
            raise IndexError(index)
        return rgb_to_yuv420(self._rgb)
