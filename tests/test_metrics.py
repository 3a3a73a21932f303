"""Metrics against hand-computed values: PSNR (both peak conventions), BD-rate/BD-PSNR and their refusals,
RD CSV files (codecnn.eval.metrics), and the intra-mode ranking metrics and baselines (codecnn.eval.intra)."""

import math

import numpy as np
import pytest

from codecnn.errors import CodecnnError
from codecnn.eval.intra import (
    candidate_metrics,
    evaluate_rankings,
    mode_table_lines,
    mpm_list,
    neighbour_mpms,
    ranking_metrics,
    rows_with_total,
)
from codecnn.eval.metrics import (
    BDError,
    bd_rate,
    mse,
    peak,
    psnr,
    psnr_from_mse,
    psnr_yuv,
    psnr_yuv_weighted,
    read_rd_csv,
    standard_error,
)
from codecnn.yuv import Frame

ANCHOR = [(100.0, 30.0), (180.0, 33.0), (330.0, 36.0), (600.0, 39.0)]
METHODS = ["pchip", "cubic", "akima"]

# ------------------------------------------------------------------------------------------------- PSNR


def test_peak_conventions():
    assert peak(8) == peak(8, "hm") == 255
    assert peak(10) == 1023 and peak(10, "max") == 1023
    assert peak(10, "hm") == 1020  # 255 << 2, HM's and x265's
    with pytest.raises(ValueError, match="unknown PSNR peak convention 'jvet'"):
        peak(10, "jvet")


def _pair():
    """Two 4x4 planes differing by 16 in one sample: MSE 256 / 16 = 16."""
    a = np.zeros((4, 4), np.uint8)
    b = a.copy()
    b[0, 0] = 16
    return a, b


def test_psnr_8_bit_exact():
    a, b = _pair()
    assert mse(a, b) == 16.0
    want = 10 * math.log10(255**2 / 16)
    assert want == pytest.approx(36.0896037821)
    assert psnr(a, b, 8) == pytest.approx(want, abs=1e-12)
    assert psnr(a, b, 8, convention="hm") == psnr(a, b, 8)  # one peak at 8 bits
    assert psnr(b, a) == psnr(a, b)  # uint8 samples: no wrap-around in the difference
    assert psnr_from_mse(1.0, 255) == pytest.approx(20 * math.log10(255), abs=1e-12)  # 48.1308 dB


def test_psnr_10_bit_both_conventions():
    a, b = (p.astype(np.uint16) * 4 for p in _pair())  # the 8-bit pair at 10 bits: MSE 256
    assert mse(a, b) == 256.0
    got_max, got_hm = psnr(a, b, 10), psnr(a, b, 10, convention="hm")
    assert got_max == pytest.approx(10 * math.log10(1023**2 / 256), abs=1e-12)  # 36.1151
    assert got_hm == pytest.approx(10 * math.log10(1020**2 / 256), abs=1e-12)  # 36.0896
    assert got_max - got_hm == pytest.approx(20 * math.log10(1023 / 1020), abs=1e-12)
    assert round(got_max - got_hm, 4) == 0.0255  # the documented difference
    assert got_hm == pytest.approx(psnr(*_pair(), 8), abs=1e-12)  # HM's peak scales with the samples


def test_psnr_identical_arrays_is_inf():
    a, _ = _pair()
    assert psnr(a, a) == math.inf
    assert psnr(a.astype(np.uint16), a.astype(np.uint16), 10, convention="hm") == math.inf
    assert psnr_from_mse(0.0, 1023) == math.inf


def test_psnr_masks():
    a = np.zeros((4, 4), np.uint8)
    b = a.copy()
    b[0, 0], b[3, 3] = 16, 4
    assert mse(a, b) == (256 + 16) / 16
    everywhere_but_corner = np.ones((4, 4), bool)
    everywhere_but_corner[0, 0] = False
    assert mse(a, b, everywhere_but_corner) == 16 / 15
    assert psnr(a, b, mask=everywhere_but_corner) == pytest.approx(10 * math.log10(255**2 * 15 / 16), abs=1e-12)
    top_row = np.zeros((4, 4), bool)
    top_row[0] = True
    assert mse(a, b, top_row) == 256 / 4
    middle = np.zeros((4, 4), bool)
    middle[1:3, 1:3] = True
    assert psnr(a, b, mask=middle) == math.inf  # the errors lie outside the mask
    # a 2-D mask applies to every plane of a stack
    stack_a, stack_b = np.stack([a, a]), np.stack([b, np.zeros_like(b)])
    assert mse(stack_a, stack_b, top_row) == 256 / 8


def test_psnr_yuv_and_weighted():
    y, u, v = np.full((4, 4), 100, np.uint8), np.full((2, 2), 50, np.uint8), np.full((2, 2), 60, np.uint8)
    ref = Frame(y, u, v)
    test = Frame(y + 1, u + 2, v.copy())
    got = psnr_yuv(ref, test)
    assert got[0] == pytest.approx(10 * math.log10(255**2 / 1), abs=1e-12)
    assert got[1] == pytest.approx(10 * math.log10(255**2 / 4), abs=1e-12)
    assert got[2] == math.inf
    ref10 = Frame(*(p.astype(np.uint16) * 4 for p in ref.planes), bit_depth=10)
    test10 = Frame(*(p.astype(np.uint16) * 4 for p in test.planes), bit_depth=10)
    hm = psnr_yuv(ref10, test10, 10, convention="hm")
    assert hm[:2] == pytest.approx(got[:2], abs=1e-12) and hm[2] == math.inf
    assert psnr_yuv_weighted(40, 46, 46) == 41.5  # (6 * 40 + 46 + 46) / 8
    assert psnr_yuv_weighted(40, 44, 48, weights=(4, 1, 1)) == (160 + 44 + 48) / 6
    assert psnr_yuv_weighted(40, 44, 48, weights=(1, 0, 0)) == 40


# ------------------------------------------------------------------------------------------------- BD


@pytest.mark.parametrize("method", METHODS)
def test_bd_rate_of_a_constant_rate_factor(method):
    """A test curve that is the anchor at a constant rate factor has exactly that BD-rate, with any method."""
    same = bd_rate(ANCHOR, ANCHOR, method)
    assert same["bd_rate"] == 0 and same["bd_psnr"] == 0
    for factor in (0.8, 1.25):
        r = bd_rate(ANCHOR, [(factor * rate, q) for rate, q in ANCHOR], method)
        assert r["bd_rate"] == pytest.approx(100 * (factor - 1), abs=1e-9)
        assert (r["bd_psnr"] > 0) == (factor < 1)  # less rate for the same quality is a gain
    cheaper = bd_rate(ANCHOR, [(0.8 * rate, q) for rate, q in ANCHOR], method)
    assert cheaper["method"] == method and cheaper["implementation"] == "bjontegaard 1.3.0"
    assert cheaper["anchor"] == [list(p) for p in ANCHOR]
    assert cheaper["test"] == [[0.8 * rate, q] for rate, q in ANCHOR]
    shuffled = bd_rate(ANCHOR[::-1], [(0.8 * rate, q) for rate, q in ANCHOR][::-1], method)
    assert shuffled["bd_rate"] == pytest.approx(-20.0, abs=1e-9)  # points are sorted first
    assert shuffled["anchor"] == cheaper["anchor"] and shuffled["test"] == cheaper["test"]


@pytest.mark.parametrize("method", METHODS)
def test_bd_psnr_of_a_constant_quality_offset(method):
    r = bd_rate(ANCHOR, [(rate, q + 0.5) for rate, q in ANCHOR], method)
    assert r["bd_psnr"] == pytest.approx(0.5, abs=1e-9)
    assert r["bd_rate"] < 0


def test_bd_rate_refuses_too_few_points():
    for method in METHODS:  # the CTC's four QPs for every method: two points would give a straight line
        bd_rate(ANCHOR, ANCHOR, method)
        for n in (1, 2, 3):
            with pytest.raises(
                BDError,
                match=rf"with {method} needs at least 4 RD points per curve, the CTC's four QPs \(anchor has {n}, "
                rf"test {n}\)",
            ):
                bd_rate(ANCHOR[:n], ANCHOR[:n], method)
    with pytest.raises(BDError, match=r"\(anchor has 4, test 1\)"):
        bd_rate(ANCHOR, ANCHOR[:1])


def test_bd_rate_refuses_non_monotonic_and_bad_points():
    with pytest.raises(BDError, match="test curve is not monotonic"):
        bd_rate(ANCHOR, [(100, 30), (180, 34), (330, 33), (600, 39)])
    with pytest.raises(BDError, match="anchor curve is not monotonic"):
        bd_rate([(100, 30), (100, 31), (330, 36), (600, 39)], ANCHOR)  # two points at one rate
    with pytest.raises(BDError, match="test curve has a non-positive or non-finite point"):
        bd_rate(ANCHOR, [(0, 30), (180, 33), (330, 36), (600, 39)])
    with pytest.raises(BDError, match="anchor curve has a non-positive or non-finite point"):
        bd_rate([(100, 30), (180, float("nan")), (330, 36), (600, 39)], ANCHOR)
    with pytest.raises(BDError, match="unknown BD interpolation 'linear'"):
        bd_rate(ANCHOR, ANCHOR, "linear")
    assert issubclass(BDError, ValueError)


def test_bd_rate_refuses_curves_that_do_not_overlap():
    with pytest.raises(BDError, match="do not overlap in quality; BD-rate is undefined"):
        bd_rate(ANCHOR, [(rate, q + 20) for rate, q in ANCHOR])
    with pytest.raises(BDError, match="do not overlap in rate; BD-PSNR is undefined"):
        bd_rate(ANCHOR, [(rate * 10, q) for rate, q in ANCHOR])


def test_read_rd_csv(tmp_path):
    p = tmp_path / "rd.csv"
    p.write_text("rate,psnr\n100,30.5\n180.25,33\n")
    assert read_rd_csv(p) == [(100.0, 30.5), (180.25, 33.0)]
    p.write_text("qp,rate,psnr\n37,100,30\n32,180,33\n")  # other columns are ignored
    assert read_rd_csv(p) == [(100.0, 30.0), (180.0, 33.0)]
    p.write_text("rate,psnr\n")
    assert read_rd_csv(p) == []
    with pytest.raises(CodecnnError, match="no such file"):
        read_rd_csv(tmp_path / "missing.csv")
    for bad in ("kbps,y\n1,2\n", "rate,psnr\n100,high\n", "rate,psnr\n100\n"):
        p.write_text(bad)
        with pytest.raises(CodecnnError, match="expected a CSV with the header 'rate,psnr' and numbers below it"):
            read_rd_csv(p)


# ------------------------------------------------------------------------------------- intra-mode ranking


def _costs(table: dict[int, float], default: float) -> np.ndarray:
    c = np.full(35, default)
    for mode, v in table.items():
        c[mode] = v
    return c


def _scores(order: list[int]) -> np.ndarray:
    """Scores that rank ``order`` first (in that order), then the other modes by index."""
    s = np.zeros(35)
    for i, mode in enumerate(order):
        s[mode] = 100 - i
    return s


def test_mpm_derivation():
    """H.265 8.4.2, every branch."""
    assert mpm_list(0, 0) == (0, 1, 26) and mpm_list(1, 1) == (0, 1, 26)  # equal and non-angular
    assert mpm_list(10, 10) == (10, 9, 11) and mpm_list(2, 2) == (2, 33, 3) and mpm_list(34, 34) == (34, 33, 3)
    assert mpm_list(33, 33) == (33, 32, 2)
    assert mpm_list(10, 26) == (10, 26, 0)  # neither planar: planar third
    assert mpm_list(0, 26) == (0, 26, 1) and mpm_list(10, 0) == (10, 0, 1)  # a planar, no DC: DC third
    assert mpm_list(0, 1) == (0, 1, 26) and mpm_list(1, 0) == (1, 0, 26)  # planar and DC: vertical third
    assert mpm_list(26, 1) == (26, 1, 0)


def test_candidate_metrics_hand_computed():
    costs = np.stack(
        [
            _costs({5: 100, 0: 300}, 400),  # best 5, candidates {0, 5}: hit, +0
            _costs({10: 200, 0: 250, 1: 300}, 400),  # best 10, candidates {0, 1}: miss, 250 vs 200: +25 %
            _costs({26: 0.5, 1: 2.5}, 9),  # best 26 of cost 0.5 < 1: the increase is over 1, (2.5 - 0.5) / 1
        ]
    )
    best = np.array([5, 10, 26])
    m = candidate_metrics([[0, 5], [0, 1], [1]], costs, best)
    assert m["recall"] == pytest.approx(1 / 3, abs=1e-12)
    assert m["cost_increase"] == pytest.approx((0 + 0.25 + 2.0) / 3, abs=1e-12)
    assert m["modes"] == pytest.approx(5 / 3, abs=1e-12)


def test_ranking_metrics_hand_computed():
    costs = np.stack(
        [
            _costs({7: 150, 3: 120, 2: 100}, 400),  # best 2, ranked third
            _costs({30: 50, 0: 60, 1: 75, 26: 55, 10: 80}, 100),  # best 30, ranked ninth
        ]
    )
    best = np.array([2, 30])
    scores = np.stack([_scores([7, 3, 2]), _scores([0, 1, 26, 10, 2, 3, 4, 5, 30])])
    r = ranking_metrics(scores, costs, best)
    want = {
        "top1": 0.0,
        "top3": 0.5,
        "top8": 0.5,
        "cost_increase_top1": (0.5 + 0.2) / 2,  # 150 vs 100, 60 vs 50
        "cost_increase_top3": (0 + 0.1) / 2,  # found; 55 vs 50
        "cost_increase_top8": (0 + 0.1) / 2,
    }
    assert r == pytest.approx(want, abs=1e-12) and set(r) == set(want)


def test_ranking_ties_go_to_the_lower_mode():
    costs = _costs({1: 10, 0: 20}, 30)[None]
    r = ranking_metrics(np.zeros((1, 35)), costs, np.array([1]))  # all scores equal: planar, DC, 2, ...
    assert (r["top1"], r["top3"], r["cost_increase_top1"]) == (0.0, 1.0, 1.0)


def test_neighbour_mpms_hand_computed():
    """8x8 blocks of two pictures: left and above neighbours of the same picture, DC where missing or
    where the above block lies in the CTU row above."""
    n = 8
    pos = np.array([[0, 0], [0, 8], [8, 0], [8, 8], [56, 8], [64, 0], [64, 8], [8, 8]])
    best = np.array([10, 26, 18, 2, 5, 5, 7, 3])
    key = np.array([0, 0, 0, 0, 0, 0, 0, 1])
    got = neighbour_mpms(pos, best, key, n).tolist()
    assert got == [
        [0, 1, 26],  # (0, 0): no neighbour: DC, DC
        [10, 1, 0],  # (0, 8): left 10, nothing above
        [1, 10, 0],  # (8, 0): nothing left, above 10
        [18, 26, 0],  # (8, 8): left 18, above 26
        [0, 1, 26],  # (56, 8): neither (56, 0) nor (48, 8) is in the table: DC, DC
        [0, 1, 26],  # (64, 0): nothing left; above (56, 0) absent anyway
        [5, 1, 0],  # (64, 8): left 5; above (56, 8) lies in the CTU row above: DC, not 5
        [0, 1, 26],  # (8, 8) of picture 1: picture 0's neighbours do not count
    ]
    # with 128-sample CTUs (64, 8) and (56, 8) share a CTU row: above is 5 as well as left
    assert neighbour_mpms(pos, best, key, n, ctu=128)[6].tolist() == list(mpm_list(5, 5)) == [5, 4, 6]


def _blocks(pos, best, costs, hadamard):
    """The label arrays of blocks of one size in one picture, as IntraModeDataset.arrays gives them."""
    return {
        "pos": np.array(pos),
        "best": np.array(best),
        "costs": np.stack(costs),
        "hadamard": np.stack(hadamard),
        "key": np.zeros(len(best), np.int64),
    }


@pytest.fixture
def two_sizes():
    """Two 4x4 blocks and one 16x16 block with known costs, Hadamard costs and network scores."""
    had_a = _costs({m: 10 + m for m in range(11, 19)} | {20: 30}, 100)  # lowest 8: 11..18; best (20) ninth
    had_b = _costs({m: 5 for m in range(8)}, 100)  # lowest 8 (ties in mode order): 0..7
    had_c = _costs({10: 1, 2: 2, 34: 3, 26: 4}, 50)  # lowest 3: 10, 2, 34; best (26) fourth
    data = {
        4: _blocks(
            [[0, 0], [0, 4]],
            [20, 1],
            [_costs({20: 100, 15: 150}, 200), _costs({1: 80, 0: 90}, 120)],
            [had_a, had_b],
        ),
        16: _blocks([[0, 0]], [26], [_costs({26: 1000, 10: 1100}, 2000)], [had_c]),
    }
    scores = {4: np.stack([_scores([20]), _scores([0, 1])]), 16: _scores([10, 26])[None]}
    return scores, data


def test_evaluate_rankings_hand_computed(two_sizes):
    r = evaluate_rankings(*two_sizes)
    assert list(r["per_size"]) == ["4", "16"]
    s4, s16 = r["per_size"]["4"], r["per_size"]["16"]
    assert s4["blocks"] == 2 and s16["blocks"] == 1
    # the network: block A first, block B second (DC 80, planar 90 first), block C second (mode 10 at 1100)
    assert s4["network"] == pytest.approx(
        {
            "top1": 0.5,
            "top3": 1.0,
            "top8": 1.0,
            "cost_increase_top1": (0 + 10 / 80) / 2,
            "cost_increase_top3": 0.0,
            "cost_increase_top8": 0.0,
        },
        abs=1e-12,
    )
    assert s16["network"] == pytest.approx(
        {
            "top1": 0.0,
            "top3": 1.0,
            "top8": 1.0,
            "cost_increase_top1": 0.1,
            "cost_increase_top3": 0.0,
            "cost_increase_top8": 0.0,
        },
        abs=1e-12,
    )
    # HM RMD, 8 modes at 4x4: A misses (best of 11..18 is mode 15, +50 %), B hits
    assert s4["hm_rmd"] == pytest.approx({"recall": 0.5, "cost_increase": 0.25, "modes": 8}, abs=1e-12)
    # HM RMD, 3 modes at 16x16: C misses (its best is fourth; mode 10 at +10 %)
    assert s16["hm_rmd"] == pytest.approx({"recall": 0.0, "cost_increase": 0.1, "modes": 3}, abs=1e-12)
    # planar+DC+MPM: A has no neighbour: {0, 1, 26}, a miss at +100 %; B's left is A (20): {0, 1, 20}, DC found
    assert s4["planar_dc_mpm"] == pytest.approx({"recall": 0.5, "cost_increase": 0.5, "modes": 3}, abs=1e-12)
    # C: {0, 1, 26} (the 4x4 blocks are not its neighbours), 26 found
    assert s16["planar_dc_mpm"] == pytest.approx({"recall": 1.0, "cost_increase": 0.0, "modes": 3}, abs=1e-12)
    # overall: pooled over the three blocks (weights 2 and 1)
    o = r["overall"]
    assert o["network"] == pytest.approx(
        {
            "top1": 1 / 3,
            "top3": 1.0,
            "top8": 1.0,
            "cost_increase_top1": (2 * 0.0625 + 0.1) / 3,
            "cost_increase_top3": 0.0,
            "cost_increase_top8": 0.0,
        },
        abs=1e-12,
    )
    assert o["hm_rmd"] == pytest.approx({"recall": 1 / 3, "cost_increase": 0.2, "modes": 19 / 3}, abs=1e-12)
    assert o["planar_dc_mpm"] == pytest.approx({"recall": 2 / 3, "cost_increase": 1 / 3, "modes": 3}, abs=1e-12)
    rows = rows_with_total(r)
    assert [n for n, _ in rows] == ["4", "16", "all"] and rows[-1][1]["blocks"] == 3


def test_mode_table_lines_hand_computed(two_sizes):
    lines = mode_table_lines(evaluate_rankings(*two_sizes))
    assert [ln.split() for ln in lines[1:]] == [
        ["4", "2", "0.500", "1.000", "1.000", "0.0000", "|", "0.500", "0.2500", "|", "0.500", "0.5000"],
        ["16", "1", "0.000", "1.000", "1.000", "0.0000", "|", "0.000", "0.1000", "|", "1.000", "0.0000"],
        ["all", "3", "0.333", "1.000", "1.000", "0.0000", "|", "0.333", "0.2000", "|", "0.667", "0.3333"],
    ]


def test_pruned_rmd_by_hand():
    from codecnn.eval.intra import pruned_rmd, pruned_rmd_metrics

    h = np.arange(100, 135, dtype=np.int64)  # Hadamard SATD rises with the mode number...
    h[[20, 21, 22]] = [1, 2, 3]  # ...except three modes
    costs = np.full(35, 10.0)
    costs[22] = 5.0  # the label's best mode
    scores = np.zeros(35)
    scores[[5, 22, 7]] = [3.0, 2.0, 1.0]  # the network ranks 5, then 22, then 7
    mpm = np.array([[0, 1, 26]])
    d = {"hadamard": h[None], "costs": costs[None], "best": np.array([22])}
    full, evals = pruned_rmd(scores[None], h[None], mpm, 16, None)
    assert full == [[0, 1, 20, 21, 22, 26]] and evals.tolist() == [35]  # 3 kept at 16x16, MPMs added
    lists, evals = pruned_rmd(scores[None], h[None], mpm, 16, 1)
    assert lists == [[0, 1, 5, 26]] and evals.tolist() == [4]  # {5} + MPMs evaluated; 0, 1, 5 kept
    lists, evals = pruned_rmd(scores[None], h[None], mpm, 16, 2)
    assert lists == [[0, 1, 22, 26]] and evals.tolist() == [5]
    lists, _ = pruned_rmd(scores[None], h[None], mpm, 4, 2)  # 8 kept at 4x4: all five evaluated modes stay
    assert lists == [[0, 1, 5, 22, 26]]
    m = pruned_rmd_metrics(scores[None], d, mpm, 16)
    assert m["full"] == {"recall": 1.0, "cost_increase": 0.0, "modes": 6.0, "satd_evaluations": 35.0}
    assert m["1"]["recall"] == 0.0 and m["1"]["cost_increase"] == 1.0 and m["1"]["satd_evaluations"] == 4.0
    assert m["2"]["recall"] == 1.0 and m["2"]["recall_vs_full"] == 1.0 and m["2"]["satd_evaluations"] == 5.0
    assert m["8"]["satd_evaluations"] == 9.0  # top 8: 5, 22, 7, then ties 0..4; with MPMs 0, 1, 26: 9 modes


def test_standard_error_of_the_mean():
    # 1, 2, 3, 4: sample variance 5/3, so sqrt(5/3) / sqrt(4)
    assert standard_error([1.0, 2.0, 3.0, 4.0]) == pytest.approx((5 / 3) ** 0.5 / 2, rel=1e-12)
    assert standard_error(np.array([0.25, 0.25, 0.25])) == 0.0
    assert standard_error([0.5]) == 0.0 and standard_error([]) == 0.0  # no spread to measure
