"""Output files: checked before any work starts (:func:`check_output_file`, :func:`check_output_dir`,
:func:`check_not_input`: no output may be one of the command's inputs), and written so that their final
name never holds a partial file: every output of codecnn (datasets, shards, checkpoints, logs, reports,
exported models) is written to a temporary sibling and renamed into place only when complete; on any
error (or Ctrl-C) the temporary file is removed."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from codecnn.errors import CodecnnError


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (``NAME.tmp``) to write; it is renamed to ``path`` when the
    block ends normally and removed when it raises."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_write`."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_write`."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _nearest_existing(p: Path) -> Path:
    p = p.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse, before any work starts, an output folder that cannot be made or written: a file in its place
    or on its path, or no write permission where it would be created."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CodecnnError(f"{option} {p}: a file of that name exists; give a folder (a new or existing one)")
    base = _nearest_existing(p)
    if not base.is_dir():
        raise CodecnnError(f"{option} {p}: {base} is a file, so no folder can be made under it; choose another path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise CodecnnError(f"{option} {p}: {base} is not writable; choose a folder you can write to")
    return p


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse, before any work starts, an output file that cannot be written: an existing folder of that
    name, a missing folder or a file on its path, or no write permission in its folder."""
    p = Path(path)
    if p.is_dir():
        raise CodecnnError(f"{option} {p}: that is a folder; give a file name (e.g. {p / 'out'}{p.suffix})")
    parent = p.parent
    if not parent.exists():
        base = _nearest_existing(parent)
        if not base.is_dir():
            raise CodecnnError(f"{option} {p}: {base} is a file, not a folder; choose another path")
        raise CodecnnError(f"{option} {p}: the folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise CodecnnError(f"{option} {p}: {parent} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CodecnnError(f"{option} {p}: the folder {parent} is not writable; choose another")
    return p


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Both exist and are one file: the same (st_dev, st_ino) through any symlink, hard link or ``..``."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # one is missing (or not a path at all, e.g. zoo:NAME)
        return False


def check_not_input(
    option: str,
    out: str | os.PathLike,
    inputs: Iterable[tuple[str, object]],
    writes: Iterable[str] | None = None,
) -> None:
    """Refuse, before any work starts, an output that would destroy one of the command's own inputs.

    ``out`` (given to ``option``) is the file the command writes or, with ``writes``, the folder it writes
    the files of those names into (glob patterns, e.g. ``rd_*.png``): then every existing file in it that
    the command would replace counts. ``inputs`` are ``(label, path)`` pairs, the path a string, a path, a
    sequence of them (a repeatable option) or None. A file is an input when it is the same file as one of
    them (same device and inode): through a symlink, a hard link or ``..`` as well."""
    out = Path(out)
    if writes is None:
        targets = [out]
    else:  # (a folder that holds inputs is no harm: only the files it would replace count)
        targets = [out / n for n in sorted({q.name for w in writes for q in out.glob(w)})] if out.is_dir() else []
    for label, value in inputs:
        for path in value if isinstance(value, list | tuple) else [value]:
            if path is None:
                continue
            for target in targets:
                if _same_file(target, path):
                    what = f"{option} {out}" + (f" would replace {target}, which" if target != out else "")
                    raise CodecnnError(
                        f"{what} is the input {label} {path}: writing it would destroy the input; choose another "
                        f"{option}"
                    )


def read_text_input(path: str | os.PathLike, what: str) -> str:
    """The text of an input file the user names (a sequence list, a CSV, a results file): a clear error for a
    missing file, a folder, or binary content, instead of a decoding traceback."""
    p = Path(path)
    if not p.is_file():
        raise CodecnnError(f"{p}: no such file (expected {what})")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CodecnnError(f"{p}: binary content, not a text file; give {what}") from None
    if "\x00" in text:
        raise CodecnnError(f"{p}: binary content, not a text file; give {what}")
    return text
