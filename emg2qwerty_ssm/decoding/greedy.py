"""Greedy (best-path) CTC decoding (docs/decoding-rules.md#greedy)."""

from __future__ import annotations

import numpy as np

from emg2qwerty_ssm.charset import CharacterSet
from emg2qwerty_ssm.decoding.base import Decoder

__all__ = ["CTCGreedyDecoder"]


class CTCGreedyDecoder(Decoder):
    """Argmax per frame; emit a label when it is not blank and differs from the previous
    frame's argmax (blanks included, so a label repeated across a blank is emitted twice).
    Each emitted label's timestamp is that of the first frame of its run.
    """

    def __init__(self, num_workers: int = 0, _charset: CharacterSet | None = None) -> None:
        super().__init__(_charset=_charset, num_workers=num_workers)
        self.reset()

    def _config(self) -> dict:
        return {}

    def reset(self) -> None:
        self._prev = self.blank
        self._labels: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
        self._times: list[np.ndarray] = [np.zeros(0)]

    def _decode(
        self, emissions: np.ndarray, timestamps: np.ndarray, finish: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        best = emissions.argmax(axis=1)
        prev = np.concatenate([[self._prev], best[:-1]])
        emit = (best != self.blank) & (best != prev)
        if len(best):
            self._prev = int(best[-1])
        self._labels.append(best[emit])
        self._times.append(np.asarray(timestamps)[emit])
        return np.concatenate(self._labels), np.concatenate(self._times)
