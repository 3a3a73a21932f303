"""Add (or replace) a shipped model in codecnn/zoo: the weights-only checkpoint, its training log, and its
index entry with the measured held-out results and the provenance (command, data, machine, time).

    python scripts/zoo_entry.py --run runs/inloop --checkpoint best.pt --name rdn-inloop-ai --setting in-loop \
        --command "codecnn train rdn ..." --data "..." --machine "..." \
        --result in-domain=report_indomain/results.json --result zero-shot=report_carphone/results.json

Each ``--result LABEL=results.json`` is an ``codecnn evaluate`` output measured on held-out data: its
average gains, BD-rates, QPs and frame counts are copied into the entry.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
from pathlib import Path

from codecnn.files import atomic_write_text
from codecnn.models import build_model
from codecnn.models.complexity import count_params, describe_complexity, modenet_macs_per_block
from codecnn.train.checkpoint import load_checkpoint, pack_checkpoint
from codecnn.zoo import ZOO_DIR, entries, sha256


def summarise(label: str, path: Path) -> dict:
    r = json.loads(path.read_text())
    if "per_size" in r:  # an evaluate-modes result
        return summarise_modes(label, r)
    s = r["summary"]
    seqs = r["sequences"]
    return {
        "label": label,
        "source": r.get("source"),
        "encoder": (r.get("encoder") or {}).get("encoder"),
        "sequences": [
            {"name": q["name"], "size": f"{q['width']}x{q['height']}", "frames": q["qps"][0]["frames"]} for q in seqs
        ],
        "qps": sorted({q["qp"] for x in seqs for q in x["qps"]}),
        "gain_y": s["gain_y"],
        "gain_y_switched": s["gain_y_switched"],
        "bd_rate": s["bd_rate"],
        "bd_rate_switched": s["bd_rate_switched"],
        "per_qp": s["per_qp"],
        "precision": r.get("precision"),
    }


def summarise_modes(label: str, r: dict) -> dict:
    """The figures of an ``evaluate-modes`` result kept in a zoo entry: per block size and overall, the
    network's recalls, the two baselines' and the pruned RMD's (recall, share of full RMD's, SATD evaluations)."""

    def figures(v: dict) -> dict:
        p = v["pruned_rmd"]
        return {
            "top1": v["network"]["top1"],
            "top3": v["network"]["top3"],
            "top8": v["network"]["top8"],
            "hm_rmd_recall": v["hm_rmd"]["recall"],
            "planar_dc_mpm_recall": v["planar_dc_mpm"]["recall"],
            "pruned_rmd": {
                k: {x: m[x] for x in ("recall", "recall_vs_full", "satd_evaluations", "cost_increase") if x in m}
                for k, m in p.items()
            },
        }

    return {
        "label": label,
        "data": r["data"],
        "split": r["split"],
        "blocks": sum(v["blocks"] for v in r["per_size"].values()),
        "overall": figures(r["overall"]),
        "per_size": {n: {"blocks": v["blocks"], **figures(v)} for n, v in r["per_size"].items()},
    }


def summary_line(r: dict) -> str:
    if "overall" in r:  # intra modes
        o = r["overall"]
        k = max((k for k, m in o["pruned_rmd"].items() if k != "full" and m["satd_evaluations"] <= 12), key=int)
        m = o["pruned_rmd"][k]
        return (
            f"{r['label']} ({r['blocks']} blocks): top-1/3/8 {o['top1']:.3f}/{o['top3']:.3f}/{o['top8']:.3f} "
            f"(planar+DC+MPM {o['planar_dc_mpm_recall']:.3f}); pruned RMD k={k}: {m['satd_evaluations']:.1f} SATD "
            f"per block, recall {m['recall']:.3f} = {m['recall_vs_full']:.3f} of full RMD's {o['hm_rmd_recall']:.3f}"
        )
    return (
        f"{r['label']}: always-on {r['gain_y']:+.4f} dB, CTU-switched {r['gain_y_switched']:+.4f} dB, BD-rate "
        + (f"{r['bd_rate']:+.2f} %" if r["bd_rate"] is not None else "n/a")
        + f" ({', '.join(s['name'] for s in r['sequences'])}; QP {'/'.join(map(str, r['qps']))})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--checkpoint", default="best.pt")
    ap.add_argument("--name", required=True)
    ap.add_argument("--setting", required=True, choices=["in-loop", "post-filter", "intra-modes"])
    ap.add_argument("--command", required=True, help="the exact training command(s)")
    ap.add_argument("--data", required=True, help="the training data and how it was built")
    ap.add_argument("--machine", required=True)
    ap.add_argument("--note", default="")
    ap.add_argument("--result", action="append", default=[], metavar="LABEL=results.json")
    a = ap.parse_args()

    ck_path = a.run / a.checkpoint
    ck = load_checkpoint(ck_path)
    file = f"{a.name}.pt"
    pack_checkpoint(ck_path, ZOO_DIR / file)
    shutil.copy(a.run / "log.jsonl", ZOO_DIR / f"{a.name}.log.jsonl")
    model = build_model(ck["arch"], ck["config"])
    if ck["arch"] == "modenet":
        per_block = modenet_macs_per_block(model)
        c = {"params": count_params(model), "macs_per_pixel": sum(per_block[n] / (n * n) for n in per_block) / 4}
    else:
        c = describe_complexity(model)
    results = [summarise(label, Path(path)) for label, path in (r.split("=", 1) for r in a.result)]
    summary = [summary_line(r) for r in results]
    entry = {
        "name": a.name,
        "setting": a.setting,
        "task": ck["task"],
        "arch": ck["arch"],
        "config": ck["config"],
        "params": c["params"],
        "kmac_per_pixel": round(c["macs_per_pixel"] / 1e3, 1),
        **({"kmac_per_block": {n: round(m / 1e3, 1) for n, m in per_block.items()}} if ck["arch"] == "modenet" else {}),
        "file": file,
        "sha256": sha256(ZOO_DIR / file),
        "log": f"{a.name}.log.jsonl",
        "step": ck.get("step"),
        "trained": {
            "command": a.command,
            "data": a.data,
            "machine": a.machine,
            "seconds": ck.get("elapsed"),
            "train_config": ck.get("train_config"),
            "date": datetime.date.today().isoformat(),
        },
        "results": results,
        "summary": summary,
        "note": a.note,
    }
    index = [e for e in entries() if e["name"] != a.name] + [entry]
    atomic_write_text(ZOO_DIR / "index.json", json.dumps(index, indent=1) + "\n")
    print("\n".join(summary))
    print(f"wrote {ZOO_DIR / file} ({(ZOO_DIR / file).stat().st_size} bytes) and its index entry")


if __name__ == "__main__":
    main()
