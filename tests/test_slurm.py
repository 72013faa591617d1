"""``cluster=slurm`` against a real single-node SLURM (scripts/slurm_local.sh): a two-job
multirun through the submitit launcher; one job gets the preemption signal mid-training, is
requeued by submitit and resumes from its ``last.ckpt`` without losing a step beyond it.

Skipped with the reason when the cluster cannot start here (not root, no slurm-wlm / munge);
``.ci/run`` installs them (``make ci-deps``) and sets EMG2QWERTY_REQUIRE_CLUSTER_TESTS=1, which
turns the skip into a failure.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "scripts" / "slurm_local.sh"
EPOCHS, STEPS_PER_EPOCH = 8, 3  # debug=smoke: limit_train_batches=3
SIGNAL_AFTER_STEP = 4  # mid-epoch 1: a restart from scratch and a resume look different


def _unavailable(reason: str) -> None:
    if os.environ.get("EMG2QWERTY_REQUIRE_CLUSTER_TESTS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm_env() -> Iterator[dict[str, str]]:
    if os.geteuid() != 0:
        _unavailable("a local SLURM cluster needs root (slurmd, munged)")
    if not (shutil.which("slurmctld") and shutil.which("munged")):
        _unavailable("slurm-wlm / munge not installed (make ci-deps)")
    listing = subprocess.run([str(SCRIPT), "env"], capture_output=True, text=True, check=True)
    env = dict(os.environ)
    for item in listing.stdout.split("export", 1)[1].split():
        key, value = item.split("=", 1)
        env[key] = value.replace("$PATH", env.get("PATH", ""))
    started = not _cluster_up(env)
    if started:
        start = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=180)
        if start.returncode != 0:
            _unavailable(f"the local SLURM cluster did not start: {start.stderr[-1500:]}")
    yield env
    if started:
        subprocess.run([str(SCRIPT), "stop"], capture_output=True, timeout=60, check=False)


def _cluster_up(env: dict[str, str]) -> bool:
    """Whether the local cluster answers. Without its slurm.conf (a fresh machine: the cluster
    was never started) sinfo retries for a minute before failing, so that case is decided by
    the file; a controller that does not answer within 30 s counts as down as well."""
    conf = env.get("SLURM_CONF")
    if conf and not Path(conf).is_file():
        return False
    try:
        answer = subprocess.run(["sinfo", "-h"], env=env, capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        return False
    return answer.returncode == 0


def _state(job_id: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        ["squeue", "--states=all", "-h", "-o", "%T", "-j", job_id],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout.strip()


def _saved_step(sweep: Path) -> int:
    """The step of job 1's last.ckpt (-1 while none is readable)."""
    for path in sweep.glob("1_*/checkpoints/last.ckpt"):
        try:
            return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
        except Exception:  # being replaced right now
            return -1
    return -1


def _train_steps(metrics_csv: Path) -> list[int]:
    with metrics_csv.open() as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")]


@pytest.mark.slow
def test_preempted_job_is_requeued_and_resumes_from_its_checkpoint(
    tmp_path: Path, slurm_env: dict[str, str]
) -> None:
    from emg2qwerty_ssm.synthetic import ensure_dataset

    ensure_dataset("tiny", 0)  # generated once here, not by both jobs at once
    sweep, folder = tmp_path / "sweep", tmp_path / "submitit"
    env = {**slurm_env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [
        sys.executable, "-m", "emg2qwerty_ssm.train", "-m", "cluster=slurm", "debug=smoke",
        "seed=0,1", f"trainer.max_epochs={EPOCHS}", "checkpointing.every_n_train_steps=1",
        "evaluation.splits=[val]", "evaluation.protocols=[paper]",
        f"hydra.sweep.dir={sweep}", f"hydra.launcher.submitit_folder={folder}",
        # a CPU-only node; timeout_min > 10, or submitit counts the signal as a timeout
        "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=30",
    ]  # fmt: skip
    sweeper = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.time() + 150
        while _saved_step(sweep) < SIGNAL_AFTER_STEP:  # job 1 is in its second epoch
            assert sweeper.poll() is None and time.time() < deadline, "job 1 never checkpointed"
            time.sleep(0.1)
        (run,) = sweep.glob("1_*")
        (submitted,) = folder.glob("*_1_submitted.pkl")
        job_id = submitted.name.removesuffix("_submitted.pkl")
        # the preemption signal (SLURM sends it ahead of preemption / the time limit)
        subprocess.run(["scancel", "--signal=USR2", job_id], env=env, check=True)
        while _state(job_id, env) == "RUNNING":  # submitit requeues it and exits
            assert time.time() < deadline, "job 1 ignored the signal"
            time.sleep(0.1)
        out, _ = sweeper.communicate(timeout=240)
    finally:
        if sweeper.poll() is None:  # failed: leave no job of this test behind
            sweeper.kill()
            for script in folder.glob("*_submission.sh"):
                array = script.name.removesuffix("_submission.sh")
                subprocess.run(["scancel", array], env=env, check=False)
    assert sweeper.returncode == 0, out[-3000:]

    show = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True,
                          text=True).stdout  # fmt: skip
    assert "Restarts=1" in show, show
    log = next(folder.glob(f"{job_id}_0_log.err")).read_text()
    assert "this job is preempted" in log and "DUE TO JOB REQUEUE" in log
    # the step the requeued run resumed from, as it logged it: the old process may still save
    # a step or two after the job leaves RUNNING, so last.ckpt read at that moment can be stale
    (resumed,) = re.findall(
        r"resuming from \S+ \(global step (\d+)\)", (run / "train.log").read_text()
    )
    saved_step = int(resumed)
    assert SIGNAL_AFTER_STEP <= saved_step < EPOCHS * STEPS_PER_EPOCH  # mid-training
    first, second = (_train_steps(run / "csv" / f"version_{v}" / "metrics.csv") for v in (0, 1))
    # the first process logged every step before the checkpoint's last one; that one's row can
    # be missing: Lightning saves the checkpoint in on_train_batch_end and logs the step's
    # metrics after the callbacks, and the signal can land in between (its training is in the
    # checkpoint all the same)
    assert min(first) == 0 and set(range(saved_step - 1)) <= set(first)
    # the requeued run starts at the checkpoint's step: nothing before it is trained twice,
    # nothing between it and the signal is skipped
    assert sorted(set(second)) == list(range(saved_step, EPOCHS * STEPS_PER_EPOCH))
    for r in sweep.glob("[01]_*"):
        assert (r / "results.json").is_file()
        final = torch.load(r / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert final["global_step"] == EPOCHS * STEPS_PER_EPOCH
    (other,) = sweep.glob("0_*")
    assert "resuming from" not in (other / "train.log").read_text()
