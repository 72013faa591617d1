"""The Optuna sweeper plugin on a stand-in Hydra app (tests/optuna_app, milliseconds a trial):
search space, failed / non-finite / pruned trials, budget, multi-objective Pareto set, two
workers on one SQLite study, resume after an interrupted worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from emg2qwerty_ssm.pareto import non_dominated
from hydra_plugins.emg2qwerty_optuna_sweeper._impl import SearchSpace, lookup

APP = Path(__file__).parent / "optuna_app" / "app.py"
#: subprocesses import this checkout's plugin and package (not another editable install)
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}


def _sweep(tmp: Path, *overrides: str, wait: bool = True) -> subprocess.Popen | None:
    env = {**ENV, "HYDRA_FULL_ERROR": "1"}
    cmd = [sys.executable, str(APP), "-m", *overrides]
    proc = subprocess.Popen(
        cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    return None


def _run(tmp: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**ENV, "HYDRA_FULL_ERROR": "0"}
    cmd = [sys.executable, str(APP), "-m", *overrides]
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=120)


def _study(db: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def test_search_space_from_override_grammar_and_dicts() -> None:
    space = SearchSpace.parse(
        {
            "lr": "tag(log, interval(1e-4, 1e-2))",
            "layers": "range(2, 9, 2)",
            "width": "interval(16, 256)",
            "channels": "choice([48,96,150],[96,192,150])",
            "wd": {"type": "float", "low": 0.0, "high": 0.1},
            "act": {"type": "categorical", "choices": ["gelu", "relu"]},
            "seed": 3,
        },
        ["layers=range(1, 4)", "name='a b'"],
    )
    d = space.distributions
    assert d["lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert d["layers"] == IntDistribution(1, 3)  # the command line wins; range excludes stop
    assert d["width"] == FloatDistribution(16, 256)
    assert d["channels"] == CategoricalDistribution(["[48,96,150]", "[96,192,150]"])
    assert d["wd"] == FloatDistribution(0.0, 0.1) and d["act"].choices == ("gelu", "relu")
    assert sorted(space.fixed) == ["name='a b'", "seed=3"]  # fixed for every trial
    ovs = space.overrides({"channels": "[96,192,150]", "act": "gelu", "lr": 0.001})
    assert "channels=[96,192,150]" in ovs and "act=gelu" in ovs and "lr=0.001" in ovs
    assert SearchSpace.parse({}, ["n=range(0, 10, 3)"]).distributions["n"] == IntDistribution(
        0, 9, step=3
    )


def test_lookup_nested_keys_with_slashes() -> None:
    result = {"metrics": {"val/paper/greedy": {"CER": 12.5}}, "logged": {"best/val/CER": 3.0}}
    assert lookup(result, "metrics.val/paper/greedy.CER") == 12.5
    assert lookup(result, "logged.best/val/CER") == 3.0
    with pytest.raises(KeyError, match="metrics.test"):
        lookup(result, "metrics.test")


def test_failed_nonfinite_and_pruned_trials_are_recorded(tmp_path: Path) -> None:
    sweep = tmp_path / "single"
    _sweep(
        tmp_path,
        f"hydra.sweep.dir={sweep}",
        "kind=choice(ok,fail,nonfinite,prune)",
        "x=choice(2)",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.sampler={_target_:optuna.samplers.BruteForceSampler,seed:0}",
        "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,upper:50}",
    )
    trials = {t.params["kind"]: t for t in _study(sweep / "optuna.db", "toy").trials}
    assert sorted(trials) == ["fail", "nonfinite", "ok", "prune"]  # the study went on
    assert trials["ok"].state == TrialState.COMPLETE and trials["ok"].values == [1.0]
    assert trials["fail"].state == TrialState.FAIL
    assert "boom" in trials["fail"].user_attrs["error"]
    assert trials["nonfinite"].state == TrialState.FAIL
    assert "non-finite" in trials["nonfinite"].user_attrs["error"]
    assert trials["prune"].state == TrialState.PRUNED
    assert trials["prune"].intermediate_values == {0: 100.0}  # reported from inside the job
    for t in trials.values():
        assert (sweep / f"trial_{t.number}" / "ran.txt").is_file()
    best = json.loads((sweep / "optuna_best.json").read_text())
    assert [b["params"]["kind"] for b in best["best_trials"]] == ["ok"]
    assert best["trial_counts"] == {"COMPLETE": 1, "PRUNED": 1, "FAIL": 2}
    assert len((sweep / "optuna_trials.csv").read_text().strip().splitlines()) == 5


def test_multi_objective_with_budget_writes_the_pareto_set(tmp_path: Path) -> None:
    sweep = tmp_path / "multi"
    _sweep(
        tmp_path,
        f"hydra.sweep.dir={sweep}",
        "x=interval(0, 3)",
        "y=interval(0, 1)",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.direction=[minimize,minimize]",
        "hydra.sweeper.objectives=[metrics.val/window/greedy.CER,macs_per_second]",
        "hydra.sweeper.sampler={_target_:optuna.samplers.NSGAIISampler,seed:0,population_size:4}",
        "hydra.sweeper.budget.fn=app.cost",
        "hydra.sweeper.budget.max=1000",
    )
    study = _study(sweep / "optuna.db", "toy")
    over = [t for t in study.trials if t.user_attrs.get("over_budget")]
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 8  # over-budget trials do not count towards n_trials
    assert all(t.values[1] <= 1000 for t in done)
    for t in over:  # computed from the composed config, never launched
        assert t.state == TrialState.PRUNED and t.user_attrs["macs_per_second"] > 1000
        assert not (sweep / f"trial_{t.number}").exists()
    best = json.loads((sweep / "optuna_best.json").read_text())
    front = [
        t.number
        for t, keep in zip(done, non_dominated([tuple(t.values) for t in done]), strict=True)
        if keep
    ]
    assert sorted(b["number"] for b in best["best_trials"]) == sorted(front)
    table = json.loads((sweep / "optuna_pareto.json").read_text())
    assert sorted(table["front"]) == sorted(f"trial_{n}" for n in front)
    assert (sweep / "optuna_pareto.png").stat().st_size > 0
    assert (sweep / "optuna_pareto.svg").is_file()


@pytest.mark.filterwarnings(
    "ignore:Heartbeat of storage", "ignore::optuna.exceptions.ExperimentalWarning"
)
def test_two_workers_share_one_study_and_a_later_run_resumes(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    common = [
        f"hydra.sweeper.storage=sqlite:///{db}",
        "hydra.sweeper.study_name=shared",
        "x=interval(0, 3)",
        "sleep=0.3",
        "hydra.sweeper.sampler={_target_:optuna.samplers.RandomSampler,seed:0}",
    ]
    procs = [
        _sweep(
            tmp_path,
            *common,
            f"hydra.sweep.dir={tmp_path / f'w{i}'}",
            "hydra.sweeper.n_trials=6",
            wait=False,
        )
        for i in range(2)
    ]
    for p in procs:
        assert p is not None
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
    trials = _study(db, "shared").trials
    # both may ask for the last slot at once: the later trial number is recorded, not run
    surplus = [t for t in trials if t.user_attrs.get("not_run")]
    assert len(trials) - len(surplus) == 6 and len(surplus) <= 1
    assert all(t.state == TrialState.PRUNED for t in surplus)
    trials = [t for t in trials if t not in surplus]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    by_worker = [len(list((tmp_path / f"w{i}").glob("trial_*"))) for i in range(2)]
    assert min(by_worker) >= 1 and sum(by_worker) == len(trials)
    first = {t.number: t.params for t in trials}

    # A worker killed with -9 mid-trial leaves a RUNNING trial behind; a resumed sweep fails
    # it once its heartbeat is stale, retries it with the same parameters and runs only what
    # is missing.
    beat = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2"]
    killed = _sweep(tmp_path, *common, *beat, f"hydra.sweep.dir={tmp_path / 'killed'}",
                    "hydra.sweeper.n_trials=9", "sleep=30", wait=False)  # fmt: skip
    assert killed is not None
    number = len(_study(db, "shared").trials)  # the next trial (a surplus one included)
    ran = tmp_path / "killed" / f"trial_{number}" / "ran.txt"
    deadline = time.time() + 60
    while not ran.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    killed.kill()  # SIGKILL: no handler runs, the trial stays RUNNING
    killed.wait()
    assert ran.exists(), "the worker never started its trial"
    study = _study(db, "shared")
    lost = study.trials[number]
    assert lost.state == TrialState.RUNNING
    time.sleep(2.5)  # past the grace period
    out = _run(tmp_path, *common, *beat, f"hydra.sweep.dir={tmp_path / 'w0'}",
               "hydra.sweeper.n_trials=9")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    trials = _study(db, "shared").trials
    assert trials[lost.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == lost.number]
    assert len(retries) == 1 and retries[0].params == lost.params  # the same point, once
    assert retries[0].state == TrialState.COMPLETE
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 9 and len({t.number for t in done}) == 9
    assert {t.number: t.params for t in trials if t.number in first} == first
    assert "9 complete" in out.stderr + out.stdout


def test_lightning_pruning_callback_reports_and_prunes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    import torch

    from emg2qwerty_ssm.optuna_pruning import OptunaPruningCallback
    from hydra_plugins.emg2qwerty_optuna_sweeper import ENV_VARS

    trainer = SimpleNamespace(
        sanity_checking=False,
        is_global_zero=True,
        current_epoch=0,
        callback_metrics={"val/CER": torch.tensor(10.0)},
        strategy=SimpleNamespace(broadcast=lambda obj, src=0: obj),
    )
    OptunaPruningCallback().on_validation_end(trainer, None)  # no sweep: a no-op

    url = f"sqlite:///{tmp_path / 'p.db'}"
    study = optuna.create_study(study_name="p", storage=url)
    trial = study.ask()
    pruner = json.dumps({"_target_": "optuna.pruners.ThresholdPruner", "upper": 50.0})
    for key, value in (("storage", url), ("study", "p"), ("trial", "0"), ("pruner", pruner)):
        monkeypatch.setenv(ENV_VARS[key], value)
    callback = OptunaPruningCallback(monitor="val/CER")
    callback.on_validation_end(trainer, None)  # 10 < 50: goes on
    trainer.current_epoch, trainer.callback_metrics = 1, {"val/CER": torch.tensor(80.0)}
    with pytest.raises(optuna.TrialPruned, match="epoch 1"):
        callback.on_validation_end(trainer, None)
    stored = study._storage.get_trial(trial._trial_id)
    assert stored.intermediate_values == {0: 10.0, 1: 80.0}
    assert stored.user_attrs["pruned_at_epoch"] == 1


# ----------------------------------------------------------------------------- end to end
# hparams_search presets through the real training entry point on the tiny synthetic preset
# (debug=smoke), shrunk to the smallest model on the command line (a key given there replaces
# the preset's search dimension).

SMALL = [
    "debug=smoke",
    "+sweep/pareto_size=xxs",
    "model.backbone.n_layers=2",
    "model.backbone.d_model=16",
    "model.encoder.mlp_features=[4]",
    "evaluation.splits=[val]",
    "evaluation.protocols=[paper]",
    "hydra.sweeper.n_trials=2",
]


def _train_sweep(tmp: Path, *overrides: str) -> None:
    env = {**ENV, "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "emg2qwerty_ssm.train", "-m", *overrides]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_single_objective_search_end_to_end(tmp_path: Path) -> None:
    sweep = tmp_path / "cer"
    _train_sweep(tmp_path, "hparams_search=tc_s4_cer", *SMALL, "model.backbone.dropout=0.1",
                 f"hydra.sweep.dir={sweep}")  # fmt: skip
    trials = _study(sweep / "optuna.db", "tc_s4_cer").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert set(trials[0].params) == {"optimizer.lr"}  # the only dimension left
    for t in trials:
        results = json.loads((sweep / f"trial_{t.number}" / "results.json").read_text())
        assert t.values == [results["metrics"]["val/paper/greedy"]["CER"]]
        assert results["config"]["optimizer"]["lr"] == pytest.approx(t.params["optimizer.lr"])
        assert sorted(t.intermediate_values) == [0, 1]  # val/CER after each smoke epoch
    assert (sweep / "optuna_best.json").is_file() and (sweep / "optuna_pareto.png").is_file()


@pytest.mark.slow
def test_multi_objective_search_with_budget_end_to_end(tmp_path: Path) -> None:
    sweep = tmp_path / "cer_macs"
    _train_sweep(
        tmp_path,
        "hparams_search=tc_s4_cer_macs",
        *SMALL,
        "model.backbone.d_state=8",
        "model.frontend.out_channels=choice([8,16,32],[192,384,150])",
        "hydra.sweeper.budget.max=1e6",
        f"hydra.sweep.dir={sweep}",
    )
    trials = _study(sweep / "optuna.db", "tc_s4_cer_macs").trials
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2
    for t in done:
        assert t.params["model.frontend.out_channels"] == "[8,16,32]"
        results = json.loads((sweep / f"trial_{t.number}" / "results.json").read_text())
        assert t.values == [results["metrics"]["val/paper/greedy"]["CER"],
                            results["macs_per_second"]]  # fmt: skip
        assert t.values[1] == pytest.approx(t.user_attrs["macs_per_second"])  # analytic = run
    for t in trials:
        if t.user_attrs.get("over_budget"):  # the wide front-end: never trained
            assert t.state == TrialState.PRUNED and not (sweep / f"trial_{t.number}").exists()
    best = json.loads((sweep / "optuna_best.json").read_text())
    assert best["directions"] == ["minimize", "minimize"] and best["best_trials"]
    assert (sweep / "optuna_pareto.svg").is_file()


def test_misspelt_objective_fails_fast_naming_the_keys(tmp_path: Path) -> None:
    sweep = tmp_path / "typo"
    out = _run(tmp_path, f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=4",
               "hydra.sweeper.objectives=[metrics.val/window/greedy.CEr]")  # fmt: skip
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "'metrics.val/window/greedy.CEr' is not in the job result" in text
    assert "did you mean 'metrics.val/window/greedy.CER'" in text
    assert "macs_per_second" in text  # the available keys are listed
    assert len(list(sweep.glob("trial_*/ran.txt"))) == 1  # stopped after the first result
    (trial,) = _study(sweep / "optuna.db", "toy").trials
    assert trial.state == TrialState.FAIL and "CEr" in trial.user_attrs["error"]


def test_corrupt_study_database_is_named(tmp_path: Path) -> None:
    sweep = tmp_path / "corrupt"
    sweep.mkdir()
    db = sweep / "optuna.db"
    db.write_bytes(b"this is not an SQLite file\n" * 100)
    out = _run(tmp_path, f"hydra.sweep.dir={sweep}")
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert f"cannot open the Optuna storage {db}" in text, text
    assert db.read_bytes().startswith(b"this is not")  # left as it was
    assert not list(sweep.glob("trial_*"))


def test_summary_at_the_end_and_nothing_left_on_resume(tmp_path: Path) -> None:
    sweep = tmp_path / "summary"
    common = [f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=3", "x=choice(2)"]
    first = _run(
        tmp_path,
        *common,
        "kind=choice(ok,fail,prune)",
        "hydra.sweeper.sampler={_target_:optuna.samplers.BruteForceSampler,seed:0}",
        "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,upper:50}",
    )
    text = first.stdout + first.stderr
    assert first.returncode == 0, text
    best = next(t for t in _study(sweep / "optuna.db", "toy").trials if t.params["kind"] == "ok")
    assert "3 trials (n_trials=3): 1 complete, 1 fail, 1 pruned" in text
    assert f"best trial {best.number}: {best.value}" in text
    assert f"storage: {sweep / 'optuna.db'}" in text
    assert "nothing left to run" not in text
    again = _run(tmp_path, *common, "kind=choice(ok,fail,prune)")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing left to run: the study already holds its 3 trials" in again.stdout
    assert len(_study(sweep / "optuna.db", "toy").trials) == 3


def test_multi_objective_summary_lists_the_pareto_set(tmp_path: Path) -> None:
    sweep = tmp_path / "pareto"
    out = _run(
        tmp_path,
        f"hydra.sweep.dir={sweep}",
        "x=interval(0, 3)",
        "y=interval(0, 1)",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.direction=[minimize,minimize]",
        "hydra.sweeper.objectives=[metrics.val/window/greedy.CER,macs_per_second]",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    front = _study(sweep / "optuna.db", "toy").best_trials
    assert f"Pareto set ({len(front)} trials):" in out.stdout
    for t in front:
        assert f"trial {t.number}: {t.values}" in out.stdout
