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
from codecnn.models.complexity import describe_complexity
from codecnn.train.checkpoint import load_checkpoint
from codecnn.zoo import ZOO_DIR, entries, pack_checkpoint, sha256


def summarise(label: str, path: Path) -> dict:
    r = json.loads(path.read_text())
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
    c = describe_complexity(build_model(ck["arch"], ck["config"]))
    results = [summarise(label, Path(path)) for label, path in (r.split("=", 1) for r in a.result)]
    summary = [
        f"{r['label']}: always-on {r['gain_y']:+.4f} dB, CTU-switched {r['gain_y_switched']:+.4f} dB, BD-rate "
        + (f"{r['bd_rate']:+.2f} %" if r["bd_rate"] is not None else "n/a")
        + f" ({', '.join(s['name'] for s in r['sequences'])}; QP {'/'.join(map(str, r['qps']))})"
        for r in results
    ]
    entry = {
        "name": a.name,
        "setting": a.setting,
        "task": ck["task"],
        "arch": ck["arch"],
        "config": ck["config"],
        "params": c["params"],
        "kmac_per_pixel": round(c["macs_per_pixel"] / 1e3, 1),
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
