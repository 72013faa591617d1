"""Small session files in the emg2qwerty HDF5 layout, for the data/validation tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

T0 = 1_600_000_000.0
GOOD_DTYPE = [("emg_left", "<f4", (16,)), ("emg_right", "<f4", (16,)), ("time", "<f8")]


def default_keystrokes(n_rows: int) -> list[dict[str, Any]]:
    """One key every 50 ms ("a".."j" plus a dropped ctrl), covering the session."""
    keys = []
    for i, t in enumerate(np.arange(0.01, n_rows / 2000.0, 0.05)):
        name = "Key.ctrl" if i % 7 == 3 else "abcdefghij"[i % 10]
        keys.append({"key": name, "start": T0 + float(t), "end": T0 + float(t) + 0.03})
    return keys


def write_session(
    path: Path,
    n_rows: int = 2000,
    *,
    dtype: Any = None,
    rows: np.ndarray | None = None,
    attrs: dict[str, Any] | None = None,
    drop_attrs: tuple[str, ...] = (),
    group: str = "emg2qwerty",
    dataset: str = "timeseries",
) -> Path:
    """Writes a session whose emg_left[:, 0] holds the row index (exact in float32).

    ``attrs`` override/add group attributes (lists/dicts are JSON-encoded as in real files).
    """
    if rows is None:
        rows = np.zeros(n_rows, dtype=np.dtype(dtype or GOOD_DTYPE))
        names = rows.dtype.names or ()
        if "emg_left" in names:
            rows["emg_left"][..., 0] = np.arange(n_rows)
        if "emg_right" in names:
            rows["emg_right"][...] = np.sin(np.arange(n_rows))[:, None]
        if "time" in names:
            rows["time"] = T0 + np.arange(n_rows) / 2000.0
    all_attrs: dict[str, Any] = {
        "session_name": path.stem,
        "user": "7",
        "condition": "on_keyboard",
        "duration_mins": len(rows) / 2000.0 / 60.0,
        "keystrokes": default_keystrokes(len(rows)),
        "prompts": [
            {"name": "text_prompt", "start": T0, "end": T0 + 1.0, "payload": {"text": "abc"}}
        ],
    }
    all_attrs.update(attrs or {})
    with h5py.File(path, "w") as f:
        g = f.create_group(group)
        g.create_dataset(dataset, data=rows)
        for key, value in all_attrs.items():
            if key in drop_attrs:
                continue
            g.attrs[key] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return path
