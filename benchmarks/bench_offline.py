"""Offline evaluation of one long chunk (default 80 s, batch 1): fast path vs today's.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_offline.py \
        [--models tc_s4_small tc_s4_medium s4_large] [--seconds 80] [--repeats 1]

``EMGModel.forward`` under ``torch.no_grad()`` in eval mode, as evaluation runs it: the fast
path uses the cached chunk matrices and the chunked scan; today's (``reference_mode``) builds
the FFT kernel from ``H x modes x L`` complex exponentials. The two are interleaved per
repeat; the script prints both times, the ratio and the largest output difference.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import PAPER_MODELS, machine_line, paper_model  # noqa: E402

from emg2qwerty_ssm.models.s4d_reference import reference_mode  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(PAPER_MODELS))
    parser.add_argument("--seconds", type=float, default=80.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line())
    print(f"one {args.seconds:g} s chunk at batch 1 (eval, no_grad)")
    print(f"{'model':<15}{'ref s':>9}{'fast s':>9}{'ratio':>8}{'max|diff|':>11}")
    for name in args.models:
        model = paper_model(name)
        torch.manual_seed(1)
        x = torch.randn(int(args.seconds * 2000), 1, 2, 16)
        ref_t, fast_t, diff = [], [], 0.0
        with torch.no_grad():
            model(x[:4000])  # warm-up
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                with reference_mode():
                    expected = model(x)
                ref_t.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                got = model(x)
                fast_t.append(time.perf_counter() - t0)
                diff = max(diff, (got - expected).abs().max().item())
        r, f = min(ref_t), min(fast_t)
        print(f"{name:<15}{r:>9.2f}{f:>9.2f}{r / f:>8.1f}{diff:>11.2e}", flush=True)
    print(machine_line())


if __name__ == "__main__":
    main()
