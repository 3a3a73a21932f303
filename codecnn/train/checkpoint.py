"""Self-describing checkpoints, written atomically, loaded without running any code.

A checkpoint is a dict of tensors and plain values (torchvision ``references`` style)::

    {format, version, task, arch, config, state_dict, ema, optimizer, scheduler, step, rng,
     dataset, train_config, best_score, metrics, versions}

so ``(arch, config)`` rebuilds the model through the registry without guessing shapes from state-dict
keys. Loading uses ``torch.load(weights_only=True)``: a checkpoint from elsewhere cannot execute code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import torch

from codecnn.errors import CodecnnError
from codecnn.files import atomic_write_bytes
from codecnn.zoo import resolve

FORMAT = "codecnn-checkpoint"
VERSION = 1


def versions() -> dict:
    import numpy

    from codecnn import __version__

    return {"codecnn": __version__, "torch": str(torch.__version__), "numpy": numpy.__version__}


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` (plus format, version and library versions) to ``path`` via a temp file. It is
    serialised in memory first: torch's own file writer turns an OS error (no space left) into a bare
    RuntimeError, a plain write keeps it an OS error that :func:`codecnn.files.atomic_write` reports."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, "versions": versions(), **payload}, buf)
    return atomic_write_bytes(path, buf.getbuffer())


def _first_words(e: Exception, limit: int) -> str:
    """The first line of an exception's message, cut at a word boundary within ``limit`` characters."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."


def load_checkpoint(path: str | os.PathLike, task: str | None = None) -> dict:
    """Load and check a codecnn checkpoint (a path, or ``zoo:NAME`` for a shipped one); clear errors for
    missing, damaged, foreign or unsafe files."""
    p = resolve(path)
    if not p.is_file():
        raise CodecnnError(f"{p}: no such checkpoint")
    if not zipfile.is_zipfile(p):
        raise CodecnnError(f"{p}: not a readable checkpoint (damaged, truncated or not a torch file)")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CodecnnError(
            f"{p}: refused: it holds Python objects that could run code ({_first_words(e, 120)}); "
            "only codecnn checkpoints are loaded"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CodecnnError(
            f"{p}: not a readable checkpoint (damaged or not a torch file: {_first_words(e, 100)})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CodecnnError(f"{p}: not a codecnn checkpoint (no '{FORMAT}' marker)")
    if int(ckpt.get("version", 0)) > VERSION:
        raise CodecnnError(f"{p}: checkpoint version {ckpt['version']} is newer than this codecnn reads; upgrade")
    if task is not None and ckpt.get("task") != task:
        raise CodecnnError(
            f"{p}: a {ckpt.get('task')!r} checkpoint ({ckpt.get('arch')}), but a {task!r} one is needed here"
        )
    return ckpt


def load_model(path: str | os.PathLike, task: str | None = None, ema: bool = True):
    """Rebuild the model of a checkpoint through the registry; returns ``(model, checkpoint)``.
    ``ema=True`` takes the EMA weights where the run kept them."""
    from codecnn.models import build_model

    ckpt = load_checkpoint(path, task)
    if not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CodecnnError(f"{path}: the checkpoint has no model config or no weights; it is damaged")
    try:
        model = build_model(ckpt["arch"], ckpt["config"])
    except (TypeError, ValueError) as e:
        raise CodecnnError(f"{path}: its config does not build a {ckpt.get('arch')} model ({e})") from None
    state = ckpt["ema"] if ema and ckpt.get("ema") else ckpt["state_dict"]
    mine = model.state_dict()
    missing = sorted(set(mine) - set(state))
    unexpected = sorted(set(state) - set(mine))
    wrong = [k for k in sorted(set(mine) & set(state)) if tuple(state[k].shape) != tuple(mine[k].shape)]
    if missing or unexpected or wrong:
        what = [f"{k} is {tuple(state[k].shape)}, the config makes {tuple(mine[k].shape)}" for k in wrong[:2]]
        what += [f"no weights for {', '.join(missing[:3])}"] if missing else []
        what += [f"weights the config has no place for: {', '.join(unexpected[:3])}"] if unexpected else []
        raise CodecnnError(
            f"{path}: its config ({ckpt['arch']} {ckpt['config']}) does not match its weights: {'; '.join(what)}; "
            "the checkpoint was edited or damaged"
        )
    model.load_state_dict(state)
    return model.eval(), ckpt


def fingerprint_state(state_dict: dict) -> str:
    """SHA-256 (first 16 hex digits) of a state dict's tensors, in key order."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def dataset_fingerprint(info) -> str:
    """Identity of a dataset file: its creation time, size in samples and encode records."""
    h = hashlib.sha256(
        json.dumps([str(info.attrs.get("created")), info.num_samples, info.units], sort_keys=True).encode()
    )
    return h.hexdigest()[:16]


def pack_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """A weights-only copy of a training checkpoint for shipping: the EMA weights where the run kept them,
    no optimizer state; config, step, dataset and training options kept (a self-describing checkpoint that
    ``load_model`` reads and ``train --init`` starts from)."""
    ck = load_checkpoint(checkpoint)
    keep = ("task", "arch", "config", "step", "elapsed", "dataset", "train_config", "best_score", "metrics")
    payload = {k: ck[k] for k in keep if k in ck}
    payload["state_dict"] = ck["ema"] if ck.get("ema") else ck["state_dict"]
    payload["ema"] = None
    return save_checkpoint(out, payload)
