"""Crash-safe file writes: temp file in the same directory, fsync, rename, fsync the directory.

A reader (or a rerun after ``kill -9``, a full disk or a power cut) sees either the previous
complete file or the new complete file, never a truncated one: the bytes are flushed to disk
before the rename makes them visible, and the directory is flushed so the rename itself
survives. The temp file lives beside the target (never in ``$TMPDIR``), so the rename is
atomic on the same filesystem. A failed write (``ENOSPC``) removes its temp file and leaves
the old target untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "fsync_dir"]


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Flush a directory entry (a rename or a new file) to disk; a no-op where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on a clean exit it replaces ``path`` durably."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            os.fchmod(handle.fileno(), _default_mode())  # mkstemp makes 0600
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_write(path, "w") as handle:
        handle.write(text)
    return Path(path)


def atomic_save(save: Callable[[IO[bytes]], None], path: str | os.PathLike[str]) -> Path:
    """``save(handle)`` writes the content (e.g. ``lambda f: torch.save(obj, f)``)."""
    with atomic_write(path, "wb") as handle:
        save(handle)
    return Path(path)


def _default_mode() -> int:
    """0666 minus the process umask: what ``open(path, "w")`` would have given."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
