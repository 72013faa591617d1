"""The dataset validator: every problem of a dataset root at once, before any training starts
(``scripts/validate_dataset.py``, ``python -m emg2qwerty_ssm.validation``).

Each check returns a list of messages (empty = fine); every message starts with the file it is
about; :class:`DatasetError` carries such a list. The checks live with the data:

- :func:`validate_session` (one file) in :mod:`emg2qwerty_ssm.data.checks`;
- :func:`validate_split`, :func:`check_split` (a split over a root) in
  :mod:`emg2qwerty_ssm.data.splits`;
- :func:`validate_root` (a whole root: every ``*.hdf5`` or the split's sessions, plus
  ``metadata.csv``) here, with the command line.

Only h5py/numpy/yaml are imported so the command-line validator starts quickly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emg2qwerty_ssm.data.checks import validate_metadata, validate_session
from emg2qwerty_ssm.data.problems import DatasetError, unknown_key_problems
from emg2qwerty_ssm.data.splits import check_split, load_split_any, validate_split
from emg2qwerty_ssm.validation_stamps import ValidationStamps

__all__ = [
    "DatasetError",
    "ValidationStamps",
    "check_split",
    "main",
    "unknown_key_problems",
    "validate_root",
    "validate_session",
    "validate_split",
]


def validate_root(
    root: str | os.PathLike[str],
    split: Mapping[str, Any] | None = None,
    full: bool = False,
    split_source: str | None = None,
) -> list[str]:
    """Problems with a dataset root: every ``*.hdf5`` (or the split's sessions) and metadata.csv."""
    root = Path(root)
    if not root.is_dir():
        return [f"{root}: dataset root does not exist or is not a directory"]
    on_disk = sorted(p.stem for p in root.glob("*.hdf5"))
    problems = validate_metadata(root, on_disk)
    if split is not None:
        return problems + validate_split(root, split, full=full, split_source=split_source)
    if not on_disk:
        problems.append(f"{root}: no session files (*.hdf5) in the dataset root")
    for stem in on_disk:
        problems += validate_session(root / f"{stem}.hdf5", full=full)
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="validate_dataset.py",
        description="Check an emg2qwerty-format dataset root and report every problem.",
    )
    ap.add_argument("--root", required=True, type=Path, help="dataset root (holds <session>.hdf5)")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--split", type=Path, help="a conf/user/<name>.yaml split config")
    group.add_argument(
        "--split-file", type=Path, help="a split yaml such as <root>/splits/<name>.yaml"
    )
    ap.add_argument(
        "--full", action="store_true", help="also read every row (NaN/Inf, monotonic time)"
    )
    args = ap.parse_args(argv)

    split_path = args.split or args.split_file
    split: Any = None
    problems: list[str] = []
    if split_path is not None:
        split, problems = load_split_any(split_path, args.root)
    if not problems:
        problems = validate_root(
            args.root, split, full=args.full, split_source=str(split_path or "")
        )
    if problems:
        print(DatasetError(problems), file=sys.stderr)
        return 1
    scope = f"split {split_path}" if split_path else "all sessions"
    print(f"{args.root}: OK ({scope}{', full scan' if args.full else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
