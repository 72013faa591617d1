"""The Hydra entry point of the sweeper; the work happens in ``_impl`` (imports Optuna lazily,
because Hydra imports every plugin module on start-up)."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    def __init__(self, **kwargs: Any) -> None:
        from hydra_plugins.emg2qwerty_optuna_sweeper._impl import OptunaSweeperImpl

        self.sweeper = OptunaSweeperImpl(**kwargs)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweeper.sweep(arguments)
