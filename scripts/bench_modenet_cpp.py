"""Benchmark: the mode network in C++ (``hm_bridge/cpp/cnnw_modenet.h``), microseconds per block on one thread,
built with HM's flags (-O3 -mavx2 -mfma -ffp-contract=off), against the target of 3 us per 4x4 block; float32 and
int16 models alike (an int16 one runs ``runInt`` on integer samples, its kernels in ``cnnw_modenet_int16.h``).

    python scripts/bench_modenet_cpp.py --model modes.cnnw            # an exported mode network (codecnn export)
    python scripts/bench_modenet_cpp.py --model modes.cnnw --model modes.int16.cnnw   # several, one after another
    python scripts/bench_modenet_cpp.py --checkpoint zoo:modenet-ai   # exported to a temporary file first
    python scripts/bench_modenet_cpp.py --checkpoint zoo:modenet-hm-c8d1 --calib modes.h5   # float32 and int16

Prints per model and block size the wall time, the process's CPU time (on a loaded machine the CPU time is the
fairer figure: it excludes time the scheduler gave other processes) and the multiply-accumulates; ``--json`` for
a machine-readable line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from hm_bridge.format import read_cnnw
from hm_bridge.modenet import bench_cpp, export_modenet

TARGET_US = 3.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", action="append", help="an exported mode network (.cnnw version 3); repeatable")
    src.add_argument("--checkpoint", help="a mode-network checkpoint (or zoo:NAME), exported first")
    ap.add_argument("--calib", help="with --checkpoint: also export it --int16, calibrated on this mode dataset")
    ap.add_argument("--reps", type=int, default=20000, help="blocks timed per size")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.calib and not a.checkpoint:
        ap.error("--calib goes with --checkpoint (an --model is timed as it is)")
    results = []
    with tempfile.TemporaryDirectory() as d:
        models = [Path(m) for m in a.model or []]
        if a.checkpoint:
            models.append(export_modenet(a.checkpoint, Path(d) / "m.cnnw")[0])
            if a.calib:
                models.append(export_modenet(a.checkpoint, Path(d) / "m.int16.cnnw", int16=True, calib=a.calib)[0])
        for m in models:
            precision = "int16" if hasattr(read_cnnw(m), "tensor_q") else "float32"
            name = str(m) if a.model else a.checkpoint
            results.append((name, precision, bench_cpp(m, reps=a.reps)))
    if a.json:
        rows = [{"model": name, "precision": p, "per_block": r} for name, p, r in results]
        print(json.dumps({"models": rows, "target_us_4x4": TARGET_US}))
        return
    for name, precision, r in results:
        print(f"{name} ({precision})")
        print(f"{'N':>3} {'wall us':>8} {'CPU us':>8} {'MACs':>9}")
        for n, v in r.items():
            print(f"{n:>3} {v['wall_us']:8.2f} {v['cpu_us']:8.2f} {v['macs']:9d}")
        verdict = "met" if r[4]["cpu_us"] <= TARGET_US else "NOT met"
        print(f"4x4: {r[4]['cpu_us']:.2f} us CPU per block; target <= {TARGET_US} us: {verdict}")


if __name__ == "__main__":
    main()
