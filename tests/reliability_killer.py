"""A Lightning callback that SIGKILLs its own process at a point named by an environment
variable (``RELIABILITY_KILL_AT=epoch:batch``), so the killed and the resumed run share one
config. Imported by the training subprocess of tests/test_reliability_resume.py."""

from __future__ import annotations

import os
import signal

import lightning.pytorch as pl


class SelfKill(pl.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        point = os.environ.get("RELIABILITY_KILL_AT")
        if point and (trainer.current_epoch, batch_idx) == tuple(map(int, point.split(":"))):
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no exception hooks: kill -9
