"""Writing files so that a crash leaves the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process's file-creation mask (os.umask can only be read by setting it, hence the lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def usual_mode(path: str | Path) -> None:
    """Give a file or directory the mode an ordinary `open()` or `mkdir()` would have given it (0666 or
    0777 less the umask). `tempfile` makes them private (0600, 0700), and so does safetensors for the
    files it writes; a run, a figure or an exported model renamed into place would stay unreadable to
    everyone else (a colleague sharing the run directory, a server running as another user)."""
    full = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, full & ~umask())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix) to write to; renamed over `path` when the block
    succeeds, removed when it fails."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        usual_mode(tmp)  # after writing: a writer may replace the file (safetensors writes its own, 0600)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
