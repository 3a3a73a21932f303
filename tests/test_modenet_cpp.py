"""The mode network in C++ (hm_bridge/cpp/cnnw_modenet.h): export, equality with PyTorch, refusals."""

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
from hm_bridge.format import MODES_VERSION, read_cnnw, write_cnnw
from hm_bridge.modenet import graph_from_modenet, run_modenet_graph

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
    assert r.exit_code != 0 and "float32 .cnnw file only" in r.output
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
