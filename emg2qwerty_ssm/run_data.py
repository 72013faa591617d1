"""The data side of a run: the dataset root (synthetic presets generated on first use), the
split and its validation, all before anything is built or trained (see docs/reliability.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from emg2qwerty_ssm import CONFIG_DIR
from emg2qwerty_ssm.validation import DatasetError, unknown_key_problems

log = logging.getLogger(__name__)

REPO_DIR = CONFIG_DIR.parent

__all__ = ["check_split", "prepare_dataset", "resolve_split", "resolve_user_path"]


def resolve_user_path(path: str | os.PathLike[str]) -> Path:
    """A user path: ``~`` expanded; relative paths from the cwd, else from the repository."""
    p = Path(os.path.expanduser(str(path)))
    if p.is_absolute() or p.exists():
        return p.resolve()
    in_repo = REPO_DIR / p
    return in_repo.resolve() if in_repo.exists() else p.resolve()


def prepare_dataset(cfg: DictConfig) -> Path:
    """The dataset root; a synthetic preset is generated there first if it is absent."""
    try:
        root_value = cfg.dataset.root
    except MissingMandatoryValue:
        root_value = None
    if not root_value:
        raise ValueError(
            "dataset.root is not set: pass dataset.root=/path/to/emg2qwerty (dataset=real), or "
            "use a synthetic preset (dataset=synthetic_tiny|synthetic_demo|synthetic_full)"
        )
    root = resolve_user_path(str(root_value))
    synthetic = cfg.dataset.get("synthetic")
    if synthetic:
        from emg2qwerty_ssm.synthetic import ensure_dataset

        log.info("synthetic preset %r (seed %s) at %s", synthetic.preset, synthetic.seed, root)
        root = Path(ensure_dataset(str(synthetic.preset), int(synthetic.seed), root))
    return root


def resolve_split(cfg: DictConfig, root: Path) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """The ``{train, val, test}`` split of this run and a description of where it came from.

    ``dataset.split_file`` (synthetic users) wins over inline ``dataset.train/val/test``
    (the real users in conf/user/).
    """
    from emg2qwerty_ssm.data import load_split

    user = cfg.get("user")
    split_file = cfg.dataset.get("split_file")
    if split_file:
        path = resolve_user_path(str(split_file))
        if not path.is_file():
            hint = ""
            if str(user).startswith("synth_") and not cfg.dataset.get("synthetic"):
                hint = (
                    f" (user={user} is a split of the synthetic datasets; for the real dataset "
                    "choose user=user0 .. user7 or user=generic)"
                )
            available = sorted(p.stem for p in path.parent.glob("*.yaml"))
            if available:  # conf/user/synth_<stem>.yaml selects <root>/splits/<stem>.yaml
                prefix = "synth_" if cfg.dataset.get("synthetic") else ""
                hint += f"; users with a split there: {', '.join(prefix + s for s in available)}"
            raise FileNotFoundError(f"split file {path} does not exist{hint}")
        return load_split(path), str(path)
    # a misspelt split key (`tain:`) would otherwise leave that split silently empty
    known = ("root", "synthetic", "split_file", "train", "val", "test")
    problems = unknown_key_problems(cfg.dataset, known, f"dataset config of user={user}")
    if problems:
        raise DatasetError(problems)
    split = {k: list(cfg.dataset.get(k) or []) for k in ("train", "val", "test")}
    if not any(split.values()):
        raise ValueError(
            f"user={user} defines no sessions: the user config must set dataset.split_file or "
            "dataset.train/val/test"
        )
    plain = OmegaConf.to_container(OmegaConf.create(split), resolve=True)
    return plain, f"conf/user/{user}.yaml"  # type: ignore[return-value]


def check_split(
    root: Path, split: Mapping[str, Any], source: str, cfg: DictConfig | None = None
) -> None:
    """Raise :class:`DatasetError` listing every problem of the split.

    By default every row of every session is read once (NaN/Inf EMG, time order, keystroke
    range); a stamp cache keyed by (path, size, mtime) skips files that passed before
    (``data_validation.full=false``: header checks only).
    """
    from emg2qwerty_ssm.validation import ValidationStamps, validate_split

    opts = (cfg.get("data_validation") if cfg is not None else None) or {}
    full = bool(opts.get("full", True))
    stamps = ValidationStamps(resolve_user_path(opts["stamps"])) if opts.get("stamps") else None
    problems = validate_split(root, split, full=full, split_source=source, stamps=stamps)
    needed = ("train", "val") if cfg is not None and cfg.get("train") else ()
    for name in needed:
        if not split.get(name):
            problems.append(f"{source}: the split lists no '{name}' sessions, training needs them")
    if problems:
        raise DatasetError(problems)
