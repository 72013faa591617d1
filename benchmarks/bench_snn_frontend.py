"""Speed of the spiking front-end's LIF recurrence, against libraries when they import (by hand).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_snn_frontend.py \
        [--batch 32] [--samples 10000] [--repeats 3]

A training window is 10,000 raw samples = 2,500 encoder steps at 500 Hz. For one LIF layer of
64 neurons (snn_s4_small's first layer) this prints the median time of forward and forward +
backward for:

- ``LIFScan`` (this project: no graph in the forward, hand-written backward);
- ``scan_reference`` (autograd through the same Python loop);
- spikingjelly 2.x ``functional.lif_multi_step`` with the ATan surrogate, if importable;
- snnTorch 1.x ``Leaky`` (different dynamics: reset from the previous membrane), if importable;

and the whole ``SNNFrontend`` of snn_s4_small (72 -> 64 -> 150). The libraries are not
dependencies: put their unpacked wheels on PYTHONPATH to compare.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from emg2qwerty_ssm.models.snn import SNNFrontend
from emg2qwerty_ssm.models.snn_layers import LIFNeurons


def timed(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _fwd_bwd(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], None]:
    def go() -> None:
        xx = x.detach().requires_grad_()
        run(xx).sum().backward()

    return go


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--samples", type=int, default=10_000, help="raw 2 kHz samples")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    steps, n, c = args.samples // 4, args.batch, 64
    torch.manual_seed(0)
    x = torch.randn(steps, n, c)
    lif = LIFNeurons("lif", 2.0, True, 1.0, 0.0, True, 2.0)
    v0 = torch.zeros(n, c)
    candidates: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "LIFScan (hand-written backward)": lambda xx: lif.scan(xx, v0, None)[0],
        "scan_reference (autograd loop)": lambda xx: lif.scan_reference(xx, v0, None)[0],
    }
    try:
        from spikingjelly.activation_based import functional as sjf
        from spikingjelly.activation_based import surrogate

        atan = surrogate.ATan(alpha=2.0)
        candidates["spikingjelly lif_multi_step"] = lambda xx: sjf.lif_multi_step(
            xx, v0, 2.0, True, 1.0, 0.0, atan, True
        )[0]
    except ImportError as err:
        print(f"spikingjelly not importable ({err}); skipped")
    try:
        import snntorch

        leaky = snntorch.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero")

        def snntorch_run(xx: torch.Tensor) -> torch.Tensor:
            mem = leaky.init_leaky()
            spikes = []
            for t in range(xx.shape[0]):
                spk, mem = leaky(xx[t], mem)
                spikes.append(spk)
            return torch.stack(spikes)

        candidates["snnTorch Leaky (other dynamics)"] = snntorch_run
    except ImportError as err:
        print(f"snntorch not importable ({err}); skipped")

    print(f"one LIF layer, {steps} steps x batch {n} x {c} neurons, median of {args.repeats}")
    for name, run in candidates.items():
        with torch.no_grad():
            fwd = timed(lambda run=run: run(x), args.repeats)
        both = timed(_fwd_bwd(run, x), args.repeats)
        print(f"  {name:34s} forward {fwd:7.3f} s   forward + backward {both:7.3f} s")

    frontend = SNNFrontend(72, layer_sizes=[64, 150], reduction_mode="mean_mempot")
    feats = torch.randn(steps // 24 * 24, n, 72)
    frontend.eval()
    with torch.no_grad():
        fwd = timed(lambda: frontend(feats), args.repeats)
    frontend.train()
    both = timed(_fwd_bwd(frontend, feats), args.repeats)
    print(f"SNNFrontend 72 -> 64 -> 150: forward (eval) {fwd:.3f} s, train fwd + bwd {both:.3f} s")


if __name__ == "__main__":
    main()
