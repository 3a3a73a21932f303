"""Parameters and multiply-accumulates per output pixel, counted from the actual modules.

Complexity in this field is reported in kMAC/pixel (JVET NNVC); a convolution's MACs are
``out_h * out_w * out_channels * (in_channels / groups) * kernel_h * kernel_w`` (biases not counted).
"""

from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, *inputs: torch.Tensor) -> int:
    """MACs of one forward pass **per sample** of ``inputs``, from hooks on every Conv2d and Linear."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out):
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp, out):
        nonlocal total
        total += out.numel() // out.shape[0] * m.in_features

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return total


def rdb_macs_per_pixel(il: int, g: int, n: int, ol: int, kernel_area: int = 9) -> int:
    """Closed form of a densely connected block's MACs per pixel (lab notes, corrected): ``n - 1`` dense
    ``kernel_area`` layers of growth ``g`` on ``il`` input channels, then a 1x1 fusion to ``ol`` channels:
    ``k*((n-1)*il*g + g*g*(n-1)*(n-2)/2) + (il+(n-1)*g)*ol``."""
    return kernel_area * ((n - 1) * il * g + g * g * (n - 1) * (n - 2) // 2) + (il + (n - 1) * g) * ol


def describe_complexity(model: nn.Module, size: int = 128) -> dict:
    """Parameters and MACs per output pixel for a ``size`` x ``size`` output (one CTU). The forward pass runs
    on PyTorch's meta device (shapes only): no memory is allocated whatever ``size`` is."""
    import copy

    c = getattr(model, "context", 0)
    cin = getattr(getattr(model, "config", None), "in_channels", 1)
    shapes_only = copy.deepcopy(model).to("meta")
    x = torch.zeros(1, 1, size + 2 * c, size + 2 * c, device="meta")
    args = (x, torch.full((1,), 32, device="meta")) if cin > 1 else (x,)
    macs = count_macs(shapes_only, *args)
    return {"params": count_params(model), "macs_per_pixel": macs / (size * size), "output": size}


def modenet_macs_per_block(model: nn.Module) -> dict[int, int]:
    """MACs of a mode network's forward pass for one block of each size 4, 8, 16 and 32."""
    out = {}
    for n in (4, 8, 16, 32):
        x = torch.zeros(1, 3, 2 * n + 1, 2 * n + 1)
        x[:, 2] = 1
        out[n] = count_macs(model, x, torch.tensor([n]), torch.tensor([32]))
    return out
