"""Writing files so that their final name never holds a partial file: every output of codecnn (datasets,
shards, checkpoints, logs, reports, exported models) is written to a temporary sibling and renamed into
place only when complete; on any error (or Ctrl-C) the temporary file is removed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
