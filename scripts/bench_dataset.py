"""Benchmark: building a CTU dataset from the bigbuckbunny sample (1280x720) at QP 22/27/32/37.

Prints the time spent in the encoder (x265 encode + decode of the bitstream) and in everything else
(reading the source, cutting CTUs, writing and merging HDF5), and their ratio (target <= 0.10). Then
builds the dataset again from four times as many frames, each in a fresh process, and prints both peak
memories (target: independent of the sequence length: the build streams frame by frame).

With ``--dask ADDRESS`` (e.g. ``local:2``) it instead builds the same units three ways, ``--jobs 1``,
``--jobs 2`` and ``--dask ADDRESS``, and prints each one's wall time, its speed-up over ``--jobs 1`` and
parallel efficiency (speed-up / workers), and the build's own figure (sum of encode times / their wall time).

    python scripts/bench_dataset.py [--frames 6] [--preset medium]
    python scripts/bench_dataset.py --dask local:2 [--frames 6] [--preset medium] [--hm-like]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
def vmhwm_mib():  # peak RSS of this process image (ru_maxrss carries the parent's across exec)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
import json, sys, logging
from codecnn.data.build import BuildOptions, build_dataset
from codecnn.encoders import EncodeSettings
from codecnn.sequences import load_sequence_list
frames, preset, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jobs, dask, threads = int(sys.argv[4]), (sys.argv[5] or None), int(sys.argv[6])
spec = [s for s in load_sequence_list("datasets/samples.toml") if s.name == "bigbuckbunny"]
opts = BuildOptions(EncodeSettings(frames=frames, preset=preset, threads=threads or None))
s = build_dataset(spec, out, opts, progress=False, jobs=jobs, dask=dask)
print(json.dumps({"samples": s.samples, "seconds": s.seconds, "encoder": s.encoder_seconds,
                  "other": s.other_seconds, "mb": s.bytes / 1e6, "peak_mib": vmhwm_mib(),
                  "unit_sum": sum(t for _, t in s.timings), "run_seconds": s.run_seconds,
                  "workers": len({w for w, _ in s.timings})}))
"""


def run(frames: int, preset: str, jobs: int = 1, dask: str = "", threads: int = 0) -> dict:
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run(
            [sys.executable, "-c", CHILD, str(frames), preset, f"{d}/bench.h5", str(jobs), dask, str(threads)],
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--dask", help="compare --jobs 1, --jobs 2 and --dask ADDRESS (e.g. local:2) on the same units")
    ap.add_argument(
        "--hm-like", action="store_true", help="with --dask: single-threaded x265 units, as HM's encodes are"
    )
    a = ap.parse_args()
    if a.dask:
        parallel(a.frames, a.preset, a.dask, 1 if a.hm_like else 0)
        return
    one = run(a.frames, a.preset)
    print(
        f"bigbuckbunny 1280x720, {a.frames} frames x 4 QPs, x265 preset {a.preset}: {one['samples']} samples, "
        f"{one['mb']:.1f} MB in {one['seconds']:.2f} s"
    )
    print(f"encoder time        {one['encoder']:.3f} s")
    print(f"everything else     {one['other']:.3f} s")
    print(f"ratio other/encoder {one['other'] / one['encoder']:.3f}   (target <= 0.10)")
    four = run(4 * a.frames, a.preset)
    print(
        f"peak memory: {a.frames} frames {one['peak_mib']:.0f} MiB, {4 * a.frames} frames {four['peak_mib']:.0f} MiB"
        f"   (ratio {four['peak_mib'] / one['peak_mib']:.2f}, target ~1.0)"
    )


def parallel(frames: int, preset: str, dask: str, threads: int = 0) -> None:
    runs = [("--jobs 1", run(frames, preset, threads=threads)), ("--jobs 2", run(frames, preset, 2, threads=threads))]
    runs.append((f"--dask {dask}", run(frames, preset, dask=dask, threads=threads)))
    base = runs[0][1]["seconds"]
    kind = "single-threaded (HM-like) " if threads else ""
    print(
        f"bigbuckbunny 1280x720, {frames} frames x 4 QPs (4 units), {kind}x265 preset {preset}: "
        f"{base:.2f} s with --jobs 1"
    )
    print(f"{'':18} {'wall s':>8} {'speed-up':>9} {'efficiency':>10} {'units: sum/wall':>16}")
    for name, r in runs:
        n = max(r["workers"], 1)
        own = f"{r['unit_sum'] / r['run_seconds']:.2f}" if r["workers"] else "-"
        speed = base / r["seconds"]
        print(f"{name:18} {r['seconds']:8.2f} {speed:9.2f} {speed / n:10.2f} {own:>16}")
    print("(wall: the whole build, Dask cluster start-up and merge included; efficiency: speed-up / workers)")


if __name__ == "__main__":
    main()
