"""hm_bridge: the .cnnw format, the dependency-free C++ inference, and gains on HM's own outputs."""

import json
import logging
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import HM

from codecnn.cli import cli
from codecnn.errors import CodecnnError
from codecnn.eval.inference import filter_plane
from codecnn.models import RDN
from codecnn.train.checkpoint import save_checkpoint
from codecnn.yuv import RawYuvReader
from hm_bridge.export import filter_plane_cnnw
from hm_bridge.format import graph_from_rdn, read_cnnw, run_graph, write_cnnw
from hm_bridge.patch_hm import HEADERS

CPP = Path(__file__).resolve().parent.parent / "hm_bridge" / "cpp"
GXX = shutil.which("g++")
needs_gxx = pytest.mark.skipif(GXX is None, reason="needs a C++ compiler (g++) to build hm_bridge/cpp")
COMPILERS = ("g++", "clang++")  # clang++ where installed: its warnings differ from g++'s
STRICT = ["-std=c++11", "-Wall", "-Wextra", "-Wshadow", "-Werror"]  # what HM builds with, and more


def _compiler(name):
    exe = shutil.which(name)
    if exe is None:
        pytest.skip(f"{name} is not installed: this variant of the C++ builds is not run")
    return exe


def _build(compiler, opts, source, exe, include=()):
    """Compile one C++ file with the strict warning flags (every warning an error); the compiler's
    message on failure."""
    cmd = [compiler, *STRICT, *opts, *(f"-I{d}" for d in include), "-o", str(exe), str(source)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr[-3000:]}"
    return exe


def _model(qp_map=False, separable=False, seed=0):
    torch.manual_seed(seed)
    # 16 features: both AVX2 float kernels (16 output channels and 8) run in the C++ tests
    m = RDN(num_blocks=2, num_layers=2, growth=8, num_features=16, qp_map=qp_map, separable=separable).eval()
    torch.nn.init.normal_(m.last.weight, std=0.05)  # off the identity, as after training
    return m


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    m = _model(qp_map=True)
    p = tmp_path_factory.mktemp("ck") / "rdn.pt"
    save_checkpoint(
        p,
        {
            "task": "ctu-restoration",
            "arch": "rdn",
            "config": m.config.__dict__,
            "state_dict": m.state_dict(),
            "step": 7,
        },
    )
    return p


@pytest.fixture(scope="module", params=COMPILERS)
def tool(request, tmp_path_factory):
    cxx = _compiler(request.param)
    d = tmp_path_factory.mktemp("cpp")
    out = {}
    opts = ["-O0", "-O3"]
    if _cpu_has("avx2", "fma"):  # the vector kernels of cnnw.h (cnnw_simd.h)
        opts.append("-O3 -mavx2 -mfma")
    if _cpu_has("avx512f", "avx512bw", "fma"):  # its AVX-512 kernels (with vpdpwssd where the CPU has VNNI)
        opts.append("-O3 -mavx512f -mavx512bw -mfma" + (" -mavx512vnni" if _cpu_has("avx512_vnni") else ""))
    for opt in opts:
        out[opt] = _build(cxx, opt.split(), CPP / "cnnw_tool.cpp", d / f"cnnw_tool{opt.replace(' ', '')}")
    return out


@pytest.fixture(scope="module", params=COMPILERS)
def load_check(request, tmp_path_factory):
    """cnnw_load_check, built with the strict flags (by g++, and clang++ where installed)."""
    cxx = _compiler(request.param)
    return _build(cxx, ["-O1"], CPP / "cnnw_load_check.cpp", tmp_path_factory.mktemp("lc") / "check")


def _cpu_has(*flags):
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return False
    words = set(text.split())
    return all(f in words for f in flags)


def _export(checkpoint, out, *options) -> Path:
    """``codecnn export`` (its exit status checked): the written file."""
    r = CliRunner().invoke(cli, ["export", str(checkpoint), "--out", str(out), *options])
    assert r.exit_code == 0 and "wrote" in r.output, r.output
    return Path(out)


@pytest.fixture(scope="module")
def float_model(checkpoint, tmp_path_factory):
    """The checkpoint exported as a float32 .cnnw file (version 2)."""
    return _export(checkpoint, tmp_path_factory.mktemp("f") / "m.cnnw")


def _reseal(data: bytes) -> bytes:
    """A version 2 file with its CRC-32 recomputed (over the bytes from offset 12), as the writer does."""
    return data[:8] + struct.pack("<I", zlib.crc32(data[12:])) + data[12:]


def _as_v1(data: bytes) -> bytes:
    """A version 2 file in the layout of version 1, as the version 1 writer wrote it: no checksum field."""
    assert data[4:8] == struct.pack("<I", 2)
    return data[:4] + struct.pack("<I", 1) + data[12:]


def _tensor_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) byte offsets of the values of every tensor of a version 2 file (walking its layout)."""
    precision, hlen = struct.unpack_from("<II", data, 12)
    pos = 20 + hlen
    (count,) = struct.unpack_from("<I", data, pos)
    pos += 4
    spans = []
    for _ in range(count):
        (ndim,) = struct.unpack_from("<I", data, pos)
        dims = struct.unpack_from(f"<{ndim}I", data, pos + 4)
        pos += 4 + 4 * ndim
        size = 4
        if precision == 1:
            size = 2 if struct.unpack_from("<iI", data, pos)[1] == 1 else 4
            pos += 8
        spans.append((pos, pos + size * int(np.prod(dims))))
        pos = spans[-1][1]
    return spans


def _flip(data: bytes, pos: int, bit: int) -> bytes:
    b = bytearray(data)
    b[pos] ^= 1 << bit
    return bytes(b)


@pytest.mark.parametrize("variant", [{}, {"qp_map": True}, {"separable": True}])
def test_graph_equals_pytorch(tmp_path, variant):
    m = _model(**variant)
    p = write_cnnw(graph_from_rdn(m), tmp_path / "m.cnnw")
    g = read_cnnw(p)
    assert g.header["arch"] == "rdn" and g.header["context"] == 2
    x = torch.rand(1, 1, 36, 36)
    with torch.no_grad():
        want = (m(x, torch.tensor([37])) - x[:, :, 2:-2, 2:-2])[0].numpy()
    np.testing.assert_allclose(run_graph(g, x[0].numpy(), 37), want, atol=1e-6)


def test_export_command_and_python_runner(checkpoint, tmp_path):
    out = _export(checkpoint, tmp_path / "m.cnnw")
    assert out.read_bytes()[:4] == b"CNNW"
    g = read_cnnw(out)
    plane = RawYuvReader(HM / "carphone" / "lf" / "qp37" / "recon.yuv", 176, 144).read(0).y
    from codecnn.train.checkpoint import load_model

    model, _ = load_model(checkpoint)
    a = filter_plane_cnnw(g, plane, 8, qp=37, ctu=64)
    b = filter_plane(model, plane, 8, qp=37, ctu=64)
    assert np.abs(a.astype(int) - b).max() <= 1 and (a != b).mean() < 1e-3  # float rounding ties only
    r = CliRunner().invoke(cli, ["export", str(tmp_path / "missing.pt"), "--out", str(out)])
    assert r.exit_code == 2 and "no such checkpoint" in r.output


@pytest.mark.slow
@needs_gxx
@pytest.mark.parametrize("bit_depth", [8, 10])
def test_cpp_float_path_matches_pytorch(tool, checkpoint, tmp_path, bit_depth):
    """Real frames (HM's carphone reconstruction) through the C++ float path at -O0 and -O3 (and the vector
    kernels: AVX2, AVX-512)."""
    from codecnn.train.checkpoint import load_model

    model, _ = load_model(checkpoint)
    cnnw = _export(checkpoint, tmp_path / "m.cnnw")
    src = HM / "carphone" / "lf" / "qp37" / "recon.yuv"
    raw = np.fromfile(src, np.uint8).reshape(8, -1)[:2]
    if bit_depth == 10:
        raw = (raw.astype(np.uint16) << 2) | 1
    yuv = tmp_path / "in.yuv"
    raw.astype("<u2" if bit_depth == 10 else np.uint8).tofile(yuv)
    peak = (1 << bit_depth) - 1
    outs = []
    for opt, exe in tool.items():
        lo, fo = tmp_path / f"l{opt}.raw", tmp_path / f"f{opt}.f32"
        subprocess.run(
            [str(exe), str(cnnw), str(yuv), "176", "144", str(bit_depth), "37", str(lo), str(fo)], check=True
        )
        floats = np.fromfile(fo, np.float32).reshape(2, 144, 176)
        luma = np.fromfile(lo, "<u2" if bit_depth == 10 else np.uint8).reshape(2, 144, 176)
        outs.append(luma)
        for k in range(2):
            plane = raw[k, : 176 * 144].reshape(144, 176)
            tiles = np.pad(plane, ((2, -144 % 128 + 2), (2, -176 % 128 + 2)), mode="edge").astype(np.float32) / peak
            with torch.no_grad():
                want = np.zeros((144, 176), np.float32)
                for y in (0, 128):
                    for x in (0, 128):
                        t = torch.from_numpy(tiles[y : y + 132, x : x + 132])[None, None]
                        o = model(t, torch.tensor([37]))[0, 0].numpy()
                        want[y : y + 128, x : x + 128] = o[: min(128, 144 - y), : min(128, 176 - x)]
            np.testing.assert_allclose(floats[k], want, atol=1e-4)  # in [0, 1] units
            ref = filter_plane(model, plane, bit_depth, qp=37)
            assert np.abs(luma[k].astype(int) - ref).max() <= 1
    np.testing.assert_array_equal(outs[0], outs[1])  # -O0 and -O3 of the portable loops agree here


@needs_gxx
@pytest.mark.slow
def test_loader_survives_truncated_and_flipped_files_under_asan(float_model, tmp_path):
    """Truncated and bit-flipped files under ASan/UBSan: every one refused, never a crash. The checksum now
    refuses each damaged version 2 file before its structure is read, so the parser's own checks are fuzzed
    on files whose checksum is made right again after the flips, and on version 1 files (no checksum)."""
    exe = tmp_path / "check"
    r = subprocess.run(
        [
            GXX,
            *STRICT,
            "-O1",
            "-g",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "-o",
            str(exe),
            str(CPP / "cnnw_load_check.cpp"),
        ],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        assert "[-W" not in r.stderr, r.stderr[-3000:]  # a warning (an error under -Werror) fails; no ASan skips
        pytest.skip(f"cannot build with -fsanitize=address: {r.stderr[-300:]}")
    data = float_model.read_bytes()
    v1 = _as_v1(data)
    rng = np.random.default_rng(0)
    cases = [("good", data), ("good v1", v1)]
    for cut in sorted(set(rng.integers(0, len(data), 60).tolist()) | {0, 3, 4, 8, 12, 16, 20}):
        cases.append(("truncated", data[:cut]))
    for cut in sorted(set(rng.integers(0, len(v1), 30).tolist()) | {8, 12, 16}):
        cases.append(("truncated v1", v1[:cut]))
    for i in range(120):
        n = int(rng.integers(1, 4))
        spots = {(int(rng.integers(0, min(len(data), 4096) if i % 2 else len(data))), int(rng.integers(0, 8)))}
        while len(spots) < n:  # distinct bits: two flips of one bit would give the good file back
            spots.add((int(rng.integers(0, len(data))), int(rng.integers(0, 8))))
        b = data
        for pos, bit in spots:
            b = _flip(b, pos, bit)
        cases.append(("flipped" if min(pos for pos, _ in spots) >= 8 else "flipped head", b))
        cases.append(("resealed", _reseal(b) if b[4:8] == data[4:8] else b))  # the parser's checks, fuzzed
        cases.append(("flipped v1", _as_v1(b) if b[4:8] == data[4:8] else b))
    files = []
    for i, (_, b) in enumerate(cases):
        files.append(tmp_path / f"c{i}.cnnw")
        files[-1].write_bytes(b)
    r = subprocess.run([str(exe), *map(str, files)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(files)
    got = list(zip([kind for kind, _ in cases], lines, files, strict=True))
    assert got[0][1] == "OK" and got[1][1].startswith("OK; ") and "re-export" in got[1][1]
    for kind, line, f in got[2:]:
        if kind in ("truncated", "flipped", "flipped head", "truncated v1"):
            assert not line.startswith("OK"), (kind, f)  # every truncation and every bit flip is refused
        if kind == "flipped" or (kind == "truncated" and f.stat().st_size >= 12):
            assert line.startswith(f"{f}: the file is damaged: "), (kind, line)
    assert any("truncated" in line for line in lines) and any("bad magic" in line for line in lines)
    refused = [line for kind, line, _ in got if kind == "resealed" and not line.startswith("OK")]
    assert refused and not any("damaged" in line for line in refused)  # the parser's own checks refused these


def _with_header(data: bytes, header: str) -> bytes:
    """A version 2 .cnnw file with its JSON header replaced by ``header`` (the rest byte for byte; the
    checksum made right)."""
    hlen = int.from_bytes(data[16:20], "little")
    h = header.encode()
    return _reseal(data[:16] + len(h).to_bytes(4, "little") + h + data[20 + hlen :])


def test_cpp_reads_the_json_header_whatever_its_whitespace(load_check, float_model, tmp_path):
    """The C++ loader reads the header's top-level "arch" and "context" as JSON, not as a substring that
    depends on Python's json.dumps separators: any whitespace passes, a key nested in "config" does not count."""
    data = float_model.read_bytes()
    head = json.loads(data[20 : 20 + int.from_bytes(data[16:20], "little")])
    no_arch = {k: v for k, v in head.items() if k != "arch"}
    no_context = {k: v for k, v in head.items() if k != "context"}
    cases = [
        (json.dumps(head), "OK"),
        (json.dumps(head, separators=(",", ":")), "OK"),
        (json.dumps(head, indent="\t"), "OK"),
        ("\r\n " + json.dumps(head, separators=(" ,\n", " :\t")) + " \n", "OK"),
        (json.dumps(dict(head, note='"arch": "x", "context": 99 {[')), "OK"),  # escapes and brackets in strings
        (json.dumps(dict(head, arch="rdn2")), "unknown architecture in header"),
        (json.dumps(dict(no_arch, config=dict(head["config"], arch="rdn"))), "unknown architecture in header"),
        (json.dumps(dict(no_context, config=dict(head["config"], context=2))), "header lacks a context"),
        (json.dumps(dict(head, context="2")), "header lacks a context"),
        ('{"arch": "rdn", "context": 2', "header lacks a context"),
        (json.dumps(head) + " {}", "header lacks a context"),
        ("", "header lacks a context"),
    ]
    files = []
    for i, (text, _) in enumerate(cases):
        files.append(tmp_path / f"h{i}.cnnw")
        files[-1].write_bytes(_with_header(data, text))
    r = subprocess.run([str(load_check), *map(str, files)], capture_output=True, text=True, check=True)
    assert [ln.rsplit(".cnnw: ", 1)[-1] for ln in r.stdout.splitlines()] == [want for _, want in cases]


def test_python_reader_refuses_damaged_files(float_model, tmp_path):
    data = float_model.read_bytes()
    p = tmp_path / "bad.cnnw"
    for bad, msg in (
        (b"XXXX" + data[4:], "bad magic"),
        (data[:4] + b"\x04" + data[5:], "version 4; this reader knows versions 1, 2, 3"),
        (data[:4] + b"\x03" + data[5:], "version 3 holds mode networks, but this file holds 'rdn'"),
        (data[:4] + b"\x00" + data[5:], "version 0"),
        (data[: len(data) // 2], "the file is damaged"),
        (data[:10], "truncated"),
        (data + b"\0", "the file is damaged"),
        (_flip(data, 9, 0), "the file is damaged"),  # the checksum field itself
        (_flip(data, 21, 3), "the file is damaged"),  # the JSON header
        (_flip(data, len(data) - 1, 7), "the file is damaged"),  # the last node
        (_reseal(data[: len(data) // 2]), "truncated"),  # checksum right: the structure is checked too
        (_reseal(data + b"\0"), "trailing bytes"),
        (_as_v1(data)[: len(data) // 2], "truncated"),
    ):
        p.write_bytes(bad)
        with pytest.raises(CodecnnError, match=msg) as e:
            read_cnnw(p)
        assert str(e.value).startswith(f"{p}: ")


@pytest.mark.parametrize("int16", [False, True])
def test_v2_file_round_trips_with_its_checksum(float_model, int16_model, tmp_path, int16):
    src = int16_model if int16 else float_model
    data = src.read_bytes()
    assert data[:12] == b"CNNW" + struct.pack("<II", 2, zlib.crc32(data[12:]))  # version 2, CRC-32 of the rest
    g = read_cnnw(src)
    assert g.version == 2 and g.crc32 == zlib.crc32(data[12:])
    again = write_cnnw(g, tmp_path / "again.cnnw")
    assert again.read_bytes() == data and g.crc32 == zlib.crc32(data[12:])  # byte for byte, same checksum
    h = read_cnnw(again)
    assert h.header == g.header and h.nodes == g.nodes and getattr(h, "tensor_q", None) == getattr(g, "tensor_q", None)
    for a, b in zip(h.tensors, g.tensors, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@needs_gxx
def test_flipped_bit_in_the_weights_is_refused(load_check, float_model, int16_model, tmp_path):
    """One flipped bit in any tensor (float32 and int16 files) is refused as a damaged file, naming the file,
    by the Python reader and by the C++ loader; the good files load."""
    rng = np.random.default_rng(1)
    files = [float_model, int16_model]
    for src in (float_model, int16_model):
        data = src.read_bytes()
        spans = _tensor_spans(data)
        assert spans[-1][1] < len(data) - 16  # the node table follows
        spots = [spans[0][0], spans[-1][1] - 1]  # the first and the last byte of the weights, and one per tensor
        spots += [int(rng.integers(a, b)) for a, b in spans]
        for k, pos in enumerate(spots):
            f = tmp_path / f"{src.stem}_{k}.cnnw"
            f.write_bytes(_flip(data, pos, int(rng.integers(0, 8))))
            files.append(f)
            with pytest.raises(CodecnnError, match="the file is damaged") as e:
                read_cnnw(f)
            assert str(e.value).startswith(f"{f}: ") and "export the model again" in str(e.value)
    r = subprocess.run([str(load_check), *map(str, files)], capture_output=True, text=True, check=True)
    lines = r.stdout.splitlines()
    assert lines[:2] == ["OK", "OK"] and len(lines) == len(files)
    for f, line in zip(files[2:], lines[2:], strict=True):
        assert line.startswith(f"{f}: the file is damaged: its CRC-32 is 0x"), line


def test_python_reads_a_v1_file_with_a_warning(float_model, int16_model, tmp_path, caplog):
    for src in (float_model, int16_model):
        v1 = tmp_path / f"{src.stem}_v1.cnnw"
        v1.write_bytes(_as_v1(src.read_bytes()))
        with caplog.at_level(logging.WARNING, logger="hm_bridge.format"):
            caplog.clear()
            g1 = read_cnnw(v1)
        assert [r.levelno for r in caplog.records] == [logging.WARNING]
        msg = caplog.records[0].getMessage()
        assert msg.startswith(f"{v1}: .cnnw version 1 has no checksum") and "re-export" in msg
        g2 = read_cnnw(src)
        assert g1.version == 1 and g1.crc32 is None and g1.nodes == g2.nodes and g1.header == g2.header
        for a, b in zip(g1.tensors, g2.tensors, strict=True):
            np.testing.assert_array_equal(a, b)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hm_bridge.format"):
            read_cnnw(src)
        assert not caplog.records  # version 2: no warning


@pytest.mark.slow
def test_gain_on_hm_outputs(float_model, tmp_path):
    from hm_bridge.__main__ import main

    cnnw = float_model
    d = HM / "carphone" / "lf" / "qp32"
    r = CliRunner().invoke(
        main,
        [
            "gain",
            "--orig",
            str(HM / "carphone" / "orig.yuv"),
            "--recon",
            str(d / "recon.yuv"),
            "--log",
            str(d / "encoder.log"),
            "--model",
            str(cnnw),
            "--size",
            "176x144",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    from codecnn.encoders import read_hm_log

    hm = read_hm_log(d / "encoder.log")
    assert len(res["frames"]) == 8 and res["kbps"] == hm.summary.kbps
    assert res["average"]["psnr_anchor"] == pytest.approx(hm.summary.psnr_y, abs=5e-5)  # HM's own figure
    for f, p in zip(res["frames"], hm.pictures, strict=True):
        assert f["psnr_anchor"] == pytest.approx(p.psnr_y, abs=5e-5) and f["bits"] == p.bits
        assert f["gain"] == pytest.approx(f["psnr_filtered"] - f["psnr_anchor"])
    r = CliRunner().invoke(
        main,
        [
            "gain",
            "--orig",
            str(HM / "carphone" / "orig.yuv"),
            "--recon",
            str(HM / "carphone" / "lf" / "qp37" / "recon.yuv"),
            "--log",
            str(d / "encoder.log"),
            "--model",
            str(cnnw),
            "--size",
            "176x144",
        ],
    )
    assert r.exit_code == 2 and "does not match" in r.output


@pytest.fixture(scope="module")
def int16_model(checkpoint, restoration_h5, tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "m16.cnnw"
    r = CliRunner().invoke(
        cli, ["export", str(checkpoint), "--out", str(out), "--int16", "--calib", str(restoration_h5)]
    )
    assert r.exit_code == 0, r.output
    assert "int16" in r.output and "loss" in r.output
    return out


def test_int16_export_is_close_to_float(int16_model, float_model):
    from hm_bridge.fixed import filter_plane_int

    g = read_cnnw(int16_model)
    rep = g.header["int16_report"]
    assert rep["ctus"] > 0 and abs(rep["loss_db"]) < 0.05
    assert all(isinstance(t, np.ndarray) and t.dtype in (np.int16, np.int32) for t in g.tensors)
    fl = float_model
    plane = RawYuvReader(HM / "carphone" / "lf" / "qp37" / "recon.yuv", 176, 144).read(0).y
    a = filter_plane_int(g, plane, 8, 37)
    b = filter_plane_cnnw(read_cnnw(fl), plane, 8, 37)
    assert a.dtype == np.uint8 and a.shape == plane.shape
    d = np.abs(a.astype(int) - b)
    assert d.max() <= 2 and d.mean() < 0.1  # fixed point within a rounding step or two of float


@needs_gxx
@pytest.mark.parametrize("bit_depth", [8, 10])
def test_cpp_int16_equals_python_twin(tool, int16_model, tmp_path, bit_depth):
    """Every sample of the C++ int16 path equals the integer Python twin, at -O0 and -O3 (and with AVX2, AVX-512)."""
    from hm_bridge.fixed import filter_plane_int

    g = read_cnnw(int16_model)
    raw = np.fromfile(HM / "carphone" / "lf" / "qp22" / "recon.yuv", np.uint8).reshape(8, -1)[[0, 5]]
    if bit_depth == 10:
        raw = (raw.astype(np.uint16) << 2) | 2
    yuv = tmp_path / "in.yuv"
    raw.astype("<u2" if bit_depth == 10 else np.uint8).tofile(yuv)
    twin = [filter_plane_int(g, raw[k, : 176 * 144].reshape(144, 176), bit_depth, 22) for k in range(2)]
    for opt, exe in tool.items():
        lo = tmp_path / f"l{opt}.raw"
        subprocess.run([str(exe), str(int16_model), str(yuv), "176", "144", str(bit_depth), "22", str(lo)], check=True)
        luma = np.fromfile(lo, "<u2" if bit_depth == 10 else np.uint8).reshape(2, 144, 176)
        for k in range(2):
            np.testing.assert_array_equal(luma[k], twin[k], err_msg=f"{opt} frame {k}")


@needs_gxx
def test_cpp_threads_give_the_same_output(tool, int16_model, float_model, tmp_path):
    """cnnw_tool --threads N shares the CTUs out among N threads: int16 output equal to the twin and float
    output (unrounded) bit for bit the same as with one thread, in every build; a count below 1 is refused."""
    from hm_bridge.fixed import filter_plane_int

    raw = np.fromfile(HM / "carphone" / "lf" / "qp27" / "recon.yuv", np.uint8).reshape(8, -1)[[2, 6]]
    yuv = tmp_path / "in.yuv"
    raw.tofile(yuv)
    twin = [filter_plane_int(read_cnnw(int16_model), raw[k, : 176 * 144].reshape(144, 176), 8, 27) for k in range(2)]
    for opt, exe in tool.items():
        floats = []
        for threads in (1, 3, 4):
            lo, fo = tmp_path / f"l{threads}.raw", tmp_path / f"f{threads}.f32"
            args = [str(yuv), "176", "144", "8", "27"]
            subprocess.run([str(exe), "--threads", str(threads), str(int16_model), *args, str(lo)], check=True)
            luma = np.fromfile(lo, np.uint8).reshape(2, 144, 176)
            for k in range(2):
                np.testing.assert_array_equal(luma[k], twin[k], err_msg=f"{opt} {threads} threads, frame {k}")
            subprocess.run([str(exe), str(float_model), *args, str(lo), str(fo), "--threads", str(threads)], check=True)
            floats.append(fo.read_bytes())
        assert floats[0] == floats[1] == floats[2], opt
    r = subprocess.run([str(tool["-O3"]), "--threads", "0", str(int16_model), str(yuv), "176", "144", "8", "27", "o"])
    assert r.returncode == 2


THREADS_GLUE = r"""#include <cstdio>
#include <vector>

#include "codecnn_hm.h"

// threads MODEL IN.u8 WIDTH HEIGHT OUT.u8: filterLuma on an 8-bit plane (QP 27); prints CODECNN_THREADS as read
int main(int argc, char **argv) {
  if (argc != 6) return 2;
  codecnn_hm::modelPath() = argv[1];
  const int w = std::atoi(argv[3]), h = std::atoi(argv[4]);
  std::vector<short> luma(static_cast<size_t>(w) * h);
  std::FILE *in = std::fopen(argv[2], "rb");
  for (size_t i = 0; i < luma.size(); ++i) luma[i] = static_cast<short>(std::fgetc(in));
  std::fclose(in);
  std::string err;
  if (!codecnn_hm::filterLuma(&luma[0], w, w, h, 8, 27, err)) return 1;
  std::printf("threads %d\n", codecnn_hm::filterThreads());
  std::FILE *out = std::fopen(argv[5], "wb");
  for (size_t i = 0; i < luma.size(); ++i) std::fputc(luma[i], out);
  std::fclose(out);
  return 0;
}
"""


@pytest.mark.parametrize("cxx", COMPILERS)
def test_hm_glue_reads_codecnn_threads(cxx, int16_model, tmp_path):
    """codecnn_hm.h takes its thread count from CODECNN_THREADS (1 when unset or not a count from 1 to 256);
    the picture is the int16 twin's with any count."""
    from hm_bridge.fixed import filter_plane_int

    src = tmp_path / "threads.cpp"
    src.write_text(THREADS_GLUE)
    exe = _build(_compiler(cxx), ["-O2"], src, tmp_path / "threads", include=[CPP])
    plane = RawYuvReader(HM / "carphone" / "lf" / "qp27" / "recon.yuv", 176, 144).read(3).y
    raw, out = tmp_path / "in.u8", tmp_path / "out.u8"
    plane.astype(np.uint8).tofile(raw)
    want = filter_plane_int(read_cnnw(int16_model), plane, 8, 27)
    env = {k: v for k, v in os.environ.items() if k != "CODECNN_THREADS"}
    for value, threads in ((None, 1), ("3", 3), ("1", 1), ("0", 1), ("two", 1), ("4x", 1), ("", 1), ("300", 1)):
        r = subprocess.run(
            [str(exe), str(int16_model), str(raw), "176", "144", str(out)],
            env=env if value is None else {**env, "CODECNN_THREADS": value},
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0 and r.stdout.splitlines()[-1] == f"threads {threads}", (value, r.stdout, r.stderr)
        np.testing.assert_array_equal(np.fromfile(out, np.uint8).reshape(144, 176), want, err_msg=str(value))


@needs_gxx
def test_cnnw_tool_prints_the_checksum_refuses_damage_and_warns_on_v1(tool, int16_model, tmp_path):
    """cnnw_tool: the CRC-32 on stderr; a flipped weight bit: exit status 1 and the damaged-file message; the
    same model as a version 1 file: a warning to re-export, and the same output samples."""
    from hm_bridge.fixed import filter_plane_int

    exe = tool["-O3"]
    data = int16_model.read_bytes()
    plane = np.fromfile(HM / "carphone" / "lf" / "qp32" / "recon.yuv", np.uint8)[: 176 * 144 * 3 // 2]
    yuv = tmp_path / "in.yuv"
    plane.tofile(yuv)

    def run(model):
        out = tmp_path / "out.raw"
        out.unlink(missing_ok=True)
        r = subprocess.run([str(exe), str(model), str(yuv), "176", "144", "8", "32", str(out)], capture_output=True)
        return r.returncode, r.stderr.decode(), np.fromfile(out, np.uint8) if out.exists() else None

    rc, err, got = run(int16_model)
    assert rc == 0 and f"int16, .cnnw version 2, CRC-32 {zlib.crc32(data[12:]):#010x}" in err, err
    want = filter_plane_int(read_cnnw(int16_model), plane[: 176 * 144].reshape(144, 176), 8, 32)
    np.testing.assert_array_equal(got.reshape(144, 176), want)
    v1 = tmp_path / "v1.cnnw"
    v1.write_bytes(_as_v1(data))
    rc, err, got1 = run(v1)
    assert rc == 0 and f"{v1}: warning: .cnnw version 1 has no checksum" in err and "re-export" in err, err
    assert "version 1, CRC-32 none" in err
    np.testing.assert_array_equal(got1.reshape(144, 176), want)
    damaged = tmp_path / "damaged.cnnw"
    damaged.write_bytes(_flip(data, _tensor_spans(data)[-2][1] - 1, 7))  # the last weight of the last conv
    rc, err, _ = run(damaged)
    assert rc == 1 and err.startswith(f"error: {damaged}: the file is damaged: its CRC-32 is 0x"), err


@needs_gxx
def test_cnnw_tool_profile_counts_every_multiply_accumulate(tool, checkpoint, int16_model, float_model, tmp_path):
    """cnnw_tool --profile (filterPlane's NodeTime): the same output samples, the clock, one line per node, and
    the convolutions' multiply-accumulates sum to codecnn.models.complexity's count for every CTU computed
    (176x144: 2 x 2 CTUs of 128x128 a frame, 2 frames), with 1 thread and with 3."""
    from codecnn.models.complexity import describe_complexity
    from codecnn.train.checkpoint import load_model

    model, _ = load_model(checkpoint)
    want = round(describe_complexity(model)["macs_per_pixel"] * 128 * 128) * 2 * 4
    raw = np.fromfile(HM / "carphone" / "lf" / "qp27" / "recon.yuv", np.uint8).reshape(8, -1)[[1, 3]]
    yuv = tmp_path / "in.yuv"
    raw.tofile(yuv)
    for cnnw_file in (int16_model, float_model):
        nodes = len(read_cnnw(cnnw_file).nodes)
        for threads in ("1", "3"):
            outs = []
            for extra in ([], ["--profile"]):
                out = tmp_path / f"out{len(extra)}.raw"
                args = [str(tool["-O3"]), "--threads", threads, *extra, str(cnnw_file), str(yuv), "176", "144", "8"]
                r = subprocess.run([*args, "27", str(out)], capture_output=True, text=True, check=True)
                outs.append(out.read_bytes())
            assert outs[0] == outs[1]
            lines = r.stdout.splitlines()
            assert lines[0] == "clock cpu"  # Linux has a per-thread CPU clock
            rows = [ln.split() for ln in lines[1:]]
            assert [int(row[1]) for row in rows] == list(range(nodes))
            assert all(float(row[3]) >= 0 for row in rows)
            convs = [row for row in rows if row[2] == "conv2d"]
            assert convs and all(len(row) == 8 for row in convs)
            assert sum(int(row[7]) for row in convs) == want, (cnnw_file, threads)
            assert {int(row[4]) for row in convs} == {1, 3}  # kernel sizes of the RDN


GLUE = r"""// HM's types as far as the lines patch-hm inserts use them (written here, not copied from HM).
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "TLibCommon/codecnn_hm.h"

typedef short Pel;  // HM 16.x without RExt__HIGH_BIT_DEPTH_SUPPORT
typedef double Double;
enum SliceType { B_SLICE, P_SLICE, I_SLICE };
enum ComponentID { COMPONENT_Y };
enum ChannelType { CHANNEL_TYPE_LUMA };
struct TComPicYuv {
  int width, height, margin, stride;
  std::vector<Pel> buf;  // the picture inside a margin, as HM's
  TComPicYuv(int w, int h)
      : width(w), height(h), margin(16), stride(w + 32), buf(static_cast<size_t>(w + 32) * (h + 32), -1) {}
  Pel *getAddr(ComponentID) { return &buf[static_cast<size_t>(margin) * stride + margin]; }
  int getStride(ComponentID) const { return stride; }
  int getWidth(ComponentID) const { return width; }
  int getHeight(ComponentID) const { return height; }
};
struct TComSPS {
  int bitDepth;
  unsigned maxCU;
  int getBitDepth(ChannelType) const { return bitDepth; }
  unsigned getMaxCUWidth() const { return maxCU; }
  unsigned getMaxTLayers() const { return 2; }  // two temporal layers: POC 0 in layer 0, POC 1 in layer 1
};
struct TComPPS {
  bool ext;
  bool getSliceHeaderExtensionPresentFlag() const { return ext; }
};
struct TComSlice {
  TComSPS sps;
  TComPPS pps;
  int qp;
  bool irap;
  Double lambdas[3];
  SliceType getSliceType() const { return irap ? I_SLICE : B_SLICE; }
  const TComSPS *getSPS() const { return &sps; }
  const TComPPS *getPPS() const { return &pps; }
  int getSliceQp() const { return qp; }
  bool isIRAP() const { return irap; }
  const Double *getLambdas() const { return lambdas; }
  unsigned getTLayer() const { return irap ? 0 : 1; }
};
struct TComPic {
  TComPicYuv *rec, *org;
  TComSlice *slice;
  int poc;
  TComPicYuv *getPicYuvRec() { return rec; }
  TComPicYuv *getPicYuvOrg() { return org; }
  TComSlice *getSlice(int) { return slice; }
  int getPOC() const { return poc; }
};

static void encoderBeforeSao(TComPic *pcPic, TComSlice *pcSlice) {
@ENCB@
}

static void encoderAfterSao(TComPic *pcPic, TComSlice *pcSlice) {
@ENC@
}

static void decoderBeforeSao(TComPic *pcPic, TComSlice *pcSlice) {
@DECB@
}

static void decoderAfterSao(TComPic *pcPic, TComSlice *pcSlice) {
@DEC@
}

// SAO as the glue sees it: between the two stages, every sample + 1 when GLUE_SAO is set (so a test can tell
// where the filter ran)
static void sao(TComPicYuv &p) {
  if (!std::getenv("GLUE_SAO")) return;
  for (int y = 0; y < p.height; ++y)
    for (int x = 0; x < p.width; ++x) p.getAddr(COMPONENT_Y)[y * p.stride + x] += 1;
}

static void readPlane(const char *path, TComPicYuv &p) {
  std::FILE *in = std::fopen(path, "rb");
  if (!in) std::exit(2);
  for (int y = 0; y < p.height; ++y)
    for (int x = 0; x < p.width; ++x) p.getAddr(COMPONENT_Y)[y * p.stride + x] = static_cast<Pel>(std::fgetc(in));
  std::fclose(in);
}

// glue enc|dec MODEL REC.u8 ORG.u8 WIDTH HEIGHT BITDEPTH QP SIGNAL|PPSFLAG LAMBDA OUT PAYLOAD INTERMODEL
// (a model "": none). Two pictures, POC 0 (an I picture, IRAP) and POC 1 (a B picture), both of REC (and
// ORG). enc runs the encoder's line with --CnnSignal SIGNAL and, as HM's slice header writer does, takes each
// picture's payload, written to PAYLOAD.<poc> (an empty payload: no file); dec hands PAYLOAD.<poc>, when it
// exists, to the slice header reader's line, then runs the decoder's line with the PPS flag PPSFLAG.
// OUT.<poc> is each whole reconstruction buffer, margin included.
int main(int argc, char **argv) {
  if (argc != 14) return 2;
  const bool enc = std::string(argv[1]) == "enc";
  codecnn_hm::modelPath() = argv[2];
  codecnn_hm::interModelPath() = argv[13];
  codecnn_hm::signalMode() = std::atoi(argv[9]);
  if (std::getenv("GLUE_RECORD")) codecnn_hm::recordPath() = std::getenv("GLUE_RECORD");      // --CnnRecordInput
  if (std::getenv("GLUE_QPSEARCH")) codecnn_hm::qpSearch() = std::atoi(std::getenv("GLUE_QPSEARCH"));  // --CnnQpSearch
  if (std::getenv("GLUE_RHO")) codecnn_hm::propagation() = std::atof(std::getenv("GLUE_RHO"));  // --CnnPropagation
  if (std::getenv("GLUE_BEFORE_SAO")) codecnn_hm::beforeSao() = 1;  // --CnnBeforeSao=1
  const int w = std::atoi(argv[5]), h = std::atoi(argv[6]);
  for (int poc = 0; poc < 2; ++poc) {
    TComPicYuv rec(w, h), org(w, h);
    readPlane(argv[3], rec);
    readPlane(argv[4], org);
    TComSlice slice = {{std::atoi(argv[7]), 64u}, {std::atoi(argv[9]) != 0}, std::atoi(argv[8]), poc == 0,
                       {std::atof(argv[10]), 0, 0}};
    TComPic pic = {&rec, &org, &slice, poc};
    const std::string payloadPath = std::string(argv[12]) + "." + std::to_string(poc);
    if (enc) {
      encoderBeforeSao(&pic, &slice);
      sao(rec);
      encoderAfterSao(&pic, &slice);
      const std::vector<unsigned char> p = codecnn_hm::takeExtension(poc, true);
      if (!codecnn_hm::takeExtension(poc, true).empty()) return 3;  // taken once
      std::remove(payloadPath.c_str());
      if (!p.empty()) {
        std::FILE *f = std::fopen(payloadPath.c_str(), "wb");
        std::fwrite(&p[0], 1, p.size(), f);
        std::fclose(f);
      }
    } else {
      std::FILE *f = std::fopen(payloadPath.c_str(), "rb");
      if (f) {
        int i = 0;
        for (int c = std::fgetc(f); c != EOF; c = std::fgetc(f)) codecnn_hm::receiveExtensionByte(poc, i++, c);
        std::fclose(f);
      }
      decoderBeforeSao(&pic, &slice);
      sao(rec);
      decoderAfterSao(&pic, &slice);
    }
    std::FILE *out = std::fopen((std::string(argv[11]) + "." + std::to_string(poc)).c_str(), "wb");
    std::fwrite(&rec.buf[0], sizeof(Pel), rec.buf.size(), out);
    std::fclose(out);
  }
  return 0;
}
"""


@pytest.mark.parametrize("cxx", COMPILERS)
def test_hm_glue_signals_what_the_encoder_decides_and_the_decoder_follows(cxx, int16_model, tmp_path):
    """The lines patch-hm inserts into TEncGOP.cpp, TEncCavlc.cpp, TDecCAVLC.cpp and TDecGop.cpp, compiled
    (strict flags) against the copied headers and mock HM types, over two pictures. The encoder filters with
    the int16 twin's output, blended with a signalled scale, on the CTUs it keeps (each choice made with the
    rate counted); the payload (slice header extension) parses as hm_bridge/signal.py reads it, and the
    picture is what that payload gives; the decoder's line, given the payload, makes the same pictures; bad
    streams and bad models stop HM with one message; without a model nothing changes."""
    from hm_bridge.__main__ import main
    from hm_bridge.fixed import filter_plane_int
    from hm_bridge.signal import apply_payload, net_qp, parse_payload

    compiler = _compiler(cxx)
    hm = _fake_hm(tmp_path / "HM")
    r = CliRunner().invoke(main, ["patch-hm", str(hm)])
    assert r.exit_code == 0, r.output
    (enc_before, enc_line), (dec_before, dec_line) = (
        [ln.strip() for ln in (hm / "source" / f).read_text().splitlines() if "codecnn_hm::filterLuma" in ln]
        for f in ("Lib/TLibEncoder/TEncGOP.cpp", "Lib/TLibDecoder/TDecGop.cpp")
    )  # in file order: before SAO, after SAO
    assert "filterLumaEncoder(" in enc_line and "filterLumaDecoder(" in dec_line
    assert ", true, cnnError" in enc_before + dec_before and ", false, cnnError" in enc_line + dec_line
    src = tmp_path / "glue.cpp"
    src.write_text(
        GLUE.replace("@ENC@", "  " + enc_line)
        .replace("@DEC@", "  " + dec_line)
        .replace("@ENCB@", "  " + enc_before)
        .replace("@DECB@", "  " + dec_before)
    )
    exe = _build(compiler, ["-O1"], src, tmp_path / "glue", include=[hm / "source" / "Lib"])
    plane = RawYuvReader(HM / "carphone" / "lf" / "qp27" / "recon.yuv", 176, 144).read(1).y
    want = filter_plane_int(read_cnnw(int16_model), plane, 8, 27)
    orig = RawYuvReader(HM / "carphone" / "orig.yuv", 176, 144).read(1).y.copy()
    for y, x in ((0, 0), (64, 64), (128, 128)):  # the filter is exact there: those CTUs must switch on
        orig[y : y + 64, x : x + 64] = want[y : y + 64, x : x + 64]
    raw, raw_org, pay, out = tmp_path / "in.u8", tmp_path / "org.u8", tmp_path / "payload", tmp_path / "out"
    plane.astype(np.uint8).tofile(raw)
    orig.astype(np.uint8).tofile(raw_org)
    model_id = zlib.crc32(int16_model.read_bytes()[12:]) & 0xFFFF

    def run(model, side="enc", signal=2, lam=60.0, inter="", env=None):
        for poc in (0, 1):
            Path(f"{out}.{poc}").unlink(missing_ok=True)
        argv = [str(exe), side, str(model), str(raw), str(raw_org), "176", "144", "8", "27", str(signal), str(lam)]
        res = subprocess.run(
            [*argv, str(out), str(pay), str(inter)], capture_output=True, text=True, env={**os.environ, **(env or {})}
        )
        pics = []
        for poc in (0, 1):
            if not Path(f"{out}.{poc}").exists():
                break
            buf = np.fromfile(f"{out}.{poc}", np.int16).reshape(144 + 32, 176 + 32)
            assert (buf[:16] == -1).all() and (buf[-16:] == -1).all() and (buf[:, :16] == -1).all()  # margin
            assert (buf[:, -16:] == -1).all()
            pics.append(buf[16:-16, 16:-16])
        return res, pics

    def payloads():
        return [Path(f"{pay}.{poc}").read_bytes() if Path(f"{pay}.{poc}").exists() else b"" for poc in (0, 1)]

    def filtered(q):  # the int16 twin's output for QP index q (the network given net_qp(27, q))
        return filter_plane_int(read_cnnw(int16_model), plane, 8, net_qp(27, q))

    record = tmp_path / "filter_input.yuv"
    res, pics = run(int16_model, env={"GLUE_RECORD": str(record)})
    crc = f"CRC-32 {zlib.crc32(int16_model.read_bytes()[12:]):#010x}"  # printed by encoder and decoder alike
    assert res.returncode == 0 and f"codecnn: luma filter {int16_model} (int16, {crc}) after SAO" in res.stdout
    p0, p1 = payloads()
    first, second = parse_payload(p0, 176, 144, 64), parse_payload(p1, 176, 144, 64)
    assert (first.mode, first.model_id, first.version) == (2, model_id, 3) and second.mode is None  # header once
    assert first.on and first.ctu and first.ctu[0] == first.ctu[4] == first.ctu[8] == 1 and sum(first.ctu) < 9
    assert first.q == 5  # the CTUs made to match are the network's output at the slice QP
    for pic, p in zip(pics, (first, second), strict=True):
        np.testing.assert_array_equal(pic, apply_payload(plane, filtered(p.q), p, 64, 8))
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("codecnn: POC")]
    assert lines[0] == f"codecnn: POC 0 on k={first.k} qp=27 ctus={sum(first.ctu)}/9 bytes={len(p0)} tries=3", lines
    assert len(p0) == 4 + 1 + (2 if first.group == 0 else 1)  # flags: g and 9 CTUs (g 0) or 4 groups (g 1)
    # --CnnRecordInput: each picture as it entered the filter, at its POC, I420 with grey chroma
    rec_frames = np.fromfile(record, np.uint8).reshape(2, -1)
    assert rec_frames.shape[1] == 176 * 144 * 3 // 2
    for f in rec_frames:
        np.testing.assert_array_equal(f[: 176 * 144].reshape(144, 176), plane)
        assert (f[176 * 144 :] == 128).all()
    res, decoded = run(int16_model, "dec")
    assert res.returncode == 0, res.stderr
    for a, b in zip(decoded, pics, strict=True):
        np.testing.assert_array_equal(a, b)

    # the network's QP: CTUs made to match its output at QP 19 (q = 3) make the encoder's search find q = 3,
    # signalled, and the decoder gives the network QP 19 too; --CnnQpSearch=0 keeps the slice QP (one try)
    orig19 = RawYuvReader(HM / "carphone" / "orig.yuv", 176, 144).read(1).y.copy()
    for y, x in ((0, 0), (64, 64), (128, 128)):
        orig19[y : y + 64, x : x + 64] = filtered(3)[y : y + 64, x : x + 64]
    orig19.astype(np.uint8).tofile(raw_org)
    res, pics = run(int16_model)
    p0, p1 = payloads()
    first, second = parse_payload(p0, 176, 144, 64), parse_payload(p1, 176, 144, 64)
    assert first.q == 3 and first.on and res.returncode == 0, res.stdout
    assert "codecnn: POC 0 on k=" in res.stdout and " qp=19 " in res.stdout
    for pic, p in zip(pics, (first, second), strict=True):
        np.testing.assert_array_equal(pic, apply_payload(plane, filtered(p.q), p, 64, 8))
    res, decoded = run(int16_model, "dec")
    assert res.returncode == 0 and all((a == b).all() for a, b in zip(decoded, pics, strict=True)), res.stderr
    res, pics = run(int16_model, env={"GLUE_QPSEARCH": "0"})
    assert res.returncode == 0 and " qp=27 " in res.stdout and " tries=1" in res.stdout and " qp=19 " not in res.stdout
    assert parse_payload(payloads()[0], 176, 144, 64).q == 5
    # the flags per group of 2x2 CTUs (g = 1): the top-left 128x128 made to match the network, the rest not;
    # one byte of flags instead of two, and the decoder follows
    orig4 = RawYuvReader(HM / "carphone" / "orig.yuv", 176, 144).read(1).y.copy()
    orig4[:128, :128] = want[:128, :128]
    orig4.astype(np.uint8).tofile(raw_org)
    res, pics = run(int16_model, env={"GLUE_QPSEARCH": "0"})
    p0, p1 = payloads()
    first, second = parse_payload(p0, 176, 144, 64), parse_payload(p1, 176, 144, 64)
    assert res.returncode == 0 and (first.group, first.ctu) == (1, (1, 1, 0, 1, 1, 0, 0, 0, 0)), (res.stdout, first)
    assert len(p0) == 4 + 1 + 1 and p0[5] >> 6 == 1
    for pic, p in zip(pics, (first, second), strict=True):
        np.testing.assert_array_equal(pic, apply_payload(plane, filtered(p.q), p, 64, 8))
    res, decoded = run(int16_model, "dec")
    assert res.returncode == 0 and all((a == b).all() for a, b in zip(decoded, pics, strict=True)), res.stderr
    orig.astype(np.uint8).tofile(raw_org)
    # a version 2 stream (the previous hm_bridge's) still decodes: a flag per CTU, no g
    Path(f"{pay}.0").write_bytes(bytes([0, 0x22, model_id >> 8, model_id & 0xFF, 0x80 | 0x50 | 5, 0b10001000, 0x80]))
    Path(f"{pay}.1").unlink(missing_ok=True)
    res, decoded = run(int16_model, "dec", signal=2)
    assert res.returncode == 0, res.stderr
    v2 = parse_payload(Path(f"{pay}.0").read_bytes(), 176, 144, 64)
    assert (v2.version, v2.k, v2.q, v2.ctu) == (2, 40, 5, (1, 0, 0, 0, 1, 0, 0, 0, 1))
    np.testing.assert_array_equal(decoded[0], apply_payload(plane, want, v2, 64, 8))
    # a version 1 stream still decodes: k alone, the network at the slice QP
    Path(f"{pay}.0").write_bytes(bytes([0, 0x12, model_id >> 8, model_id & 0xFF, 40]))
    Path(f"{pay}.1").unlink(missing_ok=True)
    res, decoded = run(int16_model, "dec", signal=1)
    assert res.returncode == 0, res.stderr
    v1 = parse_payload(Path(f"{pay}.0").read_bytes(), 176, 144, 64)
    assert (v1.version, v1.k, v1.q) == (1, 40, 5)
    np.testing.assert_array_equal(decoded[0], apply_payload(plane, want, v1, 64, 8))
    np.testing.assert_array_equal(decoded[1], plane)  # no parameters: off

    # a huge lambda: no bits are worth spending, the filter is off and only the header is sent
    res, pics = run(int16_model, lam=1e12)
    assert res.returncode == 0 and payloads() == [bytes([0, 0x32, model_id >> 8, model_id & 0xFF]), b""]
    np.testing.assert_array_equal(pics[0], plane)
    # --CnnPropagation: the same lambda, but POC 0 (layer 0 of 2) is a reference whose distortion counts
    # 1 + rho times: with rho = 1e12 its bits are cheap again and it is filtered; POC 1 (the top layer) is not
    res, pics = run(int16_model, lam=1e12, env={"GLUE_RHO": "1e12"})
    first = parse_payload(payloads()[0], 176, 144, 64)
    assert res.returncode == 0 and first.on and payloads()[1] == b"", res.stdout
    np.testing.assert_array_equal(pics[0], apply_payload(plane, filtered(first.q), first, 64, 8))
    np.testing.assert_array_equal(pics[1], plane)
    # --CnnBeforeSao=1: the encoder decides and filters after deblocking, SAO (here +1 on every sample) comes
    # after; the header's placement bit says so and the decoder, which has no such option, follows it
    res, pics = run(int16_model, env={"GLUE_BEFORE_SAO": "1", "GLUE_SAO": "1"})
    p0, p1 = payloads()
    first, second = parse_payload(p0, 176, 144, 64), parse_payload(p1, 176, 144, 64, version=3)
    assert res.returncode == 0 and p0[1] == 0x30 | 0x04 | 2 and first.before_sao and first.on, res.stdout
    assert f"luma filter {int16_model} (int16, {crc}) before SAO" in res.stdout
    for pic, p in zip(pics, (first, second), strict=True):
        np.testing.assert_array_equal(pic, apply_payload(plane, filtered(p.q), p, 64, 8) + 1)
    res, decoded = run(int16_model, "dec", env={"GLUE_SAO": "1"})
    assert res.returncode == 0 and "this bitstream's filter runs before SAO" in res.stdout, res.stderr
    assert all((a == b).all() for a, b in zip(decoded, pics, strict=True))
    res, _ = run("", "dec", env={"GLUE_SAO": "1"})  # without the model: stopped at the first stage
    assert res.returncode == 1 and "give the encoder's --CnnModel" in res.stderr, res.stderr
    # after SAO (the default): the filter sees SAO's output, the header's bit is clear, the decoder follows
    res, pics = run(int16_model, env={"GLUE_SAO": "1", "GLUE_QPSEARCH": "0"})
    first = parse_payload(payloads()[0], 176, 144, 64)
    assert res.returncode == 0 and payloads()[0][1] == 0x32 and first.before_sao is False, res.stdout
    np.testing.assert_array_equal(
        pics[0], apply_payload(plane + 1, filter_plane_int(read_cnnw(int16_model), plane + 1, 8, 27), first, 64, 8)
    )
    res, decoded = run(int16_model, "dec", env={"GLUE_SAO": "1"})
    assert res.returncode == 0 and all((a == b).all() for a, b in zip(decoded, pics, strict=True)), res.stderr
    # always on (--CnnSignal=0): the header only, every picture filtered; the decoder follows
    res, pics = run(int16_model, signal=0)
    assert res.returncode == 0 and payloads() == [bytes([0, 0x30, model_id >> 8, model_id & 0xFF]), b""]
    for pic in pics:
        np.testing.assert_array_equal(pic, want)
    res, decoded = run(int16_model, "dec", signal=1)
    assert res.returncode == 0
    for pic in decoded:
        np.testing.assert_array_equal(pic, want)

    # a second model for the B picture (--CnnInterModel): the I picture as before, the B picture by the other
    # model; the header's id is both models'; the decoder follows with both, and refuses one alone
    other = Path(__file__).parents[1] / "codecnn" / "zoo" / "rdn-inloop-ai-v2.int16.cnnw"
    other_id = zlib.crc32(other.read_bytes()[12:]) & 0xFFFF
    res, pics = run(int16_model, signal=0, inter=other)
    assert res.returncode == 0 and "inter-picture luma filter" in res.stdout, res.stderr
    both = model_id ^ (((other_id << 8) | (other_id >> 8)) & 0xFFFF)
    assert payloads() == [bytes([0, 0x30, both >> 8, both & 0xFF]), b""]
    np.testing.assert_array_equal(pics[0], want)
    np.testing.assert_array_equal(pics[1], filter_plane_int(read_cnnw(other), plane, 8, 27))
    res, decoded = run(int16_model, "dec", signal=1, inter=other)
    assert res.returncode == 0 and all((a == b).all() for a, b in zip(decoded, pics, strict=True))
    res, _ = run(int16_model, "dec", signal=1)
    assert res.returncode == 1 and "coded with another model" in res.stderr, res.stderr
    res, _ = run("", signal=0, inter=other)
    assert res.returncode == 1 and "--CnnInterModel needs --CnnModel" in res.stderr, res.stderr

    # bad streams: one message, HM stops
    res, _ = run("", "dec", signal=1)  # a codecnn stream without the model
    assert res.returncode == 1 and "coded with a codecnn filter: give the encoder's --CnnModel" in res.stderr
    res, _ = run(int16_model, "dec", signal=0)  # a model but no signalling (PPS flag off)
    assert res.returncode == 1 and "carries no codecnn signalling" in res.stderr, res.stderr
    Path(f"{pay}.0").write_bytes(bytes([0, 0x40, 0, 0]))
    res, _ = run(int16_model, "dec", signal=1)
    assert res.returncode == 1 and "another version" in res.stderr, res.stderr
    Path(f"{pay}.0").write_bytes(bytes([0, 0x22, (model_id >> 8) ^ 1, model_id & 0xFF]))
    res, _ = run(int16_model, "dec", signal=1)
    assert res.returncode == 1 and "coded with another model" in res.stderr, res.stderr
    Path(f"{pay}.0").write_bytes(bytes([0, 0x22, model_id >> 8, model_id & 0xFF, 0x80 | 40, 0xFF]))  # 9 CTUs
    res, _ = run(int16_model, "dec", signal=1)
    assert res.returncode == 1 and "do not fit the picture" in res.stderr, res.stderr
    Path(f"{pay}.0").write_bytes(bytes([0, 0x32, model_id >> 8, model_id & 0xFF, 0x80 | 40, 0xC0]))  # g = 3
    res, _ = run(int16_model, "dec", signal=1)
    assert res.returncode == 1 and "do not fit the picture" in res.stderr, res.stderr
    Path(f"{pay}.0").unlink()
    Path(f"{pay}.1").write_bytes(bytes([40]))
    res, _ = run(int16_model, "dec", signal=1)  # parameters with no header before them
    assert res.returncode == 1 and "no codecnn header" in res.stderr, res.stderr
    Path(f"{pay}.1").unlink()

    # without a model: HM unchanged, nothing printed, nothing signalled
    res, pics = run("")
    assert res.returncode == 0 and res.stdout == "" and res.stderr == "" and payloads() == [b"", b""]
    np.testing.assert_array_equal(pics[0], plane)
    res, pics = run("", "dec", signal=0)
    assert res.returncode == 0
    np.testing.assert_array_equal(pics[1], plane)
    # bad models
    data = int16_model.read_bytes()
    v1 = tmp_path / "v1.cnnw"
    v1.write_bytes(_as_v1(data))
    res, pics = run(v1, signal=0)  # version 1: used, with a warning
    assert res.returncode == 0 and "(int16, no checksum)" in res.stdout, res.stderr
    assert f"codecnn: {v1}: warning: .cnnw version 1 has no checksum" in res.stderr and "re-export" in res.stderr
    np.testing.assert_array_equal(pics[0], want)
    damaged = tmp_path / "damaged.cnnw"
    damaged.write_bytes(_flip(data, _tensor_spans(data)[3][0] + 1, 2))
    res, _ = run(damaged)
    assert res.returncode == 1
    assert f"ERROR: codecnn: cannot use --CnnModel: {damaged}: the file is damaged" in res.stderr, res.stderr
    res, _ = run(tmp_path / "missing.cnnw")
    assert res.returncode == 1 and "ERROR: codecnn: cannot use --CnnModel" in res.stderr
    assert "cannot open the model file" in res.stderr
    res, _ = run(int16_model, signal=5)
    assert res.returncode == 1 and "--CnnSignal must be 0" in res.stderr, res.stderr
    bad = tmp_path / "bad.cnnw"
    bad.write_bytes(_reseal(data[:100]))  # truncated, its checksum made right: the structure is checked too
    res, _ = run(bad)
    assert res.returncode == 1 and "truncated" in res.stderr, res.stderr
    bad.write_bytes(data[:100])
    res, _ = run(bad)
    assert res.returncode == 1 and "the file is damaged" in res.stderr, res.stderr


@pytest.mark.slow
def test_export_reports_max_change_and_identity(checkpoint, restoration_h5, tmp_path):
    """The export report says how far the network moves samples: an untrained (identity) network is flagged."""
    from hm_bridge.export import export_checkpoint

    _, rep = export_checkpoint(checkpoint, tmp_path / "f.cnnw", calib=restoration_h5)
    assert rep["ctus"] > 0 and rep["max_change"] >= 1 and rep["identity"] is False
    assert isinstance(rep["max_change"], int)
    _, rep16 = export_checkpoint(checkpoint, tmp_path / "q.cnnw", int16=True, calib=restoration_h5)
    assert rep16["max_change"] >= 1 and rep16["identity"] is False and abs(rep16["max_change"] - rep["max_change"]) <= 2
    assert read_cnnw(tmp_path / "q.cnnw").header["int16_report"]["max_change"] == rep16["max_change"]
    assert export_checkpoint(checkpoint, tmp_path / "n.cnnw")[1] is None  # no CTUs at hand: nothing measured
    m = _model(qp_map=True)
    torch.nn.init.zeros_(m.last.weight)  # as RDN initialises it: the untrained network is the identity
    ident = tmp_path / "ident.pt"
    save_checkpoint(
        ident, {"task": "ctu-restoration", "arch": "rdn", "config": m.config.__dict__, "state_dict": m.state_dict()}
    )
    for int16 in (False, True):
        _, r = export_checkpoint(ident, tmp_path / f"i{int16}.cnnw", int16=int16, calib=restoration_h5)
        assert r["max_change"] == 0 and r["identity"] is True, (int16, r)


def test_onnx_export_checked_with_onnxruntime(checkpoint, tmp_path):
    pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install 'codecnn[onnx]')")
    import onnxruntime as ort

    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(cli, ["export", str(checkpoint), "--out", str(out), "--onnx"])
    assert r.exit_code == 0, r.output
    assert "max |diff|" in r.output
    from codecnn.train.checkpoint import load_model

    model, _ = load_model(checkpoint)
    x = torch.rand(3, 1, 52, 68)  # other sizes than the export's: the axes are dynamic
    qp = torch.tensor([22.0, 27.0, 37.0])
    got = ort.InferenceSession(str(out)).run(None, {"x": x.numpy(), "qp": qp.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x, qp).numpy(), atol=1e-5)


def _fake_hm(root: Path) -> Path:
    """Files with the lines patch-hm anchors on, in HM 16.x's layout (written here, not copied from HM)."""
    files = {
        "source/Lib/TLibEncoder/TEncGOP.cpp": '#include "TEncGOP.h"\nvoid f() {\n'
        "    xCreatePerPictureSEIMessages(iGOPid, leadingSeiMessages, nestedSeiMessages, pcSlice);\n"
        "    if (pcSlice->getSPS()->getUseSAO())\n    {\n      m_pcSAO->SAOProcess(pcPic);\n"
        "    }\n\n    std::size_t binCountsInNalUnits   = 0;\n    pcPic->compressMotion();\n}\n",
        "source/Lib/TLibEncoder/TEncTop.cpp": '#include "TEncTop.h"\nVoid TEncTop::xInitPPS(TComPPS &pps) {\n'
        "  xInitPPSforTiles(pps);\n}\n",
        "source/Lib/TLibEncoder/TEncCavlc.cpp": '#include "TEncCavlc.h"\nvoid c() {\n'
        "  if(pcSlice->getPPS()->getSliceHeaderExtensionPresentFlag())\n  {\n"
        '    WRITE_UVLC(0,"slice_segment_header_extension_length");\n  }\n}\n',
        "source/Lib/TLibDecoder/TDecCAVLC.cpp": '#include "TDecCAVLC.h"\nvoid d() {\n'
        '    READ_UVLC(uiCode,"slice_segment_header_extension_length");\n    for(Int i=0; i<uiCode; i++)\n'
        '    {\n      UInt ignored;\n      READ_CODE(8,ignored,"slice_segment_header_extension_data_byte");\n'
        "    }\n}\n",
        "source/Lib/TLibDecoder/TDecGop.cpp": '#include "TDecGop.h"\nvoid g() {\n'
        "  m_pcLoopFilter->loopFilterPic( pcPic );\n\n  if( pcSlice->getSPS()->getUseSAO() )\n  {\n"
        "    m_pcSAO->SAOProcess(pcPic);\n"
        "  }\n\n  pcPic->compressMotion();\n}\n",
        "source/App/TAppEncoder/TAppEncCfg.cpp": '#include "TAppEncCfg.h"\nBool TAppEncCfg::parseCfg(Int argc) {\n'
        '  opts.addOptions()\n  ("ReconFile,o", m_r, string(""), "recon");\n'
        "  // check validity\n  xCheckParameter();\n}\n",
        "source/Lib/TLibEncoder/TEncSearch.cpp": '#include "TEncSearch.h"\nvoid s() {\n'
        "      distParam.bApplyWeight = false;\n      for( Int modeIdx = 0; modeIdx < numModesAvailable; modeIdx++ )\n"
        "      {\n        UInt       uiMode = modeIdx;\n        Distortion uiSad  = 0;\n      }\n}\n",
        "source/App/TAppDecoder/TAppDecCfg.cpp": '#include "TAppDecCfg.h"\nvoid k() {\n  opts.addOptions()\n'
        '  ("ReconFile,o", m_r, string(""), "recon");\n}\n',
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "source/Lib/TLibCommon").mkdir(parents=True, exist_ok=True)
    return root


def test_patch_hm_is_idempotent_and_refuses_unknown_sources(tmp_path):
    from hm_bridge.__main__ import main

    hm = _fake_hm(tmp_path / "HM")
    r = CliRunner().invoke(main, ["patch-hm", str(hm)])
    assert r.exit_code == 0, r.output
    # the rebuild it prints is the one that works with HM 16.20's makefiles and GCC 12 (README step 3)
    flags = "-O3 -Wuninitialized -Wno-error -mavx2 -mfma -ffp-contract=off"
    assert f'make -C {hm}/build/linux release RELEASE_CPPFLAGS="{flags}"' in r.output
    enc = (hm / "source/Lib/TLibEncoder/TEncGOP.cpp").read_text().splitlines()
    i = next(k for k, ln in enumerate(enc) if "binCountsInNalUnits" in ln)  # after SAO, before the slices
    assert "codecnn_hm::filterLumaEncoder(" in enc[i - 1] and enc[i - 1].startswith("    ")  # right before, same indent
    assert enc[1].startswith('#include "TLibCommon/codecnn_hm.h"')
    assert set(HEADERS) == {p.name for p in CPP.glob("*.h")}  # every header (cnnw.h includes its parts)
    for name in HEADERS:
        assert (hm / "source/Lib/TLibCommon" / name).read_bytes() == (CPP / name).read_bytes()
    dec = (hm / "source/App/TAppDecoder/TAppDecCfg.cpp").read_text()
    assert '("CnnModel", codecnn_hm::modelPath()' in dec and "CnnSignal" not in dec
    cfg = (hm / "source/App/TAppEncoder/TAppEncCfg.cpp").read_text()
    assert '("CnnModel", codecnn_hm::modelPath()' in cfg and '("CnnSignal", codecnn_hm::signalMode(), 2,' in cfg
    top = (hm / "source/Lib/TLibEncoder/TEncTop.cpp").read_text()
    assert "pps.setSliceHeaderExtensionPresentFlag(codecnn_hm::extensionPresent());" in top
    cavlc = (hm / "source/Lib/TLibEncoder/TEncCavlc.cpp").read_text()
    assert 'WRITE_UVLC(0,"slice_segment_header_extension_length");' not in cavlc.split("(was: ")[0]
    assert "codecnn_hm::takeExtension(pcSlice->getPOC()" in cavlc
    reader = (hm / "source/Lib/TLibDecoder/TDecCAVLC.cpp").read_text()
    assert "codecnn_hm::receiveExtensionByte(pcSlice->getPOC(), i, ignored);" in reader
    before = {p: p.read_text() for p in (hm / "source").rglob("*.cpp")}
    r = CliRunner().invoke(main, ["patch-hm", str(hm)])
    assert r.exit_code == 0 and "already patched" in r.output
    assert {p: p.read_text() for p in (hm / "source").rglob("*.cpp")} == before
    other = _fake_hm(tmp_path / "HM2")
    (other / "source/Lib/TLibDecoder/TDecGop.cpp").write_text('#include "TDecGop.h"\nvoid g() {}\n')
    untouched = (other / "source/Lib/TLibEncoder/TEncGOP.cpp").read_text()
    r = CliRunner().invoke(main, ["patch-hm", str(other)])
    assert r.exit_code == 2 and "not supported by patch-hm" in r.output
    assert (other / "source/Lib/TLibEncoder/TEncGOP.cpp").read_text() == untouched  # nothing half-done
    r = CliRunner().invoke(main, ["patch-hm", str(tmp_path)])
    assert r.exit_code == 2 and "not an HM checkout" in r.output


def test_patch_hm_second_run_touches_nothing(tmp_path):
    """A second run rewrites no file (same mtimes: no HM rebuild); lines of an older hm_bridge are updated."""
    from hm_bridge.__main__ import main

    hm = _fake_hm(tmp_path / "HM")
    r = CliRunner().invoke(main, ["patch-hm", str(hm)])
    assert r.exit_code == 0, r.output
    files = [*(hm / "source").rglob("*.cpp"), *(hm / "source/Lib/TLibCommon").glob("*.h")]
    assert len(files) == 8 + len(HEADERS)  # 8 HM sources, the headers
    subprocess.run(["touch", "-d", "@1000000000", *map(str, files)], check=True)  # as after an old build
    before = {p: p.stat().st_mtime_ns for p in files}
    r = CliRunner().invoke(main, ["patch-hm", str(hm)])
    assert r.exit_code == 0 and "up to date" in r.output and "copied" not in r.output, r.output
    assert {p: p.stat().st_mtime_ns for p in files} == before
    enc = hm / "source/Lib/TLibEncoder/TEncGOP.cpp"
    text = enc.read_text()
    new_call = next(ln for ln in text.splitlines() if "filterLumaEncoder(" in ln)
    # as an older hm_bridge left it: the call after the slices were written, before compressMotion()
    old_call = "    codecnn_hm::filterLuma(a, b, c, d, e, f);  // codecnn hm_bridge"
    older = text.replace(new_call + "\n", "").replace(
        "    pcPic->compressMotion();", old_call + "\n    pcPic->compressMotion();"
    )
    enc.write_text(older)
    (hm / "source/Lib/TLibCommon/cnnw.h").write_text("// an older cnnw.h\n")
    r = CliRunner().invoke(main, ["patch-hm", str(hm)])
    assert r.exit_code == 0, r.output
    assert (
        enc.read_text() == text and (hm / "source/Lib/TLibCommon/cnnw.h").read_bytes() == (CPP / "cnnw.h").read_bytes()
    )
    # replaced lines keep HM's own line in their marker: taken out, the file is HM's again
    from hm_bridge.patch_hm import _unpatch

    clean = _fake_hm(tmp_path / "clean")
    for p in clean.rglob("*.cpp"):
        rel = p.relative_to(clean)
        assert "\n".join(_unpatch((hm / rel).read_text().split("\n"))) == p.read_text(), rel


SIGNAL_FUZZ = r"""// Feeds payloads to codecnn_signal::parse (one per line of the input file, hex) for a 176x144
// picture in 64x64 CTUs, the stream state carried from line to line as the decoder carries it (a line "--"
// starts a new stream), and applies each parsed choice to a picture; prints "ok" or "error <message>" per line
// ("reset" for "--").
#include <cstdio>
#include <string>
#include <vector>

#include "codecnn_signal.h"

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  std::FILE *in = std::fopen(argv[1], "r");
  if (!in) return 2;
  codecnn_signal::Stream stream;
  std::vector<short> pic(176 * 144, 100), filtered(176 * 144, 120);
  char line[4096];
  while (std::fgets(line, sizeof line, in)) {
    if (line[0] == '-') {
      stream = codecnn_signal::Stream();
      std::printf("reset\n");
      continue;
    }
    std::vector<unsigned char> p;
    for (const char *c = line; c[0] && c[1] && c[0] != '\n'; c += 2) {
      unsigned v = 0;
      std::sscanf(c, "%2x", &v);
      p.push_back(static_cast<unsigned char>(v));
    }
    codecnn_signal::Choice choice;
    std::string error;
    if (codecnn_signal::parse(p, 176, 144, 64, 0x1234, stream, choice, error)) {
      codecnn_signal::apply(&pic[0], 176, filtered, 176, 144, 8, 64, choice);
      std::printf("ok\n");
    } else {
      std::printf("error %s\n", error.empty() ? "(empty)" : error.c_str());
    }
  }
  std::fclose(in);
  return 0;
}
"""


def test_damaged_signalling_payloads_are_refused_under_asan(tmp_path):
    """Hostile payloads (random bytes, truncations and bit flips of good ones, headers of other versions,
    modes and models) parsed under ASan/UBSan as the decoder parses them: each either reads as a valid
    payload or is refused with a message, never a crash; and a payload is accepted only when its length is
    exactly what its header and flags say and the bits after its last flag are zero."""
    from hm_bridge.signal import parse_payload

    src = tmp_path / "fuzz.cpp"
    src.write_text(SIGNAL_FUZZ)
    exe = tmp_path / "fuzz"
    r = subprocess.run(
        [GXX, *STRICT, "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", f"-I{CPP}",
         "-o", str(exe), str(src)],
        capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode != 0:
        assert "[-W" not in r.stderr, r.stderr[-3000:]
        pytest.skip(f"cannot build with -fsanitize=address: {r.stderr[-300:]}")
    rng = np.random.default_rng(1)
    cases, versions = [], []  # each case: a new stream, a good header of version 1 or 2, then the payload
    for version in (1, 2, 3):
        header = bytes([0, version << 4 | 2, 0x12, 0x34])
        flags = bytes([0b10110000, 0x80]) if version < 3 else bytes([0b01101000])  # 9 CTUs / g 1, 4 groups
        good = [header, header + bytes([40]), header + bytes([0x80 | 40]) + flags, bytes([33]), b""]
        cases += [c for g in good for c in (None, header, g)]
        versions += [version] * len(good)
        for _ in range(150):
            base = good[int(rng.integers(0, len(good)))]
            kind = int(rng.integers(0, 3))
            if kind == 0:
                data = rng.integers(0, 256, int(rng.integers(1, 12)), dtype=np.uint8).tobytes()
            elif kind == 1 and base:
                data = base[: int(rng.integers(0, len(base)))]
            else:
                data = bytearray(base or b"\x00")
                data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
                data = bytes(data)
            cases += [None, header, data]
            versions.append(version)
    # the placement bit in a version 1 or 2 header (refused as another version), and a version 3 header that
    # moves the filter before SAO within the stream (refused as damaged)
    for version, first, then in ((1, 0x12, 0x16), (2, 0x22, 0x26), (3, 0x32, 0x36)):
        cases += [None, bytes([0, first, 0x12, 0x34]), bytes([0, then, 0x12, 0x34])]
        versions.append(version)
    # version 3's placement bit (0x04, before SAO): a stream placed before SAO reads; bit 3 is refused by both
    cases += [None, bytes([0, 0x36, 0x12, 0x34]), bytes([0x50 | 11]), None, bytes([0, 0x32, 0x12, 0x34])]
    cases += [bytes([0, 0x3A, 0x12, 0x34])]
    versions += [3, 3]
    # a padding bit set after the last flag (v1/v2: 9 CTU bits of 16; v3: 2 + 4 group bits of 8): refused
    padded = {1: bytes([0x80 | 40, 0b10110000, 0x81]), 2: bytes([0x80 | 0x50, 0b10110000, 0x84]),
              3: bytes([0x80 | 0x50, 0b01101001])}  # fmt: skip
    for version, data in padded.items():
        cases += [None, bytes([0, version << 4 | 2, 0x12, 0x34]), data]
        versions.append(version)
    listing = tmp_path / "payloads.txt"
    listing.write_text("".join("--\n" if c is None else c.hex() + "\n" for c in cases))
    res = subprocess.run([str(exe), str(listing)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert len(lines) == len(cases) and lines[::3] == ["reset"] * (len(cases) // 3)
    assert lines[1::3] == ["ok"] * (len(cases) // 3)  # the good header
    outcomes, payloads = lines[2::3], cases[2::3]
    assert [outcomes[i] for v in range(3) for i in range(155 * v, 155 * v + 5)] == ["ok"] * 15  # the good payloads
    assert all("padding bits set" in o for o in outcomes[-3:]), outcomes[-3:]
    assert outcomes[-5] == "ok" and "another version" in outcomes[-4], outcomes[-5:-3]
    assert all("another version" in o for o in outcomes[-8:-6]) and "changes its mode, placement" in outcomes[-6]
    refused = [o for o in outcomes if o.startswith("error ")]
    assert refused and all("(empty)" not in o for o in refused)
    for data, version, outcome in zip(payloads, versions, outcomes, strict=True):
        try:  # the Python twin agrees on which payloads are readable (the stream state aside)
            parse_payload(data, 176, 144, 64, version=version)
            twin = "ok"
        except ValueError:
            twin = "error"
        if outcome == "ok" or "do not fit" in outcome or "another version" in outcome:
            assert outcome.split()[0] == twin, (data.hex(), outcome)
