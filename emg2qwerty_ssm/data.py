"""The emg2qwerty data layer: session reader, labels and windowed dataset
(docs/format.md#session-files).

Public names and call signatures are emg2qwerty's, so scripts written for emg2qwerty keep
working. Shapes: T = samples (2 kHz), N = batch, S = label sequence length.

File layout (one file per session, ``<root>/<session>.hdf5``)::

    /emg2qwerty                      group; attributes session_name, user, condition,
                                     duration_mins, keystrokes (JSON), prompts (JSON), ...
    /emg2qwerty/timeseries           1-D compound dataset of length T with fields
                                     emg_left (16,) float32, emg_right (16,) float32,
                                     time float64 (unix seconds)

Differences from emg2qwerty, all on purpose (see docs/data.md):

- A window longer than the session raises :class:`SessionTooShortError` when the dataset is
  built (emg2qwerty claims one window and raises ``IndexError`` when it is read), or, with
  ``skip_if_too_short=True``, gives 0 windows and a logged warning.
- Structural problems in a file (missing group/dataset/field/attribute, bad JSON) raise
  :class:`SessionFormatError` naming the file, instead of a bare KeyError/AssertionError.
- Keystroke timestamps that go backwards log a warning (as the paper's code does) instead of
  failing an assertion.
- ``EMGSessionData.ground_truth`` computes keystroke labels with a vectorised search instead
  of a Python walk over every keystroke; the result is identical (tested against
  :meth:`LabelData.from_keystrokes`).
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from emg2qwerty_ssm.charset import CharacterSet, charset
from emg2qwerty_ssm.transforms import ToTensor

__all__ = [
    "METADATA_COLUMNS",
    "EMGSessionData",
    "LabelData",
    "SessionFormatError",
    "SessionTooShortError",
    "WindowedEMGDataset",
    "dataset_stats",
    "load_split",
    "read_metadata",
    "scan_sessions",
    "session_path",
]

log = logging.getLogger(__name__)

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


class SessionFormatError(ValueError):
    """A session file lacks something the reader needs; the message names file and item."""


class SessionTooShortError(ValueError):
    """A window is longer than the session it should be cut from."""


def session_path(root: str | os.PathLike[str], session: str) -> Path:
    """Path of a session file: ``root / (session + ".hdf5")`` (the split's user is not used)."""
    return Path(root) / f"{session}.hdf5"


# --------------------------------------------------------------------------------- labels
class LabelData:
    """Text in charset characters plus, optionally, one timestamp per character.

    ``labels`` is the (S,) int32 array of class indices. Two LabelData are equal when their
    texts are equal; ``+`` concatenates texts and timestamps (timestamps are kept only when
    both sides have them).
    """

    def __init__(
        self,
        text: str,
        timestamps: Sequence[float] | np.ndarray | None = None,
        _charset: CharacterSet | None = None,
        *,
        _timestamps: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        if _timestamps is not None:  # emg2qwerty's keyword name for the same argument
            timestamps = _timestamps
        self.text = text
        self._charset = _charset or charset()
        self.timestamps = None
        if timestamps is not None:
            ts = np.asarray(timestamps)  # integer frame indices stay integers, as in emg2qwerty
            if ts.dtype.kind not in "iuf":
                ts = ts.astype(np.float64)
            if ts.ndim != 1 or len(ts) != len(text):
                raise ValueError(
                    f"LabelData: {len(text)} characters but timestamps of shape {ts.shape}"
                )
            if len(ts) > 1 and not (np.diff(ts) >= 0).all():
                # emg2qwerty asserts here; the paper's code only warns, and so do we.
                log.warning("LabelData: character timestamps are not monotonic (text %r)", text)
            self.timestamps = ts

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_keystrokes(
        cls,
        keystrokes: Sequence[Mapping[str, Any]],
        start_t: float = -np.inf,
        end_t: float = np.inf,
        _charset: CharacterSet | None = None,
    ) -> LabelData:
        """Keys pressed in [start_t, end_t], walking the list in order.

        The walk stops at the first key with ``start > end_t``; keys outside the charset
        (ctrl, tab, right shift, ...) are dropped. Each character's timestamp is its key's
        ``start``.
        """
        cs = _charset or charset()
        text: list[str] = []
        stamps: list[float] = []
        for key in keystrokes:
            if key["start"] > end_t:
                break
            if key["start"] >= start_t:
                normalized = cs.normalize_keys([key["key"]])
                if normalized:
                    text.append(cs.key_to_char(normalized[0]))
                    stamps.append(key["start"])
        return cls("".join(text), stamps, cs)

    @classmethod
    def from_key(
        cls,
        key: str | Mapping[str, Any],
        timestamp: float | None = None,
        _charset: CharacterSet | None = None,
    ) -> LabelData:
        """One keylogger key (a name or a keystroke dict) -> 0 or 1 characters."""
        cs = _charset or charset()
        if isinstance(key, str):
            name = key
        else:
            name = key["key"]
            timestamp = key["start"] if timestamp is None else timestamp
        normalized = cs.normalize_keys([name])
        stamps = None if timestamp is None else ([timestamp] if normalized else [])
        text = cs.key_to_char(normalized[0]) if normalized else ""
        return cls(text, stamps, cs)

    @classmethod
    def from_prompts(
        cls,
        prompts: Sequence[Mapping[str, Any]],
        enforce_newline: bool = True,
        start_t: float = -np.inf,
        end_t: float = np.inf,
        _charset: CharacterSet | None = None,
    ) -> LabelData:
        """Texts of the prompts starting in [start_t, end_t] (walk stops at start > end_t)."""
        cs = _charset or charset()
        out = cls("", None, cs)
        for prompt in prompts:
            if prompt["start"] > end_t:
                break
            if prompt["start"] >= start_t:
                out += cls.from_prompt(prompt, enforce_newline=enforce_newline, _charset=cs)
        return out

    @classmethod
    def from_prompt(
        cls,
        prompt: str | Mapping[str, Any],
        enforce_newline: bool = True,
        _charset: CharacterSet | None = None,
    ) -> LabelData:
        """One prompt (text or prompt dict) -> cleaned text ending with ⏎; null payload -> ""."""
        cs = _charset or charset()
        if isinstance(prompt, str):
            text: str | None = prompt
        else:
            payload = prompt.get("payload")
            text = payload.get("text") if payload is not None else None
        if text is None:
            return cls("", None, cs)
        text = cs.clean_str(text)
        if enforce_newline and not text.endswith("⏎"):
            text += "⏎"
        return cls(text, None, cs)

    @classmethod
    def from_str(
        cls,
        text: str,
        timestamps: Sequence[float] | None = None,
        _charset: CharacterSet | None = None,
    ) -> LabelData:
        """Free text -> LabelData after ``clean_str`` (``\\n`` becomes ⏎, unknowns dropped)."""
        cs = _charset or charset()
        return cls(cs.clean_str(text), timestamps, cs)

    @classmethod
    def from_labels(
        cls,
        labels: Iterable[int],
        timestamps: Sequence[float] | None = None,
        _charset: CharacterSet | None = None,
    ) -> LabelData:
        """Class indices (S,) -> LabelData."""
        cs = _charset or charset()
        return cls(cs.labels_to_str(labels), timestamps, cs)

    # ------------------------------------------------------------------ views
    @property
    def labels(self) -> np.ndarray:
        """(S,) int32 class indices of ``text``."""
        return np.asarray(self._charset.str_to_labels(self.text), dtype=np.int32)

    def __len__(self) -> int:
        return len(self.text)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelData):
            return NotImplemented
        return self.text == other.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __add__(self, other: LabelData) -> LabelData:
        timestamps = None
        if self.timestamps is not None and other.timestamps is not None:
            timestamps = np.append(self.timestamps, other.timestamps)
        return LabelData(self.text + other.text, timestamps, self._charset)

    def __str__(self) -> str:
        return self.text.replace("⏎", "\n")

    def __repr__(self) -> str:
        stamps = "None" if self.timestamps is None else f"<{len(self.timestamps)} stamps>"
        return f"LabelData(text={self.text!r}, timestamps={stamps})"


# --------------------------------------------------------------------------- sessions
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


def _get_open_session(path: Path) -> EMGSessionData:
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


# ---------------------------------------------------------------------------- windows
class WindowedEMGDataset(torch.utils.data.Dataset):
    """Fixed-length windows of one session with their keystroke labels (docs/format.md#windows).

    Args:
        hdf5_path: session file.
        window_length: W samples per window; None = the whole session.
        stride: S samples between window starts; None = W.
        padding: (left, right) samples of context added around each window (cut off at the
            session's ends); labels come from the unpadded window only.
        jitter: shift each window's start by U{0..min(S, leftover)-1} samples (numpy RNG).
        transform: applied to the structured rows; default :class:`ToTensor` -> (T, 2, 16).
        skip_if_too_short: if W > T, give 0 windows and log a warning instead of raising
            :class:`SessionTooShortError`.

    Item i -> (emg (T_i, 2, 16) float32 for the default transform, labels (S_i,) int32).
    The file is opened lazily in the process that reads (so DataLoader workers each get their
    own handle) and kept in a small per-process cache of open sessions.
    """

    def __init__(
        self,
        hdf5_path: str | os.PathLike[str],
        window_length: int | None = None,
        stride: int | None = None,
        padding: Sequence[int] = (0, 0),
        jitter: bool = False,
        transform: Any = None,
        skip_if_too_short: bool = False,
    ) -> None:
        self.hdf5_path = Path(hdf5_path)
        with EMGSessionData(self.hdf5_path) as session:
            if session.condition != "on_keyboard":
                raise SessionFormatError(
                    f"{self.hdf5_path}: condition is {session.condition!r}; windowed datasets "
                    "need keystroke ground truth (condition 'on_keyboard')"
                )
            self.session_length = len(session)

        self.window_length = (
            int(window_length) if window_length is not None else self.session_length
        )
        self.stride = int(stride) if stride is not None else self.window_length
        pad = tuple(int(p) for p in padding)
        if len(pad) != 2 or min(pad) < 0:
            raise ValueError(f"padding must be two non-negative ints (left, right), got {padding}")
        if self.window_length <= 0 or self.stride <= 0:
            raise ValueError(
                f"window_length and stride must be positive, "
                f"got {self.window_length} and {self.stride}"
            )
        self.left_padding, self.right_padding = pad
        self.jitter = bool(jitter)
        self.transform = transform if transform is not None else ToTensor()

        self.num_windows = (self.session_length - self.window_length) // self.stride + 1
        if self.window_length > self.session_length:
            message = (
                f"{self.hdf5_path}: session is shorter than the window "
                f"({self.session_length} samples < window_length {self.window_length})"
            )
            if not skip_if_too_short:
                raise SessionTooShortError(message)
            log.warning("%s; skipping the session (0 windows)", message)
            self.num_windows = 0

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self.num_windows <= idx < self.num_windows:
            raise IndexError(f"window {idx} out of range for {self.num_windows} windows")
        idx %= self.num_windows
        session = _get_open_session(self.hdf5_path)

        offset = idx * self.stride
        leftover = self.session_length - (offset + self.window_length)
        if self.jitter and leftover > 0:
            offset += int(np.random.randint(0, min(self.stride, leftover)))

        window_start = max(offset - self.left_padding, 0)
        window_end = offset + self.window_length + self.right_padding
        rows = session[window_start:window_end]

        # Label span from the unpadded window; its times are inside the rows just read.
        times = rows[EMGSessionData.TIMESTAMPS]
        start_t = times[offset - window_start]
        end_t = times[offset + self.window_length - 1 - window_start]
        labels = session.ground_truth(start_t, end_t).labels

        return self.transform(rows), torch.as_tensor(labels)

    @staticmethod
    def collate(samples: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Zero-pads a list of (emg (T_i, ...), labels (S_i,)) into a time-first batch.

        Returns inputs (T_max, N, ...), targets (S_max, N), input_lengths (N,) int32,
        target_lengths (N,) int32.
        """
        inputs = [s[0] for s in samples]
        targets = [s[1] for s in samples]
        return {
            "inputs": torch.nn.utils.rnn.pad_sequence(inputs),
            "targets": torch.nn.utils.rnn.pad_sequence(targets),
            "input_lengths": torch.as_tensor([len(x) for x in inputs], dtype=torch.int32),
            "target_lengths": torch.as_tensor([len(y) for y in targets], dtype=torch.int32),
        }


# ----------------------------------------------------------------------- splits, metadata
def load_split(path: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
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
    from emg2qwerty_ssm.validation import DatasetError, unknown_key_problems

    problems = unknown_key_problems(data, ("train", "val", "test"), str(path))
    if problems:  # a misspelt `tain:` would leave the train split silently empty
        raise DatasetError(problems)
    return {k: list(data.get(k) or []) for k in ("train", "val", "test") if k in data}


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
