"""Common decoder API (emg2qwerty's ``Decoder``), input checks and parallel batch decoding."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from emg2qwerty_ssm.charset import CharacterSet, charset

if TYPE_CHECKING:
    from emg2qwerty_ssm.data import LabelData

__all__ = ["BatchDecoder", "Decoder"]


@runtime_checkable
class BatchDecoder(Protocol):
    """What scoring needs of a decoder (:mod:`emg2qwerty_ssm.scoring`): decode a padded batch.

    Every :class:`Decoder` is one; a decoder written elsewhere only needs this method.
    """

    def decode_batch(self, emissions: np.ndarray, emission_lengths: np.ndarray) -> list[LabelData]:
        """(T, N, num_classes) log-probabilities and (N,) valid frames -> N LabelData."""
        ...


def _to_numpy(array: Any, name: str) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor; decoders work on CPU numpy arrays
        array = array.detach().cpu().numpy()
    try:
        return np.asarray(array)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected an array, got {type(array).__name__}") from err


# Per-process decoder of a batch-decoding pool (built once by the pool's initializer).
_WORKER_DECODER: Decoder | None = None


def _init_worker(cls: type, config: dict) -> None:
    global _WORKER_DECODER
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER_DECODER = cls(**config)


def _decode_one(emissions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Raw arrays back, so that workers never import the data module (and torch).
    assert _WORKER_DECODER is not None
    _WORKER_DECODER.reset()
    return _WORKER_DECODER._decode(emissions, np.arange(len(emissions)))


class Decoder:
    """Base class: ``decode`` (online, stateful until ``reset``) and ``decode_batch``.

    Subclasses implement ``reset``, ``_decode`` (validated emissions -> labels and onsets of
    the best hypothesis so far) and ``_config`` (constructor kwargs, used to rebuild the
    decoder in worker processes and when unpickling).
    """

    def __init__(self, _charset: CharacterSet | None = None, num_workers: int = 0) -> None:
        self._charset = _charset or charset()
        self.num_classes = self._charset.num_classes
        self.blank = self._charset.null_class
        self.num_workers = int(num_workers)
        self._pool: ProcessPoolExecutor | None = None
        self._pool_workers = 0

    # ------------------------------------------------------------------ API
    def reset(self) -> None:
        raise NotImplementedError

    def decode(
        self, emissions: np.ndarray, timestamps: Sequence | np.ndarray, finish: bool = False
    ) -> LabelData:
        """Continue decoding with the next T frames (state persists until ``reset()``).

        Args:
            emissions: (T, 99) natural-log probabilities (numpy or torch), blank = 98.
            timestamps: (T,) time of each frame (any monotonic unit), used as onsets.
            finish: the sequence ends here (the beam decoder adds end-of-sentence LM
                scores; greedy ignores it).

        Returns:
            LabelData of the best hypothesis so far, with one onset per character.
        """
        emissions, timestamps = self._check_inputs(emissions, timestamps)
        labels, onsets = self._decode(emissions, timestamps, finish)
        return self._label_data(labels, onsets, timestamps.dtype)

    def _decode(
        self, emissions: np.ndarray, timestamps: np.ndarray, finish: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _config(self) -> dict:
        raise NotImplementedError

    def decode_batch(
        self,
        emissions: np.ndarray,
        emission_lengths: Sequence[int] | np.ndarray,
        num_workers: int | None = None,
    ) -> list[LabelData]:
        """Decode each batch item independently (fresh state, no ``finish``, as emg2qwerty).

        Args:
            emissions: (T, N, num_classes) log-probabilities, time first (numpy or torch).
            emission_lengths: (N,) valid frames per item; timestamps are frame indices.
            num_workers: processes to decode items in parallel (default: the decoder's
                ``num_workers``; 0 or 1 decodes in this process). Results are identical.

        Returns:
            N LabelData with per-character onset frame indices.
        """
        emissions = _to_numpy(emissions, "decode_batch: emissions")
        lengths = _to_numpy(emission_lengths, "decode_batch: emission_lengths")
        if emissions.ndim != 3 or emissions.shape[2] != self.num_classes:
            raise ValueError(
                f"decode_batch: emissions must have shape (T, N, {self.num_classes}), got "
                f"{tuple(emissions.shape)}"
            )
        t_max, n = emissions.shape[:2]
        if lengths.shape != (n,):
            raise ValueError(
                f"decode_batch: emission_lengths must have shape ({n},), got {lengths.shape}"
            )
        if n and (lengths.min() < 0 or lengths.max() > t_max):
            raise ValueError(
                f"decode_batch: emission_lengths must lie in [0, {t_max}], got {lengths.tolist()}"
            )
        items = [emissions[: int(lengths[i]), i] for i in range(n)]
        workers = self.num_workers if num_workers is None else int(num_workers)
        if workers > 1 and n > 1:
            for item in items:  # check here: a worker's error would be harder to read
                self._check_inputs(item, np.arange(len(item)))
            results = list(self._get_pool(workers).map(_decode_one, items))
            return [self._label_data(lab, ons, np.int64) for lab, ons in results]
        decoded = []
        for item in items:
            self.reset()
            decoded.append(self.decode(item, np.arange(len(item))))
        return decoded

    # ------------------------------------------------------------------ pool
    def _get_pool(self, workers: int) -> ProcessPoolExecutor:
        if self._pool is None or self._pool_workers != workers:
            self.close()
            # spawn, not fork: the parent may hold torch/OpenMP threads that fork can deadlock.
            self._pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(type(self), self._config()),
            )
            self._pool_workers = workers
        return self._pool

    def close(self) -> None:
        """Shut down the batch-decoding worker processes, if any."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._pool_workers = 0

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def __getstate__(self) -> dict:
        # Rebuilt from its settings (the KenLM model and the pool cannot be pickled).
        return {**self._config(), "num_workers": self.num_workers}

    def __setstate__(self, config: dict) -> None:
        self.__init__(**config)  # type: ignore[misc]

    # ------------------------------------------------------------------ helpers
    def _check_inputs(self, emissions: Any, timestamps: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validated (T, num_classes) float64 emissions and (T,) timestamps."""
        emissions = _to_numpy(emissions, "decode: emissions")
        timestamps = _to_numpy(timestamps, "decode: timestamps")
        if emissions.ndim != 2 or emissions.shape[1] != self.num_classes:
            raise ValueError(
                f"decode: emissions must have shape (T, {self.num_classes}) (log-probabilities "
                f"over the charset's {self.num_classes} classes, blank last), got "
                f"{tuple(emissions.shape)}"
            )
        if timestamps.shape != (len(emissions),) or timestamps.dtype.kind not in "iuf":
            raise ValueError(
                f"decode: timestamps must be numbers of shape ({len(emissions)},), got "
                f"{timestamps.dtype} of shape {timestamps.shape}"
            )
        emissions = emissions.astype(np.float64, copy=False)
        bad = np.isnan(emissions) | (emissions == np.inf)
        if bad.any():
            t, c = np.argwhere(bad)[0]
            raise ValueError(
                f"decode: emissions contain {int(bad.sum())} NaN/+inf values (first at frame "
                f"{t}, class {c}: {emissions[t, c]}); expected log-probabilities"
            )
        return emissions, timestamps

    def _label_data(
        self, labels: np.ndarray, times: np.ndarray, time_dtype: np.dtype | type | None = None
    ) -> LabelData:
        """LabelData of the decoded labels; onsets keep the callers' integer dtype (frame
        indices stay integers, as in emg2qwerty) even where a decoder stores them as float."""
        from emg2qwerty_ssm.data import LabelData

        times = np.asarray(times)
        if time_dtype is not None and np.dtype(time_dtype).kind in "iu":
            times = times.astype(time_dtype)
        return LabelData.from_labels(np.asarray(labels).tolist(), times, _charset=self._charset)
