"""Evaluating a restoration network: PSNR gains per sequence, QP and frame, and BD-rates.

An evaluation takes *runs*: one sequence coded at one QP, with its original frames, its decoded
reconstruction and the bits of every frame. Runs come from fresh encodes (x265 or HM), from a
dataset's stored bitstreams (no re-encoding), or from HM's own files (original, ``-o`` recon, log).

For each frame it measures the Y/U/V PSNR of the anchor (the reconstruction) and of the filtered
reconstruction (a luma filter leaves U and V unchanged), the filter being applied in two ways:

* **always on**: every CTU filtered; the rate is the anchor's;
* **CTU-switched**: the filter is kept on the CTUs where it lowers the squared error, as a codec's
  per-CTU flag would; the rate adds one flag bit per CTU. Its gain is never negative.

Per sequence, BD-rate and BD-PSNR of each against the anchor over the QPs (:func:`codecnn.metrics.bd_rate`),
with the raw RD points beside every figure.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from codecnn import __version__
from codecnn.data.ctu import ctu_positions
from codecnn.errors import CodecnnError
from codecnn.inference import filter_plane
from codecnn.metrics import BDError, bd_rate, psnr, psnr_yuv, psnr_yuv_weighted
from codecnn.yuv import Frame, VideoInfo

log = logging.getLogger(__name__)
PLANES = ("y", "u", "v")


@dataclass
class Run:
    """One sequence at one QP: what is needed to measure it. ``frames`` yields (index, orig, recon)."""

    sequence: dict  # name, class, width, height, bit_depth, fps, source
    qp: int
    bits: list[int]
    frames: Iterable[tuple[int, Frame, Frame]]
    encoder_psnr: list[tuple[float, float, float]] | None = None
    encoder: dict | None = None


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
    model, run: Run, ctu: int = 128, convention: str = "max", batch: int = 2, device: str = "cpu", filter_fn=None
) -> dict:
    """Measure one run frame by frame (see the module docstring); returns its QP record.
    ``filter_fn(plane, bit_depth, qp, ctu)`` replaces the PyTorch model (e.g. the int16 twin)."""
    bd = run.sequence["bit_depth"]
    frames = []
    for k, (index, orig, recon) in enumerate(run.frames):
        if orig.y.shape != recon.y.shape:
            raise CodecnnError(
                f"{run.sequence['name']}: original {orig.width}x{orig.height} and reconstruction "
                f"{recon.width}x{recon.height} differ; check --size"
            )
        filtered = (
            filter_fn(recon.y, bd, run.qp, ctu)
            if filter_fn is not None
            else filter_plane(model, recon.y, bd, run.qp, ctu, batch, device)
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
        if run.encoder_psnr is not None:
            rec["encoder_anchor"] = dict(zip(PLANES, run.encoder_psnr[k], strict=False))
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
    mean = {
        kind: {p: float(np.mean([f[kind][p] for f in frames])) for p in PLANES}
        for kind in ("anchor", "filtered", "switched")
    }
    for m in mean.values():
        m["yuv"] = psnr_yuv_weighted(m["y"], m["u"], m["v"])
    rec = {
        "qp": run.qp,
        "frames": n,
        "kbps": kbps,
        "kbps_switched": kbps + flag_kbps,
        **mean,
        "gain_y": mean["filtered"]["y"] - mean["anchor"]["y"],
        "gain_y_switched": mean["switched"]["y"] - mean["anchor"]["y"],
        "ctus_on": sum(f["ctus_on"] for f in frames) / max(1, sum(f["ctus"] for f in frames)),
        "per_frame": frames,
    }
    if frames and "encoder_anchor" in frames[0]:
        rec["encoder_anchor"] = {p: float(np.mean([f["encoder_anchor"][p] for f in frames])) for p in PLANES}
    return rec


def sequence_bd(qps: list[dict], method: str) -> dict:
    """BD figures of always-on and switched filtering against the anchor, or an error per figure."""
    anchor = [(q["kbps"], q["anchor"]["y"]) for q in qps]
    out = {}
    for name, rate_key, kind in (("always_on", "kbps", "filtered"), ("switched", "kbps_switched", "switched")):
        test = [(q[rate_key], q[kind]["y"]) for q in qps]
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
    source: str = "",
    progress: bool = False,
    filter_fn=None,
    precision: str = "float32",
) -> dict:
    """Evaluate ``model`` on every run; the results dict that ``results.json`` holds."""
    import bjontegaard

    from codecnn.train.checkpoint import fingerprint_state

    t0 = time.perf_counter()
    by_seq: dict[str, dict] = {}
    encoder = None
    for run in runs:
        log.info("evaluating %s QP%d", run.sequence["name"], run.qp)
        rec = evaluate_run(model, run, ctu, convention, device=device, filter_fn=filter_fn)
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


# --------------------------------------------------------------------------------------------------
# where runs come from


def _seq_meta(name: str, info: VideoInfo, source: str, cls: str | None = None) -> dict:
    return {
        "name": name,
        "class": cls,
        "width": info.width,
        "height": info.height,
        "bit_depth": info.bit_depth,
        "fps": str(info.fps),
        "source": source,
    }


def encode_runs(specs, encoder, qps, start: int, frames: int | None, step: int, workdir: Path) -> Iterator[Run]:
    """Fresh all-intra encodes of every sequence at every QP."""
    from codecnn.data.build import _stage

    for si, spec in enumerate(specs):
        reader = spec.open()
        sel = reader.select(start, frames if frames is not None else spec.frames, step)
        if not reader.random_access:
            from codecnn.yuv import RawYuvReader

            staged = _stage(reader, sel, workdir / f"src{si}.yuv")
            reader = RawYuvReader(staged, reader.info.width, reader.info.height, reader.info.bit_depth, reader.info.fps)
            indices, shown = list(range(len(sel))), list(sel)
        else:
            indices, shown = list(sel), list(sel)
        info = dataclasses.replace(reader.info, num_frames=len(indices))
        for qp in qps:
            res = encoder.encode((reader.read(i) for i in indices), info, qp, workdir / f"{spec.name}_qp{qp}")
            recon = res.open_recon()
            yield Run(
                _seq_meta(spec.name, info, spec.path, spec.cls),
                qp,
                res.bits,
                ((shown[k], reader.read(i), recon.read(k)) for k, i in enumerate(indices)),
                res.encoder_psnr,
                res.settings,
            )


def dataset_runs(path: str | os.PathLike, split: str | None, workdir: Path) -> Iterator[Run]:
    """Runs from a dataset's stored bitstreams (decoded again) and the recorded source frames."""
    import h5py

    from codecnn.data.schema import open_dataset_info
    from codecnn.encoders.x265 import decode_hevc
    from codecnn.sequences import SequenceSpec

    info = open_dataset_info(path)
    seqs = [s for s in info.sequences if split is None or s["split"] == split]
    if not seqs:
        raise CodecnnError(f"{path}: no sequence in split {split!r}; choose --split train, val or test")
    for s in seqs:
        if not Path(s["source"]).is_file():
            raise CodecnnError(f"{path}: the source of {s['name']} ({s['source']}) is not here; evaluate with --yuv")
        spec = SequenceSpec(s["name"], s["source"], f"{s['width']}x{s['height']}", s["bit_depth"], s["fps"])
        for u in (u for u in info.units if u["seq"] == s["name"]):
            with h5py.File(info.path, "r") as f:
                stream = f["bitstreams"][f"{s['name']}_qp{u['qp']}"][()].tobytes()
            reader = spec.open()
            vinfo = dataclasses.replace(reader.info, num_frames=len(u["frames"]))
            wanted = set(u["frames"])
            origs = (fr for i, fr in reader.frames(min(u["frames"])) if i in wanted)
            decoded = decode_hevc(stream, s["bit_depth"])
            frames = ((fi, o, r) for fi, o, r in zip(u["frames"], origs, decoded, strict=False))
            yield Run(
                _seq_meta(s["name"], vinfo, s["source"], s.get("class")),
                u["qp"],
                u["bits"],
                frames,
                u.get("encoder_psnr"),
                u.get("encoder"),
            )


def hm_runs(
    orig: str, recons: list[str], logs: list[str], size: str | None, bit_depth: int | None, fps: float | None
) -> Iterator[Run]:
    """Runs from HM's own files: the source, HM's ``-o`` reconstruction and its log, per QP."""
    from codecnn.encoders.hm import read_hm_log
    from codecnn.yuv import open_video

    if len(recons) != len(logs):
        raise CodecnnError(f"give one --hm-log per --recon ({len(recons)} recon, {len(logs)} logs)")
    src = open_video(orig, size, bit_depth, fps)
    for recon_path, log_path in zip(recons, logs, strict=False):
        hm = read_hm_log(log_path)
        rec = open_video(recon_path, size or f"{src.info.width}x{src.info.height}", src.info.bit_depth)
        if (rec.info.width, rec.info.height) != (src.info.width, src.info.height):
            raise CodecnnError(
                f"{recon_path} is {rec.info.width}x{rec.info.height} but {orig} is "
                f"{src.info.width}x{src.info.height}; they must match"
            )
        if hm.size and hm.size != (src.info.width, src.info.height):
            raise CodecnnError(
                f"{log_path} encoded {hm.size[0]}x{hm.size[1]}, but {orig} is {src.info.width}x{src.info.height}"
            )
        n = len(hm.pictures)
        if rec.info.num_frames != n or src.info.num_frames < n:
            raise CodecnnError(
                f"{log_path} logs {n} pictures; {recon_path} holds {rec.info.num_frames} and {orig} "
                f"{src.info.num_frames} frames: pass the files of the same run"
            )
        qps = {p.qp for p in hm.pictures}
        if len(qps) != 1:
            raise CodecnnError(f"{log_path}: pictures coded at several QPs {sorted(qps)}; one QP per run is expected")
        rate = hm.frame_rate or (float(fps) if fps else float(src.info.fps))
        info = dataclasses.replace(src.info, fps=type(src.info.fps)(rate), num_frames=n)
        # HM's log PSNR uses the peak 255 << (bitDepth - 8): check the pairing with HM's own figures
        first = hm.pictures[0]
        mine = psnr_yuv(src.read(0), rec.read(0), src.info.bit_depth, "hm")
        if abs(mine[0] - first.psnr_y) > 5.1e-5:  # the log has 4 decimals
            raise CodecnnError(
                f"{recon_path} does not match {log_path}: Y-PSNR of frame 0 is {mine[0]:.4f} dB here "
                f"and {first.psnr_y:.4f} dB in HM's log; check --orig, --recon and --size"
            )
        yield Run(
            _seq_meta(Path(orig).name.rsplit(".", 1)[0], info, str(orig)),
            qps.pop(),
            hm.bits,
            ((p.poc, src.read(p.poc), rec.read(p.poc)) for p in hm.pictures),
            [(p.psnr_y, p.psnr_u, p.psnr_v) for p in hm.pictures],
            {"encoder": "hm", "version": hm.version, "log": str(log_path)},
        )
