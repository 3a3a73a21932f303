"""HEVC intra prediction and costs, bit-exact against HM 16.20's own outputs."""

import numpy as np
import pytest
from conftest import DATA, HM

from codecnn.errors import CodecnnError
from codecnn.hevc.intra import (
    hadamard_satd,
    hevc_transform_matrix,
    intra_predictions,
    predict_all,
    smooth,
    substitute,
    to_linear,
    transform_costs,
    uses_filtered,
)
from codecnn.hevc.intra_labels import label_blocks
from codecnn.yuv import RawYuvReader

SIZES = (4, 8, 16, 32)


def _fixture(n):
    """HM's arrays for block size n, read once (an NpzFile would decompress a whole array on every index)."""
    with np.load(DATA / "hm_intra" / f"hm_intra_n{n}.npz") as f:
        return dict(f)


@pytest.mark.parametrize("n", SIZES)
def test_predictions_bit_exact_with_hm(n):
    d = _fixture(n)
    pred = predict_all(d["top"], d["left"], d["corner"])
    assert pred.shape == d["pred"].shape == (143, 35, n, n)
    np.testing.assert_array_equal(pred, d["pred"])
    assert set(d["pattern"].tolist()) == set(range(6))  # every availability pattern is covered


@pytest.mark.parametrize("n", SIZES)
def test_references_filter_decisions_and_satd_bit_exact(n):
    d = _fixture(n)
    lin = to_linear(d["top"].astype(np.int64), d["left"].astype(np.int64), d["corner"].astype(np.int64))
    sub = substitute(lin, lin >= 0, 8)
    np.testing.assert_array_equal(sub, to_linear(d["sub_top"], d["sub_left"], d["sub_corner"]))
    if n > 4:
        np.testing.assert_array_equal(smooth(sub, n, 8), to_linear(d["filt_top"], d["filt_left"], d["filt_corner"]))
    assert [uses_filtered(m, n) for m in range(35)] == d["use_filtered"].tolist()
    for c in range(0, 143, 7):
        for m in range(35):
            assert hadamard_satd(d["orig"][c], d["pred"][c, m]) == d["satd"][c, m]
    diff = d["orig"][:, None].astype(np.int64) - d["pred"]
    np.testing.assert_array_equal(transform_costs(diff, "hadamard"), d["satd"])


def test_single_block_interface_and_strong_smoothing_switch():
    d = _fixture(32)
    c = 5
    p = intra_predictions(d["top"][c], d["left"][c], int(d["corner"][c]))
    assert p.shape == (35, 32, 32)
    np.testing.assert_array_equal(p, d["pred"][c])
    # a flat ramp triggers strong smoothing; turning it off changes the smoothed modes only
    k = int(np.nonzero(d["kind"] == 1)[0][0])
    on = intra_predictions(d["top"][k], d["left"][k], int(d["corner"][k]))
    off = intra_predictions(d["top"][k], d["left"][k], int(d["corner"][k]), strong_smoothing=False)
    np.testing.assert_array_equal(on, d["pred"][k])
    assert np.array_equal(on[1], off[1]) and np.array_equal(on[26], off[26])


def test_ten_bit_and_no_neighbours():
    n = 8
    p = intra_predictions(-np.ones(2 * n, int), -np.ones(2 * n, int), -1, bit_depth=10)
    assert (p == 512).all()  # 1 << (bitDepth - 1) everywhere
    top = np.full(2 * n, 1000)
    left = np.full(2 * n, 1000)
    assert (intra_predictions(top, left, 1000, bit_depth=10) == 1000).all()


def test_dct_satd_of_pure_dc_residual():
    for n in SIZES:
        diff = np.full((1, n, n), 7.0)
        assert transform_costs(diff, "dct")[0] == pytest.approx(n * 7)
        assert transform_costs(diff, "hevc")[0] == pytest.approx(n * 7, rel=1e-12)  # 64 * 64 * N scaling
    # the lab notes' example: predicting 100 or 450 for an original of 500 leaves a pure DC residual
    orig = np.full((8, 8), 500)
    for guess in (100, 450):
        c = transform_costs((orig - guess)[None], "dct")[0]
        assert c == pytest.approx(8 * (500 - guess))


def test_hevc_matrix_rows():
    assert hevc_transform_matrix(4).tolist() == [
        [64, 64, 64, 64],
        [83, 36, -36, -83],
        [64, -64, -64, 64],
        [36, -83, 83, -36],
    ]
    assert hevc_transform_matrix(8)[1].tolist() == [89, 75, 50, 18, -18, -50, -75, -89]
    t = hevc_transform_matrix(32)
    assert t[1, :4].tolist() == [90, 90, 88, 85] and t.shape == (32, 32)


def _slow_labels(orig, ref, n):
    """The obvious way: block by block, neighbours read one sample at a time, scalar availability.
    Returns the (B, 35) DCT costs and the (B, 4N+1) raw linear references (-1 unavailable)."""
    from codecnn.hevc.intra import dct_matrix

    h, w = orig.shape
    c = dct_matrix(n)
    ctus_w = -(-w // 64)

    def order(y, x):
        uy, ux = (y % 64) // 4, (x % 64) // 4
        z = sum((((ux >> b) & 1) << (2 * b)) | (((uy >> b) & 1) << (2 * b + 1)) for b in range(4))
        return (y // 64) * ctus_w + x // 64, z

    out, refs = [], []
    for by in range(0, h - n + 1, n):
        for bx in range(0, w - n + 1, n):

            def sample(y, x, by=by, bx=bx):
                if y < 0 or x < 0 or y >= h or x >= w or order(y, x) >= order(by, bx):
                    return -1
                return int(ref[y, x])

            top = [sample(by - 1, bx + i) for i in range(2 * n)]
            left = [sample(by + i, bx - 1) for i in range(2 * n)]
            corner = sample(by - 1, bx - 1)
            pred = intra_predictions(top, left, corner)
            block = orig[by : by + n, bx : bx + n].astype(float)
            costs = [np.abs(c @ (block - pred[m]) @ c.T).sum() for m in range(35)]
            out.append(costs)
            refs.append(left[::-1] + [corner] + top)
    return np.array(out), np.array(refs)


@pytest.mark.parametrize("n", SIZES)
def test_frame_labels_equal_a_slow_reference(n):
    """A real frame (carphone through HM, closed loop: references from HM's reconstruction)."""
    orig = RawYuvReader(HM / "carphone" / "orig.yuv", 176, 144).read(3).y[:96, :128]
    recon = RawYuvReader(HM / "carphone" / "lf" / "qp32" / "recon.yuv", 176, 144).read(3).y[:96, :128]
    lab = label_blocks(orig, recon, n)
    slow, refs = _slow_labels(orig, recon, n)
    np.testing.assert_allclose(lab.costs, slow, rtol=1e-6, atol=1e-3)
    assert lab.best.tolist() == np.argmin(np.round(slow, 6), 1).tolist()
    assert (lab.rank[np.arange(len(lab.best)), lab.best] == 0).all()
    assert sorted(lab.rank[0].tolist()) == list(range(35))
    assert (lab.ref[0] == -1).all()  # the picture's first block has no neighbour
    assert (lab.ref == refs).all()


@pytest.mark.parametrize("n", SIZES)
def test_fused_kernel_equals_the_vectorised_formulas(n):
    """The labeller's compiled kernel (transposed horizontal modes, butterfly DCT) against predict_all +
    transform_costs on a real 10-bit-scaled frame: Hadamard, HEVC and DCT costs (its references are
    checked against the slow reference above)."""
    orig = RawYuvReader(HM / "carphone" / "orig.yuv", 176, 144).read(1).y[:64, :96].astype(np.int32) * 4 + 1
    recon = RawYuvReader(HM / "carphone" / "lf" / "qp32" / "recon.yuv", 176, 144).read(1).y[:64, :96]
    recon = recon.astype(np.int32) * 4
    lab = label_blocks(orig, recon, n, bit_depth=10, cost="hevc")
    pred = predict_all(lab.top, lab.left, lab.corner, bit_depth=10)  # -1 marks the unavailable samples
    blocks = np.stack([orig[y : y + n, x : x + n] for y, x in lab.pos])
    diff = blocks[:, None] - pred
    assert (lab.hadamard == transform_costs(diff, "hadamard")).all()
    np.testing.assert_allclose(lab.costs, np.round(transform_costs(diff, "hevc"), 6), rtol=1e-6)
    dct = label_blocks(orig, recon, n, bit_depth=10, with_hadamard=False)
    np.testing.assert_allclose(dct.costs, transform_costs(diff, "dct"), rtol=1e-6, atol=1e-3)
    assert (dct.hadamard == 0).all()


def test_bad_input():
    with pytest.raises(CodecnnError, match="block size 64"):
        intra_predictions(np.zeros(128), np.zeros(128), 0)
    with pytest.raises(CodecnnError, match="block size 2"):
        intra_predictions(np.zeros(4), np.zeros(4), 0)
    with pytest.raises(CodecnnError, match="bit depth 12"):
        intra_predictions(np.zeros(8), np.zeros(8), 0, bit_depth=12)
    from codecnn.hevc.intra import check_mode

    with pytest.raises(CodecnnError, match="mode 35"):
        check_mode(35)
    with pytest.raises(CodecnnError, match="equal N x N"):
        hadamard_satd(np.zeros((4, 4)), np.zeros((8, 8)))
