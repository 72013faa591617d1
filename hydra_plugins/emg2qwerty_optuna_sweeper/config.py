"""Structured config of the sweeper, registered as ``hydra/sweeper: optuna``.

No ``from __future__ import annotations`` here: Hydra executes plugin modules outside
``sys.modules`` while scanning, where dataclasses cannot resolve string annotations.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class BudgetConf:
    """A hard constraint evaluated on each trial's composed job config before it is launched.

    ``fn`` is the dotted path of a callable ``fn(cfg) -> float`` (e.g.
    ``emg2qwerty_ssm.cost.config_macs_per_second``); trials with a value above ``max`` are
    recorded as pruned (user attr ``over_budget``) and never run.
    """

    fn: str = "emg2qwerty_ssm.cost.config_macs_per_second"
    max: float | None = None
    #: the user attribute (and pareto x value) the computed value is stored under
    name: str = "macs_per_second"


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.emg2qwerty_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    #: an Optuna sampler config (``_target_: optuna.samplers.TPESampler``...); None = Optuna's
    #: default for the number of objectives (TPE for one, NSGA-II for several)
    sampler: Any = None
    #: an Optuna pruner config (``_target_: optuna.pruners.MedianPruner``...); None = no pruning
    pruner: Any = None
    #: "minimize"/"maximize", or a list with one entry per objective
    direction: Any = "minimize"
    #: where each objective value comes from: keys into the job's return value (a dict) or, if
    #: the job returns None, into ``<job output dir>/results.json``; dotted for nesting
    #: ("metrics.val/window/greedy.CER"). Empty = the job returns the value(s) itself.
    objectives: list[str] = field(default_factory=list)
    #: extra result keys stored as trial user attributes (for the Pareto plot and tables)
    report_keys: list[str] = field(default_factory=lambda: ["macs_per_second", "params"])
    study_name: str | None = None  #: None = the Hydra job name
    #: any SQLAlchemy URL; None = sqlite:///<hydra.sweep.dir>/optuna.db
    storage: str | None = None
    load_if_exists: bool = True
    #: trials the study should hold (finished or running, over-budget ones not counted): a
    #: resumed or shared study only runs what is missing
    n_trials: int = 20
    n_jobs: int = 1  #: trials launched together per batch (parallel with a parallel launcher)
    #: seconds between heartbeats of running trials (RDB storages); a trial whose worker died
    #: is marked failed after ``grace_period``; None disables
    heartbeat_interval: int | None = 60
    grace_period: int | None = 180
    #: how often a trial whose worker died (stale heartbeat) is re-enqueued with the same
    #: parameters (Optuna's RetryHeartbeatStaleTrialCallback); None = without limit
    max_retry: int | None = 1
    #: when n_trials is reached but other workers' trials still run, wait for them (and retry
    #: those whose worker dies) so that the study ends complete; needs heartbeat_interval
    wait_for_running: bool = True
    budget: BudgetConf = field(default_factory=BudgetConf)
    #: the search space: {key: "interval(0.1, 1)" | "tag(log, interval(1e-4, 1e-2))" |
    #: "range(1, 8)" | "choice(a, b)" | "a,b,c" | {type: float|int|categorical, low, high,
    #: log, step, choices}}; plain values are fixed overrides
    params: dict[str, Any] | None = None
    #: write the study's tables and Pareto figure into the sweep dir at the end
    write_report: bool = True


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="optuna",
    node=OptunaSweeperConf,
    provider="emg2qwerty_optuna_sweeper",
)
