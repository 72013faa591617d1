"""Training batches of ``experiment=demo`` through the real Lightning loop, today's vs now.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_demo_steps.py [--batches 40] \
        [--rounds 3] [extra Hydra overrides ...]

Each round runs two fresh processes one after the other, each training ``--batches`` batches of
``experiment=demo`` (batch 8 x (4,000 + 1,200 padding) samples, no validation, no final
evaluation; the demo data set must exist, ``make data``) and timing every batch from
``on_train_batch_start`` to ``on_train_batch_end`` (training_step, backward, the non-finite
check, the optimizer step), in process CPU time and wall time:

* ``today``: the model's maths in ``reference_mode()``, Adam's per-tensor loop
  (``+optimizer.foreach=false``) and glibc's default malloc (``EMG2QWERTY_SSM_MALLOC=default``);
* ``now``: the trainer as it is.

Processes, not one interleaved loop, because the malloc setting is process-wide. Prints the
median per batch (the first 3 batches left out) and the ratio per round, with the load.

``--whole`` times whole runs instead (``make demo``'s first command: start-up, training with
its validations and curriculum epochs, final evaluation): each round runs ``today`` with
``--today-experiment`` and ``now`` with ``--now-experiment`` (both ``demo``, the from-scratch
recipe, unless given; ``demo_finetune`` is what ``make demo`` runs now; several ``now``
experiments are each compared with the same ``today`` run), and prints each
process's CPU and wall time, the ratios and each run's test CER (paper protocol, greedy), so
speed is compared at the CER it reached. ``--epochs N`` shortens both recipes (a quick look).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import machine_line  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STARTED = time.time()  # a child's wall time includes its imports, like `make demo`'s


def child(mode: str, batches: int, overrides: list[str]) -> None:
    """Train ``batches`` batches in this process and print one JSON line of timings."""
    import lightning.pytorch as pl
    from hydra import compose, initialize_config_dir

    from emg2qwerty_ssm import CONFIG_DIR
    from emg2qwerty_ssm.host_memory import ENV_VAR
    from emg2qwerty_ssm.models.s4d_reference import reference_mode
    from emg2qwerty_ssm.train import train

    extra = []
    if mode == "today":
        os.environ[ENV_VAR] = "default"
        extra.append("+optimizer.foreach=false")

    class Timer(pl.Callback):
        def __init__(self) -> None:
            self.cpu: list[float] = []
            self.wall: list[float] = []

        def on_train_batch_start(self, *args: Any) -> None:
            self.c0, self.w0 = time.process_time(), time.perf_counter()

        def on_train_batch_end(self, *args: Any) -> None:
            self.cpu.append(time.process_time() - self.c0)
            self.wall.append(time.perf_counter() - self.w0)

    timer = Timer()
    with tempfile.TemporaryDirectory() as run_dir:
        base = [
            "experiment=demo",
            "trainer.max_epochs=1",
            f"+trainer.limit_train_batches={batches}",
            "evaluation.splits=[]",
            "trainer.check_val_every_n_epoch=100",
            f"hydra.run.dir={run_dir}",
        ]
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[*base, *extra, *overrides])
        cfg.run_dir = run_dir
        with reference_mode(mode == "today"):
            train(cfg, callbacks=[timer])
    cpu, wall = timer.cpu[3:], timer.wall[3:]
    print(json.dumps({"cpu": statistics.median(cpu), "wall": statistics.median(wall)}))


def whole_child(mode: str, experiment: str, epochs: int | None, overrides: list[str]) -> None:
    """One whole ``experiment`` run in this process; prints CPU, wall and test CER as JSON."""
    import resource

    from hydra import compose, initialize_config_dir

    from emg2qwerty_ssm import CONFIG_DIR
    from emg2qwerty_ssm.host_memory import ENV_VAR
    from emg2qwerty_ssm.models.s4d_reference import reference_mode
    from emg2qwerty_ssm.train import train

    extra = [f"trainer.max_epochs={epochs}"] if epochs else []
    if mode == "today":
        os.environ[ENV_VAR] = "default"
        extra.append("+optimizer.foreach=false")
    with tempfile.TemporaryDirectory() as run_dir:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(
                "config",
                overrides=[
                    f"experiment={experiment}",
                    f"hydra.run.dir={run_dir}",
                    *extra,
                    *overrides,
                ],
            )
        cfg.run_dir = run_dir
        with reference_mode(mode == "today"):
            results = train(cfg)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "cpu": usage.ru_utime + usage.ru_stime,
                "wall": time.time() - STARTED,
                "cer": results["metrics"]["test/paper/greedy"]["CER"],
            }
        )
    )


def whole(args: argparse.Namespace, overrides: list[str]) -> None:
    print(machine_line())
    print(
        f"whole runs: today = experiment={args.today_experiment}, now = "
        f"experiment={' / '.join(args.now_experiment)}, epochs={args.epochs or 'the recipe'}"
    )
    head = f"{'round':<7}{'now experiment':<16}{'today cpu s':>12}{'now cpu s':>11}{'ratio':>7}"
    print(
        f"{head}{'today wall s':>14}{'now wall s':>12}{'ratio':>7}{'today CER':>11}{'now CER':>9}"
    )
    epochs = ["--epochs", str(args.epochs)] * bool(args.epochs)
    for r in range(args.rounds):
        t = run(
            "today",
            args.batches,
            ["--whole", "--experiment", args.today_experiment, *epochs, *overrides],
        )
        for exp in args.now_experiment:
            n = run("now", args.batches, ["--whole", "--experiment", exp, *epochs, *overrides])
            print(
                f"{r + 1:<7}{exp:<16}{t['cpu']:>12.1f}{n['cpu']:>11.1f}{t['cpu'] / n['cpu']:>7.2f}"
                f"{t['wall']:>14.1f}{n['wall']:>12.1f}{t['wall'] / n['wall']:>7.2f}"
                f"{t['cer']:>11.2f}{n['cer']:>9.2f}",
                flush=True,
            )
    print(machine_line())


def run(mode: str, batches: int, overrides: list[str]) -> dict[str, float]:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, __file__, "--child", mode, "--batches", str(batches), *overrides]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines:
        raise SystemExit(f"{mode} run failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--whole", action="store_true", help="time whole runs (see above)")
    parser.add_argument("--today-experiment", default="demo")
    parser.add_argument("--now-experiment", nargs="+", default=["demo"])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--child", choices=("today", "now"), help=argparse.SUPPRESS)
    parser.add_argument("--experiment", help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    if args.child and args.whole:
        whole_child(args.child, args.experiment, args.epochs, overrides)
        return
    if args.child:
        child(args.child, args.batches, overrides)
        return
    if args.whole:
        whole(args, overrides)
        return
    print(machine_line())
    print(f"experiment=demo, {args.batches} batches per run, median per batch (first 3 left out)")
    print(f"{'round':<7}{'today cpu ms':>14}{'now cpu ms':>12}{'ratio':>7}"
          f"{'today wall ms':>15}{'now wall ms':>13}")  # fmt: skip
    ratios = []
    for r in range(args.rounds):
        today = run("today", args.batches, overrides)
        now = run("now", args.batches, overrides)
        ratios.append(today["cpu"] / now["cpu"])
        print(
            f"{r + 1:<7}{today['cpu'] * 1e3:>14.1f}{now['cpu'] * 1e3:>12.1f}{ratios[-1]:>7.2f}"
            f"{today['wall'] * 1e3:>15.1f}{now['wall'] * 1e3:>13.1f}",
            flush=True,
        )
    print(f"median cpu ratio {statistics.median(ratios):.2f}")
    print(machine_line())


if __name__ == "__main__":
    main()
