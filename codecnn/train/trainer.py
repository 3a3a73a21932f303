"""The one training loop codecnn has; every network trains through it via a :class:`Task`.

It owns what all tasks share: device choice, ``torchrun`` / DDP (rank 0 alone logs and checkpoints),
CUDA mixed precision (bf16) and ``channels_last``, optional ``torch.compile``, Adam with a cosine or
step schedule, optional EMA weights, periodic validation with the best checkpoint kept by the task's
score, atomic self-describing checkpoints, exact resume, a JSONL log with PNG curves, a tqdm bar, a
time limit, and a stop with a message on a non-finite loss (the last good checkpoint is kept).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from codecnn.errors import CodecnnError
from codecnn.eval.metrics import standard_error
from codecnn.files import check_not_input, check_output_dir
from codecnn.models import build_model
from codecnn.train import dist
from codecnn.train.checkpoint import load_checkpoint, save_checkpoint
from codecnn.train.config import TrainConfig
from codecnn.train.logs import RunLog

log = logging.getLogger(__name__)
RUN_FILES = ("last.pt", "best.pt", "log.jsonl", "curves.png")  # what a run writes into its --out folder


class Task(Protocol):
    """What the loop needs from a kind of training (restoration, intra-mode prediction)."""

    kind: str  # the dataset kind it trains on, also stored in checkpoints

    def datasets(self, cfg: TrainConfig): ...  # -> (train dataset, val dataset or None, dataset info)

    def sampler(self, train_ds, cfg: TrainConfig, start_step: int, steps: int, info: dist.DistInfo): ...

    def loss(self, model: nn.Module, batch: dict, cfg: TrainConfig) -> torch.Tensor: ...

    def validate(self, model: nn.Module, val_ds, device: torch.device, cfg: TrainConfig) -> dict: ...

    # optional: ``cached_batches(train_ds, sampler, cfg, info)`` -> an iterator of the sampler's batches from an
    # in-memory cache (``--cache``), or None to read through the DataLoader


class EMA:
    """Exponential moving average of a model's floating-point state (decay per step)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.state[k].lerp_(v.detach(), 1.0 - self.decay)
            else:
                self.state[k].copy_(v)


def _lr_lambda(schedule: str, total: float, time_fraction=None):
    """The learning-rate factor at step ``s`` of ``total``. With ``time_fraction`` (a function giving the
    share of the time budget spent), the schedule follows whichever of steps and time is further along, so
    a run stopped by ``--time-limit`` ends annealed; without it, it is a function of the step alone (a
    resumed run and an uninterrupted one then see the same rates)."""

    def done(s: int) -> float:
        by_steps = min(s, total) / total
        return max(by_steps, min(1.0, time_fraction())) if time_fraction is not None else by_steps

    if schedule == "cosine":
        return lambda s: 0.5 * (1.0 + math.cos(math.pi * done(s)))
    if schedule == "step":  # halve at each third of the run
        every = max(1, int(total) // 3) if math.isfinite(total) else None
        return lambda s: 0.5 ** max(s // every if every else 0, int(3 * done(s)) if time_fraction else 0)
    return lambda s: 1.0


def _better(result: dict, best: float, best_frames: list | None) -> bool:
    """Is a validation result better than the best so far by more than the validation set can resolve? With
    per-frame gains (restoration), the mean of the paired per-frame differences must exceed its standard
    error; otherwise (or without the best's frames) the score must simply be higher."""
    frames = result.get("frame_gains")
    if not frames or not best_frames or len(frames) != len(best_frames) or len(frames) < 2:
        return result["score"] > best
    d = np.asarray(frames) - np.asarray(best_frames)
    return float(d.mean()) > standard_error(d)


def _next_batch(it) -> dict:
    """The next batch; a :class:`CodecnnError` raised in a DataLoader worker (which torch re-raises wrapped
    in the worker's traceback) comes back as its own one-line message."""
    try:
        return next(it)
    except CodecnnError as e:
        last = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        raise CodecnnError(re.sub(r"^codecnn\.errors\.\w+: ", "", last)) from None


def total_steps(cfg: TrainConfig, train_len: int) -> float:
    """Steps of the run: ``--steps``, or ``--epochs`` over the train split, or endless (``math.inf``) when only
    ``--time-limit`` bounds it."""
    if cfg.steps is not None:
        return cfg.steps
    if cfg.epochs is not None:
        return max(1, math.ceil(cfg.epochs * train_len / cfg.batch))
    if cfg.time_limit is not None:
        return math.inf
    raise CodecnnError("say how long to train: --steps N, --epochs E or --time-limit SECONDS")


@dataclass
class TrainResult:
    out: Path
    step: int
    best_score: float | None
    stopped: str  # "done", "time-limit"
    last_val: dict | None


def train(task: Task, arch: str, model_config, cfg: TrainConfig) -> TrainResult:
    """Train ``arch`` with ``model_config`` on ``task`` as ``cfg`` says; checkpoints go to ``cfg.out``."""
    info = dist.setup(cfg.device)
    try:
        return _train(task, arch, model_config, cfg, info)
    finally:
        dist.teardown()


def _train(task: Task, arch: str, model_config, cfg: TrainConfig, info: dist.DistInfo) -> TrainResult:
    out = Path(cfg.out)
    last_path, best_path = out / "last.pt", out / "best.pt"
    if info.main:
        if last_path.exists() and not cfg.resume:
            raise CodecnnError(
                f"{out} already holds a run (last.pt): pass --resume to continue it, or choose another --out"
            )
        check_output_dir(out, "--out")
        check_not_input("--out", out, [("--data", cfg.data), ("--init", cfg.init)], RUN_FILES)
    train_ds, val_ds, ds_fingerprint = task.datasets(cfg)  # bad data or options stop here, before --out is made
    steps = total_steps(cfg, len(train_ds))
    cuda = info.device.type == "cuda"

    torch.manual_seed(cfg.seed)
    model = build_model(arch, model_config).to(info.device)
    if cfg.channels_last:  # faster for oneDNN on CPUs as well as for cuDNN
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    clock = {"start": time.perf_counter(), "before": 0.0}  # "before": seconds trained by earlier invocations

    def elapsed() -> float:
        return clock["before"] + time.perf_counter() - clock["start"]

    # the schedule reads the time agreed by all ranks at the last step (rank clocks differ; DDP ranks must
    # apply the same learning rate), kept in clock["agreed"]
    clock["agreed"] = 0.0
    time_fraction = (lambda: clock["agreed"] / cfg.time_limit) if cfg.time_limit is not None else None
    lr_lambda = _lr_lambda(cfg.schedule, steps, time_fraction)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    step, best, last_val, best_frames = 0, None, None, None

    if cfg.init is not None:
        from codecnn.train.checkpoint import load_model

        start, start_ckpt = load_model(cfg.init, task.kind)
        if start_ckpt["arch"] != arch or start_ckpt["config"] != dataclasses.asdict(model_config):
            raise CodecnnError(
                f"--init {cfg.init}: a {start_ckpt['arch']} {start_ckpt['config']} network; train the same "
                "architecture and options to start from it"
            )
        model.load_state_dict(start.state_dict())
        if ema is not None:
            ema = EMA(model, cfg.ema)
        if info.main:
            log.info("starting from the weights of %s (step %s)", cfg.init, start_ckpt.get("step"))
    if cfg.resume and last_path.exists():
        ckpt = load_checkpoint(last_path, task.kind)
        if ckpt["arch"] != arch or ckpt["config"] != dataclasses.asdict(model_config):
            raise CodecnnError(
                f"{last_path}: the run was started with {ckpt['arch']} {ckpt['config']}; "
                "resume with the same model options"
            )
        if ckpt["dataset"]["fingerprint"] != ds_fingerprint:
            raise CodecnnError(
                f"{last_path}: the run was trained on another dataset "
                f"({ckpt['dataset']['path']}); resume with the same --data"
            )
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ema is not None and ckpt.get("ema"):
            ema.state = {k: v.to(info.device) for k, v in ckpt["ema"].items()}
        step, best, last_val = ckpt["step"], ckpt.get("best_score"), ckpt.get("metrics")
        best_frames = ckpt.get("best_frame_gains")
        clock["before"] = float(ckpt.get("elapsed", 0.0))
        clock["agreed"] = clock["before"]
        for g in optimizer.param_groups:  # this invocation's --lr, not the saved one
            g["initial_lr"] = g["lr"] = cfg.lr
        # the schedule of this invocation's options, at the resumed step (the same rates as an uninterrupted run
        # with these options; a run stopped by its time limit and resumed with more time picks up from there)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda, last_epoch=step - 1)
        torch.set_rng_state(ckpt["rng"]["torch"])
        if info.main:
            log.info("resuming %s at step %d of %s", out, step, steps)
    if info.main:  # everything is checked: the run folder can be made
        out.mkdir(parents=True, exist_ok=True)
    runlog = RunLog(out, resume_step=step) if info.main else None

    net = model
    if info.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[info.device.index] if cuda else None)
    if cfg.compile:
        net = torch.compile(net)

    sampler = task.sampler(train_ds, cfg, step, steps if math.isfinite(steps) else None, info)
    cached = getattr(task, "cached_batches", None)
    batches = cached(train_ds, sampler, cfg, info) if cached is not None else None
    if batches is None:
        batches = torch.utils.data.DataLoader(
            train_ds,
            batch_size=cfg.batch // info.world,
            sampler=sampler,
            num_workers=cfg.workers,
            pin_memory=cuda,
            persistent_workers=cfg.workers > 0,
        )

    def checkpoint(path: Path, metrics: dict | None) -> None:
        save_checkpoint(
            path,
            {
                "task": task.kind,
                "arch": arch,
                "config": dataclasses.asdict(model_config),
                "state_dict": model.state_dict(),
                "ema": ema.state if ema else None,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "elapsed": elapsed(),
                "rng": {"torch": torch.get_rng_state()},
                "dataset": {
                    "path": str(cfg.data),
                    "fingerprint": ds_fingerprint,
                    "ctu": getattr(train_ds, "ctu", None),
                    "context": getattr(train_ds, "context", None),
                },
                "train_config": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()},
                "best_score": best,
                "best_frame_gains": best_frames,
                "metrics": metrics,
            },
        )

    def validate() -> dict | None:
        nonlocal best, last_val, best_frames
        if val_ds is None or not info.main:
            return None
        eval_model = model
        if ema is not None:
            eval_model = build_model(arch, model_config).to(info.device)
            eval_model.load_state_dict(ema.state)
        result = task.validate(eval_model, val_ds, info.device, cfg)
        model.train()
        last_val = result
        runlog.append({"kind": "val", "step": step, **result})
        if best is None or _better(result, best, best_frames):
            best, best_frames = result["score"], result.get("frame_gains")
            checkpoint(best_path, result)
        return result

    from tqdm import tqdm

    bar = tqdm(
        total=steps if math.isfinite(steps) else None,
        initial=step,
        desc=f"train {arch}",
        disable=not (info.main and cfg.progress),
        dynamic_ncols=True,
        file=sys.stderr,
    )
    t_start = time.perf_counter()
    clock["start"] = t_start
    t_log, n_log = t_start, 0
    stopped = "done"
    model.train()
    it = iter(batches)
    # The loss is checked on the device and read back only at log, validation and checkpoint steps: no
    # device-to-host synchronisation inside the step. Weights are saved only after a check passed.
    nonfinite = torch.zeros((), dtype=torch.bool, device=info.device)
    checked = step

    def check_finite() -> None:
        nonlocal checked
        if dist.any_true(bool(nonfinite), info):
            where = f"at step {step}" if checked + 1 == step else f"between steps {checked + 1} and {step}"
            raise CodecnnError(
                f"non-finite training loss {where}; stopped. The last good checkpoint is kept "
                f"({last_path if last_path.exists() else 'none yet'}); lower --lr or check the data"
            )
        checked = step

    if cfg.time_limit is not None and clock["agreed"] >= cfg.time_limit:
        bar.close()  # a resumed run whose time budget is spent: nothing to do (give a larger --time-limit)
        log.info("%s has used its --time-limit of %s s: nothing to do", out, cfg.time_limit)
        return TrainResult(out, step, best, "time-limit", last_val)
    while step < steps:
        batch = {k: v.to(info.device, non_blocking=True) for k, v in _next_batch(it).items()}
        if cfg.channels_last:
            batch["input"] = batch["input"].contiguous(memory_format=torch.channels_last)
        with torch.autocast(info.device.type, dtype=torch.bfloat16, enabled=cuda and cfg.amp):
            loss = task.loss(net, batch, cfg)
        nonfinite |= ~torch.isfinite(loss.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if cfg.time_limit is not None:
            clock["agreed"] = dist.agreed_max(elapsed(), info)
        scheduler.step()
        if ema is not None:
            ema.update(model)
        step += 1
        n_log += batch["input"].shape[0] * info.world
        bar.update(1)
        if step % cfg.log_every == 0 or step == steps:
            check_finite()
        if info.main and (step % cfg.log_every == 0 or step == steps):
            now = time.perf_counter()
            rate = n_log / max(now - t_log, 1e-9)
            runlog.append(
                {
                    "kind": "train",
                    "step": step,
                    "loss": float(loss.detach()),
                    "lr": scheduler.get_last_lr()[0],
                    "samples_per_s": rate,
                    "time": now - t_start,
                }
            )
            bar.set_postfix(loss=f"{float(loss.detach()):.4g}", samples_s=f"{rate:.1f}")
            t_log, n_log = now, 0
        out_of_time = cfg.time_limit is not None and clock["agreed"] >= cfg.time_limit  # the same on every rank
        if step % cfg.val_every == 0 or step == steps or out_of_time:
            check_finite()
            validate()
            if info.main:
                checkpoint(last_path, last_val)
                runlog.plot(f"{arch} {model_config}")
            dist.barrier(info)
        if out_of_time:
            stopped = "time-limit"
            break
    bar.close()
    return TrainResult(out, step, best, stopped, last_val)
