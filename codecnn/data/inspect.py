"""A human-readable summary of a CTU dataset (``codecnn info``)."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

from codecnn.data.schema import SPLIT_CODES, open_dataset_info


def describe_dataset(path: str | os.PathLike) -> list[str]:
    """Lines describing a dataset: shapes, splits, sequences, QPs, encoder, rates."""
    import h5py

    info = open_dataset_info(path)
    with h5py.File(info.path, "r") as f:
        split = f["split"][()]
        qp = f["qp"][()]
        seq = f["seq"][()]
        shapes = (f["input"].shape, f["target"].shape)
    names = {v: k for k, v in SPLIT_CODES.items()}
    enc = info.encoder
    lines = [
        f"{info.path}: codecnn {info.attrs.get('kind')} dataset, schema v{info.attrs.get('schema_version')}, "
        f"created {info.attrs.get('created')} by codecnn {info.attrs.get('codecnn_version')}",
        f"samples: {info.num_samples}  input {tuple(shapes[0])} {info.dtype}  target {tuple(shapes[1])} {info.dtype}"
        f"  (CTU {info.ctu}, context {info.context})",
        "splits: " + ", ".join(f"{names[k]} {v}" for k, v in sorted(Counter(split.tolist()).items())),
        "QPs: " + ", ".join(f"{k}: {v}" for k, v in sorted(Counter(qp.tolist()).items())),
        f"encoder: {enc.get('encoder')} {enc.get('version') or ''} "
        + " ".join(f"{k}={v}" for k, v in enc.items() if k not in ("encoder", "version")),
        f"size on disk: {info.path.stat().st_size / 1e6:.1f} MB",
        "sequences:",
    ]
    for i, s in enumerate(info.sequences):
        n = int(np.count_nonzero(seq == i))
        rates = [f"QP{u['qp']} {u['kbps']:.1f} kbps" for u in info.units if u["seq_index"] == i]
        cls = f" class {s['class']}" if s.get("class") else ""
        lines.append(f"  {s['name']}: {s['width']}x{s['height']} {s['bit_depth']}-bit, {len(s['frames'])} frames, "
                     f"{s['split']}{cls}, {n} samples; " + ", ".join(rates))
    return lines
