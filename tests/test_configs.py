"""The test conditions besides all intra (--config ra, ldp; ldb refused with x265): real x265 encodes of
real frames, their structure read back from the bitstream, stored in display order."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import HM

from codecnn.cli import cli
from codecnn.data.ctu import cut_ctus
from codecnn.data.restoration_dataset import CTUDataset
from codecnn.data.schema import open_dataset_info
from codecnn.encoders import read_hm_log
from codecnn.encoders.base import hierarchy_layer
from codecnn.encoders.x265 import decode_hevc, intra_period
from codecnn.errors import CodecnnError
from codecnn.hevc.syntax import access_units, display_order
from codecnn.yuv import open_video

B, P, I = 0, 1, 2  # noqa: E741 (H.265 slice_type codes)
FAST = ["--preset", "ultrafast", "--qp", "32", "--ctu", "64"]


def _build(carphone_mp4, out, config, frames):
    r = CliRunner().invoke(
        cli, ["make-dataset", "--yuv", str(carphone_mp4), *FAST, "--frames", str(frames), "--config", config,
              "--out", str(out)]
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def ra_h5(carphone_mp4, tmp_path_factory):
    return _build(carphone_mp4, tmp_path_factory.mktemp("ra") / "ra.h5", "ra", 9)


@pytest.fixture(scope="module")
def ldp_h5(carphone_mp4, tmp_path_factory):
    return _build(carphone_mp4, tmp_path_factory.mktemp("ldp") / "ldp.h5", "ldp", 5)


def test_random_access_structure(ra_h5):
    """One GOP of 8 after the intra picture: B pictures coded out of display order, the GOP's anchor
    second, the middle B third; each layer at its QP offset (I Q-3, anchor Q+1, reference B Q+4, B Q+7)."""
    (u,) = open_dataset_info(ra_h5).units
    assert u["config"] == "ra" and u["encoder"]["config"] == "ra"
    assert u["slice_type"] == [I] + [B] * 7 + [P]
    assert u["poc"] == list(range(9))
    assert u["coding_index"] == [0, 3, 4, 5, 2, 6, 7, 8, 1]
    assert u["coded_qp"] == [29, 39, 39, 39, 36, 39, 39, 39, 33]
    with h5py.File(ra_h5, "r") as f:
        per_frame = 9  # 3 x 3 CTUs of 64 over 176x144
        for name, want in (
            ("slice_type", u["slice_type"]),
            ("poc", u["poc"]),
            ("qp", u["coded_qp"]),
            ("layer", [0, 3, 2, 3, 1, 3, 2, 3, 0]),
            ("frame", list(range(9))),
        ):
            assert f[name][()].tolist() == [v for v in want for _ in range(per_frame)], name


def test_low_delay_p_structure(ldp_h5):
    (u,) = open_dataset_info(ldp_h5).units
    assert u["slice_type"] == [I, P, P, P, P] and u["coding_index"] == [0, 1, 2, 3, 4]
    assert u["poc"] == [0, 1, 2, 3, 4] and u["coded_qp"] == [31, 36, 36, 36, 36]
    with h5py.File(ldp_h5, "r") as f:
        assert set(f["layer"][()].tolist()) == {0}


@pytest.mark.parametrize("which", ["ra_h5", "ldp_h5"])
def test_display_order_recon_and_bits(which, request, carphone_mp4):
    """Inputs are the fresh decode of the stored bitstream in display order, targets the source frames;
    each picture's bits are its access unit's, and they add up to the stream."""
    path = request.getfixturevalue(which)
    (u,) = open_dataset_info(path).units
    with h5py.File(path, "r") as f:
        inputs, targets, frame = f["input"][()], f["target"][()], f["frame"][()]
        stream = f["bitstreams"][f"{u['seq']}_qp32"][()].tobytes()
    assert sum(u["bits"]) == 8 * len(stream)
    shown = display_order(access_units(stream))
    assert u["bits"] == [8 * a.nbytes for a in shown]
    pics = list(decode_hevc(stream, 8))
    with open_video(carphone_mp4) as src:
        originals = [f for _, f in src.frames(0, len(pics))]
    for j, (pic, orig) in enumerate(zip(pics, originals, strict=True)):
        want_in, want_t, _, _ = cut_ctus(pic.y, orig.y, 64, 2)
        np.testing.assert_array_equal(inputs[frame == j], want_in)
        np.testing.assert_array_equal(targets[frame == j], want_t)


def test_slice_type_filter_and_older_files(ra_h5, tmp_path):
    assert len(CTUDataset(ra_h5, "train")) == 81
    assert len(CTUDataset(ra_h5, "train", slice_types=(I,))) == 9
    assert len(CTUDataset(ra_h5, "train", slice_types=(B, P))) == 72
    assert len(CTUDataset(ra_h5, "train", qps=(39,))) == 54  # the picture's own QP, not the unit's
    old = tmp_path / "old.h5"  # a file written before the test conditions: read as all intra
    shutil.copy(ra_h5, old)
    with h5py.File(old, "a") as f:
        for name in ("slice_type", "poc", "layer"):
            del f[name]
    assert len(CTUDataset(old, "train", slice_types=(I,))) == 81
    r = CliRunner().invoke(cli, ["info", str(old), "--verify"])
    assert r.exit_code == 0, r.output
    assert "slice types: I 81" in r.output
    r = CliRunner().invoke(cli, ["info", str(ra_h5), "--verify"])  # re-decoded in display order: whole
    assert r.exit_code == 0 and "test condition: ra; slice types: I 9, P 9, B 63" in r.output, r.output


def test_validation_score_weighs_every_picture_once(ra_h5):
    """Random-access validation: each picture's QP is its own (one I, one P, one reference B at their QPs, six
    B at QP 39), and the score is the mean gain over the pictures, the measure the trainer's paired test
    compares, not the mean over those QPs (which would weigh the I picture six times a B picture)."""
    from codecnn.eval.restoration import restoration_metrics
    from codecnn.train.checkpoint import load_model

    model, _ = load_model("zoo:rdn-inloop-lop")
    r = restoration_metrics(model, CTUDataset(ra_h5, "train"), torch.device("cpu"))
    assert {q: v["frames"] for q, v in r["per_qp"].items()} == {"29": 1, "33": 1, "36": 1, "39": 6}
    assert r["frames"] == len(r["frame_gains"]) == 9
    assert r["score"] == pytest.approx(float(np.mean(r["frame_gains"])), abs=1e-9)
    per_qp_mean = float(np.mean([v["gain"] for v in r["per_qp"].values()]))
    assert abs(r["score"] - per_qp_mean) > 1e-4  # the two weighings differ on these pictures
    assert r["score_se"] > 0


def test_train_slice_types_option(ra_h5, tmp_path):
    r = CliRunner().invoke(
        cli, ["train", "rdn", "--data", str(ra_h5), "--out", str(tmp_path / "r"), "--blocks", "1", "--layers", "1",
              "--growth", "4", "--features", "8", "--steps", "1", "--batch", "2", "--slice-types", "B,P",
              "--workers", "0"]
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    ckpt = torch.load(tmp_path / "r" / "last.pt", map_location="cpu", weights_only=False)
    assert list(ckpt["train_config"]["slice_types"]) == [0, 1]
    bad = CliRunner().invoke(
        cli, ["train", "rdn", "--data", str(ra_h5), "--out", str(tmp_path / "x"), "--slice-types", "I,Q"]
    )
    assert bad.exit_code == 2 and "I, P, B" in bad.output


def test_repeat_weighs_sequences(ra_h5, tmp_path):
    """--repeat NAME=N takes a sequence's train samples N times an epoch (the last matching pattern wins; 0
    leaves it out); a name that matches no sequence is refused in one line; the run records the weights."""
    name = CTUDataset(ra_h5, "train").info.sequences[0]["name"]
    base = CTUDataset(ra_h5, "train")
    tripled = CTUDataset(ra_h5, "train", repeat=(("*", 3),))
    assert len(tripled) == 3 * len(base) == 243
    np.testing.assert_array_equal(tripled.indices, np.repeat(base.indices, 3))
    assert len(CTUDataset(ra_h5, "train", repeat=(("*", 3), (name, 2)))) == 162  # the last match wins
    assert len(CTUDataset(ra_h5, "train", slice_types=(I,), repeat=((name[:3] + "*", 2),))) == 18
    assert len(CTUDataset(ra_h5, "val", repeat=(("*", 0),))) == 0
    with pytest.raises(CodecnnError, match="--repeat nosuch=2: no sequence"):
        CTUDataset(ra_h5, "train", repeat=(("nosuch", 2),))
    args = ["train", "rdn", "--data", str(ra_h5), "--blocks", "1", "--layers", "1", "--growth", "4", "--features",
            "8", "--steps", "1", "--batch", "2", "--workers", "0"]  # fmt: skip
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "r"), "--repeat", "*=2"])
    assert r.exit_code == 0, r.output
    ckpt = torch.load(tmp_path / "r" / "last.pt", map_location="cpu", weights_only=False)
    assert [list(p) for p in ckpt["train_config"]["repeat"]] == [["*", 2]]
    for bad, words in ((["--repeat", "x"], "give NAME=N"), (["--repeat", "nosuch=2"], "no sequence")):
        r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "x"), *bad])
        assert r.exit_code == 2 and words in r.output and "Traceback" not in r.output, r.output
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "y"), "--repeat", "*=0"])
    assert r.exit_code == 2 and "no training samples" in r.output, r.output


def test_refusals(carphone_mp4, tmp_path):
    runner = CliRunner()
    out = tmp_path / "ldb.h5"
    r = runner.invoke(cli, ["make-dataset", "--yuv", str(carphone_mp4), *FAST, "--frames", "3", "--config", "ldb",
                            "--out", str(out)])  # fmt: skip
    assert r.exit_code == 2 and "low delay B" in r.stderr and "--encoder hm" in r.stderr
    assert r.stderr.count("Error:") == 1 and not out.exists()
    r = runner.invoke(cli, ["make-dataset", "--yuv", str(carphone_mp4), *FAST, "--frames", "3", "--frame-step", "2",
                            "--config", "ra", "--out", str(out)])  # fmt: skip
    assert r.exit_code == 2 and "consecutive frames" in r.stderr and not out.exists()
    r = runner.invoke(cli, ["make-dataset", "--yuv", str(carphone_mp4), *FAST, "--config", "xx", "--out", str(out)])
    assert r.exit_code == 2 and not out.exists()


def test_layers_and_intra_period():
    assert [hierarchy_layer("ra", p) for p in range(17)] == [0, 3, 2, 3, 1, 3, 2, 3, 0, 3, 2, 3, 1, 3, 2, 3, 0]
    assert {hierarchy_layer(c, p) for c in ("ai", "ldb", "ldp") for p in range(9)} == {0}
    assert [intra_period(f) for f in (24, 25, 30, 50, 60, 5)] == [24, 24, 32, 48, 64, 8]


@pytest.mark.parametrize("seq,qp", [("carphone", 22), ("carphone", 37), ("carphone", 32)])
def test_access_units_match_hm_log(seq, qp):
    """HM 16.20's own streams: POCs, slice types, QPs and each picture's bits as HM's log gives them."""
    d = HM / seq / "lf" / f"qp{qp}"
    stream = (d / "stream.bin").read_bytes()
    log = read_hm_log(d / "encoder.log")
    shown = display_order(access_units(stream))
    assert [a.poc for a in shown] == [p.poc for p in log.pictures]
    assert [8 * a.nbytes for a in shown] == log.bits and sum(log.bits) == 8 * len(stream)
    assert [a.qp for a in shown] == [p.qp for p in log.pictures] and {a.slice_type for a in shown} == {I}


def test_evaluate_random_access_out_of_loop(carphone_mp4, tmp_path):
    """A fresh random-access evaluation: each picture filtered with its own QP, gains by slice type, and
    the report saying that this is an out-of-loop (post-processing) figure."""
    out = tmp_path / "ev"
    r = CliRunner().invoke(
        cli, ["evaluate", "--checkpoint", "zoo:rdn-inloop-ai", "--yuv", str(carphone_mp4), "--frames", "9",
              "--config", "ra", "--preset", "ultrafast", "--qp", "32", "--qp", "37", "--out", str(out)]
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "out of the loop" in r.output and "gain by slice type: I " in r.output
    res = json.loads((out / "results.json").read_text())
    assert res["config"] == "ra" and res["encoder"]["config"] == "ra"
    q32 = res["sequences"][0]["qps"][0]
    frames = q32["per_frame"]
    assert [f["slice_type"] for f in frames] == list("IBBBBBBBP") and [f["poc"] for f in frames] == list(range(9))
    assert [f["qp"] for f in frames] == [29, 39, 39, 39, 36, 39, 39, 39, 33]
    assert set(q32["gain_y_by_slice_type"]) == {"I", "P", "B"}
    i_gain = frames[0]["filtered"]["y"] - frames[0]["anchor"]["y"]
    assert q32["gain_y_by_slice_type"]["I"] == pytest.approx(i_gain)
    bad = CliRunner().invoke(cli, ["evaluate", "--checkpoint", "zoo:rdn-inloop-ai", "--orig", "x.yuv", "--config", "ra",
                                   "--out", str(tmp_path / "b")])  # fmt: skip
    assert bad.exit_code == 2 and "fresh encodes" in bad.stderr


HM_INTER = HM.parent / "hm_inter"


@pytest.mark.parametrize("config", ["ra", "ldb", "ldp"])
@pytest.mark.parametrize("qp", [22, 37])
def test_hm_inter_logs_and_streams(config, qp):
    """Real HM 16.20 random-access and low-delay runs (tests/data/hm_inter): the log parsed in coding and
    display order, its structure accepted for its own condition and refused for another, and the
    bitstream's access units agreeing with the log on every picture's POC, QP, TemporalId and bits (HM's
    per-picture bits leave out the suffix SEI it writes after them, the MD5 hash; the parameter sets count
    in the first picture's)."""
    from codecnn.encoders.base import check_structure
    from codecnn.errors import EncoderError
    from codecnn.eval.inloop import _MD5_BAD, _MD5_OK
    from codecnn.hevc.syntax import SUFFIX_SEI, nal_units

    d = HM_INTER / config / f"qp{qp}"
    log = read_hm_log(d / "encoder.log")
    assert [p.poc for p in log.pictures] == list(range(17)) and log.summary.frames == 17
    coding = sorted(log.pictures, key=lambda p: p.coding_index)
    want = {"ra": "B", "ldb": "B", "ldp": "P"}[config]
    assert coding[0].slice_type == "I" and {p.slice_type for p in coding[1:]} == {want}
    if config == "ra":
        assert [p.poc for p in coding][:6] == [0, 16, 8, 4, 2, 1] and max(p.tid for p in coding) == 4
    else:
        assert [p.poc for p in coding] == list(range(17)) and {p.tid for p in coding} == {0}
    check_structure(config, [p.slice_code for p in coding], [p.poc for p in coding], "HM")
    other = {"ra": "ldb", "ldb": "ldp", "ldp": "ra"}[config]
    with pytest.raises(EncoderError, match=f"--config {other}"):
        check_structure(other, [p.slice_code for p in coding], [p.poc for p in coding], "HM")
    stream = (d / "stream.bin").read_bytes()
    aus = access_units(stream)
    assert [a.poc for a in aus] == [p.poc for p in coding]
    shown = display_order(aus)
    assert [a.qp for a in shown] == [p.qp for p in log.pictures]
    assert [a.temporal_id for a in shown] == [p.tid for p in log.pictures]
    assert sum(a.nbytes for a in aus) == len(stream) == log.bytes_written
    units = nal_units(stream)
    sei_bits = [0] * len(aus)  # the suffix SEI bits of each access unit
    k = -1
    for i, (off, nal) in enumerate(units):
        end = units[i + 1][0] if i + 1 < len(units) else len(stream)
        nut = (nal[0] >> 1) & 0x3F
        if nut < 32 and nal[2] & 0x80:  # first slice segment of a picture
            k += 1
        if nut == SUFFIX_SEI:
            sei_bits[k] += 8 * (end - off)
    got = [8 * a.nbytes - sei_bits[a.coding_index] for a in shown]  # parameter sets count in the first, as HM's
    assert got == [p.bits for p in log.pictures]
    text = (d / "decoder.log").read_text()
    assert len(_MD5_OK.findall(text)) == 17 and not _MD5_BAD.search(text)


def test_hm_inter_layers_come_from_temporal_ids():
    from codecnn.encoders.base import EncodeResult
    from codecnn.yuv import VideoInfo

    log = read_hm_log(HM_INTER / "ra" / "qp32" / "encoder.log")
    info = VideoInfo(176, 144, 8, 30, 17)
    res = EncodeResult("hm", 32, info, HM_INTER / "ra" / "qp32" / "stream.bin", HM_INTER / "ra" / "qp32" / "recon.yuv",
                       log.bits, [p.qp for p in log.pictures], None, 0.0, temporal_id=[p.tid for p in log.pictures],
                       poc=[p.poc for p in log.pictures], config="ra")  # fmt: skip
    assert res.layers() == [0, 4, 3, 4, 2, 4, 3, 4, 1, 4, 3, 4, 2, 4, 3, 4, 0]


def _hm_cfg(name):
    enc = os.environ.get("CODECNN_HM_BIN")
    if not enc:
        return None
    cfg = Path(enc).resolve().parents[1] / "cfg" / name
    return cfg if cfg.is_file() else None


@pytest.mark.skipif(
    _hm_cfg("encoder_randomaccess_main.cfg") is None,
    reason="needs a real HM: set CODECNN_HM_BIN (its cfg/ folder beside bin/ gives encoder_randomaccess_main.cfg)",
)
def test_hm_random_access_dataset(carphone_yuv, tmp_path):
    """make-dataset --encoder hm --config ra with HM's own cfg: pictures in display order with HM's slice
    types, QPs and TemporalIds, bits per picture as HM's log gives them; a cfg that does not match --config
    is refused."""
    cfg = _hm_cfg("encoder_randomaccess_main.cfg")
    out = tmp_path / "hm_ra.h5"
    base = ["make-dataset", "--yuv", str(carphone_yuv), "--encoder", "hm", "--hm-cfg", str(cfg), "--qp", "32",
            "--frames", "5", "--ctu", "64"]  # fmt: skip
    r = CliRunner().invoke(cli, [*base, "--config", "ra", "--out", str(out)])
    assert r.exit_code == 0, r.output
    (u,) = open_dataset_info(out).units
    assert u["slice_type"][0] == I and set(u["slice_type"][1:]) == {B} and u["poc"] == [0, 1, 2, 3, 4]
    assert u["coding_index"][0] == 0 and u["coding_index"] != sorted(u["coding_index"])
    with h5py.File(out, "r") as f:
        assert f["layer"][()].reshape(5, 9)[:, 0].tolist() == u["temporal_id"] and max(u["temporal_id"]) > 0
        assert f["qp"][()].reshape(5, 9)[:, 0].tolist() == u["coded_qp"] and u["coded_qp"][0] == 29
    bad = CliRunner().invoke(cli, [*base, "--config", "ldp", "--out", str(tmp_path / "x.h5")])
    assert bad.exit_code == 2 and "--config ldp" in bad.stderr and not (tmp_path / "x.h5").exists()
