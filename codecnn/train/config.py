"""The options of a training run (:class:`TrainConfig`), checked where they are made; no torch import, so
the command line can name the choices without loading PyTorch."""

from __future__ import annotations

import math
from dataclasses import dataclass

from codecnn.errors import CodecnnError

SCHEDULES = ("cosine", "step", "constant")
LOSSES = ("l1", "l2", "gain")
CACHES = ("auto", "ram", "device", "off")  # --cache: see codecnn.data.cache.resolve_cache


@dataclass(frozen=True)
class TrainConfig:
    """Options of a training run (stored in every checkpoint)."""

    data: str
    out: str
    steps: int | None = None
    epochs: float | None = None
    time_limit: float | None = None
    batch: int = 16
    patch: int = 64
    lr: float = 2e-4
    schedule: str = "cosine"
    loss: str = "l1"
    seed: int = 0
    val_every: int = 500
    log_every: int = 10
    ema: float = 0.0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    workers: int = 2
    cache: str = "auto"  # the train split decompressed in memory: auto, ram, device, off
    qps: tuple[int, ...] = ()
    slice_types: tuple[int, ...] = ()  # train on pictures of these slice types only (0 B, 1 P, 2 I); () all
    # --repeat: (pattern, n) pairs, the train samples of sequences whose name matches (fnmatch; the last
    # matching pair wins) taken n times an epoch (0: left out); () every sample once
    repeat: tuple[tuple[str, int], ...] = ()
    augment: bool = True
    resume: bool = False
    init: str | None = None  # a checkpoint whose weights start the run (fine-tuning)
    progress: bool = True

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise CodecnnError(f"--schedule must be one of {', '.join(SCHEDULES)}")
        if self.batch < 1 or self.lr <= 0 or self.val_every < 1 or self.log_every < 1:
            raise CodecnnError("--batch, --lr, --val-every and --log-every must be positive")
        if self.loss not in LOSSES:
            raise CodecnnError(f"--loss {self.loss!r}: use one of {', '.join(LOSSES)}")
        if self.steps is not None and self.steps < 1:
            raise CodecnnError("--steps must be at least 1")
        if self.steps is not None and self.epochs is not None:
            raise CodecnnError("--steps and --epochs both say how long to train: give one of them")
        for name in ("lr", "epochs", "time_limit", "ema"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                raise CodecnnError(f"--{name.replace('_', '-')} {v}: give a finite number")
        if self.epochs is not None and self.epochs <= 0:
            raise CodecnnError(f"--epochs {self.epochs}: give a positive number of epochs")
        if self.time_limit is not None and self.time_limit <= 0:
            raise CodecnnError(f"--time-limit {self.time_limit}: give a positive number of seconds")
        if self.init is not None and self.resume:
            raise CodecnnError("--init starts a new run from other weights, --resume continues this one: give one")
        if self.cache not in CACHES:
            raise CodecnnError(f"--cache {self.cache!r}: use one of {', '.join(CACHES)}")
        if self.patch < 0 or self.workers < 0:
            raise CodecnnError("--patch and --workers cannot be negative")
        if any(n < 0 or not pattern for pattern, n in self.repeat):
            raise CodecnnError("--repeat NAME=N: a sequence name (or pattern, e.g. '*') and a count N >= 0")
        if not set(self.slice_types) <= {0, 1, 2}:
            raise CodecnnError(f"--slice-types {list(self.slice_types)}: use I, P and B")
        if not 0.0 <= self.ema < 1.0:
            raise CodecnnError("--ema is a decay in [0, 1), e.g. 0.999 (0: off)")
