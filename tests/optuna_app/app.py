"""A stand-in Hydra app for the Optuna sweeper tests (milliseconds per trial).

``kind`` picks the trial's fate: ok (returns a result dict), fail (raises), nonfinite (non-finite
objective), prune (reports a bad intermediate value through the trial from the environment;
the sweep's pruner prunes it).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import hydra
import optuna
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hydra_plugins.emg2qwerty_optuna_sweeper import trial_from_env


def cost(cfg: DictConfig) -> float:
    """The stand-in 'MAC/s' of a composed config (the budget function)."""
    return 10.0 ** (cfg.x + 1)


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg: DictConfig) -> dict:
    out = Path(HydraConfig.get().runtime.output_dir)
    (out / "ran.txt").write_text("ran")  # proves the trial was launched
    time.sleep(cfg.sleep)  # lets two workers overlap
    if cfg.kind == "fail":
        raise RuntimeError("boom: this trial fails on purpose")
    if cfg.kind == "prune":
        trial = trial_from_env()
        assert trial is not None, "no trial in the environment"
        for step in range(3):
            trial.report(100.0 + step, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")
    loss = math.nan if cfg.kind == "nonfinite" else 3.0 - cfg.x + cfg.y
    return {
        "metrics": {"val/window/greedy": {"CER": loss}},
        "macs_per_second": cost(cfg),
        "params": 7,
    }


if __name__ == "__main__":
    main()
