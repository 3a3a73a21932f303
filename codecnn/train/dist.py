"""Devices and multi-process training (``torchrun``): NCCL on GPUs, gloo on CPUs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from codecnn.errors import CodecnnError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: the GPU of this process's local rank when CUDA is present, else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise CodecnnError(f"--device {name!r} is not a device name (auto, cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CodecnnError("--device cuda asked for, but this machine has no CUDA GPU; use --device cpu or auto")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def setup(device: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        torch.distributed.init_process_group(backend)
    return DistInfo(rank, world, local, dev)


def teardown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def any_true(flag: bool, info: DistInfo) -> bool:
    """True on every rank if ``flag`` is true on any rank."""
    if info.world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    torch.distributed.all_reduce(t)
    return bool(t.item() > 0)


def agreed_max(value: float, info: DistInfo) -> float:
    """The largest of every rank's ``value``, on every rank (e.g. the time spent: one clock for all ranks)."""
    if info.world == 1:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=info.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t.item())


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        torch.distributed.barrier()
