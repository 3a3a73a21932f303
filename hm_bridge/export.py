"""Exporting a trained codecnn checkpoint to a ``.cnnw`` file for HM (see :mod:`hm_bridge.format`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from codecnn.data.ctu import tile_plane
from codecnn.errors import CodecnnError
from codecnn.eval.metrics import psnr_from_mse
from codecnn.files import atomic_write_bytes
from codecnn.yuv import sample_peak
from hm_bridge.format import Graph, graph_from_rdn, run_graph, write_cnnw

GRAPH_BUILDERS = {"rdn": graph_from_rdn}


MAX_LOSS_DB = 0.02
CALIB_CTUS = 16


def export_checkpoint(
    checkpoint: str | os.PathLike, out: str | os.PathLike, int16: bool = False, calib: str | os.PathLike | None = None
) -> tuple[Path, dict | None]:
    """Write the (EMA, where kept) weights of a restoration checkpoint as a ``.cnnw`` file.

    The returned report is measured on real CTUs (``calib``, else the checkpoint's training dataset; val
    split first): ``max_change``, the largest absolute change (in integer sample units) the exported
    network makes to a sample, and ``identity``, true when it changes none (an untrained network, whose
    every encoder/decoder check passes trivially). With ``int16`` the scales are calibrated on these CTUs
    and the report also gives the Y-PSNR of the int16 and the float model on them and the loss in dB
    (above ``MAX_LOSS_DB`` the caller should warn). A float export without CTUs at hand returns no
    report (None); an int16 one refuses."""
    from codecnn.train.checkpoint import load_model

    model, ckpt = load_model(checkpoint, task="ctu-restoration")
    builder = GRAPH_BUILDERS.get(ckpt["arch"])
    if builder is None:
        raise CodecnnError(f"{checkpoint}: no .cnnw export for architecture {ckpt['arch']!r}")
    g = builder(model)
    g.header["checkpoint_step"] = ckpt.get("step")
    data = calib or (ckpt.get("dataset") or {}).get("path")
    if not data or not Path(data).is_file():
        if not int16:
            return write_cnnw(g, out), None
        raise CodecnnError("int16 export needs real CTUs to calibrate on: pass --calib DATA.h5 (a codecnn dataset)")
    inputs, targets, qps, bds = calibration_ctus(data, context=int(g.header["context"]))
    peaks = sample_peak(bds).astype(np.float32)
    from hm_bridge.fixed import quantise_graph, run_int_graph

    q = None
    if int16:
        q = quantise_graph(g, inputs.astype(np.float32) / peaks[:, None, None], qps)
    c = int(g.header["context"])
    err_f = err_q = 0.0
    change_f = change_q = 0
    for x, t, qp, bd, pk in zip(inputs, targets, qps, bds, peaks, strict=False):
        centre = x[c:-c, c:-c].astype(np.int64)
        res = run_graph(g, (x.astype(np.float32) / pk)[None], qp)[0]
        fl = np.rint(np.clip(x[c:-c, c:-c] / pk + res, 0, 1) * pk)
        err_f += float(np.mean((fl - t) ** 2) / pk**2)
        change_f = max(change_f, int(np.abs(fl - centre).max()))
        if q is not None:
            iq = run_int_graph(q, x, int(bd), int(qp))
            err_q += float(np.mean((iq - t.astype(np.int64)) ** 2) / pk**2)
            change_q = max(change_q, int(np.abs(iq - centre).max()))
    report = {"ctus": len(inputs), "psnr_float": psnr_from_mse(err_f / len(inputs)), "calibration": str(data)}
    if q is None:
        report.update(max_change=change_f, identity=change_f == 0)
        return write_cnnw(g, out), report
    report["psnr_int16"] = psnr_from_mse(err_q / len(inputs))
    report["loss_db"] = report["psnr_float"] - report["psnr_int16"]
    report.update(max_change=change_q, identity=change_q == 0)
    q.header["int16_report"] = report
    return write_cnnw(q, out), report


def calibration_ctus(path: str | os.PathLike, count: int = CALIB_CTUS, context: int | None = None):
    """Up to ``count`` CTUs (input, target, QP, bit depth) spread over a dataset's val (else train) split;
    with ``context``, the dataset's CTUs must carry that context border (the network's)."""
    import h5py

    from codecnn.data.schema import SPLIT_CODES, open_dataset_info

    info = open_dataset_info(path)
    if context is not None and info.context != context:
        raise CodecnnError(
            f"{path}: its CTUs carry a {info.context}-pixel context but the network consumes {context}; "
            f"calibrate on a dataset built with --context {context} (--calib DATA.h5)"
        )
    with h5py.File(path, "r") as f:
        split = f["split"][()]
        rows = np.flatnonzero(split == SPLIT_CODES["val"])
        if len(rows) == 0:
            rows = np.flatnonzero(split == SPLIT_CODES["train"])
        if len(rows) == 0:
            rows = np.arange(len(split))
        rows = rows[np.linspace(0, len(rows) - 1, min(count, len(rows))).astype(int)]
        return (
            f["input"][rows.tolist()],
            f["target"][rows.tolist()],
            f["qp"][rows.tolist()].astype(int),
            f["bit_depth"][rows.tolist()].astype(int),
        )


def filter_plane_cnnw(graph: Graph, plane: np.ndarray, bit_depth: int, qp: int = 0, ctu: int = 128) -> np.ndarray:
    """The float ``.cnnw`` network on a luma plane, CTU by CTU, exactly as ``Model::filterPlane`` (``cnnw.h``,
    in ``cnnw_model.h``: edge-replicated context, round half to even, clip); the Python reference of the C++ path."""
    c = int(graph.header["context"])
    peak = np.float32(sample_peak(bit_depth))

    def one(tile):
        t = tile.astype(np.float32) / peak
        res = run_graph(graph, t[None], qp)[0]
        return np.rint(np.clip(t[c : t.shape[0] - c, c : t.shape[1] - c] + res, 0, 1) * peak).astype(plane.dtype)

    return tile_plane(plane, ctu, c, lambda tiles: [one(t) for t in tiles])


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike, tol: float = 1e-4) -> dict:
    """Export a restoration checkpoint to ONNX (inputs ``x`` N x 1 x H x W in [0, 1] and ``qp`` (N,),
    output ``y`` the restored centre), then check it with onnxruntime against PyTorch on a real CTU
    (from the training dataset when it is at hand) - the entry point of SADL's converter and most
    deployment tools."""
    import io
    import warnings

    import torch

    try:
        import onnxruntime as ort
    except ImportError:
        raise CodecnnError("ONNX export needs onnx and onnxruntime: pip install 'codecnn[onnx]'") from None
    from codecnn.train.checkpoint import load_model

    model, ckpt = load_model(checkpoint, task="ctu-restoration")
    c = model.context
    data = (ckpt.get("dataset") or {}).get("path")
    if data and Path(data).is_file():
        inp, _, qps, bds = calibration_ctus(data, 2)
        x = torch.from_numpy(inp.astype(np.float32) / sample_peak(bds)[:, None, None])[:, None]
        qp = torch.from_numpy(qps.astype(np.float32))
    else:
        x, qp = (
            torch.rand(2, 1, 128 + 2 * c, 128 + 2 * c, generator=torch.Generator().manual_seed(0)),
            torch.tensor([32.0, 37.0]),
        )
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x, qp),
            buf,
            input_names=["x", "qp"],
            output_names=["y"],
            dynamo=False,
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "qp": {0: "n"}, "y": {0: "n", 2: "oh", 3: "ow"}},
        )
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x.numpy(), "qp": qp.numpy()})[0]
    with torch.no_grad():
        want = model(x, qp).numpy()
    err = float(np.abs(got - want).max())
    if err > tol:
        raise CodecnnError(f"the ONNX model differs from PyTorch by {err:.2e} (> {tol:g}); not written")
    p = atomic_write_bytes(out, buf.getvalue())
    return {"path": str(p), "max_abs_diff": err, "onnxruntime": ort.__version__}
