"""How a running job finds its Optuna trial (for pruning from inside training).

The sweeper sets these variables through ``hydra.job.env_set`` for each job, so they reach
the job whatever the launcher (in-process, joblib, submitit) and stay out of the job's own
config (and hence out of its config hash and output directory name).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

ENV_VARS = {
    "storage": "EMG2QWERTY_OPTUNA_STORAGE",
    "study": "EMG2QWERTY_OPTUNA_STUDY",
    "trial": "EMG2QWERTY_OPTUNA_TRIAL",
    "pruner": "EMG2QWERTY_OPTUNA_PRUNER",
}

#: user attribute a job sets on its trial when it decides to prune (value: the step)
PRUNED_ATTR = "pruned_at_epoch"


def trial_from_env() -> optuna.trial.Trial | None:
    """The trial this process runs, or None outside an Optuna sweep.

    The study is loaded with the sweep's pruner so that ``trial.should_prune()`` applies it.
    """
    names = {k: os.environ.get(v) for k, v in ENV_VARS.items()}
    if not (names["storage"] and names["study"] and names["trial"]):
        return None
    import optuna
    from hydra.utils import instantiate

    pruner = instantiate(json.loads(names["pruner"])) if names["pruner"] else None
    study = optuna.load_study(study_name=names["study"], storage=names["storage"], pruner=pruner)
    storage = study._storage  # the storage API itself is public (BaseStorage)
    study_id = storage.get_study_id_from_name(names["study"])
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(names["trial"]))
    return optuna.trial.Trial(study, trial_id)
