"""Session files: :class:`EMGSessionData` (emg2qwerty's reader, same names) and the errors a
file can raise (docs/format.md#session-files).

File layout (one file per session, ``<root>/<session>.hdf5``)::

    /emg2qwerty                      group; attributes session_name, user, condition,
                                     duration_mins, keystrokes (JSON), prompts (JSON), ...
    /emg2qwerty/timeseries           1-D compound dataset of length T with fields
                                     emg_left (16,) float32, emg_right (16,) float32,
                                     time float64 (unix seconds)

Differences from emg2qwerty, all on purpose (see docs/data.md):

- Structural problems in a file (missing group/dataset/field/attribute, bad JSON) raise
  :class:`SessionFormatError` naming the file, instead of a bare KeyError/AssertionError.
- ``EMGSessionData.ground_truth`` computes keystroke labels with a vectorised search instead
  of a Python walk over every keystroke; the result is identical (tested against
  :meth:`LabelData.from_keystrokes`).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from emg2qwerty_ssm.charset import charset
from emg2qwerty_ssm.data.labels import LabelData

__all__ = [
    "EMGSessionData",
    "SessionFormatError",
    "SessionTooShortError",
    "get_open_session",
    "session_path",
]


class SessionFormatError(ValueError):
    """A session file lacks something the reader needs; the message names file and item."""


class SessionTooShortError(ValueError):
    """A window is longer than the session it should be cut from."""


def session_path(root: str | os.PathLike[str], session: str) -> Path:
    """Path of a session file: ``root / (session + ".hdf5")`` (the split's user is not used)."""
    return Path(root) / f"{session}.hdf5"


class EMGSessionData:
    """Read-only view of one session file (docs/format.md#session-files).

    Opens the file on construction; use as a context manager or call :meth:`close`.
    ``len`` is T; ``session[a:b]`` returns the structured rows (fields ``emg_left`` (16,),
    ``emg_right`` (16,), ``time``); ``session["time"]`` one whole field.
    """

    HDF5_GROUP = "emg2qwerty"
    TIMESERIES = "timeseries"
    EMG_LEFT = "emg_left"
    EMG_RIGHT = "emg_right"
    TIMESTAMPS = "time"
    SESSION_NAME = "session_name"
    USER = "user"
    CONDITION = "condition"
    DURATION_MINS = "duration_mins"
    KEYSTROKES = "keystrokes"
    PROMPTS = "prompts"

    def __init__(self, hdf5_path: str | os.PathLike[str]) -> None:
        self.hdf5_path = Path(hdf5_path)
        if not self.hdf5_path.is_file():
            raise FileNotFoundError(f"{self.hdf5_path}: session file does not exist")
        try:
            self._file = h5py.File(self.hdf5_path, "r")
        except OSError as e:
            raise SessionFormatError(f"{self.hdf5_path}: not a readable HDF5 file ({e})") from e
        try:
            self._load_header()
        except Exception:
            self._file.close()
            raise
        self._timestamps: np.ndarray | None = None
        self._key_index: tuple[np.ndarray, list[str], np.ndarray] | None = None

    def _load_header(self) -> None:
        path = self.hdf5_path
        group = self._file.get(self.HDF5_GROUP)
        if not isinstance(group, h5py.Group):
            raise SessionFormatError(f"{path}: missing group '/{self.HDF5_GROUP}'")
        ts = group.get(self.TIMESERIES)
        if not isinstance(ts, h5py.Dataset):
            raise SessionFormatError(
                f"{path}: missing dataset '/{self.HDF5_GROUP}/{self.TIMESERIES}'"
            )
        fields = ts.dtype.fields
        if fields is None:
            raise SessionFormatError(
                f"{path}: '/{self.HDF5_GROUP}/{self.TIMESERIES}' has dtype {ts.dtype}, "
                "expected a compound dtype with fields emg_left, emg_right, time"
            )
        for name in (self.EMG_LEFT, self.EMG_RIGHT, self.TIMESTAMPS):
            if name not in fields:
                raise SessionFormatError(
                    f"{path}: timeseries has no field '{name}' (fields: {list(fields)})"
                )
        self.timeseries: h5py.Dataset = ts
        self.metadata: dict[str, Any] = {}
        for key, val in group.attrs.items():
            if key in (self.KEYSTROKES, self.PROMPTS):
                try:
                    val = json.loads(val)
                except (TypeError, ValueError) as e:
                    raise SessionFormatError(
                        f"{path}: attribute '{key}' is not valid JSON ({e})"
                    ) from e
            self.metadata[key] = val

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EMGSessionData:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ rows
    def __len__(self) -> int:
        return len(self.timeseries)

    def __getitem__(self, key: slice | str) -> np.ndarray:
        return self.timeseries[key]

    def slice(self, start_t: float = -np.inf, end_t: float = np.inf) -> np.ndarray:
        """Rows [i(start_t), i(end_t)) with i = left-sided binary search on ``time``."""
        start, end = self.timestamps.searchsorted([start_t, end_t])
        return self[int(start) : int(end)]

    @property
    def fields(self) -> list[str]:
        return list(self.timeseries.dtype.fields or ())

    @property
    def timestamps(self) -> np.ndarray:
        """(T,) float64 unix seconds; read once, then cached. Must be non-decreasing."""
        if self._timestamps is None:
            ts = self.timeseries[self.TIMESTAMPS]
            if len(ts) > 1 and not (np.diff(ts) >= 0).all():
                raise SessionFormatError(f"{self.hdf5_path}: 'time' is not non-decreasing")
            self._timestamps = ts
        return self._timestamps

    # ------------------------------------------------------------------ metadata
    def _attr(self, key: str) -> Any:
        try:
            return self.metadata[key]
        except KeyError:
            raise SessionFormatError(
                f"{self.hdf5_path}: group '/{self.HDF5_GROUP}' has no attribute '{key}'"
            ) from None

    @property
    def session_name(self) -> str:
        return self._attr(self.SESSION_NAME)

    @property
    def user(self) -> Any:
        return self._attr(self.USER)

    @property
    def condition(self) -> str:
        return self._attr(self.CONDITION)

    @property
    def duration_mins(self) -> float:
        return self._attr(self.DURATION_MINS)

    @property
    def keystrokes(self) -> list[dict[str, Any]]:
        return self._attr(self.KEYSTROKES)

    @property
    def prompts(self) -> list[dict[str, Any]]:
        return self._attr(self.PROMPTS)

    # ------------------------------------------------------------------ labels
    def ground_truth(self, start_t: float = -np.inf, end_t: float = np.inf) -> LabelData:
        """Keystroke labels in [start_t, end_t] when ``condition == "on_keyboard"``, else
        prompt labels."""
        if self.condition != "on_keyboard":
            return LabelData.from_prompts(self.prompts, start_t=start_t, end_t=end_t)
        starts, chars, kept = self._keystroke_index()
        # Same result as LabelData.from_keystrokes: the walk stops at the first start > end_t
        # and keeps starts >= start_t, done with array ops because a real session has
        # thousands of keys and this runs once per window.
        past = np.flatnonzero(starts > end_t)
        stop = int(past[0]) if len(past) else len(starts)
        idx = np.flatnonzero(kept[:stop] & (starts[:stop] >= start_t))
        return LabelData("".join(chars[i] for i in idx), starts[idx])

    def _keystroke_index(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Per keystroke: start time, its charset character ("" if dropped), kept mask."""
        if self._key_index is None:
            cs = charset()
            keys = self.keystrokes
            try:
                starts = np.array([k["start"] for k in keys], dtype=np.float64)
                names = [k["key"] for k in keys]
            except (KeyError, TypeError, ValueError) as e:
                raise SessionFormatError(f"{self.hdf5_path}: malformed keystroke ({e!r})") from e
            chars = []
            for name in names:
                norm = cs.normalize_keys([name]) if isinstance(name, str) else []
                chars.append(cs.key_to_char(norm[0]) if norm else "")
            kept = np.array([c != "" for c in chars], dtype=bool)
            self._key_index = (starts, chars, kept)
        return self._key_index

    def __str__(self) -> str:
        return f"{type(self).__name__} {self.metadata.get(self.SESSION_NAME)} ({len(self)} samples)"


# Open sessions of this process, shared by all datasets (a session appears in several: 4 s and
# 32 s training windows, validation). Bounded so that a split of ~1000 sessions does not hold
# ~1000 HDF5 handles per DataLoader worker.
_MAX_OPEN_SESSIONS = 128
_open_sessions: OrderedDict[Path, EMGSessionData] = OrderedDict()
_open_sessions_pid: int | None = None


def get_open_session(path: Path) -> EMGSessionData:
    """The open :class:`EMGSessionData` of ``path`` in this process (opened on first use)."""
    global _open_sessions, _open_sessions_pid
    if _open_sessions_pid != os.getpid():
        # A forked DataLoader worker must not use the parent's HDF5 handles.
        _open_sessions = OrderedDict()
        _open_sessions_pid = os.getpid()
    session = _open_sessions.get(path)
    if session is None:
        session = EMGSessionData(path)
        _open_sessions[path] = session
        while len(_open_sessions) > _MAX_OPEN_SESSIONS:
            _open_sessions.popitem(last=False)[1].close()
    else:
        _open_sessions.move_to_end(path)
    return session
