"""Evaluation: PSNR, BD-rate, CTU switching, the HM route on real HM 16.20 files, reports."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import HM

from codecnn.cli import cli
from codecnn.eval.metrics import BDError, bd_rate, psnr, psnr_yuv_weighted
from codecnn.eval.restoration import switch_ctus
from codecnn.models import RDN
from codecnn.train.checkpoint import save_checkpoint
from codecnn.yuv import RawYuvReader

ANCHOR = [(100.0, 30.0), (180.0, 33.0), (330.0, 36.0), (600.0, 39.0)]


def test_psnr_known_values_8_and_10_bit():
    a = np.zeros((4, 4), np.uint8)
    b = a.copy()
    b[0, 0] = 16  # MSE = 16
    assert psnr(a, b, 8) == pytest.approx(10 * np.log10(255**2 / 16))
    assert psnr(a.astype(np.uint16), (b.astype(np.uint16) * 4), 10) == pytest.approx(10 * np.log10(1023**2 / 256))
    assert psnr(a.astype(np.uint16), b.astype(np.uint16) * 4, 10, convention="hm") == pytest.approx(
        10 * np.log10(1020**2 / 256)
    )
    assert psnr(a, a) == float("inf")
    assert psnr_yuv_weighted(40, 46, 46) == pytest.approx(41.5)


@pytest.mark.parametrize("method", ["pchip", "cubic", "akima"])
def test_bd_rate_exact_cases(method):
    same = bd_rate(ANCHOR, ANCHOR, method)
    assert same["bd_rate"] == 0 and same["bd_psnr"] == 0
    cheaper = bd_rate(ANCHOR, [(0.8 * r, q) for r, q in ANCHOR], method)
    assert cheaper["bd_rate"] == pytest.approx(-20.0, abs=1e-9)
    assert cheaper["method"] == method and cheaper["implementation"] == "bjontegaard 1.3.0"
    assert cheaper["anchor"] == [list(p) for p in ANCHOR]
    shuffled = bd_rate(ANCHOR[::-1], [(0.8 * r, q) for r, q in ANCHOR][::-1], method)
    assert shuffled["bd_rate"] == pytest.approx(-20.0, abs=1e-9)  # points are sorted first


def test_bd_rate_refuses_bad_curves():
    with pytest.raises(BDError, match="not monotonic"):
        bd_rate(ANCHOR, [(100, 30), (180, 34), (330, 33), (600, 39)])
    with pytest.raises(BDError, match="at least 2"):
        bd_rate(ANCHOR[:1], ANCHOR[:1])
    with pytest.raises(BDError, match="at least 4"):
        bd_rate(ANCHOR[:3], ANCHOR[:3], "cubic")
    with pytest.raises(BDError, match="do not overlap"):
        bd_rate(ANCHOR, [(r, q + 20) for r, q in ANCHOR])


def test_bd_rate_command(tmp_path):
    a, t = tmp_path / "a.csv", tmp_path / "t.csv"
    a.write_text("rate,psnr\n" + "".join(f"{r},{q}\n" for r, q in ANCHOR))
    t.write_text("rate,psnr\n" + "".join(f"{0.8 * r},{q}\n" for r, q in ANCHOR))
    r = CliRunner().invoke(cli, ["bd-rate", str(a), str(t), "--method", "cubic", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["bd_rate"] == pytest.approx(-20.0) and out["method"] == "cubic" and "bd_psnr" in out
    r = CliRunner().invoke(cli, ["bd-rate", str(a), str(t)])
    assert "BD-rate -20.0000 %" in r.output
    one = tmp_path / "one.csv"
    one.write_text("rate,psnr\n100,30\n")
    r = CliRunner().invoke(cli, ["bd-rate", str(one), str(one)])
    assert r.exit_code == 2 and "at least 2" in r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("kbps,y\n1,2\n")
    r = CliRunner().invoke(cli, ["bd-rate", str(bad), str(a)])
    assert r.exit_code == 2 and "rate,psnr" in r.output


def test_switching_never_loses_and_beats_always_on_per_ctu():
    orig = RawYuvReader(HM / "carphone" / "orig.yuv", 176, 144).read(0).y
    anchor = RawYuvReader(HM / "carphone" / "lf" / "qp37" / "recon.yuv", 176, 144).read(0).y
    rng = np.random.default_rng(0)
    # a "filter" that helps on some CTUs (moves toward the original) and hurts on others (noise)
    filtered = anchor.astype(np.int64)
    filtered[:, :64] = (filtered[:, :64] + orig[:, :64]) // 2
    filtered[:, 64:] += rng.integers(-6, 7, filtered[:, 64:].shape)
    filtered = np.clip(filtered, 0, 255).astype(np.uint8)
    switched, flags = switch_ctus(orig, anchor, filtered, 64)
    assert flags[0] and flags[3] and not flags[1] and len(flags) == 9
    assert psnr(orig, switched) >= psnr(orig, anchor)
    assert psnr(orig, switched) >= psnr(orig, filtered)
    for y in (0, 64, 128):
        for x in (0, 64, 128):
            sl = (slice(y, y + 64), slice(x, x + 64))
            e = lambda p, sl=sl: ((p[sl].astype(int) - orig[sl]) ** 2).sum()  # noqa: E731
            assert e(switched) == min(e(anchor), e(filtered))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    m = RDN(num_blocks=1, num_layers=2, growth=4, num_features=8)
    torch.nn.init.normal_(m.last.weight, std=0.02)
    p = tmp_path_factory.mktemp("ck") / "m.pt"
    save_checkpoint(
        p,
        {
            "task": "ctu-restoration",
            "arch": "rdn",
            "config": m.config.__dict__,
            "state_dict": m.state_dict(),
            "step": 1,
            "dataset": {"ctu": 64},
        },
    )
    return p


def _hm_args():
    args = ["--orig", str(HM / "carphone" / "orig.yuv"), "--size", "176x144"]
    for qp in (22, 27, 32, 37):
        d = HM / "carphone" / "lf" / f"qp{qp}"
        args += ["--recon", str(d / "recon.yuv"), "--hm-log", str(d / "encoder.log")]
    return args


def test_hm_route_anchor_equals_hm_figures(checkpoint, tmp_path):
    from codecnn.encoders import read_hm_log

    out = tmp_path / "rep"
    r = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(checkpoint), *_hm_args(), "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    seq = res["sequences"][0]
    assert [q["qp"] for q in seq["qps"]] == [22, 27, 32, 37] and res["ctu"] == 64
    for q in seq["qps"]:
        hm = read_hm_log(HM / "carphone" / "lf" / f"qp{q['qp']}" / "encoder.log")
        assert q["kbps"] == pytest.approx(hm.summary.kbps, abs=5e-5)  # HM's bits and frame rate
        for plane, want in (("y", hm.summary.psnr_y), ("u", hm.summary.psnr_u), ("v", hm.summary.psnr_v)):
            assert q["anchor"][plane] == pytest.approx(want, abs=5e-5)  # to the log's 4 decimals
        for f, p in zip(q["per_frame"], hm.pictures, strict=True):
            assert f["bits"] == p.bits and f["anchor"]["y"] == pytest.approx(p.psnr_y, abs=5e-5)
        assert q["filtered"]["u"] == q["anchor"]["u"]  # a luma filter leaves chroma alone
        assert q["gain_y_switched"] >= 0 and q["gain_y_switched"] >= q["gain_y"] - 1e-12
    assert "BD-rate" in (out / "report.md").read_text() and (out / "rd_orig.png").exists()
    assert seq["bd"]["always_on"]["method"] == "pchip" and len(seq["bd"]["always_on"]["anchor"]) == 4


def test_hm_route_bad_inputs(checkpoint, tmp_path):
    base = ["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]
    wrong = _hm_args()
    wrong[wrong.index("--recon") + 1] = str(HM / "carphone" / "lf" / "qp37" / "recon.yuv")  # QP37 recon, QP22 log
    r = CliRunner().invoke(cli, [*base, *wrong])
    assert r.exit_code == 2 and "does not match" in r.output
    geom = _hm_args()
    geom[geom.index("--size") + 1] = "352x288"
    r = CliRunner().invoke(cli, [*base, *geom])
    assert r.exit_code == 2 and ("not a whole number" in r.output or "must match" in r.output or "encoded" in r.output)
    one = [
        "--orig",
        str(HM / "carphone" / "orig.yuv"),
        "--size",
        "176x144",
        "--recon",
        str(HM / "carphone" / "lf" / "qp32" / "recon.yuv"),
        "--hm-log",
        str(HM / "carphone" / "lf" / "qp32" / "encoder.log"),
    ]
    r = CliRunner().invoke(cli, [*base, *one])
    assert r.exit_code == 0 and "n/a (BD-rate with pchip needs at least 2" in r.output  # flagged, not a number
    assert not (tmp_path / "o2").exists()


def test_wrong_kind_of_checkpoint(tmp_path):
    p = tmp_path / "modes.pt"
    save_checkpoint(p, {"task": "intra-modes", "arch": "modenet", "config": {}, "state_dict": {}})
    r = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(p), *_hm_args(), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "'intra-modes' checkpoint" in r.output
    assert not (tmp_path / "o").exists()


def test_encode_route_and_report_merge(checkpoint, carphone_yuv, tmp_path):
    out = tmp_path / "enc"
    r = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--checkpoint",
            str(checkpoint),
            "--yuv",
            str(carphone_yuv),
            "--frames",
            "2",
            "--qp",
            "27",
            "--qp",
            "37",
            "--preset",
            "ultrafast",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    q = res["sequences"][0]["qps"][0]
    assert res["encoder"]["encoder"] == "x265" and q["frames"] == 2
    assert q["kbps_switched"] - q["kbps"] == pytest.approx(9 * 30 / 1000)  # one flag bit per CTU and frame
    assert q["encoder_anchor"]["y"] == pytest.approx(q["anchor"]["y"], abs=6e-4)  # x265's own PSNR
    hm_out = tmp_path / "hm"
    assert (
        CliRunner()
        .invoke(cli, ["evaluate", "--checkpoint", str(checkpoint), *_hm_args(), "--out", str(hm_out)])
        .exit_code
        == 0
    )
    merged = tmp_path / "merged"
    r = CliRunner().invoke(
        cli, ["report", str(out / "results.json"), str(hm_out / "results.json"), "--out", str(merged)]
    )
    assert r.exit_code == 0, r.output
    m = json.loads((merged / "results.json").read_text())
    assert [s["name"] for s in m["sequences"]] == ["carphone_176x144_30", "orig"]
    assert "## carphone_176x144_30" in (merged / "report.md").read_text()
    r = CliRunner().invoke(
        cli, ["report", str(out / "results.json"), str(out / "results.json"), "--out", str(tmp_path / "dup")]
    )
    assert r.exit_code == 2 and "more than one results file" in r.output


def test_int16_evaluation_tracks_float(checkpoint, restoration_h5, tmp_path):
    """--int16 filters with the fixed-point network HM runs; its gains stay within 0.05 dB of float's."""
    runs = {}
    for name, extra in (("float", []), ("int16", ["--int16", "--calib", str(restoration_h5)])):
        r = CliRunner().invoke(
            cli, ["evaluate", "--checkpoint", str(checkpoint), *_hm_args(), "--out", str(tmp_path / name), *extra]
        )
        assert r.exit_code == 0, r.output
        runs[name] = json.loads((tmp_path / name / "results.json").read_text())
    assert runs["int16"]["precision"] == "int16" and runs["float"]["precision"] == "float32"
    for qf, qi in zip(runs["float"]["sequences"][0]["qps"], runs["int16"]["sequences"][0]["qps"], strict=True):
        assert qi["anchor"] == qf["anchor"]
        assert abs(qi["gain_y"] - qf["gain_y"]) < 0.05 and qi["gain_y"] != qf["gain_y"]
