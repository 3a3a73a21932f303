"""The mode network inside HM's encoder (``evaluate-modes --in-hm``): encoder time saved, rate lost.

For every sequence and QP the patched HM encoder (``python -m hm_bridge patch-hm``) runs the **anchor** (HM's own
intra search) and one **test** per setting ``K:RD``: the rough mode decision over the network's top K modes and
the MPMs (``--CnnModeModel``, ``--CnnModeK K``), at most RD full-RD candidates (``--CnnModeRd RD``; HM keeps 8
for 4x4 and 8x8, 3 above); ``-:RD`` reduces the RD count alone, without the network (HM's RMD over 35 modes),
the baseline that shows what the network adds. The tool is encoder-only: every bitstream is decoded by an
**unmodified** HM decoder (``--hm-dec``: build one from a pristine HM checkout), whose output must equal the
encoder's reconstruction, every picture's MD5 SEI checked (:func:`codecnn.eval.inloop.decode_and_check`).

Reported per setting and sequence: BD-rate Y/U/V against the anchor (:func:`codecnn.eval.metrics.bd_rate`),
``EncT`` (test over anchor encoder time, from HM's own "Total Time", the process's CPU time: fairer than wall
time on a loaded machine; the wall-time ratio is kept too) and the network's share of the test encoder's
time (HM prints the time spent in the network at exit). Units are resumable as ``evaluate --in-loop``'s
(:func:`codecnn.eval.inloop.run_unit`: ``WORK/<seq>/qp<QP>/<run>/unit.json``).
"""

from __future__ import annotations

import dataclasses
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from codecnn.encoders.settings import EncodeSettings
from codecnn.errors import CodecnnError
from codecnn.eval import inloop
from codecnn.eval.inloop import PLANES, Unit, hm_encoder_files, run_unit, sha256_file
from codecnn.eval.metrics import BDError, bd_rate
from codecnn.yuv import stage_frames

# TAppEncoder's last line (encmain.cpp, clock(): CPU time) and codecnn_modes_hm.h's line at exit
_TOTAL = re.compile(r"Total Time:\s+([0-9.]+) sec")
_NETWORK = re.compile(r"codecnn: mode network: (\d+) blocks, ([0-9.]+) s")
HM_RD_COUNTS = "8 for 4x4 and 8x8, 3 above"


@dataclasses.dataclass(frozen=True)
class Setting:
    """One pruned encoder: the network's top ``k`` (None: no network, HM's 35-mode RMD) on blocks of ``min_size``
    and up, and at most ``rd`` full-RD candidates (0: HM's counts)."""

    k: int | None
    rd: int
    min_size: int = 4

    @property
    def name(self) -> str:
        size = f"_min{self.min_size}" if self.k and self.min_size != 4 else ""
        return (f"k{self.k}" if self.k else "hm") + size + (f"_rd{self.rd}" if self.rd else "")

    def args(self, model: Path) -> tuple[str, ...]:
        net = (f"--CnnModeModel={model}", f"--CnnModeK={self.k}", f"--CnnModeMinSize={self.min_size}") if self.k else ()
        return (*net, f"--CnnModeRd={self.rd}")


def parse_setting(text: str) -> Setting:
    """``K:RD`` (e.g. ``10:4``), ``K:RD:MIN`` (the network on blocks of MIN x MIN and up), ``K`` (HM's RD counts)
    or ``-:RD`` (no network); K 1..35, RD 0..8, MIN 4, 8, 16 or 32."""
    k_text, _, rest = text.partition(":")
    rd_text, _, min_text = rest.partition(":")
    try:
        k = None if k_text.strip() in ("-", "") else int(k_text)
        rd = int(rd_text) if rd_text.strip() else 0
        min_size = int(min_text) if min_text.strip() else 4
    except ValueError:
        raise CodecnnError(f"--setting {text!r}: use K:RD, e.g. 10:4 (or -:RD for no network)") from None
    if min_size not in (4, 8, 16, 32):
        raise CodecnnError(f"--setting {text!r}: MIN is a block size the network covers, 4, 8, 16 or 32")
    if k is not None and not 1 <= k <= 35:
        raise CodecnnError(f"--setting {text!r}: K is the network's top K modes, 1..35")
    if not 0 <= rd <= 8:
        raise CodecnnError(f"--setting {text!r}: RD is 0 (HM's counts: {HM_RD_COUNTS}) or 1..8")
    if k is None and rd == 0:
        raise CodecnnError(f"--setting {text!r}: without a network give an RD count (-:RD), else it is the anchor")
    return Setting(k, rd, min_size)


def encoder_times(log_path: Path) -> dict:
    """HM's total (CPU) time and the mode network's blocks and seconds from an encoder log."""
    text = Path(log_path).read_text(errors="replace")
    total = _TOTAL.findall(text)
    net = _NETWORK.findall(text)
    return {
        "hm_seconds": float(total[-1]) if total else None,
        "net_blocks": int(net[-1][0]) if net else 0,
        "net_seconds": float(net[-1][1]) if net else 0.0,
    }


def evaluate_modes_in_hm(
    specs,
    encode: EncodeSettings,
    *,
    dec: Path,
    model: Path | None,
    settings: list[Setting],
    workdir: Path,
    jobs: int = 1,
    method: str = "pchip",
) -> dict:
    """Run the anchor and every setting on every (sequence, QP) (``jobs`` HM runs at a time), decode each
    stream with the unmodified decoder ``dec``, and gather BD-rates and time ratios per setting."""
    enc, cfg = hm_encoder_files(encode)
    if any(s.k for s in settings):
        if model is None or not Path(model).is_file():
            raise CodecnnError(f"--model {model}: no such file (codecnn export of a modenet checkpoint)")
        from hm_bridge.format import MODES_VERSION, read_cnnw

        if read_cnnw(model).version != MODES_VERSION:  # damaged or a luma filter: refused before any encode
            raise CodecnnError(f"--model {model}: a luma filter, not a mode network (.cnnw version {MODES_VERSION})")
        model = Path(model).resolve()
    key_base = {"hm_enc": sha256_file(enc), "hm_dec": sha256_file(dec), "cfg": sha256_file(cfg)}
    key_base["config"] = encode.config
    units = []  # (unit, its encoder options)
    for si, spec in enumerate(specs):
        reader = spec.open()
        sel = reader.select(encode.start, spec.count(encode.frames), 1)
        src = stage_frames(reader, sel, workdir / f"src{si}_{spec.name}_{sel.start}_{len(sel)}.yuv")
        info = dataclasses.replace(reader.info, num_frames=len(sel))
        reader.close()
        for qp in encode.encode_qps:
            for s in [None, *settings]:
                run = "anchor" if s is None else s.name
                args = () if s is None else s.args(model)
                key = {**key_base, "source": sha256_file(Path(src)), "frames": list(sel), "qp": qp, "run": run}
                key["args"] = [a.split("=")[0] for a in args] + [str(s) if s else ""]
                if s is not None and s.k:
                    key["model"] = sha256_file(model)
                u = Unit(spec.name, qp, run, str(src), info, str(workdir / spec.name / f"qp{qp}" / run), key)
                units.append((u, args))
    t0 = time.perf_counter()

    def one(unit: tuple[Unit, tuple[str, ...]]) -> dict:
        u, args = unit
        rec = run_unit(u, enc, dec, cfg, encode.config, None, extra_args=args)
        return {**rec, **encoder_times(Path(u.workdir) / "encoder.log")}

    with ThreadPoolExecutor(max(1, jobs)) as pool:  # HM runs as a subprocess: threads suffice
        records = list(pool.map(one, units))
    return gather(records, specs, encode.encode_qps, settings, method, time.perf_counter() - t0, key_base, model)


def _bd(rows: list[dict], run: str, method: str) -> dict:
    out = {}
    for p in PLANES:
        try:
            out[p] = bd_rate(
                [(r["anchor"]["kbps"], r["anchor"]["psnr"][p]) for r in rows],
                [(r[run]["kbps"], r[run]["psnr"][p]) for r in rows],
                method,
            )
        except BDError as e:
            out[p] = {"error": str(e)}
    return out


def gather(records, specs, qps, settings, method, seconds, key_base, model) -> dict:
    by = {(r["seq"], r["qp"], r["run"]): r for r in records}
    rows_by_seq = {spec.name: [{run: by[(spec.name, qp, run)] for run in ["anchor", *(s.name for s in settings)]}
                               for qp in qps] for spec in specs}  # fmt: skip
    out = []
    for s in settings:
        seqs = []
        for name, rows in rows_by_seq.items():

            def total(run, field, rows=rows):
                return sum(r[run][field] or 0.0 for r in rows)

            seqs.append(
                {
                    "name": name,
                    "qps": [
                        {"qp": r["anchor"]["qp"], **{run: _point(r[run]) for run in ("anchor", s.name)}} for r in rows
                    ],
                    "bd": _bd(rows, s.name, method),
                    "enc_t": total(s.name, "hm_seconds") / total("anchor", "hm_seconds"),
                    "enc_t_wall": total(s.name, "enc_seconds") / total("anchor", "enc_seconds"),
                    "net_share": total(s.name, "net_seconds") / total(s.name, "hm_seconds"),
                    "net_us_per_block": 1e6 * total(s.name, "net_seconds") / max(1.0, total(s.name, "net_blocks")),
                }
            )
        mean = lambda vals: float(np.mean([v for v in vals if v is not None])) if vals else None  # noqa: E731
        summary = {f"bd_rate_{p}": mean([q["bd"][p].get("bd_rate") for q in seqs]) for p in PLANES}
        summary.update({k: mean([q[k] for q in seqs]) for k in ("enc_t", "enc_t_wall", "net_share")})
        out.append({"setting": s.name, "k": s.k, "rd": s.rd, "sequences": seqs, "summary": summary})
    return {
        "kind": "codecnn-modes-in-hm-evaluation",
        "setting": "the mode network inside HM's encoder (intra search), encoder only",
        "model": None if model is None else {"path": str(model), "sha256": sha256_file(Path(model))},
        "hm": {"sha256_encoder": key_base["hm_enc"], "sha256_decoder": key_base["hm_dec"]},
        "config": key_base["config"],
        "bd_method": method,
        "seconds": seconds,
        "decoder_check": "every bitstream decoded by the unmodified HM decoder equals the encoder's reconstruction; "
        "every picture's MD5 SEI verified",
        "settings": out,
    }


def _point(rec: dict) -> dict:
    return {k: rec[k] for k in ("kbps", "psnr", "enc_seconds", "hm_seconds", "net_seconds", "net_blocks", "frames")}


def lines(results: dict) -> list[str]:
    """The console and report table: one row per setting and sequence, then the setting's mean."""

    def pct(v):
        return "n/a" if v is None else f"{v:+.2f} %"

    out = [
        f"the mode network in HM's encoder ({results['config']}): anchor HM vs pruned RMD (top K + MPMs) and at "
        f"most RD full-RD candidates (HM: {HM_RD_COUNTS}); EncT from HM's CPU time; every stream decoded by "
        "the unmodified HM decoder to the encoder's pictures (MD5 SEI checked)",
        f"{'setting':<10} {'sequence':<14} {'BD Y':>8} {'BD U':>8} {'BD V':>8} {'EncT':>6} {'wall':>6} {'net':>6} "
        f"{'us/blk':>7}",
    ]
    for st in results["settings"]:
        for q in st["sequences"]:
            bd = [pct(q["bd"][p].get("bd_rate")) for p in PLANES]
            out.append(
                f"{st['setting']:<10} {q['name']:<14} {bd[0]:>8} {bd[1]:>8} {bd[2]:>8} {100 * q['enc_t']:>5.0f}% "
                f"{100 * q['enc_t_wall']:>5.0f}% {100 * q['net_share']:>5.1f}% {q['net_us_per_block']:>7.2f}"
            )
        sm = st["summary"]
        out.append(
            f"{st['setting']:<10} {'mean':<14} {pct(sm['bd_rate_y']):>8} {pct(sm['bd_rate_u']):>8} "
            f"{pct(sm['bd_rate_v']):>8} {100 * sm['enc_t']:>5.0f}% {100 * sm['enc_t_wall']:>5.0f}% "
            f"{100 * sm['net_share']:>5.1f}%"
        )
    return out


def write_results(results: dict, out: Path) -> dict:
    return inloop.write_results(results, out, "codecnn: the mode network in HM's encoder", lines)
