"""A human-readable summary of a CTU dataset (``codecnn info``)."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

from codecnn.data.schema import SPLIT_CODES, open_dataset_info
from codecnn.errors import CodecnnError


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
            slice_types = f["slice_type"][()] if "slice_type" in f else np.full(len(qp), 2)
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
        *(
            []
            if intra
            else [
                f"test condition: {enc.get('config', 'ai')}; slice types: "
                + ", ".join(f"{'BPI'[k]} {v}" for k, v in sorted(Counter(slice_types.tolist()).items(), reverse=True))
            ]
        ),
        f"encoder: {enc.get('encoder')} {enc.get('version') or ''} "
        + " ".join(f"{k}={v}" for k, v in enc.items() if k not in ("encoder", "version")),
        f"size on disk: {info.path.stat().st_size / 1e6:.1f} MB",
        "sequences:",
    ]
    for i, s in enumerate(info.sequences):
        n = int(np.count_nonzero(seq == i))
        rates = [f"QP{u['qp']} {u['kbps']:.1f} kbps" for u in info.units if u["seq_index"] == i and "kbps" in u]
        cls = f" class {s['class']}" if s.get("class") else ""
        made = [f"panned by {s['pan'][0]},{s['pan'][1]} a frame"] if "pan" in s else []
        made += [f"downscaled by {s['downscale']}"] if s.get("downscale", 1) > 1 else []
        scaled = f" ({' and '.join(made)} from {s['source_size']})" if made else ""
        lines.append(
            f"  {s['name']}: {s['width']}x{s['height']}{scaled} {s['bit_depth']}-bit, {len(s['frames'])} frames, "
            f"{s['split']}{cls}, {n} samples; " + ", ".join(rates)
        )
    return lines


def verify_dataset(path: str | os.PathLike, progress: bool = False) -> tuple[list[str], list[str]]:
    """Read every chunk of every array and re-decode every stored bitstream; for CTU datasets also cut the
    decoded reconstruction again and compare it with the stored inputs. Returns (summary lines, problems);
    no problem means the file is whole. The header and layout checks of :func:`open_dataset_info` come first."""
    import h5py
    from tqdm import tqdm

    from codecnn.data.ctu import cut_ctus
    from codecnn.encoders.x265 import decode_hevc

    info = open_dataset_info(path, kind=None)
    intra = info.attrs.get("kind") == "intra-modes"
    problems: list[str] = []
    chunks = 0
    with h5py.File(info.path, "r") as f:
        arrays = []
        f.visititems(lambda name, obj: arrays.append(name) if isinstance(obj, h5py.Dataset) else None)
        for name in tqdm([a for a in arrays if not a.startswith("bitstreams/")], disable=not progress, desc="arrays"):
            d = f[name]
            step = d.chunks[0] if d.chunks else max(1, d.shape[0] if d.ndim else 1)
            for a in range(0, d.shape[0] if d.ndim else 1, step):
                try:
                    d[a : a + step] if d.ndim else d[()]
                    chunks += 1
                except (OSError, ValueError) as e:
                    problems.append(f"{name}[{a}:{a + step}] cannot be read ({str(e).strip().splitlines()[-1]})")
        decoded = 0
        for u in tqdm(info.units, disable=not progress, desc="bitstreams"):
            key = f"{u['seq']}_qp{u['qp']}"
            if u.get("qp") is None:
                continue  # open-loop intra labels: no encode
            if key not in f.get("bitstreams", {}):
                problems.append(f"bitstream {key} is missing")
                continue
            seq = next(s for s in info.sequences if s["name"] == u["seq"])
            try:
                recons = list(decode_hevc(f["bitstreams"][key][()].tobytes(), seq["bit_depth"], f"bitstream {key}"))
            except (CodecnnError, OSError) as e:
                problems.append(str(e))
                continue
            decoded += 1
            if len(recons) != len(u["frames"]):
                problems.append(f"bitstream {key} decodes to {len(recons)} pictures, the unit has {len(u['frames'])}")
                continue
            if intra or "sample_range" not in u or (u.get("encoder") or {}).get("loop_model"):
                continue  # closed-loop inputs are what HM's filter received, not a plain decoder's pictures
            a, b = u["sample_range"]
            per_frame = (b - a) // max(1, len(recons))
            for j, r in enumerate(recons):
                want = cut_ctus(r.y, r.y, info.ctu, info.context)[0]
                lo = a + j * per_frame
                try:
                    stored = f["input"][lo : lo + per_frame]
                except (OSError, ValueError):
                    continue  # already listed with the arrays
                if stored.shape != want.shape or not np.array_equal(stored, want):
                    problems.append(
                        f"input samples {lo}..{lo + per_frame - 1} differ from bitstream {key}'s picture {j}"
                    )
    lines = [f"verified {info.path}: {chunks} chunks read, {decoded} bitstreams decoded"]
    return lines, problems
