"""``metadata.csv`` (emg2qwerty's release) and per-user statistics of a dataset root."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from emg2qwerty_ssm.data.session import EMGSessionData

__all__ = ["METADATA_COLUMNS", "dataset_stats", "read_metadata", "scan_sessions"]

#: columns of ``metadata.csv`` (emg2qwerty's release)
METADATA_COLUMNS = (
    "user",
    "session",
    "condition",
    "duration_mins",
    "num_keystrokes",
    "num_prompts",
    "quality_check_tags",
)


def read_metadata(root: str | os.PathLike[str]) -> Any:
    """``<root>/metadata.csv`` as a pandas DataFrame with the emg2qwerty columns.

    Raises FileNotFoundError if it is absent and ValueError naming missing columns.
    """
    import pandas as pd

    path = Path(root) / "metadata.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: metadata.csv does not exist")
    df = pd.read_csv(path, dtype={"session": str, "condition": str, "quality_check_tags": str})
    required = ("user", "session", "duration_mins", "num_keystrokes", "num_prompts")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (has {list(df.columns)})")
    return df


def scan_sessions(root: str | os.PathLike[str]) -> Any:
    """metadata.csv-like DataFrame built by reading every ``<root>/*.hdf5`` header."""
    import pandas as pd

    rows = []
    for path in sorted(Path(root).glob("*.hdf5")):
        with EMGSessionData(path) as s:
            tags = s.metadata.get("quality_check_tags", "[]")
            rows.append(
                {
                    "user": s.user,
                    "session": path.stem,
                    "condition": s.condition,
                    "duration_mins": float(s.duration_mins),
                    "num_keystrokes": len(s.keystrokes),
                    "num_prompts": len(s.prompts),
                    "quality_check_tags": tags if isinstance(tags, str) else json.dumps(list(tags)),
                }
            )
    return pd.DataFrame(rows, columns=list(METADATA_COLUMNS))


def dataset_stats(root: str | os.PathLike[str]) -> tuple[Any, dict[str, float]]:
    """Per-user table (sessions, hours, keystrokes, prompts) and totals for a dataset root.

    Uses ``metadata.csv`` when present, else scans the session files.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root does not exist")
    df = read_metadata(root) if (root / "metadata.csv").is_file() else scan_sessions(root)
    df = df.assign(hours=df["duration_mins"] / 60.0)
    per_user = df.groupby("user").agg(
        sessions=("session", "count"),
        hours=("hours", "sum"),
        keystrokes=("num_keystrokes", "sum"),
        prompts=("num_prompts", "sum"),
    )
    totals = {
        "users": int(df["user"].nunique()),
        "sessions": len(df),
        "hours": float(df["hours"].sum()),
        "keystrokes": int(df["num_keystrokes"].sum()),
        "prompts": int(df["num_prompts"].sum()),
    }
    return per_user, totals
