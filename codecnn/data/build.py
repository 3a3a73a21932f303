"""Building a CTU dataset: sequences x QPs -> real encodes -> CTUs -> one HDF5 file.

The unit of work is one (sequence, QP) encode. Each unit writes its samples to its own shard file in
``OUT.parts/`` (written under a temporary name and renamed when complete), so an interrupted build
(Ctrl-C, a crash, a killed job) keeps every finished unit and ``resume=True`` redoes only the rest.
When all units are done the shards are merged, chunk by chunk without recompression, into
``OUT.tmp``, which is renamed to ``OUT``. The final name never holds a partial file.

Sample order is deterministic whatever ``jobs`` is: sequences in the given order, then QPs in the
given order, then frames, then CTUs in raster order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from codecnn.data import schema
from codecnn.data.ctu import CTU_SIZES
from codecnn.encoders import EncodeSettings
from codecnn.errors import CodecnnError
from codecnn.files import atomic_h5, atomic_write_text
from codecnn.sequences import SequenceSpec, file_fingerprint
from codecnn.yuv import RawYuvReader, VideoInfo, sample_dtype, stage_frames

log = logging.getLogger(__name__)
TASKS = ("restoration", "intra-modes")


@dataclass(frozen=True)
class BuildOptions:
    """What a dataset is built with: the encode settings and how samples are cut; stored in the file (as
    :meth:`to_json`) and compared on ``resume``."""

    encode: EncodeSettings = EncodeSettings()
    ctu: int = 128
    context: int = 2
    seed: int = 0
    task: str = "restoration"  # or "intra-modes"
    intra_cost: str = "dct"
    intra_loop: str = "closed"  # references from the reconstruction (closed) or the original (open)
    block_sizes: tuple[int, ...] = (4, 8, 16, 32)

    def __post_init__(self):
        if self.task not in TASKS:
            raise CodecnnError(f"--task {self.task!r}: use one of {', '.join(TASKS)}")
        if self.intra_loop not in ("closed", "open"):
            raise CodecnnError(f"--loop {self.intra_loop!r}: use closed or open")
        qps = self.encode.encode_qps
        if len(set(qps)) != len(qps):
            raise CodecnnError(f"--qp values repeat: {list(qps)}")
        if self.ctu not in CTU_SIZES:
            raise CodecnnError(f"--ctu {self.ctu}: use one of {', '.join(map(str, CTU_SIZES))}")
        if not 0 <= self.context <= self.ctu // 2:
            raise CodecnnError(f"--context {self.context}: use 0..{self.ctu // 2} pixels")

    def to_json(self) -> dict:
        """The stored form: the QPs coded, the encoder with its options and the frames chosen (the sources'
        geometry is in each sequence's entry), then this object's other fields."""
        e = self.encode
        d = {
            "qps": list(e.encode_qps),
            "encoder": e.encoder,
            "encoder_options": dict(e.encoder_options()),
            "start": e.start,
            "frames": e.frames,
            "frame_step": e.frame_step,
        }
        d.update((f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "encode")
        d["block_sizes"] = list(self.block_sizes)
        return json.loads(json.dumps(d, default=str))


@dataclass
class BuildSummary:
    path: Path
    samples: int
    bytes: int
    seconds: float
    encoder_seconds: float
    other_seconds: float
    units: list = field(default_factory=list)
    timings: list = field(default_factory=list)  # (worker, seconds) per unit run in parallel (--jobs, --dask)
    run_seconds: float = 0.0  # wall time of those units

    def lines(self) -> list[str]:
        ratio = self.other_seconds / self.encoder_seconds if self.encoder_seconds else float("nan")
        speed = []
        if self.timings:
            from codecnn.data.cluster import speed_lines

            speed = speed_lines(self.timings, self.run_seconds)
        return [
            f"wrote {self.path}: {self.samples} samples, {self.bytes / 1e6:.1f} MB, {len(self.units)} encodes",
            f"time {self.seconds:.1f} s: encoder {self.encoder_seconds:.1f} s, everything else "
            f"{self.other_seconds:.1f} s (ratio {ratio:.3f})",
            *speed,
        ]


@dataclass(frozen=True)
class _Unit:
    index: int
    seq_index: int
    spec: SequenceSpec
    staged: str | None  # raw copy of the selected frames (containers); None: read the source itself
    info: VideoInfo
    read_indices: tuple[int, ...]  # frame indices within `source`
    frame_indices: tuple[int, ...]  # the same frames' indices in the original sequence
    qp: int | None  # None: no encode (open-loop intra labels)
    split: int
    options: BuildOptions
    dtype: str
    shard: str
    workdir: str
    progress: bool


def _task_module(task: str):
    """The data module of a task: its shard writer ``write_unit`` and ``merge_shards``."""
    from codecnn.data import intra, restoration

    return {"restoration": restoration, "intra-modes": intra}[task]


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def build_dataset(
    specs: list[SequenceSpec],
    out: str | os.PathLike,
    options: BuildOptions = BuildOptions(),
    jobs: int = 1,
    resume: bool = False,
    progress: bool = True,
    dask: str | None = None,
) -> BuildSummary:
    """Encode every sequence at every QP, cut CTUs and write one HDF5 dataset (see :mod:`.schema`).

    ``dask``: run the units on a Dask cluster (``tcp://HOST:PORT`` of a running scheduler, or ``local:N``);
    see :mod:`codecnn.data.cluster`."""
    t0 = time.perf_counter()
    out = Path(out)
    if dask is not None:
        from codecnn.data.cluster import check_address

        if jobs > 1:
            raise CodecnnError("--dask and --jobs run the encodes in different ways: give one of them")
        check_address(dask)
    if not specs:
        raise CodecnnError("no input sequence: give --yuv FILE or --list LIST")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise CodecnnError(
            f"sequence names repeat ({', '.join(sorted({n for n in names if names.count(n) > 1}))}); "
            "rename the files or the list entries"
        )
    if not out.parent.is_dir():
        raise CodecnnError(f"{out.parent}: output folder does not exist")
    encoder = options.encode.make_encoder()  # fails early (e.g. HM missing)
    # a scheduler is reached before anything is written (an unreachable one leaves no trace); a local cluster
    # starts in the background while the sources are opened and staged
    with _cluster(dask, options, encoder) as runner:
        return _plan_and_build(specs, out, options, jobs, resume, progress, runner, t0, encoder)


def _reshape_meta(spec, reader) -> dict:
    """What reads a downscaled or panned sequence's source again (``downscale`` and ``pan`` in the list; its
    width and height are the pictures made): the factor, the pan and the file's own size (with ``pan``, the
    row's ``source_frames`` is the pan's length, the entry's ``frames``). Nothing for the others."""
    if spec.downscale == 1 and spec.pan is None:
        return {}
    while hasattr(reader, "source"):
        reader = reader.source
    meta = {"source_size": f"{reader.info.width}x{reader.info.height}"}
    if spec.downscale != 1:
        meta["downscale"] = spec.downscale
    if spec.pan is not None:
        meta["pan"] = list(spec.pan)
    return meta


def _plan_and_build(specs, out, options, jobs, resume, progress, runner, t0, encoder):
    """Open the sources, describe the build (its manifest) and run it (or find it done with ``resume``)."""
    if options.task == "intra-modes":
        from codecnn.hevc.intra import check_block

        for n in options.block_sizes:
            check_block(n)
    readers, selections = [], []
    try:
        for s in specs:
            readers.append(s.open())
            selections.append(
                readers[-1].select(options.encode.start, s.count(options.encode.frames), options.encode.frame_step)
            )
    except BaseException:
        for r in readers:
            r.close()
        raise
    dtype = sample_dtype(max(r.info.bit_depth for r in readers))
    seq_meta = [
        {
            "name": s.name,
            "source": s.path,
            "fingerprint": file_fingerprint(s.path),
            "split": s.split,
            "class": s.cls,
            "width": r.info.width,
            "height": r.info.height,
            "bit_depth": r.info.bit_depth,
            "fps": str(r.info.fps),
            "source_frames": r.info.num_frames,
            "frames": list(sel),
            **_reshape_meta(s, r),
        }
        for s, r, sel in zip(specs, readers, selections, strict=False)
    ]
    manifest = {"options": options.to_json(), "sequences": seq_meta}

    parts = parts_dir(out)
    if resume and out.exists() and not parts.exists():
        return _finished(out, manifest, t0)
    return _build(
        specs, out, options, jobs, resume, progress, runner, t0, parts, manifest, readers, selections, encoder, dtype
    )


def _cluster(dask: str | None, options: BuildOptions, encoder):
    if dask is None:
        import contextlib

        return contextlib.nullcontext()
    from codecnn.data.cluster import DaskRunner

    # what a unit imports, imported by each worker as it starts (while the sources are staged here)
    preload = ("h5py", __name__, _task_module(options.task).__name__, *type(encoder).imports())
    return DaskRunner(dask, preload=preload)


def _build(
    specs, out, options, jobs, resume, progress, runner, t0, parts, manifest, readers, selections, encoder, dtype
):
    """The encodes (in this process, a ``--jobs`` pool or on the Dask ``runner``) and the merge."""
    seq_meta = manifest["sequences"]
    _prepare_parts(parts, manifest, resume)
    stage_seconds = 0.0
    units: list[_Unit] = []
    for si, (spec, reader, sel) in enumerate(zip(specs, readers, selections, strict=False)):
        if reader.random_access:
            staged, read_idx = None, tuple(sel)
        else:
            ts = time.perf_counter()
            staged, read_idx = (
                stage_frames(reader, sel, parts / "stage" / f"{si:03d}_{spec.name}.yuv"),
                tuple(range(len(sel))),
            )
            stage_seconds += time.perf_counter() - ts
        info = dataclasses.replace(reader.info, num_frames=len(sel))
        open_loop = options.task == "intra-modes" and options.intra_loop == "open"
        for qp in (None,) if open_loop else options.encode.encode_qps:
            k = len(units)
            units.append(
                _Unit(
                    k,
                    si,
                    spec,
                    staged,
                    info,
                    read_idx,
                    tuple(sel),
                    qp,
                    schema.SPLIT_CODES[spec.split],
                    options,
                    dtype.str,
                    str(parts / f"unit{k:04d}.h5"),
                    str(parts / "work" / f"unit{k:04d}"),
                    progress and jobs == 1 and runner is None,
                )
            )
        reader.close()

    todo = [u for u in units if not Path(u.shard).exists()]
    if resume and len(todo) < len(units):
        log.info("resuming: %d of %d encodes already done", len(units) - len(todo), len(units))
    timings: list[tuple[str, float]] = []
    tr = time.perf_counter()
    try:
        with _Interrupts() as interrupts:
            if runner is not None:
                runner.check_shared(parts)
                bar = _bar(total=len(todo), desc="encodes", enabled=progress)
                timings = runner.map(_run_unit, todo, on_done=lambda: bar.update(1))
                runner.release()  # the cluster closes while the shards are merged
                bar.close()
                interrupts.check()
            elif jobs > 1 and len(todo) > 1:
                with ProcessPoolExecutor(max_workers=jobs) as pool:
                    bar = _bar(total=len(todo), desc="encodes", enabled=progress)
                    for t in pool.map(_timed_unit, todo):
                        timings.append(t)
                        bar.update(1)
                        interrupts.check()
                    bar.close()
            else:
                for u in todo:
                    _run_unit(u)
                    interrupts.check()
    except CodecnnError as e:
        raise CodecnnError(f"{e}{_keep_or_drop(parts, units)}") from None
    run_seconds = time.perf_counter() - tr

    tm = time.perf_counter()
    try:
        records = _task_module(options.task).merge_shards(
            [u.shard for u in units], out, options, dtype, seq_meta, encoder.describe()
        )
    except CodecnnError as e:  # e.g. no space left for OUT: the shards stay for --resume
        raise CodecnnError(f"{e}{_keep_or_drop(parts, units)}") from None
    merge_seconds = time.perf_counter() - tm
    shutil.rmtree(parts, ignore_errors=True)
    enc = sum(r["encode_seconds"] for r in records)
    other = sum(r["cut_seconds"] for r in records) + stage_seconds + merge_seconds
    return BuildSummary(
        out,
        sum(r["samples"] for r in records),
        out.stat().st_size,
        time.perf_counter() - t0,
        enc,
        other,
        records,
        timings,
        run_seconds,
    )


def _keep_or_drop(parts: Path, units: list) -> str:
    """After a failed (not interrupted) build: keep the parts folder when finished encodes in it can be
    reused by ``--resume`` and say so; otherwise remove it. Returns the sentence to add to the error."""
    done = sum(Path(u.shard).exists() for u in units)
    if done:
        return f" ({done} of {len(units)} encodes finished and kept in {parts}: fix the cause and rerun with --resume)"
    shutil.rmtree(parts, ignore_errors=True)
    return ""


def _finished(out: Path, manifest: dict, t0: float) -> BuildSummary:
    """``--resume`` on a dataset that is already complete: nothing to do if it was built from the same inputs
    and options, a refusal otherwise (it is never silently rebuilt)."""
    info = schema.open_dataset_info(out, kind=None)
    same = json.loads(json.dumps(manifest)) == {"options": info.build, "sequences": info.sequences}
    if not same:
        raise CodecnnError(
            f"--resume: {out} is a finished dataset built from other inputs or options; drop --resume to rebuild "
            "it, or choose another --out"
        )
    log.info("%s is already complete: nothing to resume", out)
    return BuildSummary(out, info.num_samples, out.stat().st_size, time.perf_counter() - t0, 0.0, 0.0, info.units)


class _Interrupts:
    """Ctrl-C during the encodes raises KeyboardInterrupt as usual and is also remembered: one that lands in
    a finaliser (where Python prints and drops exceptions, e.g. in ``tqdm.__del__``) still stops the build
    after the current encode instead of being lost. Only the default handler is replaced (a background job's
    ignored SIGINT stays ignored)."""

    def __enter__(self):
        self.hit = False
        self.old = signal.getsignal(signal.SIGINT)
        self.installed = (
            threading.current_thread() is threading.main_thread() and self.old is signal.default_int_handler
        )
        if self.installed:
            signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        self.hit = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.hit:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self.installed:
            signal.signal(signal.SIGINT, self.old)
        return False


def _prepare_parts(parts: Path, manifest: dict, resume: bool) -> None:
    mpath = parts / "build.json"
    if parts.exists() and resume and mpath.exists():
        old = json.loads(mpath.read_text())
        if old != json.loads(json.dumps(manifest)):
            raise CodecnnError(
                f"{parts}: the interrupted build used other inputs or options; rerun without --resume to start over"
            )
        return
    if parts.exists():
        if not resume:
            log.warning("discarding the partial build in %s (pass --resume to continue it)", parts)
        shutil.rmtree(parts)
    parts.mkdir()
    atomic_write_text(mpath, json.dumps(manifest, indent=1))


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    # a duplicate of the terminal's stderr: the encoder's log capture redirects fd 2, not this one
    stream = os.fdopen(os.dup(sys.stderr.fileno()), "w") if enabled else None
    return tqdm(total=total, desc=desc, disable=not enabled, file=stream, leave=False, dynamic_ncols=True)


def _timed_unit(u: _Unit) -> tuple[str, float]:
    """``_run_unit`` in a ``--jobs`` process: (worker, seconds)."""
    t0 = time.perf_counter()
    _run_unit(u)
    return f"pid {os.getpid()}", time.perf_counter() - t0


def _run_unit(u: _Unit) -> None:
    """Encode one sequence at one QP and write its CTU samples to the unit's shard."""

    src = (
        RawYuvReader(u.staged, u.info.width, u.info.height, u.info.bit_depth, u.info.fps) if u.staged else u.spec.open()
    )
    bar = _bar(2 * len(u.read_indices), f"{u.spec.name} QP{u.qp}", u.progress)

    def frames():
        for i in u.read_indices:
            bar.update(1)
            yield src.read(i)

    work = Path(u.workdir)
    shutil.rmtree(work, ignore_errors=True)
    res = recon = None
    if u.qp is not None:
        encoder = u.options.encode.make_encoder()
        res = encoder.encode(frames(), u.info, u.qp, work)
        recon = res.open_recon()
    t0 = time.perf_counter()
    with atomic_h5(u.shard) as h5:
        total = _task_module(u.options.task).write_unit(h5, u, src, recon, res, bar)
        if res is not None:
            h5.create_dataset("bitstream", data=np.frombuffer(Path(res.bitstream).read_bytes(), np.uint8))
        record = {
            "seq": u.spec.name,
            "seq_index": u.seq_index,
            "qp": u.qp,
            "frames": list(u.frame_indices),
            "samples": total,
            "cut_seconds": time.perf_counter() - t0,
            "encode_seconds": res.seconds if res else 0.0,
        }
        if res is not None:
            record.update(
                bits=res.bits,
                kbps=res.kbps(),
                coded_qp=res.coded_qp,
                encoder_psnr=res.encoder_psnr,
                encoder=res.settings,
                config=res.config,
                slice_type=res.slice_type,
                poc=res.poc,
                temporal_id=res.temporal_id,
                coding_index=res.coding_index,
            )
        h5.attrs["unit"] = json.dumps(record)
    if recon is not None:
        recon.close()
    src.close()
    bar.close()
    shutil.rmtree(work, ignore_errors=True)
