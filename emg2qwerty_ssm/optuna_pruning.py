"""Prune Optuna trials from inside training (the ``hydra/sweeper=optuna`` plugin's hook).

The sweeper tells each job which trial it runs through environment variables
(:data:`hydra_plugins.emg2qwerty_optuna_sweeper.ENV_VARS`); this Lightning callback reports the
monitored validation metric (val/CER) to that trial after every validation epoch and stops the
run with :class:`optuna.TrialPruned` when the study's pruner says so. Outside an Optuna sweep it
does nothing, so configs may always include it::

    callbacks:
      optuna_pruning:
        _target_: emg2qwerty_ssm.optuna_pruning.OptunaPruningCallback
        monitor: ${monitor_metric}

The decision is also stored on the trial (user attribute ``pruned_at_epoch``), so the sweeper
records the trial as pruned even when the training entry point turns the exception into a
failed-job result. Multi-objective studies cannot prune in Optuna; there it is a no-op.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from lightning.pytorch.callbacks import Callback

from hydra_plugins.emg2qwerty_optuna_sweeper import ENV_VARS, PRUNED_ATTR, trial_from_env

log = logging.getLogger(__name__)


class OptunaPruningCallback(Callback):
    """Report ``monitor`` to the Optuna trial after each validation; prune when told."""

    def __init__(self, monitor: str = "val/CER", trial: Any = None) -> None:
        super().__init__()
        self.monitor = monitor
        self._trial = trial
        self._looked_up = trial is not None
        self._warned = False

    @staticmethod
    def active() -> bool:
        """Whether this process runs an Optuna trial (same answer on every DDP rank)."""
        return bool(os.environ.get(ENV_VARS["trial"]))

    def _get_trial(self) -> Any:
        if not self._looked_up:
            self._trial, self._looked_up = trial_from_env(), True
        return self._trial

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or not (self._trial is not None or self.active()):
            return
        prune, message = False, ""
        if trainer.is_global_zero:
            prune, message = self._report(trainer)
        # every rank must leave fit() together under DDP
        if trainer.strategy.broadcast(prune, src=0):
            import optuna

            raise optuna.TrialPruned(message or f"pruned at epoch {trainer.current_epoch}")

    def _report(self, trainer: Any) -> tuple[bool, str]:
        trial = self._get_trial()
        if trial is None or len(trial.study.directions) > 1:
            return False, ""
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            if not self._warned:
                log.warning(f"OptunaPruningCallback: no {self.monitor!r} logged; not reporting")
                self._warned = True
            return False, ""
        epoch, value = int(trainer.current_epoch), float(value)
        # a non-finite metric is reported as +inf: the pruner treats it as the worst value
        trial.report(value if math.isfinite(value) else math.inf, step=epoch)
        if not trial.should_prune():
            return False, ""
        trial.set_user_attr(PRUNED_ATTR, epoch)
        return True, f"trial {trial.number} pruned at epoch {epoch}: {self.monitor}={value:.4g}"
