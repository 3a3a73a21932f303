"""evaluate --in-loop: the filter inside a real HM patched by hm_bridge (encoder and decoder), when the
environment points at one; the option checks always."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import HM

from codecnn.cli import cli
from codecnn.errors import CodecnnError, EncoderError
from codecnn.eval.inloop import check_signalling, decode_and_check

ZOO_INT16 = Path(__file__).parents[1] / "codecnn" / "zoo" / "rdn-inloop-ai.int16.cnnw"


def _hm():
    enc, dec = os.environ.get("CODECNN_HM_BIN"), os.environ.get("CODECNN_HM_DEC")
    if not enc or not dec:
        return None
    cfg = os.environ.get("CODECNN_HM_RA_CFG") or str(
        Path(enc).resolve().parents[1] / "cfg" / "encoder_randomaccess_main.cfg"
    )
    return (enc, dec, cfg) if Path(cfg).is_file() else None


needs_hm = pytest.mark.skipif(
    _hm() is None,
    reason="needs HM patched by `python -m hm_bridge patch-hm`: set CODECNN_HM_BIN and CODECNN_HM_DEC (and "
    "CODECNN_HM_RA_CFG unless HM's cfg/encoder_randomaccess_main.cfg sits beside its bin/)",
)


@needs_hm
@pytest.mark.slow
def test_in_loop_random_access_through_patched_hm(tmp_path):
    """Anchor and test encodes of real frames in random access; every bitstream decodes to the encoder's
    pictures (MD5 SEI checked); BD-rates and time ratios reported; a second run resumes every unit; and the
    test stream decoded WITHOUT the model is caught as a mismatch (the references differ)."""
    enc, dec, cfg = _hm()
    orig = tmp_path / "carphone_176x144_30.yuv"
    orig.write_bytes((HM / "carphone" / "orig.yuv").read_bytes())
    args = ["evaluate", "--in-loop", "--model", "zoo:rdn-inloop-ai", "--hm-bin", enc, "--hm-dec", dec, "--hm-cfg", cfg,
            "--config", "ra", "--yuv", str(orig), "--frames", "5", "--jobs", "2", "--work-dir", str(tmp_path / "w"),
            "--out", str(tmp_path / "out")]  # fmt: skip
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    (seq,) = res["sequences"]
    assert [q["qp"] for q in seq["qps"]] == [22, 27, 32, 37]
    assert all("bd_rate" in seq["bd"][p] for p in "yuv") and seq["enc_ratio"] > 0 and seq["dec_ratio"] > 0
    assert any(q["test"]["y"] != q["anchor"]["y"] for q in seq["qps"])  # the filter did something
    unit = json.loads((tmp_path / "w" / seq["name"] / "qp32" / "test" / "unit.json").read_text())
    assert unit["decoder_match"] and unit["md5_checked"] and set(unit["slice_type"]) >= {"I", "B"}
    again = CliRunner().invoke(cli, [*args[:-1], str(tmp_path / "out2")])
    assert (
        again.exit_code == 0
        and json.loads((tmp_path / "out2" / "results.json").read_text())["sequences"] == res["sequences"]
    )
    # decoded without the model: HM's decoder stops with codecnn's message (never wrong pictures in silence)
    with pytest.raises(EncoderError, match="coded with a codecnn filter: give the encoder's --CnnModel"):
        decode_and_check(Path(dec), tmp_path / "w" / seq["name"] / "qp32" / "test", 8, None, "no model")
    # the default signalling (per picture and CTU) is in the slice headers: HM counts it; each picture's
    # choice is in the record, and pictures on equal the decisions that say so
    assert res["signal"] == "ctu" and "signalled in the slice headers" in r.output
    for q in seq["qps"]:
        assert 0 <= q["test"]["pictures_on"] <= q["test"]["frames"] and q["test"]["kbps"] > q["test"]["signal_kbps"] > 0
    decisions = unit["decisions"]
    assert len(decisions) == 5 and unit["pictures_on"] == sum(d["on"] for d in decisions)
    assert decisions[0]["bytes"] >= 4  # the header on the first picture
    # --signal always: the v2 rows' setting (every picture filtered, the header alone signalled)
    always = [a if a != str(tmp_path / "w") else str(tmp_path / "wa") for a in args[:-1]]
    r = CliRunner().invoke(cli, [*always, str(tmp_path / "out3"), "--signal", "always", "--qp", "22", "--qp", "37"])
    assert r.exit_code == 0, r.output
    assert "always on" in r.output
    res3 = json.loads((tmp_path / "out3" / "results.json").read_text())
    assert res3["signal"] == "always"
    for q in res3["sequences"][0]["qps"]:
        assert q["test"]["pictures_on"] == q["test"]["frames"]
    # --propagation: HM's --CnnPropagation weighs the reference pictures' error (the decision changes, the
    # stream still decodes to the encoder's pictures); recorded in results.json
    prop = [a if a != str(tmp_path / "w") else str(tmp_path / "wp") for a in args[:-1]]
    r = CliRunner().invoke(cli, [*prop, str(tmp_path / "out4"), "--propagation", "4", "--qp", "37"])
    assert r.exit_code == 0, r.output
    res4 = json.loads((tmp_path / "out4" / "results.json").read_text())
    assert res4["propagation"] == 4.0 and res["propagation"] == 0.0
    unit4 = json.loads((tmp_path / "wp" / seq["name"] / "qp37" / "test" / "unit.json").read_text())
    assert unit4["decoder_match"] and unit4["md5_checked"]
    # --before-sao: the filter after deblocking, SAO on its output; the decoder follows the stream's header
    # (the same pictures, MD5 checked); recorded in results.json
    pre = [a if a != str(tmp_path / "w") else str(tmp_path / "wb") for a in args[:-1]]
    r = CliRunner().invoke(cli, [*pre, str(tmp_path / "out5"), "--before-sao", "--qp", "32"])
    assert r.exit_code == 0, r.output
    res5 = json.loads((tmp_path / "out5" / "results.json").read_text())
    assert res5["placement"] == "before SAO" and res["placement"] == "after SAO"
    unit5 = json.loads((tmp_path / "wb" / seq["name"] / "qp32" / "test" / "unit.json").read_text())
    assert unit5["decoder_match"] and unit5["md5_checked"] and any(d["on"] for d in unit5["decisions"])
    assert "before SAO" in (tmp_path / "wb" / seq["name"] / "qp32" / "test" / "encoder.log").read_text()
    assert res5["sequences"][0]["qps"][0]["test"]["y"] != seq["qps"][2]["test"]["y"]  # another picture than after SAO


@needs_hm
@pytest.mark.slow
def test_closed_loop_dataset_records_what_the_filter_receives(tmp_path):
    """make-dataset --loop-model: HM codes random access with the filter in its loop, and each sample's input
    is the picture the filter received (after SAO, its references filtered), not HM's output: the inputs
    equal HM's recorded filter input CTU for CTU, and differ from HM's output on the pictures it filtered.
    Per-sample slice types, QPs and layers are kept; info --verify passes."""
    import h5py
    import numpy as np

    from codecnn.data.ctu import cut_ctus
    from codecnn.yuv import RawYuvReader

    enc, dec, cfg = _hm()
    orig = tmp_path / "carphone_176x144_30.yuv"
    orig.write_bytes((HM / "carphone" / "orig.yuv").read_bytes())
    out = tmp_path / "closed.h5"
    args = ["make-dataset", "--yuv", str(orig), "--frames", "5", "--qp", "37", "--config", "ra", "--encoder", "hm",
            "--hm-bin", enc, "--hm-cfg", cfg, "--loop-model", "zoo:rdn-inloop-lop", "--out", str(out)]  # fmt: skip
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    with h5py.File(out, "r") as f:
        inputs, slice_type, qp = f["input"][()], f["slice_type"][()], f["qp"][()]
        unit = json.loads(f["meta"]["units"][()])[0]
    assert set(slice_type) == {0, 2} and len(set(qp)) > 1  # B and I pictures, at their own QPs
    # the same encode by hand, recording the filter's input and keeping HM's output
    from codecnn.zoo import resolve

    work = tmp_path / "by_hand"
    work.mkdir()
    (work / "orig.yuv").write_bytes(orig.read_bytes()[: 5 * 176 * 144 * 3 // 2])
    import subprocess

    argv = [enc, "-c", cfg, "-i", "orig.yuv", "-b", "s.bin", "-o", "recon.yuv", "--SourceWidth=176",
            "--SourceHeight=144", "--FrameRate=30", "--FramesToBeEncoded=5", "--InputChromaFormat=420",
            "--InputBitDepth=8", "--InternalBitDepth=8", "--OutputBitDepth=8", "--QP=37",
            f"--CnnModel={resolve('zoo:rdn-inloop-lop', hm=True)}", "--CnnRecordInput=fi.yuv"]  # fmt: skip
    log = subprocess.run(argv, cwd=work, capture_output=True, text=True)
    assert log.returncode == 0, log.stdout[-2000:]
    on = [int(ln.split()[2]) for ln in log.stdout.splitlines() if ln.startswith("codecnn: POC") and " on " in ln]
    assert on, log.stdout  # the filter was on somewhere: those pictures tell input from output apart
    rec, fin = RawYuvReader(work / "recon.yuv", 176, 144), RawYuvReader(work / "fi.yuv", 176, 144)
    per = len(inputs) // 5
    for poc in range(5):
        got = inputs[poc * per : (poc + 1) * per]
        np.testing.assert_array_equal(got, cut_ctus(fin.read(poc).y, fin.read(poc).y, 128, 2)[0])
        if poc in on:
            assert not np.array_equal(got, cut_ctus(rec.read(poc).y, rec.read(poc).y, 128, 2)[0])
    assert unit["encoder"]["loop_model"].endswith("rdn-inloop-lop.int16.cnnw")
    v = CliRunner().invoke(cli, ["info", str(out), "--verify"])
    assert v.exit_code == 0 and "no problem found" in v.output, v.output
    # its bitstreams decode right only in the patched HM with the model: evaluate --data refuses them
    r = CliRunner().invoke(cli, ["evaluate", "--checkpoint", "zoo:rdn-inloop-lop", "--data", str(out), "--split",
                                 "train", "--out", str(tmp_path / "ev")])  # fmt: skip
    assert r.exit_code == 2 and "closed-loop data" in r.stderr and "--in-loop" in r.stderr, r.output


def test_in_loop_refuses_an_hm_of_another_signalling_version(tmp_path):
    """The version the patched encoder prints on its load line is the one results.json records: an HM patched
    by an older hm_bridge (the first line, from a version 2 build's log) or by another version is refused
    with one line naming the fix; a log without a model loaded (anchors) passes."""
    enc = tmp_path / "TAppEncoderStatic"
    old = "codecnn: luma filter /m/rdn-inloop-ai-v2.int16.cnnw (int16, CRC-32 0xb550c5c9) after SAO\n"
    with pytest.raises(CodecnnError, match="a version before 3 .*patch-hm HM` again and rebuild HM"):
        check_signalling("HM software: Encoder Version [16.20]\n" + old, enc)
    with pytest.raises(CodecnnError, match="writes codecnn signalling version 4, this codecnn records version 3"):
        check_signalling(old.replace("after SAO", "after SAO, signalling version 4"), enc)
    check_signalling(old.replace("after SAO", "after SAO, signalling version 3"), enc)
    check_signalling("HM software: Encoder Version [16.20]\n", enc)
    # the placement: asked before SAO, the log must say so (and the other way round)
    before = old.replace("after SAO", "before SAO, signalling version 3")
    check_signalling(before, enc, before_sao=True)
    with pytest.raises(CodecnnError, match="ran the filter after SAO, not before it as asked"):
        check_signalling(old.replace("after SAO", "after SAO, signalling version 3"), enc, before_sao=True)
    with pytest.raises(CodecnnError, match="ran the filter before SAO, not after it"):
        check_signalling(before, enc)


def test_loop_model_option_checks(tmp_path, carphone_yuv):
    """--loop-model needs HM; a missing model file and intra-mode labels are refused; one line, exit 2."""
    out = tmp_path / "x.h5"
    cases = [
        (["--loop-model", "zoo:rdn-inloop-lop"], "--encoder hm"),
        (["--loop-model", "zoo:rdn-inloop-lop", "--task", "intra-modes"], "drop --task intra-modes"),
        (["--loop-model", "zoo:no-such"], "no such shipped model"),
    ]
    for extra, words in cases:
        argv = ["make-dataset", "--yuv", str(carphone_yuv), "--frames", "1", *extra, "--out", str(out)]
        r = CliRunner().invoke(cli, argv)
        assert r.exit_code == 2 and words in r.stderr and r.stderr.count("Error:") == 1, (extra, r.output)
    assert not out.exists()


def test_in_loop_option_checks(tmp_path, carphone_yuv):
    runner = CliRunner()
    out = str(tmp_path / "o")
    cases = [
        (["--in-loop", "--yuv", str(carphone_yuv)], "--model"),
        (["--in-loop", "--checkpoint", "zoo:rdn-inloop-ai", "--yuv", str(carphone_yuv)], "drop --checkpoint"),
        (["--in-loop", "--model", str(ZOO_INT16)], "--yuv"),
        (["--model", str(ZOO_INT16), "--checkpoint", "zoo:rdn-inloop-ai", "--yuv", str(carphone_yuv)], "--in-loop"),
        (["--yuv", str(carphone_yuv)], "--checkpoint"),
        (["--propagation", "0.5", "--checkpoint", "zoo:rdn-inloop-ai", "--yuv", str(carphone_yuv)], "--in-loop"),
        (["--in-loop", "--model", str(ZOO_INT16), "--yuv", str(carphone_yuv), "--propagation", "-1"], "--propagation"),
        (["--before-sao", "--checkpoint", "zoo:rdn-inloop-ai", "--yuv", str(carphone_yuv)], "--in-loop"),
        (["--in-loop", "--name", "c", "--yuv", str(carphone_yuv), "--yuv", str(carphone_yuv)], "--name names the one"),
        (["--in-loop", "--model", str(ZOO_INT16), "--yuv", str(carphone_yuv), "--hm-cfg", str(tmp_path / "no.cfg")],
         "--hm-cfg"),
        # HM encodes under --in-loop whatever --encoder says: low delay B is HM's to code, not refused as x265's
        (["--in-loop", "--model", str(ZOO_INT16), "--yuv", str(carphone_yuv), "--config", "ldb", "--hm-cfg",
          str(tmp_path / "no.cfg")], "--hm-cfg"),
    ]  # fmt: skip
    for extra, words in cases:
        r = runner.invoke(cli, ["evaluate", *extra, "--out", out])
        assert r.exit_code == 2, (extra, r.output)
        assert words in r.stderr and r.stderr.count("Error:") == 1, (extra, r.stderr)
    assert not Path(out).exists()
