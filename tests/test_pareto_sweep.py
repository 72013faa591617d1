"""`make pareto` (emg2qwerty_ssm.pareto_sweep): balanced streams, job dirs named by model and
seed, a rerun that skips finished jobs (skip_finished) and resumes a killed one from last.ckpt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from trainer_helpers import REPO_ROOT, cache_dir, compose_cfg

from emg2qwerty_ssm import pareto_sweep
from emg2qwerty_ssm.pareto_sweep import Job, balance, plan_jobs, remaining_seconds
from emg2qwerty_ssm.results import REQUIRED_KEYS, config_hash
from emg2qwerty_ssm.run_dir import finished_results
from emg2qwerty_ssm.train import train

SWEEP = ["+sweep=pareto_synthetic", "sweep/pareto_size=xxs"]


def test_balance_gives_each_job_to_the_least_loaded_stream() -> None:
    per_size = {"xs": 108, "xxs": 111, "s": 146, "m": 249, "large": 900}
    costs = {(size, seed): t for size, t in per_size.items() for seed in (0, 1)}
    streams = balance(costs, 2)
    assert sorted(k for st in streams for k in st) == sorted(costs)
    # job by job: the two expensive jobs go one to each stream, not both to one
    assert streams[0][0] == ("large", 0) and streams[1][0] == ("large", 1)
    loads = [sum(costs[k] for k in st) for st in streams]
    assert max(loads) - min(loads) <= max(costs.values())
    assert loads == [1514, 1514]
    # one stream: everything, longest first; more streams than jobs: one job each
    assert balance(costs, 1) == [sorted(costs, key=lambda k: -costs[k])]
    assert sorted(map(len, balance(costs, 16))) == [1] * 10
    # nothing left to run for a job: no stream runs it
    assert balance({("a", 0): 0.0, ("b", 0): 5.0}, 2) == [[("b", 0)]]
    with pytest.raises(ValueError, match="--parallel=0"):
        balance(costs, 0)


def test_remaining_seconds_count_unfinished_jobs_at_measured_times(tmp_path: Path) -> None:
    jobs = [Job("m", k, "tc_s4_m", tmp_path / f"m{k}", None) for k in range(3)]
    jobs += [Job("new", k, "x", tmp_path / f"n{k}", None) for k in range(2)]
    done = {jobs[0].dir: {"wall_time_s": 300.0}}  # seed 0 of m finished in 300 s
    costs = remaining_seconds(jobs, done)
    slowest = max(pareto_sweep.MEASURED_S.values())
    assert costs == {("m", 1): 300.0, ("m", 2): 300.0, ("new", 0): slowest, ("new", 1): slowest}
    assert remaining_seconds(jobs[:2], {}) == {
        ("m", 0): pareto_sweep.MEASURED_S["m"],
        ("m", 1): pareto_sweep.MEASURED_S["m"],
    }


def test_job_dirs_follow_model_and_seed(tmp_path: Path) -> None:
    jobs = plan_jobs(["xxs", "tc_s4_small"], [0, 1], tmp_path)
    assert [j.dir.relative_to(tmp_path).as_posix() for j in jobs] == [
        "tc_s4_xxs_seed0", "tc_s4_xxs_seed1", "tc_s4_small_seed0", "tc_s4_small_seed1",
    ]  # fmt: skip
    assert [j.model for j in jobs] == ["tc_s4_xxs"] * 2 + ["tc_s4_small"] * 2
    assert [j.config.seed for j in jobs] == [0, 1, 0, 1]
    assert all(j.config.skip_finished for j in jobs)
    with pytest.raises(ValueError, match="hydra.job.num"):
        plan_jobs(["xxs"], [0], tmp_path, ["hydra.sweep.subdir=${hydra.job.num}_x"])


def test_stream_command_replaces_the_sweeps_sizes_and_seeds(tmp_path: Path) -> None:
    cmd = pareto_sweep.stream_command(["m", "xs"], [3, 4], tmp_path, ["trainer.max_epochs=2"])
    assert cmd[1:] == ["-m", "emg2qwerty_ssm.train", "-m", "+sweep=pareto_synthetic", "seed=3,4",
                       "sweep/pareto_size=m,xs", f"hydra.sweep.dir={tmp_path}",
                       "trainer.max_epochs=2"]  # fmt: skip
    # a stream's jobs: one multirun per seed, seeds in order, sizes in the stream's order
    cmds = pareto_sweep.stream_commands([("large", 2), ("m", 0), ("xs", 2), ("s", 0)], tmp_path)
    assert [c[5:7] for c in cmds] == [
        ["seed=0", "sweep/pareto_size=m,s"],
        ["seed=2", "sweep/pareto_size=large,xs"],
    ]


def _complete_results(cfg) -> dict:
    return {**{k: 0 for k in REQUIRED_KEYS}, "metrics": {}, "config_hash": config_hash(cfg)}


def test_finished_results_needs_a_complete_file_of_the_same_config(tmp_path: Path) -> None:
    assert compose_cfg([]).skip_finished is False  # only the sweep sets it
    cfg = compose_cfg([*SWEEP, "seed=1"])
    assert finished_results(tmp_path, cfg) is None  # nothing there
    results = _complete_results(cfg)
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert finished_results(tmp_path, cfg) == results
    # skip_finished is how a run executes, not what it computes: same hash either way
    assert config_hash(compose_cfg([*SWEEP, "seed=1", "skip_finished=false"])) == config_hash(cfg)
    assert finished_results(tmp_path, compose_cfg([*SWEEP, "seed=2"])) is None
    del results["CER"]
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert finished_results(tmp_path, cfg) is None


def test_train_returns_a_finished_result_without_running(tmp_path: Path, caplog) -> None:
    cfg = compose_cfg([*SWEEP, "seed=1"], run_dir=tmp_path)
    results = _complete_results(cfg)
    (tmp_path / "results.json").write_text(json.dumps(results))
    with caplog.at_level("INFO", logger="emg2qwerty_ssm.train"):
        assert train(cfg) == results
    assert f"already finished: {tmp_path / 'results.json'}" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # nothing else ran


# ----------------------------------------------------------------------------- end to end
# The sweep on the tiny synthetic preset: debug=smoke's short loaders, and the keys the sweep's
# demo recipe sets brought back down (the sweep is composed after debug=smoke).
TINY = [
    "debug=smoke", "dataset=synthetic_tiny", "trainer.max_epochs=2", "batch_size=4",
    "trainer.check_val_every_n_epoch=1", "datamodule.window_length=2000",
    "datamodule.padding=[400,100]", "evaluation.splits=[val]",
    # kills its own process (kill -9) where RELIABILITY_KILL_AT=epoch:batch says; part of
    # every run so that the killed and the resumed job share one config
    "+callbacks.kill._target_=reliability_killer.SelfKill",
]  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return cache_dir(tmp_path_factory)


def _run_pareto(tmp: Path, cache: Path, *args: str, kill: str | None = None):
    env = {**os.environ, "EMG2QWERTY_SSM_CACHE": str(cache), "WANDB_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "tests"), str(REPO_ROOT)])}  # fmt: skip
    env.pop("RELIABILITY_KILL_AT", None)
    if kill:
        env["RELIABILITY_KILL_AT"] = kill
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "run_pareto.py"), "--sweep-dir",
           str(tmp / "sweep"), "--out", str(tmp / "fig" / "front"), "--metric",
           "val/paper/greedy", "--poll", "0.5", *args, *TINY]  # fmt: skip
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_make_pareto_runs_two_streams_resumes_a_killed_job_and_skips_finished(
    tmp_path: Path, cache: Path
) -> None:
    sweep = tmp_path / "sweep"
    xxs, xs = sweep / "tc_s4_xxs_seed0", sweep / "tc_s4_xs_seed0"
    # 1. killed mid-way (epoch 1, batch 1): the runner fails, names the job, draws nothing
    proc = _run_pareto(tmp_path, cache, "--sizes", "xxs", "--seeds", "0", kill="1:1")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "stream 0 (xxs) exited with -9" in proc.stderr
    assert "tc_s4_xxs_seed0: no results.json" in proc.stderr
    assert (xxs / "checkpoints" / "last.ckpt").is_file() and not (xxs / "results.json").exists()
    assert not (tmp_path / "fig").exists()

    # 2. two sizes in two parallel streams: the killed job resumes from its last.ckpt
    proc = _run_pareto(tmp_path, cache, "--sizes", "xxs,xs", "--seeds", "0", "--parallel", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "0 already finished" in proc.stdout
    assert "stream 0: sizes" in proc.stdout and "stream 1: sizes" in proc.stdout
    assert "resuming from" in (xxs / "train.log").read_text()
    assert "resuming from" not in (xs / "train.log").read_text()
    results = {d.name: json.loads((d / "results.json").read_text()) for d in (xxs, xs)}
    assert {r["config"]["seed"] for r in results.values()} == {0}
    record = json.loads((sweep / "run_pareto.json").read_text())
    runs = record["streams"]
    # the killed run's record is kept under "earlier"
    assert [[s["returncode"] for s in r["streams"]] for r in record["earlier"]] == [[-9]]
    assert sorted(s for r in runs for s in r["sizes"]) == ["xs", "xxs"]
    assert [r["returncode"] for r in runs] == [0, 0]
    table = json.loads((tmp_path / "fig" / "front.json").read_text())
    assert sorted(m["name"] for m in table["models"]) == ["tc_s4_xs", "tc_s4_xxs"]
    assert all(m["n"] == 1 and m["seeds"] == [0] for m in table["models"])

    # 3. the same command again: every job is skipped, nothing is rewritten
    stamps = {d: (d / "results.json").stat().st_mtime_ns for d in (xxs, xs)}
    proc = _run_pareto(tmp_path, cache, "--sizes", "xxs,xs", "--seeds", "0", "--parallel", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 already finished (skipped)" in proc.stdout and "stream 0" not in proc.stdout
    assert {d: (d / "results.json").stat().st_mtime_ns for d in (xxs, xs)} == stamps

    # 4. the Hydra sweep itself (no runner) also skips: "already finished" per job
    env = {**os.environ, "EMG2QWERTY_SSM_CACHE": str(cache), "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "tests"), str(REPO_ROOT)])}  # fmt: skip
    cmd = [sys.executable, "-m", "emg2qwerty_ssm.train", "-m", "+sweep=pareto_synthetic",
           "seed=0", "sweep/pareto_size=xxs,xs", f"hydra.sweep.dir={sweep}", *TINY]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for d in (xxs, xs):
        assert f"already finished: {d / 'results.json'}" in (d / "train.log").read_text()
    assert {d: (d / "results.json").stat().st_mtime_ns for d in (xxs, xs)} == stamps
