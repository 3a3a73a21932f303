"""Rendering evaluation results: ``report.md`` and PNG plots, from one or several ``results.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from codecnn.errors import CodecnnError
from codecnn.files import atomic_write_text, read_text_input

# what an evaluation writes into its --out folder (evaluate, evaluate-modes, report): names and glob patterns
REPORT_FILES = ("results.json", "report.md", "rd_*.png", "gain_vs_qp.png")

_QP_RECORD = {
    "qp": int,
    "frames": int,
    "kbps": float,
    "kbps_switched": float,
    "gain_y": float,
    "gain_y_switched": float,
    "ctus_on": float,
    "anchor": dict,
    "filtered": dict,
    "switched": dict,
}


def check_results(r, path) -> None:
    """Refuse JSON that is not a codecnn evaluation results object (checked as deep as rendering reads)."""

    def bad(what: str) -> CodecnnError:
        return CodecnnError(f"{path}: not a codecnn evaluation results file ({what}); give a results.json of evaluate")

    if not isinstance(r, dict) or r.get("kind") != "codecnn-evaluation":
        raise bad("no 'kind': 'codecnn-evaluation'")
    for key, typ in (("sequences", list), ("checkpoint", dict), ("bd_method", str), ("versions", dict)):
        if not isinstance(r.get(key), typ):
            raise bad(f"{key!r} missing or not a {typ.__name__}")
    for s in r["sequences"]:
        if not isinstance(s, dict) or not isinstance(s.get("name"), str) or not isinstance(s.get("qps"), list):
            raise bad("a sequence without a name or QP records")
        if not isinstance(s.get("bd"), dict) or not all(
            isinstance(s["bd"].get(k), dict) for k in ("always_on", "switched")
        ):
            raise bad(f"sequence {s['name']} has no BD records")
        for q in s["qps"]:
            for key, typ in _QP_RECORD.items():
                v = q.get(key) if isinstance(q, dict) else None
                if not isinstance(v, typ) and not (typ is float and isinstance(v, int) and not isinstance(v, bool)):
                    raise bad(f"sequence {s['name']}: a QP record's {key!r} is missing or not a {typ.__name__}")
            for kind in ("anchor", "filtered", "switched"):
                if not all(isinstance(q[kind].get(c), int | float) for c in ("y", "u", "v")):
                    raise bad(f"sequence {s['name']} QP{q['qp']}: {kind} PSNR missing")


def load_results(paths) -> dict:
    """Read results files; several are merged (their sequences concatenated, a name at most once)."""
    from codecnn.eval.restoration import summarise

    loaded = []
    for p in paths:
        p = Path(p)
        try:
            r = json.loads(read_text_input(p, "a results.json written by codecnn evaluate"))
        except json.JSONDecodeError as e:
            raise CodecnnError(f"{p}: not JSON ({e})") from None
        check_results(r, p)
        loaded.append(r)
    if not loaded:
        raise CodecnnError("give at least one results.json")
    if len(loaded) == 1:
        return loaded[0]
    merged = dict(loaded[0])
    seen, seqs = set(), []
    for r in loaded:
        for s in r["sequences"]:
            if s["name"] in seen:
                raise CodecnnError(f"sequence {s['name']} appears in more than one results file")
            seen.add(s["name"])
            seqs.append(s)
    merged["sequences"] = seqs
    merged["merged_from"] = [str(p) for p in paths]
    fps = {r["checkpoint"]["fingerprint"] for r in loaded}
    if len(fps) > 1:
        merged["checkpoint"] = {"note": "merged results of several checkpoints", "fingerprints": sorted(fps)}
    merged["summary"] = summarise(merged)
    return merged


def _f(v, fmt="{:+.3f}", na="n/a"):
    return na if v is None else fmt.format(v)


def format_bd(b: dict) -> str:
    """A BD figure as text: ``-1.23 %``, or ``n/a (reason)``."""
    return f"n/a ({b['error']})" if "error" in b else f"{b['bd_rate']:+.2f} %"


POST_FILTER_NOTE = (
    "post-filter setting: the network filters the reconstruction coded with deblocking and SAO off; the anchor is "
    "the codec with both on, at its own rate (kbps and anchor Y are the anchor's; gains are at different rates, "
    "the BD-rates compare the curves)"
)


def out_of_loop_note(results: dict) -> str | None:
    """What a fresh random-access or low-delay evaluation measures, and what it does not."""
    config = results.get("config", "ai")
    if config == "ai":
        return None
    return (
        f"--config {config}: the network filters each decoded picture after decoding (out of the loop); the "
        "references stay unfiltered, so this is a post-processing gain. The in-loop gain needs the filter "
        "inside the encoder and decoder (codecnn evaluate --in-loop with a patched HM)"
    )


def summary_lines(results: dict, written: dict) -> list[str]:
    """The console summary of an evaluation: per sequence and QP the rate, anchor PSNR and gains, BD-rates,
    the averages, and the files written."""
    s = results["summary"]
    lines = [POST_FILTER_NOTE] if results.get("setting") == "post-filter" else []
    note = out_of_loop_note(results)
    if note:
        lines.append(note)
    lines.append(f"{'sequence':<16} {'QP':>3} {'kbps':>10} {'anchor Y':>9} {'gain':>8} {'switched':>9} {'CTUs on':>8}")
    for seq in results["sequences"]:
        for q in seq["qps"]:
            lines.append(
                f"{seq['name']:<16} {q['qp']:>3} {q['kbps']:>10.2f} {q['anchor']['y']:>9.4f} "
                f"{q['gain_y']:>+8.4f} {q['gain_y_switched']:>+9.4f} {100 * q['ctus_on']:>7.0f}%"
            )
        by_type = [q["gain_y_by_slice_type"] for q in seq["qps"] if "gain_y_by_slice_type" in q]
        if by_type:
            mean = {t: np.mean([b[t] for b in by_type if t in b]) for t in "IPB" if t in by_type[0]}
            lines.append(
                f"{seq['name']:<16} gain by slice type: " + ", ".join(f"{t} {g:+.4f} dB" for t, g in mean.items())
            )
        bd = seq["bd"]
        lines.append(
            f"{seq['name']:<16} BD-rate always on {format_bd(bd['always_on'])}, switched {format_bd(bd['switched'])}"
        )
    lines.append(f"average Y-PSNR gain: always on {s['gain_y']:+.4f} dB, CTU-switched {s['gain_y_switched']:+.4f} dB")
    if s["gain_y"] < 0:
        lines.append(
            "note: always-on filtering is negative on average here; the CTU-switched figure is what a codec "
            "with a per-CTU flag gets"
        )
    lines += [f"{name}: {path}" for name, path in written.items()]
    return lines


def render_markdown(results: dict) -> str:
    s = results["summary"]
    ck = results["checkpoint"]
    lines = ["# codecnn evaluation", ""]
    if results.get("setting") == "post-filter":
        lines += [f"**{POST_FILTER_NOTE}.**", ""]
    if out_of_loop_note(results):
        lines += [f"**{out_of_loop_note(results)}.**", ""]
    lines.append(
        f"- checkpoint: {ck.get('path')} ({ck.get('arch')}, step {ck.get('step')}, weights {ck.get('fingerprint')})"
        if "arch" in ck
        else f"- checkpoint: {ck.get('note')}"
    )
    enc = results.get("encoder") or {}
    lines.append(f"- anchor: {enc.get('encoder', results.get('source'))} {enc.get('version') or ''}".rstrip())
    lines.append(
        f"- BD method: {results['bd_method']} ({'bjontegaard ' + results['versions']['bjontegaard']}); "
        f"PSNR peak convention: {results['psnr_peak']}; CTU {results['ctu']}; codecnn "
        f"{results['codecnn_version']}"
    )
    lines += [
        "",
        "## Summary",
        "",
        "| | always on | CTU-switched |",
        "|---|---|---|",
        f"| average Y-PSNR gain (dB) | {_f(s['gain_y'], '{:+.4f}')} | {_f(s['gain_y_switched'], '{:+.4f}')} |",
        f"| average BD-rate (Y) | {_f(s['bd_rate'], '{:+.2f} %')} | {_f(s['bd_rate_switched'], '{:+.2f} %')} |",
    ]
    if s.get("bd_rate_missing"):
        lines.append(f"\nBD-rate n/a for: {', '.join(s['bd_rate_missing'])} (see below); averages exclude them.")
    if s["gain_y"] is not None and s["gain_y"] < 0:
        lines.append(
            "\n**Always-on filtering lowers the average Y-PSNR** on these sequences; the CTU-switched "
            "figure is what a codec with a per-CTU flag would get."
        )
    lines += ["", "| QP | gain always on (dB) | gain switched (dB) |", "|---|---|---|"]
    for qp, v in s["per_qp"].items():
        lines.append(f"| {qp} | {_f(v['gain_y'], '{:+.4f}')} | {_f(v['gain_y_switched'], '{:+.4f}')} |")
    if s.get("classes"):
        lines += [
            "",
            "## Classes",
            "",
            "| class | sequences | gain (dB) | BD-rate | BD-rate switched |",
            "|---|---|---|---|---|",
        ]
        for c, v in s["classes"].items():
            lines.append(
                f"| {c} | {', '.join(v['sequences'])} | {_f(v['gain_y'], '{:+.4f}')} | "
                f"{_f(v['bd_rate'], '{:+.2f} %')} | {_f(v['bd_rate_switched'], '{:+.2f} %')} |"
            )
    for seq in results["sequences"]:
        lines += [
            "",
            f"## {seq['name']}" + (f" (class {seq['class']})" if seq.get("class") else ""),
            "",
            f"{seq['width']}x{seq['height']}, {seq['bit_depth']}-bit, {seq['fps']} fps; BD-rate always on "
            f"{format_bd(seq['bd']['always_on'])}, switched {format_bd(seq['bd']['switched'])}",
            "",
            "| QP | frames | kbps | anchor Y | filtered Y | gain | switched Y | gain | CTUs on | anchor U | anchor V |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for q in seq["qps"]:
            lines.append(
                f"| {q['qp']} | {q['frames']} | {q['kbps']:.2f} | {q['anchor']['y']:.4f} | "
                f"{q['filtered']['y']:.4f} | {q['gain_y']:+.4f} | {q['switched']['y']:.4f} | "
                f"{q['gain_y_switched']:+.4f} | {100 * q['ctus_on']:.0f} % | {q['anchor']['u']:.4f} | "
                f"{q['anchor']['v']:.4f} |"
            )
    lines.append("")
    return "\n".join(lines)


def render_plots(results: dict, out_dir: Path) -> list[Path]:
    """RD curves per sequence (anchor, always on, switched) and the gain against QP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for seq in results["sequences"]:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        q = seq["qps"]
        ax.plot([x["kbps"] for x in q], [x["anchor"]["y"] for x in q], "o-", label="anchor")
        ax.plot([x["kbps"] for x in q], [x["filtered"]["y"] for x in q], "s--", label="filtered (always on)")
        ax.plot([x["kbps_switched"] for x in q], [x["switched"]["y"] for x in q], "^:", label="filtered (CTU-switched)")
        ax.set_xscale("log")
        ax.set_xlabel("rate (kbps)")
        ax.set_ylabel("Y-PSNR (dB)")
        ax.set_title(seq["name"])
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = out_dir / f"rd_{seq['name']}.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for seq in results["sequences"]:
        q = seq["qps"]
        (line,) = ax.plot([x["qp"] for x in q], [x["gain_y"] for x in q], "o-", label=f"{seq['name']} always on")
        ax.plot(
            [x["qp"] for x in q],
            [x["gain_y_switched"] for x in q],
            "^:",
            color=line.get_color(),
            label=f"{seq['name']} switched",
        )
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("QP")
    ax.set_ylabel("Y-PSNR gain (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    p = out_dir / "gain_vs_qp.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    paths.append(p)
    return paths


def write_report(results: dict, out_dir: str | os.PathLike, write_json: bool = True) -> dict[str, Path]:
    """Write ``results.json`` (optional), ``report.md`` and the plots into ``out_dir`` (atomic files)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    if write_json:
        atomic_write_text(out / "results.json", json.dumps(results, indent=1))
        written["results"] = out / "results.json"
    atomic_write_text(out / "report.md", render_markdown(results))
    written["report"] = out / "report.md"
    for p in render_plots(results, out):
        written[p.stem] = p
    return written
