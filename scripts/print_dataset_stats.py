#!/usr/bin/env python
"""Print per-user and total statistics of a dataset root (emg2qwerty's print_dataset_stats).

    python scripts/print_dataset_stats.py --root DATA

Reads ``<root>/metadata.csv``; without it, scans the headers of ``<root>/*.hdf5``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--root", required=True, type=Path, help="dataset root")
    args = ap.parse_args(argv)

    from emg2qwerty_ssm.data import dataset_stats

    try:
        per_user, totals = dataset_stats(args.root)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    source = "metadata.csv" if (args.root / "metadata.csv").is_file() else "session files"
    print(f"Dataset {args.root} (from {source})")
    print(per_user.to_string(float_format=lambda x: f"{x:.2f}"))
    print()
    print(f"users:      {totals['users']}")
    print(f"sessions:   {totals['sessions']}")
    print(f"hours:      {totals['hours']:.2f}")
    print(f"keystrokes: {totals['keystrokes']}")
    print(f"prompts:    {totals['prompts']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
