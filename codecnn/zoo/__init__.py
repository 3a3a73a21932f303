"""Pretrained networks shipped inside the package (as CompressAI's zoo), each produced by codecnn's own
``train`` command and listed in ``index.json`` with the exact command, data, machine and time that made it,
its ``log.jsonl``, the SHA-256 of its weights file and its measured held-out results.

``zoo:NAME`` names an entry wherever a checkpoint is read (``evaluate``, ``export``, ``train --init``);
:func:`resolve` turns it into the packaged file after checking its SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from codecnn.errors import CodecnnError

ZOO_DIR = Path(__file__).parent
PREFIX = "zoo:"
SETTINGS = ("in-loop", "post-filter", "intra-modes")


def entries() -> list[dict]:
    """Every shipped entry of ``index.json`` (name, setting, file, sha256, results, provenance)."""
    index = ZOO_DIR / "index.json"
    if not index.is_file():
        return []
    return json.loads(index.read_text())


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve(spec: str | os.PathLike, hm: bool = False) -> Path:
    """A checkpoint path: ``zoo:NAME`` becomes the shipped file (its SHA-256 checked); anything else is
    returned as a path. ``hm=True``: the entry's int16 ``.cnnw`` export for HM (``evaluate --in-loop
    --model zoo:NAME``), where it ships one."""
    text = str(spec)
    if not text.startswith(PREFIX):
        return Path(spec)
    name = text[len(PREFIX) :]
    known = {e["name"]: e for e in entries()}
    if name not in known:
        raise CodecnnError(
            f"{text}: no such shipped model; codecnn zoo lists them ({', '.join(sorted(known)) or 'none'})"
        )
    e = known[name]
    if hm:
        if "hm_model" not in e:
            raise CodecnnError(f"{text}: no HM export ships with it; make one with codecnn export {text} --int16")
        e = e["hm_model"]
    return _packaged(text, e)


def resolve_inter(spec: str | os.PathLike) -> Path | None:
    """The HM export of ``zoo:NAME``'s model for the P and B pictures (HM's ``--CnnInterModel``), where the
    entry names one (its own file, or ``{"entry": OTHER}``: another entry's export); None for a path or an
    entry with one model for every picture."""
    text = str(spec)
    if not text.startswith(PREFIX):
        return None
    resolve(spec, hm=True)  # the entry exists and has its intra model
    e = {e["name"]: e for e in entries()}[text[len(PREFIX) :]]
    inter = e.get("hm_model_inter")
    if inter is None:
        return None
    if "entry" in inter:  # another entry's HM export (a model of its own, shared by several pairs)
        return resolve(PREFIX + inter["entry"], hm=True)
    return _packaged(text, inter)


def _packaged(text: str, e: dict) -> Path:
    path = ZOO_DIR / e["file"]
    if not path.is_file():
        raise CodecnnError(f"{text}: its file {path} is missing from the installed package; reinstall codecnn")
    if sha256(path) != e["sha256"]:
        raise CodecnnError(f"{text}: {path} does not match its SHA-256 in the zoo index; reinstall codecnn")
    return path
