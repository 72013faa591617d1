"""Fixed-length windows of a session with their labels: :class:`WindowedEMGDataset`
(emg2qwerty's class, same signature) and the batch collate (docs/format.md#windows).

Shapes: T = samples (2 kHz), N = batch, S = label sequence length. Difference from emg2qwerty
(docs/data.md): a window longer than the session raises :class:`SessionTooShortError` when the
dataset is built (emg2qwerty claims one window and raises ``IndexError`` when it is read), or,
with ``skip_if_too_short=True``, gives 0 windows and a logged warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emg2qwerty_ssm.data.collate import collate_windows
from emg2qwerty_ssm.data.session import (
    EMGSessionData,
    SessionFormatError,
    SessionTooShortError,
    get_open_session,
)
from emg2qwerty_ssm.transforms import ToTensor

__all__ = ["WindowedEMGDataset"]

log = logging.getLogger(__name__)


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
        session = get_open_session(self.hdf5_path)

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

    #: emg2qwerty's name for the collate function (:func:`collate_windows`)
    collate = staticmethod(collate_windows)
