"""One training step (forward + CTC + backward + Adam), fast path vs today's.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train_step.py \
        [--models tc_s4_small tc_s4_medium s4_large] [--batch 8] [--samples 10000] \
        [--repeats 5] [--compile] [--bf16] [--profile] [--retain-memory] [--conv-from FILE]

The demo's and the paper's step: a batch of raw windows, the model in training mode, CTC on
random targets, ``Adam`` over ``EMGModel.param_groups`` (today's path: torch's default
per-tensor update on CPU; the fast one: ``foreach=True``, as the trainer now configures it).
Today's path (``reference_mode``) and the fast one are interleaved step by step on the same
weights (each with its own Adam state); wall and process CPU time are printed, the CPU time
being the steadier one on a shared machine; ``--compile`` also times
``torch.compile(model)`` (the ``trainer.compile`` option), ``--bf16`` runs under CPU bf16
autocast, ``--profile`` prints the fast step's top operators. ``--conv-from FILE`` also times
the fast step with the causal convolution of another version of ``s4d_train.py`` (e.g.
``git show <commit>:emg2qwerty_ssm/models/s4d_train.py > /tmp/old.py``), interleaved with the
others: the "conv-from s" column and "vs conv-from", its time over the fast step's (CPU).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import PAPER_MODELS, machine_line, paper_model  # noqa: E402

from emg2qwerty_ssm.host_memory import retain_freed_memory  # noqa: E402
from emg2qwerty_ssm.models import s4d as s4d_module  # noqa: E402
from emg2qwerty_ssm.models.s4d_reference import reference_mode  # noqa: E402


def make_step(  # noqa: ANN201
    model,  # noqa: ANN001
    forward,  # noqa: ANN001
    batch: int,
    samples: int,
    bf16: bool,
    foreach: bool | None = True,
):
    """A closure running one optimisation step on fixed random data; ``foreach``: Adam's
    multi-tensor update as the trainer configures it (``EMGModule.configure_optimizers``),
    ``None`` for torch's default on CPU, the per-tensor loop (today's trainer)."""
    torch.manual_seed(2)
    x = torch.randn(samples, batch, 2, 16)
    lengths = torch.full((batch,), samples)
    emissions = model.emission_lengths(lengths)
    target_len = max(1, int(emissions.min()) // 4)
    targets = torch.randint(1, 99, (batch, target_len))
    opt = torch.optim.Adam(model.param_groups(1e-3), foreach=foreach)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
        with ctx:
            log_probs = forward(x)
        loss = F.ctc_loss(
            log_probs.float(), targets, emissions, torch.full((batch,), target_len), blank=0
        )
        loss.backward()
        opt.step()
        return loss.item()

    return step


def load_conv(path: str):  # noqa: ANN201
    """``causal_conv`` of the ``s4d_train.py`` at ``path``."""
    spec = importlib.util.spec_from_file_location("baseline_s4d_train", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--conv-from: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.causal_conv


def timed(fn, cpu: list[float] | None = None) -> float:  # noqa: ANN001
    """Wall seconds of ``fn()``; its process CPU seconds are appended to ``cpu``: on a shared,
    oversubscribed machine the CPU time leaves out the waits for a core."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    if cpu is not None:
        cpu.append(time.process_time() - c0)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(PAPER_MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--conv-from", help="another s4d_train.py to time against (CPU ratio)")
    parser.add_argument(
        "--retain-memory",
        action="store_true",
        help="keep freed memory in the process as the trainer does (host_memory.py); "
        "process-wide, so both paths get it",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.retain_memory and not retain_freed_memory():
        print("# --retain-memory: not glibc, malloc settings unchanged")
    print(machine_line())
    print(f"batch {args.batch} x {args.samples} samples, median of {args.repeats} steps")
    print(
        f"{'model':<15}{'ref s':>9}{'fast s':>9}{'ratio':>8}"
        f"{'ref cpu s':>11}{'fast cpu s':>11}{'cpu ratio':>10}{'compiled s':>12}"
        + (f"{'conv-from s':>13}{'vs conv-from':>14}" if args.conv_from else "")
    )
    current_conv = s4d_module.causal_conv
    other_conv = load_conv(args.conv_from) if args.conv_from else None
    for name in args.models:
        model = paper_model(name).train()
        step = make_step(model, model, args.batch, args.samples, args.bf16)
        ref_step = make_step(model, model, args.batch, args.samples, args.bf16, foreach=None)
        other_step = (
            make_step(model, model, args.batch, args.samples, args.bf16) if other_conv else None
        )

        def run_other(other_step=other_step) -> None:  # noqa: ANN001
            s4d_module.causal_conv = other_conv
            try:
                other_step()
            finally:
                s4d_module.causal_conv = current_conv

        step()  # warm-up
        with reference_mode():
            ref_step()
        if other_conv is not None:
            run_other()
        ref_t, fast_t, ref_c, fast_c, other_c = [], [], [], [], []
        for _ in range(args.repeats):
            with reference_mode():
                ref_t.append(timed(ref_step, ref_c))
            fast_t.append(timed(step, fast_c))
            if other_conv is not None:
                timed(run_other, other_c)
        r, f = statistics.median(ref_t), statistics.median(fast_t)
        rc, fc = statistics.median(ref_c), statistics.median(fast_c)
        compiled = ""
        if args.compile:
            cstep = make_step(model, torch.compile(model), args.batch, args.samples, args.bf16)
            t0 = time.perf_counter()
            cstep()
            first = time.perf_counter() - t0
            c = statistics.median(timed(cstep) for _ in range(args.repeats))
            compiled = f"{c:.3f} (first {first:.0f})"
        other = ""
        if other_c:
            oc = statistics.median(other_c)
            other = f"{oc:>13.3f}{oc / fc:>14.2f}"
        print(
            f"{name:<15}{r:>9.3f}{f:>9.3f}{r / f:>8.2f}{rc:>11.3f}{fc:>11.3f}{rc / fc:>10.2f}"
            f"{compiled:>12}{other}",
            flush=True,
        )
        if args.profile:
            from torch.profiler import profile

            with profile() as prof:
                step()
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print(machine_line())


if __name__ == "__main__":
    main()
