"""How much training data may be held in memory (``--cache``), for either task: the decision of
``--cache auto`` from the split's size and the machine's physical memory."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from codecnn.errors import CodecnnError
from codecnn.train.config import CACHES

if TYPE_CHECKING:
    import torch

CACHE_SHARE = 0.25  # --cache auto: cache the split when it takes at most this share of physical memory


def physical_memory() -> int | None:
    """Bytes of physical memory (os.sysconf, else /proc/meminfo), None where neither says."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def resolve_cache(
    mode: str, nbytes: int, copies: int = 1, total: int | None = None, device: torch.device | str = "cpu"
) -> tuple[str, str]:
    """The cache mode to use for ``--cache mode`` and why. ``auto`` is ``ram`` when ``copies`` caches of
    ``nbytes`` (one per process on this host) fit in :data:`CACHE_SHARE` of physical memory, else ``off``;
    ``device`` on a CPU ``device`` is ``ram``."""
    import torch

    if mode not in CACHES:
        raise CodecnnError(f"--cache {mode!r}: use one of {', '.join(CACHES)}")
    if mode == "device" and torch.device(device).type != "cuda":
        return "ram", "--cache device on a CPU: the device is host memory"
    if mode != "auto":
        return mode, f"--cache {mode}"
    total = physical_memory() if total is None else total
    need = nbytes * copies
    share = f"{CACHE_SHARE:.0%} of {total / 2**30:.1f} GiB physical memory" if total else ""
    if total and need <= CACHE_SHARE * total:
        return "ram", f"the split's samples ({need / 2**20:.0f} MiB) fit in {share}"
    why = f"more than {share}" if total else "physical memory is unknown"
    return "off", f"the split's samples ({need / 2**20:.0f} MiB x{copies}) are {why}; reading them from the file"
