"""The study's outputs: all trials (CSV), the best / Pareto-optimal trials (JSON) and, when
each trial has a cost, the CER-vs-MAC/s front drawn with ``emg2qwerty_ssm.pareto``."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)


def _trial_dict(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {
        "number": t.number,
        "values": t.values,
        "params": t.params,
        "user_attrs": t.user_attrs,
    }


def write_study_report(
    study: optuna.Study, out_dir: Path, objectives: Sequence[str], cost_key: str
) -> list[Path]:
    """Write ``optuna_trials.csv``, ``optuna_best.json`` and ``optuna_pareto.*`` into out_dir.

    The best trials are Optuna's own: the best trial of a single-objective study, the
    non-dominated set (``study.best_trials``) of a multi-objective one. The figure puts
    objective 0 on y and the cost (objective ``cost_key`` or the user attribute of that name)
    on a log x axis.
    """
    from optuna.trial import TrialState

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    trials_csv = out_dir / "optuna_trials.csv"
    study.trials_dataframe().to_csv(trials_csv, index=False)
    written.append(trials_csv)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(study.directions) > 1:
        best = study.best_trials
    else:
        best = [study.best_trial] if complete else []
    counts = {s.name: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
    summary = {
        "study_name": study.study_name,
        "directions": [d.name.lower() for d in study.directions],
        "objectives": list(objectives),
        "trial_counts": {k: v for k, v in counts.items() if v},
        "best_trials": [_trial_dict(t) for t in best],
    }
    best_json = out_dir / "optuna_best.json"
    best_json.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    written.append(best_json)
    try:
        from emg2qwerty_ssm import pareto
    except ImportError:  # the plugin used outside this project: tables only
        return written
    records = []
    for t in complete:
        idx = list(objectives).index(cost_key) if cost_key in objectives else None
        cost = t.values[idx] if idx is not None else t.user_attrs.get(cost_key)
        if cost is None or not cost > 0:
            continue
        records.append(
            pareto.Record(
                name=f"trial_{t.number}",
                cer=float(t.values[0]),
                macs_per_second=float(cost),
                params=t.user_attrs.get("params"),
                path=t.user_attrs.get("output_dir"),
                extra={"params": t.params},
            )
        )
    if not records:
        log.info(f"no complete trial has a {cost_key!r}; no Pareto figure")
        return written
    y = objectives[0] if objectives else "objective 0"
    written += pareto.report(
        records,
        out_dir / "optuna_pareto",
        title=f"Optuna study {study.study_name}: {y} vs. {cost_key}",
        references="greedy" if "CER" in y else "none",
        meta={"study_name": study.study_name, "metric": y},
    )
    return written


def study_summary(study: optuna.Study, n_trials: int, url: str, launched: int) -> str:
    """What the user reads when the sweep ends: trial counts, best trial / Pareto set, storage.

    ``launched`` is how many trials this process ran; 0 means a resumed study that had
    nothing left to run, which is said explicitly.
    """
    from hydra_plugins.emg2qwerty_optuna_sweeper.storage import NOT_RUN_ATTR, storage_location

    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials) for s in {t.state for t in trials}}
    not_run = sum(bool(t.user_attrs.get("over_budget") or t.user_attrs.get(NOT_RUN_ATTR))
                  for t in trials)  # fmt: skip
    by_state = ", ".join(
        f"{counts.get(s, 0)} {s.name.lower()}"
        for s in sorted(counts, key=lambda s: s.value)
        if s.name != "PRUNED"
    )
    pruned = sum(t.state.name == "PRUNED" for t in trials) - not_run
    lines = [
        f"Optuna study {study.study_name!r}: {len(trials)} trials (n_trials={n_trials}): "
        f"{by_state}, {pruned} pruned, {not_run} never run (over budget / n_trials reached)"
    ]
    if launched == 0:
        lines.append(f"nothing left to run: the study already holds its {n_trials} trials")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if not complete:
        lines.append("no complete trial yet")
    elif len(study.directions) > 1:
        lines.append(f"Pareto set ({len(study.best_trials)} trials):")
        lines += [f"  trial {t.number}: {t.values} {t.params}" for t in study.best_trials]
    else:
        best = study.best_trial
        where = best.user_attrs.get("output_dir")
        lines.append(f"best trial {best.number}: {best.value} {best.params}" +
                     (f" ({where})" if where else ""))  # fmt: skip
    lines.append(f"storage: {storage_location(url)} (study {study.study_name!r})")
    return "\n".join(lines)
