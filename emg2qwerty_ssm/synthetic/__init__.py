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

from .dataset import MANIFEST, generate_dataset, generate_session, is_complete, plan_sessions
from .params import PRESETS, DatasetConfig, GeneratorParams, preset_config

__all__ = [
    "MANIFEST",
    "PRESETS",
    "DatasetConfig",
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
    """Refuse to delete a directory that holds anything the generator did not write."""
    ours = {MANIFEST, "metadata.csv", "splits"}
    foreign = [
        p.name
        for p in root.iterdir()
        if p.name not in ours and not p.name.endswith((".hdf5", ".hdf5.partial"))
    ]
    if foreign:
        raise FileExistsError(
            f"{root} exists, is not a complete synthetic dataset of this preset/seed and holds "
            f"other files ({', '.join(sorted(foreign)[:5])}); refusing to replace it"
        )


def ensure_dataset(preset: str, seed: int = 0, root: Path | str | None = None, **overrides) -> Path:
    """Return the directory of a complete synthetic dataset, generating it only if absent.

    ``root`` is the dataset directory itself (default ``default_dataset_dir(preset, seed)``).
    Generation goes into a temporary sibling directory that is renamed into place once the
    manifest (the completion mark) is written, so a crash never leaves a half dataset at
    ``root``; a file lock serialises processes racing for the same ``root``. A directory at
    ``root`` that is not a complete dataset of this preset/seed/config is replaced if it only
    holds generator output (else FileExistsError).
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
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
        try:
            generate_dataset(tmp, config, seed, preset=preset)
            if root.exists():
                _check_replaceable(root)
                stale = Path(tempfile.mkdtemp(prefix=f".{root.name}.stale-", dir=root.parent))
                os.replace(root, stale / "old")
                shutil.rmtree(stale, ignore_errors=True)
            os.replace(tmp, root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return root
