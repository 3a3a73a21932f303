import numpy as np
import torch
from conftest import HM

from codecnn.eval.inference import filter_plane
from codecnn.models import RDN
from codecnn.yuv import RawYuvReader


def _trained_like(seed=0):
    torch.manual_seed(seed)
    m = RDN(num_blocks=1, num_layers=2, growth=4, num_features=8)
    torch.nn.init.normal_(m.last.weight, std=0.05)  # off the identity, as after training
    return m


def test_untrained_network_returns_the_plane():
    plane = RawYuvReader(HM / "carphone" / "lf" / "qp37" / "recon.yuv", 176, 144).read(0).y
    out = filter_plane(RDN(1, 1, 4, 4), plane, 8, ctu=64)
    assert out.dtype == np.uint8 and np.array_equal(out, plane)


def test_tiles_equal_one_piece_and_match_the_dataset_cut():
    plane = RawYuvReader(HM / "carphone" / "lf" / "qp37" / "recon.yuv", 176, 144).read(0).y
    m = _trained_like()
    a = filter_plane(m, plane, 8, ctu=64, batch=1)
    b = filter_plane(m, plane, 8, ctu=64, batch=1000)
    c = filter_plane(m, plane, 8, ctu=64, batch=4, channels_last=False)
    assert a.shape == plane.shape and np.array_equal(a, b) and np.array_equal(a, c)
    assert not np.array_equal(a, plane)
    # CTU (64, 128) of the output = the network on that CTU's 68x68 input from the dataset cut
    from codecnn.data.ctu import cut_ctus

    inputs, _, pos, valid = cut_ctus(plane, plane, 64, 2)
    k = int(((pos == [64, 128]).all(1)).nonzero()[0][0])
    with torch.no_grad():
        y = m(torch.from_numpy(inputs[k : k + 1].astype(np.float32) / 255)[:, None])
    want = torch.round(y.clamp(0, 1) * 255).numpy().astype(np.uint8)[0, 0, :64, :48]
    assert np.array_equal(a[64:128, 128:176], want)


def test_ten_bit_output_keeps_range_and_dtype():
    plane8 = RawYuvReader(HM / "carphone" / "lf" / "qp37" / "recon.yuv", 176, 144).read(0).y
    plane = (plane8.astype(np.uint16) << 2) | 3
    out = filter_plane(_trained_like(1), plane, 10, ctu=64)
    assert out.dtype == np.uint16 and out.max() <= 1023 and out.max() > 255
