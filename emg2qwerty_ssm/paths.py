"""User-given paths (dataset roots, split files, checkpoints) resolved one way everywhere."""

from __future__ import annotations

import os
from pathlib import Path

from emg2qwerty_ssm import CONFIG_DIR

__all__ = ["REPO_DIR", "resolve_user_path"]

#: the repository (the parent of conf/)
REPO_DIR = CONFIG_DIR.parent


def resolve_user_path(path: str | os.PathLike[str]) -> Path:
    """A user path: ``~`` expanded; relative paths from the cwd, else from the repository."""
    p = Path(os.path.expanduser(str(path)))
    if p.is_absolute() or p.exists():
        return p.resolve()
    in_repo = REPO_DIR / p
    return in_repo.resolve() if in_repo.exists() else p.resolve()
