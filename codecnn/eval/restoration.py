"""Evaluating a restoration network: PSNR gains per sequence, QP and frame, and BD-rates.

An evaluation takes *runs* (:mod:`codecnn.eval.runs`). For each frame it measures the Y/U/V PSNR of the
anchor (the reconstruction) and of the filtered reconstruction (a luma filter leaves U and V
unchanged), the filter being applied in two ways:

* **always on**: every CTU filtered; the rate is the anchor's;
* **CTU-switched**: the filter is kept on the CTUs where it lowers the squared error, as a codec's
  per-CTU flag would; the rate adds one flag bit per CTU. Its gain is never negative.

Per sequence, BD-rate and BD-PSNR of each against the anchor over the QPs
(:func:`codecnn.eval.metrics.bd_rate`), with the raw RD points beside every figure.

:func:`restoration_metrics` is the validation measure of training: per QP, the mean over frames of the
frame Y-PSNR of the reconstruction (the network's input) and of the restored output, both against the
original, with the output rounded and clipped to the bit depth as a codec would store it; the gain is
their difference. Its score is the mean gain over the frames (each (sequence, frame, QP) picture counts once),
the measure the trainer's paired test compares: in all-intra data every QP has the same frames, and this is
the mean of the per-QP gains; in random-access data a picture's QP is its own (an I picture, two P pictures
and many B pictures per base QP), and a mean over those QPs would weigh the few I and P pictures as much as
all the B pictures.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import nn

from codecnn import __version__
from codecnn.data.ctu import ctu_positions
from codecnn.data.restoration_dataset import CTUDataset
from codecnn.errors import CodecnnError
from codecnn.eval.inference import filter_plane
from codecnn.eval.metrics import (
    BDError,
    bd_rate,
    psnr,
    psnr_from_mse,
    psnr_yuv,
    psnr_yuv_weighted,
    standard_error,
)
from codecnn.eval.runs import Run
from codecnn.yuv import sample_peak

log = logging.getLogger(__name__)
PLANES = ("y", "u", "v")
VAL_BATCH = 16


def switch_ctus(orig: np.ndarray, anchor: np.ndarray, filtered: np.ndarray, ctu: int) -> tuple[np.ndarray, list]:
    """Per-CTU choice between ``anchor`` and ``filtered``: the one with the lower squared error against
    ``orig`` (ties keep the anchor). Returns the switched plane and the on/off flag of each CTU."""
    out = anchor.copy()
    flags = []
    h, w = orig.shape
    for y, x in ctu_positions(h, w, ctu):
        sl = (slice(y, min(y + ctu, h)), slice(x, min(x + ctu, w)))
        o = orig[sl].astype(np.int64)
        on = int(((filtered[sl] - o) ** 2).sum()) < int(((anchor[sl] - o) ** 2).sum())
        if on:
            out[sl] = filtered[sl]
        flags.append(on)
    return out, flags


def evaluate_run(
    model,
    run: Run,
    ctu: int = 128,
    convention: str = "max",
    batch: int = 2,
    device: str = "cpu",
    filter_fn=None,
    anchor_run: Run | None = None,
) -> dict:
    """Measure one run frame by frame (see the module docstring); returns its QP record.
    ``filter_fn(plane, bit_depth, qp, ctu)`` replaces the PyTorch model (e.g. the int16 twin).

    ``anchor_run`` (the post-filter setting, VRCNN/DCAD): ``run`` is coded with deblocking and SAO off and
    is the network's input; the anchor is ``anchor_run``, the same pictures coded with both on, at its own
    rate. The anchor's PSNR and bits come from it; the input's own PSNR is kept as ``unfiltered``."""
    bd = run.sequence["bit_depth"]
    frames = []
    if anchor_run is not None and (anchor_run.sequence["name"], anchor_run.qp) != (run.sequence["name"], run.qp):
        raise CodecnnError(
            f"the anchor run {anchor_run.sequence['name']} QP{anchor_run.qp} does not pair with "
            f"{run.sequence['name']} QP{run.qp}: give the anchor files in the same order"
        )
    anchors = iter(anchor_run.frames) if anchor_run is not None else None
    for k, (index, orig, recon) in enumerate(run.frames):
        if orig.y.shape != recon.y.shape:
            raise CodecnnError(
                f"{run.sequence['name']}: original {orig.width}x{orig.height} and reconstruction "
                f"{recon.width}x{recon.height} differ; check --size"
            )
        qp = run.picture_qp(k)
        filtered = (
            filter_fn(recon.y, bd, qp, ctu)
            if filter_fn is not None
            else filter_plane(model, recon.y, bd, qp, ctu, batch, device)
        )
        switched, flags = switch_ctus(orig.y, recon.y, filtered, ctu)
        anchor = psnr_yuv(orig, recon, bd, convention)
        rec = {
            "frame": int(index),
            "bits": int(run.bits[k]),
            "ctus": len(flags),
            "ctus_on": int(sum(flags)),
            "anchor": dict(zip(PLANES, anchor, strict=False)),
            "filtered": {"y": psnr(orig.y, filtered, bd, convention=convention), "u": anchor[1], "v": anchor[2]},
            "switched": {"y": psnr(orig.y, switched, bd, convention=convention), "u": anchor[1], "v": anchor[2]},
        }
        if run.slice_type:
            rec.update(qp=qp, slice_type="BPI"[run.slice_type[k]], poc=int(run.poc[k]))
        if run.encoder_psnr is not None:
            rec["encoder_anchor"] = dict(zip(PLANES, run.encoder_psnr[k], strict=False))
        if anchors is not None:
            a_index, a_orig, a_recon = next(anchors, (None, None, None))
            if a_index != index or not np.array_equal(a_orig.y, orig.y):
                raise CodecnnError(
                    f"{run.sequence['name']} QP{run.qp}: the anchor's frame {a_index} is not frame {index} of the "
                    "network's input: the two encodes must hold the same pictures"
                )
            rec["unfiltered"] = rec["anchor"]
            rec["anchor"] = dict(zip(PLANES, psnr_yuv(orig, a_recon, bd, convention), strict=True))
            rec["anchor_bits"] = int(anchor_run.bits[k])
        frames.append(rec)
    if len(frames) != len(run.bits):
        raise CodecnnError(f"{run.sequence['name']} QP{run.qp}: {len(frames)} frames for {len(run.bits)} coded ones")
    return summarise_qp(run, frames)


def summarise_qp(run: Run, frames: list[dict]) -> dict:
    """Average a run's frame records into its QP record (PSNR: mean over frames, as HM reports it)."""
    fps = float(Fraction(run.sequence["fps"]))
    n = len(frames)
    kbps = sum(f["bits"] for f in frames) * fps / n / 1000.0
    flag_kbps = sum(f["ctus"] for f in frames) * fps / n / 1000.0
    post = bool(frames) and "unfiltered" in frames[0]
    kinds = ("anchor", "filtered", "switched", "unfiltered") if post else ("anchor", "filtered", "switched")
    mean = {kind: {p: float(np.mean([f[kind][p] for f in frames])) for p in PLANES} for kind in kinds}
    for m in mean.values():
        m["yuv"] = psnr_yuv_weighted(m["y"], m["u"], m["v"])
    rates = {"kbps": kbps, "kbps_switched": kbps + flag_kbps}
    if post:  # the anchor (filters on) at its own rate; the network's input and output at the input's rate
        rates = {
            "kbps": sum(f["anchor_bits"] for f in frames) * fps / n / 1000.0,
            "kbps_filtered": kbps,
            "kbps_switched": kbps + flag_kbps,
        }
    rec = {
        "qp": run.qp,
        "frames": n,
        **rates,
        **mean,
        "gain_y": mean["filtered"]["y"] - mean["anchor"]["y"],
        "gain_y_switched": mean["switched"]["y"] - mean["anchor"]["y"],
        "ctus_on": sum(f["ctus_on"] for f in frames) / max(1, sum(f["ctus"] for f in frames)),
        "per_frame": frames,
    }
    types = sorted({f["slice_type"] for f in frames if "slice_type" in f})
    if types and types != ["I"]:  # random access, low delay: the gain of each slice type's pictures
        rec["gain_y_by_slice_type"] = {
            t: float(np.mean([f["filtered"]["y"] - f["anchor"]["y"] for f in frames if f["slice_type"] == t]))
            for t in types
        }
    if frames and "encoder_anchor" in frames[0]:
        rec["encoder_anchor"] = {p: float(np.mean([f["encoder_anchor"][p] for f in frames])) for p in PLANES}
    return rec


def sequence_bd(qps: list[dict], method: str) -> dict:
    """BD figures of always-on and switched filtering against the anchor, or an error per figure."""
    anchor = [(q["kbps"], q["anchor"]["y"]) for q in qps]
    out = {}
    for name, rate_key, kind in (("always_on", "kbps", "filtered"), ("switched", "kbps_switched", "switched")):
        test = [(q.get("kbps_filtered", q["kbps"]) if kind == "filtered" else q[rate_key], q[kind]["y"]) for q in qps]
        try:
            out[name] = bd_rate(anchor, test, method)
        except BDError as e:
            out[name] = {"error": str(e), "method": method, "anchor": anchor, "test": test}
    return out


def evaluate(
    model,
    checkpoint: dict,
    runs: Iterable[Run],
    *,
    ctu: int = 128,
    method: str = "pchip",
    convention: str = "max",
    device: str = "cpu",
    batch: int = 2,
    source: str = "",
    progress: bool = False,
    filter_fn=None,
    precision: str = "float32",
    anchor_runs: Iterable[Run] | None = None,
) -> dict:
    """Evaluate ``model`` on every run (``batch`` CTUs through the network at a time; a tqdm bar over the
    runs with ``progress``); the results dict that ``results.json`` holds. With ``anchor_runs`` (one per run,
    in the same order: the same pictures coded with deblocking and SAO on), the post-filter setting: the
    network replaces the loop filters and is compared with that anchor at its own rate."""
    import bjontegaard
    from tqdm import tqdm

    from codecnn.train.checkpoint import fingerprint_state

    t0 = time.perf_counter()
    by_seq: dict[str, dict] = {}
    encoder = None
    anchors = iter(anchor_runs) if anchor_runs is not None else None
    for run in tqdm(runs, desc="evaluate", unit="run", disable=not progress, leave=False):
        log.info("evaluating %s QP%d", run.sequence["name"], run.qp)
        anchor = next(anchors, None) if anchors is not None else None
        if anchors is not None and anchor is None:
            raise CodecnnError(f"no anchor run (filters on) for {run.sequence['name']} QP{run.qp}")
        rec = evaluate_run(model, run, ctu, convention, batch, device, filter_fn, anchor)
        seq = by_seq.setdefault(run.sequence["name"], {**run.sequence, "qps": []})
        seq["qps"].append(rec)
        encoder = encoder or run.encoder
    if not by_seq:
        raise CodecnnError("nothing to evaluate: no sequence or no frame selected")
    for seq in by_seq.values():
        seq["qps"].sort(key=lambda q: q["qp"])
        seq["bd"] = sequence_bd(seq["qps"], method)
    results = {
        "kind": "codecnn-evaluation",
        "codecnn_version": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": {"torch": str(torch.__version__), "numpy": np.__version__, "bjontegaard": bjontegaard.__version__},
        "checkpoint": {
            "path": checkpoint.get("path"),
            "arch": checkpoint["arch"],
            "config": checkpoint["config"],
            "step": checkpoint.get("step"),
            "fingerprint": fingerprint_state(model.state_dict()),
            "train_dataset": checkpoint.get("dataset"),
        },
        "encoder": encoder,
        "source": source,
        "ctu": ctu,
        "precision": precision,
        "setting": "post-filter" if anchor_runs is not None else "in-loop",
        "config": (encoder or {}).get("config", "ai"),
        "psnr_peak": convention,
        "bd_method": method,
        "seconds": time.perf_counter() - t0,
        "sequences": list(by_seq.values()),
    }
    results["summary"] = summarise(results)
    return results


def summarise(results: dict) -> dict:
    """Averages over sequences (and over JCT-VC classes where the sequences carry one)."""
    seqs = results["sequences"]

    def avg(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    def bd_of(s, name):
        b = s["bd"][name]
        return b.get("bd_rate")

    out = {
        "gain_y": avg(np.mean([q["gain_y"] for q in s["qps"]]) for s in seqs),
        "gain_y_switched": avg(np.mean([q["gain_y_switched"] for q in s["qps"]]) for s in seqs),
        "bd_rate": avg(bd_of(s, "always_on") for s in seqs),
        "bd_rate_switched": avg(bd_of(s, "switched") for s in seqs),
        "bd_rate_missing": [s["name"] for s in seqs if "error" in s["bd"]["always_on"]],
    }
    qps = sorted({q["qp"] for s in seqs for q in s["qps"]})
    out["per_qp"] = {
        str(qp): {
            "gain_y": avg(q["gain_y"] for s in seqs for q in s["qps"] if q["qp"] == qp),
            "gain_y_switched": avg(q["gain_y_switched"] for s in seqs for q in s["qps"] if q["qp"] == qp),
        }
        for qp in qps
    }
    classes = sorted({s.get("class") for s in seqs if s.get("class")})
    out["classes"] = {
        c: {
            "sequences": [s["name"] for s in seqs if s.get("class") == c],
            "gain_y": avg(np.mean([q["gain_y"] for q in s["qps"]]) for s in seqs if s.get("class") == c),
            "bd_rate": avg(bd_of(s, "always_on") for s in seqs if s.get("class") == c),
            "bd_rate_switched": avg(bd_of(s, "switched") for s in seqs if s.get("class") == c),
        }
        for c in classes
    }
    return out


def quantise(x: torch.Tensor, bit_depth: torch.Tensor) -> torch.Tensor:
    """Round [0, 1] samples to the integer grid of each sample's bit depth and clip, back in [0, 1]."""
    peak = sample_peak(bit_depth.long()).to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return torch.round(x.clamp(0, 1) * peak) / peak


@torch.no_grad()
def restoration_metrics(model: nn.Module, ds: CTUDataset, device: torch.device, amp: bool = True) -> dict:
    """Per-QP mean frame Y-PSNR of input and output against the target, and the gain (see module doc), with
    the gain's standard error over the frames; the score (the mean gain over the frames, the per-QP gains
    weighed by their frames) and its standard error (stratified by QP)."""
    model.eval()
    c = ds.context
    sse = defaultdict(lambda: [0.0, 0.0, 0])  # (seq, frame, qp) -> [sse_in, sse_out, pixels]
    loader = torch.utils.data.DataLoader(ds, batch_size=VAL_BATCH, shuffle=False, num_workers=0)
    for batch in loader:
        x = batch["input"].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and amp):
            out = model(x, batch["qp"].to(device))
        bd = batch["bit_depth"].to(device)
        out = quantise(out.float(), bd)
        centre = x[:, :, c:-c, c:-c] if c else x
        t, m = batch["target"].to(device), batch["mask"].to(device)
        e_in = (((centre - t) ** 2) * m).flatten(1).sum(1).double().cpu()
        e_out = (((out - t) ** 2) * m).flatten(1).sum(1).double().cpu()
        n = m.flatten(1).sum(1).cpu()
        for k in range(x.shape[0]):
            key = (int(batch["seq"][k]), int(batch["frame"][k]), int(batch["qp"][k]))
            acc = sse[key]
            acc[0] += float(e_in[k])
            acc[1] += float(e_out[k])
            acc[2] += int(n[k])
    frame_gains = [psnr_from_mse(b / n) - psnr_from_mse(a / n) for _, (a, b, n) in sorted(sse.items())]
    per_qp = defaultdict(lambda: [[], []])
    for (_, _, qp), (a, b, n) in sse.items():
        per_qp[qp][0].append(psnr_from_mse(a / n))  # samples are in [0, 1]: the peak is 1
        per_qp[qp][1].append(psnr_from_mse(b / n))
    table = {}
    for qp in sorted(per_qp):
        pin, pout = per_qp[qp]
        mi, mo = sum(pin) / len(pin), sum(pout) / len(pout)
        gains = np.array(pout) - np.array(pin)
        table[str(qp)] = {
            "psnr_in": mi,
            "psnr_out": mo,
            "gain": mo - mi,
            "gain_se": standard_error(gains),
            "frames": len(pin),
        }
    pictures = max(1, sum(v["frames"] for v in table.values()))
    score = sum(v["gain"] * v["frames"] for v in table.values()) / pictures
    score_se = float(np.sqrt(sum((v["gain_se"] * v["frames"] / pictures) ** 2 for v in table.values())))
    model.train()
    return {
        "score": score,
        "score_se": score_se,  # the standard error of the score over the validation frames
        "frames": sum(v["frames"] for v in table.values()),
        "ctus": len(ds),
        "frame_gains": frame_gains,  # per (sequence, frame, QP), in that order: for paired comparisons
        "per_qp": table,
        "curves": {f"QP{q}": v["gain"] for q, v in table.items()},
        "curve_label": "val Y-PSNR gain (dB)",
    }


def int16_filter(checkpoint: str | os.PathLike, calib: str | os.PathLike | None = None):
    """The int16 fixed-point network HM runs (exported and calibrated as ``codecnn export --int16``) as a
    ``filter_fn(plane, bit_depth, qp, ctu)`` for :func:`evaluate`, and the export's report."""
    import tempfile

    from hm_bridge.export import export_checkpoint
    from hm_bridge.fixed import filter_plane_int
    from hm_bridge.format import read_cnnw

    with tempfile.TemporaryDirectory() as d:
        path, report = export_checkpoint(checkpoint, Path(d) / "m16.cnnw", int16=True, calib=calib)
        graph = read_cnnw(path)

    def filter_fn(plane, bit_depth, qp, ctu):
        return filter_plane_int(graph, plane, bit_depth, qp, ctu)

    return filter_fn, report


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    make_runs,
    *,
    ctu: int | None = None,
    method: str = "pchip",
    convention: str = "max",
    device: str = "auto",
    batch: int = 2,
    int16: bool = False,
    calib: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict:
    """Load a restoration checkpoint and evaluate it on the runs of ``make_runs(workdir) -> (runs, source)``
    (see :func:`codecnn.eval.runs.select_runs`), in a temporary work folder; with ``int16``, through the
    int16 network HM runs instead of PyTorch float. ``ctu`` defaults to the training data's CTU size."""
    import tempfile

    from codecnn.train.checkpoint import load_model
    from codecnn.train.dist import pick_device

    model, ckpt = load_model(checkpoint, task="ctu-restoration")
    ckpt["path"] = str(checkpoint)
    ctu = ctu or (ckpt.get("dataset") or {}).get("ctu") or 128
    dev = pick_device(device)
    model.to(dev)
    filter_fn, int16_report = int16_filter(checkpoint, calib) if int16 else (None, None)
    with tempfile.TemporaryDirectory(prefix="codecnn-eval-") as tmp:
        runs, source, *anchors = make_runs(Path(tmp))
        results = evaluate(
            model,
            ckpt,
            runs,
            ctu=ctu,
            method=method,
            convention=convention,
            device=str(dev),
            batch=batch,
            source=source,
            progress=progress,
            filter_fn=filter_fn,
            precision="int16" if int16 else "float32",
            anchor_runs=anchors[0] if anchors else None,
        )
    if int16_report is not None:
        results["int16_export"] = int16_report
    return results
