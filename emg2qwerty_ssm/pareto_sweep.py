"""``make pareto``: the budget sweep as parallel single-thread streams, then the figure.

Hydra's basic launcher runs a multirun's jobs one after another, and the submitit local
launcher starts them all at once (it has no cap), so on a 2-core machine the (size, seed) jobs
are split here into ``--parallel`` streams, one per core. A stream runs its jobs as Hydra
multiruns into the same sweep dir, one per seed (seeds in order, so every size's seed 0
finishes before any seed 1 of that stream)::

    python -m emg2qwerty_ssm.train -m +sweep=pareto_synthetic seed=<k> \\
        sweep/pareto_size=<its sizes for seed k> hydra.sweep.dir=<sweep dir>

The streams are balanced on the expected seconds of their unfinished jobs (the longest job
first, each to the least loaded stream): job by job, not size by size, since one S4_large job
costs as much as all other sizes of its seed together. When a stream has run all its jobs, its
core goes to the streams still running (a thread budget file per stream; a job with
``elastic_threads: true``, S4_large, takes it: :mod:`emg2qwerty_ssm.elastic_threads`). Jobs
are named ``<model>_seed<k>`` and the sweep sets ``skip_finished=true``, so running the same
command again skips the finished jobs and resumes a killed one from its ``last.ckpt``. When
every stream has ended, every job must hold a complete ``results.json`` of its config; the
front (mean +- sd over the seeds, :mod:`emg2qwerty_ssm.pareto`) is then drawn from exactly
these jobs::

    python scripts/run_pareto.py --seeds 0,1,2 --parallel 2 --sweep-dir multirun/pareto_synthetic
    python scripts/run_pareto.py --sizes xxs,m trainer.max_epochs=20   # extra job overrides
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emg2qwerty_ssm import CONFIG_DIR
from emg2qwerty_ssm.atomic_io import atomic_write_text
from emg2qwerty_ssm.elastic_threads import THREADS_FILE_ENV, write_budget
from emg2qwerty_ssm.results import FAILED_FILE, RESULTS_FILE

SWEEP = "pareto_synthetic"
SWEEP_FILE = CONFIG_DIR.parent / "sweeps" / f"{SWEEP}.yaml"
#: the runner's record in the sweep dir: the last run's streams, and ``earlier`` runs
RUN_RECORD = "run_pareto.json"
#: seconds of one 40-epoch job per size with OMP_NUM_THREADS=1 on the 2-core machine, two or
#: three jobs at a time (README "accuracy vs compute"); only the streams' balance depends on
#: them. A size's finished runs in the sweep dir (their wall_time_s) replace these; a size in
#: neither counts as the slowest.
MEASURED_S = {
    "xxs": 160,
    "xs": 160,
    "s": 420,
    "m": 650,
    "tc_s4_small": 500,
    "tc_s4_medium": 660,
    "s4_large": 3600,
}


@dataclass
class Job:
    """One (size, seed) of the sweep and where its run dir is."""

    size: str
    seed: int
    model: str
    dir: Path
    config: Any  # the composed job config (its hash decides whether results.json is this run's)


def default_sizes() -> list[str]:
    """The sizes the sweep file lists (``hydra.sweeper.params["sweep/pareto_size"]``)."""
    from omegaconf import OmegaConf

    params = OmegaConf.load(SWEEP_FILE).hydra.sweeper.params
    return [s.strip() for s in str(params["sweep/pareto_size"]).split(",")]


def plan_jobs(
    sizes: Sequence[str], seeds: Sequence[int], sweep_dir: Path, overrides: Sequence[str] = ()
) -> list[Job]:
    """Compose every (size, seed) as its job will (``overrides`` included) to name its dir."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict
    from omegaconf.errors import OmegaConfBaseException

    jobs = []
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        for size in sizes:
            for seed in seeds:
                cfg = compose(
                    "config",
                    overrides=[
                        f"+sweep={SWEEP}",
                        f"sweep/pareto_size={size}",
                        f"seed={seed}",
                        f"hydra.sweep.dir={sweep_dir}",
                        *overrides,
                    ],
                    return_hydra_config=True,
                )
                try:
                    subdir = str(cfg.hydra.sweep.subdir)
                except OmegaConfBaseException as err:
                    raise ValueError(
                        f"hydra.sweep.subdir does not follow from the job's config ({err}): it "
                        "must name a job by its model and seed, not by hydra.job.num, which "
                        "every stream counts from 0"
                    ) from None
                with open_dict(cfg):  # the job's own config has no hydra node (nor its hash)
                    del cfg["hydra"]
                jobs.append(Job(size, seed, str(cfg.model.name), sweep_dir / subdir, cfg))
    dirs = [j.dir for j in jobs]
    if len(set(dirs)) != len(dirs):
        raise ValueError(f"two jobs share a run dir: {sorted(map(str, dirs))}")
    return jobs


def finished(job: Job) -> dict[str, Any] | None:
    """The job's results.json when complete and of the job's config."""
    from emg2qwerty_ssm.run_dir import finished_results

    return finished_results(job.dir, job.config)


JobKey = tuple[str, int]  # (size, seed)


def balance(costs: dict[JobKey, float], n: int) -> list[list[JobKey]]:
    """Split the jobs into at most ``n`` streams of similar total cost (longest first, each to
    the least loaded stream); jobs of cost 0 (nothing left to run) are left out."""
    if n < 1:
        raise ValueError(f"--parallel={n}: expected at least 1 stream")
    streams: list[list[JobKey]] = [[] for _ in range(n)]
    loads = [0.0] * n
    for key in sorted((k for k in costs if costs[k] > 0), key=lambda k: -costs[k]):
        i = loads.index(min(loads))
        streams[i].append(key)
        loads[i] += costs[key]
    return [s for s in streams if s]


def remaining_seconds(jobs: Sequence[Job], done: dict[Path, dict[str, Any]]) -> dict[JobKey, float]:
    """Expected seconds of each unfinished job: the mean wall time of its size's finished jobs
    in the sweep dir, else :data:`MEASURED_S` (an unknown size counts as the slowest)."""
    fallback = max(MEASURED_S.values())
    costs: dict[JobKey, float] = {}
    for size in dict.fromkeys(j.size for j in jobs):
        mine = [j for j in jobs if j.size == size]
        walls = [done[j.dir]["wall_time_s"] for j in mine if j.dir in done]
        walls = [float(w) for w in walls if isinstance(w, int | float) and w > 0]
        per_job = sum(walls) / len(walls) if walls else MEASURED_S.get(size, fallback)
        costs.update({(j.size, j.seed): per_job for j in mine if j.dir not in done})
    return costs


def stream_command(
    sizes: Sequence[str], seeds: Sequence[int], sweep_dir: Path, overrides: Sequence[str] = ()
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "emg2qwerty_ssm.train",
        "-m",
        f"+sweep={SWEEP}",
        "seed=" + ",".join(map(str, seeds)),
        "sweep/pareto_size=" + ",".join(sizes),
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,
    ]


def stream_commands(
    stream: Sequence[JobKey], sweep_dir: Path, overrides: Sequence[str] = ()
) -> list[list[str]]:
    """A stream's jobs as Hydra multiruns, one per seed in seed order (sizes longest first,
    as :func:`balance` listed them)."""
    by_seed: dict[int, list[str]] = {}
    for size, seed in stream:
        by_seed.setdefault(seed, []).append(size)
    return [stream_command(by_seed[k], [k], sweep_dir, overrides) for k in sorted(by_seed)]


def share_cores(streams: Sequence[int], cores: int) -> dict[int, int]:
    """Thread budgets of the running ``streams``: ``cores`` split as evenly as possible (the
    first streams get the remainder), at least one each."""
    if not streams:
        return {}
    each, extra = divmod(cores, len(streams))
    return {k: max(1, each + (i < extra)) for i, k in enumerate(streams)}


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def run_streams(
    streams: list[list[JobKey]],
    jobs: Sequence[Job],
    sweep_dir: Path,
    overrides: Sequence[str],
    threads: int,
    poll_s: float = 10.0,
) -> list[dict[str, Any]]:
    """Run the streams in parallel, each its multiruns one after another; print each job as its
    results.json appears; wait for all.

    Each stream's output goes to ``<sweep dir>/stream<k>.log``. A multirun that fails ends its
    stream; Ctrl-C or an error here stops every stream (a rerun resumes them). The streams
    share ``len(streams) * threads`` cores: when one ends, its cores go to the streams still
    running (:func:`share_cores`, written to each stream's thread budget file), which a job
    with ``elastic_threads: true`` takes (:mod:`emg2qwerty_ssm.elastic_threads`).
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    budget_dir = Path(tempfile.mkdtemp(prefix="pareto_threads_"))
    budgets = [budget_dir / f"stream{k}" for k in range(len(streams))]
    total_cores = len(streams) * threads
    shared: dict[int, int] = {}
    infos: list[dict[str, Any]] = []
    queues: list[list[list[str]]] = []
    running: list[subprocess.Popen[bytes] | None] = []
    seen = {j.dir for j in jobs if (j.dir / RESULTS_FILE).is_file()}
    start = time.time()

    def launch(k: int) -> None:  # the stream's next multirun, or mark the stream ended
        info = infos[k]
        if not queues[k]:
            running[k] = None
            info.update(returncode=0, wall_s=round(time.time() - start, 1))
            return
        cmd = queues[k].pop(0)
        info["commands"].append(cmd)
        stream_env = {**env, THREADS_FILE_ENV: str(budgets[k])}
        with open(info["log"], "ab") as log_file:
            running[k] = subprocess.Popen(
                cmd, stdout=log_file, stderr=subprocess.STDOUT, env=stream_env
            )

    def reshare() -> None:  # the cores of ended streams to the ones still running
        live = [k for k, p in enumerate(running) if p is not None]
        for k, n in share_cores(live, total_cores).items():
            if shared.get(k) != n:
                write_budget(budgets[k], n)
                infos[k]["threads"].append([round(time.time() - start, 1), n])
                if k in shared:
                    print(f"stream {k}: thread budget {shared[k]} -> {n}", flush=True)
                shared[k] = n

    try:
        for k, stream in enumerate(streams):
            sizes = list(dict.fromkeys(size for size, _ in stream))
            log_path = sweep_dir / f"stream{k}.log"
            infos.append(
                {
                    "stream": k,
                    "sizes": sizes,
                    "jobs": [f"{size}:{seed}" for size, seed in stream],
                    "commands": [],
                    "log": str(log_path),
                    "threads": [],  # [seconds since start, thread budget]
                }
            )
            queues.append(stream_commands(stream, sweep_dir, overrides))
            running.append(None)
            jobs_text = ",".join(infos[k]["jobs"])
            print(f"stream {k}: sizes {','.join(sizes)}, jobs {jobs_text} (log: {log_path})")
            write_budget(budgets[k], threads)  # before the job starts and reads it
            shared[k] = threads
            infos[k]["threads"].append([0.0, threads])
            launch(k)
        sys.stdout.flush()
        while any(p is not None for p in running):
            time.sleep(poll_s)
            for k, p in enumerate(running):
                if p is None or p.poll() is None:
                    continue
                if p.returncode == 0:
                    launch(k)
                else:  # the failed multirun ends its stream; the rerun resumes it
                    running[k] = None
                    infos[k].update(returncode=p.returncode, wall_s=round(time.time() - start, 1))
            reshare()
            for j in jobs:
                if j.dir not in seen and (j.dir / RESULTS_FILE).is_file():
                    seen.add(j.dir)
                    print(
                        f"[{_minutes(time.time() - start)}] {len(seen)}/{len(jobs)} done: "
                        f"{j.dir.name}",
                        flush=True,
                    )
    finally:
        live = [p for p in running if p is not None and p.poll() is None]
        for p in live:  # Ctrl-C, an error here: no stream outlives the runner
            p.terminate()
        for p in live:
            p.wait()
        shutil.rmtree(budget_dir, ignore_errors=True)
        for info, p in zip(infos, running, strict=True):
            if "returncode" not in info:
                info.update(
                    returncode=p.returncode if p is not None else -1,
                    wall_s=round(time.time() - start, 1),
                )
    return infos


def check_jobs(jobs: Sequence[Job]) -> list[str]:
    """One line per job without a complete results.json of its config (its failure if known)."""
    problems = []
    for j in jobs:
        if finished(j) is not None:
            continue
        failed = j.dir / FAILED_FILE
        if failed.is_file():
            try:
                why = json.loads(failed.read_text()).get("error", "?")
            except ValueError:
                why = f"unreadable {failed}"
            problems.append(f"{j.dir.name}: failed: {why}")
        elif (j.dir / RESULTS_FILE).is_file():
            problems.append(f"{j.dir.name}: results.json is incomplete or of another config")
        else:
            problems.append(f"{j.dir.name}: no results.json (killed, or the stream stopped)")
    return problems


def _earlier_runs(path: Path) -> list[dict[str, Any]]:
    """The runs an existing run record holds (a resumed sweep keeps the record of the runs
    before it: their streams, thread budgets and wall times), oldest first; [] if none."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(old, dict) or "streams" not in old:
        return []
    earlier = old.pop("earlier", [])
    return [*(earlier if isinstance(earlier, list) else []), old]


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds={text!r}: expected integers, e.g. 0,1,2"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds={text!r}: expected distinct integers")
    return seeds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job")
    parser.add_argument(
        "--sizes",
        default=None,
        help="comma-separated sweep/pareto_size names (default: the sweep file's list)",
    )
    parser.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="default 0,1,2")
    parser.add_argument("--parallel", type=int, default=2, help="streams (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="OMP threads per stream (1)")
    parser.add_argument("--sweep-dir", default=f"multirun/{SWEEP}", help="default %(default)s")
    parser.add_argument("--metric", default="test/paper/greedy", help="default %(default)s")
    parser.add_argument("--out", default=f"docs/figures/{SWEEP}", help="figure/table stem")
    parser.add_argument("--poll", type=float, default=10.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = args.sizes.split(",") if args.sizes else default_sizes()
    known = sorted(p.stem for p in (SWEEP_FILE.parent / "pareto_size").glob("*.yaml"))
    unknown = [s for s in sizes if s not in known]
    if unknown:
        parser.error(f"--sizes: unknown {unknown}; sweeps/pareto_size/ has {known}")
    sweep_dir = Path(args.sweep_dir).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)

    jobs = plan_jobs(sizes, args.seeds, sweep_dir, args.overrides)
    done = {j.dir: r for j in jobs if (r := finished(j)) is not None}
    print(
        f"{len(jobs)} jobs ({len(sizes)} sizes x {len(args.seeds)} seeds) in {sweep_dir}; "
        f"{len(done)} already finished (skipped)",
        flush=True,
    )
    streams = balance(remaining_seconds(jobs, done), args.parallel)
    ran = []
    if streams:
        ran = run_streams(streams, jobs, sweep_dir, args.overrides, args.threads, args.poll)
        record = {
            "finished_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "streams": ran,
            "earlier": _earlier_runs(sweep_dir / RUN_RECORD),
        }
        atomic_write_text(sweep_dir / RUN_RECORD, json.dumps(record, indent=1) + "\n")
        print(f"streams ended after {_minutes(max(s['wall_s'] for s in ran))}", flush=True)
    problems = [
        f"stream {s['stream']} ({','.join(s['sizes'])}) exited with {s['returncode']}; "
        f"see {s['log']}"
        for s in ran
        if s["returncode"] != 0
    ]
    problems += check_jobs(jobs)
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        print(
            "the figure was not drawn; run the same command again to resume (finished jobs "
            "are skipped, a killed one continues from its last.ckpt)",
            file=sys.stderr,
        )
        return 1
    from emg2qwerty_ssm import pareto

    files = [str(j.dir / RESULTS_FILE) for j in jobs]
    return pareto.main([*files, "--metric", args.metric, "--out", args.out, "--strict"])


if __name__ == "__main__":
    raise SystemExit(main())
