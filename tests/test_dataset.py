"""CTU datasets built from real frames through real x265 encodes."""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from codecnn.cli import cli
from codecnn.data.ctu import cut_ctus
from codecnn.data.restoration import valid_mask
from codecnn.data.schema import open_dataset_info
from codecnn.encoders.x265 import decode_hevc
from codecnn.hevc.syntax import slice_qps
from codecnn.yuv import RawYuvReader

FAST = ["--preset", "ultrafast", "--qp", "32", "--qp", "37"]


@pytest.fixture(scope="module")
def built(carphone_yuv, tmp_path_factory):
    """carphone (176x144, real frames 1, 3, 5) at QP 32 and 37, CTU 64 so it has partial edge CTUs."""
    out = tmp_path_factory.mktemp("ds") / "c.h5"
    r = CliRunner().invoke(
        cli,
        [
            "make-dataset",
            "--yuv",
            str(carphone_yuv),
            *FAST,
            "--start",
            "1",
            "--frames",
            "3",
            "--frame-step",
            "2",
            "--ctu",
            "64",
            "--context",
            "4",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    return out


def test_shapes_dtypes_and_order(built):
    with h5py.File(built, "r") as f:
        n = f["input"].shape[0]
        assert f["input"].shape == (n, 72, 72) and f["target"].shape == (n, 64, 64)
        assert f["input"].dtype == np.uint8 and f["target"].dtype == np.uint8
        assert n == 2 * 3 * 9  # QPs x frames x (3 x 3 CTUs of 64 cover 176x144)
        assert f["qp"][()].tolist() == [32] * 27 + [37] * 27
        assert f["frame"][:9].tolist() == [1] * 9 and sorted(set(f["frame"][()].tolist())) == [1, 3, 5]
        assert f["pos"][:9].tolist() == [[y, x] for y in (0, 64, 128) for x in (0, 64, 128)]
        assert f["valid"][:9].tolist() == [[h, w] for h in (64, 64, 16) for w in (64, 64, 48)]
        assert set(f["split"][()].tolist()) == {0} and set(f["bit_depth"][()].tolist()) == {8}
    info = open_dataset_info(built)
    assert info.sequences[0]["name"] == "carphone_176x144_30" and info.sequences[0]["frames"] == [1, 3, 5]
    assert info.encoder["encoder"] == "x265" and info.encoder["version"]
    assert [u["qp"] for u in info.units] == [32, 37] and all(u["coded_qp"] == [u["qp"]] * 3 for u in info.units)


def test_targets_are_the_original_and_inputs_the_reconstruction(built, carphone_yuv):
    """Targets equal the source pixels, inputs the decode of the stored bitstream, at every position."""
    orig = RawYuvReader(carphone_yuv, 176, 144)
    with h5py.File(built, "r") as f:
        inputs, targets, pos, frame, qp = (f[k][()] for k in ("input", "target", "pos", "frame", "qp"))
        streams = {k: f["bitstreams"][k][()].tobytes() for k in f["bitstreams"]}
    assert set(streams) == {"carphone_176x144_30_qp32", "carphone_176x144_30_qp37"}
    for q in (32, 37):
        bs = streams[f"carphone_176x144_30_qp{q}"]
        assert [s.qp for s in slice_qps(bs)] == [q] * 3
        pics = list(decode_hevc(bs, 8))
        assert len(pics) == 3
        for j, fi in enumerate((1, 3, 5)):
            sel = (qp == q) & (frame == fi)
            want_in, want_t, want_pos, _ = cut_ctus(pics[j].y, orig.read(fi).y, 64, 4)
            np.testing.assert_array_equal(inputs[sel], want_in)
            np.testing.assert_array_equal(targets[sel], want_t)
            np.testing.assert_array_equal(pos[sel], want_pos)
            # and directly against the planes: centre of the input = recon, target = source
            y, x = 64, 128
            k = np.flatnonzero(sel)[5]
            np.testing.assert_array_equal(targets[k][:, :48], orig.read(fi).y[y : y + 64, x:])
            np.testing.assert_array_equal(inputs[k][4:68, 4:52], pics[j].y[y : y + 64, x:])
            np.testing.assert_array_equal(inputs[k][:4, 4:52], pics[j].y[y - 4 : y, x:])  # real context above
            assert (targets[k][:, 48:] == targets[k][:, 47:48]).all()  # edge replication beyond the picture


def test_valid_mask():
    m = valid_mask(np.array([[64, 48], [10, 64]]), 64)
    assert m.shape == (2, 64, 64) and m[0].sum() == 64 * 48 and m[1].sum() == 10 * 64
    assert m[0, :, 47].all() and not m[0, :, 48].any()


def test_info_command(built):
    r = CliRunner().invoke(cli, ["info", str(built)])
    assert r.exit_code == 0, r.output
    assert "samples: 54" in r.output and "(54, 72, 72) uint8" in r.output and "QP32" in r.output
    assert "carphone_176x144_30: 176x144 8-bit, 3 frames, train, 54 samples" in r.output


def test_split_by_sequence_from_list(tmp_path, carphone_yuv):
    """Splits by sequence; the test sequence panned by 4 columns a frame over 2 frames and downscaled by 2
    (86x72: one CTU), recorded so that evaluate --data reads its source again, panned and downscaled, at the
    size the bitstream has."""
    lst = tmp_path / "l.toml"
    lst.write_text(
        '[list]\nname = "l"\n[[sequence]]\nname = "a"\nfile = "carphone_176x144_30.yuv"\nsplit = "val"\n'
        '[[sequence]]\nname = "b"\nfile = "carphone_176x144_30.yuv"\nsplit = "test"\ndownscale = 2\n'
        "pan = [4, 0]\nframes = 2\n"
    )
    out = tmp_path / "l.h5"
    r = CliRunner().invoke(
        cli,
        [
            "make-dataset",
            "--list",
            str(lst),
            "--seq-dir",
            str(carphone_yuv.parent),
            "--frames",
            "1",
            "--preset",
            "ultrafast",
            "--qp",
            "37",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    with h5py.File(out, "r") as f:
        seq, split = f["seq"][()], f["split"][()]
    assert seq.tolist() == [0] * 4 + [1] and split.tolist() == [1] * 4 + [2]
    assert "is read by a (val), b (test): its content is in more than one split" in r.output, r.output
    r = CliRunner().invoke(cli, ["info", str(out)])
    made = "panned by 4,0 a frame and downscaled by 2 from 176x144"
    assert f"b: 86x72 ({made}) 8-bit, 1 frames, test" in r.output, r.output
    r = CliRunner().invoke(
        cli, ["evaluate", "--checkpoint", "zoo:rdn-inloop-lop", "--data", str(out), "--out", str(tmp_path / "ev")]
    )
    assert r.exit_code == 0, r.output
    (row,) = json.loads((tmp_path / "ev" / "results.json").read_text())["sequences"]
    assert row["name"] == "b" and (row["width"], row["height"], row["pan"]) == (86, 72, [4, 0])
    # the windows cut again are the ones x265 coded: its own PSNR agrees (within 0.11 dB on this 86x72 picture,
    # as on the 88x72 one without the pan; exactly for the pan alone at 172x144), a window one pixel off would not
    (point,) = row["qps"]
    assert abs(point["anchor"]["y"] - point["encoder_anchor"]["y"]) < 0.2, point


def _build_cmd(src, out, *extra):
    # preset slower: each (sequence, QP) unit takes long enough that the interrupt lands mid-build
    return [
        sys.executable,
        "-m",
        "codecnn",
        "make-dataset",
        "--yuv",
        str(src),
        "--preset",
        "slower",
        "--frames",
        "8",
        "--ctu",
        "64",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.slow
def test_resume_after_interruption_equals_uninterrupted(tmp_path, carphone_yuv):
    qps = [a for q in (22, 27, 32, 37, 42, 47) for a in ("--qp", str(q))]
    full = tmp_path / "full.h5"
    r = subprocess.run(_build_cmd(carphone_yuv, full, *qps), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    part = tmp_path / "part.h5"
    # a shell's background job inherits SIGINT as "ignored": give the build the default Ctrl-C behaviour
    proc = subprocess.Popen(
        _build_cmd(carphone_yuv, part, *qps),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    parts = tmp_path / "part.h5.parts"
    deadline = time.time() + 60
    while time.time() < deadline and not list(parts.glob("unit*.h5")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"--resume" in err and b"Traceback" not in err
    assert not part.exists()  # nothing under the final name
    done = len(list(parts.glob("unit*.h5")))
    assert 1 <= done < 6
    r = subprocess.run(_build_cmd(carphone_yuv, part, *qps, "--resume"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not parts.exists()
    with h5py.File(full, "r") as a, h5py.File(part, "r") as b:
        for k in ("input", "target", "qp", "frame", "pos", "valid", "seq", "split"):
            np.testing.assert_array_equal(a[k][()], b[k][()], err_msg=k)
        units = json.loads(b["meta/units"][()])
        assert [u["qp"] for u in units] == [22, 27, 32, 37, 42, 47]


def test_resume_refuses_other_options(tmp_path, carphone_yuv):
    parts = tmp_path / "o.h5.parts"
    parts.mkdir()
    (parts / "build.json").write_text("{}")
    r = CliRunner().invoke(
        cli,
        [
            "make-dataset",
            "--yuv",
            str(carphone_yuv),
            "--frames",
            "1",
            "--qp",
            "37",
            "--out",
            str(tmp_path / "o.h5"),
            "--resume",
        ],
    )
    assert r.exit_code == 2 and "without --resume" in r.output
    assert sorted(p.name for p in parts.iterdir()) == ["build.json"] and (parts / "build.json").read_text() == "{}"
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--yuv", "{d}/missing_176x144.yuv"], "no such file"),
        (["--yuv", "{d}/short_176x144.yuv"], "not a whole number of"),
        (["--yuv", "{d}/odd_175x144.yuv"], "odd width or height"),
        (["--yuv", "{d}/anon.yuv"], "--size"),
        (["--yuv", "{d}/x_176x144_10bit_422.yuv"], "4:2:2"),
        (["--yuv", "{d}/anon.yuv", "--size", "176x144", "--bit-depth", "10"], "not a whole number of"),
        (["--yuv", "{d}/carphone_176x144_30.yuv", "--start", "8"], "beyond the end"),
        (["--yuv", "{d}/carphone_176x144_30.yuv", "--qp", "60"], "0<=x<=51"),
        (["--yuv", "{d}/carphone_176x144_30.yuv", "--encoder", "hm"], "HM encoder not found"),
        (["--yuv", "{d}/carphone_176x144_30.yuv", "--size", "176by144"], "WIDTHxHEIGHT"),
        (["--list", "{d}/nothing.toml"], "no such sequence list"),
        ([], "no input"),
    ],
)
def test_bad_input_one_line_exit_2_no_output(tmp_path, carphone_yuv, monkeypatch, args, message):
    import shutil

    monkeypatch.delenv("CODECNN_HM_BIN", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    shutil.copy(carphone_yuv, tmp_path / "carphone_176x144_30.yuv")
    (tmp_path / "short_176x144.yuv").write_bytes(b"\0" * 40000)
    (tmp_path / "odd_175x144.yuv").write_bytes(b"\0" * (175 * 144 * 3))
    (tmp_path / "anon.yuv").write_bytes(b"\0" * 38016)
    (tmp_path / "x_176x144_10bit_422.yuv").write_bytes(b"\0" * 38016)
    out = tmp_path / "out.h5"
    argv = ["make-dataset", *[a.format(d=tmp_path) for a in args], "--out", str(out)]
    r = CliRunner().invoke(cli, argv)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if "out" in p.name) == []


def test_bad_input_from_the_shell_has_no_traceback(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "codecnn",
            "make-dataset",
            "--yuv",
            str(tmp_path / "nope.yuv"),
            "--size",
            "176x144",
            "--qp",
            "32",
            "--frames",
            "1",
            "--out",
            str(tmp_path / "o.h5"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no such file" in r.stderr
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert os.listdir(tmp_path) == []  # neither o.h5 nor its o.h5.parts build folder


def test_info_rejects_other_files(tmp_path):
    p = tmp_path / "x.h5"
    with h5py.File(p, "w") as f:
        f.attrs["kind"] = "something-else"
    r = CliRunner().invoke(cli, ["info", str(p)])
    assert r.exit_code == 2 and "not a codecnn" in r.output
    (tmp_path / "t.h5").write_text("hello")
    r = CliRunner().invoke(cli, ["info", str(tmp_path / "t.h5")])
    assert r.exit_code == 2 and "not an HDF5 file" in r.output


def test_parallel_jobs_give_the_same_samples(built, carphone_yuv, tmp_path):
    out = tmp_path / "j2.h5"
    r = CliRunner().invoke(
        cli,
        [
            "make-dataset",
            "--yuv",
            str(carphone_yuv),
            *FAST,
            "--start",
            "1",
            "--frames",
            "3",
            "--frame-step",
            "2",
            "--ctu",
            "64",
            "--context",
            "4",
            "--out",
            str(out),
            "--jobs",
            "2",
        ],
    )
    assert r.exit_code == 0, r.output
    with h5py.File(built, "r") as a, h5py.File(out, "r") as b:
        for k in ("input", "target", "qp", "frame", "pos"):
            np.testing.assert_array_equal(a[k][()], b[k][()], err_msg=k)


def test_ten_bit_y4m_dataset(tmp_path, carphone_frames):
    """A 10-bit Y4M source: uint16 samples end to end, inputs are the 10-bit decode of the stored stream."""
    from codecnn.yuv import Frame, open_video, write_video

    _, frames = carphone_frames
    f10 = [Frame(*[(p.astype(np.uint16) << 2) | 1 for p in f.planes], bit_depth=10) for f in frames[:2]]
    src = tmp_path / "cp10.y4m"
    write_video(src, f10, 10)
    out = tmp_path / "cp10.h5"
    r = CliRunner().invoke(
        cli, ["make-dataset", "--yuv", str(src), "--qp", "32", "--preset", "ultrafast", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    with h5py.File(out, "r") as f:
        assert f["input"].dtype == np.uint16 and f["target"].dtype == np.uint16
        assert set(f["bit_depth"][()].tolist()) == {10}
        inputs, targets = f["input"][()], f["target"][()]
        pics = list(decode_hevc(f["bitstreams/cp10_qp32"][()].tobytes(), 10))
    want_in, want_t, _, _ = cut_ctus(pics[1].y, open_video(src).read(1).y, 128, 2)
    np.testing.assert_array_equal(inputs[4:], want_in)  # 2x2 CTUs a frame: frame 1 is samples 4..7
    np.testing.assert_array_equal(targets[4:], want_t)
    assert targets.max() > 255


def test_version_and_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "codecnn", "--version"], capture_output=True, text=True)
    from codecnn import __version__

    assert r.returncode == 0 and r.stdout.strip() == f"codecnn, version {__version__}"
