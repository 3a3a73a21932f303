"""Capture what native code writes to the process's stderr (fd 2), e.g. libx265's log lines."""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def capture_fd2(path: str):
    """Redirect file descriptor 2 into ``path`` for the duration of the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 2)
    try:
        yield path
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def tail(path: str | os.PathLike | None, n: int = 5) -> str:
    """The last ``n`` non-empty lines of a text file, joined with ' | ' for a one-line message."""
    if path is None or not os.path.exists(path):
        return ""
    with open(path, "rb") as f:
        lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    return " | ".join(lines[-n:])
