"""evaluate-modes --in-hm: the mode network inside a real HM encoder patched by hm_bridge, decoded by an
unmodified HM decoder, when the environment points at both; the option checks always."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import HM

from codecnn.cli import cli
from codecnn.errors import CodecnnError
from codecnn.eval.modes_hm import Setting, encoder_times, parse_setting


def _hm():
    """The patched encoder (CODECNN_HM_BIN), an UNMODIFIED decoder (CODECNN_HM_PRISTINE_DEC) and the AI cfg."""
    enc, dec = os.environ.get("CODECNN_HM_BIN"), os.environ.get("CODECNN_HM_PRISTINE_DEC")
    if not enc or not dec:
        return None
    cfg = Path(enc).resolve().parents[1] / "cfg" / "encoder_intra_main.cfg"
    return (enc, dec, str(cfg)) if cfg.is_file() else None


needs_hm = pytest.mark.skipif(
    _hm() is None,
    reason="needs HM patched by `python -m hm_bridge patch-hm` (CODECNN_HM_BIN, with cfg/encoder_intra_main.cfg "
    "beside its bin/) and an unmodified HM decoder (CODECNN_HM_PRISTINE_DEC)",
)


def test_settings_parse_and_refuse():
    assert parse_setting("10:4") == Setting(10, 4) and parse_setting("10:4").name == "k10_rd4"
    assert parse_setting("6") == Setting(6, 0) and parse_setting("6").name == "k6"
    assert parse_setting("-:3") == Setting(None, 3) and parse_setting("-:3").name == "hm_rd3"
    assert parse_setting("10:2:8") == Setting(10, 2, 8) and parse_setting("10:2:8").name == "k10_min8_rd2"
    assert Setting(10, 4).args(Path("m.cnnw")) == (
        "--CnnModeModel=m.cnnw",
        "--CnnModeK=10",
        "--CnnModeMinSize=4",
        "--CnnModeRd=4",
    )
    assert Setting(None, 3).args(Path("m.cnnw")) == ("--CnnModeRd=3",)
    for bad, msg in (
        ("0:4", "1..35"),
        ("36", "1..35"),
        ("10:9", "RD is 0"),
        ("x:1", "use K:RD"),
        ("-:0", "anchor"),
        ("10:2:5", "MIN is"),
    ):
        with pytest.raises(CodecnnError, match=msg):
            parse_setting(bad)


def test_encoder_times_read_hm_and_the_network_lines(tmp_path):
    log = tmp_path / "encoder.log"
    log.write_text("POC 0 ...\ncodecnn: mode network: 1200 blocks, 0.006 s (5.000 us per block)\n\n Total Time: "
                   "      12.500 sec. [user]\n")  # fmt: skip
    assert encoder_times(log) == {"hm_seconds": 12.5, "net_blocks": 1200, "net_seconds": 0.006}


def test_in_hm_option_checks(tmp_path):
    run = lambda *a: CliRunner().invoke(cli, ["evaluate-modes", *a, "--out", str(tmp_path / "o")])  # noqa: E731
    r = run("--in-hm", "--yuv", "x.yuv")
    assert r.exit_code != 0 and "at least one --setting" in r.output
    r = run("--in-hm", "--yuv", "x.yuv", "--setting", "10:4")
    assert r.exit_code != 0 and "give --model" in r.output
    r = run("--in-hm", "--setting", "10:4", "--model", "m.cnnw")
    assert r.exit_code != 0 and "--yuv FILE or --list" in r.output
    r = run("--setting", "10:4")
    assert r.exit_code != 0 and "belong to --in-hm" in r.output
    r = run("--in-hm", "--yuv", "x.yuv", "--setting", "40:4", "--model", "m.cnnw")
    assert r.exit_code != 0 and "1..35" in r.output


@needs_hm
@pytest.mark.slow
def test_in_hm_all_intra_through_patched_hm(tmp_path):
    """Anchor, a pruned encoder and the RD reduction alone on real frames in all intra: every stream decoded
    by the unmodified decoder to the encoder's pictures (MD5 checked), BD-rates, EncT and the network's share
    reported; a second run resumes every unit."""
    from test_modenet_cpp import _net

    from hm_bridge.format import write_cnnw
    from hm_bridge.modenet import graph_from_modenet

    enc, dec, cfg = _hm()
    model = write_cnnw(graph_from_modenet(_net("small")), tmp_path / "m.cnnw")
    orig = tmp_path / "carphone_176x144_30.yuv"
    orig.write_bytes((HM / "carphone" / "orig.yuv").read_bytes())
    args = ["evaluate-modes", "--in-hm", "--model", str(model), "--setting", "4:2", "--setting", "-:2", "--hm-bin",
            enc, "--hm-dec", dec, "--hm-cfg", cfg, "--yuv", str(orig), "--frames", "1", "--jobs", "2",
            "--work-dir", str(tmp_path / "w"), "--out", str(tmp_path / "out")]  # fmt: skip
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [s["setting"] for s in res["settings"]] == ["k4_rd2", "hm_rd2"]
    net, alone = (s["sequences"][0] for s in res["settings"])
    assert all("bd_rate" in net["bd"][p] for p in "yuv") and 0 < net["enc_t"] and 0 < net["net_share"] < 1
    assert alone["net_share"] == 0
    unit = json.loads((tmp_path / "w" / net["name"] / "qp32" / "k4_rd2" / "unit.json").read_text())
    assert unit["decoder_match"] and unit["md5_checked"]
    again = CliRunner().invoke(cli, [*args[:-1], str(tmp_path / "out2")])
    assert again.exit_code == 0 and "done before" not in again.output
    assert (
        json.loads((tmp_path / "out2" / "results.json").read_text())["settings"][0]["sequences"][0]["bd"] == net["bd"]
    )
