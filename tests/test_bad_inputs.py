"""Every bad input refused: one line naming the problem and the fix, exit code 2, no traceback, nothing left
behind. One test per class of bad input (damaged datasets, checkpoints that contradict themselves, numbers
that are not numbers, frames that do not exist, output paths, binary text inputs, impossible option
combinations, outputs that are inputs, OS errors of outputs, too few RD points, names that contradict the
geometry options), plus property-based fuzzing of the readers and the option parsing."""

from __future__ import annotations

import json
import os
import shutil
import string

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import HM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codecnn.cli import cli
from codecnn.errors import CodecnnError
from codecnn.train.checkpoint import load_checkpoint, save_checkpoint


def run(*argv):
    """Invoke the CLI; return (exit code, output)."""
    r = CliRunner().invoke(cli, [str(a) for a in argv])
    return r.exit_code, r.output


def refused(argv, message, *, leaves=()):
    """The command exits 2 with one line on stderr holding ``message``, no traceback anywhere, and ``leaves``
    do not exist. (A command may have printed progress on stdout before the input was found bad.)"""
    r = CliRunner().invoke(cli, [str(a) for a in argv])
    out = r.output
    assert r.exit_code == 2, out
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error")]
    assert "Traceback" not in out and len(errors) == 1 and r.stderr.strip().endswith(errors[0]), out
    assert message in errors[0], out
    for p in leaves:
        assert not os.path.exists(p), f"{p} was left behind"
    return out


def damaged_copy(src, tmp_path, edit):
    p = tmp_path / "damaged.h5"
    shutil.copy(src, p)
    with h5py.File(p, "r+") as f:
        edit(f)
    return p


# -- 1. damaged or inconsistent datasets ----------------------------------------------------------------


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda f: f.__delitem__("valid"), "array valid is missing"),
        (lambda f: f.__delitem__("target"), "array target is missing"),
        (
            lambda f: (f["meta"].__delitem__("units"), f["meta"].create_dataset("units", data="{not json")),
            "meta/units is not valid JSON",
        ),
        (
            lambda f: (f["meta"].__delitem__("sequences"), f["meta"].create_dataset("sequences", data="[1, 2]")),
            "meta/sequences is not a JSON list of objects",
        ),
        (lambda f: f["qp"].resize((f["qp"].shape[0] - 1,)), "per-sample arrays differ in length"),
        (lambda f: f["split"].__setitem__(0, 7), "split holds codes other than 0, 1, 2"),
        (lambda f: f["seq"].__setitem__(0, 99), "seq points past the"),
    ],
)
def test_inconsistent_dataset_is_refused_by_every_reader(restoration_h5, checkpoint, tmp_path, edit, message):
    bad = damaged_copy(restoration_h5, tmp_path, edit)
    refused(["info", bad], message)
    refused(
        ["train", "rdn", "--data", bad, "--out", tmp_path / "run", "--steps", "1"], message, leaves=[tmp_path / "run"]
    )
    refused(
        ["evaluate", "--checkpoint", checkpoint, "--data", bad, "--out", tmp_path / "ev"],
        message,
        leaves=[tmp_path / "ev"],
    )


def _corrupt_chunk(path, name, index):
    """Overwrite the compressed bytes of one chunk in place (the file still opens)."""
    with h5py.File(path, "r") as f:
        offset = f[name].id.get_chunk_info_by_coord((index, 0, 0)).byte_offset
    with open(path, "r+b") as fh:
        fh.seek(offset + 2)
        fh.write(b"\xde\xad\xbe\xef" * 8)


def test_corrupt_chunk_named_by_training_and_by_verify(restoration_h5, tmp_path):
    bad = tmp_path / "bad.h5"
    shutil.copy(restoration_h5, bad)
    with h5py.File(bad, "r") as f:
        train_rows = np.flatnonzero(f["split"][()] == 0)
    _corrupt_chunk(bad, "input", int(train_rows[0]))
    out = refused(["info", bad, "--verify"], "problem(s)")
    code, full = run("info", bad, "--verify")
    assert f"damaged: input[{int(train_rows[0])}:" in full
    # training reads every train sample within its first steps (2 samples a step, workers 0 and 1)
    steps = str(len(train_rows))
    for workers in ("0", "1"):
        out = refused(
            [
                "train",
                "rdn",
                "--data",
                bad,
                "--out",
                tmp_path / f"r{workers}",
                "--steps",
                steps,
                "--batch",
                "2",
                "--patch",
                "16",
                "--blocks",
                "1",
                "--layers",
                "1",
                "--growth",
                "2",
                "--features",
                "4",
                "--workers",
                workers,
                "--val-every",
                "1000",
            ],
            f"cannot read sample {int(train_rows[0])} of array input",
        )
        assert str(bad) in out and "info --verify" in out


def test_bitstream_that_no_longer_decodes(restoration_h5, checkpoint, tmp_path):
    def edit(f):
        name = next(k for k in f["bitstreams"] if k.startswith("bikes"))
        data = f["bitstreams"][name][()]
        del f["bitstreams"][name]
        f["bitstreams"].create_dataset(name, data=np.full_like(data, 0x5A))

    bad = damaged_copy(restoration_h5, tmp_path, edit)
    code, out = run("info", bad, "--verify")
    assert code == 2 and "damaged: " in out and "bikes_qp" in out and "does not decode" in out, out
    refused(
        ["evaluate", "--checkpoint", checkpoint, "--data", bad, "--split", "val", "--out", tmp_path / "ev"],
        "does not decode",
        leaves=[tmp_path / "ev"],
    )


def test_verify_passes_on_a_whole_dataset(restoration_h5):
    code, out = run("info", restoration_h5, "--verify")
    assert code == 0 and "no problem found" in out and "bitstreams decoded" in out, out


# -- 2. a checkpoint whose config does not match its weights ----------------------------------------------


def test_checkpoint_config_contradicting_its_weights(checkpoint, restoration_h5, tmp_path):
    ck = load_checkpoint(checkpoint)
    ck["config"]["growth"] = 6
    edited = tmp_path / "edited.pt"
    save_checkpoint(edited, {k: v for k, v in ck.items() if k not in ("format", "version", "versions")})
    msg = "does not match its weights"
    refused(
        ["evaluate", "--checkpoint", edited, "--data", restoration_h5, "--split", "val", "--out", tmp_path / "e"],
        msg,
        leaves=[tmp_path / "e"],
    )
    out = refused(["export", edited, "--out", tmp_path / "m.cnnw"], msg, leaves=[tmp_path / "m.cnnw"])
    assert str(edited) in out and "growth" in out or "is (" in out


# -- 3. numbers that are not numbers, or not sensible ------------------------------------------------------


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["make-dataset", "--yuv", "{yuv}", "--fps", "0", "--out", "{tmp}/o.h5"],
            "'--fps': 0.0 is not in the range x>0",
        ),
        (["make-dataset", "--yuv", "{yuv}", "--fps", "nan", "--out", "{tmp}/o.h5"], "'nan' is not a finite number"),
        (["make-dataset", "--yuv", "{yuv}", "--fps", "inf", "--out", "{tmp}/o.h5"], "'inf' is not a finite number"),
        (
            ["make-dataset", "--yuv", "{yuv}", "--ctu", "0", "--out", "{tmp}/o.h5"],
            "'0' is not one of 16, 32, 64, 128, 256",
        ),
        (
            ["make-dataset", "--yuv", "{yuv}", "--context", "-1", "--out", "{tmp}/o.h5"],
            "'--context': -1 is not in the range x>=0",
        ),
        (["evaluate", "--checkpoint", "{ck}", "--data", "{h5}", "--ctu", "0", "--out", "{tmp}/e"], "'0' is not one of"),
        (
            ["evaluate", "--checkpoint", "{ck}", "--data", "{h5}", "--batch", "0", "--out", "{tmp}/e"],
            "'--batch': 0 is not in the range x>=1",
        ),
        (["model-info", "rdn", "--size", "0"], "'--size': 0 is not in the range 1<=x<=4096"),
        (["model-info", "rdn", "--growth", "-3"], "'--growth': -3 is not in the range 1<=x<=256"),
        (["bench-train", "--data", "{h5}", "--batch", "0"], "'--batch': 0 is not in the range x>=1"),
        (["bench-train", "--data", "{h5}", "--workers", "-1"], "'--workers': -1 is not in the range x>=0"),
        (["bench-train", "--data", "{h5}", "--steps", "0"], "'--steps': 0 is not in the range x>=1"),
        (
            ["train", "rdn", "--data", "{h5}", "--out", "{tmp}/r", "--epochs", "0"],
            "'--epochs': 0.0 is not in the range x>0",
        ),
        (
            ["train", "rdn", "--data", "{h5}", "--out", "{tmp}/r", "--steps", "2", "--epochs", "1"],
            "--steps and --epochs both",
        ),
        (
            ["train", "rdn", "--data", "{h5}", "--out", "{tmp}/r", "--steps", "2", "--time-limit", "-1"],
            "not in the range x>0",
        ),
        (
            ["train", "rdn", "--data", "{h5}", "--out", "{tmp}/r", "--steps", "2", "--lr", "nan"],
            "'nan' is not a finite number",
        ),
    ],
)
def test_numbers_refused_with_their_range(argv, message, restoration_h5, checkpoint, carphone_yuv, tmp_path):
    args = [a.format(yuv=carphone_yuv, tmp=tmp_path, ck=checkpoint, h5=restoration_h5) for a in argv]
    refused(args, message, leaves=[tmp_path / "o.h5", tmp_path / "e", tmp_path / "r"])


def test_hm_bridge_gain_refuses_a_bad_ctu(tmp_path):
    from hm_bridge.__main__ import main

    r = CliRunner().invoke(main, ["gain", "--orig", "o", "--recon", "r", "--log", "l", "--model", "m", "--ctu", "0"])
    assert r.exit_code == 2 and "'0' is not one of 16, 32, 64, 128, 256" in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


# -- 4. frames that do not exist ----------------------------------------------------------------------------


def test_frames_that_do_not_exist(carphone_yuv, tmp_path):
    out = tmp_path / "o.h5"
    refused(
        ["make-dataset", "--yuv", carphone_yuv, "--frames", "100", "--out", out],
        "ask for at most --frames 8",
        leaves=[out, f"{out}.parts"],
    )
    refused(
        ["make-dataset", "--yuv", carphone_yuv, "--start", "7", "--frames", "3", "--out", out],
        "ask for at most --frames 1",
        leaves=[out, f"{out}.parts"],
    )
    refused(["make-dataset", "--yuv", carphone_yuv, "--start", "8", "--out", out], "beyond the end", leaves=[out])
    # an 8-bit file read as 10-bit: the pairs of bytes make samples above 1023
    refused(
        ["make-dataset", "--yuv", carphone_yuv, "--bit-depth", "10", "--out", out],
        "above the 10-bit maximum 1023",
        leaves=[out, f"{out}.parts"],
    )


# -- 5. output paths ------------------------------------------------------------------------------------------


def test_output_paths_checked_before_any_work(carphone_yuv, checkpoint, restoration_h5, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    a_dir = tmp_path / "dir"
    a_dir.mkdir()
    encode = ["make-dataset", "--yuv", carphone_yuv, "--frames", "1", "--qp", "37", "--out"]
    refused([*encode, a_dir], "that is a folder")
    refused([*encode, tmp_path / "missing" / "o.h5"], "does not exist; create it first")
    refused([*encode, a_file / "o.h5"], "is a file, not a folder")
    ev = ["evaluate", "--checkpoint", checkpoint, "--data", restoration_h5, "--split", "val", "--out"]
    refused([*ev, a_file], "a file of that name exists")
    refused([*ev, a_file / "sub"], "is a file, so no folder can be made under it")
    refused(["train", "rdn", "--data", restoration_h5, "--out", a_file, "--steps", "1"], "a file of that name exists")
    refused(["export", checkpoint, "--out", a_dir], "that is a folder")
    refused(["report", tmp_path / "r.json", "--out", a_file], "a file of that name exists")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file.txt"]  # no .tmp, no run folder


def test_failed_build_keeps_parts_only_when_resume_can_use_them(tmp_path, carphone_yuv):
    tiny = tmp_path / "tiny_8x8.yuv"  # x265 refuses pictures under 16x16: the first encode fails
    tiny.write_bytes(bytes(8 * 8 * 3 // 2 * 2))
    out = tmp_path / "o.h5"
    refused(
        ["make-dataset", "--yuv", tiny, "--size", "8x8", "--qp", "37", "--out", out],
        "x265 cannot encode 8x8 pictures",
        leaves=[out, f"{out}.parts"],
    )
    # one sequence encodes, the next fails: its finished shard is kept for --resume, and said so
    listing = tmp_path / "l.toml"
    listing.write_text(
        f'[list]\nname = "l"\n[[sequence]]\nname = "c"\nfile = "{carphone_yuv}"\nsize = "176x144"\nframes = 1\n'
        f'[[sequence]]\nname = "t"\nfile = "{tiny}"\nsize = "8x8"\nframes = 1\n'
    )
    code, text = run(
        "make-dataset", "--list", listing, "--seq-dir", "/", "--qp", "37", "--preset", "ultrafast", "--out", out
    )
    assert code == 2 and "1 of 2 encodes finished and kept" in text and "--resume" in text, text
    assert (tmp_path / "o.h5.parts").is_dir() and not out.exists()


# -- 6. text inputs that are binary ----------------------------------------------------------------------------


def test_binary_text_inputs(tmp_path, carphone_yuv):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 4)
    refused(["make-dataset", "--list", blob, "--out", tmp_path / "o.h5"], "binary content, not a text file")
    refused(["bd-rate", blob, blob], "binary content, not a text file")
    refused(["report", blob, "--out", tmp_path / "r"], "binary content, not a text file", leaves=[tmp_path / "r"])
    for doc in ([1, 2], {"kind": "codecnn-evaluation"}, {"kind": "codecnn-evaluation", "sequences": [{"name": "x"}]}):
        p = tmp_path / "r.json"
        p.write_text(json.dumps(doc))
        refused(
            ["report", p, "--out", tmp_path / "r"], "not a codecnn evaluation results file", leaves=[tmp_path / "r"]
        )
    listing = tmp_path / "l.toml"
    listing.write_text(f'[list]\nname = "l"\n[[sequence]]\nname = "c"\nfile = "{carphone_yuv}"\nsize = "176by144"\n')
    refused(
        ["make-dataset", "--list", listing, "--seq-dir", "/", "--out", tmp_path / "o.h5"],
        f"{listing}: sequence c: size = '176by144'",
    )


# -- 7. option combinations that cannot work ----------------------------------------------------------------------


def test_impossible_combinations(checkpoint, restoration_h5, carphone_yuv, tmp_path):
    refused(
        ["export", checkpoint, "--out", tmp_path / "m.onnx", "--onnx", "--int16"],
        "give one of them",
        leaves=[tmp_path / "m.onnx"],
    )
    refused(
        ["evaluate", "--checkpoint", checkpoint, "--data", restoration_h5, "--frames", "2", "--out", tmp_path / "e"],
        "drop those options",
        leaves=[tmp_path / "e"],
    )
    lf = HM / "carphone" / "lf"
    hm = ["evaluate", "--checkpoint", checkpoint, "--orig", HM / "carphone" / "orig.yuv", "--size", "176x144"]
    pair = ["--recon", lf / "qp32" / "recon.yuv", "--hm-log", lf / "qp32" / "encoder.log"]
    refused([*hm, *pair, *pair, "--out", tmp_path / "e"], "QP 32 given twice", leaves=[tmp_path / "e"])
    refused([*hm, *pair, "--qp", "37", "--out", tmp_path / "e"], "holds no QP 37", leaves=[tmp_path / "e"])
    out = tmp_path / "o.h5"
    base = ["make-dataset", "--yuv", carphone_yuv, "--frames", "1", "--qp", "37", "--preset", "ultrafast", "--out", out]
    assert run(*base)[0] == 0
    before = out.read_bytes()
    code, text = run(*base, "--resume")
    assert code == 0 and out.read_bytes() == before, text  # same options: nothing to do
    refused([*base[:-2], "--qp", "32", "--out", out, "--resume"], "built from other inputs or options")
    assert out.read_bytes() == before


def test_evaluate_honours_qp_on_a_dataset(checkpoint, restoration_h5, tmp_path):
    code, out = run(
        "evaluate",
        "--checkpoint",
        checkpoint,
        "--data",
        restoration_h5,
        "--split",
        "val",
        "--qp",
        "37",
        "--out",
        tmp_path / "e",
    )
    assert code == 0, out
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    assert [q["qp"] for s in results["sequences"] for q in s["qps"]] == [37]
    refused(
        [
            "evaluate",
            "--checkpoint",
            checkpoint,
            "--data",
            restoration_h5,
            "--split",
            "val",
            "--qp",
            "22",
            "--out",
            tmp_path / "e2",
        ],
        "holds no QP 22 (it has 32, 37)",
        leaves=[tmp_path / "e2"],
    )


# -- fuzzing: the readers and the option parsing never end in a traceback -------------------------------------------


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.binary(max_size=2000))
def test_fuzz_y4m_reader(tmp_path, data):
    from codecnn.yuv import open_video

    p = tmp_path / "f.y4m"
    p.write_bytes(b"YUV4MPEG2 " + data)
    try:
        with open_video(p) as r:
            for _ in r.frames():
                pass
    except CodecnnError:
        pass


@FUZZ
@given(text=st.text(max_size=400))
def test_fuzz_sequence_list(tmp_path, text):
    from codecnn.sequences import load_sequence_list

    p = tmp_path / "l.toml"
    p.write_text(text)
    try:
        load_sequence_list(p, tmp_path)
    except CodecnnError:
        pass


@FUZZ
@given(
    rows=st.lists(st.tuples(st.text(string.printable, max_size=8), st.text(string.printable, max_size=8)), max_size=6)
)
def test_fuzz_bd_rate_csv(tmp_path, rows):
    a = tmp_path / "a.csv"
    a.write_text("rate,psnr\n" + "".join(f"{r},{q}\n" for r, q in rows))
    code, out = run("bd-rate", a, a)
    assert code in (0, 2) and "Traceback" not in out, out


@FUZZ
@given(text=st.text(max_size=30))
def test_fuzz_size_and_names(text):
    from codecnn.yuv import parse_name, parse_size

    parse_name(text)
    try:
        w, h = parse_size(text)
        assert w >= 0 and h >= 0
    except CodecnnError:
        pass


@FUZZ
@given(
    option=st.sampled_from(["--size", "--blocks", "--growth", "--features", "--layers"]),
    value=st.one_of(st.text(max_size=12), st.integers(-5, 10**6).map(str), st.floats().map(str)),
)
def test_fuzz_model_info_options(option, value):
    code, out = run("model-info", "rdn", option, value)
    assert code in (0, 2) and "Traceback" not in out, out
    if code == 2:
        assert len(out.strip().splitlines()) == 1, out


@FUZZ
@given(
    option=st.sampled_from(["--fps", "--qp", "--frames", "--start", "--frame-step", "--ctu", "--context", "--jobs"]),
    value=st.one_of(st.text(max_size=12), st.integers(-5, 300).map(str), st.floats().map(str)),
)
def test_fuzz_make_dataset_options(tmp_path, option, value):
    out = tmp_path / "o.h5"
    code, text = run("make-dataset", "--yuv", tmp_path / "missing.yuv", option, value, "--out", out)
    assert code == 2 and "Traceback" not in text and len(text.strip().splitlines()) == 1, text
    assert not out.exists()


def test_int16_calibration_on_a_dataset_of_another_context(checkpoint, carphone_yuv, tmp_path):
    other = tmp_path / "ctx0.h5"
    code, out = run(
        "make-dataset",
        "--yuv",
        carphone_yuv,
        "--frames",
        "1",
        "--qp",
        "37",
        "--preset",
        "ultrafast",
        "--context",
        "0",
        "--ctu",
        "64",
        "--out",
        other,
    )
    assert code == 0, out
    refused(
        ["export", checkpoint, "--out", tmp_path / "m.cnnw", "--int16", "--calib", other],
        "carry a 0-pixel context but the network consumes 2",
        leaves=[tmp_path / "m.cnnw"],
    )


# -- 8. outputs that would destroy an input, and the OS errors of outputs ------------------------------------------


@pytest.fixture
def own_yuv(tmp_path, carphone_yuv):
    """A private copy of the carphone source (the tests try to write over it)."""
    p = tmp_path / "car_176x144_30.yuv"
    shutil.copy(carphone_yuv, p)
    return p


def test_an_output_that_is_an_input_is_refused(own_yuv, checkpoint, restoration_h5, tmp_path):
    before = own_yuv.read_bytes()
    (tmp_path / "link.yuv").symlink_to(own_yuv.name)
    os.link(own_yuv, tmp_path / "hard.yuv")
    (tmp_path / "sub").mkdir()
    encode = ["make-dataset", "--yuv", own_yuv, "--qp", "37", "--frames", "1", "--out"]
    for out in (own_yuv, tmp_path / "link.yuv", tmp_path / "hard.yuv", tmp_path / "sub" / ".." / own_yuv.name):
        text = refused([*encode, out], f"--out {out} is the input --yuv {own_yuv}: writing it would destroy the input")
        assert "choose another --out" in text
        assert not os.path.exists(f"{out}.parts") and not os.path.exists(f"{out}.tmp")
    listing = tmp_path / "l.toml"
    listing.write_text(f'[list]\nname = "l"\n[[sequence]]\nname = "c"\nfile = "{own_yuv.name}"\nsize = "176x144"\n')
    refused(
        ["make-dataset", "--list", listing, "--seq-dir", tmp_path, "--out", tmp_path / "link.yuv"],
        f"is the input --list {listing}, sequence c, file {own_yuv}",
    )
    assert own_yuv.read_bytes() == before
    # a checkpoint, a calibration dataset
    ck = tmp_path / "m.pt"
    shutil.copy(checkpoint, ck)
    ck_bytes = ck.read_bytes()
    refused(["export", ck, "--out", ck], f"--out {ck} is the input CHECKPOINT {ck}")
    data = tmp_path / "d.h5"
    os.link(restoration_h5, data)
    refused(["export", ck, "--int16", "--calib", restoration_h5, "--out", data], "is the input --calib")
    assert ck.read_bytes() == ck_bytes and data.stat().st_nlink == 2
    # a folder output: the files the command would replace in it
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(checkpoint, run_dir / "best.pt")
    refused(
        ["train", "rdn", "--data", restoration_h5, "--init", run_dir / "best.pt", "--out", run_dir, "--steps", "1"],
        f"--out {run_dir} would replace {run_dir / 'best.pt'}, which is the input --init {run_dir / 'best.pt'}",
    )
    assert (run_dir / "best.pt").read_bytes() == ck_bytes and sorted(os.listdir(run_dir)) == ["best.pt"]


def test_report_refuses_to_merge_over_its_own_input(checkpoint, restoration_h5, tmp_path):
    ev = tmp_path / "e"
    code, text = run("evaluate", "--checkpoint", checkpoint, "--data", restoration_h5, "--split", "val", "--out", ev)
    assert code == 0, text
    results = ev / "results.json"
    before = results.read_bytes()
    other = tmp_path / "other.json"
    shutil.copy(results, other)
    refused(["report", results, other, "--out", ev], f"--out {ev} would replace {results}, which is the input")
    assert results.read_bytes() == before
    code, text = run("report", results, "--out", ev)  # one file: its report re-rendered beside it, the file kept
    assert code == 0 and results.read_bytes() == before, text


@pytest.mark.parametrize("command", ["make-dataset", "export", "train", "evaluate", "report"])
def test_an_output_name_too_long(command, own_yuv, checkpoint, restoration_h5, tmp_path):
    long = tmp_path / ("x" * 300)
    argv = {
        "make-dataset": ["make-dataset", "--yuv", own_yuv, "--qp", "37", "--frames", "1", "--out", f"{long}.h5"],
        "export": ["export", checkpoint, "--out", f"{long}.cnnw"],
        "train": ["train", "rdn", "--data", restoration_h5, "--out", long, "--steps", "1"],
        "evaluate": ["evaluate", "--checkpoint", checkpoint, "--data", restoration_h5, "--out", long],
        "report": ["report", tmp_path / "r.json", "--out", long],
    }[command]
    refused(argv, "File name too long")
    # a name that fits but leaves no room for the temporary siblings (NAME.tmp, OUT.h5.parts)
    if command in ("make-dataset", "export"):
        argv[-1] = tmp_path / ("y" * 252)
        refused(argv, "with the 6 bytes codecnn adds for its temporary files")
    assert sorted(os.listdir(tmp_path)) == ["car_176x144_30.yuv"]


@pytest.fixture
def small_fs(tmp_path):
    """``small_fs(size, read_only=False)``: a fresh tmpfs of that size (e.g. "256k"), unmounted afterwards;
    the test is skipped where no file system can be mounted (not root, or no mount allowed)."""
    import subprocess

    mounted = []

    def mount(size: str, read_only: bool = False):
        d = tmp_path / f"fs{len(mounted)}"
        d.mkdir()
        options = f"{'ro,' if read_only else ''}size={size}"
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(d)], capture_output=True)
        if r.returncode:
            pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.decode().strip()}")
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", str(d)], check=False)


def test_an_output_on_a_read_only_file_system(small_fs, own_yuv, checkpoint, restoration_h5):
    ro = small_fs("64k", read_only=True)
    msg = "is on a read-only file system; choose a writable place"
    refused(["make-dataset", "--yuv", own_yuv, "--qp", "37", "--frames", "1", "--out", ro / "o.h5"], msg)
    refused(["export", checkpoint, "--out", ro / "m.cnnw"], msg)
    refused(["train", "rdn", "--data", restoration_h5, "--out", ro / "run", "--steps", "1"], msg)
    refused(["evaluate", "--checkpoint", checkpoint, "--data", restoration_h5, "--out", ro / "e"], msg)


def test_no_space_left_midway(small_fs, own_yuv):
    """The disk fills while the dataset is written: one line, no partial file; libhdf5 (which crashes the
    process when a write fails) never sees the error. Finished encodes stay for --resume, and say so."""
    base = ["make-dataset", "--yuv", own_yuv, "--qp", "37", "--frames", "1", "--preset", "ultrafast", "--out"]
    tiny = small_fs("64k")  # the encode's shard does not fit
    refused([*base, tiny / "o.h5"], f"{tiny}/o.h5.parts/unit0000.h5: cannot write it: No space left on device")
    assert os.listdir(tiny) == []
    small = small_fs("256k")  # the shard fits, the dataset beside it does not
    text = refused([*base, small / "o.h5"], f"{small}/o.h5: cannot write it: No space left on device")
    assert "1 of 1 encodes finished and kept" in text and "--resume" in text
    assert os.listdir(small) == ["o.h5.parts"]


def test_no_space_left_for_a_checkpoint(small_fs, restoration_h5):
    """torch's own file writer would turn the error into a bare RuntimeError: checkpoints are written whole."""
    fs = small_fs("256k")
    refused(
        ["train", "rdn", "--data", restoration_h5, "--out", fs / "run", "--steps", "1", "--batch", "2",
         "--workers", "0", "--blocks", "2", "--growth", "16"],
        ".pt: cannot write it: No space left on device",  # best.pt (after validation) or last.pt
    )  # fmt: skip
    assert sorted(os.listdir(fs / "run")) == ["log.jsonl"]  # the run's log so far; no partial checkpoint


def test_no_space_left_injected(monkeypatch, own_yuv, tmp_path):
    """The same without a file system to fill: every write of an HDF5 output fails after 64 KiB."""
    import errno
    import io

    import codecnn.files

    class Full(io.FileIO):
        def write(self, b):
            if self.tell() + len(memoryview(b).cast("B")) > 65536:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(b)

    monkeypatch.setattr(codecnn.files, "open", lambda path, mode, buffering: Full(path, mode), raising=False)
    out = tmp_path / "o.h5"
    refused(
        ["make-dataset", "--yuv", own_yuv, "--qp", "37", "--frames", "1", "--preset", "ultrafast", "--out", out],
        "unit0000.h5: cannot write it: No space left on device; free some space or choose another place",
        leaves=[out, f"{out}.parts", f"{out}.tmp"],
    )


def test_bd_rate_needs_the_ctc_four_points(tmp_path):
    two = tmp_path / "two.csv"
    two.write_text("rate,psnr\n100,30\n200,33\n")
    for method in ("pchip", "cubic", "akima"):
        refused(
            ["bd-rate", two, two, "--method", method],
            f"BD-rate with {method} needs at least 4 RD points per curve, the CTC's four QPs (anchor has 2, test 2)",
        )


def test_a_name_that_disagrees_with_size_or_bit_depth_is_warned(own_yuv, tmp_path):
    r = CliRunner().invoke(
        cli,
        [str(a) for a in ["make-dataset", "--yuv", own_yuv, "--size", "352x288", "--qp", "37", "--frames", "1",
                          "--preset", "ultrafast", "--out", tmp_path / "o.h5"]],
    )  # fmt: skip
    assert r.exit_code == 0, r.output  # the option wins: two 352x288 frames in the file's bytes
    warning = f"{own_yuv}: the name says 176x144 but --size says 352x288; reading it as 352x288"
    assert warning in r.stderr and warning not in r.stdout
    eight = tmp_path / "car_176x144_30_8bit.yuv"
    shutil.copy(own_yuv, eight)
    text = refused(
        ["make-dataset", "--yuv", eight, "--bit-depth", "10", "--qp", "37", "--out", tmp_path / "o2.h5"],
        "above the 10-bit maximum 1023",
    )
    assert f"{eight}: the name says 8-bit but --bit-depth says 10-bit; reading it as 10-bit" in text
    code, text = run("make-dataset", "--yuv", own_yuv, "--size", "176x144", "--qp", "37", "--frames", "1",
                     "--preset", "ultrafast", "--out", tmp_path / "o3.h5")  # fmt: skip
    assert code == 0 and "the name says" not in text, text


def test_name_disagreements():
    from codecnn.yuv.names import name_disagreements

    assert name_disagreements("a_176x144_30.yuv", "352x288", None) == [("--size", "176x144", "352x288")]
    assert name_disagreements("a_176x144_10bit.yuv", (176, 144), 8) == [("--bit-depth", "10-bit", "8-bit")]
    assert name_disagreements("a_176x144_10bit.yuv", "176x144", 10) == []  # they agree
    assert name_disagreements("a_176x144.y4m", "352x288", 10) == []  # a header describes the file
    assert name_disagreements("a.yuv", "352x288", 10) == []  # the name says nothing
