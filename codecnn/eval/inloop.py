"""In-loop evaluation through a patched HM: the filter inside the encoder and the decoder.

In random access and low delay an in-loop filter changes the reference pictures, so its gain can only be
measured by running it inside the codec. For every sequence and QP, the user's HM, patched by
``python -m hm_bridge patch-hm``, runs twice: the **anchor** (no ``--CnnModel``: HM unchanged) and the
**test** (``--CnnModel M.cnnw``: the filtered pictures are the references). Both bitstreams are decoded
with the patched decoder (the test's with the same model) and the decoded pictures must equal the
encoder's reconstruction byte for byte, with every picture hash SEI (MD5) checked by HM's decoder: a
mismatch is an error, never a number.

``signal`` is what the test encoder decides and signals (HM's ``--CnnSignal``; hm_bridge/cpp/codecnn_signal.h):
``always`` filters every picture, ``picture`` switches the filter per picture with a residual scale fitted
at the encoder, ``ctu`` also per CTU, each choice made with lambda x its bits. The payload travels in the
slice headers, so HM's log counts it in the test's rate.

Reported as the CTC reports it: per QP the rate and Y/U/V PSNR of both runs (HM's own ``SUMMARY`` figures),
per sequence the BD-rate of Y, U and V (:func:`codecnn.eval.metrics.bd_rate`), and the encoder and decoder
time ratios ``EncT``/``DecT`` (test time over anchor time). Each (sequence, QP, anchor|test) unit keeps its
result in ``WORK/<seq>/qp<QP>/<run>/unit.json``, written last: a run that is started again with the same
HM, cfg, model and frames skips the units already done (``--resume`` is implicit with ``--work-dir``).
"""

from __future__ import annotations

import dataclasses
import filecmp
import hashlib
import json
import logging
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codecnn.encoders._capture import tail
from codecnn.encoders.hm import HMEncoder, find_hm_binary, read_hm_log
from codecnn.encoders.settings import EncodeSettings
from codecnn.errors import CodecnnError, EncoderError
from codecnn.eval.metrics import BDError, bd_rate
from codecnn.files import atomic_write_text
from codecnn.yuv import RawYuvReader, stage_frames
from hm_bridge.signal import VERSION as SIGNAL_VERSION

log = logging.getLogger(__name__)

HM_DEC_ENV = "CODECNN_HM_DEC"
SIGNALS = {"always": 0, "picture": 1, "ctu": 2}  # HM's --CnnSignal (hm_bridge/cpp/codecnn_signal.h Mode)
# the encoder's line per picture (codecnn_hm.h filterLumaEncoder): "codecnn: POC 8 on k=52 ctus=7/9 bytes=3"
_PICTURE = re.compile(
    r"^codecnn: POC (\d+) (on|off) k=(\d+)(?: qp=(\d+))? ctus=(\d+)/(\d+) bytes=(\d+)(?: tries=(\d+))?$", re.M
)
RUNS = ("anchor", "test")
PLANES = ("y", "u", "v")
# HM's decoder (TDecGop.cpp, decmain.cpp): "[MD5:<y>,<u>,<v>,(OK)]" per picture, "(***ERROR***)" on a
# mismatch and "***ERROR*** A decoding mismatch occured" at the end
_MD5_OK = re.compile(r"\[MD5:[^\]]*\(OK\)\]")
_MD5_BAD = re.compile(r"\*\*\*ERROR\*\*\*")


def hm_encoder_files(encode: EncodeSettings) -> tuple[Path, Path]:
    """The patched HM encoder and its cfg that ``encode`` names, resolved (a missing cfg is refused first)."""
    if not encode.hm_cfg or not Path(encode.hm_cfg).is_file():
        raise CodecnnError(
            "--in-loop needs HM's cfg of the test condition: --hm-cfg encoder_randomaccess_main.cfg (or the "
            "intra / lowdelay ones), an existing file"
        )
    return find_hm_binary(encode.hm_bin).resolve(), Path(encode.hm_cfg).resolve()


def find_hm_decoder(path: str | os.PathLike | None) -> Path:
    cand = path or os.environ.get(HM_DEC_ENV)
    if not cand:
        raise CodecnnError(
            f"--in-loop decodes every bitstream: give the patched HM decoder with --hm-dec PATH (TAppDecoderStatic) "
            f"or set {HM_DEC_ENV}"
        )
    p = Path(cand)
    if not p.is_file() or not os.access(p, os.X_OK):
        raise CodecnnError(f"HM decoder {p} is not an executable file: fix --hm-dec or {HM_DEC_ENV}")
    return p.resolve()


# the load line of the patched encoder (codecnn_hm.h Loaded): "codecnn: luma filter M (int16, CRC-32 ...) after
# SAO, signalling version 3" (before SAO with --CnnBeforeSao=1); builds patched by an hm_bridge before version 3
# print no version
_LOADED = re.compile(r"^codecnn: luma filter .* (after|before) SAO(?:, signalling version (\d+))?$", re.M)


def check_signalling(log_text: str, enc: Path, before_sao: bool = False) -> None:
    """Refuse an encoder whose signalling version is not the one the results record (``SIGNAL_VERSION``), or
    whose filter ran at another place than asked (``before_sao``): an HM patched by another hm_bridge would be
    reported under the wrong version or placement."""
    m = _LOADED.search(log_text)
    if m is None:
        return  # no model loaded (evaluate-modes --in-hm, anchors)
    if (m.group(1) == "before") != before_sao:
        raise CodecnnError(
            f"{enc} ran the filter {m.group(1)} SAO, not {'before' if before_sao else 'after'} it as asked "
            "(--before-sao needs an HM patched by this hm_bridge): run `python -m hm_bridge patch-hm HM` again and "
            "rebuild HM"
        )
    found = int(m.group(2)) if m.group(2) else None
    if found != SIGNAL_VERSION:
        said = f"version {found}" if found else "a version before 3 (patched by an older hm_bridge)"
        raise CodecnnError(
            f"{enc} writes codecnn signalling {said}, this codecnn records version {SIGNAL_VERSION}: run "
            "`python -m hm_bridge patch-hm HM` again and rebuild HM"
        )


def read_decisions(log_text: str) -> list[dict]:
    """The encoder's per-picture choices as the patched HM prints them (POC, on, scale k/64, the QP the network
    was given, CTUs on of all, payload bytes, how many times the picture was filtered), in coding order.
    Logs of signalling version 1 have no ``qp`` nor ``tries`` (None)."""
    out = []
    for m in _PICTURE.findall(log_text):
        d = {
            "poc": int(m[0]),
            "on": m[1] == "on",
            "k": int(m[2]),
            "net_qp": int(m[3]) if m[3] else None,
            "ctus_on": int(m[4]),
            "ctus": int(m[5]),
            "bytes": int(m[6]),
            "tries": int(m[7]) if m[7] else None,
        }
        out.append(d)
    return out  # fmt: skip


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Unit:
    seq: str
    qp: int
    run: str  # anchor | test
    source: str  # raw I420 file of exactly the frames to code
    info: object  # VideoInfo
    workdir: str
    key: dict  # what decides the result: resume only when it is the same


def decode_and_check(
    dec: Path, work: Path, bit_depth: int, model: Path | None, who: str, inter_model: Path | None = None
) -> float:
    """Decode ``work/stream.bin`` with HM's decoder and check it against the encoder's ``recon.yuv`` and the
    MD5 SEI; return the decoder's wall time."""
    argv = [str(dec), "-b", "stream.bin", "-o", "dec.yuv", "-d", str(bit_depth)]
    if model is not None:
        argv.append(f"--CnnModel={model}")
        if inter_model is not None:
            argv.append(f"--CnnInterModel={inter_model}")
    log_path = work / "decoder.log"
    t0 = time.perf_counter()
    with open(log_path, "wb") as logf:
        try:
            rc = subprocess.run(argv, cwd=work, stdout=logf, stderr=subprocess.STDOUT).returncode
        except OSError as e:
            raise EncoderError(f"cannot run HM decoder {dec}: {e}") from None
    seconds = time.perf_counter() - t0
    text = log_path.read_text(errors="replace")
    if _MD5_BAD.search(text):  # HM's decoder also exits with 1 then
        raise CodecnnError(f"{who}: HM's decoder reports a picture hash (MD5) mismatch: encoder and decoder disagree")
    if rc != 0:
        raise EncoderError(f"{who}: HM decoder exited with status {rc}; it said: {tail(log_path)}")
    if not _MD5_OK.search(text):
        raise CodecnnError(
            f"{who}: HM's decoder checked no picture hash: the encoder must write the MD5 SEI "
            "(codecnn adds --SEIDecodedPictureHash=1; check that the cfg or the extra options do not drop it)"
        )
    if not filecmp.cmp(work / "dec.yuv", work / "recon.yuv", shallow=False):
        raise CodecnnError(
            f"{who}: the decoded pictures differ from the encoder's reconstruction: encoder and decoder disagree"
        )
    (work / "dec.yuv").unlink()
    return seconds


def run_unit(
    u: Unit,
    enc: Path,
    dec: Path,
    cfg: Path,
    config: str,
    model: Path | None,
    signal: str = "ctu",
    inter_model: Path | None = None,
    extra_args: tuple[str, ...] = (),
) -> dict:
    """Encode, decode and check one unit; write and return its record (``unit.json``). ``extra_args``: more
    encoder options (``evaluate-modes --in-hm``'s mode-network settings; the decoder is given none)."""
    work = Path(u.workdir)
    done = work / "unit.json"
    if done.is_file():
        try:
            rec = json.loads(done.read_text())
            if rec.get("key") == u.key:
                log.info("%s QP%d %s: done before, kept", u.seq, u.qp, u.run)
                return rec
        except ValueError:
            pass
    work.mkdir(parents=True, exist_ok=True)
    done.unlink(missing_ok=True)
    args = ("--SEIDecodedPictureHash=1",)
    if model is not None:
        args += (f"--CnnModel={model}", f"--CnnSignal={SIGNALS[signal]}")
        if inter_model is not None:
            args += (f"--CnnInterModel={inter_model}",)
    args += tuple(extra_args)
    encoder = HMEncoder(enc, cfg, args=args, config=config)
    reader = RawYuvReader(u.source, u.info.width, u.info.height, u.info.bit_depth, u.info.fps)
    who = f"{u.seq} QP{u.qp} {u.run}"
    try:
        res = encoder.encode((reader.read(i) for i in range(u.info.num_frames)), u.info, u.qp, work)
    finally:
        reader.close()
    log_text = Path(res.log).read_text(errors="replace")
    if model is not None:
        check_signalling(log_text, enc, "--CnnBeforeSao=1" in extra_args)
    dec_seconds = decode_and_check(dec, work, u.info.bit_depth, model, who, inter_model)
    hm = read_hm_log(res.log)
    if hm.summary is None:
        raise CodecnnError(f"{who}: HM's log has no SUMMARY table: {res.log}")
    decisions = read_decisions(log_text)
    fps = hm.frame_rate or round(float(u.info.fps))
    rec = {
        "seq": u.seq,
        "qp": u.qp,
        "run": u.run,
        "key": u.key,
        "frames": len(hm.pictures),
        "kbps": hm.summary.kbps,  # the signalling included: it is in the slice headers
        "signal_kbps": sum(d["bytes"] for d in decisions) * 8 * fps / len(hm.pictures) / 1000.0,
        "pictures_on": sum(d["on"] for d in decisions),
        "decisions": decisions,
        "psnr": {"y": hm.summary.psnr_y, "u": hm.summary.psnr_u, "v": hm.summary.psnr_v},
        "bits": res.bits,
        "slice_type": ["BPI"[t] for t in res.slice_type],
        "per_picture_y": [p.psnr_y for p in hm.pictures],
        "enc_seconds": res.seconds,
        "dec_seconds": dec_seconds,
        "decoder_match": True,
        "md5_checked": True,
        "hm_version": hm.version,
    }
    atomic_write_text(done, json.dumps(rec, indent=1))
    return rec


def evaluate_in_loop(
    specs,
    encode: EncodeSettings,
    *,
    dec: Path,
    model: Path,
    workdir: Path,
    jobs: int = 1,
    method: str = "pchip",
    signal: str = "ctu",
    inter_model: Path | None = None,
    propagation: float = 0.0,
    before_sao: bool = False,
) -> dict:
    """Run every (sequence, QP, anchor|test) unit (``jobs`` at a time) and gather the results. ``encode``
    gives the HM encoder and its cfg, the test condition, the QPs and the frames (consecutive ones from
    ``start``: ``frame_step``, like the loop-filter switches, is not used). ``inter_model``: a second model for
    the P and B pictures (default: the zoo entry's, if it ships one). ``propagation``: HM's --CnnPropagation (rho);
    ``before_sao``: HM's --CnnBeforeSao (the filter after deblocking, before SAO)."""
    from codecnn.zoo import resolve, resolve_inter

    enc, cfg = hm_encoder_files(encode)
    config, qps = encode.config, encode.encode_qps
    inter_model = resolve_inter(model) if inter_model is None else resolve(inter_model, hm=True)
    model = resolve(model, hm=True).resolve()
    from hm_bridge.format import read_cnnw

    for option, path in (("--model", model), ("--inter-model", inter_model)):
        if path is None:
            continue
        if not Path(path).is_file():
            raise CodecnnError(f"{option} {path}: no such file (export one with codecnn export ... --int16)")
        read_cnnw(path)  # a damaged or foreign file fails here, before any encode
    inter_model = Path(inter_model).resolve() if inter_model is not None else None
    key_base = {
        "hm_enc": sha256_file(enc),
        "hm_dec": sha256_file(dec),
        "cfg": sha256_file(cfg),
        "config": config,
        "model": sha256_file(model),
        "inter_model": sha256_file(inter_model) if inter_model is not None else None,
        "signal": signal,
        # the payload's version (codecnn_signal.h kVersion): units of other versions are redone
        "signalling": SIGNAL_VERSION,
        "propagation": propagation,
        "placement": "before SAO" if before_sao else "after SAO",
    }
    units = []
    for si, spec in enumerate(specs):
        reader = spec.open()
        sel = reader.select(encode.start, spec.count(encode.frames), 1)
        src = stage_frames(reader, sel, workdir / f"src{si}_{spec.name}_{sel.start}_{len(sel)}.yuv")
        info = dataclasses.replace(reader.info, num_frames=len(sel))
        reader.close()
        for qp in qps:
            for run in RUNS:
                key = {**key_base, "source": sha256_file(Path(src)), "frames": list(sel), "qp": qp, "run": run}
                if run == "anchor":
                    for k in ("model", "inter_model", "signal", "signalling", "propagation", "placement"):
                        key.pop(k)
                units.append(Unit(spec.name, qp, run, str(src), info, str(workdir / spec.name / f"qp{qp}" / run), key))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max(1, jobs)) as pool:  # HM runs as a subprocess: threads suffice
        futures = [
            pool.submit(
                run_unit,
                u,
                enc,
                dec,
                cfg,
                config,
                model if u.run == "test" else None,
                signal,
                inter_model,
                (
                    ((f"--CnnPropagation={propagation}",) if propagation else ())
                    + (("--CnnBeforeSao=1",) if before_sao else ())
                    if u.run == "test"
                    else ()
                ),
            )
            for u in units
        ]
        records = [f.result() for f in futures]
    return gather(records, specs, qps, method, time.perf_counter() - t0, key_base, model, inter_model)


def gather(
    records: list[dict],
    specs,
    qps,
    method: str,
    seconds: float,
    key_base: dict,
    model: Path,
    inter_model: Path | None = None,
) -> dict:
    by = {(r["seq"], r["qp"], r["run"]): r for r in records}
    sequences = []
    for spec in specs:
        rows = [
            {"qp": qp, "anchor": _point(by[(spec.name, qp, "anchor")]), "test": _point(by[(spec.name, qp, "test")])}
            for qp in qps
        ]
        bd = {}
        for p in PLANES:
            try:
                bd[p] = bd_rate(
                    [(r["anchor"]["kbps"], r["anchor"][p]) for r in rows],
                    [(r["test"]["kbps"], r["test"][p]) for r in rows],
                    method,
                )
            except BDError as e:
                bd[p] = {"error": str(e)}
        times = {
            f"{k}_ratio": sum(r["test"][f"{k}_seconds"] for r in rows) / sum(r["anchor"][f"{k}_seconds"] for r in rows)
            for k in ("enc", "dec")
        }
        sequences.append({"name": spec.name, "class": spec.cls, "qps": rows, "bd": bd, **times})

    def avg(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    summary = {f"bd_rate_{p}": avg(s["bd"][p].get("bd_rate") for s in sequences) for p in PLANES}
    summary["enc_t"] = avg(s["enc_ratio"] for s in sequences)
    summary["dec_t"] = avg(s["dec_ratio"] for s in sequences)
    summary["gain_y"] = avg(r["test"]["y"] - r["anchor"]["y"] for s in sequences for r in s["qps"])
    return {
        "kind": "codecnn-inloop-evaluation",
        "setting": "in-loop (inside HM's encoder and decoder)",
        "model": {"path": str(model), "sha256": key_base["model"]},
        "inter_model": None if inter_model is None else {"path": str(inter_model), "sha256": key_base["inter_model"]},
        "hm": {"sha256_encoder": key_base["hm_enc"], "sha256_decoder": key_base["hm_dec"]},
        "config": key_base["config"],
        "signal": key_base["signal"],
        # the payload's version (2: the network's QP searched and signalled; 3: CTU flags per group)
        "signalling": key_base["signalling"],
        # HM --CnnPropagation: the weight of reference pictures' distortion in the decision (0: none)
        "propagation": key_base["propagation"],
        # HM --CnnBeforeSao: where the filter runs, after SAO (the default) or after deblocking, before SAO
        "placement": key_base["placement"],
        "bd_method": method,
        "seconds": seconds,
        "decoder_check": "every bitstream decoded by the patched HM decoder equals the encoder's reconstruction; "
        "every picture's MD5 SEI verified",
        "sequences": sequences,
        "summary": summary,
    }


def _point(rec: dict) -> dict:
    return {
        "kbps": rec["kbps"],
        "signal_kbps": rec.get("signal_kbps", 0.0),
        "pictures_on": rec.get("pictures_on"),
        **rec["psnr"],
        "enc_seconds": rec["enc_seconds"],
        "dec_seconds": rec["dec_seconds"],
        "frames": rec["frames"],
    }


def lines(results: dict) -> list[str]:
    """The console and report table of an in-loop evaluation."""
    how = {
        "always": "always on",
        "picture": "switched and scaled per picture (signalled in the slice headers, counted in the rate)",
        "ctu": "switched and scaled per picture, switched per CTU (signalled in the slice headers, counted in "
        "the rate)",
    }[results.get("signal", "always")]
    out = [
        f"in-loop evaluation through HM ({results['config']}, filter {how}): the filter inside the encoder and "
        "the decoder; every bitstream decoded to the encoder's pictures (MD5 SEI checked)",
        f"{'sequence':<16} {'QP':>3} {'anchor kbps':>11} {'Y':>8} {'test kbps':>10} {'Y':>8} {'dY':>8} "
        f"{'on':>7} {'sig kbps':>8}",
    ]
    for s in results["sequences"]:
        for r in s["qps"]:
            a, t = r["anchor"], r["test"]
            on = "" if t.get("pictures_on") is None else f"{t['pictures_on']}/{t['frames']}"
            out.append(
                f"{s['name']:<16} {r['qp']:>3} {a['kbps']:>11.2f} {a['y']:>8.4f} {t['kbps']:>10.2f} {t['y']:>8.4f} "
                f"{t['y'] - a['y']:>+8.4f} {on:>7} {t.get('signal_kbps', 0.0):>8.3f}"
            )
        bd = ", ".join(
            f"{p.upper()} " + (f"{s['bd'][p]['bd_rate']:+.2f} %" if "bd_rate" in s["bd"][p] else "n/a") for p in PLANES
        )
        out.append(
            f"{s['name']:<16} BD-rate {bd}; EncT {100 * s['enc_ratio']:.0f} %, DecT {100 * s['dec_ratio']:.0f} %"
        )
    sm = results["summary"]

    def pct(v):
        return "n/a" if v is None else f"{v:+.2f} %"

    out.append(
        f"average BD-rate Y {pct(sm['bd_rate_y'])}, U {pct(sm['bd_rate_u'])}, V {pct(sm['bd_rate_v'])}; "
        f"EncT {100 * sm['enc_t']:.0f} %, DecT {100 * sm['dec_t']:.0f} %"
    )
    return out


def write_results(results: dict, out: Path, title: str = "codecnn in-loop evaluation", table=None) -> dict:
    """``results.json`` and ``report.md`` (the title and the table of ``table(results)``, by default
    :func:`lines`) in ``out``; also what ``evaluate-modes --in-hm`` writes."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    text = "\n".join((table or lines)(results))
    atomic_write_text(out / "report.md", f"# {title}\n\n```\n{text}\n```\n")
    return {"results": str(out / "results.json"), "report": str(out / "report.md")}
