"""Attach in-loop results (``codecnn evaluate --in-loop`` inside HM) to a shipped model's zoo entry, and
optionally its HM exports: the int16 ``.cnnw`` of its model and of a second model for the P and B pictures.

    python scripts/zoo_inloop.py --name rdn-inloop-ai-v2 --machine "2-core x86-64, ..." \
        --result "carphone 17 frames, zero-shot=v2_ra_car/results.json" --result ...
    python scripts/zoo_inloop.py --name NAME --hm-model m16.cnnw --hm-inter-model inter16.cnnw \
        --hm-command "codecnn export ... --int16 ..." --result ...

Each result keeps the test condition, the signalling, per sequence the BD-rates of Y, U and V, the per-QP
luma change, EncT and DecT, and the machine note (say there whether other work ran beside: EncT/DecT under
another load are not figures). A result with the same label, condition and placement (after or before SAO)
replaces the earlier one.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from codecnn.cli.zoo import in_loop_line
from codecnn.files import atomic_write_text
from codecnn.zoo import ZOO_DIR, entries, sha256


def summarise(label: str, path: Path, machine: str, signalling: int = 1) -> dict:
    r = json.loads(path.read_text())
    if r.get("kind") != "codecnn-inloop-evaluation":
        raise SystemExit(f"{path}: not an evaluate --in-loop result")
    return {
        "label": label,
        "config": r["config"],
        "signal": r.get("signal", "always"),
        "signalling": r.get("signalling", signalling),
        "inter_model": r.get("inter_model") is not None,
        "placement": r.get("placement", "after SAO"),  # results.json before --before-sao: after SAO
        "machine": machine,
        "summary": r["summary"],
        "sequences": [
            {
                "name": s["name"],
                "frames": s["qps"][0]["test"]["frames"],
                "bd_rate": {p: s["bd"][p].get("bd_rate") for p in ("y", "u", "v")},
                "d_y": {str(q["qp"]): q["test"]["y"] - q["anchor"]["y"] for q in s["qps"]},
                "enc_t": s["enc_ratio"],
                "dec_t": s["dec_ratio"],
            }
            for s in r["sequences"]
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--machine", required=True, help="the machine, and what else ran on it")
    ap.add_argument("--result", action="append", default=[], metavar="LABEL=results.json")
    ap.add_argument("--hm-model", type=Path, help="the int16 .cnnw of the entry's model, shipped beside it")
    ap.add_argument("--hm-inter-model", type=Path, help="the int16 .cnnw of a second model for P and B pictures")
    ap.add_argument("--inter-entry", help="the zoo entry whose HM export is this entry's model for P and B pictures")
    ap.add_argument("--hm-command", default="", help="how the .cnnw files were made")
    ap.add_argument(
        "--signalling",
        type=int,
        default=1,
        help="the payload version of results.json files written before they recorded it (their unit.json keys say)",
    )
    a = ap.parse_args()
    index = entries()
    (entry,) = [e for e in index if e["name"] == a.name] or [None]
    if entry is None:
        raise SystemExit(f"no zoo entry {a.name}")
    for key, src in (("hm_model", a.hm_model), ("hm_model_inter", a.hm_inter_model)):
        if src is None:
            continue
        file = f"{a.name}.int16.cnnw" if key == "hm_model" else f"{a.name}.inter.int16.cnnw"
        shutil.copy(src, ZOO_DIR / file)
        entry[key] = {
            "file": file,
            "sha256": sha256(ZOO_DIR / file),
            "format": "cnnw v2, int16",
            "command": a.hm_command,
        }
    if a.inter_entry:
        entry["hm_model_inter"] = {"entry": a.inter_entry}
    new = [summarise(label, Path(p), a.machine, a.signalling) for label, p in (r.split("=", 1) for r in a.result)]
    keep = [
        r
        for r in entry.get("in_loop", [])
        if not any(
            (r["label"], r["config"], r.get("placement", "after SAO")) == (n["label"], n["config"], n["placement"])
            for n in new
        )
    ]
    entry["in_loop"] = keep + new
    atomic_write_text(ZOO_DIR / "index.json", json.dumps(index, indent=1) + "\n")
    print("\n".join(in_loop_line(r) for r in entry["in_loop"]))


if __name__ == "__main__":
    main()
