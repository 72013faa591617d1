"""Synthetic emg2qwerty datasets in the real file layout (see docs/synthetic.md).

``ensure_dataset(preset, seed, root)`` returns the root of a complete dataset, generating it
once into a cache directory; ``generate_dataset`` writes one into a given directory;
``python -m emg2qwerty_ssm.synthetic`` is the command line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .dataset import (
    MANIFEST,
    ForeignFilesError,
    generate_dataset,
    generate_session,
    is_complete,
    owned_files,
    plan_sessions,
)
from .params import PRESETS, DatasetConfig, GeneratorParams, preset_config

__all__ = [
    "MANIFEST",
    "PRESETS",
    "DatasetConfig",
    "ForeignFilesError",
    "GeneratorParams",
    "cache_root",
    "default_dataset_dir",
    "ensure_dataset",
    "generate_dataset",
    "generate_session",
    "is_complete",
    "plan_sessions",
    "preset_config",
]

CACHE_ENV = "EMG2QWERTY_SSM_CACHE"


def cache_root() -> Path:
    """``$EMG2QWERTY_SSM_CACHE`` if set, else ``~/.cache/emg2qwerty_ssm``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "emg2qwerty_ssm"


def default_dataset_dir(preset: str, seed: int = 0) -> Path:
    """``<cache root>/synthetic/<preset>-seed<seed>``."""
    return cache_root() / "synthetic" / f"{preset}-seed{seed}"


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Inter-process lock, so racing callers generate once and the others wait."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: the temp-dir + rename still keeps data consistent
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_replaceable(root: Path) -> None:
    """Refuse to replace a directory holding anything the generator did not write.

    Ownership comes only from the manifest a previous generation left at ``root`` (its
    ``files`` list): file names alone prove nothing, since a real emg2qwerty directory has
    ``*.hdf5`` files and a ``metadata.csv`` too.
    """
    ours = owned_files(root)
    ours |= {f"{f}.partial" for f in ours}
    foreign = [
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if not p.is_dir() and p.relative_to(root).as_posix() not in ours
    ]
    if foreign:
        raise ForeignFilesError(root, foreign)


def ensure_dataset(preset: str, seed: int = 0, root: Path | str | None = None, **overrides) -> Path:
    """Return the directory of a complete synthetic dataset, generating it only if absent.

    ``root`` is the dataset directory itself (default ``default_dataset_dir(preset, seed)``).
    Generation goes into a temporary sibling directory that is renamed into place once the
    manifest (the completion mark) is written, so a crash never leaves a half dataset at
    ``root``; a file lock serialises processes racing for the same ``root``. A directory at
    ``root`` that is not a complete dataset of this preset/seed/config is replaced only if
    every file in it is listed by the manifest of an earlier generation (else
    :class:`ForeignFilesError`, checked *before* generating, so a real dataset given as the
    root of a synthetic preset costs nothing and loses nothing).
    ``overrides`` are DatasetConfig fields (e.g. ``session_seconds``).
    """
    config = preset_config(preset, **overrides)
    root = Path(root) if root is not None else default_dataset_dir(preset, seed)
    if is_complete(root, preset, seed, config):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(root.parent / f".{root.name}.lock"):
        if is_complete(root, preset, seed, config):  # another process finished meanwhile
            return root
        if root.exists():
            _check_replaceable(root)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
        try:
            generate_dataset(tmp, config, seed, preset=preset)
            if root.exists():
                _check_replaceable(root)  # again: a file may have appeared meanwhile
                stale = Path(tempfile.mkdtemp(prefix=f".{root.name}.stale-", dir=root.parent))
                os.replace(root, stale / "old")
                shutil.rmtree(stale, ignore_errors=True)
            os.replace(tmp, root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return root
