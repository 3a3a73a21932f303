"""Benchmark: the mode network in C++ (``hm_bridge/cpp/cnnw_modenet.h``), microseconds per block on one thread,
built with HM's flags (-O3 -mavx2 -mfma -ffp-contract=off), against the target of 3 us per 4x4 block.

    python scripts/bench_modenet_cpp.py --model modes.cnnw            # an exported mode network (codecnn export)
    python scripts/bench_modenet_cpp.py --checkpoint zoo:modenet-ai   # exported to a temporary file first

Prints per block size the wall time, the process's CPU time (on a loaded machine the CPU time is the fairer
figure: it excludes time the scheduler gave other processes) and the multiply-accumulates; ``--json`` for a
machine-readable line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from hm_bridge.modenet import bench_cpp, export_modenet

TARGET_US = 3.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="an exported mode network (.cnnw version 3)")
    src.add_argument("--checkpoint", help="a mode-network checkpoint (or zoo:NAME), exported first")
    ap.add_argument("--reps", type=int, default=20000, help="blocks timed per size")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        model = a.model or export_modenet(a.checkpoint, Path(d) / "m.cnnw")[0]
        r = bench_cpp(model, reps=a.reps)
    if a.json:
        print(json.dumps({"model": str(a.model or a.checkpoint), "per_block": r, "target_us_4x4": TARGET_US}))
        return
    print(f"{'N':>3} {'wall us':>8} {'CPU us':>8} {'MACs':>9}")
    for n, v in r.items():
        print(f"{n:>3} {v['wall_us']:8.2f} {v['cpu_us']:8.2f} {v['macs']:9d}")
    verdict = "met" if r[4]["cpu_us"] <= TARGET_US else "NOT met"
    print(f"4x4: {r[4]['cpu_us']:.2f} us CPU per block; target <= {TARGET_US} us: {verdict}")


if __name__ == "__main__":
    main()
