"""Checks of one session file that report every problem at once (empty list = fine).

:func:`validate_session` (path, full=False): the file opens as HDF5; group ``emg2qwerty``,
compound dataset ``timeseries`` with ``emg_left``/``emg_right`` (16,) float32 and ``time``
float64; the group attributes ``session_name``, ``user``, ``condition``, ``duration_mins``,
``keystrokes``, ``prompts``; the keystroke and prompt JSON items. ``full=True`` also reads all
rows: NaN/Inf EMG, non-finite or decreasing ``time``, keystrokes wholly outside the recorded
time range. :func:`validate_metadata` checks ``metadata.csv`` against the files on disk.
Every message starts with the file it is about. Only h5py/numpy are imported (the
command-line validator starts quickly).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = ["validate_metadata", "validate_session"]

GROUP = "emg2qwerty"
TIMESERIES = "timeseries"
EMG_FIELDS = ("emg_left", "emg_right")
NUM_CHANNELS = 16
REQUIRED_ATTRS = ("session_name", "user", "condition", "duration_mins", "keystrokes", "prompts")
METADATA_COLUMNS = ("user", "session", "duration_mins", "num_keystrokes", "num_prompts")
# Rows per read when scanning a whole session (~17 MB of the 136-byte rows).
_SCAN_ROWS = 1 << 17


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_events(path: Path, name: str, raw: Any, item_fields: dict[str, str]) -> list[str]:
    """Checks a JSON list attribute of dicts (keystrokes or prompts)."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if not isinstance(raw, str):
        return [f"{path}: attribute '{name}' should be a JSON string, got {type(raw).__name__}"]
    try:
        events = json.loads(raw)
    except ValueError as e:
        return [f"{path}: attribute '{name}' is not valid JSON ({e})"]
    if not isinstance(events, list):
        return [f"{path}: attribute '{name}' should be a JSON list, got {type(events).__name__}"]
    problems = []
    for i, ev in enumerate(events):
        if not isinstance(ev, dict):
            problems.append(f"{path}: {name}[{i}] should be an object, got {ev!r:.60}")
            continue
        for key, kind in item_fields.items():
            if key not in ev:
                problems.append(f"{path}: {name}[{i}] has no '{key}' ({ev!r:.80})")
            elif kind == "number" and not _is_number(ev[key]):
                problems.append(
                    f"{path}: {name}[{i}].{key} should be a finite number, got {ev[key]!r}"
                )
            elif kind == "str" and not isinstance(ev[key], str):
                problems.append(f"{path}: {name}[{i}].{key} should be a string, got {ev[key]!r}")
            elif kind == "payload" and not (
                ev[key] is None
                or (isinstance(ev[key], dict) and isinstance(ev[key].get("text"), str))
            ):
                problems.append(
                    f"{path}: {name}[{i}].payload should be null or an object with a "
                    f"'text' string, got {ev[key]!r:.80}"
                )
        if len(problems) >= 20:
            problems.append(f"{path}: {name}: further items not checked")
            break
    return problems


def _check_timeseries(
    path: Path, ts: Any, full: bool, time_range: list[float] | None = None
) -> list[str]:
    where = f"/{GROUP}/{TIMESERIES}"
    if not isinstance(ts, h5py.Dataset):
        return [f"{path}: missing dataset '{where}'"]
    fields = ts.dtype.fields
    if fields is None:
        return [
            f"{path}: '{where}' has dtype {ts.dtype}, expected a compound dtype with fields "
            "emg_left, emg_right, time"
        ]
    problems = []
    if ts.ndim != 1:
        problems.append(f"{path}: '{where}' should be 1-D, has shape {ts.shape}")
    elif ts.shape[0] == 0:
        problems.append(f"{path}: '{where}' is empty (0 samples)")
    for name in EMG_FIELDS:
        if name not in fields:
            problems.append(f"{path}: '{where}' has no field '{name}' (fields: {list(fields)})")
            continue
        sub = fields[name][0]
        if sub.shape != (NUM_CHANNELS,):
            problems.append(
                f"{path}: field '{name}' has {sub.shape[0] if sub.shape else 1} channels "
                f"(shape {sub.shape}), expected {NUM_CHANNELS}"
            )
        if sub.base != np.float32:
            problems.append(f"{path}: field '{name}' has dtype {sub.base}, expected float32")
    if "time" not in fields:
        problems.append(f"{path}: '{where}' has no field 'time' (fields: {list(fields)})")
    elif fields["time"][0] != np.float64:
        problems.append(f"{path}: field 'time' has dtype {fields['time'][0]}, expected float64")
    if full and not problems:
        problems += _scan_rows(path, ts, time_range)
    return problems


def _scan_rows(path: Path, ts: h5py.Dataset, time_range: list[float] | None = None) -> list[str]:
    """Reads every row: EMG must be finite, time finite and non-decreasing.

    ``time_range`` (a list) receives the first and last finite time stamps.
    """
    problems = []
    t_first, t_last = math.inf, -math.inf
    bad_emg = {name: 0 for name in EMG_FIELDS}
    first_bad_emg: dict[str, int] = {}
    bad_time = 0
    first_decrease = None
    n_decrease = 0
    prev_last = -np.inf
    for start in range(0, len(ts), _SCAN_ROWS):
        rows = ts[start : start + _SCAN_ROWS]
        for name in EMG_FIELDS:
            nonfinite = ~np.isfinite(rows[name]).all(axis=1)
            count = int(nonfinite.sum())
            if count:
                bad_emg[name] += count
                first_bad_emg.setdefault(name, start + int(np.argmax(nonfinite)))
        t = rows["time"]
        finite = np.isfinite(t)
        bad_time += int((~finite).sum())
        steps = np.diff(np.concatenate([[prev_last], t]))
        decreasing = steps < 0
        if decreasing.any():
            n_decrease += int(decreasing.sum())
            if first_decrease is None:
                first_decrease = start + int(np.argmax(decreasing))
        prev_last = t[-1]
        if finite.any():
            t_first = min(t_first, float(t[finite][0]))
            t_last = max(t_last, float(t[finite][-1]))
    if time_range is not None and t_first <= t_last:
        time_range[:] = [t_first, t_last]
    for name in EMG_FIELDS:
        if bad_emg[name]:
            problems.append(
                f"{path}: field '{name}' has NaN/Inf values in {bad_emg[name]} rows "
                f"(first at row {first_bad_emg[name]})"
            )
    if bad_time:
        problems.append(f"{path}: field 'time' has {bad_time} NaN/Inf values")
    if first_decrease is not None:
        problems.append(
            f"{path}: field 'time' is not monotonic: it decreases at {n_decrease} rows "
            f"(first at row {first_decrease})"
        )
    return problems


def _keystrokes_in_range(path: Path, raw: Any, t_first: float, t_last: float) -> list[str]:
    """Keystrokes lying wholly outside the recorded time span (a clock or file mix-up).

    A key press overlapping either end is accepted (a key held while recording starts/stops).
    """
    events = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    outside = [
        (i, ev)
        for i, ev in enumerate(events)
        if float(ev["end"]) < t_first or float(ev["start"]) > t_last
    ]
    if not outside:
        return []
    i, ev = outside[0]
    return [
        f"{path}: {len(outside)} of {len(events)} keystrokes lie outside the session's time range "
        f"[{t_first:.3f}, {t_last:.3f}] (first: keystrokes[{i}] = {ev['key']!r} at "
        f"{float(ev['start']):.3f})"
    ]


def validate_session(path: str | os.PathLike[str], full: bool = False) -> list[str]:
    """Problems with one session file (empty list = fine).

    Cheap by default (HDF5 header, attributes, keystroke/prompt JSON); ``full=True`` also
    reads every row to find NaN/Inf EMG and non-monotonic time, and checks the keystrokes
    against the recorded time range.
    """
    path = Path(path)
    if not path.exists():
        return [f"{path}: session file does not exist"]
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        return [f"{path}: not a readable HDF5 file ({e})"]
    with f:
        group = f.get(GROUP)
        if not isinstance(group, h5py.Group):
            return [f"{path}: missing group '/{GROUP}'"]
        time_range: list[float] = []
        problems = _check_timeseries(path, group.get(TIMESERIES), full, time_range)
        attrs = group.attrs
        for name in REQUIRED_ATTRS:
            if name not in attrs:
                problems.append(f"{path}: group '/{GROUP}' has no attribute '{name}'")
        if "condition" in attrs and not isinstance(attrs["condition"], str):
            problems.append(
                f"{path}: attribute 'condition' should be a string, got {attrs['condition']!r}"
            )
        if "duration_mins" in attrs:
            dur = attrs["duration_mins"]
            if not (np.isscalar(dur) and np.issubdtype(np.asarray(dur).dtype, np.number)):
                problems.append(
                    f"{path}: attribute 'duration_mins' should be a number, got {dur!r}"
                )
        if "keystrokes" in attrs:
            problems += _check_events(
                path,
                "keystrokes",
                attrs["keystrokes"],
                {"key": "str", "start": "number", "end": "number"},
            )
            if not problems and time_range:
                problems += _keystrokes_in_range(path, attrs["keystrokes"], *time_range)
        if "prompts" in attrs:
            problems += _check_events(
                path,
                "prompts",
                attrs["prompts"],
                {"name": "str", "start": "number", "end": "number", "payload": "payload"},
            )
    return problems


def validate_metadata(root: Path, sessions_on_disk: Iterable[str]) -> list[str]:
    path = root / "metadata.csv"
    if not path.is_file():
        return []
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype={"session": str})
    except Exception as e:  # pandas raises several parser error types
        return [f"{path}: cannot be parsed as CSV ({e})"]
    missing = [c for c in METADATA_COLUMNS if c not in df.columns]
    if missing:
        return [f"{path}: missing columns {missing} (has {list(df.columns)})"]
    problems = []
    on_disk = set(sessions_on_disk)
    absent = [s for s in df["session"] if s not in on_disk]
    if absent:
        shown = ", ".join(absent[:5]) + (", ..." if len(absent) > 5 else "")
        problems.append(f"{path}: {len(absent)} listed sessions have no file in {root}: {shown}")
    return problems
