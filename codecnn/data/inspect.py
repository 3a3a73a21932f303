"""A human-readable summary of a CTU dataset (``codecnn info``)."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

from codecnn.data.schema import SPLIT_CODES, open_dataset_info


def describe_dataset(path: str | os.PathLike) -> list[str]:
    """Lines describing a dataset: shapes, splits, sequences, QPs, encoder, rates."""
    import h5py

    info = open_dataset_info(path, kind=None)
    intra = info.attrs.get("kind") == "intra-modes"
    with h5py.File(info.path, "r") as f:
        groups = (
            [
                f[g]
                for g in sorted(f, key=lambda g: int(g[1:]) if g[1:].isdigit() else 0)
                if g.startswith("n") and g[1:].isdigit()
            ]
            if intra
            else [f]
        )
        split = np.concatenate([g["split"][()] for g in groups]) if groups else np.zeros(0, int)
        qp = np.concatenate([g["qp"][()] for g in groups]) if groups else np.zeros(0, int)
        seq = np.concatenate([g["seq"][()] for g in groups]) if groups else np.zeros(0, int)
        if intra:
            shape_line = "  ".join(
                f"{g.name[1:]}: {g['best'].shape[0]} blocks, orig {g['orig'].shape[1:]}" for g in groups
            )
            shape_line = (
                f"samples: {info.num_samples} blocks; cost {info.attrs.get('cost')}, "
                f"{info.attrs.get('loop')} loop; {shape_line}"
            )
        else:
            shapes = (f["input"].shape, f["target"].shape)
            shape_line = (
                f"samples: {info.num_samples}  input {tuple(shapes[0])} {info.dtype}  target "
                f"{tuple(shapes[1])} {info.dtype}  (CTU {info.ctu}, context {info.context})"
            )
    names = {v: k for k, v in SPLIT_CODES.items()}
    enc = info.encoder
    lines = [
        f"{info.path}: codecnn {info.attrs.get('kind')} dataset, schema v{info.attrs.get('schema_version')}, "
        f"created {info.attrs.get('created')} by codecnn {info.attrs.get('codecnn_version')}",
        shape_line,
        "splits: " + ", ".join(f"{names[k]} {v}" for k, v in sorted(Counter(split.tolist()).items())),
        "QPs: " + ", ".join(f"{k}: {v}" for k, v in sorted(Counter(qp.tolist()).items())),
        f"encoder: {enc.get('encoder')} {enc.get('version') or ''} "
        + " ".join(f"{k}={v}" for k, v in enc.items() if k not in ("encoder", "version")),
        f"size on disk: {info.path.stat().st_size / 1e6:.1f} MB",
        "sequences:",
    ]
    for i, s in enumerate(info.sequences):
        n = int(np.count_nonzero(seq == i))
        rates = [f"QP{u['qp']} {u['kbps']:.1f} kbps" for u in info.units if u["seq_index"] == i and "kbps" in u]
        cls = f" class {s['class']}" if s.get("class") else ""
        lines.append(
            f"  {s['name']}: {s['width']}x{s['height']} {s['bit_depth']}-bit, {len(s['frames'])} frames, "
            f"{s['split']}{cls}, {n} samples; " + ", ".join(rates)
        )
    return lines
