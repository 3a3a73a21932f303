"""Real encodes (libx265 through PyAV) of real frames, and HM's real logs and bitstreams."""

import os

import numpy as np
import pytest
from conftest import HM

from codecnn.encoders import HMEncoder, X265Encoder, check_qp, make_encoder, read_hm_log
from codecnn.encoders.x265 import decode_hevc
from codecnn.errors import CodecnnError, EncoderError, InvalidQPError
from codecnn.eval.metrics import psnr, psnr_yuv
from codecnn.hevc.syntax import slice_qps
from codecnn.yuv import Frame, RawYuvReader

QPS = (22, 32, 42)


@pytest.fixture(scope="module")
def x265_runs(carphone_frames, tmp_path_factory):
    info, frames = carphone_frames
    enc = X265Encoder(preset="ultrafast")
    return {qp: enc.encode(frames, info, qp, tmp_path_factory.mktemp(f"qp{qp}")) for qp in QPS}


def _decode(path, bit_depth):
    return list(decode_hevc(path, bit_depth))


def test_x265_recon_is_the_decoded_bitstream(x265_runs):
    for res in x265_runs.values():
        fresh = _decode(res.bitstream, 8)
        recon = res.open_recon()
        assert len(fresh) == recon.info.num_frames == 4
        for i, f in enumerate(fresh):
            for a, b in zip(f.planes, recon.read(i).planes, strict=True):
                np.testing.assert_array_equal(a, b)


def test_x265_constant_qp_all_intra(x265_runs):
    for qp, res in x265_runs.items():
        assert res.coded_qp == [qp] * 4
        slices = slice_qps(res.bitstream.read_bytes())
        assert [s.qp for s in slices] == [qp] * 4  # read back from the slice headers
        assert all(s.slice_type == 2 and 16 <= s.nal_type <= 21 and not s.cu_qp_delta_enabled for s in slices)
        assert sum(res.bits) == 8 * res.bitstream.stat().st_size


def test_x265_rate_and_psnr_fall_with_qp(x265_runs, carphone_frames):
    _, frames = carphone_frames
    rates, quality = [], []
    for qp in QPS:
        res = x265_runs[qp]
        assert all(b > 0 for b in res.bits)
        rates.append(sum(res.bits))
        recon = res.open_recon()
        ours = [psnr_yuv(frames[i], recon.read(i)) for i in range(4)]
        # our PSNR of the decoded recon equals what x265 itself reports (CSV log, 3 decimals)
        np.testing.assert_allclose(np.array(ours), np.array(res.encoder_psnr), atol=6e-4)
        quality.append(np.mean([p[0] for p in ours]))
    assert rates[0] > rates[1] > rates[2]
    assert quality[0] > quality[1] > quality[2]
    assert 30 < quality[1] < 45


def test_x265_ten_bit(carphone_frames, tmp_path):
    info, frames = carphone_frames
    import dataclasses

    f10 = [Frame(*[(p.astype(np.uint16) << 2) for p in f.planes], bit_depth=10) for f in frames[:2]]
    res = X265Encoder(preset="ultrafast").encode(f10, dataclasses.replace(info, bit_depth=10), 32, tmp_path)
    assert res.coded_qp == [32, 32]
    assert slice_qps(res.bitstream.read_bytes())[0].bit_depth == 10
    rec = res.open_recon().read(0)
    assert rec.y.dtype == np.uint16 and rec.y.max() > 255
    fresh = _decode(res.bitstream, 10)
    np.testing.assert_array_equal(fresh[0].y, rec.y)
    # x265 (like HM) reports 10-bit PSNR with the peak 255 << 2 = 1020, not 1023
    assert psnr(f10[0].y, rec.y, 10, convention="hm") == pytest.approx(res.encoder_psnr[0][0], abs=6e-4)
    assert psnr(f10[0].y, rec.y, 10) - psnr(f10[0].y, rec.y, 10, convention="hm") == pytest.approx(
        20 * np.log10(1023 / 1020)
    )


def test_x265_loop_filter_switches(carphone_frames, tmp_path):
    info, frames = carphone_frames
    on = X265Encoder(preset="ultrafast").encode(frames[:1], info, 37, tmp_path / "on")
    off = X265Encoder(preset="ultrafast", deblock=False, sao=False).encode(frames[:1], info, 37, tmp_path / "off")
    assert not np.array_equal(on.open_recon().read(0).y, off.open_recon().read(0).y)
    assert off.settings["deblock"] is False and off.settings["version"]


def test_bad_qp_and_encoder():
    for bad in (-1, 52, 100):
        with pytest.raises(InvalidQPError, match="outside 0..51"):
            check_qp(bad)
    with pytest.raises(EncoderError, match="unknown encoder"):
        make_encoder("vvenc")
    with pytest.raises(EncoderError, match="unknown x265 preset"):
        X265Encoder(preset="warp")


# ------------------------------------------------------------------------------------------------- HM

# The SUMMARY lines of the fixture logs (HM's own figures), see tests/data/README.md
HM_SUMMARY = {
    ("carphone", "lf", 32): (8, 343.2900, 35.7720, 39.7871, 40.0147, 36.7601, 11443),
    ("carphone", "nolf", 22): (8, 853.4100, 43.0654, 44.5691, 45.3073, 43.5973, 28447),
    ("bikes", "lf", 37): (4, 126.1000, 41.1473, 48.6972, 48.7708, 42.5399, 2522),
    ("bikes", "nolf", 27): (4, 339.9000, 46.1204, 51.8434, 51.5304, 47.3156, 6798),
}


@pytest.mark.parametrize("key", sorted(HM_SUMMARY))
def test_hm_log_parser_summary(key):
    seq, variant, qp = key
    log = read_hm_log(HM / seq / variant / f"qp{qp}" / "encoder.log")
    frames, kbps, y, u, v, yuv, nbytes = HM_SUMMARY[key]
    s = log.summary
    assert (s.frames, s.kbps, s.psnr_y, s.psnr_u, s.psnr_v, s.psnr_yuv) == (frames, kbps, y, u, v, yuv)
    assert log.version == "16.20" and log.bytes_written == nbytes
    assert len(log.pictures) == frames and [p.poc for p in log.pictures] == list(range(frames))
    assert all(p.qp == qp and p.slice_type == "I" for p in log.pictures)
    assert sum(log.bits) == 8 * nbytes  # per-picture bits add up to the file HM wrote
    assert sum(log.bits) * log.frame_rate / frames / 1000 == pytest.approx(kbps, abs=5e-5)
    # the summary PSNRs are the linear averages of the per-picture ones (to the log's 4 decimals)
    assert np.mean([p.psnr_y for p in log.pictures]) == pytest.approx(y, abs=1e-4)


def test_hm_log_parser_pictures_and_stream():
    """Per-picture figures equal the log lines; the bitstream's slice QPs equal the log's QPs."""
    d = HM / "carphone" / "lf" / "qp32"
    log = read_hm_log(d / "encoder.log")
    p0, p7 = log.pictures[0], log.pictures[7]
    assert (p0.bits, p0.psnr_y, p0.psnr_u, p0.psnr_v) == (12144, 35.3890, 39.6134, 39.7690)
    assert (p7.bits, p7.psnr_y, p7.psnr_u, p7.psnr_v) == (11064, 36.0236, 39.6841, 40.3940)
    assert [s.qp for s in slice_qps((d / "stream.bin").read_bytes())] == [p.qp for p in log.pictures]
    # our PSNR of HM's recon against HM's source equals HM's per-picture figure
    orig, recon = RawYuvReader(HM / "carphone" / "orig.yuv", 176, 144), RawYuvReader(d / "recon.yuv", 176, 144)
    for p in log.pictures:
        got = psnr_yuv(orig.read(p.poc), recon.read(p.poc))
        np.testing.assert_allclose(got, (p.psnr_y, p.psnr_u, p.psnr_v), atol=5e-5)


def test_hm_log_parser_rejects_other_text(tmp_path):
    p = tmp_path / "x.log"
    p.write_text("x265 [info]: HEVC encoder version 4.2\n")
    with pytest.raises(CodecnnError, match="not an HM encoder log"):
        read_hm_log(p)


def test_hm_missing_binary(monkeypatch, tmp_path):
    monkeypatch.delenv("CODECNN_HM_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EncoderError, match="--hm-bin"):
        HMEncoder()
    with pytest.raises(EncoderError, match="not an executable"):
        HMEncoder(binary=tmp_path / "TAppEncoderStatic")


@pytest.mark.skipif(
    not os.environ.get("CODECNN_HM_BIN") or not os.environ.get("CODECNN_HM_CFG"),
    reason="needs a real HM: set CODECNN_HM_BIN and CODECNN_HM_CFG (encoder_intra_main.cfg)",
)
def test_hm_encode_real(carphone_frames, tmp_path):
    info, frames = carphone_frames
    res = HMEncoder().encode(frames[:2], info, 37, tmp_path)
    assert res.coded_qp == [37, 37]
    assert [s.qp for s in slice_qps(res.bitstream.read_bytes())] == [37, 37]
    rec = res.open_recon()
    for i in range(2):
        assert psnr(frames[i].y, rec.read(i).y) == pytest.approx(res.encoder_psnr[i][0], abs=5e-5)
