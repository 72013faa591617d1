"""Optuna ask/tell loop behind the Hydra sweeper (single- and multi-objective).

Optuna does the sampling, pruning decisions, storage and Pareto bookkeeping; this module only
translates between Hydra (search space in override grammar, launching jobs, job return
values) and Optuna's public API. Optuna is imported inside functions: Hydra imports every
plugin module whenever any Hydra app starts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.errors import HydraException
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf

from emg2qwerty_ssm.results import FAILED_FILE, RESULTS_FILE, read_results
from emg2qwerty_ssm.results import lookup as results_lookup
from hydra_plugins.emg2qwerty_optuna_sweeper.report import study_summary
from hydra_plugins.emg2qwerty_optuna_sweeper.search_space import SearchSpace, override_str
from hydra_plugins.emg2qwerty_optuna_sweeper.storage import (
    NOT_RUN_ATTR,
    Heartbeats,
    absolute_sqlite,
    in_study,
    make_storage,
    redacted,
)
from hydra_plugins.emg2qwerty_optuna_sweeper.trial_env import ENV_VARS, PRUNED_ATTR

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

#: give up asking when this many trials in a row exceed the budget (the space is infeasible)
MAX_OVER_BUDGET_STREAK = 200

# The objective keys are results.json's one key grammar (emg2qwerty_ssm.results.lookup): the
# trainer's optimized_metric, these objectives and the Pareto tool's --metric read alike.
lookup = results_lookup


def job_output_dir(ret: JobReturn) -> Path | None:
    hydra_cfg = ret.hydra_cfg
    out = OmegaConf.select(hydra_cfg, "hydra.runtime.output_dir") if hydra_cfg else None
    return Path(out) if out else (Path(ret.working_dir) if ret.working_dir else None)


def objective_values(
    value: Any, objectives: Sequence[str], n_objectives: int, output_dir: Path | None
) -> tuple[list[float], Mapping[str, Any]]:
    """The objective values of one job and the result mapping they came from (may be {})."""
    result: Mapping[str, Any] = {}
    if value is None and output_dir is not None and (output_dir / RESULTS_FILE).is_file():
        result = read_results(output_dir, required=())  # the one results.json reader
    elif isinstance(value, Mapping | DictConfig):
        result = value
    if objectives and result:
        values = [float(lookup(result, key)) for key in objectives]
    elif isinstance(value, int | float):  # the job computed its objective itself
        values = [float(value)]
    elif isinstance(value, Sequence | ListConfig) and not isinstance(value, str):
        values = [float(v) for v in value]
    elif objectives:
        raise ValueError(
            f"the job returned {type(value).__name__} and wrote no results.json in "
            f"{output_dir}; cannot read objectives {list(objectives)}"
        )
    else:
        raise ValueError(
            f"the job returned {type(value).__name__}; set hydra.sweeper.objectives to the "
            "result keys to optimise"
        )
    if len(values) != n_objectives:
        raise ValueError(f"got {len(values)} objective values for {n_objectives} directions")
    return values, result


# ----------------------------------------------------------------------------- sweeper


def tell(study: optuna.Study, trial: optuna.trial.Trial, *args: Any, **kwargs: Any) -> bool:
    """``study.tell`` that lets the sampler stop the study; True when it asked to stop.

    Grid and brute-force samplers call ``study.stop()`` from ``after_trial`` once the space is
    exhausted; Optuna allows that only inside ``study.optimize`` and otherwise raises before
    the trial's state is stored. Marking the thread as inside the loop (as ``optimize`` does)
    keeps ask/tell usable with those samplers.
    """
    local = getattr(study, "_thread_local", None)
    if local is None or not hasattr(study, "_stop_flag"):  # another Optuna layout: plain tell
        study.tell(trial, *args, **kwargs)
        return False
    previous = getattr(local, "in_optimize_loop", False)
    local.in_optimize_loop, study._stop_flag = True, False
    try:
        study.tell(trial, *args, **kwargs)
    finally:
        local.in_optimize_loop = previous
    return bool(study._stop_flag)


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class OptunaSweeperImpl:
    def __init__(
        self,
        sampler: Any,
        pruner: Any,
        direction: Any,
        objectives: Sequence[str],
        report_keys: Sequence[str],
        study_name: str | None,
        storage: str | None,
        load_if_exists: bool,
        n_trials: int,
        n_jobs: int,
        heartbeat_interval: int | None,
        grace_period: int | None,
        budget: Any,
        params: Mapping[str, Any] | None,
        write_report: bool,
        max_retry: int | None = 1,
        wait_for_running: bool = True,
    ) -> None:
        self.sampler = sampler
        self.pruner = pruner
        directions = [direction] if isinstance(direction, str) else list(direction)
        self.directions = [str(d) for d in directions]
        self.objectives = list(objectives or [])
        self.report_keys = list(report_keys or [])
        self.study_name = study_name
        self.storage_url = storage
        self.load_if_exists = load_if_exists
        self.n_trials = int(n_trials)
        self.n_jobs = max(1, int(n_jobs))
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.budget = budget
        self.params = params
        self.write_report = write_report
        self.max_retry = max_retry
        self.wait_for_running = wait_for_running
        if self.objectives and len(self.objectives) != len(self.directions):
            raise HydraException(
                f"hydra.sweeper: {len(self.objectives)} objectives {self.objectives} but "
                f"{len(self.directions)} directions {self.directions}"
            )

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(config.hydra.sweep.dir)
        # the pruner's config (not the instantiated object) travels to the jobs
        pruner_cfg = OmegaConf.select(config, "hydra.sweeper.pruner")
        self.pruner_json = (
            json.dumps(OmegaConf.to_container(pruner_cfg, resolve=True)) if pruner_cfg else ""
        )
        self.study_name = self.study_name or str(config.hydra.job.name)

    # -- the loop

    def sweep(self, arguments: list[str]) -> Any:
        import optuna
        from optuna.trial import TrialState

        params: Any = (
            OmegaConf.to_container(self.params, resolve=False)
            if isinstance(self.params, DictConfig)
            else self.params
        )
        space = SearchSpace.parse(params, arguments)
        if not space.distributions:
            raise HydraException("hydra.sweeper.params defines no search space")
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        url = absolute_sqlite(self.storage_url or f"sqlite:///{self.sweep_dir.resolve()}/optuna.db")
        self.url = url
        storage = make_storage(url, self.heartbeat_interval, self.grace_period, self.max_retry)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=self.sampler,
            pruner=self.pruner,
            directions=self.directions,  # type: ignore[arg-type]
            load_if_exists=self.load_if_exists,
        )
        log.info(
            f"Optuna study {self.study_name!r} ({', '.join(self.directions)}) in "
            f"{redacted(url)}; search space: {space.distributions}"
        )
        budget_fn = None
        if self.budget is not None and self.budget.get("max") is not None:
            module, _, name = str(self.budget.fn).rpartition(".")
            budget_fn = getattr(import_module(module), name)
        returns: list[Sequence[JobReturn]] = []
        over_budget_streak, launched, waited = 0, 0, False
        self._stop = False
        while not self._stop:
            if self.heartbeat_interval:  # fail (and re-enqueue) trials of dead workers
                with warnings.catch_warnings():  # "experimental" since Optuna 2.9
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)
            trials = in_study(study.get_trials(deepcopy=False))
            waiting = sum(t.state == TrialState.WAITING for t in trials)
            slots = max(0, self.n_trials - len(trials)) + waiting
            if slots <= 0:
                running = [t.number for t in trials if t.state == TrialState.RUNNING]
                if running and self.wait_for_running and self.heartbeat_interval:
                    # other workers' trials: wait for them to finish or to go stale (then
                    # they are retried here), so that the study ends complete
                    if not waited:
                        log.info(f"waiting for trials {running} of other workers to finish")
                    waited = True
                    time.sleep(min(float(self.heartbeat_interval), 10.0))
                    continue
                break
            batch: list[tuple[optuna.trial.Trial, list[str]]] = []
            while len(batch) < min(self.n_jobs, slots) and not self._stop:
                with warnings.catch_warnings():  # we record the heartbeats ourselves
                    warnings.filterwarnings("ignore", message="Heartbeat of storage")
                    trial = study.ask(space.distributions)
                if self._surplus(study, trial):
                    break
                overrides = space.overrides(trial.params)
                if budget_fn is not None:
                    cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
                    value = float(budget_fn(cfg))
                    trial.set_user_attr(self.budget.name, value)
                    if value > float(self.budget.max):
                        trial.set_user_attr("over_budget", True)
                        self._stop |= tell(study, trial, state=TrialState.PRUNED)
                        log.info(
                            f"trial {trial.number} {trial.params}: {self.budget.name}="
                            f"{value:.4g} > {self.budget.max:.4g}, not run"
                        )
                        over_budget_streak += 1
                        if over_budget_streak >= MAX_OVER_BUDGET_STREAK:
                            raise HydraException(
                                f"{MAX_OVER_BUDGET_STREAK} trials in a row exceeded the budget "
                                f"{self.budget.name} <= {self.budget.max}: shrink the space"
                            )
                        continue
                over_budget_streak = 0
                batch.append((trial, overrides + self._job_overrides(url, trial.number)))
            if not batch:
                continue  # the study filled up meanwhile (or every asked trial was over budget)
            ids = [t._trial_id for t, _ in batch]  # heartbeats are keyed by storage trial id
            with Heartbeats(storage, ids, self.heartbeat_interval):
                results = self.launcher.launch(
                    [ov for _, ov in batch], initial_job_idx=batch[0][0].number
                )
            launched += len(batch)
            errors = [
                self._tell(study, trial, ret)
                for (trial, _), ret in zip(batch, results, strict=True)
            ]
            returns.append(results)
            config_error = next((e for e in errors if e), None)
            if config_error:
                raise HydraException(config_error)
        if self.write_report:
            self.report(study)
        log.info(study_summary(study, self.n_trials, self.url, launched))
        return returns

    def _surplus(self, study: optuna.Study, trial: optuna.trial.Trial) -> bool:
        """True (and the trial recorded as pruned, never run) when other workers filled the
        study's n_trials between our count and our ask: trials are ranked by number."""
        from optuna.trial import TrialState

        numbers = [t.number for t in in_study(study.get_trials(deepcopy=False))]
        if trial.number not in numbers or numbers.index(trial.number) < self.n_trials:
            return False
        trial.set_user_attr(NOT_RUN_ATTR, "n_trials already reached by other workers")
        self._stop |= tell(study, trial, state=TrialState.PRUNED)
        log.info(f"trial {trial.number}: the study already holds {self.n_trials} trials; not run")
        return True

    def _job_overrides(self, url: str, number: int) -> list[str]:
        env = {
            ENV_VARS["storage"]: url,
            ENV_VARS["study"]: str(self.study_name),
            ENV_VARS["trial"]: str(number),
            ENV_VARS["pruner"]: self.pruner_json,
        }
        return [f"hydra.sweep.subdir=trial_{number}"] + [
            f"++hydra.job.env_set.{k}={_quoted(v)}" for k, v in env.items()
        ]

    def _tell(self, study: optuna.Study, trial: optuna.trial.Trial, ret: JobReturn) -> str | None:
        """Store the job's outcome on its trial; returns a configuration error, if any (a
        misspelt objective key fails every trial alike: the sweep stops after this batch)."""
        import optuna
        from optuna.trial import TrialState

        state = study._storage.get_trial(trial._trial_id).state
        if state.is_finished():  # failed as stale by another worker while this one ran it
            log.warning(
                f"trial {trial.number} was marked {state.name} by another worker while it ran "
                "here (no heartbeat within hydra.sweeper.grace_period); its result is dropped"
            )
            return None
        out_dir = job_output_dir(ret)
        if out_dir is not None:
            trial.set_user_attr("output_dir", str(out_dir))
        # A pruning decision taken inside the job wins over how the job reported it (a
        # training entry point may turn the TrialPruned exception into a failed result).
        pruned = study._storage.get_trial(trial._trial_id).user_attrs.get(PRUNED_ATTR)
        try:
            if pruned is not None:
                raise optuna.TrialPruned(f"pruned at step {pruned}")
            value = ret.return_value
        except optuna.TrialPruned as e:
            log.info(f"trial {trial.number} pruned: {e}")
            self._stop |= tell(study, trial, state=TrialState.PRUNED)
            return None
        except Exception as e:
            self._fail(study, trial, f"{type(e).__name__}: {e}")
            return None
        try:
            values, result = objective_values(value, self.objectives, len(self.directions), out_dir)
        except KeyError as e:  # the job succeeded; the objective key is wrong
            source = out_dir / RESULTS_FILE if value is None and out_dir else "its return value"
            message = f"hydra.sweeper.objectives: trial {trial.number} ({source}): {e.args[0]}"
            self._fail(study, trial, message)
            return message
        except (ValueError, TypeError, OSError) as e:
            self._fail(study, trial, f"{type(e).__name__}: {e}")
            return None
        for key in self.report_keys:
            with contextlib.suppress(KeyError):
                trial.set_user_attr(key, _plain(lookup(result, key)))
        if not all(math.isfinite(v) for v in values):
            reason = f"non-finite objective values {values}"
            failed = out_dir / FAILED_FILE if out_dir is not None else None
            if failed is not None and failed.is_file():  # the job caught its own exception
                with contextlib.suppress(ValueError, OSError):
                    reason += f"; the job failed: {json.loads(failed.read_text()).get('error')}"
            self._fail(study, trial, reason)
            return None
        self._stop |= tell(study, trial, values)
        log.info(f"trial {trial.number} {trial.params} -> {values}")
        return None

    def _fail(self, study: optuna.Study, trial: optuna.trial.Trial, reason: str) -> None:
        from optuna.trial import TrialState

        log.warning(f"trial {trial.number} failed: {reason}")
        trial.set_user_attr("error", reason[:2000])
        self._stop |= tell(study, trial, state=TrialState.FAIL)

    # -- outputs

    def report(self, study: optuna.Study) -> list[Path]:
        """Write the trials table, the best/Pareto trials and the CER-vs-cost figure."""
        from hydra_plugins.emg2qwerty_optuna_sweeper.report import write_study_report

        macs_key = self.budget.name if self.budget is not None else "macs_per_second"
        return write_study_report(study, self.sweep_dir, self.objectives, macs_key)


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


__all__ = ["OptunaSweeperImpl", "SearchSpace", "lookup", "objective_values", "override_str"]
