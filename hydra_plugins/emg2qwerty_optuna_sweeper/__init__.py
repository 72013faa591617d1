"""A thin Hydra sweeper on current Optuna (``hydra/sweeper=optuna``).

The published ``hydra-optuna-sweeper`` pins ``optuna<3`` and cannot prune; this plugin keeps
its configuration style (search space in the Hydra override grammar) on Optuna's ask/tell API
and adds a shared, resumable storage, pruning from inside the job, failed-trial recording and
a hard budget computed from each trial's composed config. See docs/compute.md.
"""

from hydra_plugins.emg2qwerty_optuna_sweeper.trial_env import ENV_VARS, PRUNED_ATTR, trial_from_env

__all__ = ["ENV_VARS", "PRUNED_ATTR", "trial_from_env"]
