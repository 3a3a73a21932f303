"""Where an evaluation's runs come from: one sequence coded at one QP, with its original frames, its
decoded reconstruction and the bits of every frame.

* :func:`encode_runs`: fresh encodes (x265 or HM) of sequences;
* :func:`dataset_runs`: a dataset's stored bitstreams, decoded again (no re-encoding);
* :func:`hm_runs`: HM's own files (source, ``-o`` reconstruction, log), rates from HM's log.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from codecnn.encoders.settings import EncodeSettings
from codecnn.errors import CodecnnError
from codecnn.eval.metrics import psnr_yuv
from codecnn.yuv import Frame, VideoInfo, stage_frames

log = logging.getLogger(__name__)


@dataclass
class Run:
    """One sequence at one QP: what is needed to measure it. ``frames`` yields (index, orig, recon)."""

    sequence: dict  # name, class, width, height, bit_depth, fps, source
    qp: int
    bits: list[int]
    frames: Iterable[tuple[int, Frame, Frame]]
    encoder_psnr: list[tuple[float, float, float]] | None = None
    encoder: dict | None = None
    coded_qp: list[int] | None = None  # each picture's own QP (random access, low delay: offsets per layer)
    slice_type: list[int] | None = None  # 0 B, 1 P, 2 I
    poc: list[int] | None = None

    def picture_qp(self, k: int) -> int:
        """The QP picture ``k`` was coded with (the QP plane's value), else the run's QP."""
        return int(self.coded_qp[k]) if self.coded_qp else self.qp


def _seq_meta(name: str, info: VideoInfo, source: str, cls: str | None = None, downscale: int = 1, pan=None) -> dict:
    """A results row's sequence: its geometry and source (and the list's ``downscale`` and ``pan`` when the
    pictures are the source's averaged or panned: width and height are then the pictures made)."""
    meta = {
        "name": name,
        "class": cls,
        "width": info.width,
        "height": info.height,
        "bit_depth": info.bit_depth,
        "fps": str(info.fps),
        "source": source,
    }
    if downscale != 1:
        meta["downscale"] = downscale
    if pan is not None:
        meta["pan"] = list(pan)
    return meta


def _encoded_run(spec, info: VideoInfo, qp: int, res, reader, indices: list, shown: list) -> Run:
    """The run of one finished encode: the source frames ``indices`` of ``reader`` (shown as frames ``shown``)
    beside the encode's reconstruction, with its bits, PSNR and settings."""
    recon = res.open_recon()
    return Run(
        _seq_meta(spec.name, info, spec.path, spec.cls, spec.downscale, spec.pan),
        qp,
        res.bits,
        ((shown[k], reader.read(i), recon.read(k)) for k, i in enumerate(indices)),
        res.encoder_psnr,
        res.settings,
        res.coded_qp,
        res.slice_type or None,
        res.poc or None,
    )


def encode_runs(specs, encoder, encode: EncodeSettings, workdir: Path) -> Iterator[Run]:
    """Fresh encodes by ``encoder`` (built from ``encode``) of every sequence at every QP, on the frames that
    ``encode`` chooses."""
    for si, spec in enumerate(specs):
        reader = spec.open()
        sel = reader.select(encode.start, spec.count(encode.frames), encode.frame_step)
        if not reader.random_access:
            from codecnn.yuv import RawYuvReader

            staged = stage_frames(reader, sel, workdir / f"src{si}.yuv")
            reader = RawYuvReader(staged, reader.info.width, reader.info.height, reader.info.bit_depth, reader.info.fps)
            indices, shown = list(range(len(sel))), list(sel)
        else:
            indices, shown = list(sel), list(sel)
        info = dataclasses.replace(reader.info, num_frames=len(indices))
        for qp in encode.encode_qps:
            res = encoder.encode((reader.read(i) for i in indices), info, qp, workdir / f"{spec.name}_qp{qp}")
            yield _encoded_run(spec, info, qp, res, reader, indices, shown)


@dataclass(frozen=True)
class EncodeUnit:
    """One fresh encode run as a Dask task: the encoder travels as its :class:`EncodeSettings` (with the
    files they name made absolute) and is built again on the worker; the frames are read there from the
    source, or from ``staged`` (a raw copy of a container's selected frames). The outputs go into
    ``workdir``, which every worker must see."""

    spec: object  # codecnn.sequences.SequenceSpec
    staged: str | None
    info: VideoInfo  # of the selection: num_frames = len(read_indices)
    read_indices: tuple[int, ...]
    qp: int
    encode: EncodeSettings
    workdir: str


def encode_unit(unit: EncodeUnit):
    """Run one :class:`EncodeUnit` (on a worker): returns the encoder's :class:`EncodeResult`, whose
    bitstream and reconstruction lie in the unit's work folder."""
    from codecnn.yuv import RawYuvReader

    encoder = unit.encode.make_encoder()
    if unit.staged:
        reader = RawYuvReader(unit.staged, unit.info.width, unit.info.height, unit.info.bit_depth, unit.info.fps)
    else:
        reader = unit.spec.open()
    try:
        return encoder.encode((reader.read(i) for i in unit.read_indices), unit.info, unit.qp, unit.workdir)
    finally:
        reader.close()


def cluster_encode_runs(specs, series: list[tuple[EncodeSettings, Path]], runner) -> list[Iterator[Run]]:
    """:func:`encode_runs` on a Dask cluster: ``series`` is a list of (encode settings, work folder), one per
    series of runs (the network's input, then the anchor with ``--vs-loop-filters``), which differ only in
    the encoder's settings: the frames and QPs are the first one's. Every (sequence, QP) encode of every
    series is one task on ``runner`` (a :class:`codecnn.data.cluster.DaskRunner`); they all run first,
    writing into the work folders (checked to be visible to every worker). Returns one iterator of runs per
    series, in :func:`encode_runs`' order, that read the originals and each reconstruction from disk here."""
    import time

    from codecnn.data.cluster import speed_lines
    from codecnn.yuv import RawYuvReader

    first = series[0][0]
    qps = first.encode_qps
    sources = []  # (spec, staged, info, read indices, shown indices) per sequence
    stage_dir = Path(series[0][1]).absolute()
    for si, spec in enumerate(specs):
        reader = spec.open()
        try:
            sel = reader.select(first.start, spec.count(first.frames), first.frame_step)
            if reader.random_access:
                staged, indices, info = None, tuple(sel), reader.info
            else:
                stage_dir.mkdir(parents=True, exist_ok=True)
                staged = str(stage_frames(reader, sel, stage_dir / f"src{si}.yuv"))
                indices = tuple(range(len(sel)))
                staged_reader = RawYuvReader(
                    staged, reader.info.width, reader.info.height, reader.info.bit_depth, reader.info.fps
                )
                info = staged_reader.info
                staged_reader.close()
        finally:
            reader.close()
        sources.append((spec, staged, dataclasses.replace(info, num_frames=len(indices)), indices, tuple(sel)))
    units = []
    for encode, workdir in series:
        workdir = Path(workdir).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        runner.check_shared(workdir)
        for spec, staged, info, indices, _ in sources:
            for qp in qps:
                units.append(
                    EncodeUnit(spec, staged, info, indices, qp, encode.portable(), str(workdir / f"{spec.name}_qp{qp}"))
                )
    t0 = time.perf_counter()
    done = runner.run_all(encode_unit, units)
    runner.release()  # a local cluster closes while the runs are measured
    for line in speed_lines([(w, s) for w, s, _ in done], time.perf_counter() - t0):
        log.info("%s", line)
    results = iter([res for _, _, res in done])
    runs = []
    for _ in series:
        mine = [[next(results) for _ in qps] for _ in sources]
        runs.append(_runs_from_results(sources, qps, mine))
    return runs


def _runs_from_results(sources, qps, results) -> Iterator[Run]:
    from codecnn.yuv import RawYuvReader

    for (spec, staged, info, indices, shown), per_qp in zip(sources, results, strict=True):
        if staged:
            reader = RawYuvReader(staged, info.width, info.height, info.bit_depth, info.fps)
        else:
            reader = spec.open()
        for qp, res in zip(qps, per_qp, strict=True):
            yield _encoded_run(spec, info, qp, res, reader, indices, shown)


def _check_qps(wanted, have, where: str) -> None:
    missing = sorted(set(wanted) - set(have))
    if missing:
        raise CodecnnError(
            f"{where} holds no QP {', '.join(map(str, missing))} (it has {', '.join(map(str, sorted(set(have))))}); "
            "choose among those with --qp"
        )


def dataset_runs(path: str | os.PathLike, split: str | None, workdir: Path, qps=()) -> Iterator[Run]:
    """Runs from a dataset's stored bitstreams (decoded again) and the recorded source frames; only the
    QPs in ``qps`` when given."""
    import h5py

    from codecnn.data.schema import open_dataset_info
    from codecnn.encoders.x265 import decode_hevc
    from codecnn.sequences import SequenceSpec

    info = open_dataset_info(path)
    seqs = [s for s in info.sequences if split is None or s["split"] == split]
    if not seqs:
        raise CodecnnError(f"{path}: no sequence in split {split!r}; choose --split train, val or test")
    units = [u for u in info.units if any(u["seq"] == s["name"] for s in seqs)]
    if any((u.get("encoder") or {}).get("loop_model") for u in units):
        raise CodecnnError(
            f"{path} is closed-loop data (make-dataset --loop-model): its bitstreams decode right only in the "
            "patched HM with that model; evaluate the network with --in-loop (or --yuv)"
        )
    if qps:
        _check_qps(qps, [u["qp"] for u in units], f"{path} (split {split})")
    for s in seqs:
        if not Path(s["source"]).is_file():
            raise CodecnnError(f"{path}: the source of {s['name']} ({s['source']}) is not here; evaluate with --yuv")
        spec = SequenceSpec(
            s["name"],
            s["source"],
            s.get("source_size", f"{s['width']}x{s['height']}"),
            s["bit_depth"],
            s["fps"],
            frames=s["source_frames"] if "pan" in s else None,
            downscale=s.get("downscale", 1),
            pan=tuple(s["pan"]) if "pan" in s else None,
        )
        for u in (u for u in units if u["seq"] == s["name"] and (not qps or u["qp"] in qps)):
            with h5py.File(info.path, "r") as f:
                stream = f["bitstreams"][f"{s['name']}_qp{u['qp']}"][()].tobytes()
            reader = spec.open()
            vinfo = dataclasses.replace(reader.info, num_frames=len(u["frames"]))
            wanted = set(u["frames"])
            origs = (fr for i, fr in reader.frames(min(u["frames"])) if i in wanted)
            decoded = decode_hevc(stream, s["bit_depth"], f"{path}: bitstream {s['name']}_qp{u['qp']}")
            frames = ((fi, o, r) for fi, o, r in zip(u["frames"], origs, decoded, strict=False))
            yield Run(
                _seq_meta(s["name"], vinfo, s["source"], s.get("class"), spec.downscale, spec.pan),
                u["qp"],
                u["bits"],
                frames,
                u.get("encoder_psnr"),
                u.get("encoder"),
                u.get("coded_qp"),
                u.get("slice_type"),
                u.get("poc"),
            )


def hm_runs(
    orig: str,
    recons: list[str],
    logs: list[str],
    size: str | None,
    bit_depth: int | None,
    fps: float | None,
    qps=(),
    name: str | None = None,
) -> Iterator[Run]:
    """Runs from HM's own files: the source, HM's ``-o`` reconstruction and its log, per QP; only the QPs in
    ``qps`` when given. Every log is read first, so a QP given twice or missing is refused before any work.
    The sequence is called ``name``, by default after the source file."""
    from codecnn.encoders.hm import LOG_PSNR_TOLERANCE, read_hm_log
    from codecnn.sequences import sequence_name
    from codecnn.yuv import open_video

    name = sequence_name(orig, name)

    if len(recons) != len(logs):
        raise CodecnnError(f"give one --hm-log per --recon ({len(recons)} recon, {len(logs)} logs)")
    if not recons:
        raise CodecnnError("the HM route needs --recon and --hm-log (one pair per QP)")
    logged = [read_hm_log(p) for p in logs]
    coded = []
    for log_path, hm in zip(logs, logged, strict=True):
        picture_qps = {p.qp for p in hm.pictures}
        if len(picture_qps) != 1:
            raise CodecnnError(
                f"{log_path}: pictures coded at several QPs {sorted(picture_qps)}; one QP per run is expected"
            )
        coded.append(picture_qps.pop())
    repeated = sorted({q for q in coded if coded.count(q) > 1})
    if repeated:
        raise CodecnnError(f"QP {', '.join(map(str, repeated))} given twice (--recon/--hm-log): give each QP once")
    if qps:
        _check_qps(qps, coded, "the --hm-log files")
    src = open_video(orig, size, bit_depth, fps)
    for recon_path, log_path, hm, qp in zip(recons, logs, logged, coded, strict=True):
        if qps and qp not in qps:
            continue
        rec = open_video(recon_path, size or f"{src.info.width}x{src.info.height}", src.info.bit_depth)
        if (rec.info.width, rec.info.height) != (src.info.width, src.info.height):
            raise CodecnnError(
                f"{recon_path} is {rec.info.width}x{rec.info.height} but {orig} is "
                f"{src.info.width}x{src.info.height}; they must match"
            )
        if hm.size and hm.size != (src.info.width, src.info.height):
            raise CodecnnError(
                f"{log_path} encoded {hm.size[0]}x{hm.size[1]}, but {orig} is {src.info.width}x{src.info.height}"
            )
        n = len(hm.pictures)
        if rec.info.num_frames != n or src.info.num_frames < n:
            raise CodecnnError(
                f"{log_path} logs {n} pictures; {recon_path} holds {rec.info.num_frames} and {orig} "
                f"{src.info.num_frames} frames: pass the files of the same run"
            )
        rate = hm.frame_rate or (float(fps) if fps else float(src.info.fps))
        info = dataclasses.replace(src.info, fps=type(src.info.fps)(rate), num_frames=n)
        # HM's log PSNR uses the peak 255 << (bitDepth - 8): check the pairing with HM's own figures
        first = hm.pictures[0]
        mine = psnr_yuv(src.read(0), rec.read(0), src.info.bit_depth, "hm")
        if abs(mine[0] - first.psnr_y) > LOG_PSNR_TOLERANCE:
            raise CodecnnError(
                f"{recon_path} does not match {log_path}: Y-PSNR of frame 0 is {mine[0]:.4f} dB here "
                f"and {first.psnr_y:.4f} dB in HM's log; check --orig, --recon and --size"
            )
        yield Run(
            _seq_meta(name, info, str(orig)),
            qp,
            hm.bits,
            ((p.poc, src.read(p.poc), rec.read(p.poc)) for p in hm.pictures),
            [(p.psnr_y, p.psnr_u, p.psnr_v) for p in hm.pictures],
            {"encoder": "hm", "version": hm.version, "log": str(log_path)},
            [p.qp for p in hm.pictures],
            [p.slice_code for p in hm.pictures],
            [p.poc for p in hm.pictures],
        )


def select_runs(
    workdir: Path,
    *,
    inputs=(),
    seq_list=None,
    seq_dir=None,
    data=None,
    split: str | None = None,
    orig=None,
    recons=(),
    hm_logs=(),
    encode: EncodeSettings,
    vs_loop_filters: bool = False,
    anchor_recons=(),
    anchor_logs=(),
    runner=None,
    name=None,
) -> tuple[Iterator[Run], str] | tuple[Iterator[Run], str, Iterator[Run]]:
    """The runs of ``codecnn evaluate`` and a label of their source, from exactly one of: sequences to encode
    now (``inputs``/``seq_list``, coded as ``encode`` says), a dataset's stored bitstreams (``data``), or HM's
    own files (``orig``, ``recons``, ``hm_logs``). ``encode.qps`` selects QPs on every source and its raw
    geometry reads the sources; its frame selection (``frames``, ``start``, ``frame_step``) applies to fresh
    encodes only and is refused elsewhere. ``name``
    names the one sequence of ``orig`` or of a single file in ``inputs`` (default: the file's name).

    The post-filter setting (``vs_loop_filters``) adds anchor runs, the same pictures coded with deblocking
    and SAO on (the runs above are then the network's input, coded with both off): encoded now with
    ``encode``'s filters switched on, or HM's ``anchor_recons``/``anchor_logs``; the result is then (runs,
    source, anchor runs).

    ``runner`` (a :class:`codecnn.data.cluster.DaskRunner`) runs the fresh encodes on a Dask cluster; the
    encode settings travel to its workers."""
    from codecnn.sequences import list_sequences, sequence_from_path
    from codecnn.yuv.names import warn_name_disagreement

    sources = [bool(inputs or seq_list), bool(data), bool(orig or recons or hm_logs)]
    if sum(sources) != 1:
        raise CodecnnError("give one source: --yuv/--list, or --data, or --orig with --recon and --hm-log")
    if runner is not None and not sources[0]:
        raise CodecnnError("--dask runs fresh encodes (--yuv/--list); --data and HM's files have nothing to encode")
    if not sources[0] and (encode.frames is not None or encode.start != 0 or encode.frame_step != 1):
        raise CodecnnError(
            "--frames, --start and --frame-step choose frames to encode; --data and HM's files are evaluated on "
            "the frames they hold: drop those options"
        )
    post = vs_loop_filters or bool(anchor_recons or anchor_logs)
    if data:
        if post:
            raise CodecnnError("the post-filter comparison encodes now or reads HM's files; --data is not supported")
        split = split or "test"
        return dataset_runs(data, split, workdir, encode.qps), f"dataset {data} ({split})"
    specs = list_sequences(seq_list, seq_dir, split)  # (before the HM route: it refuses --split there too)
    if orig or recons or hm_logs:
        if not orig:
            raise CodecnnError("the HM route needs --orig (the source YUV that HM encoded)")
        warn_name_disagreement(orig, encode.size, encode.bit_depth)
        runs = hm_runs(orig, list(recons), list(hm_logs), encode.size, encode.bit_depth, encode.fps, encode.qps, name)
        if not post:
            return runs, "HM files"
        if not anchor_recons:
            raise CodecnnError("the post-filter comparison on HM's files needs --anchor-recon and --anchor-log")
        anchors = hm_runs(
            orig, list(anchor_recons), list(anchor_logs), encode.size, encode.bit_depth, encode.fps, encode.qps, name
        )
        return runs, "HM files (loop filters off) against HM files (on)", anchors
    specs += [sequence_from_path(p, encode.size, encode.bit_depth, encode.fps, "test", name) for p in inputs]
    coded = anchor = encode
    if post:  # the network's input without the loop filters, the anchor with both
        coded = dataclasses.replace(encode, deblock=False, sao=False)
        anchor = dataclasses.replace(encode, deblock=True, sao=True)
    encoder = coded.make_encoder()  # fails here, before any encode (e.g. HM missing)
    anchor_encoder = anchor.make_encoder() if post else None
    if runner is not None:
        series = [(coded, workdir)] + ([(anchor, workdir / "anchor")] if post else [])
        runs, *anchor_series = cluster_encode_runs(specs, series, runner)
    else:
        runs = encode_runs(specs, encoder, coded, workdir)
    if not post:
        return runs, encoder.name
    if runner is not None:
        anchors = anchor_series[0]
    else:
        anchors = encode_runs(specs, anchor_encoder, anchor, workdir / "anchor")
    return runs, f"{encoder.name} (loop filters off) against {anchor_encoder.name} (on)", anchors
