"""Splits: which sessions a run trains, validates and tests on, in one module.

A split is ``{train, val, test}`` lists of ``{user, session}``. It comes from the run config
(:func:`resolve_split`), in one of two ways chosen by the dataset and the ``user`` configs:

- a split file ``dataset.split_file`` (a synthetic user: ``conf/user/synth.yaml`` points at
  ``<dataset.split_dir>/<synth_split>.yaml``, the directory being the dataset's own);
- inline ``dataset.train/val/test`` lists (the real users in ``conf/user/user0..7, generic``).

:func:`validate_split` finds every structural problem (unknown keys, a session in two splits,
missing files, bad files through :func:`~emg2qwerty_ssm.data.checks.validate_session`);
:func:`check_split` raises them as one :class:`DatasetError` before anything trains.
Only yaml/h5py/numpy/omegaconf are imported (no torch): the command-line validator uses it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emg2qwerty_ssm.data.formats import Emg2QwertyHDF5, SessionFormat, session_file
from emg2qwerty_ssm.data.problems import DatasetError, unknown_key_problems
from emg2qwerty_ssm.paths import resolve_user_path
from emg2qwerty_ssm.validation_stamps import ValidationStamps

__all__ = [
    "DATASET_KEYS",
    "SPLIT_NAMES",
    "Split",
    "check_split",
    "load_split",
    "load_split_any",
    "resolve_split",
    "session_format_of",
    "split_entries",
    "validate_split",
]

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
#: keys a ``dataset`` config node may hold (a misspelt `tain:` would leave a split empty)
DATASET_KEYS = ("root", "synthetic", "format", "split_dir", "split_file", *SPLIT_NAMES)

Split = dict[str, list[dict[str, Any]]]


# ---------------------------------------------------------------------------- files
def load_split(path: str | os.PathLike[str]) -> Split:
    """Read a split yaml: ``{train, val, test}`` lists of ``{user, session}``.

    Accepts the conf/user format (``dataset: {train, val, test}``, optional
    ``# @package _global_`` line) and a bare ``{train, val, test}`` mapping.
    """
    import yaml

    path = Path(path)
    with path.open() as f:
        data = yaml.safe_load(f)
    if isinstance(data, Mapping) and isinstance(data.get("dataset"), Mapping):
        data = data["dataset"]
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a split file must be a mapping with train/val/test lists")
    problems = unknown_key_problems(data, SPLIT_NAMES, str(path))
    if problems:  # a misspelt `tain:` would leave the train split silently empty
        raise DatasetError(problems)
    return {k: list(data.get(k) or []) for k in SPLIT_NAMES if k in data}


def load_split_any(path: Path, root: Path) -> tuple[Any, list[str]]:
    """A split yaml in any of its formats, for the command-line validator.

    A conf/user file that only points at a split file of the dataset (the synthetic users:
    ``split_file: ${dataset.split_dir}/<name>.yaml``, or an alias naming ``synth_split``) is
    followed to ``<root>/splits/<name>.yaml``.
    """
    import yaml

    if not path.is_file():
        return None, [f"{path}: split file does not exist"]
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        return None, [f"{path}: not valid YAML ({e})"]
    if not isinstance(data, Mapping):
        return data, []
    name = data.get("synth_split")
    dataset = data.get("dataset")
    if isinstance(dataset, Mapping):
        target = dataset.get("split_file")
        if any(k in dataset for k in SPLIT_NAMES) or not isinstance(target, str):
            return dataset, []
        target = target.replace("${dataset.root}", str(root))
        target = target.replace("${dataset.split_dir}", str(root / "splits"))
        if name is not None:
            target = target.replace("${synth_split}", str(name))
        return load_split_any(Path(target), root)
    if name is not None:  # an alias of conf/user/synth.yaml
        return load_split_any(root / "splits" / f"{name}.yaml", root)
    return data, []


# ---------------------------------------------------------------------------- checks
def split_entries(split: Any, where: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(split name, session) pairs of a split mapping, plus structure problems."""
    if not isinstance(split, Mapping):
        return [], [
            f"{where}: a split must be a mapping with train/val/test lists, "
            f"got {type(split).__name__}"
        ]
    entries, problems = [], []
    if not any(k in split for k in SPLIT_NAMES):
        problems.append(f"{where}: split has none of the keys train/val/test (keys: {list(split)})")
    problems += unknown_key_problems(split, SPLIT_NAMES, where)
    for name in SPLIT_NAMES:
        items = split.get(name) or []
        if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
            problems.append(
                f"{where}: '{name}' should be a list of {{user, session}}, got {items!r:.60}"
            )
            continue
        for i, item in enumerate(items):
            session = item.get("session") if isinstance(item, Mapping) else None
            if not isinstance(session, str) or not session:
                problems.append(
                    f"{where}: {name}[{i}] should be {{user: int, session: str}}, got {item!r:.80}"
                )
            else:
                entries.append((name, session))
    return entries, problems


def validate_split(
    root: str | os.PathLike[str],
    split: Mapping[str, Any],
    full: bool = False,
    split_source: str | None = None,
    stamps: ValidationStamps | None = None,
    session_format: SessionFormat | None = None,
) -> list[str]:
    """Problems with a split over ``root``: the root, the split's structure, every session.

    Args:
        split: ``{train, val, test}`` lists of ``{user, session}`` (a dict or DictConfig).
        full: pass ``full=True`` to the format's ``validate`` (reads every row).
        split_source: how to name the split in messages (e.g. its file).
        stamps: a cache of files that passed the full check; an unchanged stamped file
            (same path, size and mtime) is not read again.
        session_format: names and checks the session files; default emg2qwerty's HDF5.
    """
    fmt = session_format if session_format is not None else Emg2QwertyHDF5()
    root = Path(root)
    where = split_source or "split"
    if not root.is_dir():
        return [f"{root}: dataset root does not exist or is not a directory"]
    entries, problems = split_entries(split, where)
    seen: dict[str, str] = {}
    for name, session in entries:
        if session in seen:
            if seen[session] != name:
                problems.append(
                    f"{where}: session {session} is listed in both '{seen[session]}' and "
                    f"'{name}' (a {seen[session]}/{name} leak); a session belongs to one split"
                )
            continue
        seen[session] = name
        path = session_file(root, session, fmt)
        if not path.exists():
            problems.append(f"{path}: session file does not exist (named in {where} '{name}')")
        elif stamps is not None and stamps.is_clean(path):
            continue  # fully validated before and unchanged since (size, mtime)
        else:
            found = fmt.validate(path, full=full)
            problems += found
            if stamps is not None and full and not found:
                stamps.mark_clean(path)
    if stamps is not None:
        stamps.save()
    return problems


def check_split(
    root: str | os.PathLike[str],
    split: Mapping[str, Any],
    source: str | None = None,
    cfg: Any | None = None,
    *,
    full: bool | None = None,
) -> None:
    """Raise :class:`DatasetError` listing every problem of the split.

    With a run config ``cfg``: by default every row of every session is read once (NaN/Inf
    EMG, time order, keystroke range); a stamp cache keyed by (path, size, mtime) skips files
    that passed before (``data_validation.full=false``: header checks only); a training run
    needs train and val sessions. Without one, header checks unless ``full=True``.
    """
    opts = (cfg.get("data_validation") if cfg is not None else None) or {}
    if full is None:
        full = bool(opts.get("full", True)) if cfg is not None else False
    stamps = ValidationStamps(resolve_user_path(opts["stamps"])) if opts.get("stamps") else None
    fmt = session_format_of(cfg) if cfg is not None else None
    problems = validate_split(
        root, split, full=full, split_source=source, stamps=stamps, session_format=fmt
    )
    needed = ("train", "val") if cfg is not None and cfg.get("train") else ()
    for name in needed:
        if not split.get(name):
            problems.append(f"{source}: the split lists no '{name}' sessions, training needs them")
    if problems:
        raise DatasetError(problems)


# ---------------------------------------------------------------------------- the run's split
def session_format_of(cfg: Any) -> SessionFormat:
    """The run's session format: ``dataset.format`` (a ``_target_`` node), else emg2qwerty's
    HDF5."""
    node = cfg.dataset.get("format") if cfg.get("dataset") is not None else None
    if node is None:
        return Emg2QwertyHDF5()
    from hydra.utils import instantiate

    fmt = instantiate(node)
    if not isinstance(fmt, SessionFormat):
        raise TypeError(
            f"dataset.format {node.get('_target_')!r} is not a session format (it needs "
            "suffix, windows() and validate(); see emg2qwerty_ssm.data.formats)"
        )
    return fmt


def resolve_split(cfg: Any, root: Path) -> tuple[Split, str]:
    """The ``{train, val, test}`` split of a run config and where it came from.

    ``dataset.split_file`` (synthetic users) wins over inline ``dataset.train/val/test``
    (the real users in conf/user/).
    """
    from omegaconf import OmegaConf

    user = cfg.get("user")
    split_file = cfg.dataset.get("split_file")
    if split_file:
        path = resolve_user_path(str(split_file))
        if not path.is_file():
            raise FileNotFoundError(f"split file {path} does not exist{_missing_hint(cfg, path)}")
        return load_split(path), str(path)
    problems = unknown_key_problems(cfg.dataset, DATASET_KEYS, f"dataset config of user={user}")
    if problems:
        raise DatasetError(problems)
    split = {k: list(cfg.dataset.get(k) or []) for k in SPLIT_NAMES}
    if not any(split.values()):
        raise ValueError(
            f"user={user} defines no sessions: the user config must set dataset.split_file or "
            "dataset.train/val/test"
        )
    plain = OmegaConf.to_container(OmegaConf.create(split), resolve=True)
    return plain, f"conf/user/{user}.yaml"  # type: ignore[return-value]


def _missing_hint(cfg: Any, path: Path) -> str:
    """Why a split file may be missing, and the splits the dataset has."""
    user = cfg.get("user")
    synthetic = bool(cfg.dataset.get("synthetic"))
    hint = ""
    if str(user).startswith("synth_") and not synthetic:
        hint = (
            f" (user={user} is a split of the synthetic datasets; for the real dataset "
            "choose user=user0 .. user7 or user=generic)"
        )
    available = sorted(p.stem for p in path.parent.glob("*.yaml"))
    if available:  # user=synth_<stem> (or user=synth synth_split=<stem>) selects <stem>.yaml
        prefix = "synth_" if synthetic else ""
        hint += f"; users with a split there: {', '.join(prefix + s for s in available)}"
    return hint
