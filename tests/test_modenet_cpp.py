"""The mode network in C++ (hm_bridge/cpp/cnnw_modenet.h): export, equality with PyTorch (float32) and with the
numpy twin (int16, bit for bit), refusals."""

import subprocess

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_hm_bridge import CPP, _build, _compiler, _cpu_has

from codecnn.cli import cli
from codecnn.errors import CodecnnError
from codecnn.models.modenet import ModeNet
from codecnn.train.checkpoint import save_checkpoint
from hm_bridge.format import INT16, MODES_VERSION, read_cnnw, write_cnnw
from hm_bridge.modenet import (
    graph_from_modenet,
    int_canvas,
    quantise_modenet,
    run_modenet_graph,
    run_modenet_int,
    top_modes,
)

ZOO_MODENET = CPP.parent.parent / "codecnn" / "zoo" / "modenet-hm-c8d1.pt"

SHAPES = {  # the zoo's options, and the others each op must handle (channels not a multiple of 8, no pooling)
    "small": dict(channels=8, depth=2, hidden=32, normalise=True, pool_to=9, size_heads=True),
    "odd": dict(channels=5, depth=3, hidden=20, spp_levels=(1, 3)),
    "wide": dict(channels=24, depth=2, hidden=16, normalise=True, pool_to=17, size_heads=True),
}


def _net(shape: str, seed: int = 0) -> ModeNet:
    torch.manual_seed(seed)
    return ModeNet(**SHAPES[shape]).eval()


def _canvases(n: int, count: int, seed: int = 0) -> torch.Tensor:
    """Canvases as codecnn.data.intra.canvas makes them: a block, references where available (some
    unavailable, one block with none)."""
    g = torch.Generator().manual_seed(seed)
    side = 2 * n + 1
    x = torch.zeros(count, 3, side, side)
    x[:, 0, 1 : n + 1, 1 : n + 1] = torch.rand(count, n, n, generator=g)
    avail = (torch.rand(count, side, side, generator=g) > 0.3).float()
    avail[:, 1:, 1:] = 0
    avail[0] = 0
    x[:, 2] = avail
    x[:, 1] = torch.rand(count, side, side, generator=g) * avail
    return x


@pytest.fixture(scope="module")
def mtool(tmp_path_factory):
    cxx = _compiler("g++")
    d = tmp_path_factory.mktemp("modecpp")
    opts = ["-O0 -DCNNW_NO_SIMD", "-O3"] + (["-O3 -mavx2 -mfma"] if _cpu_has("avx2", "fma") else [])
    return {o: _build(cxx, o.split(), CPP / "cnnw_modenet_tool.cpp", d / f"t{o.replace(' ', '')}") for o in opts}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_graph_runner_equals_pytorch(shape, tmp_path):
    m = _net(shape)
    g = read_cnnw(write_cnnw(graph_from_modenet(m), tmp_path / "m.cnnw"))
    assert g.version == MODES_VERSION and g.header["arch"] == "modenet"
    for n in (4, 8, 16, 32):
        x = _canvases(n, 3)
        ref = m(x, torch.full((3,), n), torch.full((3,), 37)).detach().numpy()
        for i in range(3):
            np.testing.assert_allclose(run_modenet_graph(g, x[i].numpy(), n, 37), ref[i], atol=1e-5)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_cpp_float_equals_pytorch(mtool, shape, tmp_path):
    m = _net(shape, seed=1)
    path = write_cnnw(graph_from_modenet(m), tmp_path / "m.cnnw")
    for n in (4, 8, 16, 32):
        x = _canvases(n, 8, seed=n)
        ref = m(x, torch.full((8,), n), torch.full((8,), 22)).detach().numpy()
        x.numpy().astype("<f4").tofile(tmp_path / "in.f32")
        for opt, exe in mtool.items():
            subprocess.run(
                [str(exe), "run", str(path), str(tmp_path / "in.f32"), str(n), "22", "8", str(tmp_path / "o")],
                check=True,
            )
            out = np.fromfile(tmp_path / "o", "<f4").reshape(8, 35)
            np.testing.assert_allclose(out, ref, atol=2e-5, err_msg=f"{opt} N={n}")
            assert (out.argmax(1) == ref.argmax(1)).all()


def test_export_command_writes_a_mode_network(mtool, tmp_path):
    m = _net("small")
    ck = tmp_path / "modenet.pt"
    save_checkpoint(
        ck, {"task": "intra-modes", "arch": "modenet", "config": m.config.__dict__, "state_dict": m.state_dict()}
    )
    r = CliRunner().invoke(cli, ["export", str(ck), "--out", str(tmp_path / "m.cnnw")])
    assert r.exit_code == 0, r.output
    assert "float32 mode network, .cnnw version 3" in r.output
    r = CliRunner().invoke(cli, ["export", str(ck), "--out", str(tmp_path / "m16.cnnw"), "--int16"])
    assert r.exit_code != 0 and "needs real blocks to calibrate on: pass --calib MODES.h5" in r.output
    r = CliRunner().invoke(cli, ["export", str(ck), "--out", str(tmp_path / "m.onnx"), "--onnx"])
    assert r.exit_code != 0 and "a mode network exports as a .cnnw file only" in r.output
    exe = next(iter(mtool.values()))
    ok = subprocess.run([str(exe), "check", str(tmp_path / "m.cnnw")], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("CRC-32 0x")


def test_wrong_task_and_damaged_files_are_refused_with_one_line(mtool, tmp_path):
    exe = next(iter(mtool.values()))
    mode = write_cnnw(graph_from_modenet(_net("small")), tmp_path / "m.cnnw")
    rdn = CPP.parent.parent / "codecnn" / "zoo" / "rdn-inloop-ai-v2.int16.cnnw"

    def refusal(path):
        r = subprocess.run([str(exe), "check", str(path)], capture_output=True, text=True)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        return r.stderr

    assert "a luma filter (.cnnw version 2), not a mode network" in refusal(rdn)
    data = bytearray(mode.read_bytes())
    data[len(data) // 2] ^= 4
    (tmp_path / "bad.cnnw").write_bytes(bytes(data))
    assert "the file is damaged" in refusal(tmp_path / "bad.cnnw")
    (tmp_path / "short.cnnw").write_bytes(bytes(data[:40]))
    assert "damaged" in refusal(tmp_path / "short.cnnw")
    assert "cannot open" in refusal(tmp_path / "none.cnnw")
    # and the other way round: cnnw.h (the luma filter's reader) refuses a mode network as such
    tool = _build(_compiler("g++"), ["-O1"], CPP / "cnnw_tool.cpp", tmp_path / "cnnw_tool")
    r = subprocess.run([str(tool), str(mode), "x.yuv", "8", "8", "8", "32", "o.raw"], capture_output=True, text=True)
    assert r.returncode != 0 and "a mode network (.cnnw version 3" in r.stderr
    with pytest.raises(CodecnnError, match="not a mode network"):
        from hm_bridge.format import read_cnnw as rd

        run_modenet_graph(rd(rdn), np.zeros((3, 9, 9), np.float32), 4, 32)


MODES_GLUE = r"""// HM's types as far as the lines patch-hm inserts into TEncSearch.cpp and TAppEncCfg.cpp use
// them (written here, not copied from HM).
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "TLibCommon/codecnn_hm.h"
#include "TLibCommon/codecnn_modes_hm.h"

typedef short Pel;
typedef int Int;
typedef unsigned UInt;
typedef bool Bool;
enum ComponentID { COMPONENT_Y };
enum ChannelType { CHANNEL_TYPE_LUMA };
struct TComRectangle {
  UInt width, height, x0, y0;
};
struct TComSPS {
  int bitDepth;
  UInt w, h, ctu;
  int getBitDepth(ChannelType) const { return bitDepth; }
  UInt getPicWidthInLumaSamples() const { return w; }
  UInt getPicHeightInLumaSamples() const { return h; }
  UInt getMaxCUWidth() const { return ctu; }
};
struct TComDataCU {
  UInt pelX, pelY;
  int qp, mpm[3];
  void getIntraDirPredictor(UInt, Int preds[3], ComponentID, Int * = NULL) const {
    for (int i = 0; i < 3; ++i) preds[i] = mpm[i];
  }
  signed char getQP(UInt) const { return static_cast<signed char>(qp); }
  UInt getCUPelX() const { return pelX; }
  UInt getCUPelY() const { return pelY; }
};
static Pel g_ref[65 * 65];
static Pel *getPredictorPtr(ComponentID, bool) { return g_ref; }

static Int search(TComDataCU *pcCU, UInt uiPartOffset, Pel *piOrg, UInt uiStride, const TComRectangle &puRect,
                  const TComSPS &sps, Int numModesForFullRD, std::vector<int> &evaluated) {
@PRUNE@
  for (Int modeIdx = 0; modeIdx < 35; modeIdx++) {
    UInt uiMode = modeIdx;
@SKIP@
    evaluated.push_back(static_cast<int>(uiMode));
  }
  return numModesForFullRD;
}

static void parseCfg() {
@PREPARE@
}

// modes MODEL K RD CASES.txt [FILTERMODEL [MINSIZE]]: each line "N X Y QP MPM0 MPM1 MPM2" then N*N block samples and
// (2N+1)^2 samples of HM's unfiltered reference buffer; prints per case "rd R modes m..." (FILTERMODEL: the
// luma filter's --CnnModel)
int main(int argc, char **argv) {
  if (argc < 5 || argc > 7) return 2;
  if (argc >= 6) codecnn_hm::modelPath() = argv[5];
  if (argc == 7) codecnn_modes::minSize() = std::atoi(argv[6]);
  codecnn_modes::modelPath() = argv[1];
  codecnn_modes::topK() = std::atoi(argv[2]);
  codecnn_modes::rdCount() = std::atoi(argv[3]);
  parseCfg();
  std::FILE *in = std::fopen(argv[4], "r");
  if (!in) return 2;
  int n, x, y, qp, m0, m1, m2;
  while (std::fscanf(in, "%d %d %d %d %d %d %d", &n, &x, &y, &qp, &m0, &m1, &m2) == 7) {
    std::vector<Pel> org(n * n);
    for (int i = 0; i < n * n; ++i) std::fscanf(in, "%hd", &org[i]);
    for (int i = 0; i < (2 * n + 1) * (2 * n + 1); ++i) std::fscanf(in, "%hd", &g_ref[i]);
    TComDataCU cu = {static_cast<UInt>(x), static_cast<UInt>(y), qp, {m0, m1, m2}};
    TComRectangle rect = {static_cast<UInt>(n), static_cast<UInt>(n), 0, 0};
    TComSPS sps = {8, 176, 144, 64};
    std::vector<int> evaluated;
    const Int rd = search(&cu, 0, &org[0], static_cast<UInt>(n), rect, sps, n <= 8 ? 8 : 3, evaluated);
    std::printf("rd %d modes", rd);
    for (size_t i = 0; i < evaluated.size(); ++i) std::printf(" %d", evaluated[i]);
    std::printf("\n");
  }
  std::fclose(in);
  return 0;
}
"""


def _hm_ref_buffer(ref: np.ndarray, n: int) -> np.ndarray:
    """HM's unfiltered reference buffer ((2N+1)^2: row 0 corner and top, column 0 left) from linear references
    (left bottom to top, corner, top); unavailable samples (-1) as 77, HM's substitution not modelled."""
    buf = np.zeros((2 * n + 1, 2 * n + 1), np.int64)
    r = np.where(ref >= 0, ref, 77)
    buf[0, 0] = r[2 * n]
    buf[0, 1:] = r[2 * n + 1 :]
    buf[1:, 0] = r[: 2 * n][::-1]
    return buf


def test_hm_glue_prunes_the_rmd_to_the_networks_top_k_and_the_mpms(tmp_path):
    """The lines patch-hm inserts into TEncSearch.cpp (before and in the RMD loop) and TAppEncCfg.cpp, compiled
    (strict flags) against the copied headers and mock HM types, on blocks of a real frame at picture edges,
    CTU edges and inside CTUs: the RMD evaluates exactly the network's top k (PyTorch on the canvas made with
    HEVC's z-scan availability, codecnn.hevc.intra_labels) plus the MPMs; the full-RD count is
    min(--CnnModeRd or HM's, modes evaluated); an int16 model's top k those of the numpy twin on the integer
    canvas; without a model every mode; bad options and models stop HM with one line."""
    from conftest import HM
    from test_hm_bridge import _fake_hm

    from codecnn.data.intra import canvas
    from codecnn.hevc.intra_labels import label_blocks
    from codecnn.yuv import RawYuvReader
    from hm_bridge.__main__ import main

    hm = _fake_hm(tmp_path / "HM")
    r = CliRunner().invoke(main, ["patch-hm", str(hm)])
    assert r.exit_code == 0, r.output
    search = (hm / "source/Lib/TLibEncoder/TEncSearch.cpp").read_text().splitlines()
    cfg = (hm / "source/App/TAppEncoder/TAppEncCfg.cpp").read_text().splitlines()
    prune = next(ln for ln in search if "codecnn_modes::pruneRmd(" in ln)
    skip = next(ln for ln in search if "cnnAllowed[uiMode]" in ln)
    prepare = next(ln for ln in cfg if "codecnn_modes::prepare(" in ln)
    assert any('("CnnModeModel", codecnn_modes::modelPath()' in ln and "CnnModeRd" in ln for ln in cfg)
    src = tmp_path / "modes.cpp"
    src.write_text(MODES_GLUE.replace("@PRUNE@", prune).replace("@SKIP@", skip).replace("@PREPARE@", prepare))
    exe = _build(
        _compiler("g++"),
        ["-O2", "-mavx2", "-mfma"] if _cpu_has("avx2", "fma") else ["-O2"],
        src,
        tmp_path / "modes",
        include=[hm / "source" / "Lib"],
    )
    m = _net("small", seed=3)
    model = write_cnnw(graph_from_modenet(m), tmp_path / "m.cnnw")
    y = RawYuvReader(HM / "carphone" / "orig.yuv", 176, 144).read(1).y
    cases, expected, ints = [], [], []
    lines = []
    for n, picks in (
        (4, [(0, 0), (0, 60), (4, 4), (60, 64), (140, 172), (64, 60)]),
        (8, [(8, 8), (56, 56)]),
        (16, [(16, 48), (128, 160)]),
        (32, [(32, 32), (96, 128)]),
    ):
        lab = label_blocks(y, y, n, threads=1)
        for py, px in picks:
            i = int(np.flatnonzero((lab.pos[:, 0] == py) & (lab.pos[:, 1] == px))[0])
            patch = np.zeros((2 * n + 1, 2 * n + 1), np.int64)
            patch[1 : n + 1, 1 : n + 1] = y[py : py + n, px : px + n]
            c = torch.from_numpy(canvas(patch, lab.ref[i], n, 255.0))[None]
            ints.append((int_canvas(patch, lab.ref[i], n), c[0].numpy(), n))
            logits = m(c, torch.tensor([n]), torch.tensor([32]))[0].detach().numpy()
            mpm = (0, 1, 26)
            for k in (1, 6):
                top = set(np.argsort(-logits, kind="stable")[:k].tolist()) | set(mpm)
                expected.append((k, n, sorted(top)))
            block = " ".join(map(str, y[py : py + n, px : px + n].ravel()))
            lines.append(f"{n} {px} {py} 32 {' '.join(map(str, mpm))}\n{block}\n")
            lines.append(" ".join(map(str, _hm_ref_buffer(lab.ref[i], n).ravel())) + "\n")
            cases.append((n, py, px))
    (tmp_path / "cases.txt").write_text("".join(lines))

    def run(model_path, k, rd, *filter_model):
        argv = [str(exe), str(model_path), str(k), str(rd), str(tmp_path / "cases.txt"), *map(str, filter_model)]
        return subprocess.run(argv, capture_output=True, text=True)

    for k, rd in ((1, 0), (6, 2)):
        res = run(model, k, rd)
        assert res.returncode == 0, res.stderr
        assert f"top {k} modes" in res.stdout
        got = [ln.split() for ln in res.stdout.splitlines() if ln.startswith("rd ")]
        want = [e for e in expected if e[0] == k]
        assert len(got) == len(want) == len(cases)
        for (n, py, px), g, (_, _, modes) in zip(cases, got, want, strict=True):
            assert sorted(map(int, g[3:])) == modes, (n, py, px)
            hm_count = 8 if n <= 8 else 3
            assert int(g[1]) == min(rd or hm_count, hm_count, len(modes))
    # an int16 model (calibrated on these blocks): the RMD evaluates the twin's top k and the MPMs
    q = quantise_modenet(graph_from_modenet(m), [(fc, n, 32) for _, fc, n in ints])
    res = run(write_cnnw(q, tmp_path / "m16.cnnw"), 6, 2)
    assert res.returncode == 0 and "(int16, CRC-32 " in res.stdout, res.stderr
    got = [ln.split() for ln in res.stdout.splitlines() if ln.startswith("rd ")]
    assert len(got) == len(ints)
    for (ic, _, n), g in zip(ints, got, strict=True):
        top = set(top_modes(run_modenet_int(q, ic, n, 32, 8), 6).tolist()) | {0, 1, 26}
        assert sorted(map(int, g[3:])) == sorted(top)
    res = run(model, 1, 0, "", 16)  # --CnnModeMinSize 16: 4x4 and 8x8 blocks keep HM's full RMD
    got = [ln.split() for ln in res.stdout.splitlines() if ln.startswith("rd ")]
    assert res.returncode == 0 and "blocks 16x16 and up" in res.stdout
    for (n, _, _), g, (_, _, modes) in zip(cases, got, [e for e in expected if e[0] == 1], strict=True):
        assert sorted(map(int, g[3:])) == (list(range(35)) if n < 16 else modes)
    res = run("", 10, 2)  # no model: every mode, the RD count alone reduced
    got = [ln.split() for ln in res.stdout.splitlines() if ln.startswith("rd ")]
    assert res.returncode == 0 and all(g[3:] == [str(i) for i in range(35)] for g in got)
    assert [int(g[1]) for g in got] == [2] * len(cases)
    rdn = CPP.parent.parent / "codecnn" / "zoo" / "rdn-inloop-ai-v2.int16.cnnw"
    damaged = bytearray(model.read_bytes())
    damaged[-3] ^= 1
    (tmp_path / "bad.cnnw").write_bytes(bytes(damaged))
    for args, msg in (
        ((model, 0, 0), "--CnnModeK 0 is out of range"),
        ((model, 36, 0), "--CnnModeK 36 is out of range"),
        ((model, 10, 9), "--CnnModeRd 9 is out of range"),
        ((model, 10, 0, "", 5), "--CnnModeMinSize 5 is not a block size"),
        ((model, 10, -1), "--CnnModeRd -1 is out of range"),
        ((rdn, 10, 0), "a luma filter (.cnnw version 2), not a mode network"),
        ((tmp_path / "bad.cnnw", 10, 0), "the file is damaged"),
        ((tmp_path / "none.cnnw", 10, 0), "cannot open"),
        (("", 10, 0, model), "cannot use --CnnModel: " + str(model) + ": a mode network (.cnnw version 3), not a"),
    ):
        res = run(*args)
        assert res.returncode == 1 and res.stdout == "", res.stdout
        lines_err = [ln for ln in res.stderr.splitlines() if ln]
        assert len(lines_err) == 1 and lines_err[0].startswith("ERROR: codecnn: ") and msg in lines_err[0], res.stderr


@pytest.mark.parametrize("precision", ["float32", "int16"])
def test_loader_survives_truncated_and_flipped_files_under_asan(precision, tmp_path):
    """Truncated mode networks, and bit flips with the checksum made right again (so the parser's own checks
    are what refuses them), under ASan/UBSan: each refused with a message or loaded and run on a block of
    every size, never a crash or an out-of-bounds access (float32 and int16 models: an int16 one's flipped
    scales, weights and biases included)."""
    import zlib

    from test_hm_bridge import GXX, STRICT

    exe = tmp_path / "t"
    cmd = [GXX, *STRICT, "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-o", str(exe)]
    r = subprocess.run([*cmd, str(CPP / "cnnw_modenet_tool.cpp")], capture_output=True, text=True)
    if r.returncode != 0:
        assert "[-W" not in r.stderr, r.stderr[-3000:]
        pytest.skip(f"cannot build with -fsanitize=address: {r.stderr[-300:]}")
    g = graph_from_modenet(_net("odd"))
    if precision == "int16":
        g = quantise_modenet(g, [(x.numpy(), n, 32) for n in (4, 8, 16, 32) for x in _canvases(n, 2)])
    data = write_cnnw(g, tmp_path / "m.cnnw").read_bytes()
    rng = np.random.default_rng(0)
    reseal = lambda b: b[:8] + zlib.crc32(b[12:]).to_bytes(4, "little") + b[12:]  # noqa: E731
    cases = [data] + [data[:cut] for cut in sorted(set(rng.integers(0, len(data), 40).tolist()) | {0, 4, 8, 12})]
    head = len(data) - 400  # the nodes and the last tensors: where a flip changes the structure
    for _ in range(150):
        pos = int(rng.integers(12, len(data)) if rng.random() < 0.3 else rng.integers(head, len(data)))
        b = bytearray(data)
        b[pos] ^= 1 << int(rng.integers(0, 8))
        cases.append(reseal(bytes(b)))
    files = []
    for i, b in enumerate(cases):
        files.append(tmp_path / f"c{i}.cnnw")
        files[-1].write_bytes(b)
    r = subprocess.run([str(exe), "checks", *map(str, files)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(files) and lines[0] == "OK"
    assert all(not ln.startswith("OK") for ln in lines[1:41])  # every truncation refused
    refused = [ln for ln in lines[41:] if ln != "OK"]
    assert refused and all(ln.startswith(str(tmp_path)) for ln in refused)


# --------------------------------------------------------------------------------------------------
# int16


def _real_blocks(frame: int, per_size: int, bit_depth: int = 8, seed: int = 0) -> list[tuple]:
    """Blocks of a frame of the real carphone clip (open-loop references, HEVC's z-scan availability), spread over
    the frame: (integer canvas, float canvas, n). At 10 bits the 8-bit samples x 4 plus 0..3 of noise."""
    from conftest import HM

    from codecnn.data.intra import canvas, context_patches
    from codecnn.hevc.intra_labels import label_blocks
    from codecnn.yuv import RawYuvReader, sample_peak

    y = RawYuvReader(HM / "carphone" / "orig.yuv", 176, 144).read(frame).y.astype(np.int64)
    if bit_depth == 10:
        y = y * 4 + np.random.default_rng(seed).integers(0, 4, y.shape)
    out = []
    for n in (4, 8, 16, 32):
        lab = label_blocks(y, y, n, bit_depth=bit_depth, threads=1, with_hadamard=False)
        rows = np.unique(np.linspace(0, len(lab.pos) - 1, min(per_size, len(lab.pos))).astype(int))
        orig = context_patches(y, lab.pos[rows], n)
        ic = int_canvas(orig, lab.ref[rows], n)
        fc = canvas(orig, lab.ref[rows], n, np.full(len(rows), sample_peak(bit_depth), np.float32))
        out += [(ic[i], fc[i], n) for i in range(len(rows))]
    return out


@pytest.fixture(scope="module")
def zoo_int16(tmp_path_factory):
    """The zoo's modenet-hm-c8d1 (the model HM runs) as float and int16 graphs, calibrated on real blocks of
    carphone's frame 0 (QP 32), and real blocks of frame 5 to compare on."""
    from codecnn.train.checkpoint import load_model

    model, _ = load_model(ZOO_MODENET, task="intra-modes")
    g = graph_from_modenet(model)
    q = quantise_modenet(g, [(fc, n, 32) for _, fc, n in _real_blocks(0, 64)])
    path = write_cnnw(q, tmp_path_factory.mktemp("zoo16") / "c8d1.int16.cnnw")
    return g, read_cnnw(path), path, _real_blocks(5, 96)


def _run_int_cpp(exe, model, blocks, n, qp, bit_depth, d):
    ic = np.stack([b[0] for b in blocks if b[-1] == n]).astype("<i4")
    ic.tofile(d / "in.i32")
    argv = [str(exe), "runint", str(model), str(d / "in.i32"), str(n), str(qp), str(bit_depth), str(len(ic))]
    subprocess.run([*argv, str(d / "o.i16")], check=True)
    return ic, np.fromfile(d / "o.i16", "<i2").reshape(len(ic), 35)


def test_int16_cpp_equals_python_twin_on_real_blocks(mtool, zoo_int16, tmp_path):
    """The zoo's mode network in int16: C++ (portable -O0, -O3, AVX2 builds) gives the numpy twin's integer logits
    bit for bit on real blocks of every size, at QPs 22 and 37 and open loop's -1."""
    _, q, path, blocks = zoo_int16
    assert read_cnnw(path).header["precision"] == "int16" and q.version == MODES_VERSION
    for n in (4, 8, 16, 32):
        for qp in (22, 37, -1):
            want = None
            for opt, exe in mtool.items():
                ic, got = _run_int_cpp(exe, path, blocks, n, qp, 8, tmp_path)
                if want is None:
                    want = np.stack([run_modenet_int(q, c, n, qp, 8) for c in ic])
                np.testing.assert_array_equal(got, want, err_msg=f"{opt} N={n} QP={qp}")


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_int16_cpp_equals_python_twin_every_shape(mtool, shape, tmp_path):
    """Every op's integer path (no normalisation, no pooling, channels not a multiple of 8, pooling of 16x16 and
    32x32 canvases, a shared head) on real 8-bit and 10-bit blocks: C++ == the twin bit for bit."""
    g = graph_from_modenet(_net(shape, seed=2))
    for bd in (8, 10):
        q = quantise_modenet(g, [(fc, n, 27) for _, fc, n in _real_blocks(1, 8, bd)])
        path = write_cnnw(q, tmp_path / f"m{bd}.cnnw")
        blocks = _real_blocks(3, 12, bd, seed=1)
        for n in (4, 8, 16, 32):
            for opt, exe in mtool.items():
                ic, got = _run_int_cpp(exe, path, blocks, n, 30, bd, tmp_path)
                want = np.stack([run_modenet_int(q, c, n, 30, bd) for c in ic])
                np.testing.assert_array_equal(got, want, err_msg=f"{opt} N={n} {bd}-bit")


def test_int16_ranking_agrees_with_float(zoo_int16):
    """The int16 zoo network ranks the modes as the float one on real blocks it was not calibrated on (308 blocks
    of carphone's frame 5, QP 32): the same top-1 mode on at least 97% of them (measured: 100%; 99.7% at QPs 22
    and 37), the float top-1 always in the int16 top 10, and the top-10 sets sharing at least 98% of their
    modes (measured: 99.97%)."""
    from hm_bridge.modenet import agreement

    g, q, _, blocks = zoo_int16
    r = agreement(g, q, [(ic, fc, n, 32, 8) for ic, fc, n in blocks])
    assert r["blocks"] == len(blocks) > 250
    assert r["top1_agree"] >= 0.97 and r["top10_overlap"] >= 0.98 and r["float_top1_in_int_top10"] == 1.0, r


@pytest.fixture(scope="module")
def modes_open_h5(tmp_path_factory):
    """A small intra-modes dataset of real blocks (carphone frame 2, open loop: no encode)."""
    from conftest import HM

    d = tmp_path_factory.mktemp("modes16")
    (d / "carphone_176x144_30.yuv").write_bytes((HM / "carphone" / "orig.yuv").read_bytes())
    (d / "l.toml").write_text(
        '[list]\nname = "l"\n[[sequence]]\nname = "a"\nfile = "carphone_176x144_30.yuv"\nsplit = "val"\n'
    )
    argv = ["make-dataset", "--task", "intra-modes", "--loop", "open", "--list", str(d / "l.toml"), "--seq-dir",
            str(d), "--frames", "1", "--start", "2", "--jobs", "1", "--out", str(d / "modes.h5")]  # fmt: skip
    r = CliRunner().invoke(cli, argv)
    assert r.exit_code == 0, r.output
    return d / "modes.h5"


def test_export_int16_command(mtool, modes_open_h5, tmp_path):
    """codecnn export MODENET --int16 --calib MODES.h5: an int16 version 3 file, calibrated on half the dataset's
    blocks, its agreement with the float network on the other half printed and kept in its header; the C++
    loads it; without real blocks it is refused."""
    out = tmp_path / "m16.cnnw"
    r = CliRunner().invoke(
        cli, ["export", str(ZOO_MODENET), "--out", str(out), "--int16", "--calib", str(modes_open_h5)]
    )
    assert r.exit_code == 0, r.output
    assert "int16 mode network, .cnnw version 3" in r.output and "top-1 the same on" in r.output
    g = read_cnnw(out)
    rep = g.header["int16_report"]
    assert g.version == MODES_VERSION and g.header["precision"] == "int16" and rep["calibration"] == str(modes_open_h5)
    assert rep["top1_agree"] >= 0.95 and rep["blocks"] > 100
    assert out.read_bytes()[12:16] == INT16.to_bytes(4, "little")
    ok = subprocess.run([str(next(iter(mtool.values()))), "check", str(out)], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout == f"CRC-32 {g.crc32:#010x}\n"
    r = CliRunner().invoke(cli, ["export", str(ZOO_MODENET), "--out", str(tmp_path / "x.cnnw"), "--int16"])
    assert r.exit_code != 0 and "needs real blocks to calibrate on" in r.output  # its training data is not here


def test_int16_refusals_are_one_line(mtool, zoo_int16, tmp_path):
    """An int16 mode network given to a float reader (the float run, run_modenet_graph, the luma filter's cnnw.h)
    is refused with one line that says what it is, as are a float model run on integer samples, an int16 luma
    filter given as a mode network, a damaged int16 file and one whose scales do not chain."""
    import zlib

    exe = next(iter(mtool.values()))
    g, q, path, _ = zoo_int16
    fl = write_cnnw(g, tmp_path / "f.cnnw")
    rdn = CPP.parent.parent / "codecnn" / "zoo" / "rdn-inloop-ai-v2.int16.cnnw"
    np.zeros((1, 3, 9, 9), "<f4").tofile(tmp_path / "c.f32")
    np.zeros((1, 3, 9, 9), "<i4").tofile(tmp_path / "c.i32")

    def refusal(*argv):
        r = subprocess.run([str(exe), *map(str, argv)], capture_output=True, text=True)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        return r.stderr

    msg = refusal("run", path, tmp_path / "c.f32", 4, 32, 1, tmp_path / "o")
    assert "an int16 mode network runs on integer samples (runInt), not on a float canvas" in msg
    msg = refusal("runint", fl, tmp_path / "c.i32", 4, 32, 8, 1, tmp_path / "o")
    assert "a float32 mode network runs on a float canvas (run), not on integer samples" in msg
    assert "a luma filter (.cnnw version 2), not a mode network" in refusal("check", rdn)
    with pytest.raises(CodecnnError, match="an int16 mode network runs on integer samples"):
        run_modenet_graph(q, np.zeros((3, 9, 9), np.float32), 4, 32)
    with pytest.raises(CodecnnError, match="a float32 mode network"):
        run_modenet_int(g, np.zeros((3, 9, 9), np.int32), 4, 32)
    data = bytearray(path.read_bytes())
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 4
    (tmp_path / "bad.cnnw").write_bytes(bytes(flipped))
    assert "the file is damaged" in refusal("check", tmp_path / "bad.cnnw")
    # the last node's scale (its last parameter, the file's last 4 bytes) set apart from the chain's rules: a
    # ReLU's scale is its convolution's; here the head's own may be anything in 0..16, so change the first ReLU's
    relu = next(i for i, nd in enumerate(q.nodes) if nd.op == 4)
    q2 = read_cnnw(path)
    q2.nodes[relu].params[-1] += 1
    bad = write_cnnw(q2, tmp_path / "chain.cnnw")
    assert "not a mode network's chain" in refusal("check", bad)
    q2.nodes[relu].params[-1] -= 1
    q2.tensor_q[q2.nodes[relu - 1].params[1]] += 1  # the conv's bias not at q_w + q_in
    assert "not a mode network's chain" in refusal("check", write_cnnw(q2, tmp_path / "bias.cnnw"))
    # and the luma filter's reader refuses an int16 mode network as a mode network
    tool = _build(_compiler("g++"), ["-O1"], CPP / "cnnw_tool.cpp", tmp_path / "cnnw_tool")
    r = subprocess.run([str(tool), str(path), "x.yuv", "8", "8", "8", "32", "o.raw"], capture_output=True, text=True)
    assert r.returncode != 0 and "a mode network (.cnnw version 3" in r.stderr and r.stderr.count("\n") == 1
    assert zlib.crc32(bytes(data[12:])) == q.crc32


def _edge_canvases(n: int, bit_depth: int) -> np.ndarray:
    """Integer canvases at the edges of the normalisation: a flat block and flat references (zero deviation, the
    clamp), no reference available (the mean P / 2), a single one, the largest contrast (0 and P in a
    checkerboard), a ramp."""
    peak = (1 << bit_depth) - 1
    side = 2 * n + 1
    out = []
    for kind in ("flat", "none", "one", "checker", "ramp"):
        c = np.zeros((3, side, side), np.int64)
        av = np.zeros((side, side), bool)
        if kind != "none":
            av[0, :] = av[:, 0] = True
        if kind == "one":
            av[:] = False
            av[0, 0] = True
        yy, xx = np.mgrid[:side, :side]
        full = {"flat": np.full((side, side), peak // 3), "none": (yy * 7 + xx * 3) % (peak + 1),
                "one": np.full((side, side), peak), "checker": ((yy + xx) % 2) * peak,
                "ramp": (yy + xx) * peak // (2 * side)}[kind]  # fmt: skip
        c[0, 1 : n + 1, 1 : n + 1] = full[1 : n + 1, 1 : n + 1]
        c[1] = np.where(av, full, 0)
        c[2] = av
        out.append(c)
    return np.stack(out)


@pytest.mark.parametrize("bit_depth", [8, 10, 16])
def test_int16_normalisation_at_its_edges(mtool, zoo_int16, bit_depth, tmp_path):
    """The integer normalisation on the blocks at its edges (zero deviation, no references, one reference, full
    contrast, a ramp; 8, 10 and 16 bits): C++ == twin bit for bit, and the normalised canvas and the deviation's
    side input within a rounding step of the float model's (codecnn.models.modenet.normalise_canvas)."""
    from codecnn.models.modenet import DEVIATION_SCALE, normalise_canvas
    from hm_bridge.modenet import LOG_FRAC, normalise_int

    _, q, path, _ = zoo_int16
    for n in (4, 8, 16, 32):
        cs = _edge_canvases(n, bit_depth)
        peak = (1 << bit_depth) - 1
        for c in cs:
            fl = c.astype(np.float64)
            fl[:2] /= peak
            x, dev = normalise_canvas(torch.from_numpy(fl[None]))
            ints, d = normalise_int(c, n, peak, 10)
            np.testing.assert_allclose(ints / 2.0**10, x[0].numpy(), atol=1.5 / 2**10, rtol=1e-6)
            assert abs(d / 2.0 ** (LOG_FRAC + 3) - float(torch.log2(dev * DEVIATION_SCALE)[0]) / 8) < 1e-4
        for opt, exe in mtool.items():
            blocks = [(c, n) for c in cs]
            ic, got = _run_int_cpp(exe, path, blocks, n, 32, bit_depth, tmp_path)
            want = np.stack([run_modenet_int(q, c, n, 32, bit_depth) for c in ic])
            np.testing.assert_array_equal(got, want, err_msg=f"{opt} N={n} {bit_depth}-bit")
