"""Real training steps of small RDNs on a small real CTU dataset (CPU)."""

import json
import os
import re
import subprocess
import sys

import h5py
import pytest
import torch
from click.testing import CliRunner

from codecnn.cli import cli
from codecnn.data.restoration_dataset import CTUDataset, StepSampler
from codecnn.errors import CodecnnError
from codecnn.models import RDNConfig, build_model
from codecnn.train.checkpoint import load_checkpoint, load_model
from codecnn.train.restoration import RestorationTask, masked_loss
from codecnn.train.trainer import TrainConfig, train

TINY = ["--blocks", "2", "--layers", "2", "--growth", "8", "--features", "8"]


def _args(data, out, *extra):
    return [
        "train",
        "rdn",
        "--data",
        str(data),
        "--out",
        str(out),
        *TINY,
        "--batch",
        "4",
        "--patch",
        "32",
        "--workers",
        "0",
        "--val-every",
        "1000",
        "--log-every",
        "1",
        *extra,
    ]


def test_data_pipeline_crops_masks_and_flips(restoration_h5):
    ds = CTUDataset(restoration_h5, "train", patch=32)
    assert len(ds) == 4 * 9 * 2
    sampler = StepSampler(ds, 8, seed=3)
    specs = sampler.batch_specs(5)
    assert specs == StepSampler(ds, 8, seed=3, start_step=5).batch_specs(5)  # a function of (seed, step)
    assert all(s.y % 8 == 0 and s.x % 8 == 0 for s in specs)
    # the two ranks of a 2-process run see exactly the single-process batch
    r0, r1 = (StepSampler(ds, 8, seed=3, rank=r, world=2).batch_specs(5) for r in (0, 1))
    assert r0 + r1 == specs
    item = ds[specs[0]]
    assert item["input"].shape == (1, 36, 36) and item["target"].shape == (1, 32, 32)
    assert 0 <= float(item["input"].min()) and float(item["input"].max()) <= 1
    # the bottom-right CTU of carphone (176x144, CTU 64) holds 16 x 48 picture pixels
    whole = CTUDataset(restoration_h5, "train", patch=0)
    edge = int((whole.pos == [128, 128]).all(1).nonzero()[0][0])
    full = whole[edge]
    assert full["mask"].sum() == 16 * 48 and full["mask"][0, :16, :48].all()
    with h5py.File(restoration_h5, "r") as f:
        raw = f["target"][whole.indices[edge]]
    assert torch.equal(full["target"][0] * 255, torch.from_numpy(raw).float())


@pytest.mark.slow
def test_few_real_steps_lower_the_loss(restoration_h5, tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, _args(restoration_h5, out, "--steps", "60", "--lr", "1e-3", "--loss", "l2"))
    assert r.exit_code == 0, r.output
    assert "kMAC/pixel" in r.output and "val QP32" in r.output
    train_ds = CTUDataset(restoration_h5, "train", patch=0)
    batch = torch.utils.data.default_collate([train_ds[i] for i in range(len(train_ds))])
    model, ckpt = load_model(out / "last.pt")
    with torch.no_grad():
        before = masked_loss(batch["input"][:, :, 2:-2, 2:-2], batch["target"], batch["mask"], "l2")
        after = masked_loss(model(batch["input"]), batch["target"], batch["mask"], "l2")
    assert after < 0.998 * before  # lower MSE on every whole training CTU than the reconstruction's
    assert ckpt["step"] == 60 and ckpt["arch"] == "rdn" and ckpt["config"]["num_blocks"] == 2
    assert ckpt["dataset"]["fingerprint"] and ckpt["versions"]["torch"] == torch.__version__
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 61))
    val = [r for r in records if r["kind"] == "val"]
    assert val and set(val[-1]["per_qp"]) == {"32", "37"}
    assert (out / "curves.png").stat().st_size > 1000 and (out / "best.pt").exists()


@pytest.mark.slow
def test_resume_equals_uninterrupted(restoration_h5, tmp_path):
    """A run killed mid-way (a crash: SIGKILL after its first checkpoint) and resumed gives the weights, EMA and
    log of the uninterrupted run, bit for bit on CPU."""
    import time

    common = ("--steps", "40", "--lr", "1e-3", "--ema", "0.9", "--val-every", "3")
    a, b = tmp_path / "a", tmp_path / "b"
    # every training runs in a fresh process of its own, so none inherits this test process's state (thread
    # pools that other tests' libraries set up change the order of floating-point sums)
    cmd = [sys.executable, "-m", "codecnn"]
    subprocess.run([*cmd, *_args(restoration_h5, a, *common)], check=True, capture_output=True)
    proc = subprocess.Popen(
        [*cmd, *_args(restoration_h5, b, *common)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not (b / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    killed_at = load_checkpoint(b / "last.pt")["step"]
    assert 3 <= killed_at < 40 and killed_at % 3 == 0
    r = CliRunner().invoke(cli, _args(restoration_h5, b, *common))
    assert r.exit_code == 2 and "--resume" in r.output  # will not overwrite a run silently
    subprocess.run([*cmd, *_args(restoration_h5, b, *common, "--resume")], check=True, capture_output=True)
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert cb["step"] == 40
    for k in ca["state_dict"]:
        assert torch.equal(ca["state_dict"][k], cb["state_dict"][k]), k
        assert torch.equal(ca["ema"][k], cb["ema"][k]), k
    steps = [json.loads(x)["step"] for x in (b / "log.jsonl").read_text().splitlines() if '"train"' in x]
    assert steps == list(range(1, 41))  # what the killed process logged past its checkpoint is dropped


def test_time_limit_shapes_the_schedule(restoration_h5, tmp_path):
    """--time-limit without --steps: the cosine runs over the time budget, so the run ends annealed."""
    out = tmp_path / "t"
    r = CliRunner().invoke(cli, _args(restoration_h5, out, "--time-limit", "4", "--lr", "1e-3"))
    assert r.exit_code == 0 and "(time-limit)" in r.output, r.output
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if '"train"' in x]
    assert len(rows) > 3
    assert rows[0]["lr"] > 0.9e-3 and rows[-1]["lr"] < 0.05e-3  # from the peak to (nearly) zero
    assert all(x["lr"] >= y["lr"] for x, y in zip(rows, rows[1:], strict=False))
    ck = load_checkpoint(out / "last.pt")
    assert ck["elapsed"] >= 4 and ck["step"] == rows[-1]["step"]
    (val,) = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if '"val"' in x]
    frames = sum(v["frames"] for v in val["per_qp"].values())
    assert val["frames"] == frames and val["ctus"] > 0 and val["score_se"] >= 0  # the validation's size and noise
    # all intra: every QP has the same frames, so the mean over the frames is the mean of the per-QP gains
    assert val["score"] == pytest.approx(sum(v["gain"] for v in val["per_qp"].values()) / len(val["per_qp"]))
    assert "(standard error)" in r.output and f"validation: {frames} frames" in r.output


@pytest.mark.slow
def test_ddp_gloo_two_processes_equal_one(restoration_h5, tmp_path):
    lr = 1e-3
    common = ["--steps", "3", "--lr", str(lr), "--device", "cpu", "--batch", "4"]
    single = tmp_path / "single"
    r = CliRunner().invoke(cli, _args(restoration_h5, single, *common))
    assert r.exit_code == 0, r.output
    ddp = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            "29533",
            "-m",
            "codecnn",
            *_args(restoration_h5, ddp, *common),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    ca, cb = load_checkpoint(single / "last.pt"), load_checkpoint(ddp / "last.pt")
    assert ca["step"] == cb["step"] == 3
    sa, sb = ca["state_dict"], cb["state_dict"]
    # the weights both runs started from: the trainer seeds with TrainConfig.seed (0), then builds the model
    torch.manual_seed(0)
    init = build_model("rdn", ca["config"]).state_dict()
    assert sa.keys() == init.keys() and not init["last.weight"].any()  # RDN starts as the identity
    for k in sa:  # training moved every tensor, each weight by at most about lr per Adam step
        moved = float((sa[k] - init[k]).abs().max())
        assert 0 < moved <= 3 * lr * 1.5, (k, moved)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("flag", ["--qp-map", "--separable"])
def test_variants_train(restoration_h5, tmp_path, flag):
    out = tmp_path / flag.strip("-")
    r = CliRunner().invoke(cli, _args(restoration_h5, out, "--steps", "3", flag))
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["config"][flag.strip("-").replace("-", "_")] is True
    assert ckpt["state_dict"]["last.weight"].abs().sum() > 0  # it moved off the identity


def test_per_qp_model_filters_the_data(restoration_h5, tmp_path):
    out = tmp_path / "qp37"
    r = CliRunner().invoke(cli, _args(restoration_h5, out, "--steps", "2", "--qp", "37"))
    assert r.exit_code == 0, r.output
    assert "val QP37" in r.output and "val QP32" not in r.output


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(restoration_h5, tmp_path):
    out = tmp_path / "nan"
    r = CliRunner().invoke(
        cli, _args(restoration_h5, out, "--steps", "50", "--lr", "1e12", "--val-every", "1", "--no-augment")
    )
    assert r.exit_code == 2, r.output
    failed = int(re.search(r"non-finite training loss at step (\d+); stopped", r.output).group(1))
    assert f"The last good checkpoint is kept ({out / 'last.pt'})" in r.output
    good = load_checkpoint(out / "last.pt")
    assert good["step"] == failed - 1  # validated and saved every step: the one before the failure
    assert all(torch.isfinite(v).all() for v in good["state_dict"].values())


def test_bad_input(restoration_h5, tmp_path):
    r = CliRunner().invoke(cli, _args(tmp_path / "missing.h5", tmp_path / "o", "--steps", "1"))
    assert r.exit_code == 2 and "no such dataset file" in r.output
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["kind"] = "intra-modes"
    r = CliRunner().invoke(cli, _args(other, tmp_path / "o", "--steps", "1"))
    assert r.exit_code == 2 and "not a codecnn ctu-restoration dataset" in r.output
    r = CliRunner().invoke(cli, [*_args(restoration_h5, tmp_path / "o", "--steps", "1"), "--blocks", "0"])
    assert r.exit_code == 2 and "'--blocks': 0 is not in the range 1<=x<=64" in r.output
    with pytest.raises(CodecnnError, match="--blocks must be a positive integer"):  # the library's own check
        RDNConfig(num_blocks=0)
    for bad, message in [
        (("--steps", "1", "--epochs", "1"), "--steps and --epochs both"),
        (("--steps", "1", "--lr", "nan"), "'nan' is not a finite number"),
        (("--steps", "1", "--lr", "inf"), "'inf' is not a finite number"),
        (("--steps", "1", "--time-limit", "-5"), "'--time-limit': -5.0 is not in the range x>0"),
        (("--epochs", "0"), "'--epochs': 0.0 is not in the range x>0"),
        (("--steps", "1", "--ema", "1"), "'--ema': 1.0 is not in the range 0<=x<1"),
        (("--steps", "1", "--qp", "52"), "'--qp': 52 is not in the range 0<=x<=51"),
    ]:
        r = CliRunner().invoke(cli, _args(restoration_h5, tmp_path / "o", *bad))
        assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1, (bad, r.output)
    assert not (tmp_path / "o").exists()
    with pytest.raises(CodecnnError, match="--loss 'l3'"):
        TrainConfig(data="d.h5", out="o", steps=1, loss="l3")
    with pytest.raises(ValueError, match="unknown loss 'l3'"):
        masked_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2), "l3")
    r = CliRunner().invoke(cli, _args(restoration_h5, tmp_path / "o"))
    assert r.exit_code == 2 and "say how long to train: --steps N, --epochs E or --time-limit SECONDS" in r.output
    r = CliRunner().invoke(cli, _args(restoration_h5, tmp_path / "o", "--steps", "1", "--patch", "30"))
    assert r.exit_code == 2 and "multiple of 8" in r.output
    assert not (tmp_path / "o").exists()  # no refused run made its folder


def test_checkpoint_loading_is_safe(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CodecnnError, match="not a readable checkpoint"):
        load_checkpoint(bad)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "codecnn-checkpoint", "x": Evil()}, evil)
    with pytest.raises(CodecnnError, match="refused"):
        load_checkpoint(evil)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": torch.zeros(1)}, foreign)
    with pytest.raises(CodecnnError, match="not a codecnn checkpoint"):
        load_checkpoint(foreign)


def test_library_entry_point_without_cli(restoration_h5, tmp_path):
    cfg = TrainConfig(str(restoration_h5), str(tmp_path / "lib"), steps=2, batch=2, patch=16, workers=0, progress=False)
    res = train(RestorationTask(2), "rdn", RDNConfig(1, 1, 4, 4), cfg)
    assert res.step == 2 and res.stopped == "done" and res.last_val["per_qp"]["32"]["frames"] == 1


def test_cached_batches_equal_the_dataloader_and_cached_run_equals_uncached(restoration_h5, tmp_path):
    """--cache ram crops each step's batch from the split decompressed in memory: the same tensors as the
    DataLoader collates from ``ds[spec]``, so the trained weights are equal bit for bit on CPU."""
    from codecnn.data.cache import resolve_cache
    from codecnn.data.restoration_dataset import CTUCache

    for patch in (32, 0):
        ds = CTUDataset(restoration_h5, "train", patch=patch)
        cache = CTUCache(ds)
        sampler = StepSampler(ds, 8, seed=1)
        for step in range(6):
            specs = sampler.batch_specs(step)
            ref = torch.utils.data.default_collate([ds[s] for s in specs])
            got = cache.batch(specs)
            cache._np = None  # the index gather of --cache device, here on the CPU
            by_index = cache.batch(specs)
            cache._np = (cache.input.numpy(), cache.target.numpy())
            assert got.keys() == ref.keys() == by_index.keys()
            for k in ref:
                assert got[k].dtype == ref[k].dtype and torch.equal(got[k], ref[k]), (patch, step, k)
                assert torch.equal(by_index[k], ref[k]), (patch, step, k)
    assert resolve_cache("auto", 10 * 2**20, 1, total=2**30)[0] == "ram"
    mode, why = resolve_cache("auto", 300 * 2**20, 1, total=2**30)
    assert mode == "off" and "25%" in why
    runs = {}
    for mode in ("ram", "off"):
        out = tmp_path / mode
        r = CliRunner().invoke(cli, _args(restoration_h5, out, "--steps", "4", "--lr", "1e-3", "--cache", mode))
        assert r.exit_code == 0, r.output
        runs[mode] = load_checkpoint(out / "last.pt")["state_dict"]
    for k in runs["off"]:
        assert torch.equal(runs["ram"][k], runs["off"][k]), k
