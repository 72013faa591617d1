"""A killed run restarted with the same run dir resumes from its last checkpoint."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from trainer_helpers import cache_dir, compose_cfg

from emg2qwerty_ssm.train import train


class SimulatedKill(RuntimeError):
    pass


class KillAt(pl.Callback):
    """Dies in the middle of epoch ``epoch`` (like a job hitting its time limit)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise SimulatedKill(f"killed at epoch {self.epoch} batch {self.batch}")


class StartRecorder(pl.Callback):
    def __init__(self) -> None:
        self.start = None
        self.epochs: list[int] = []

    def on_train_start(self, trainer, module):
        self.start = (trainer.current_epoch, trainer.global_step)

    def on_train_epoch_end(self, trainer, module):
        self.epochs.append(trainer.current_epoch)


@pytest.mark.slow
def test_killed_run_resumes_from_last_checkpoint(tmp_path, tmp_path_factory) -> None:
    cache = cache_dir(tmp_path_factory)
    overrides = ["debug=smoke", "trainer.max_epochs=3", "evaluation.splits=[test]"]
    steps_per_epoch = 3  # debug=smoke: limit_train_batches

    with pytest.raises(SimulatedKill):
        train(compose_cfg(overrides, tmp_path, cache), callbacks=[KillAt(epoch=1, batch=1)])
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "results.json").exists()

    # the killed process's wall time up to its checkpoint is carried into the resumed run's
    killed_s = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"][
        "TrainingClock"
    ]["elapsed_s"]
    assert killed_s > 0

    recorder = StartRecorder()
    results = train(compose_cfg(overrides, tmp_path, cache), callbacks=[recorder])
    assert results["wall_time_s"] == pytest.approx(
        killed_s + results["wall_time_process_s"], abs=0.01
    )
    # epoch 0 was complete and checkpointed; epoch 1 starts again from its beginning
    assert recorder.start == (1, steps_per_epoch)
    assert recorder.epochs == [1, 2]  # ran on to max_epochs
    assert results["checkpoint"].startswith(str(tmp_path / "checkpoints"))

    # resume=false ignores last.ckpt and starts over
    fresh = StartRecorder()
    train(compose_cfg([*overrides, "resume=false"], tmp_path, cache), callbacks=[fresh])
    assert fresh.start == (0, 0) and fresh.epochs == [0, 1, 2]
