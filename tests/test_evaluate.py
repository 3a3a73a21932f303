"""Evaluation: the bd-rate command, CTU switching, the HM route on real HM 16.20 files, reports (the metrics
themselves: tests/test_metrics.py)."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import HM

from codecnn.cli import cli
from codecnn.eval.metrics import bd_rate, psnr
from codecnn.eval.restoration import switch_ctus
from codecnn.train.checkpoint import save_checkpoint
from codecnn.yuv import RawYuvReader

ANCHOR = [(100.0, 30.0), (180.0, 33.0), (330.0, 36.0), (600.0, 39.0)]


def test_bd_rate_command(tmp_path):
    a, t = tmp_path / "a.csv", tmp_path / "t.csv"
    a.write_text("rate,psnr\n" + "".join(f"{r},{q}\n" for r, q in ANCHOR))
    t.write_text("rate,psnr\n" + "".join(f"{0.8 * r},{q}\n" for r, q in ANCHOR))
    r = CliRunner().invoke(cli, ["bd-rate", str(a), str(t), "--method", "cubic", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    cheaper = [(0.8 * rate, q) for rate, q in ANCHOR]
    assert out["bd_rate"] == pytest.approx(-20.0) and out["method"] == "cubic"
    assert out["bd_psnr"] == pytest.approx(bd_rate(ANCHOR, cheaper, "cubic")["bd_psnr"], abs=1e-12)
    assert out["bd_psnr"] > 0 and out["test"] == [list(p) for p in cheaper]
    r = CliRunner().invoke(cli, ["bd-rate", str(a), str(t)])
    assert r.exit_code == 0, r.output
    dpsnr = bd_rate(ANCHOR, cheaper)["bd_psnr"]
    assert r.output == f"BD-rate -20.0000 %  BD-PSNR {dpsnr:+.4f} dB  (pchip, bjontegaard 1.3.0)\n"
    one = tmp_path / "one.csv"
    one.write_text("rate,psnr\n100,30\n")
    r = CliRunner().invoke(cli, ["bd-rate", str(one), str(one)])
    assert r.exit_code == 2, r.output
    assert "needs at least 4 RD points per curve, the CTC's four QPs (anchor has 1, test 1)" in r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("kbps,y\n1,2\n")
    r = CliRunner().invoke(cli, ["bd-rate", str(bad), str(a)])
    assert r.exit_code == 2 and "expected a CSV with the header 'rate,psnr'" in r.output


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


REPORT_FILES = ["gain_vs_qp.png", "rd_orig.png", "report.md", "results.json"]  # what evaluate writes (HM route)


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
    assert sorted(p.name for p in out.iterdir()) == REPORT_FILES
    bd = seq["bd"]
    assert bd["always_on"]["method"] == "pchip" and len(bd["always_on"]["anchor"]) == 4
    assert sorted(bd["always_on"]["anchor"]) == sorted([q["kbps"], q["anchor"]["y"]] for q in seq["qps"])
    assert sorted(bd["switched"]["test"]) == sorted([q["kbps_switched"], q["switched"]["y"]] for q in seq["qps"])
    assert "error" not in bd["switched"]  # switching never loses: its curve overlaps the anchor's
    # this random filter lowers the PSNR at every QP: always on, its curve can lie wholly below the anchor's (n/a)
    figures = {k: f"n/a ({b['error']})" if "error" in b else f"{b['bd_rate']:+.2f} %" for k, b in bd.items()}
    report = (out / "report.md").read_text()
    assert f"BD-rate always on {figures['always_on']}, switched {figures['switched']}" in report
    assert f"| 37 | 8 | {seq['qps'][3]['kbps']:.2f} | {seq['qps'][3]['anchor']['y']:.4f} |" in report


def test_hm_route_bad_inputs(checkpoint, tmp_path):
    base = ["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]
    qp22_log = HM / "carphone" / "lf" / "qp22" / "encoder.log"
    qp37_recon = HM / "carphone" / "lf" / "qp37" / "recon.yuv"
    wrong = _hm_args()
    wrong[wrong.index("--recon") + 1] = str(qp37_recon)  # QP37 recon, QP22 log
    r = CliRunner().invoke(cli, [*base, *wrong])
    assert r.exit_code == 2
    assert r.output.startswith(f"Error: {qp37_recon} does not match {qp22_log}: Y-PSNR of frame 0 is "), r.output
    geom = _hm_args()
    geom[geom.index("--size") + 1] = "352x288"
    r = CliRunner().invoke(cli, [*base, *geom])
    assert r.exit_code == 2
    assert r.output == f"Error: {qp22_log} encoded 176x144, but {HM / 'carphone' / 'orig.yuv'} is 352x288\n"
    assert not (tmp_path / "o").exists()  # refused commands leave no report folder
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
    assert r.exit_code == 0, r.output
    assert "BD-rate always on n/a (BD-rate with pchip needs at least 4" in r.output  # flagged, not a number
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == REPORT_FILES
    bd = json.loads((tmp_path / "o" / "results.json").read_text())["sequences"][0]["bd"]
    for kind in ("always_on", "switched"):
        assert "bd_rate" not in bd[kind] and bd[kind]["error"].startswith("BD-rate with pchip needs at least 4 ")
    assert "BD-rate always on n/a (BD-rate with pchip needs" in (tmp_path / "o" / "report.md").read_text()


def test_hm_route_names_the_sequence(checkpoint, tmp_path):
    """HM's source is often just orig.yuv: --name gives the report the sequence's own name (default: the file's)."""
    d = HM / "carphone" / "lf" / "qp32"
    files = ["--orig", str(HM / "carphone" / "orig.yuv"), "--size", "176x144", "--recon", str(d / "recon.yuv"),
             "--hm-log", str(d / "encoder.log")]  # fmt: skip
    base = ["evaluate", "--checkpoint", str(checkpoint), *files]
    r = CliRunner().invoke(cli, [*base, "--name", "carphone", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o" / "results.json").read_text())["sequences"][0]["name"] == "carphone"
    assert (tmp_path / "o" / "rd_carphone.png").is_file()
    assert "## carphone" in (tmp_path / "o" / "report.md").read_text()
    for extra, words in (
        (["--name", "a/b"], "--name 'a/b': use letters, digits"),
        (["--name", "carphone", "--data", "x.h5"], "--name names the one sequence of --orig or --yuv FILE"),
    ):
        r = CliRunner().invoke(cli, [*base, *extra, "--out", str(tmp_path / "bad")])
        assert r.exit_code == 2 and words in r.output, r.output
    assert not (tmp_path / "bad").exists()
    # --yuv (fresh encodes, --in-loop) is named the same way
    from codecnn.sequences import sequence_from_path

    assert sequence_from_path(HM / "carphone" / "orig.yuv", "176x144").name == "orig"
    assert sequence_from_path(HM / "carphone" / "orig.yuv", "176x144", name="carphone").name == "carphone"


def test_wrong_kind_of_checkpoint(tmp_path):
    p = tmp_path / "modes.pt"
    save_checkpoint(p, {"task": "intra-modes", "arch": "modenet", "config": {}, "state_dict": {}})
    r = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(p), *_hm_args(), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert r.output == f"Error: {p}: a 'intra-modes' checkpoint (modenet), but a 'ctu-restoration' one is needed here\n"
    assert sorted(tmp_path.iterdir()) == [p]  # no report folder, nothing else


@pytest.mark.slow
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
    r = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(checkpoint), *_hm_args(), "--out", str(hm_out)])
    assert r.exit_code == 0, r.output
    merged = tmp_path / "merged"
    r = CliRunner().invoke(
        cli, ["report", str(out / "results.json"), str(hm_out / "results.json"), "--out", str(merged)]
    )
    assert r.exit_code == 0, r.output
    m = json.loads((merged / "results.json").read_text())
    assert [s["name"] for s in m["sequences"]] == ["carphone_176x144_30", "orig"]
    assert m["merged_from"] == [str(out / "results.json"), str(hm_out / "results.json")]
    text = (merged / "report.md").read_text()
    assert "## carphone_176x144_30" in text and "## orig" in text
    assert sorted(p.name for p in merged.iterdir()) == [
        "gain_vs_qp.png",
        "rd_carphone_176x144_30.png",
        "rd_orig.png",
        "report.md",
        "results.json",
    ]
    r = CliRunner().invoke(
        cli, ["report", str(out / "results.json"), str(out / "results.json"), "--out", str(tmp_path / "dup")]
    )
    assert r.exit_code == 2 and "sequence carphone_176x144_30 appears in more than one results file" in r.output
    assert not (tmp_path / "dup").exists()


@pytest.mark.slow
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


def test_post_filter_against_the_loop_filters_on_hm_files(checkpoint, tmp_path):
    """--vs-loop-filters on HM 16.20's own files: the network filters the reconstruction coded without
    deblocking and SAO (nolf); the anchor is HM with both on (lf), each at the rate of its own log."""
    from codecnn.encoders import read_hm_log

    car = HM / "carphone"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--orig", str(car / "orig.yuv"), "--size", "176x144"]
    for qp in (22, 27, 32, 37):
        n, a = car / "nolf" / f"qp{qp}", car / "lf" / f"qp{qp}"
        args += ["--recon", str(n / "recon.yuv"), "--hm-log", str(n / "encoder.log")]
        args += ["--anchor-recon", str(a / "recon.yuv"), "--anchor-log", str(a / "encoder.log")]
    out = tmp_path / "pf"
    r = CliRunner().invoke(cli, [*args, "--vs-loop-filters", "--psnr-peak", "hm", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("post-filter setting:")
    res = json.loads((out / "results.json").read_text())
    assert res["setting"] == "post-filter" and res["source"].startswith("HM files (loop filters off)")
    (seq,) = res["sequences"]
    for q in seq["qps"]:
        lf = read_hm_log(car / "lf" / f"qp{q['qp']}" / "encoder.log").summary
        nolf = read_hm_log(car / "nolf" / f"qp{q['qp']}" / "encoder.log").summary
        assert q["kbps"] == pytest.approx(lf.kbps, abs=5e-3)  # the anchor's rate: filters on
        assert q["kbps_filtered"] == pytest.approx(nolf.kbps, abs=5e-3)  # the network's input's rate
        assert q["anchor"]["y"] == pytest.approx(lf.psnr_y, abs=5e-4)  # HM's own figures (4 decimals, mean)
        assert q["unfiltered"]["y"] == pytest.approx(nolf.psnr_y, abs=5e-4)
        assert q["kbps"] > q["kbps_filtered"]  # the loop filters cost bits here (SAO parameters)
    bd = seq["bd"]["switched"]  # (the untrained test network's always-on curve may not overlap the anchor's)
    assert sorted(p[0] for p in bd["anchor"]) == sorted(q["kbps"] for q in seq["qps"])
    assert sorted(p[0] for p in bd["test"]) == sorted(q["kbps_switched"] for q in seq["qps"])
    anchor = [(q["kbps"], q["anchor"]["y"]) for q in seq["qps"]]
    want = bd_rate(anchor, [(q["kbps_switched"], q["switched"]["y"]) for q in seq["qps"]])
    assert bd["bd_rate"] == pytest.approx(want["bd_rate"])
    assert "post-filter setting" in (out / "report.md").read_text()
    # refused: an anchor without the setting, the setting with a dataset, a missing anchor, filters switched off
    for extra, message in [
        (["--anchor-recon", "x.yuv"], "--anchor-recon/--anchor-log are the anchor of --vs-loop-filters"),
        (["--vs-loop-filters", "--no-sao"], "drop --no-deblock/--no-sao"),
    ]:
        r = CliRunner().invoke(cli, [*args[:11], *extra, "--out", str(tmp_path / "x")])
        assert r.exit_code == 2 and message in r.output, r.output
    r = CliRunner().invoke(cli, [*args[:11], "--vs-loop-filters", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "needs --anchor-recon and --anchor-log" in r.output, r.output
    assert not (tmp_path / "x").exists()


def test_post_filter_with_fresh_encodes(checkpoint, carphone_yuv, tmp_path):
    out = tmp_path / "pf"
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
            "32",
            "--qp",
            "37",
            "--preset",
            "ultrafast",
            "--vs-loop-filters",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    for q in res["sequences"][0]["qps"]:
        assert q["frames"] == 2 and q["kbps"] != q["kbps_filtered"]  # two real encodes, two rates
        assert q["anchor"]["y"] != q["unfiltered"]["y"]
    enc = res["encoder"]
    assert enc["deblock"] is False and enc["sao"] is False  # the encode the network filters


def test_split_picks_the_sequences_of_a_list(checkpoint, carphone_yuv, tmp_path):
    """--split with --list evaluates that split's sequences only (photos.toml's test split: chelsea, camera,
    moon; never the photographs trained on); a split the list does not have, or --split with --yuv, is
    refused in one line."""
    listing = Path(__file__).parents[1] / "datasets" / "photos.toml"
    base = ["evaluate", "--checkpoint", str(checkpoint), "--qp", "37", "--preset", "ultrafast"]
    r = CliRunner().invoke(cli, [*base, "--list", str(listing), "--split", "test", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert [s["name"] for s in res["sequences"]] == ["chelsea", "camera", "moon"]
    one = tmp_path / "one.toml"
    one.write_text(listing.read_text().split("[[sequence]]")[0] + '[[sequence]]\nname = "coins"\nfile = "coins.png"\n')
    r = CliRunner().invoke(cli, [*base, "--list", str(one), "--split", "val", "--out", str(tmp_path / "v")])
    assert (
        r.exit_code == 2
        and r.output == f"Error: {one}: no sequence in split val (it has train): pick another --split\n"
    )
    r = CliRunner().invoke(cli, [*base, "--yuv", str(carphone_yuv), "--split", "test", "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "--split picks the sequences of --list or --data" in r.output, r.output
    assert not (tmp_path / "v").exists() and not (tmp_path / "y").exists()
