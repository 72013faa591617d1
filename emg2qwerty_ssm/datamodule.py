"""Windows, batches and the paper's curriculum for training and evaluation (docs/recipe.md).

Loaders (all batches are :func:`~emg2qwerty_ssm.data.collate.collate_windows` dicts, inputs
``(T, N, ...)``; the windows come from the dataset's session format, default emg2qwerty's HDF5):

- train: ``window_length`` windows with ``padding`` context, jitter, shuffled; on curriculum
  epochs (``(epoch + 1) % every == 0``) windows ``factor`` times longer with a smaller batch.
  Lightning re-asks for the train loader every epoch, so the switch happens in the same epoch
  and survives resuming (it depends only on ``trainer.current_epoch``).
- val: ``val`` (4 s windows, ``val/CER``) and ``val_continuous`` (80 s chunks, the paper's test
  protocol on the val split, ``val_continuous/CER``).
- evaluation (:meth:`EMGDataModule.eval_dataloader`), per split and protocol:
  ``paper`` = ``chunk_length`` windows with padding, stride = chunk, no jitter, tail dropped;
  ``session`` = emg2qwerty's whole-session protocol (one window per session, batch 1).
  A session shorter than one chunk is evaluated as a single shorter window (the whole
  session) instead of failing; the count of such sessions is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import lightning.pytorch as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from emg2qwerty_ssm.data.collate import collate_windows
from emg2qwerty_ssm.data.formats import Emg2QwertyHDF5, SessionFormat, session_file
from emg2qwerty_ssm.data.session import SessionTooShortError
from emg2qwerty_ssm.logs import default_num_workers

log = logging.getLogger(__name__)

Transform = Callable[[Any], torch.Tensor]
PROTOCOLS = ("paper", "session")
SPLITS = ("train", "val", "test")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Curriculum:
    """The seed's "train on longer windows" curriculum: epochs e with ``(e + 1) % every == 0``
    train on windows ``factor`` times longer in batches of ``batch_size``; ``every = 0``: off."""

    every: int = 10
    factor: int = 8
    batch_size: int = 4


@dataclass(frozen=True)
class ContinuousValidation:
    """The ``val_continuous`` loader: the paper protocol on the val split (80 s chunks)."""

    window_length: int = 160_000
    batch_size: int = 4


class EMGDataModule(pl.LightningDataModule):
    """Datasets and loaders of one split (``{train, val, test}`` lists of ``{user, session}``).

    Built from ``conf/datamodule/*.yaml`` by ``hydra.utils.instantiate`` with the run's root,
    split and transforms passed in (``emg2qwerty_ssm.train``); the config's keys are these
    arguments.

    Args:
        root: dataset directory; session files are ``root / (session + ".hdf5")``.
        split: the split mapping.
        window_length, padding: training / validation windows (raw samples).
        batch_size, num_workers: training / 4 s validation loaders; ``num_workers=None``: the
            CPU cores available (up to 8) minus one.
        train_transform, val_transform, test_transform: callables on the structured rows.
        train_on_longer: a :class:`Curriculum` (or a mapping of its fields; None or a
            missing ``every``: no curriculum).
        val_continuous: a :class:`ContinuousValidation` (or a mapping of its fields; missing
            ones are the evaluation's ``chunk_length`` and ``eval_batch_size``).
        chunk_length, eval_batch_size: the paper-protocol evaluation loaders.
        session_format: how session files are named and windowed (the dataset config's
            ``format``); default emg2qwerty's HDF5 (:class:`Emg2QwertyHDF5`).
    """

    def __init__(
        self,
        root: str | Path,
        split: Mapping[str, Sequence[Mapping[str, Any]]],
        window_length: int = 8000,
        padding: Sequence[int] = (1800, 200),
        batch_size: int = 32,
        num_workers: int | None = 0,
        train_transform: Transform | None = None,
        val_transform: Transform | None = None,
        test_transform: Transform | None = None,
        train_on_longer: Curriculum | Mapping[str, Any] | None = Curriculum(),
        val_continuous: ContinuousValidation | Mapping[str, Any] | None = None,
        chunk_length: int = 160_000,
        eval_batch_size: int = 4,
        session_format: SessionFormat | None = None,
    ) -> None:
        super().__init__()
        # As in the config: a missing/null curriculum is off; the continuous validation falls
        # back to the evaluation's chunks.
        longer = _as(Curriculum, train_on_longer, "datamodule.train_on_longer", every=0)
        cont = _as(
            ContinuousValidation,
            val_continuous,
            "datamodule.val_continuous",
            window_length=chunk_length,
            batch_size=eval_batch_size,
        )
        self.root = Path(root)
        self.split = {k: list(split.get(k) or []) for k in SPLITS}
        self.window_length = int(window_length)
        self.padding = (int(padding[0]), int(padding[1]))
        self.batch_size = int(batch_size)
        self.num_workers = default_num_workers() if num_workers is None else int(num_workers)
        self.train_transform = train_transform
        self.val_transform = val_transform
        self.test_transform = test_transform
        self.long_every = int(longer.every or 0)
        self.long_factor = int(longer.factor)
        self.long_batch_size = int(longer.batch_size)
        self.val_continuous_window = int(cont.window_length)
        self.val_continuous_batch_size = int(cont.batch_size)
        self.chunk_length = int(chunk_length)
        self.eval_batch_size = int(eval_batch_size)
        self.session_format = session_format if session_format is not None else Emg2QwertyHDF5()
        self._datasets: dict[str, Dataset] = {}

    # ------------------------------------------------------------------ datasets
    def sessions(self, split: str) -> list[Path]:
        """Session files of one split, in split order."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        fmt = self.session_format
        return [session_file(self.root, str(s["session"]), fmt) for s in self.split[split]]

    def _cut(
        self,
        path: Path,
        window: int | None,
        transform: Any,
        *,
        padded: bool = True,
        jitter: bool = False,
        skip_if_too_short: bool = False,
    ) -> Dataset:
        """One session's windows through the dataset's session format."""
        return self.session_format.windows(
            path,
            window_length=window,
            padding=self.padding if padded else (0, 0),
            jitter=jitter,
            transform=transform,
            skip_if_too_short=skip_if_too_short,
        )

    def _windows(self, split: str, window: int, jitter: bool, transform: Any) -> Dataset:
        parts = [
            self._cut(p, window, transform, jitter=jitter, skip_if_too_short=True)
            for p in self.sessions(split)
        ]
        return ConcatDataset(parts) if parts else _Empty()

    def _chunks(self, split: str, transform: Any) -> Dataset:
        """Paper protocol: whole chunks; a session shorter than a chunk becomes one window."""
        parts, short = [], 0
        for p in self.sessions(split):
            try:
                parts.append(self._cut(p, self.chunk_length_for(split), transform))
            except SessionTooShortError:
                short += 1
                parts.append(self._cut(p, None, transform))
        if short:
            log.info(
                "%s: %d of %d sessions are shorter than a %d-sample chunk; each is evaluated as "
                "one window covering the whole session",
                split,
                short,
                len(parts),
                self.chunk_length_for(split),
            )
        return ConcatDataset(parts) if parts else _Empty()

    def _whole_sessions(self, split: str, transform: Any) -> Dataset:
        parts = [self._cut(p, None, transform, padded=False) for p in self.sessions(split)]
        return ConcatDataset(parts) if parts else _Empty()

    def chunk_length_for(self, split: str) -> int:
        return self.val_continuous_window if split == "val" else self.chunk_length

    def dataset(self, name: str) -> Dataset:
        """Build (once) and return a named dataset.

        Names: ``train``, ``train_long``, ``val``, ``val_continuous`` and
        ``<split>/<protocol>`` for evaluation (``test/paper``, ``val/session``, ...).
        """
        if name not in self._datasets:
            self._datasets[name] = self._build(name)
        return self._datasets[name]

    def _build(self, name: str) -> Dataset:
        if name == "train":
            ds = self._windows("train", self.window_length, True, self.train_transform)
            if len(ds) == 0:  # type: ignore[arg-type]
                raise ValueError(
                    f"no training windows: every train session under {self.root} is shorter "
                    f"than datamodule.window_length={self.window_length} samples"
                )
            return ds
        if name == "train_long":
            long = self.window_length * self.long_factor
            ds = self._windows("train", long, True, self.train_transform)
            if len(ds) == 0:  # type: ignore[arg-type]
                log.warning(
                    "no train session is %d samples long; curriculum epochs use the normal windows",
                    long,
                )
                return self.dataset("train")
            return ds
        if name == "val":
            return self._windows("val", self.window_length, False, self.val_transform)
        if name == "val_continuous":
            return self._chunks("val", self.val_transform)
        split, _, protocol = name.partition("/")
        if split in SPLITS and protocol in PROTOCOLS:
            transform = self.test_transform if split == "test" else self.val_transform
            if protocol == "paper":
                return self._chunks(split, transform)
            return self._whole_sessions(split, transform)
        raise ValueError(f"unknown dataset {name!r}")

    # ------------------------------------------------------------------ curriculum
    def uses_long_windows(self, epoch: int) -> bool:
        """Whether ``epoch`` (0-based) is a curriculum epoch (docs/recipe.md#curriculum: 9, 19, 29,
        ...)."""
        return self.long_every > 0 and (epoch + 1) % self.long_every == 0

    def _current_epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.current_epoch) if trainer is not None else 0

    # ------------------------------------------------------------------ loaders
    def _loader(self, ds: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_windows,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
        )

    def train_dataloader(self) -> DataLoader:
        if self.uses_long_windows(self._current_epoch()):
            return self._loader(self.dataset("train_long"), self.long_batch_size, shuffle=True)
        return self._loader(self.dataset("train"), self.batch_size, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [
            self._loader(self.dataset("val"), self.batch_size, shuffle=False),
            self._loader(
                self.dataset("val_continuous"), self.val_continuous_batch_size, shuffle=False
            ),
        ]

    def eval_dataloader(self, split: str, protocol: str) -> DataLoader:
        """Final-evaluation loader for ``split`` under ``protocol`` ("paper" | "session")."""
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown evaluation protocol {protocol!r}; expected {PROTOCOLS}")
        batch = self.eval_batch_size if protocol == "paper" else 1
        return self._loader(self.dataset(f"{split}/{protocol}"), batch, shuffle=False)

    def test_dataloader(self) -> list[DataLoader]:
        return [self.eval_dataloader("test", p) for p in PROTOCOLS]


def _as(kind: type[_T], value: Any, where: str, **missing: Any) -> _T:
    """``value`` as the dataclass ``kind``: a mapping gives its non-null fields, ``missing``
    the fields it (or a None value) leaves out."""
    if isinstance(value, kind):
        return value
    value = {} if value is None else value
    if not isinstance(value, Mapping):
        raise TypeError(f"{where} must be a mapping, got {value!r}")
    known = {f.name for f in fields(kind)}  # type: ignore[arg-type]
    unknown = sorted(set(map(str, value)) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(known)}")
    given = {str(k): v for k, v in value.items() if v is not None}
    return kind(**{**missing, **given})


class _Empty(Dataset):
    """A split with no sessions (e.g. an empty val list): a loader over nothing."""

    def __len__(self) -> int:
        return 0

    def __getitem__(self, idx: int) -> Any:
        raise IndexError(idx)
