"""Three sweeper workers on one Optuna study in a real PostgreSQL server; one is killed with -9
mid-trial. The study must still end with exactly n_trials complete trials: the killed trial is
failed once its heartbeat is stale and retried (same parameters) by a surviving worker, and
no trial runs twice.

The server is a throwaway one (scripts/pg_local.sh: initdb + pg_ctl in a temporary directory
on a free localhost port). Skipped when PostgreSQL or its driver is missing (``make ci-deps``
installs the server; psycopg2-binary is in requirements.lock).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

ROOT = Path(__file__).parents[1]
APP = ROOT / "tests" / "optuna_app" / "app.py"
PG_LOCAL = ROOT / "scripts" / "pg_local.sh"
N_TRIALS = 9


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    pytest.importorskip("psycopg2", reason="no PostgreSQL driver (pip install psycopg2-binary)")
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        pytest.skip("no PostgreSQL server installed (make ci-deps, or apt-get install postgresql)")
    # not under pytest's tmp_path: the server may run as another user, who must reach it
    workdir = Path(tempfile.mkdtemp(prefix="emg2qwerty-pg-"))
    workdir.chmod(0o755)
    try:
        start = subprocess.run(
            [str(PG_LOCAL), "start", str(workdir), str(_free_port())],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if start.returncode != 0:
            log = workdir / "server.log"
            pytest.fail(
                f"PostgreSQL did not start: {start.stderr}"
                + (log.read_text()[-2000:] if log.is_file() else "")
            )
        yield start.stdout.strip().splitlines()[-1]
        subprocess.run([str(PG_LOCAL), "stop", str(workdir)], timeout=60, check=False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _worker(tmp: Path, url: str, name: str, sleep: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    cmd = [
        sys.executable,
        str(APP),
        "-m",
        f"hydra.sweep.dir={tmp / name}",
        f"hydra.sweeper.storage={url}",
        "hydra.sweeper.study_name=pg",
        f"hydra.sweeper.n_trials={N_TRIALS}",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=3",
        # unseeded: each worker samples its own points (a shared seed would repeat them)
        "hydra.sweeper.sampler={_target_:optuna.samplers.RandomSampler}",
        "x=interval(0, 3)",
        f"sleep={sleep}",
    ]
    return subprocess.Popen(
        cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_three_workers_one_killed_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    # w0's trials take a minute: it is killed while the others, done with every other trial,
    # wait for it; they must then fail it, retry it and run the retry themselves
    workers = {
        f"w{i}": _worker(tmp_path, postgres_url, f"w{i}", 60 if i == 0 else 1) for i in range(3)
    }
    victim = workers["w0"]
    deadline = time.time() + 150
    study = None
    while True:
        assert victim.poll() is None and time.time() < deadline, "w0 finished or never started"
        if study is None:
            with contextlib.suppress(KeyError):  # no study yet
                study = optuna.load_study(study_name="pg", storage=postgres_url)
        done = study.get_trials(states=(TrialState.COMPLETE,)) if study else []
        if len(done) == N_TRIALS - 1 and list((tmp_path / "w0").glob("trial_*/ran.txt")):
            break
        time.sleep(0.2)
    victim.kill()  # SIGKILL: no cleanup; its trial stays RUNNING in the database
    victim.wait()
    (killed_dir,) = (tmp_path / "w0").glob("trial_*")
    killed_number = int(killed_dir.name.removeprefix("trial_"))
    for name in ("w1", "w2"):
        out, _ = workers[name].communicate(timeout=150)
        assert workers[name].returncode == 0, out
        assert "waiting for trials" in out  # they did not leave the killed trial behind

    trials = optuna.load_study(study_name="pg", storage=postgres_url).trials
    assert len({t.number for t in trials}) == len(trials)
    killed = trials[killed_number]
    assert killed.state == TrialState.FAIL  # failed by a survivor once its heartbeat was stale
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed_number]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert retries[0].state == TrialState.COMPLETE
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == N_TRIALS  # none lost, none extra
    not_run = [t for t in trials if t.user_attrs.get("not_run")]
    assert len(trials) == N_TRIALS + 1 + len(not_run)  # + the killed one
    # each complete trial ran exactly once, in one worker's directory
    ran = sorted(
        int(p.parent.name.removeprefix("trial_"))
        for name in ("w1", "w2")
        for p in (tmp_path / name).glob("trial_*/ran.txt")
    )
    assert ran == sorted(t.number for t in done)
    assert len({round(t.params["x"], 12) for t in done}) == N_TRIALS  # distinct points
