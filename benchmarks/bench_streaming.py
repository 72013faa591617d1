"""Streaming speed at batch 1: real-time factor and per-chunk latency, fast vs today's path.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_streaming.py \
        [--models tc_s4_small tc_s4_medium s4_large gru_s4_small egru_s4_small] \
        [--chunk-ms 48] [--seconds 10] [--repeats 3]

For each model (random weights, eval mode) a synthetic 2 kHz session of ``--seconds`` is fed
chunk by chunk through ``EMGModel.forward_stream``; each repeat times today's implementation
(reference mode) and the fast path back to back. Prints per-chunk latency p50 / p99 in ms, the
real-time factor (chunk duration / mean latency) and the speed-up ratio, and checks that both
paths emit the same log-probabilities. GRU / EGRU front-ends have no separate reference path:
their ratio shows what the backbone's speed-up is worth with a recurrent front-end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import machine_line, median, paper_model, percentile  # noqa: E402

from emg2qwerty_ssm.models import EMGModel  # noqa: E402
from emg2qwerty_ssm.models.s4d_reference import reference_mode  # noqa: E402

DEFAULT_MODELS = ["tc_s4_small", "tc_s4_medium", "s4_large", "gru_s4_small", "egru_s4_small"]


def stream_once(model: EMGModel, x: torch.Tensor, chunk: int) -> tuple[list[float], torch.Tensor]:
    """Per-chunk latencies in seconds and the concatenated output."""
    latencies, outs = [], []
    with torch.no_grad():
        state = model.initial_state(x.shape[1])
        for start in range(0, x.shape[0], chunk):
            t0 = time.perf_counter()
            out, state = model.forward_stream(x[start : start + chunk], state)
            latencies.append(time.perf_counter() - t0)
            outs.append(out)
    return latencies, torch.cat(outs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--chunk-ms", type=float, default=48.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chunk = int(round(args.chunk_ms * 2))  # 2 kHz
    print(machine_line())
    print(f"chunk {chunk} samples ({args.chunk_ms:g} ms), {args.seconds:g} s per run, batch 1")
    header = (
        f"{'model':<15}{'ref p50':>9}{'ref p99':>9}{'ref RTF':>9}"
        f"{'fast p50':>10}{'fast p99':>10}{'fast RTF':>10}{'ratio':>8}{'max|diff|':>11}"
    )
    print(header)
    for name in args.models:
        model = paper_model(name)
        torch.manual_seed(1)
        x = torch.randn(int(args.seconds * 2000), 1, 2, 16)
        ref_lat: list[float] = []
        fast_lat: list[float] = []
        diff = 0.0
        stream_once(model, x[: 4 * chunk], chunk)  # warm-up (tables, allocator)
        for _ in range(args.repeats):
            with reference_mode():
                lat, ref_out = stream_once(model, x, chunk)
            ref_lat += lat
            lat, fast_out = stream_once(model, x, chunk)
            fast_lat += lat
            diff = max(diff, (ref_out - fast_out).abs().max().item())
        chunk_s = chunk / 2000
        ref_mean = sum(ref_lat) / len(ref_lat)
        fast_mean = sum(fast_lat) / len(fast_lat)
        print(
            f"{name:<15}{percentile(ref_lat, 50) * 1e3:>9.3f}{percentile(ref_lat, 99) * 1e3:>9.3f}"
            f"{chunk_s / ref_mean:>9.1f}{median(fast_lat) * 1e3:>10.3f}"
            f"{percentile(fast_lat, 99) * 1e3:>10.3f}{chunk_s / fast_mean:>10.1f}"
            f"{ref_mean / fast_mean:>8.2f}{diff:>11.2e}",
            flush=True,
        )
    print(machine_line())


if __name__ == "__main__":
    main()
