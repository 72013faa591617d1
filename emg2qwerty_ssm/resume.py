"""Crash-safe training state: atomic checkpoint writes, a frequent ``last.ckpt``, safe resume.

* :class:`AtomicCheckpointIO` is the Trainer's checkpoint plugin: every checkpoint (best, last,
  periodic) is written beside its target, fsynced and renamed (:mod:`emg2qwerty_ssm.atomic_io`)
  with per-tensor checksums, and read back with ``weights_only=True`` + the allow-list and
  verified (:mod:`emg2qwerty_ssm.checkpointing`).
* :class:`LastCheckpoint` rewrites ``last.ckpt`` at the end of every training epoch, whether or
  not the monitored metric improved, and within an epoch every ``every_n_train_steps`` steps
  and every ``every_seconds`` of training, so a ``kill -9`` loses at most that much work.
  (Lightning's ``save_last`` on a monitored ModelCheckpoint only rewrites it on improvement.)
* :class:`TrainingClock` carries a run's wall time across resumes in the checkpoints, so the
  ``wall_time_s`` of a resumed run counts every process that did the work it kept.
* :func:`choose_resume_checkpoint` picks ``last.ckpt``, or, when it is corrupt, the newest
  valid checkpoint of the run, warning with both names.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from emg2qwerty_ssm.atomic_io import atomic_save
from emg2qwerty_ssm.checkpointing import (
    CheckpointError,
    add_integrity,
    safe_load,
    verify_checkpoint,
)

log = logging.getLogger(__name__)

LAST_NAME = "last.ckpt"
#: default cap on the training time a kill can lose within an epoch (issue: ~5 minutes)
DEFAULT_EVERY_SECONDS = 300.0


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O: atomic + fsynced writes with checksums, safe verified reads."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        add_integrity(checkpoint)
        atomic_save(lambda handle: torch.save(checkpoint, handle), path)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        # weights_only is always True here, whatever the caller or the environment asks.
        checkpoint = safe_load(path, map_location="cpu" if map_location is None else map_location)
        if not isinstance(checkpoint, dict):
            raise CheckpointError(f"{path}: expected a dict, got {type(checkpoint).__name__}")
        verify_checkpoint(checkpoint, path)
        return checkpoint


class LastCheckpoint(Callback):
    """Rewrite ``<dirpath>/last.ckpt`` at every epoch end and periodically within epochs.

    ``every_n_train_steps`` (optimizer steps) and ``every_seconds`` (wall time since the last
    save) are each off when None/0. The time test is decided on rank 0 and broadcast so that
    all DDP ranks enter ``trainer.save_checkpoint`` (a collective) together.
    """

    def __init__(
        self,
        dirpath: str | Path,
        every_n_train_steps: int | None = None,
        every_seconds: float | None = DEFAULT_EVERY_SECONDS,
    ) -> None:
        self.path = Path(dirpath) / LAST_NAME
        self.every_n_train_steps = int(every_n_train_steps or 0)
        self.every_seconds = float(every_seconds or 0.0)
        self._saved_step = -1
        self._last_save = time.monotonic()

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._last_save = time.monotonic()
        self._saved_step = trainer.global_step

    def _save(self, trainer: Any) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # full state: resume needs it
        self._saved_step = trainer.global_step
        self._last_save = time.monotonic()

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == self._saved_step:
            return
        due = bool(self.every_n_train_steps and step % self.every_n_train_steps == 0)
        if self.every_seconds:
            late = time.monotonic() - self._last_save >= self.every_seconds
            due = bool(trainer.strategy.broadcast(due or late, src=0))
        if due:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        # After this epoch's validation: the saved state holds its metrics and best paths.
        self._save(trainer)


class TrainingClock(Callback):
    """Wall time of a run so far, saved in every checkpoint and restored on resume.

    ``started`` is the :func:`time.time` at which this process began the run (start-up
    included). A resumed process adds the time of the processes before it, up to the
    checkpoint it resumed from (work lost after that checkpoint is not counted: it was
    redone). Checkpoints written before this callback existed resume with nothing carried.
    """

    def __init__(self, started: float) -> None:
        self.started = started
        self.carried_s = 0.0

    def elapsed_s(self) -> float:
        return self.carried_s + (time.time() - self.started)

    def state_dict(self) -> dict[str, float]:
        return {"elapsed_s": self.elapsed_s()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.carried_s = float(state_dict.get("elapsed_s", 0.0))


def _load_verified(path: Path) -> dict[str, Any]:
    return AtomicCheckpointIO().load_checkpoint(path)


def choose_resume_checkpoint(ckpt_dir: Path) -> Path | None:
    """``last.ckpt`` if it loads and verifies; else the newest valid ``*.ckpt`` (with a warning).

    None when the directory holds no checkpoint. Raises :class:`CheckpointError` when there are
    checkpoints but none is usable (nothing is started over silently).
    """
    last = ckpt_dir / LAST_NAME
    others = sorted(
        (p for p in ckpt_dir.glob("*.ckpt") if p.name != LAST_NAME),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    if not last.is_file() and not others:
        return None
    problem = f"{last} does not exist"
    if last.is_file():
        try:
            _load_verified(last)
            return last
        except CheckpointError as err:
            problem = str(err)
    for candidate in others:
        try:
            _load_verified(candidate)
        except CheckpointError as err:
            log.warning("skipping unusable checkpoint %s: %s", candidate, err)
            continue
        log.warning(
            "cannot resume from %s (%s); resuming from %s, the newest valid checkpoint",
            last,
            problem,
            candidate,
        )
        return candidate
    raise CheckpointError(
        f"cannot resume: {problem}, and no other checkpoint in {ckpt_dir} is valid; "
        "pass resume=false to start over (the files are kept)"
    )


def check_architecture(checkpoint_path: Path, module: torch.nn.Module) -> int:
    """Refuse a resume whose checkpoint weights do not fit the module (names, shapes).

    Returns the checkpoint's global step (the step the resumed run starts at)."""
    checkpoint = _load_verified(checkpoint_path)
    state = checkpoint.get("state_dict") or {}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unknown = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unknown or shapes:
        details = "; ".join(
            [f"missing {missing[:3]}"] * bool(missing)
            + [f"unexpected {unknown[:3]}"] * bool(unknown)
            + shapes[:3]
        )
        raise CheckpointError(
            f"{checkpoint_path} was written by a different architecture than the configured "
            f"model ({details}); resume it with its own model config, or start a new run "
            "(another run_dir, or resume=false)"
        )
    return int(checkpoint.get("global_step", 0))
