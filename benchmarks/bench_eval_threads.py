"""Evaluation of a split with 1 torch thread vs all cores (should evaluation use all cores?).

    .venv/bin/python benchmarks/bench_eval_threads.py [--models tc_s4_small s4_large] \
        [--windows 16] [--batch 8] [--seconds 4] [--repeats 3]

Random-weight paper models in eval mode on random 2 kHz windows (the test protocol's shape:
``--seconds`` windows, ``--batch`` per forward), greedy decoding, exactly as
:func:`emg2qwerty_ssm.scoring.evaluate_loader` runs them. The two settings are interleaved per
repeat and the best time of each is printed with the ratio; the CERs must be equal.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import machine_line, paper_model  # noqa: E402

from emg2qwerty_ssm.decoding import CTCGreedyDecoder  # noqa: E402
from emg2qwerty_ssm.scoring import evaluate_loader  # noqa: E402


def _batches(windows: int, batch: int, seconds: float) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    t = int(seconds * 2000)
    out = []
    for start in range(0, windows, batch):
        n = min(batch, windows - start)
        out.append(
            {
                "inputs": torch.randn(t, n, 2, 16),
                "input_lengths": torch.full((n,), t),
                "targets": torch.randint(0, 98, (20, n)),
                "target_lengths": torch.full((n,), 20),
            }
        )
    return out


def _timed(model, batches, decoder, threads: int) -> tuple[float, dict | None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        result = evaluate_loader(model, batches, decoder)
        return time.perf_counter() - t0, result
    finally:
        torch.set_num_threads(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["tc_s4_small", "s4_large"])
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(machine_line())
    print(f"{args.windows} windows of {args.seconds:g} s, batch {args.batch}, greedy decoding")
    print(f"{'model':<15}{'1 thread s':>12}{f'{cores} threads s':>14}{'speed-up':>10}")
    batches = _batches(args.windows, args.batch, args.seconds)
    decoder = CTCGreedyDecoder()
    for name in args.models:
        model = paper_model(name)
        _timed(model, batches[:1], decoder, 1)  # warm-up (caches)
        times: dict[int, list[float]] = {1: [], cores: []}
        results = {}
        for _ in range(args.repeats):
            for threads in times:
                seconds, results[threads] = _timed(model, batches, decoder, threads)
                times[threads].append(seconds)
        assert results[1] == results[cores], results
        one, many = min(times[1]), min(times[cores])
        print(f"{name:<15}{one:>12.2f}{many:>14.2f}{one / many:>10.2f}", flush=True)
    print(machine_line())


if __name__ == "__main__":
    main()
