"""Output files: checked before any work starts (:func:`check_output_file`, :func:`check_output_dir`,
:func:`check_not_input`), and written so that their final name never holds a partial file: every output
of codecnn (datasets, shards, checkpoints, logs, reports, exported models) is written to a temporary
sibling and renamed into place only when complete; on any error (or Ctrl-C) the temporary file is
removed, and an OS error of the output (no space left, a read-only file system, a name too long) becomes
a one-line :class:`CodecnnError` (:func:`output_error`)."""

from __future__ import annotations

import contextlib
import errno
import io
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from codecnn.errors import CodecnnError

# OS errors that say an output cannot be written where it was asked (the environment, not a bug), and the fix
OUTPUT_ERRNOS = {
    errno.ENOSPC: "free some space or choose another place",
    errno.EDQUOT: "free some space or choose another place",
    errno.EFBIG: "the file system cannot hold a file this large; choose another place",
    errno.EROFS: "choose a place on a writable file system",
    errno.ENAMETOOLONG: "choose a shorter name",
    errno.EACCES: "choose a place you can write to",
    errno.EPERM: "choose a place you can write to",
}
# the longest suffix codecnn adds to an output file's name for its temporary siblings (OUT.h5.parts, NAME.tmp)
TEMP_SUFFIX_ROOM = len(".parts")
POSIX_NAME_MAX, POSIX_PATH_MAX = 0xFF, 4096  # Linux's NAME_MAX and PATH_MAX, where pathconf cannot tell


def output_error(e: OSError, path: str | os.PathLike | None = None, option: str | None = None) -> CodecnnError | None:
    """The one-line error for an OS error met writing ``path`` (named after ``option`` when given), or None
    when the error is not one of :data:`OUTPUT_ERRNOS` (a programming error keeps its traceback)."""
    if e.errno not in OUTPUT_ERRNOS:
        return None
    where = path if path is not None else e.filename
    where = f"{option} {where}" if option else where
    what = f"{where}: cannot write it" if where is not None else "cannot write an output"
    return CodecnnError(f"{what}: {os.strerror(e.errno)}; {OUTPUT_ERRNOS[e.errno]}")


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (``NAME.tmp``) to write; it is renamed to ``path`` when the
    block ends normally and removed when it raises (an OS error of the output, e.g. no space left midway,
    raised again as one line by :func:`output_error`)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, p)
    except BaseException as e:
        with contextlib.suppress(OSError):  # (a name too long cannot be removed either)
            tmp.unlink(missing_ok=True)
        error = output_error(e, p) if isinstance(e, OSError) else None
        if error is not None:
            raise error from None
        raise


class _DeferredErrorFile(io.RawIOBase):
    """A file for libhdf5 (h5py's ``fileobj`` driver) whose writes never fail: the first OS error (no space
    left midway) is kept for :func:`atomic_h5` to raise once HDF5 has closed the file, and the writes after
    it are skipped. libhdf5 does not survive a failed write: it crashes the process as it closes the file."""

    def __init__(self, path: Path):
        super().__init__()
        self._f = open(path, "w+b", buffering=0)  # noqa: SIM115  (closed by close())
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, b) -> int:
        return self._f.readinto(b)

    def write(self, b) -> int:
        view = memoryview(b).cast("B")
        start = self._f.tell()
        if self.error is None:
            try:
                done = 0
                while done < view.nbytes:
                    done += self._f.write(view[done:])
                return view.nbytes
            except OSError as e:
                self.error = e
        self._f.seek(start + view.nbytes)
        return view.nbytes

    def truncate(self, size: int | None = None) -> int:
        try:
            return self._f.truncate(size)
        except OSError as e:
            self.error = self.error or e
            return self._f.tell() if size is None else size

    def close(self) -> None:
        super().close()
        self._f.close()


@contextmanager
def atomic_h5(path: str | os.PathLike):
    """An HDF5 file open for writing, written through :func:`atomic_write`; an OS error of the output
    (no space left midway) reaches the caller as one line once HDF5 has closed the file."""
    import h5py

    with atomic_write(path) as tmp:
        raw = _DeferredErrorFile(tmp)
        try:
            with h5py.File(raw, "w") as h5:
                yield h5
        except Exception:
            if raw.error is None:
                raise
        finally:
            raw.close()
        if raw.error is not None:
            raise raw.error


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
    while not os.path.exists(p) and p != p.parent:  # (os.path.exists: False, not an error, for a name too long)
        p = p.parent
    return p


def _not_writable(option: str, p: Path, base: Path, message: str) -> CodecnnError:
    """No write permission in ``base``: said as a read-only file system where that is the cause."""
    with contextlib.suppress(OSError):
        if os.statvfs(base).f_flag & os.ST_RDONLY:
            return CodecnnError(f"{option} {p}: {base} is on a read-only file system; choose a writable place")
    return CodecnnError(message)


def _check_names(p: Path, option: str, room: int) -> None:
    """Every name on the path within the file system's limit, the last leaving ``room`` bytes for the
    temporary siblings, and the whole path within the path limit."""
    base = _nearest_existing(p.parent)
    try:
        name_max, path_max = os.pathconf(base, "PC_NAME_MAX"), os.pathconf(base, "PC_PATH_MAX")
    except OSError:
        name_max, path_max = POSIX_NAME_MAX, POSIX_PATH_MAX
    parts = p.parts
    for i, name in enumerate(parts):
        size = len(os.fsencode(name)) + (room if i == len(parts) - 1 else 0)
        if size > name_max:
            extra = f", with the {room} bytes codecnn adds for its temporary files" if i == len(parts) - 1 else ""
            raise CodecnnError(
                f"{option} {name[:20]}...: {os.strerror(errno.ENAMETOOLONG)} ({size} bytes{extra}; the file system "
                f"allows {name_max}); choose a shorter name"
            )
    if len(os.fsencode(p.absolute())) + room >= path_max:
        raise CodecnnError(f"{option} {str(p)[:40]}...: path too long (the system allows {path_max} bytes)")


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse, before any work starts, an output folder that cannot be made or written: a name too long, a
    file in its place or on its path, or no write permission (or a read-only file system) where it would be
    created."""
    p = Path(path)
    _check_names(p, option, 0)
    if p.exists() and not p.is_dir():
        raise CodecnnError(f"{option} {p}: a file of that name exists; give a folder (a new or existing one)")
    base = _nearest_existing(p)
    if not base.is_dir():
        raise CodecnnError(f"{option} {p}: {base} is a file, so no folder can be made under it; choose another path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise _not_writable(option, p, base, f"{option} {p}: {base} is not writable; choose a folder you can write to")
    return p


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse, before any work starts, an output file that cannot be written: a name too long (with room for
    its temporary siblings), an existing folder of that name, a missing folder or a file on its path, or no
    write permission (or a read-only file system) in its folder."""
    p = Path(path)
    _check_names(p, option, TEMP_SUFFIX_ROOM)
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
        raise _not_writable(option, p, parent, f"{option} {p}: the folder {parent} is not writable; choose another")
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
