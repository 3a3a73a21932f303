"""Intra-mode datasets (real encodes) and the mode-prediction CNN trained through the shared trainer."""

import json

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from codecnn.cli import cli
from codecnn.data.intra import IntraModeDataset, canvas
from codecnn.hevc.intra import intra_predictions, transform_costs
from codecnn.models import build_model
from codecnn.train.checkpoint import load_model
from codecnn.train.intra import soft_targets
from codecnn.yuv import RawYuvReader


@pytest.fixture(scope="module")
def modes_h5(carphone_yuv, tmp_path_factory):
    d = tmp_path_factory.mktemp("modes")
    lst = d / "l.toml"
    lst.write_text(
        '[list]\nname = "l"\n[[sequence]]\nname = "a"\nfile = "carphone_176x144_30.yuv"\n'
        'split = "train"\n[[sequence]]\nname = "b"\nfile = "carphone_176x144_30.yuv"\nsplit = "val"\n'
    )
    out = d / "modes.h5"
    r = CliRunner().invoke(
        cli,
        [
            "make-dataset",
            "--task",
            "intra-modes",
            "--list",
            str(lst),
            "--seq-dir",
            str(carphone_yuv.parent),
            "--frames",
            "1",
            "--start",
            "2",
            "--qp",
            "37",
            "--preset",
            "ultrafast",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    return out


def test_dataset_rows_are_the_labels_of_the_decoded_frame(modes_h5, carphone_yuv):
    from codecnn.encoders.x265 import decode_hevc

    with h5py.File(modes_h5, "r") as f:
        assert f.attrs["kind"] == "intra-modes" and f.attrs["loop"] == "closed" and f.attrs["cost"] == "dct"
        g = f["n8"]
        assert g["orig"].shape[1:] == (17, 17) and g["ref"].shape[1:] == (33,) and g["costs"].shape[1:] == (35,)
        assert g["best"].shape[0] == 2 * (144 // 8) * (176 // 8)
        recon = list(decode_hevc(f["bitstreams/a_qp37"][()].tobytes(), 8))[0].y
        k = int(np.nonzero((g["pos"][()] == [40, 48]).all(1) & (g["seq"][()] == 0))[0][0])
        row = {key: g[key][k] for key in ("orig", "ref", "costs", "best", "rank", "qp", "frame")}
    orig = RawYuvReader(carphone_yuv, 176, 144).read(2).y
    assert row["qp"] == 37 and row["frame"] == 2
    np.testing.assert_array_equal(row["orig"], orig[39:56, 47:64])
    # closed loop: references from the decoded reconstruction; at (40, 48) the below-left 8x8 block
    # comes later in the z-scan, so those 8 samples are unavailable (-1), as in HM
    np.testing.assert_array_equal(row["ref"][16:], recon[39, 47:64])  # corner, then the 16 top samples
    left = row["ref"][:16][::-1]
    np.testing.assert_array_equal(left[:8], recon[40:48, 47])
    assert (left[8:] == -1).all()
    pred = intra_predictions(recon[39, 48:64], left, int(recon[39, 47]))
    want = transform_costs(orig[40:48, 48:56].astype(np.int64)[None] - pred, "dct")
    np.testing.assert_allclose(row["costs"], want, rtol=1e-6)
    assert row["best"] == np.argmin(np.round(want, 6)) and row["rank"][row["best"]] == 0


def test_network_accepts_every_block_size(modes_h5):
    ds = IntraModeDataset(modes_h5, "train")
    m = build_model("modenet", {"channels": 8, "depth": 2, "hidden": 16})
    for n in (4, 8, 16, 32):
        b = torch.utils.data.default_collate([ds[(n, k)] for k in range(3)])
        assert b["input"].shape == (3, 3, 2 * n + 1, 2 * n + 1)
        assert m(b["input"], b["block_size"], b["qp"]).shape == (3, 35)
    c = canvas(np.full((9, 9), 255), np.array([-1] * 8 + [255] * 9), 4, 255.0)
    assert c[2].sum() == 9 and c[0, 1:5, 1:5].sum() == 16 and c[1, 1:, 0].sum() == 0


def test_modenet_recipe_options(modes_h5):
    """--normalise: the logits do not change when a block and its references are shifted together (and only
    through the contrast side input when scaled); --pool-to: large canvases cost what a small one does;
    --size-heads: one output layer per size, a batch of mixed sizes refused; the defaults stay as before."""
    from codecnn.errors import CodecnnError
    from codecnn.models.modenet import MIN_DEVIATION, normalise_canvas

    ds = IntraModeDataset(modes_h5, "train")
    torch.manual_seed(0)
    m = build_model("modenet", {"channels": 8, "depth": 2, "hidden": 16, "normalise": True, "pool_to": 9})
    m.eval()
    for n in (4, 8, 16, 32):
        rows = [k for k in range(len(ds.rows[n])) if ds[(n, k)]["input"][2].any()][:4]  # with references
        b = torch.utils.data.default_collate([ds[(n, k)] for k in rows])
        x, size, qp = b["input"].double(), b["block_size"], b["qp"]
        shifted = x.clone()
        shifted[:, 0, 1 : n + 1, 1 : n + 1] -= 0.1
        shifted[:, 1] -= 0.1 * shifted[:, 2]  # the available references only
        with torch.no_grad():
            m.double()
            torch.testing.assert_close(m(shifted, size, qp), m(x, size, qp))
        y, dev = normalise_canvas(x)
        y2, dev2 = normalise_canvas(torch.cat([x[:, :2] * 2, x[:, 2:]], 1))
        textured = dev > MIN_DEVIATION  # flat blocks keep the floor deviation
        torch.testing.assert_close(y[textured], y2[textured])  # scaling changes the deviation only
        torch.testing.assert_close(dev2[textured], 2 * dev[textured])
        assert torch.all(dev >= MIN_DEVIATION) and torch.all(y[:, 2] == x[:, 2])
    convs = []
    hook = m.features[0].register_forward_hook(lambda mod, i, o: convs.append(o.shape[-1]))
    with torch.no_grad():
        for n in (4, 32):
            b = torch.utils.data.default_collate([ds[(n, 0)]])
            m(b["input"].double(), b["block_size"], b["qp"])
    hook.remove()
    assert convs == [9, 9]
    heads = build_model("modenet", {"channels": 8, "depth": 2, "hidden": 16, "size_heads": True})
    assert len(heads.heads) == 4 and not hasattr(heads, "fc2")
    b4 = torch.utils.data.default_collate([ds[(4, k)] for k in range(2)])
    assert heads(b4["input"], b4["block_size"], b4["qp"]).shape == (2, 35)
    with pytest.raises(CodecnnError, match="one size per batch"):
        heads(b4["input"], torch.tensor([4, 8]), b4["qp"])
    plain = build_model("modenet", {"channels": 8, "depth": 2, "hidden": 16})
    assert plain.fc1.in_features == 8 * 21 + 2 and plain.config.pool_to == 0 and not plain.config.normalise
    with pytest.raises(CodecnnError, match="--pool-to 2"):
        build_model("modenet", {"pool_to": 2})


def test_block_cache_batches_equal_the_dataloaders(modes_h5):
    """Training reads the split from memory (BlockCache): each step's batch equals, tensor for tensor and bit
    for bit, what the DataLoader collates from the file item by item."""
    from codecnn.data.intra import BlockCache, BlockSizeStepSampler, block_cache_nbytes

    ds = IntraModeDataset(modes_h5, "train")
    cache = BlockCache(ds)
    assert len(cache) == len(ds) and cache.nbytes == block_cache_nbytes(ds)
    sampler = BlockSizeStepSampler(ds, 16, seed=3, start_step=2, steps=7)
    got = list(cache.batches(sampler))
    assert len(got) == 5
    for step, batch in zip(range(2, 7), got, strict=True):
        want = torch.utils.data.default_collate([ds[item] for item in sampler.batch_items(step)])
        assert batch.keys() == want.keys()
        for k in want:
            assert batch[k].dtype == want[k].dtype and torch.equal(batch[k], want[k]), (step, k)


def test_soft_targets_prefer_cheaper_modes():
    t = soft_targets(torch.tensor([[10.0, 20.0, 40.0] + [80.0] * 32]))
    assert t.shape == (1, 35) and t[0, 0] > t[0, 1] > t[0, 2] and abs(float(t.sum()) - 1) < 1e-6


def _printed_table(output: str) -> dict[str, list[str]]:
    """The rows of the mode table a command printed (train modenet, evaluate-modes), by their first column."""
    lines = output.splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.split()[:5] == ["N", "blocks", "top1", "top3", "top8"])
    rows = {}
    for ln in lines[i + 1 :]:
        cells = ln.replace("|", " ").split()
        if len(cells) != 10:
            break
        rows[cells[0]] = cells[1:]
    return rows


def _assert_table_shows(output: str, r: dict) -> None:
    """The printed table holds one row per block size, then the pooled row "all", with r's figures."""
    per = r["per_size"]
    rows = _printed_table(output)
    assert list(rows) == ["4", "8", "16", "32", "all"] == [*per, "all"]
    want = {**per, "all": {**r["overall"], "blocks": sum(v["blocks"] for v in per.values())}}
    for n, cells in rows.items():
        net, rmd, mpm = want[n]["network"], want[n]["hm_rmd"], want[n]["planar_dc_mpm"]
        assert cells == [
            str(want[n]["blocks"]),
            f"{net['top1']:.3f}",
            f"{net['top3']:.3f}",
            f"{net['top8']:.3f}",
            f"{net['cost_increase_top3']:.4f}",
            f"{rmd['recall']:.3f}",
            f"{rmd['cost_increase']:.4f}",
            f"{mpm['recall']:.3f}",
            f"{mpm['cost_increase']:.4f}",
        ], n


VAL_BLOCKS = {n: (144 // n) * (176 // n) for n in (4, 8, 16, 32)}  # one 176x144 frame in the val split


@pytest.mark.slow
@pytest.mark.parametrize("target", ["best", "soft"])
def test_few_real_steps_lower_the_loss(modes_h5, tmp_path, target):
    out = tmp_path / target
    args = [
        "train",
        "modenet",
        "--data",
        str(modes_h5),
        "--out",
        str(out),
        "--channels",
        "16",
        "--depth",
        "3",
        "--hidden",
        "32",
        "--steps",
        "40",
        "--batch",
        "32",
        "--lr",
        "2e-3",
        "--workers",
        "0",
        "--val-every",
        "40",
        "--target",
        target,
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    val = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if '"val"' in x]
    assert val[-1]["step"] == 40
    assert {n: v["blocks"] for n, v in val[-1]["per_size"].items()} == {str(n): b for n, b in VAL_BLOCKS.items()}
    _assert_table_shows(r.output, val[-1])  # the last validation, as logged
    ds = IntraModeDataset(modes_h5, "train")
    b = torch.utils.data.default_collate([ds[(8, k)] for k in range(len(ds.rows[8]))])
    torch.manual_seed(0)
    before = build_model("modenet", {"channels": 16, "depth": 3, "hidden": 32})
    after, ckpt = load_model(out / "last.pt", task="intra-modes")
    with torch.no_grad():
        l0 = F.cross_entropy(before(b["input"], b["block_size"], b["qp"]), b["best"])
        l1 = F.cross_entropy(after(b["input"], b["block_size"], b["qp"]), b["best"])
    assert l1 < l0
    assert ckpt["arch"] == "modenet" and ckpt["task"] == "intra-modes"


def test_evaluate_modes_report(modes_h5, tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(
        cli,
        [
            "train",
            "modenet",
            "--data",
            str(modes_h5),
            "--out",
            str(run),
            "--steps",
            "2",
            "--batch",
            "8",
            "--workers",
            "0",
            "--channels",
            "4",
            "--depth",
            "1",
            "--hidden",
            "8",
        ],
    )
    assert r.exit_code == 0, r.output
    out = tmp_path / "rep"
    r = CliRunner().invoke(
        cli,
        [
            "evaluate-modes",
            "--checkpoint",
            str(run / "last.pt"),
            "--data",
            str(modes_h5),
            "--split",
            "val",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["split"] == "val" and res["cost"] == "dct" and res["loop"] == "closed"
    _assert_table_shows(r.output, res)
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "results.json"]
    report = (out / "report.md").read_text().splitlines()
    assert [ln.split(" | ")[0] for ln in report if ln.startswith("| ") and ln[2].isalnum()] == [
        "| N",
        "| 4",
        "| 8",
        "| 16",
        "| 32",
        "| all",
    ]
    # figures recomputed here from the stored labels and the network's logits
    model, _ = load_model(run / "last.pt", task="intra-modes")
    ds = IntraModeDataset(modes_h5, "val")
    with h5py.File(modes_h5, "r") as f:
        for n in (4, 8, 16, 32):
            v = res["per_size"][str(n)]
            g = f[f"n{n}"]
            val = g["split"][()] == 1
            best, hadamard = g["best"][()][val], g["hadamard"][()][val]
            assert v["blocks"] == len(best) == VAL_BLOCKS[n]
            k = 8 if n <= 8 else 3  # HM's rough mode decision: 8 modes at 4x4 and 8x8, 3 above
            rmd = [m in np.argsort(h, kind="stable")[:k] for m, h in zip(best, hadamard, strict=True)]
            assert v["hm_rmd"]["modes"] == k and v["hm_rmd"]["recall"] == pytest.approx(np.mean(rmd), abs=1e-12)
            assert 3 <= v["planar_dc_mpm"]["modes"] <= 5
            b = ds.inputs(n)
            with torch.no_grad():
                top1 = model(b["input"], b["block_size"], b["qp"]).argmax(1).numpy() == best
            assert v["network"]["top1"] == pytest.approx(top1.mean(), abs=1e-12)
            net = v["network"]
            assert net["top1"] <= net["top3"] <= net["top8"] <= 1
            assert net["cost_increase_top1"] >= net["cost_increase_top3"] >= net["cost_increase_top8"] >= 0
            # the pruned RMD: full RMD with MPMs is at least HM's plain RMD; more network modes, more SATD
            pr = v["pruned_rmd"]
            assert pr["full"]["satd_evaluations"] == 35 and pr["full"]["recall"] >= v["hm_rmd"]["recall"]
            evals = [pr[str(k)]["satd_evaluations"] for k in (1, 2, 3, 4, 6, 8, 10, 12)]
            assert evals == sorted(evals) and 1 <= evals[0] and evals[-1] <= 15
            # (a smaller set can keep more)
            assert all(0 <= pr[str(k)]["recall"] <= 1 for k in (1, 2, 3, 4, 6, 8, 10, 12))
    assert set(res["overall"]["pruned_rmd"]) == {"full", "1", "2", "3", "4", "6", "8", "10", "12"}
    assert {"recall", "satd_evaluations"} <= set(res["overall"]["pruned_rmd"]["3"])
    assert (
        "pruned rough mode decision" in r.output and "## Pruned rough mode decision" in (out / "report.md").read_text()
    )
    x = tmp_path / "x"
    r = CliRunner().invoke(
        cli, ["evaluate", "--checkpoint", str(run / "last.pt"), "--data", str(modes_h5), "--out", str(x)]
    )
    assert r.exit_code == 2
    assert f"{run / 'last.pt'}: a 'intra-modes' checkpoint (modenet), but a 'ctu-restoration' one is needed" in r.output
    assert not x.exists()


def test_wrong_dataset_kind_for_modenet(restoration_h5, tmp_path):
    r = CliRunner().invoke(
        cli, ["train", "modenet", "--data", str(restoration_h5), "--out", str(tmp_path / "m"), "--steps", "1"]
    )
    assert r.exit_code == 2 and "not a codecnn intra-modes dataset" in r.output
    assert not (tmp_path / "m").exists()  # no run folder for a refused run
